"""``hpa bench --rows gpu`` (``tools/gpu_check.sh``): the GPU path in one run with a time budget.

Runs the parts of :mod:`hpa.bench.gpu_parts` one after another, each in its own process with its
share of ``--budget`` seconds: a part past its share is stopped (its process group killed, DataLoader
workers too) and keeps what it had measured; a part that fails is reported with its error. After
every part the report is rewritten: ``<out>/gpu-<date>.{json,md,png}`` on CUDA
(``gpu-<device>-<date>-quick`` for the tiny CPU run the tests use), so even a run killed from outside
leaves the parts done so far.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from hpa.bench.gpu_parts import GPU_PARTS, GpuSettings
from hpa.errors import HPAError
from hpa.io import write_json, write_text
from hpa.reports import new_figure, save_figure

#: share of the budget per part (the training part is the one that matters most)
SHARES = {name: GPU_PARTS.info(name)["share"] for name in GPU_PARTS.ordered()}   # budget share per part


def run_part(part: str, settings: GpuSettings, work: Path, budget: float) -> dict:
    """Run one part in a child process for at most ``budget`` seconds; return its result dict."""
    spath, rpath, log = work / f"{part}.settings.json", work / f"{part}.json", work / f"{part}.log"
    spath.write_text(json.dumps(asdict(settings)))
    # albumentations would ask PyPI for a newer version (2 s timeout) in every part without network
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", **os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    if settings.quick and part == "compile":
        # inductor compiles a training graph for minutes on a CPU; the tiny run checks the plumbing
        env["TORCH_COMPILE_DISABLE"] = "1"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        # a session of its own: on timeout the whole group (DataLoader workers too) is killed
        proc = subprocess.Popen([sys.executable, "-m", "hpa.bench.gpu_parts", part, str(spath), str(rpath)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=budget)
            status = "ok" if proc.returncode == 0 else "error"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
    result = json.loads(rpath.read_text()) if rpath.is_file() else {"part": part, "figures": {}, "notes": []}
    result.update(status=status, seconds=round(time.perf_counter() - t0, 1), budget_s=round(budget))
    if status == "error":
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        result["error"] = lines[-1][:300] if lines else f"exit {proc.returncode}"
    if status == "timeout":
        result["error"] = f"stopped at its budget of {budget:.0f} s; figures are those finished before"
    return result


def report_stem(device: str, quick: bool, when: datetime) -> str:
    """``gpu-<date>`` for a full CUDA run; ``gpu-<device>-<date>-quick`` for tiny runs (never mixed up)."""
    return f"gpu-{when:%Y-%m-%d}" if device == "cuda" and not quick else f"gpu-{device}-{when:%Y-%m-%d}-quick"


def environment() -> dict:
    import platform

    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()}
    for name in ("timm", "diffusers", "accelerate", "albumentations"):
        try:
            env[name] = __import__(name).__version__
        except Exception as e:      # noqa: BLE001 - the report says what is missing instead of failing
            env[name] = f"missing ({type(e).__name__})"
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return env


def verdicts(parts: list[dict], settings: GpuSettings) -> list[str]:
    """Plain-language answers: can the CPU feed the GPU, what the loop costs, what compile buys."""
    f = {k: v for p in parts for k, v in p.get("figures", {}).items()}
    out = []
    model = settings.models[0]
    need = f.get(f"{model} bare")
    cpu = {w: f.get(f"cpu augment, {w} workers images/s") for w in settings.workers}
    cpu = {w: v for w, v in cpu.items() if v}
    if need and cpu:
        best_w = max(cpu, key=cpu.get)
        verdict = "can" if cpu[best_w] >= need else "cannot"
        out.append(f"The loader with CPU augmentations gives {cpu[best_w]:,.0f} images/s at best "
                   f"({best_w} workers); {model} trains at {need:,.0f} images/s on ready device tensors: the CPU "
                   f"{verdict} feed the GPU.")
        gpu_aug = [v for k, v in f.items() if k.startswith("gpu augment, ")]
        if gpu_aug:
            out.append(f"With train.gpu_augment (the loader only copies): {max(gpu_aug):,.0f} images/s.")
    for m in settings.models:
        if f"{m} loop / bare" in f:
            out.append(f"{m}: train.py's loop runs at {f[f'{m} loop / bare']:.2f}x the bare loop with CPU "
                       f"augmentations, {f.get(f'{m} loop gpu-aug / bare', float('nan')):.2f}x with GPU "
                       f"augmentations" + (f"; the bare loop reaches {f[f'{m} bare % of peak']:.0f}% of the "
                                           "measured matmul peak." if f"{m} bare % of peak" in f else "."))
    on, off = f.get(f"{model} compile=on images/s"), f.get(f"{model} compile=off images/s")
    if on and off:
        out.append(f"torch.compile: {on / off:.2f}x the images/s of eager mode, after "
                   f"{f.get(f'{model} compile=on first epoch s', float('nan')):.0f} s of compiling.")
    return out


def markdown(result: dict) -> str:
    """The report: one table per part (figure, value), its status and notes, then the verdicts."""
    env = result["environment"]
    lines = [f"`hpa bench --rows gpu` on {env.get('gpu', result['device'])} ({result['date']}, "
             f"{'quick' if result['settings']['quick'] else 'full'} run, {result['total_seconds']:.0f} s of a "
             f"{result['budget_s']:.0f} s budget; torch {env['torch']}, {env['cpu_count']} CPU cores)", ""]
    for p in result["parts"]:
        lines += [f"### {p['part']}: {p['status']} ({p['seconds']:.0f} s of {p['budget_s']} s)", ""]
        if p.get("error"):
            lines += [f"{p['error']}", ""]
        if p["figures"]:
            lines += ["| figure | value |", "|---|---|"]
            lines += [f"| {k} | {v:,.4g} |" for k, v in p["figures"].items()]
            lines.append("")
        lines += [f"_{n}_" for n in p.get("notes", [])] + [""]
    if result["verdicts"]:
        lines += ["### What it says", ""] + [f"- {v}" for v in result["verdicts"]]
    return "\n".join(lines).rstrip() + "\n"


def plot(result: dict, path: Path) -> None:
    """Bars of every images/s figure, one colour per part (log scale)."""
    items = [(p["part"], k, v) for p in result["parts"] for k, v in p["figures"].items()
             if ("images/s" in k or k.endswith((" loop", " bare", " loop gpu-aug"))) and v > 0]
    fig, ax = new_figure(10, max(3.0, 0.28 * len(items) + 1))
    colours = {name: f"C{i}" for i, name in enumerate(SHARES)}
    ax.barh(range(len(items)), [v for _, _, v in items], color=[colours.get(p, "C7") for p, _, _ in items])
    ax.set_yticks(range(len(items)), [k for _, k, _ in items], fontsize=7)
    ax.invert_yaxis()
    if items:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no images/s figure yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="images/s (log)", title=f"GPU check on {result['environment'].get('gpu', result['device'])}")
    save_figure(fig, path)


def write_report(result: dict, out: Path, stem: str) -> Path:
    path = write_json(out / f"{stem}.json", result)
    write_text(out / f"{stem}.md", markdown(result))
    plot(result, out / f"{stem}.png")
    return path


def run_gpu_check(device: str, quick: bool, out: Path, work: Path, budget: float, parts: list[str],
                  progress=print) -> tuple[dict, Path]:
    """Run ``parts`` within ``budget`` seconds in all; write and return the report after every part."""
    settings = GpuSettings.for_device(device, quick)
    now = datetime.now(timezone.utc)
    stem = report_stem(device, quick, now)
    result = {"schema": 1, "device": device, "date": f"{now:%Y-%m-%d}", "created": now.isoformat(timespec="seconds"),
              "settings": asdict(settings), "environment": environment(), "budget_s": budget, "parts": [],
              "verdicts": [], "total_seconds": 0.0}
    t0, left = time.perf_counter(), budget
    path = out / f"{stem}.json"
    for i, part in enumerate(parts):
        # a part's share of what is left, so time saved by a fast part goes to the later ones
        share = SHARES[part] / sum(SHARES[p] for p in parts[i:]) * left if left > 0 else 0
        progress(f"gpu check: {part} (budget {share:.0f} s) ...")
        r = run_part(part, settings, work, max(share, 1.0)) if share >= 1 else \
            {"part": part, "status": "skipped", "figures": {}, "notes": [], "seconds": 0, "budget_s": 0,
             "error": "no time left in the budget"}
        if part == "peak" and r["figures"].get("matmul TFLOP/s"):
            settings.peak_tflops = r["figures"]["matmul TFLOP/s"]
        result["parts"].append(r)
        result["verdicts"] = verdicts(result["parts"], settings)
        result["total_seconds"] = round(time.perf_counter() - t0, 1)
        left = budget - (time.perf_counter() - t0)
        path = write_report(result, out, stem)
        why = f": {r['error']}" if r.get("error") else ""
        progress(f"gpu check: {part} {r['status']} in {r['seconds']:.0f} s{why}")
    return result, path


def main_gpu(args: argparse.Namespace) -> int:
    """``hpa bench --rows gpu``: run the GPU check, print the report and a one-line summary."""
    import tempfile

    if args.device == "cuda" and not torch.cuda.is_available():
        raise HPAError("--device cuda: no CUDA device is available on this machine")
    if args.device == "cpu" and not args.quick:
        raise HPAError("--rows gpu --device cpu: only with --quick (tiny sizes; the real sizes need a GPU)")
    parts = [p.strip() for p in args.parts.split(",")] if args.parts != "all" else GPU_PARTS.ordered()
    bad = [p for p in parts if p not in GPU_PARTS]
    if bad:
        raise HPAError(f"--parts: unknown part '{bad[0]}' (valid: all, {', '.join(GPU_PARTS.ordered())})")
    if args.budget <= 0:
        raise HPAError(f"--budget: must be positive, got {args.budget}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpa-gpu-") as tmp:
        result, path = run_gpu_check(args.device, args.quick, out, Path(tmp), args.budget, parts)
    print(markdown(result))
    status = {p["part"]: p["status"] for p in result["parts"]}
    print(f"gpu check on {result['environment'].get('gpu', args.device)}: "
          + ", ".join(f"{k} {v}" for k, v in status.items())
          + f"; {result['total_seconds']:.0f} s -> {path}")
    return 0 if all(v == "ok" for v in status.values()) else 1
