"""``hpa baseline``: a non-deep baseline on pooled per-channel image features, in the run-folder formats.

Each image becomes a short vector (:func:`pooled_features`): per stain the mean, standard deviation
and percentiles, the green (protein) stain's mean inside and outside the nuclei (blue) and the
microtubules (red) and the ER (yellow) masks, and the green stain's correlation with each reference
stain: where the protein sits, roughly, which is what the classes are about. Per fold of the run's
split a scikit-learn pipeline (standardise, then one logistic regression per class, ``class_weight``
``balanced`` by default) is fitted on the other folds; it predicts its held-out fold (OOF) and the
test images (averaged over the folds, like a trained run's fold checkpoints).

The outputs are those of a trained run, in ``runs/<name>/`` (default ``<experiment>_baseline``):
``config.yaml``, ``inputs.json``, ``fold<k>/oof.csv`` + ``summary.json``, ``oof.csv``,
``metrics.json`` and ``test_probs.csv``; so ``hpa thresholds``, ``infer.py --ensemble`` (as a member,
or alone) and ``hpa report`` work on it. ``--out`` also tunes thresholds on the OOF and writes a
submission (no checkpoints: ``infer.py --config`` does not apply to a baseline run).
"""
from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.config import ExperimentConfig, check_run_name, load_config
from hpa.data.cache import open_images
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds, select_folds
from hpa.errors import HPAError
from hpa.inference.predict import check_test_images
from hpa.inference.stage import sample_ids, stage_submission
from hpa.io import check_output_file, write_csv, write_json
from hpa.rundir import OutputGroup, RunDir, data_inputs
from hpa.runlock import locked_run
from hpa.thresholds.stage import tune_run
from hpa.training.run import merge_oof, oof_metrics, record_run, write_fold_predictions

PERCENTILES = (10, 50, 90, 99)


def pooled_features(image: np.ndarray) -> np.ndarray:
    """Features of one ``H x W x 4`` (R, G, B, Y) uint8 image as float32: per channel mean, std and
    ``PERCENTILES``; the green mean inside / outside the above-median masks of blue, red and yellow;
    green's correlation with blue, red and yellow."""
    x = image.reshape(-1, image.shape[-1]).astype(np.float32) / 255.0
    feats = [x.mean(0), x.std(0), *np.percentile(x, PERCENTILES, axis=0)]
    g = x[:, 1]
    for c in (2, 0, 3):             # blue (nuclei), red (microtubules), yellow (ER)
        mask = x[:, c] > np.median(x[:, c])
        inside = g[mask].mean() if mask.any() else 0.0
        outside = g[~mask].mean() if (~mask).any() else 0.0
        feats.append(np.array([inside, outside, inside - outside], dtype=np.float32))
    gi = image[..., 1].astype(np.float32) / 255.0        # green texture: energy at 1, 2, 4, 8 px scales
    h = gi.shape[0] // 8 * 8
    blocks = [gi[:h, :h].reshape(h // b, b, h // b, b).mean((1, 3)) for b in (1, 2, 4, 8)]
    feats.append(np.array([blk.std() for blk in blocks] + [np.abs(np.diff(gi, axis=0)).mean(),
                           np.abs(np.diff(gi, axis=1)).mean()], dtype=np.float32))
    sd = x.std(0)
    corr = [float(np.mean((g - g.mean()) * (x[:, c] - x[:, c].mean())) / (sd[1] * sd[c]))
            if sd[1] > 0 and sd[c] > 0 else 0.0 for c in (2, 0, 3)]
    feats.append(np.array(corr, dtype=np.float32))
    return np.concatenate([np.atleast_1d(f) for f in feats]).astype(np.float32)


def feature_matrix(images: Sequence[np.ndarray], desc: str = "features") -> np.ndarray:
    """``(N, F)`` features of a sequence of images (:func:`pooled_features`)."""
    return np.stack([pooled_features(np.asarray(images[i]))
                     for i in tqdm(range(len(images)), desc=desc, leave=False)])


def make_model(C: float = 10.0, class_weight: str | None = "balanced", seed: int = 0):
    """A scikit-learn pipeline: ``StandardScaler`` then one-vs-rest ``LogisticRegression``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    lr = LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed)
    return make_pipeline(StandardScaler(), OneVsRestClassifier(lr))


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_eval: list[np.ndarray], C: float = 10.0,
                class_weight: str | None = "balanced", seed: int = 0) -> list[np.ndarray]:
    """Fit :func:`make_model` on ``(x_train, y_train)``; return ``(n, 28)`` probabilities for each
    matrix of ``x_eval``. A class without positives (or without negatives) in ``y_train`` gets a
    constant probability (scikit-learn's constant predictor; its warning is silenced)."""
    model = make_model(C, class_weight, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        model.fit(x_train, y_train)
        return [np.clip(model.predict_proba(x), 0.0, 1.0) for x in x_eval]


@locked_run     # like train.py: a second process writing the same run folder refuses
def run_baseline(cfg: ExperimentConfig, folds: Sequence[int] | None = None, C: float = 10.0,
                 class_weight: str | None = "balanced") -> dict:
    """Fit the baseline on the folds of ``cfg`` (default all), write the run folder ``cfg.run_dir``;
    return its metrics (``oof_macro_f1`` at 0.5 on the predicted folds, ``constant_macro_f1``...)."""
    t0 = time.perf_counter()
    d = cfg.data
    labels, y, fold_of = load_split(cfg)
    _, folds = select_folds(fold_of, folds, cfg.folds.n_splits)
    test_ids = sample_ids(Path(d.root) / d.sample_submission)
    check_test_images(Path(d.root) / d.test_dir, test_ids)
    ids = labels["Id"].astype(str).to_numpy()
    x = feature_matrix(open_images(Path(d.root) / d.train_dir, ids.tolist(), d.image_size, "kaggle",
                                   d.cache, d.cache_dir), "train features")
    x_test = feature_matrix(open_images(Path(d.root) / d.test_dir, test_ids, d.image_size, "kaggle",
                                        d.cache, d.cache_dir), "test features")
    rd = RunDir.of(cfg)
    record_run(rd, cfg, data_inputs(Path(d.root) / d.train_csv, folds_path(cfg), read_folds(folds_path(cfg)),
                                    d.fraction, len(labels)))
    fv = fold_of.to_numpy()
    test_sum = np.zeros((len(test_ids), NUM_CLASSES))
    for f in tqdm(folds, desc="baseline folds", leave=False):
        tr, va = np.flatnonzero(fv != f), np.flatnonzero(fv == f)
        p_val, p_test = fit_predict(x[tr], y[tr], [x[va], x_test], C, class_weight, cfg.seed + f)
        test_sum += p_test
        write_fold_predictions(rd.fold(f), f, ids[va], p_val, y[va], "baseline")
    test = pd.DataFrame(test_sum / len(folds), columns=PROB_COLUMNS)
    test.insert(0, "Id", test_ids)
    done = [f for f in rd.finished_folds() if f in folds]
    oof = merge_oof(rd, labels["Id"], done)
    metrics = oof_metrics(oof, pd.DataFrame(y, index=ids), rd.summaries(done))
    metrics["baseline"] = {"model": "logistic_regression", "C": C, "class_weight": class_weight,
                           "features": int(x.shape[1]), "image_size": d.image_size}
    with OutputGroup() as group:
        write_csv(group.path(rd.oof), oof)
        write_json(group.path(rd.metrics), metrics)
        write_csv(group.path(rd.test_probs), test)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["labels_per_image"] = float((oof[PROB_COLUMNS].to_numpy() > 0.5).sum(1).mean())
    metrics["true_labels_per_image"] = float(y[np.isin(fv, folds)].sum(1).mean())
    return metrics


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa baseline``."""
    p.add_argument("--config", required=True, help="experiment YAML (data, folds, thresholds)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--name", help="run folder name (default <experiment name>_baseline)")
    p.add_argument("--folds", type=int, nargs="+", help="folds to fit (default all)")
    p.add_argument("--C", type=float, default=10.0, help="inverse regularisation strength (default 10)")
    p.add_argument("--class-weight", choices=("balanced", "none"), default="balanced",
                   help="per-class positive weighting of the logistic regressions (default balanced)")
    p.add_argument("--out", help="also tune thresholds on the OOF and write this submission CSV")


def main(args: argparse.Namespace) -> int:
    """Run ``hpa baseline``; print a one-line summary."""
    cfg = load_config(args.config, args.set)
    cfg.name = check_run_name(args.name or f"{cfg.name}_baseline", "--name" if args.name else "name")
    if not math.isfinite(args.C) or args.C <= 0:
        raise HPAError(f"--C: must be a finite number > 0, got {args.C}")
    if cfg.data.external_csv:
        raise HPAError("data.external_csv: hpa baseline fits on the Kaggle images only; it would ignore the "
                       "external images (add --set data.external_csv= to run it without them)")
    if args.out:
        check_output_file(args.out, "--out")
    m = run_baseline(cfg, args.folds, args.C, None if args.class_weight == "none" else args.class_weight)
    rd = RunDir.of(cfg)
    line = (f"baseline {cfg.name}: logistic regression on {m['baseline']['features']} pooled features; "
            f"OOF macro F1 {m['oof_macro_f1']:.4f} at 0.5 on {m['n_images']} images (constant predictor "
            f"{m['constant_macro_f1']:.4f}), {m['labels_per_image']:.2f} labels/image "
            f"(true {m['true_labels_per_image']:.2f}) in {m['seconds']:.0f}s -> {rd.path}")
    if args.out:
        thr = tune_run(rd, Path(cfg.data.root) / cfg.data.train_csv, cfg.thresholds, cfg.infer.ensure_one)
        with OutputGroup() as group:
            v = stage_submission(rd.read_test_probs(), thr, Path(cfg.data.root) / cfg.data.sample_submission,
                                 args.out, group, cfg.infer.ensure_one)
        line += f"; thresholds '{thr['strategy']}' (OOF {thr['oof_f1_tuned']:.4f}) -> {args.out} ({v['rows']} rows)"
    print(line)
    return 0
