"""Rows 1, 4 and 5: data loading, threshold tuning and the fold splitter (no model involved)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hpa.bench.core import ROWS, BenchContext, interleaved, make_row, not_run
from hpa.classes import NUM_CLASSES, train_frequencies
from hpa.data.cache import open_images
from hpa.data.dataset import HPADataset
from hpa.data.folds import make_folds
from hpa.data.images import write_kaggle_rgby
from hpa.data.labels import label_matrix, read_labels
from hpa.demo.dataset import render_sample
from hpa.metrics import macro_f1
from hpa.thresholds import ThresholdTuner, apply_thresholds, grid_search_thresholds

LOAD_BATCH = 32


def write_pngs(folder: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """Write ``n`` demo-like RGBY samples (four Kaggle PNGs each) of ``size`` px; return their Ids.

    Rendered HPA-like cells (not white noise), so PNG compression and decoding cost are realistic.
    """
    rng = np.random.default_rng(seed)
    ids = [f"bench{i:05d}" for i in range(n)]
    for image_id in ids:
        labels = rng.choice(NUM_CLASSES, size=int(rng.integers(1, 3)), replace=False)
        write_kaggle_rgby(folder, image_id, render_sample(labels, size, rng))
    return ids


def pil_loop(folder: Path, ids: list[str], order: np.ndarray) -> int:
    """The public-kernel loader: per sample, ``Image.open`` each stain, stack, to a tensor batch."""
    from PIL import Image

    for start in range(0, len(order), LOAD_BATCH):
        batch = []
        for i in order[start:start + LOAD_BATCH]:
            planes = [np.array(Image.open(folder / f"{ids[i]}_{c}.png").convert("L"))
                      for c in ("red", "green", "blue", "yellow")]
            batch.append(torch.from_numpy(np.stack(planes, axis=0)))
        torch.stack(batch)
    return len(order)


def memory_copy(ram: np.ndarray, order: np.ndarray) -> int:
    """The floor: copy the same bytes (in the same order and batches) from an in-RAM array."""
    for start in range(0, len(order), LOAD_BATCH):
        torch.from_numpy(ram[order[start:start + LOAD_BATCH]]).permute(0, 3, 1, 2).contiguous()
    return len(order)


def drain(loader: DataLoader) -> int:
    """Iterate a loader once; return the number of samples it produced."""
    return sum(len(x) for x, _ in loader)


@ROWS.register("loading", order=1)
def row_loading(ctx: BenchContext) -> dict:
    """Row 1: the pipeline's loader over the uint8 cache vs PNG decoding, a PIL loop and a memcpy."""
    n, size = (16, 32) if ctx.quick else (96, ctx.data_size)
    folder = ctx.work / "loading_png"
    ids = write_pngs(folder, n, size, ctx.seed)
    t0 = time.perf_counter()
    cache = open_images(folder, ids, size, cache=True, cache_dir=ctx.work / "cache")
    build_s = time.perf_counter() - t0
    lazy = open_images(folder, ids, size, cache=False)
    ram = np.array(cache)
    order = np.random.default_rng(ctx.seed).permutation(n)
    pin = ctx.device == "cuda"
    # One process for every variant: workers scale all of them alike, and on a shared 2-core
    # machine their start-up would dominate a short epoch.
    loaders = {name: DataLoader(HPADataset(imgs), batch_size=LOAD_BATCH, sampler=order.tolist(),
                                num_workers=0, pin_memory=pin)
               for name, imgs in (("cache", cache), ("png", lazy))}
    rates = interleaved({"cache": lambda: drain(loaders["cache"]), "png": lambda: drain(loaders["png"]),
                         "pil": lambda: pil_loop(folder, ids, order),
                         "memcopy": lambda: memory_copy(ram, order)}, ctx.repeats)
    r_png, r_mem = rates["cache"] / rates["png"], rates["cache"] / rates["memcopy"]
    note = (f"{n} samples of {size}px (4 PNGs each), batch {LOAD_BATCH}, shuffled, 0 workers, "
            f"cache built once in {build_s:.2f}s; the page cache holds the memmap")
    return make_row("data loading", "samples/s",
                    {"loader+cache": rates["cache"], "loader+png decode": rates["png"],
                     "PIL loop": rates["pil"], "memcopy": rates["memcopy"]},
                    {"cache / png": r_png, "cache / PIL": rates["cache"] / rates["pil"],
                     "cache / memcopy": r_mem},
                    "cache >= 5x png; >= 0.5x memcopy", bool(r_png >= 5 and r_mem >= 0.5), note)


def synthetic_oof(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, labels)`` of a random OOF with the train label frequencies (``bench_thresholds``' recipe)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_rows, NUM_CLASSES)) < np.asarray(train_frequencies())).astype(np.uint8)
    return np.clip(0.35 * labels + rng.beta(1, 4, labels.shape), 0, 1), labels


def naive_grid(probs: np.ndarray, labels: np.ndarray, n: int = 100) -> np.ndarray:
    """The public-kernel baseline: per class, F1 of ``probs >= t`` recomputed for each of ``n`` values."""
    grid = np.linspace(0, 1, n + 2)[1:-1]
    out = np.empty(probs.shape[1])
    for j in range(probs.shape[1]):
        y = labels[:, j].astype(bool)
        f1 = [2 * np.sum(y & (probs[:, j] >= t)) / max(y.sum() + np.sum(probs[:, j] >= t), 1) for t in grid]
        out[j] = grid[int(np.argmax(f1))]
    return out


@ROWS.register("thresholds", order=4)
def row_thresholds(ctx: BenchContext) -> dict:
    """Row 4: exact per-class tuning vs a 100-point grid per class, naive and vectorised, same OOF."""
    n_rows = 3000 if ctx.quick else 31072
    probs, labels = synthetic_oof(n_rows, ctx.seed)
    found = {}

    def timed(name, fn):
        def run() -> int:
            found[name] = fn()
            return 1
        return run

    rates = interleaved({
        "exact": timed("exact", lambda: ThresholdTuner("per_class", {"min_positives": 1, "shrink": 0}, rate_ratio=0).fit(probs, labels).thresholds_),
        "grid": timed("grid", lambda: naive_grid(probs, labels)),
        "grid_vec": timed("grid_vec", lambda: grid_search_thresholds(probs, labels))}, ctx.repeats)
    f1 = {k: macro_f1(labels, apply_thresholds(probs, v)) for k, v in found.items()}
    speed = rates["exact"] / rates["grid"]
    return make_row("thresholds", "s per fit",
                    {"exact s": 1 / rates["exact"], "grid100 s": 1 / rates["grid"],
                     "grid100 vectorised s": 1 / rates["grid_vec"], "exact macro F1": f1["exact"],
                     "grid macro F1": f1["grid"]},
                    {"grid time / exact time": speed, "vectorised grid time / exact time":
                     rates["exact"] / rates["grid_vec"], "exact F1 / grid F1": f1["exact"] / f1["grid"]},
                    ">= 20x faster, F1 >= grid", bool(speed >= 20 and f1["exact"] >= f1["grid"] - 1e-12),
                    f"synthetic {n_rows} x {NUM_CLASSES} OOF with train label frequencies; grid100 = "
                    "F1 recomputed per threshold (public kernels), vectorised = "
                    "hpa.thresholds.grid_search_thresholds (one sort per class, like the exact tuner)")


def _spread(y: np.ndarray, fold: np.ndarray, k: int) -> float:
    """Largest |positives of a class in a fold - its count / k| over classes and folds."""
    per_fold = np.stack([y[fold == j].sum(0) for j in range(k)])
    return float(np.abs(per_fold - y.sum(0) / k).max())


@ROWS.register("folds", order=5)
def row_folds(ctx: BenchContext) -> dict:
    """Row 5: ``make_folds`` on the real 31,072-row train.csv vs iterstrat called directly."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    goal = "report (iterstrat is the reference)"
    path = Path(ctx.extra.get("shared", "../shared/hpa")) / "train.csv"
    if not path.is_file():
        return not_run("folds", "s", goal, "not run (no ../shared)")
    df = read_labels(path)
    if ctx.quick:
        df = df.iloc[:2000].reset_index(drop=True)
    y, k = label_matrix(df), 5
    t0 = time.perf_counter()
    fold = make_folds(df, k, 42).to_numpy()
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    raw = np.empty(len(y), np.int64)
    for j, (_, val) in enumerate(MultilabelStratifiedKFold(k, shuffle=True, random_state=42)
                                 .split(np.zeros(len(y)), y)):
        raw[val] = j
    ref = time.perf_counter() - t0
    return make_row("folds", "s", {"make_folds s": ours, "iterstrat s": ref,
                                      "max class deviation": _spread(y, fold, k)},
                    {"iterstrat time / make_folds time": ref / ours}, goal, None,
                    f"{len(df)} rows, k={k}; one run each (seconds-long, deterministic); "
                    f"same assignment as iterstrat: {bool((raw == fold).all())}")
