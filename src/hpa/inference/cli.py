"""``python infer.py`` / ``hpa infer``: predict the test set of a run (or blend runs) and write a submission.

``--config configs/<exp>.yaml``: each fold's checkpoint x dihedral TTA -> ``runs/<exp>/test_probs.csv``,
then the run's ``thresholds.json`` -> a validated submission in sample-submission order.
``--ensemble configs/ensemble_<name>.yaml``: blend runs' OOF and test probabilities, re-tune
thresholds on the blended OOF, one submission. Every input is checked before any work starts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES
from hpa.config import ExperimentConfig, load_config
from hpa.errors import HPAError
from hpa.inference.predict import (PROB_COLUMNS, check_test_images, checkpoint_paths, open_test_images,
                                   predict_run, run_folds, tta_boxes)
from hpa.io import write_csv
from hpa.runlock import locked_run
from hpa.submission import make_submission, plot_label_rates, read_sample_ids, write_submission
from hpa.threads import set_threads
from hpa.thresholds import ThresholdTuner, apply_thresholds, load_thresholds


def resolve_thresholds(path: Path, default: float) -> dict[str, Any]:
    """Return the run's thresholds (checked), or ``default`` for every class with a warning line."""
    if Path(path).is_file():
        return load_thresholds(path)
    print(f"warning: {path} not found; using thresholds.default={default} for every class "
          "(run 'hpa thresholds' first)", file=sys.stderr)
    return {"strategy": "default", "thresholds": [float(default)] * NUM_CLASSES, "params": {}}


def thresholds_for_test(thr: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    """Thresholds to apply to test probabilities; ``proportion`` is re-fitted on the test set itself
    (target rates are about the test distribution, as the 1st and 3rd place teams applied them)."""
    if thr.get("strategy") == "proportion":
        props = (thr.get("params") or {}).get("proportions")
        return ThresholdTuner("proportion", proportions=props).fit(probs).thresholds_
    return np.asarray(thr["thresholds"], dtype=np.float64)


def finish_submission(test: pd.DataFrame, thr: dict[str, Any], sample: str | Path, out: str | Path,
                      ensure_one: bool = True) -> dict[str, float]:
    """Apply thresholds to ``Id,p0..p27`` test probabilities and write the checked submission.

    Returns the validation summary; HPAError (nothing written) if the result does not validate.
    """
    probs = test[PROB_COLUMNS].to_numpy(dtype=np.float64)
    preds = apply_thresholds(probs, thresholds_for_test(thr, probs), ensure_one)
    summary = write_submission(out, make_submission(test["Id"].tolist(), preds), sample)
    plot_label_rates(preds, Path(out).with_suffix(".png"), f"{Path(out).name}: predicted label rates")
    return summary


@locked_run     # test_probs.csv lives in the run folder: not while that run trains
def infer_experiment(cfg: ExperimentConfig, out: str | Path, folds: list[int] | None = None) -> dict[str, Any]:
    """Predict the test set of ``cfg``'s run, write ``test_probs.csv`` and the submission ``out``.

    The model is rebuilt from the run's saved ``config.yaml``; TTA, batch size and thresholds come
    from ``cfg``. All inputs are checked first. Returns the validation summary plus counts.
    """
    run_dir = cfg.run_dir
    run_cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if run_cfg is None:
        raise HPAError(f"{run_dir / 'config.yaml'}: missing (train the run first)")
    cfg.model, cfg.data.image_size = run_cfg.model, run_cfg.data.image_size
    cfg.train.crop_from = run_cfg.train.crop_from            # test images at the load size validation used
    folds = run_folds(run_dir, run_cfg.folds.n_splits) if folds is None else folds
    sample = Path(cfg.data.root) / cfg.data.sample_submission
    ids = read_sample_ids(sample)
    checkpoint_paths(run_dir, folds, cfg.infer.checkpoint)
    tta_boxes(cfg)                                           # a bad infer.crops fails before any work
    check_test_images(Path(cfg.data.root) / cfg.data.test_dir, ids)
    thr = resolve_thresholds(run_dir / "thresholds.json", cfg.thresholds.default)
    images = open_test_images(cfg, ids)
    test = predict_run(cfg, run_dir, ids, images, folds, cfg.infer.tta, cfg.infer.tta_merge, cfg.infer.checkpoint)
    write_csv(run_dir / "test_probs.csv", test)
    summary = finish_submission(test, thr, sample, out, cfg.infer.ensure_one)
    return {**summary, "folds": len(folds), "tta": cfg.infer.tta, "crops": cfg.infer.crops,
            "strategy": thr["strategy"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``infer.py`` / ``hpa infer``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiment YAML of a trained run")
    src.add_argument("--ensemble", help="ensemble YAML (runs, weights, blend, thresholds)")
    p.add_argument("--tta", type=int, help="dihedral TTA views 1-8 (default: infer.tta)")
    p.add_argument("--tta-merge", choices=["mean", "max"], help="merge of TTA views (default: infer.tta_merge)")
    p.add_argument("--folds", type=int, nargs="+", help="fold indices to use (default: the folds in the run's oof.csv, else all)")
    p.add_argument("--no-ensure-one", action="store_true", help="allow rows with no label")
    p.add_argument("--out", help="submission CSV (default: submissions/<name>.csv)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """Run inference or an ensemble; print a one-line summary."""
    if args.ensemble:
        from hpa.inference.ensemble import load_ensemble_config, run_ensemble

        ecfg = load_ensemble_config(args.ensemble, args.set)
        if args.no_ensure_one:
            ecfg.ensure_one = False
        r = run_ensemble(ecfg, args.out)
        v = r["validation"]
        print(f"ensemble of {len(ecfg.runs)} runs ({ecfg.blend}): blended OOF macro F1 "
              f"{r['oof_f1_tuned']:.4f} tuned, {r['nested_f1_mean']:.4f} nested; {v['rows']} rows, "
              f"{v['labels_per_row']:.2f} labels/row -> {r['submission']} (valid)")
        return 0
    cfg = load_config(args.config, args.set)
    print(set_threads(cfg.train.threads, 0, f"infer {cfg.name}"))
    if args.tta is not None:
        cfg.infer.tta = args.tta
    if args.tta_merge:
        cfg.infer.tta_merge = args.tta_merge
    if args.no_ensure_one:
        cfg.infer.ensure_one = False
    out = Path(args.out or f"submissions/{cfg.name}.csv")
    s = infer_experiment(cfg, out, args.folds)
    crops = f" x {s['crops']} crops" if s["crops"] else ""
    print(f"infer {cfg.name}: {s['folds']} fold(s) x {s['tta']} TTA views{crops}, thresholds '{s['strategy']}'; "
          f"{s['rows']} rows, {s['labels_per_row']:.2f} labels/row, {s['empty']} empty -> {out} (valid); "
          f"probabilities -> {cfg.run_dir / 'test_probs.csv'}")
    return 0
