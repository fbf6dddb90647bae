"""Ensemble plots (``notebooks/04_ensemble.ipynb``): how alike are the runs, what blend weight helps,
and whether a submission predicts labels at sensible rates.

Runs are folders with ``oof.csv`` (docs/formats.md); blending uses ``hpa.inference.ensemble.blend``
and threshold tuning ``hpa.thresholds``, so the numbers match ``infer.py --ensemble``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa.classes import NUM_CLASSES, train_frequencies
from hpa.data.labels import label_matrix, parse_target, read_labels, to_multihot
from hpa.errors import HPAError
from hpa.inference.ensemble import blend
from hpa.io import read_csv
from hpa.metrics import macro_f1
from hpa.reports import class_ticks, new_figure, save_figure
from hpa.reports.cv import OOF, load_oof
from hpa.rundir import RunDir
from hpa.config import ThresholdConfig
from hpa.thresholds.search import apply_thresholds
from hpa.thresholds.selection import choose_strategy, nested_estimate
from hpa.thresholds.tuner import AUTO, ThresholdTuner


def load_oofs(run_dirs: Sequence[str | Path], labels_csv: str | Path | None = None) -> dict[str, OOF]:
    """Read each run's OOF aligned to the first run's Id order; refuse runs whose Ids/folds differ."""
    out: dict[str, OOF] = {}
    first: OOF | None = None
    for d in run_dirs:
        o = load_oof(d, labels_csv)
        if first is not None:
            pos = pd.Series(np.arange(len(o.ids)), index=o.ids).reindex(first.ids)
            if len(o.ids) != len(first.ids) or pos.isna().any() or \
                    not np.array_equal(o.folds[pos.to_numpy(int)], first.folds):
                raise HPAError(f"{RunDir(d).oof}: Id/fold assignment differs from {RunDir(run_dirs[0]).oof}")
            idx = pos.to_numpy(int)
            o = OOF(first.ids, first.folds, o.probs[idx], o.y[idx])
        first = first or o
        out[Path(d).name] = o
    return out


def oof_correlation(oofs: dict[str, OOF]) -> pd.DataFrame:
    """Mean over classes of the Pearson correlation between two runs' OOF probabilities (runs x runs)."""
    names = list(oofs)
    c = np.eye(len(names))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = oofs[names[i]].probs, oofs[names[j]].probs
            per = [np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(NUM_CLASSES)
                   if a[:, k].std() > 0 and b[:, k].std() > 0]   # a constant column has no correlation
            c[i, j] = c[j, i] = float(np.mean(per)) if per else np.nan
    return pd.DataFrame(c, index=names, columns=names)


def plot_correlation(corr: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Heatmap of :func:`oof_correlation` with the values written in the cells."""
    n = len(corr)
    fig, ax = new_figure(2 + 1.2 * n, 1.5 + 1.0 * n)
    im = ax.imshow(corr.to_numpy(), vmin=min(0.0, float(np.nanmin(corr.to_numpy()))), vmax=1, cmap="magma")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{corr.iat[i, j]:.3f}", ha="center", va="center", color="tab:cyan", fontsize=9)
    ax.set_xticks(range(n), corr.columns, rotation=30, ha="right")
    ax.set_yticks(range(n), corr.index)
    fig.colorbar(im, ax=ax, label="mean per-class Pearson r")
    ax.set(xlabel="run", ylabel="run", title="correlation of OOF predictions")
    return save_figure(fig, path)


def blend_weight_scan(oofs: dict[str, OOF], steps: int = 11, how: str = "mean",
                      strategy: str = "per_class") -> pd.DataFrame:
    """For each run, sweep its weight ``w`` in [0, 1] against the equal mix of the others.

    Returns ``run, weight, f1_at_0.5, f1_tuned`` (in-sample) and ``f1_nested`` (honest) rows, and
    ``strategy``: with ``auto``, the strategy ``auto`` picks at that weight among the default
    ``thresholds.candidates``, as ``infer.py --ensemble`` would choose it. ``f1_nested`` is pooled.
    """
    if len(oofs) < 2:
        raise HPAError(f"blend weights need at least 2 runs, got {len(oofs)}")
    names = list(oofs)
    y, folds = oofs[names[0]].y, oofs[names[0]].folds
    rows = []
    for name in names:
        rest = blend([oofs[n].probs for n in names if n != name], [1.0] * (len(names) - 1), how)
        for w in np.linspace(0, 1, steps):
            p = blend([oofs[name].probs, rest], [w + 1e-12, 1 - w + 1e-12], how)
            candidates = ThresholdConfig().candidates if strategy == AUTO else [strategy]
            fits = {s: ThresholdTuner(s).fit(p, y) for s in candidates}
            runs = {s: nested_estimate(p, y, folds, t) for s, t in fits.items()}
            chosen = (choose_strategy({s: r["per_fold"] for s, r in runs.items()}, strategy)["strategy"]
                      if strategy == AUTO else strategy)
            nested = {s: r["pooled"] for s, r in runs.items()}
            rows.append({"run": name, "weight": float(w), "strategy": chosen,
                         "f1_at_0.5": macro_f1(y, apply_thresholds(p, [0.5] * NUM_CLASSES)),
                         "f1_tuned": macro_f1(y, fits[chosen].predict(p)),
                         "f1_nested": nested[chosen]})
    return pd.DataFrame(rows)


def plot_blend_weights(scan: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """OOF macro F1 (nested, tuned in-sample and at 0.5) against each run's blend weight."""
    fig, ax = new_figure(7, 4.5)
    for name, g in scan.groupby("run", sort=False):
        line, = ax.plot(g["weight"], g["f1_nested"], marker="o", label=f"{name}: nested (honest)")
        ax.plot(g["weight"], g["f1_tuned"], ls="--", color=line.get_color(), label=f"{name}: tuned in-sample")
        ax.plot(g["weight"], g["f1_at_0.5"], ls=":", color=line.get_color(), label=f"{name}: at 0.5")
    ax.set(xlabel="weight of the run (rest: equal mix of the others)", ylabel="OOF macro F1",
           title="blend weight vs OOF macro F1")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def submission_label_rates(submission_csv: str | Path) -> np.ndarray:
    """Share of a submission's rows predicting each class (28 floats); HPAError for a bad row."""
    sub = read_csv(submission_csv, ["Id", "Predicted"])
    labels = [parse_target(t, f"{submission_csv}: row {i + 2}") if str(t).strip() else []
              for i, t in enumerate(sub["Predicted"])]
    return to_multihot(labels).mean(axis=0) if labels else np.zeros(NUM_CLASSES)


def plot_submission_rates(submission_csv: str | Path, train_csv: str | Path | None = None,
                          path: str | Path | None = None) -> Figure:
    """Predicted label rate per class of a submission against the real train frequencies (log scale),
    and against ``train_csv``'s own frequencies when given (e.g. the demo train.csv)."""
    rates = submission_label_rates(submission_csv)
    x = np.arange(NUM_CLASSES)
    series = [("submission", rates), ("real train.csv", np.asarray(train_frequencies()))]
    if train_csv is not None:
        series.append((f"{Path(train_csv).name} ({Path(train_csv).parent.name})",
                       label_matrix(read_labels(train_csv)).mean(axis=0)))
    w = 0.8 / len(series)
    fig, ax = new_figure(12, 4.5)
    for i, (name, r) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, np.clip(r, 1e-5, None), w, label=name)
    ax.set_yscale("log")
    class_ticks(ax)
    ax.set(xlabel="class", ylabel="share of images with the label (log)",
           title=f"predicted label distribution of {Path(submission_csv).name}")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
