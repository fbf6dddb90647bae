"""``hpa bench``: run the benchmark rows, write ``<out>/<device>-<date>.json`` + ``.md`` + ``.png``.

``run_bench(ctx, rows, out)`` is the importable entry point; the CLI only turns flags into a
:class:`~hpa.bench.core.BenchContext`.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hpa.bench.core import DEFAULT_SHARED, SCHEMA_VERSION, BenchContext, environment, load_rows, \
    markdown_table, plot_ratios, result_stem, run_rows
from hpa.bench.gpu import main_gpu
from hpa.bench.scale import markdown, scale_run
from hpa.devices import resolve_device
from hpa.errors import HPAError
from hpa.io import write_json, write_text


def run_bench(ctx: BenchContext, rows: list[str], out: str | Path, progress: bool = True) -> tuple[dict, Path]:
    """Run ``rows`` (names of ``ROWS``) and write the JSON, markdown and PNG; return (result, json path)."""
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    results = run_rows(ctx, rows, progress)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(ctx).items()
                if k not in ("work", "extra")}
    result = {"schema": SCHEMA_VERSION, "device": ctx.device, "date": f"{now:%Y-%m-%d}",
              "created": now.isoformat(timespec="seconds"), "settings": settings,
              "environment": environment(ctx.device), "total_seconds": round(time.perf_counter() - t0, 1),
              "rows": results}
    stem = Path(out) / result_stem(ctx.device, ctx.quick, now)
    path = write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), markdown_table(result))
    plot_ratios(result, stem.with_suffix(".png"))
    return result, path


#: runs with a report of their own (``<name>-<date>.{json,md,png}``), asked for alone: ``--rows scale``
REPORTS = ("scale", "gpu")


def parse_rows(text: str) -> list[str]:
    """``"all"``, a comma list of row names, or one of ``REPORTS`` alone -> the list; HPAError naming
    an unknown name."""
    order = load_rows()
    if text == "all":
        return order
    names = [t.strip() for t in text.split(",") if t.strip()]
    if len(names) == 1 and names[0] in REPORTS:
        return names
    bad = [n for n in names if n not in order]
    if bad or not names:
        if bad and bad[0] in REPORTS:
            raise HPAError(f"--rows {bad[0]}: runs alone (its own report), not with other rows")
        raise HPAError(f"--rows: unknown row '{bad[0] if bad else text}' "
                       f"(valid: all, {', '.join(order)}; alone: {', '.join(REPORTS)})")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa bench``."""
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", type=int, default=0, help="model input px (default 64 on cpu, 512 on cuda)")
    p.add_argument("--data-size", type=int, default=512, help="image px of the data-loading row (512)")
    p.add_argument("--out", default="benchmarks", help="folder for the result files (benchmarks/)")
    p.add_argument("--rows", default="all", help=f"comma list of: {', '.join(load_rows())} (default all); or alone: "
                   "scale (the pipeline at the real data's scale, docs/performance.md), gpu (tools/gpu_check.sh)")
    p.add_argument("--quick", action="store_true", help="toy sizes, 1 repeat (tests, smoke runs)")
    p.add_argument("--repeats", type=int, default=0, help="timed rounds per variant (default 3; quick 1)")
    p.add_argument("--model", default="", help="timm backbone of rows 2-3 (resnet18; quick: test_resnet)")
    p.add_argument("--batch-size", type=int, default=0, help="training batch (16 on cpu, 64 on cuda)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training rows' models")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU bf16 dense peak for row 7")
    p.add_argument("--generator", default="", help="trained pixel generator folder (row 6 agreement)")
    p.add_argument("--gen-images", type=int, default=0, help="images per generation batch (cpu 4, cuda 16; quick 2)")
    p.add_argument("--ddpm-steps", type=int, default=0,
                   help="DDPM chain timed per round, scaled to 1000 steps (cpu 80, cuda 1000; quick 20)")
    p.add_argument("--classifier", default="", help="trained classifier run folder (row 6 agreement)")
    p.add_argument("--agreement-images", type=int, default=0,
                   help="images per sampler for row 6's label agreement (with --generator; 64)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 1 on --device cpu, torch's choice on cuda)")
    p.add_argument("--shared", default=DEFAULT_SHARED,
                   help="folder with the real train.csv (row 5; scale: also sample_submission.csv, real-samples/)")
    p.add_argument("--scale-size", type=int, default=16, help="scale: image px of the scale run's dataset (16)")
    p.add_argument("--budget", type=float, default=400.0,
                   help="gpu: seconds for all parts together; each part gets its share (400)")
    p.add_argument("--parts", default="all",
                   help="gpu: comma list of peak, loader, train, compile, generate (default all)")


def context_from_args(args: argparse.Namespace, work: Path) -> BenchContext:
    """Build the :class:`BenchContext` of parsed flags (device defaults filled in, values checked)."""
    cuda = resolve_device(args.device) == "cuda"
    for flag in ("size", "data_size", "repeats", "batch_size", "threads", "gen_images", "ddpm_steps",
                 "agreement_images"):
        if getattr(args, flag) < 0:
            raise HPAError(f"--{flag.replace('_', '-')}: must be positive, got {getattr(args, flag)}")
    if args.generator and not args.classifier or args.classifier and not args.generator:
        raise HPAError("--generator and --classifier go together (label agreement needs both)")
    return BenchContext(
        device=args.device, size=args.size or (512 if cuda else 64), data_size=args.data_size,
        quick=args.quick, work=work, model=args.model or ("test_resnet" if args.quick else "resnet18"),
        batch_size=args.batch_size or (64 if cuda else 16 if not args.quick else 4),
        repeats=args.repeats or (1 if args.quick else 3), compile=args.compile,
        peak_tflops=args.peak_tflops, generator=args.generator, classifier=args.classifier,
        gen_images=args.gen_images or (2 if args.quick else 16 if cuda else 4),
        ddpm_steps=args.ddpm_steps or (20 if args.quick else 1000 if cuda else 80),
        agreement_images=args.agreement_images or 64,
        extra={"shared": args.shared})


def main(args: argparse.Namespace) -> int:
    """``hpa bench``: run the rows, write the files, print the table and a one-line summary."""
    rows = parse_rows(args.rows)
    if rows == ["scale"]:
        return main_scale(args)
    if rows == ["gpu"]:
        return main_gpu(args)
    # CPU: one thread unless asked; on a shared machine two threads per process oversubscribe the
    # cores and made the training row 5x slower (measured), which would distort every ratio
    threads = args.threads or (1 if args.device == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="hpa-bench-") as tmp:
        ctx = context_from_args(args, Path(tmp))
        result, path = run_bench(ctx, rows, args.out)
    print(markdown_table(result))
    verdict = [r["met"] for r in result["rows"]]
    errors = [r for r in result["rows"] if r["status"] == "error"]
    print(f"bench {ctx.device}: {len(result['rows'])} rows in {result['total_seconds']:.0f}s, goals met "
          f"{verdict.count(True)}, missed {verdict.count(False)}, report/not run {verdict.count(None)}, "
          f"errors {len(errors)} -> {path}")
    for r in errors:
        print(f"error: row {r['row']} {r['name']}: {r['note']}")
    return 1 if errors else 0


def main_scale(args: argparse.Namespace) -> int:
    """``hpa bench --rows scale``: the scale run (:mod:`hpa.bench.scale`); print its table and a summary."""
    if args.scale_size < 8:
        raise HPAError(f"--scale-size: at least 8 px, got {args.scale_size}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpa-scale-") as tmp:
        result, path = scale_run(Path(args.shared), Path(args.out), Path(tmp), args.scale_size,
                                 threads=args.threads or 1)
    print(markdown(result))
    worst = max(result["growth"], key=lambda r: r["cpu_growth"])
    held = [r["stage"] for r in result["growth"] if r["holds_all_images"]]
    print(f"scale run: {len(result['growth'])} stages at {result['full']['dataset']['train_ids']:,} + "
          f"{result['full']['dataset']['test_ids']:,} Ids in {result['total_seconds']:.0f}s; steepest growth "
          f"{worst['stage']} {worst['cpu_growth']:.1f}x for 10x the Ids; stages holding all images in RAM: "
          f"{', '.join(held) or 'none'} -> {path}")
    return 0
