"""``hpa bench --rows scale``: the whole pipeline at the real data's scale, on tiny images.

Builds a Kaggle-layout dataset with the exact real Ids and labels (``train.csv``: 31,072 rows;
``sample_submission.csv``: 11,702 Ids) and tiny images (16 px): every training Id gets its own green
plane (so duplicate grouping has real work, with one planted duplicate pair per 300 Ids, about the
real data's 103), while red, blue, yellow and the test images are hard links to a pool of 64 images.
Then each stage runs as its own process (``python -m hpa.bench.stage``): ``hpa folds`` (k=5,
duplicate-aware), ``hpa cache``, ``train.py`` (fold 0, one epoch), ``hpa thresholds``, ``infer.py``
(8 TTA views) and ``hpa validate``; time and peak memory of each are recorded. The same run on a tenth
of the Ids (every tenth row of both files) gives each stage's growth ratio: about 10 is linear, more
is worse than linear. Two more runs, every hundredth and every tenth Id with 128 px images, check that
no stage holds all images in RAM (its heap would grow by an image's bytes per Id). Results:
``<out>/scale-<date>.{json,md,png}``, with the 512 px projections of :mod:`hpa.bench.projection`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from hpa.bench.projection import projection_markdown, projections
from hpa.data.images import CHANNELS
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.io import write_csv, write_json, write_text
from hpa.reports import new_figure, save_figure

STAGES = ("folds", "cache", "train", "thresholds", "infer", "validate")
#: whose Ids each stage handles (the memory check divides by those): train, test or both
STAGE_IDS = {"folds": "train", "cache": "both", "train": "train", "thresholds": "train", "infer": "test",
             "validate": "test"}
POOL = 64
DUP_EVERY = 300


def build_dataset(root: Path, labels: pd.DataFrame, test_ids: list[str], size: int, seed: int = 0) -> dict:
    """Write the tiny-image dataset under ``root`` (see the module doc); return its counts and seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for d in ("pool", "train", "test"):
        (root / d).mkdir(parents=True, exist_ok=True)
    pool = []
    for k in range(POOL):
        img = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
        files = {}
        for j, c in enumerate(CHANNELS):
            files[c] = root / "pool" / f"p{k}_{c}.png"
            cv2.imwrite(str(files[c]), img[..., j])
        pool.append(files)
    train_ids = labels["Id"].astype(str).tolist()
    for i, image_id in enumerate(train_ids):
        for c in ("red", "blue", "yellow"):
            os.link(pool[i % POOL][c], root / "train" / f"{image_id}_{c}.png")
        green = root / "train" / f"{image_id}_green.png"
        if i % DUP_EVERY == DUP_EVERY - 1:      # a planted duplicate of the previous Id's protein stain
            os.link(root / "train" / f"{train_ids[i - 1]}_green.png", green)
        else:
            cv2.imwrite(str(green), rng.integers(0, 256, (size, size), dtype=np.uint8))
    for i, image_id in enumerate(test_ids):
        for c in CHANNELS:
            os.link(pool[i % POOL][c], root / "test" / f"{image_id}_{c}.png")
    write_csv(root / "train.csv", labels[["Id", "Target"]])
    write_csv(root / "sample_submission.csv", pd.DataFrame({"Id": test_ids, "Predicted": "0"}))
    return {"train_ids": len(train_ids), "test_ids": len(test_ids), "planted_duplicates": len(train_ids) // DUP_EVERY,
            "seconds": round(time.perf_counter() - t0, 2)}


def write_config(root: Path, size: int, batch: int, tta: int = 8) -> Path:
    """The experiment YAML of the scale run (a tiny model: the stages, not the model, are measured)."""
    cfg = {"name": "scale", "runs_dir": str(root / "runs"),
           "data": {"root": str(root), "image_size": size, "cache_dir": str(root / "cache")},
           "folds": {"n_splits": 5, "dedup": True},
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}],
           "train": {"epochs": 1, "batch_size": batch, "num_workers": 0,
                     "augment": [{"name": "hflip"}, {"name": "vflip"}, {"name": "rotate90"}]},
           "infer": {"tta": tta, "batch_size": 2 * batch}}
    path = root / "scale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def stage_commands(cfg: Path, root: Path) -> list[tuple[str, list[str]]]:
    """``(stage, hpa argv)`` of each stage, in pipeline order."""
    sub = str(root / "submission.csv")
    return [("folds", ["folds", "--config", str(cfg)]),
            ("cache", ["cache", "--config", str(cfg)]),
            ("train", ["train", "--config", str(cfg), "--folds", "0"]),
            ("thresholds", ["thresholds", "--config", str(cfg)]),
            ("infer", ["infer", "--config", str(cfg), "--out", sub]),
            ("validate", ["validate", sub, "--sample", str(root / "sample_submission.csv")])]


def run_stage(name: str, argv: list[str], root: Path, threads: int) -> dict:
    """Run one stage in a child process; its own record plus the tree's peak RSS (``wait4``) and wall time."""
    result = root / f"stage_{name}.json"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    log = open(root / f"stage_{name}.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hpa.bench.stage", str(result), *argv],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result.is_file():
        tail = (root / f"stage_{name}.log").read_text().strip().splitlines()[-3:]
        raise HPAError(f"scale run: stage {name} exited {proc.returncode}: {' | '.join(tail)}")
    rec = json.loads(result.read_text())
    rec.update(stage=name, wall_s=round(wall, 3), tree_peak_rss_mb=round(usage.ru_maxrss / 1024, 1))
    return rec


def run_pipeline(root: Path, labels: pd.DataFrame, test_ids: list[str], size: int, batch: int,
                 threads: int, progress=print, tta: int = 8) -> dict:
    """Build the dataset under ``root`` and run every stage; return the dataset summary and stage records."""
    data = build_dataset(root, labels, test_ids, size)
    progress(f"scale run: {data['train_ids']} + {data['test_ids']} Ids written in {data['seconds']}s")
    cfg = write_config(root, size, batch, tta)
    stages = []
    for name, argv in stage_commands(cfg, root):
        rec = run_stage(name, argv, root, threads)
        progress(f"  {name}: {rec['cpu_s']:.1f} CPU s, {rec['run_s']:.1f}s (+{rec['import_s']:.1f}s start-up), "
                 f"peak RSS "
                 f"{rec['tree_peak_rss_mb']:.0f} MiB, heap {rec['peak_anon_mb']:.0f} MiB")
        stages.append(rec)
    cache = sum(p.stat().st_size for p in (root / "cache").glob("*.npy"))
    log = (root / "stage_folds.log").read_text()
    joined = [ln for ln in log.splitlines() if "images joined to duplicates" in ln]
    line = joined[-1].strip().split(": ", 1)[-1] if joined else ""     # without the temporary path
    return {"dataset": {**data, "cache_bytes": cache, "folds_line": line},
            "stages": stages}


def _ids(run: dict, which: str) -> int:
    d = run["dataset"]
    return d["train_ids"] + d["test_ids"] if which == "both" else d[f"{which}_ids"]


def growth_table(full: dict, tenth: dict, small_big: dict, tenth_big: dict) -> list[dict]:
    """Per stage: CPU seconds (load on a shared machine stretches wall time, not these), wall seconds,
    memory and the growth full / tenth; and the memory check at the larger image size: heap added per
    added image from a hundredth to a tenth of the Ids (same image size and batch, so the same model
    activations), against one image's bytes: a stage holding every image in RAM adds at least that."""
    image_bytes = tenth_big["size"] ** 2 * 4
    rows = []
    for a, b, c, d in zip(full["stages"], tenth["stages"], small_big["stages"], tenth_big["stages"]):
        which = STAGE_IDS.get(a["stage"], "both")
        n = {k: _ids(r, which) for k, r in (("a", full), ("b", tenth), ("c", small_big), ("d", tenth_big))}
        heap = {k: r["peak_anon_mb"] - r["base_anon_mb"] for k, r in (("a", a), ("b", b), ("c", c), ("d", d))}
        per_id_big = (heap["d"] - heap["c"]) * 2**20 / max(n["d"] - n["c"], 1)
        # the straight line through both runs: a fixed cost plus a cost per Id
        per_id = (a["cpu_s"] - b["cpu_s"]) / max(n["a"] - n["b"], 1)
        rows.append({"stage": a["stage"], "ids": which, "full_cpu_s": a["cpu_s"], "tenth_cpu_s": b["cpu_s"],
                     "cpu_growth": round(a["cpu_s"] / max(b["cpu_s"], 1e-3), 2),
                     "fixed_cpu_s": round(b["cpu_s"] - per_id * n["b"], 2),
                     "cpu_ms_per_1000_ids": round(per_id * 1e6, 1),
                     "full_wall_s": a["run_s"], "tenth_wall_s": b["run_s"], "startup_s": a["import_s"],
                     "full_peak_rss_mb": a["tree_peak_rss_mb"], "tenth_peak_rss_mb": b["tree_peak_rss_mb"],
                     "full_heap_mb": round(heap["a"], 1), "tenth_heap_mb": round(heap["b"], 1),
                     "heap_bytes_per_id": round((heap["a"] - heap["b"]) * 2**20 / max(n["a"] - n["b"], 1)),
                     "big_heap_bytes_per_id": round(per_id_big), "big_image_bytes": image_bytes,
                     "holds_all_images": bool(per_id_big > 0.5 * image_bytes)})
    return rows


def scale_run(shared: Path, out: Path, work: Path, size: int = 16, batch: int = 32, threads: int = 1,
              fraction: int = 10, big: int = 128, progress=print) -> tuple[dict, Path]:
    """Run the pipeline on every ``fraction``-th real Id and on all of them (the growth), then on every
    hundredth and every tenth with ``big`` px images (the memory check); write the report files;
    return (result, json path). ``batch`` is the real configs' 32. The memory-check runs use batches of
    8 and one TTA view: the model's passing activations (the same in both runs, but their peaks are
    caught more often in a longer run) then stay small next to the images' bytes."""
    for name in ("train.csv", "sample_submission.csv"):
        if not (shared / name).is_file():
            raise HPAError(f"{shared / name}: not found (the scale run needs the real Id lists; --shared DIR)")
    t0 = time.perf_counter()
    labels = read_labels(shared / "train.csv")
    test_ids = pd.read_csv(shared / "sample_submission.csv", dtype=str)["Id"].tolist()
    runs = {}
    for key, step, px, bs, tta in (("tenth", fraction, size, batch, 8), ("full", 1, size, batch, 8),
                                   ("small_big", fraction ** 2, big, 8, 1), ("tenth_big", fraction, big, 8, 1)):
        progress(f"scale run ({key}, {px} px):")
        runs[key] = run_pipeline(work / key, labels.iloc[::step].reset_index(drop=True), test_ids[::step],
                                 px, bs, threads, progress, tta)
        runs[key].update(size=px, batch=bs, tta=tta)
    now = datetime.now(timezone.utc)
    result = {"schema": 1, "date": f"{now:%Y-%m-%d}", "created": now.isoformat(timespec="seconds"),
              "settings": {"size": size, "big": big, "batch": batch, "threads": threads, "fraction": 1 / fraction,
                           "model": "test_resnet", "cpu_count": os.cpu_count(),
                           "load_avg_1min": round(os.getloadavg()[0], 2)},
              **runs, "growth": growth_table(runs["full"], runs["tenth"], runs["small_big"], runs["tenth_big"]),
              "projection": projections(shared, n_train=len(labels), n_test=len(test_ids)),
              "total_seconds": round(time.perf_counter() - t0, 1)}
    stem = out / f"scale-{result['date']}"
    path = write_json(stem.with_suffix(".json"), result)
    write_text(stem.with_suffix(".md"), markdown(result))
    plot(result, stem.with_suffix(".png"))
    return result, path


def markdown(result: dict) -> str:
    """The growth table and the projection tables, as markdown."""
    f, t, s = result["full"]["dataset"], result["tenth"]["dataset"], result["settings"]
    lines = [f"Scale run ({result['date']}, {result['total_seconds']:.0f} s): the real Ids "
             f"({f['train_ids']:,} train + {f['test_ids']:,} test) vs every tenth ({t['train_ids']:,} + "
             f"{t['test_ids']:,}), {s['size']} px images, {s['model']}, {s['threads']} torch thread(s), on "
             f"{s['cpu_count']} shared CPU cores (load {s['load_avg_1min']}). Each stage is its own process; "
             "CPU s = its work's CPU time (start-up apart; wall time swings with the machine's load), "
             "growth = full / tenth (10 = linear; less: a fixed cost dominates, split out as the straight line "
             "through both runs, per 1,000 of the Ids the stage handles); peak RSS = the whole process; heap = "
             "anonymous memory above the start-up level, per added Id from the tenth to the full run. Memory "
             f"check: every hundredth and every tenth Id with {s['big']} px images, batches of 8 and one TTA "
             "view (the same small model activations in both; 10x the images): a stage holding every image in "
             "RAM adds at least one image's bytes of heap per Id.", "",
             "| stage (its Ids) | CPU s full | CPU s tenth | growth | fixed CPU s + ms per 1,000 Ids | wall s full | "
             "peak RSS full / tenth (MiB) | "
             f"heap full / tenth (MiB) | heap per added Id (bytes) | at {s['big']} px: heap per added Id / "
             "one image (bytes) | holds all images |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["growth"]:
        lines.append(f"| {r['stage']} ({r['ids']}) | {r['full_cpu_s']:.2f} | {r['tenth_cpu_s']:.2f} | "
                     f"{r['cpu_growth']:.1f}x | {r['fixed_cpu_s']:.2f} + {r['cpu_ms_per_1000_ids']:.0f} | "
                     f"{r['full_wall_s']:.1f} | {r['full_peak_rss_mb']:.0f} / {r['tenth_peak_rss_mb']:.0f} | "
                     f"{r['full_heap_mb']:.0f} / {r['tenth_heap_mb']:.0f} | {r['heap_bytes_per_id']:,} | "
                     f"{r['big_heap_bytes_per_id']:,} / {r['big_image_bytes']:,} | "
                     f"{'yes' if r['holds_all_images'] else 'no'} |")
    lines += ["", f"Folds: {f['folds_line'] or 'n/a'}; image cache {f['cache_bytes'] / 2**20:.1f} MiB "
              f"at {s['size']} px.", "", projection_markdown(result["projection"])]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Two panels: seconds per stage (full vs tenth, log) and peak RSS per stage."""
    g = result["growth"]
    x = np.arange(len(g))
    fig, axes = new_figure(11, 3.8, 1, 2)
    ax = axes[0, 0]
    ax.bar(x - 0.2, [r["full_cpu_s"] for r in g], 0.4, label="all real Ids")
    ax.bar(x + 0.2, [r["tenth_cpu_s"] for r in g], 0.4, label="a tenth")
    for i, r in enumerate(g):
        ax.annotate(f"{r['cpu_growth']:.1f}x", (i, max(r["full_cpu_s"], r["tenth_cpu_s"])), ha="center",
                    va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, [r["stage"] for r in g])
    ax.set(ylabel="CPU seconds (log)", title="work per stage (growth full / tenth)")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.bar(x - 0.2, [r["full_peak_rss_mb"] for r in g], 0.4, label="all real Ids")
    ax.bar(x + 0.2, [r["tenth_peak_rss_mb"] for r in g], 0.4, label="a tenth")
    ax.set_xticks(x, [r["stage"] for r in g])
    ax.set(ylabel="MiB", title="peak RSS per stage")
    ax.legend(fontsize=8)
    save_figure(fig, path)
