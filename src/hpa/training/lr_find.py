"""``hpa lr-find``: the learning-rate range test (Smith 2017) for an experiment config.

One fold's training loader, model, loss and optimiser, built by the same functions training uses,
take ``steps`` mini-batches while the lr grows exponentially from ``start`` to ``end``. The loss is
smoothed (bias-corrected exponential average, beta 0.98) and the test stops once it diverges (above
4x its minimum, or not finite). Written by hand rather than with torch-lr-finder: the steps go
through accelerate (device, mixed precision), the forward takes the targets (ArcFace head), and
layer-decay groups keep their ``lr_scale`` (torch-lr-finder sweeps every group to the same lr).

Outputs (``--out``, default the run folder): ``lr_find.csv`` (step, lr, loss, smoothed) and
``lr_find.png`` with two suggestions marked: the steepest descent of the smoothed loss and the lr
of its minimum divided by 10, the suggested ``optim.lr``.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hpa.cli_args import add_run
from hpa.config import ExperimentConfig
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds
from hpa.errors import HPAError
from hpa.io import write_csv
from hpa.losses import build_loss
from hpa.models import build_model
from hpa.optim import build_optimizer
from hpa.reports import save_figure
from hpa.rundir import experiment
from hpa.threads import set_threads
from hpa.training.data import TrainingSet
from hpa.training.loop import class_frequencies, make_loaders, num_workers
from hpa.training.run import make_accelerator

SMOOTH = 0.98           # exponential smoothing of the loss
DIVERGE = 4.0           # stop when the smoothed loss exceeds this multiple of its minimum


def lr_schedule(start: float, end: float, steps: int) -> np.ndarray:
    """``steps`` learning rates growing exponentially from ``start`` to ``end``."""
    if not 0 < start < end or steps < 2:
        raise HPAError(f"hpa lr-find: need 0 < --start < --end and --steps >= 2 (got {start}, {end}, {steps})")
    return start * (end / start) ** (np.arange(steps) / (steps - 1))


def suggest(curve: pd.DataFrame) -> dict[str, float]:
    """From the ``lr``/``smoothed`` curve: ``min_loss`` (the lr at the minimum), ``steepest`` (most
    negative slope of the smoothed loss against log lr before the minimum, each slope taken across
    5% of the points on either side) and ``suggested`` = ``min_loss / 10``. The first 10% of the
    points are skipped: the average of a few noisy batches is no curve yet."""
    lr, sm = curve["lr"].to_numpy(), curve["smoothed"].to_numpy()
    skip = len(sm) // 10
    i_min = skip + int(np.argmin(sm[skip:]))
    # slope over +-5% of the points (not neighbours): a single step's wiggle is no descent
    k = max(1, len(sm) // 20)
    centres = np.arange(skip + k, i_min - k + 1)
    if len(centres):
        log_lr = np.log10(lr)
        slope = (sm[centres + k] - sm[centres - k]) / (log_lr[centres + k] - log_lr[centres - k])
        steepest = float(lr[centres[int(np.argmin(slope))]])
    else:                                  # the minimum is at the very start: no descent to measure
        steepest = float(lr[i_min])
    return {"steepest": steepest, "min_loss": float(lr[i_min]), "suggested": float(lr[i_min]) / 10}


def plot_lr_find(curve: pd.DataFrame, sug: dict[str, float], path: Path, title: str) -> Path:
    """Loss (raw and smoothed) against lr on a log axis, the two suggestions marked; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["lr"], curve["loss"], color="0.75", lw=1, label="loss")
    shown = curve.iloc[len(curve) // 10:]                 # as suggest(): skip the first noisy 10%
    ax.plot(shown["lr"], shown["smoothed"], color="C0", lw=2, label="smoothed loss")
    ax.axvline(sug["steepest"], color="C2", ls="--", label=f"steepest descent {sug['steepest']:.1e}")
    ax.axvline(sug["suggested"], color="C3", ls="-", label=f"suggested (min / 10) {sug['suggested']:.1e}")
    ax.set_xscale("log")
    top = float(np.nanpercentile(shown["smoothed"], 95))
    low = float(shown["smoothed"].min())
    ax.set_ylim(low - 0.05 * (top - low + 1e-9), top + 0.1 * (top - low + 1e-9))
    ax.set(xlabel="learning rate", ylabel="training loss", title=title)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    return path


def range_test(cfg: ExperimentConfig, fold: int, lrs: np.ndarray) -> tuple[pd.DataFrame, str]:
    """Train on fold ``fold``'s training images with the lr of ``lrs[i]`` at step ``i``; return the
    curve (step, lr, loss, smoothed) and why it stopped. Real images only (no synthetic strategy)."""
    labels, y, fold_of = load_split(cfg)
    fv = fold_of.to_numpy()
    if fold not in set(fv.tolist()):
        raise HPAError(f"--fold {fold}: not in the folds file (folds: {sorted(set(fv.tolist()))})")
    acc = make_accelerator(cfg)
    data = TrainingSet.load(cfg, labels, y, fold_of, read_folds(folds_path(cfg))).fold_input(fold)
    seed = cfg.seed + fold
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    model = build_model(cfg.model)
    loss_fn = build_loss(cfg.loss, class_frequencies(data.y[data.train_idx]), cfg.model.head)
    optimizer = build_optimizer(model, cfg.optim)
    loader, _, sampler = make_loaders(cfg.train, cfg.data.image_size, data, seed, acc.device.type == "cuda")
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    model.train()
    if len(loader) == 0:
        raise HPAError(f"hpa lr-find: fold {fold} has no training batch")
    rows, avg, best, why = [], 0.0, math.inf, f"all {len(lrs)} steps"
    batches = _batches(loader, sampler)
    for i in tqdm(range(len(lrs)), desc=f"lr-find fold {fold}", leave=False):
        x, t = next(batches)
        for g in optimizer.param_groups:
            g["lr"] = float(lrs[i]) * g.get("lr_scale", 1.0)
        with acc.autocast():
            loss = loss_fn(model(x, t), t)
        value = float(loss.detach())
        if not math.isfinite(value):
            why = f"stopped at step {i + 1}: loss {value}"
            break
        acc.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        avg = SMOOTH * avg + (1 - SMOOTH) * value
        smoothed = avg / (1 - SMOOTH ** (i + 1))
        rows.append({"step": i + 1, "lr": float(lrs[i]), "loss": value, "smoothed": smoothed})
        best = min(best, smoothed)
        if i > 0 and smoothed > DIVERGE * best:
            why = f"stopped at step {i + 1}: loss diverged (smoothed {smoothed:.3g} > {DIVERGE:g} x minimum)"
            break
    return pd.DataFrame(rows, columns=["step", "lr", "loss", "smoothed"]), why


def _batches(loader, sampler):
    """``(x, y)`` batches of ``loader`` without end, a new shuffle each epoch (as training sets it)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, t, _ in loader:
            yield x, t
        epoch += 1


def lr_find(cfg: ExperimentConfig, fold: int = 0, start: float = 1e-6, end: float = 1.0, steps: int = 100,
            out: str | Path | None = None) -> dict:
    """Run the range test, write ``lr_find.csv`` and ``lr_find.png`` into ``out`` (default the run
    folder), print the one-line summary and return the suggestions with the paths."""
    lrs = lr_schedule(start, end, steps)
    curve, why = range_test(cfg, fold, lrs)
    if len(curve) < 3:
        raise HPAError(f"hpa lr-find: only {len(curve)} finite steps ({why}); lower --start")
    out = Path(out) if out else cfg.run_dir
    sug = suggest(curve)
    write_csv(out / "lr_find.csv", curve)
    png = plot_lr_find(curve, sug, out / "lr_find.png", f"{cfg.name} fold {fold}: lr range test")
    print(f"lr-find {cfg.name} fold {fold}: lr {start:.0e} -> {end:.0e} over {len(curve)} steps ({why}); "
          f"steepest descent at {sug['steepest']:.2e}, minimum loss at {sug['min_loss']:.2e} -> suggested "
          f"optim.lr {sug['suggested']:.2e}; plot -> {png}")
    return {**sug, "steps": len(curve), "stopped": why, "csv": str(out / "lr_find.csv"), "png": str(png)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa lr-find``."""
    add_run(p, config_help="experiment YAML")
    p.add_argument("--fold", type=int, default=0, help="fold whose training images are used (default 0)")
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate (default 1e-6)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default 1)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches (default 100)")
    p.add_argument("--out", default=None, help="folder for lr_find.csv/png (default: the run folder)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """``hpa lr-find``: run the range test and print the suggestion."""
    cfg = experiment(args.run, args.config, args.set)
    print(set_threads(cfg.train.threads, num_workers(cfg.train.num_workers), f"lr-find {cfg.name}"))
    lr_find(cfg, args.fold, args.start, args.end, args.steps, args.out)
    return 0
