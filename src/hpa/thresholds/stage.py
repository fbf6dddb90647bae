"""The thresholds stage: tune on a run's OOF, write its thresholds files and figure (``hpa thresholds``).

Reads ``oof.csv`` and the training labels, tunes ``fixed`` 0.5, every strategy in
``thresholds.candidates`` and a strategy named by ``thresholds.strategy``, estimates each honestly
(nested over the folds) and, for ``auto``, the whole choice too (:func:`auto_estimate`); then writes
``thresholds_<strategy>.json`` for each and ``thresholds.json``: the one ``infer.py`` applies, chosen
by ``thresholds.strategy`` (``auto``: :func:`pick_strategy` over the candidates; a name: that one,
with a warning when it is below ``fixed``'s), recording the choice and why. All files with ``thresholds.png`` together, under the run lock; then the run's
``report.md`` is refreshed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.config import ExperimentConfig, ThresholdConfig
from hpa.data.labels import read_labels, to_multihot
from hpa.io import write_json
from hpa.metrics import macro_f1, per_class_f1
from hpa.reports import new_figure, save_figure
from hpa.reports.run_report import write_run_report
from hpa.rundir import OutputGroup, RunDir
from hpa.runlock import run_lock
from hpa.thresholds.search import apply_thresholds
from hpa.thresholds.selection import auto_estimate, choose_strategy, nested_estimate, tuners_from_config
from hpa.thresholds.tuner import AUTO, ThresholdTuner


def tune(tuner: ThresholdTuner, probs: np.ndarray, y: np.ndarray, folds: np.ndarray,
         ensure_one: bool = False) -> dict[str, Any]:
    """Fit ``tuner`` on OOF ``probs``/``y`` and estimate honestly (nested over ``folds``, predicting as
    ``infer.py`` does with ``ensure_one``); return the ``thresholds.json`` record (docs/formats.md) plus
    ``per_class_f1`` (tuned, for the figure)."""
    t0 = time.perf_counter()
    tuner.fit(probs, y)
    seconds = time.perf_counter() - t0
    nested = nested_estimate(probs, y, folds, tuner, ensure_one)
    pred = tuner.predict(probs)
    params = tuner.get_params()
    return {"strategy": tuner.strategy, "thresholds": [float(v) for v in tuner.thresholds_],
            "params": params["params"], "tuner": {"default": params["default"], "rate_ratio": params["rate_ratio"]},
            "prior": [float(v) for v in tuner.prior_],
            "oof_f1_at_0.5": macro_f1(y, apply_thresholds(probs, np.full(NUM_CLASSES, 0.5))),
            "oof_f1_tuned": macro_f1(y, pred),
            "nested_f1_pooled": nested["pooled"], "nested_f1_mean": nested["mean"],
            "nested_f1_per_fold": nested["per_fold"], "nested_labels_per_row": nested["labels_per_row"],
            "ensure_one": bool(ensure_one),
            "train_labels_per_row": float(y.sum(1).mean()),
            "n_oof": int(len(probs)), "tune_seconds": seconds, "per_class_f1": per_class_f1(y, pred)}


def tune_all(tcfg: ThresholdConfig, probs: np.ndarray, y: np.ndarray, folds: np.ndarray,
             ensure_one: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Tune ``fixed``, the candidates and a named strategy on the OOF and choose the one to apply by
    ``tcfg.strategy``; return ``({strategy: record of tune()}, selection of choose_strategy())``; with
    ``auto`` the selection holds ``auto``: the honest estimate of the choice itself (auto_estimate)."""
    tuners = tuners_from_config(tcfg)       # an unknown strategy or parameter fails before any work
    results = {name: tune(t, probs, y, folds, ensure_one) for name, t in tuners.items()}
    pool = tcfg.candidates if tcfg.strategy == AUTO else list(results)
    selection = choose_strategy({n: results[n]["nested_f1_per_fold"] for n in pool}, tcfg.strategy, tcfg.default)
    selection["nested_f1"] = {n: r["nested_f1_mean"] for n, r in results.items()}
    selection["nested_f1_pooled"] = {n: r["nested_f1_pooled"] for n, r in results.items()}
    if tcfg.strategy == AUTO:
        est = auto_estimate(probs, y, folds, {n: tuners[n] for n in tcfg.candidates}, ensure_one)
        selection["auto"] = {"nested_f1_pooled": est["pooled"], "nested_f1_mean": est["mean"],
                             "nested_f1_per_fold": est["per_fold"], "labels_per_row": est["labels_per_row"],
                             "choices": est["choices"]}
    return results, selection


def write_thresholds(rd: RunDir, results: dict[str, dict[str, Any]], selection: dict[str, Any],
                     group: OutputGroup) -> dict[str, Any]:
    """Stage every ``thresholds_<strategy>.json``, then ``thresholds.json`` (the chosen strategy's
    record plus ``selection``: what was asked for, why this one, from which file) and its
    ``thresholds.png`` in ``group``; return the ``thresholds.json`` record."""
    for name, result in results.items():
        write_json(group.path(rd.thresholds(name)), {k: v for k, v in result.items() if k != "per_class_f1"})
    chosen = results[selection["strategy"]]
    record = {k: v for k, v in chosen.items() if k != "per_class_f1"}
    record["selection"] = {**selection, "file": rd.thresholds(selection["strategy"]).name}
    write_json(group.path(rd.thresholds()), record)
    plot_thresholds(record, chosen["per_class_f1"], group.path(rd.thresholds().with_suffix(".png")))
    return record


def tune_run(rd: RunDir | str | Path, labels_path: str | Path, tcfg: ThresholdConfig,
             ensure_one: bool = True) -> dict[str, Any]:
    """Tune every strategy on the run's OOF against ``labels_path``, choose by ``tcfg.strategy``, write
    the thresholds files together; return the ``thresholds.json`` record (``selection`` in it)."""
    rd = rd if isinstance(rd, RunDir) else RunDir(rd)
    tuners_from_config(tcfg)                # an unknown strategy fails before the OOF is read
    labels_df = read_labels(labels_path)
    ids, folds, probs = rd.read_oof(labels_df["Id"].tolist())
    y = to_multihot(labels_df.set_index("Id").loc[ids, "labels"])
    results, selection = tune_all(tcfg, probs, y, folds, ensure_one)
    with OutputGroup() as group:
        return write_thresholds(rd, results, selection, group)


def run_thresholds(cfg: ExperimentConfig) -> tuple[dict[str, Any], Path | None]:
    """``hpa thresholds``: under the run lock, tune ``cfg``'s run and refresh its report (a trained run);
    return ``(record, report path or None)``."""
    rd = RunDir.of(cfg)
    with run_lock(rd.path):     # not while the run trains or infers: both write into the same folder
        result = tune_run(rd, Path(cfg.data.root) / cfg.data.train_csv, cfg.thresholds, cfg.infer.ensure_one)
        report = write_run_report(rd.path) if rd.config.is_file() else None
    return result, report


def plot_thresholds(result: dict[str, Any], f1: np.ndarray, path: Path) -> Path:
    """Bar chart of each class's threshold and tuned OOF F1 (PNG); return the path."""
    x = np.arange(NUM_CLASSES)
    fig, ax = new_figure(12, 5)
    ax.bar(x - 0.2, result["thresholds"], 0.4, label="threshold")
    ax.bar(x + 0.2, f1, 0.4, label="pooled OOF F1 (tuned in-sample)")
    ax.set_xticks(x, [f"{i} {n}" for i, n in enumerate(CLASS_NAMES)], rotation=75, ha="right", fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("threshold / F1")
    ax.set_title(f"Thresholds ({result['strategy']}): OOF macro F1 {result['oof_f1_at_0.5']:.3f} at 0.5 -> "
                 f"{result['oof_f1_tuned']:.3f} tuned (pooled), {result['nested_f1_pooled']:.3f} nested (pooled)")
    ax.legend()
    save_figure(fig, path, dpi=80)
    return path
