"""Orchestrate k-fold training: data, accelerator, folds, merged OOF, metrics.json and plots."""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.config import ExperimentConfig, dotted_items, load_config, save_config, to_dict
from hpa.data.cache import open_images
from hpa.data.dataset import load_split
from hpa.errors import HPAError
from hpa.io import read_csv, write_csv, write_json
from hpa.metrics import macro_f1, per_class_f1
from hpa.reports.run_report import write_run_report
from hpa.runlock import locked_run
from hpa.training.loop import PROB_COLUMNS, FoldInput, FoldTrainer
from hpa.training.plots import plot_curves, plot_per_class
from hpa.transforms import load_size

FOLD_FILES = ("summary.json", "oof.csv", "best.pt", "last.pt", "history.csv")


def make_accelerator(cfg: ExperimentConfig):
    """An ``Accelerator`` for ``cfg.train`` (amp only on CUDA; fresh state so runs can follow each other)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # A second run in one process (tests, notebooks) must not inherit the first run's settings;
    # the process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    amp = cfg.train.amp
    if amp not in ("no", "bf16", "fp16"):
        raise HPAError(f"train.amp: '{amp}' not one of no, bf16, fp16")
    if amp != "no" and not torch.cuda.is_available():
        warnings.warn(f"train.amp={amp} needs CUDA; training in fp32 on the CPU", stacklevel=2)
        amp = "no"
    return Accelerator(mixed_precision=amp, gradient_accumulation_steps=cfg.train.accum_steps)


def check_names(cfg: ExperimentConfig) -> None:
    """Fail before anything is written when a registry name in ``cfg`` is unknown (lists valid names)."""
    from hpa.gpu_augment import check_gpu_ops
    from hpa.losses import LOSSES
    from hpa.models.heads import HEADS
    from hpa.optim import OPTIMIZERS, SCHEDULES
    from hpa.samplers import SAMPLERS
    from hpa.synthetic.strategies import STRATEGIES
    from hpa.transforms import AUGMENTATIONS

    HEADS.get(cfg.model.head)
    for term in cfg.loss:
        LOSSES.get(term.name)
    OPTIMIZERS.get(cfg.optim.name)
    SCHEDULES.get(cfg.sched.name)
    SAMPLERS.get(cfg.train.sampler)
    STRATEGIES.get(cfg.synthetic.strategy)
    for op in cfg.train.augment:
        AUGMENTATIONS.get(op.name)
    check_gpu_ops(cfg.train.gpu_augment)


def constant_f1(y: np.ndarray) -> float:
    """Macro F1 of the best constant predictor: every class predicted for every image (2p / (1 + p))."""
    p = y.mean(0)
    return float(np.mean(2 * p / (1 + p)))


def finished_folds(run_dir: Path) -> list[int]:
    """Folds of ``run_dir`` with a ``summary.json`` and ``oof.csv`` (finished training)."""
    done = []
    for d in sorted(run_dir.glob("fold*")):
        if d.name[4:].isdigit() and (d / "summary.json").is_file() and (d / "oof.csv").is_file():
            done.append(int(d.name[4:]))
    return sorted(done)


def merge_oof(run_dir: Path, ids: pd.Series, folds: list[int]) -> pd.DataFrame:
    """Concatenate ``fold<k>/oof.csv`` of ``folds`` in train.csv order and write ``oof.csv``."""
    parts = [read_csv(run_dir / f"fold{k}" / "oof.csv", ["Id", "fold"] + PROB_COLUMNS, dtype=None)
             for k in folds]
    oof = pd.concat(parts, ignore_index=True)
    oof["Id"] = oof["Id"].astype(str)
    order = pd.Series(np.arange(len(ids)), index=ids.astype(str).to_numpy())
    oof = oof.iloc[np.argsort(order.reindex(oof["Id"]).to_numpy(), kind="stable")].reset_index(drop=True)
    write_csv(run_dir / "oof.csv", oof)
    return oof


def oof_metrics(oof: pd.DataFrame, y_by_id: pd.DataFrame, summaries: dict) -> dict:
    """OOF macro F1 at 0.5, per class (by name), the constant baseline and per-fold best scores."""
    y = y_by_id.loc[oof["Id"]].to_numpy()
    pred = oof[PROB_COLUMNS].to_numpy() > 0.5
    per = per_class_f1(y, pred)
    return {"oof_macro_f1": macro_f1(y, pred), "threshold": 0.5, "n_images": int(len(oof)),
            "constant_macro_f1": constant_f1(y),
            "per_class_f1": {name: float(v) for name, v in zip(CLASS_NAMES, per)},
            "folds": summaries}


def prepare_fold_dir(fold_dir: Path, resume: bool) -> None:
    """A fresh (non-resumed) fold starts from an empty folder: stale files of an old run are removed."""
    if resume or not fold_dir.exists():
        return
    stale = [fold_dir / f for f in FOLD_FILES if (fold_dir / f).exists()]
    if stale:
        print(f"{fold_dir}: starting fresh (use --resume to continue); removing old outputs")
        shutil.rmtree(fold_dir)


# settings that change how a run is loaded, evaluated or predicted, not what it trains: --resume
# accepts a change of these; any other difference would mix two experiments in one run folder
RESUME_FREE = ("infer.", "thresholds.", "train.num_workers", "train.pin_memory",
               "train.persistent_workers", "train.val_batch_size", "data.cache")


def check_resume_config(cfg: ExperimentConfig, path: Path) -> None:
    """``--resume`` continues the run saved at ``path``: refuse (HPAError naming the keys) a config
    that would train differently, e.g. another learning rate or epoch count."""
    if not path.is_file():
        return
    old, new = dotted_items(to_dict(load_config(path))), dotted_items(to_dict(cfg))
    diff = [k for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not k.startswith(RESUME_FREE)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise HPAError(f"{path}: --resume with a different config ({shown}{more}); resume with the saved "
                       "settings, drop --resume to start afresh, or use another name")


@locked_run     # a second run with the same name refuses instead of writing the same files
def run(cfg: ExperimentConfig, folds: list[int] | None = None, resume: bool = False) -> dict:
    """Train ``folds`` (default all) of ``cfg``; write ``runs/<exp>/``; return the metrics dict.

    With ``resume`` finished folds are skipped and an interrupted fold continues from ``last.pt``.
    """
    t0 = time.perf_counter()
    check_names(cfg)
    if resume:
        check_resume_config(cfg, cfg.run_dir / "config.yaml")
    acc = make_accelerator(cfg)
    run_dir = cfg.run_dir
    labels, y, fold_of = load_split(cfg)
    k = cfg.folds.n_splits
    all_folds = sorted(int(f) for f in np.unique(fold_of.to_numpy()))
    folds = all_folds if not folds else sorted(set(int(f) for f in folds))
    bad = [f for f in folds if f not in all_folds]
    if bad:
        raise HPAError(f"--folds {bad[0]}: not in the folds file (folds: {all_folds}, n_splits {k})")
    if acc.is_main_process:
        save_config(cfg, run_dir / "config.yaml")
    with acc.main_process_first():              # only one process builds the image cache
        images = open_images(Path(cfg.data.root) / cfg.data.train_dir, labels["Id"].tolist(),
                             load_size(cfg), kind="kaggle", cache=cfg.data.cache,
                             cache_dir=cfg.data.cache_dir)
    ids, fv = labels["Id"].to_numpy().astype(str), fold_of.to_numpy()
    for f in folds:
        fold_dir = run_dir / f"fold{f}"
        if resume and f in finished_folds(run_dir):
            acc.print(f"fold {f}: already finished, skipped")
            continue
        if acc.is_main_process:
            prepare_fold_dir(fold_dir, resume)
        acc.wait_for_everyone()
        data = FoldInput(images, y, ids, np.flatnonzero(fv != f), np.flatnonzero(fv == f))
        FoldTrainer(cfg, f, data, acc, fold_dir).fit(resume)
    return finish(cfg, acc, labels, y, t0)


def finish(cfg: ExperimentConfig, acc, labels: pd.DataFrame, y: np.ndarray, t0: float) -> dict:
    """Merge finished folds' OOF, write metrics.json and the PNGs, print the one-line summary."""
    run_dir = cfg.run_dir
    done = finished_folds(run_dir)
    summaries = {str(k): json.loads((run_dir / f"fold{k}" / "summary.json").read_text()) for k in done}
    metrics = {}
    if acc.is_main_process:
        oof = merge_oof(run_dir, labels["Id"], done)
        y_by_id = pd.DataFrame(y, index=labels["Id"].astype(str).to_numpy())
        metrics = oof_metrics(oof, y_by_id, summaries)
        write_json(run_dir / "metrics.json", metrics)
        plot_curves(run_dir, done)
        plot_per_class(run_dir / "oof_per_class_f1.png", metrics, cfg.name)
        write_run_report(run_dir)
        print(f"trained {cfg.name}: folds {done} in {time.perf_counter() - t0:.0f}s; OOF macro F1 "
              f"{metrics['oof_macro_f1']:.4f} at 0.5 on {metrics['n_images']} images (constant "
              f"predictor {metrics['constant_macro_f1']:.4f}) -> {run_dir}")
    acc.wait_for_everyone()
    return metrics
