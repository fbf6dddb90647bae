"""``hpa swa``: checkpoint averaging (SWA, pudae's 3rd place) as a post-training step.

For each fold, the weights kept by ``train.keep_checkpoints`` (``fold<k>/epoch<e>.pt``) are averaged:
the last K epochs (pudae averaged the last 10 of 41) or the K best-scoring of the kept ones.
``torch.optim.swa_utils`` does the averaging (``AveragedModel``, an equal running mean) and
recomputes the BatchNorm statistics on the fold's training images (``update_bn``), since the mean of
several networks' running statistics is not the statistics of the averaged network. The result is
written as ``fold<k>/swa.pt`` (used by inference with ``train.select: swa``, which also makes
``hpa swa`` rewrite the run's ``oof.csv`` and ``metrics.json`` from the average) with its own OOF,
predicted exactly like training's validation (full image, no TTA), so the two can be compared:
``fold<k>/swa_oof.csv``, the merged ``swa_oof.csv`` and ``swa_metrics.json``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from hpa.classes import PROB_COLUMNS
from hpa.cli_args import add_run
from hpa.config import ExperimentConfig, load_config
from hpa.data.dataset import load_split
from hpa.data.views import RowView
from hpa.data.folds import folds_path, read_folds, select_folds
from hpa.devices import resolve_device
from hpa.errors import HPAError
from hpa.inference.predict import predict_images
from hpa.metrics import macro_f1
from hpa.models import build_model
from hpa.io import write_csv, write_json
from hpa.rundir import FoldDir, OutputGroup, RunDir, experiment
from hpa.runlock import locked_run
from hpa.threads import set_threads
from hpa.training.checkpoint import load_checkpoint, save_checkpoint
from hpa.training.loop import FoldInput, make_loaders
from hpa.training.data import TrainingSet
from hpa.training.run import merge_oof, oof_metrics, write_selected


def select_checkpoints(fold: FoldDir, last: int = 0, best: int = 0) -> list[tuple[Path, int, float]]:
    """``(path, epoch, score)`` of the kept epoch weights to average, by epoch: the ``last`` K, or
    the ``best`` K by validation macro F1 (ties: the later epoch). HPAError when fewer than K exist."""
    if (last > 0) == (best > 0):
        raise HPAError("hpa swa: give exactly one of --last K or --best K (K >= 1)")
    k = last or best
    found = [(p, e, float(load_checkpoint(p).get("score", float("nan")))) for p, e in fold.epoch_files()]
    if len(found) < k:
        raise HPAError(f"{fold.path}: {len(found)} epoch<e>.pt file(s), {k} needed (train with "
                       f"train.keep_checkpoints >= {k})")
    chosen = found[-k:] if last else sorted(found, key=lambda f: (f[2], f[1]))[-k:]
    return sorted(chosen, key=lambda f: f[1])


def average_checkpoints(cfg: ExperimentConfig, paths: list[Path]) -> torch.nn.Module:
    """The equal average of the models saved at ``paths`` (parameters; buffers of the first one)."""
    model = build_model(cfg.model)
    model.load_state_dict(load_checkpoint(paths[0])["model"])
    avg = AveragedModel(model)
    for p in paths:                          # the first update copies, each later one averages in
        model.load_state_dict(load_checkpoint(p)["model"])
        avg.update_parameters(model)
    return avg.module


def recompute_bn(model: torch.nn.Module, cfg: ExperimentConfig, data: FoldInput, seed: int,
                 device: torch.device) -> None:
    """Recompute BatchNorm running statistics with one pass over the fold's training loader
    (training augmentation, real images only), as pudae's ``bn_update``."""
    train_loader, _, _ = make_loaders(cfg.train, cfg.data.image_size, data, seed, device.type == "cuda")
    update_bn(train_loader, model.to(device), device)


def predict_validation(model: torch.nn.Module, cfg: ExperimentConfig, data: FoldInput,
                       device: torch.device, desc: str = "swa oof", tta: int = 1, merge: str = "mean",
                       boxes=()) -> np.ndarray:
    """``(n_val, 28)`` probabilities of the fold's validation images; by default as training's
    validation makes them (the full image at the load size, no TTA), else with ``tta`` views of
    each of ``boxes`` (multi-crop TTA, as :func:`hpa.inference.predict.predict_images`)."""
    return predict_images(model, RowView(data.images, data.val_idx), tta=tta, merge=merge,
                          batch_size=cfg.train.val_batch_size or 2 * cfg.train.batch_size,
                          desc=desc, device=device, boxes=boxes)


def swa_fold(cfg: ExperimentConfig, fold: int, data: FoldInput, last: int, best: int,
             device: torch.device) -> dict:
    """Average, re-estimate BatchNorm, write ``fold<k>/swa.pt`` and ``fold<k>/swa_oof.csv``;
    return the fold's summary (epochs averaged, validation macro F1 at 0.5 before and after)."""
    files = RunDir.of(cfg).fold(fold)
    chosen = select_checkpoints(files, last, best)
    torch.manual_seed(cfg.seed + fold)
    model = average_checkpoints(cfg, [p for p, _, _ in chosen])
    recompute_bn(model, cfg, data, cfg.seed + fold, device)
    probs = predict_validation(model, cfg, data, device, f"fold {fold} swa oof")
    kag = data.kaggle_val()                     # score and OOF on the Kaggle rows, as training does
    probs, val_ids = probs[kag], data.ids[data.val_idx][kag]
    score = macro_f1(data.y[data.val_idx][kag], probs > 0.5)
    epochs = [e for _, e, _ in chosen]
    how = f"last {last}" if last else f"best {best}"
    save_checkpoint(files.swa, {"model": model.cpu().state_dict(), "epoch": max(epochs),
                                          "score": score, "fold": fold, "epochs": epochs, "source": how})
    oof = pd.DataFrame(probs, columns=PROB_COLUMNS)
    oof.insert(0, "fold", fold)
    oof.insert(0, "Id", val_ids)
    write_csv(files.swa_oof, oof)
    summary = files.read_summary() if files.summary.is_file() else {}
    return {"epochs": epochs, "scores": [s for _, _, s in chosen], "swa_score": score,
            "best_score": summary.get("best_score"), "best_epoch": summary.get("best_epoch"), "source": how}


@locked_run     # writes into the run folder: not while that run trains
def swa_run(cfg: ExperimentConfig, folds: list[int] | None = None, last: int = 0, best: int = 0,
            device: str | None = None) -> dict:
    """Average the kept checkpoints of ``folds`` (default: every fold with kept epochs) of ``cfg``'s
    run; write the per-fold files, ``swa_oof.csv`` and ``swa_metrics.json`` (over these folds);
    return the metrics."""
    t0 = time.perf_counter()
    rd = RunDir.of(cfg)
    select = cfg.train.select                                 # swa: oof.csv and metrics.json follow the average
    cfg = rd.load_config()                                    # the run's own model and data settings
    cfg.train.select = select
    labels, y, fold_of = load_split(cfg)
    all_folds, chosen = select_folds(fold_of, folds, cfg.folds.n_splits)
    folds = chosen if folds else [f for f in all_folds if rd.fold(f).epoch_files()]
    if not folds:
        raise HPAError(f"{rd.path}: no fold<k>/epoch<e>.pt files (train with train.keep_checkpoints: K)")
    for f in folds:                                           # every input checked before any work
        select_checkpoints(rd.fold(f), last, best)
    # the training rows of each fold (external ones included) re-estimate BatchNorm
    data = TrainingSet.load(cfg, labels, y, fold_of, read_folds(folds_path(cfg)))
    dev = torch.device(resolve_device(device))
    summaries = {}
    for f in folds:
        summaries[str(f)] = swa_fold(cfg, f, data.fold_input(f), last, best, dev)
    oof = merge_oof(rd, labels["Id"], folds, which="swa_oof")
    metrics = oof_metrics(oof, pd.DataFrame(y, index=labels["Id"].astype(str).to_numpy()), summaries)
    base = _best_epoch_oof_f1(rd, oof["Id"], y, labels["Id"])
    metrics["best_epoch_oof_macro_f1"] = base
    with OutputGroup() as group:                              # the merged OOF and its metrics together
        write_csv(group.path(rd.swa_oof), oof)
        write_json(group.path(rd.swa_metrics), metrics)
    if cfg.train.select == "swa" and set(folds) == set(rd.finished_folds()):
        write_selected(cfg, rd, labels, y, folds)             # oof.csv and metrics.json now follow swa
    how = f"last {last}" if last else f"best {best}"
    ref = f" (best-epoch checkpoints: {base:.4f})" if base is not None else ""
    print(f"swa {cfg.name}: folds {folds}, {how} kept epochs each, BatchNorm recomputed, in "
          f"{time.perf_counter() - t0:.0f}s; pooled OOF macro F1 {metrics['oof_macro_f1']:.4f} at 0.5{ref} -> "
          f"{rd.swa_oof}, fold<k>/swa.pt (train.select: swa"
          f"{', now oof.csv' if cfg.train.select == 'swa' else ''})")
    return metrics


def _best_epoch_oof_f1(rd: RunDir, ids: pd.Series, y: np.ndarray, all_ids: pd.Series) -> float | None:
    """Macro F1 at 0.5 of the training OOF (best epochs) on the same images, for comparison."""
    if not rd.oof.is_file():
        return None
    oof_ids, _, probs = rd.read_oof()
    oof = pd.DataFrame(probs, index=oof_ids, columns=PROB_COLUMNS)
    if not set(ids).issubset(oof.index):
        return None
    y_by_id = pd.DataFrame(y, index=all_ids.astype(str).to_numpy())
    return macro_f1(y_by_id.loc[ids].to_numpy(), oof.loc[ids, PROB_COLUMNS].to_numpy() > 0.5)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa swa``."""
    add_run(p, config_help="experiment YAML of a run trained with train.keep_checkpoints")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, default=0, metavar="K", help="average the last K kept epochs")
    which.add_argument("--best", type=int, default=0, metavar="K",
                       help="average the K kept epochs with the best validation macro F1")
    p.add_argument("--folds", type=int, nargs="+", help="folds (default: every fold with kept epochs)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """``hpa swa``: average checkpoints per fold and print the one-line comparison."""
    device = resolve_device(args.device)
    cfg = experiment(args.run, args.config, args.set)
    print(set_threads(cfg.train.threads, 0, f"swa {cfg.name}"))
    swa_run(cfg, args.folds, args.last, args.best, device)
    return 0
