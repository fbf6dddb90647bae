"""Cross-validation and threshold plots of a run (``notebooks/02_cv_and_thresholds.ipynb``, reports).

Inputs are a run's ``oof.csv`` (``Id,fold,p0..p27``), the training labels and optionally its
``thresholds.json``; see docs/formats.md. ``load_oof(run_dir)`` aligns them into ``OOF`` arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.data.labels import read_labels, to_multihot
from hpa.metrics import macro_f1, per_class_f1
from hpa.reports import CLASS_LABELS, class_ticks, new_figure, save_figure
from hpa.rundir import RunDir
from hpa.thresholds.search import apply_thresholds
from hpa.thresholds.selection import nested_estimate
from hpa.thresholds.strategies import THRESHOLD_STRATEGIES
from hpa.thresholds.tuner import ThresholdTuner


@dataclass
class OOF:
    """A run's out-of-fold predictions aligned with the true labels."""
    ids: list[str]
    folds: np.ndarray   # (N,) int
    probs: np.ndarray   # (N, 28) float64
    y: np.ndarray       # (N, 28) uint8


def load_oof(run_dir: str | Path, labels_csv: str | Path | None = None) -> OOF:
    """Read ``run_dir/oof.csv`` and the labels (default: the run's ``<data.root>/<data.train_csv>``)."""
    rd = RunDir(run_dir)
    if labels_csv is None:
        cfg = rd.load_config()
        labels_csv = Path(cfg.data.root) / cfg.data.train_csv
    labels = read_labels(labels_csv)
    ids, folds, probs = rd.read_oof(labels["Id"].tolist())
    y = to_multihot(labels.set_index("Id").loc[ids, "labels"])
    return OOF(ids, folds, probs, y)


def per_class_table(oof: OOF, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Per class: ``class, name, support, f1_at_0.5`` and, with thresholds, ``threshold, f1_tuned``."""
    df = pd.DataFrame({"class": np.arange(NUM_CLASSES), "name": CLASS_NAMES,
                       "support": oof.y.sum(axis=0).astype(int),
                       "f1_at_0.5": per_class_f1(oof.y, apply_thresholds(oof.probs, [0.5] * NUM_CLASSES))})
    if thresholds is not None:
        df["threshold"] = np.asarray(thresholds, dtype=np.float64)
        df["f1_tuned"] = per_class_f1(oof.y, apply_thresholds(oof.probs, thresholds))
    return df


def worst_classes(table: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` classes with the lowest F1 (tuned when present, else at 0.5), worst first."""
    col = "f1_tuned" if "f1_tuned" in table else "f1_at_0.5"
    return table.sort_values([col, "support"], kind="stable").head(n).reset_index(drop=True)


def plot_per_class_f1(table: pd.DataFrame, title: str = "OOF F1 per class",
                      path: str | Path | None = None) -> Figure:
    """Bars of each class's OOF F1 at 0.5 (and tuned, when the table has it); support in the labels."""
    x = np.arange(NUM_CLASSES)
    fig, ax = new_figure(12, 4.5)
    tuned = "f1_tuned" in table
    w = 0.4 if tuned else 0.8
    ax.bar(x - (0.2 if tuned else 0), table["f1_at_0.5"], w,
           label=f"threshold 0.5 (macro {table['f1_at_0.5'].mean():.3f})")
    if tuned:
        ax.bar(x + 0.2, table["f1_tuned"], w, label=f"tuned (macro {table['f1_tuned'].mean():.3f})")
    ax.set_xticks(x, [f"{CLASS_LABELS[c]} ({s})" for c, s in zip(table["class"], table["support"])],
                  rotation=75, ha="right", fontsize=7)
    ax.set(xlabel="class (OOF positives)", ylabel="F1", ylim=(0, 1.05), title=title)
    ax.legend(loc="upper right")
    return save_figure(fig, path)


def fold_table(oof: OOF, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Per fold: ``fold, n, macro_f1`` and one column per class name (F1 of that fold's OOF rows)."""
    t = [0.5] * NUM_CLASSES if thresholds is None else thresholds
    pred = apply_thresholds(oof.probs, t)
    rows = []
    for f in np.unique(oof.folds):
        m = oof.folds == f
        per = per_class_f1(oof.y[m], pred[m])
        rows.append({"fold": int(f), "n": int(m.sum()), "macro_f1": float(per.mean()),
                     **dict(zip(CLASS_NAMES, per))})
    return pd.DataFrame(rows)


def plot_fold_spread(folds: pd.DataFrame, title: str = "per-fold spread of OOF F1",
                     path: str | Path | None = None) -> Figure:
    """Left: macro F1 of each fold. Right: each class's F1 across folds (dots) and their mean (bar)."""
    fig, axes = new_figure(14, 4.5, 1, 2, width_ratios=[1, 4])
    a, b = axes[0]
    a.bar(folds["fold"].astype(str), folds["macro_f1"], color="tab:blue")
    a.axhline(folds["macro_f1"].mean(), color="k", ls="--",
              label=f"mean {folds['macro_f1'].mean():.3f} ± {folds['macro_f1'].std(ddof=0):.3f}")
    a.set(xlabel="fold", ylabel="macro F1", ylim=(0, 1), title="macro F1 per fold")
    a.legend(fontsize=7)
    vals = folds[list(CLASS_NAMES)].to_numpy()
    x = np.arange(NUM_CLASSES)
    b.bar(x, vals.mean(axis=0), color="lightgray", label="mean over folds")
    for i, row in enumerate(vals):
        b.scatter(x, row, s=10, label=f"fold {folds['fold'].iat[i]}")
    class_ticks(b)
    b.set(xlabel="class", ylabel="F1", ylim=(0, 1.05), title="per-class F1 across folds")
    b.legend(fontsize=7, ncol=3)
    fig.suptitle(title)
    return save_figure(fig, path)


def threshold_curves(oof: OOF, k: int, grid: np.ndarray | None = None) -> pd.DataFrame:
    """Class ``k``'s ``threshold, precision, recall, f1`` on a grid (default 101 points in [0, 1])."""
    grid = np.linspace(0, 1, 101) if grid is None else np.asarray(grid)
    p, y = oof.probs[:, k], oof.y[:, k].astype(bool)
    pred = p[None, :] >= grid[:, None]
    tp = (pred & y).sum(1)
    npred, npos = pred.sum(1), y.sum()
    prec = np.divide(tp, npred, out=np.ones(len(grid)), where=npred > 0)
    rec = np.divide(tp, npos, out=np.zeros(len(grid)), where=npos > 0)
    f1 = np.divide(2 * tp, npos + npred, out=np.zeros(len(grid)), where=(npos + npred) > 0)
    return pd.DataFrame({"threshold": grid, "precision": prec, "recall": rec, "f1": f1})


def _panel_grid(n: int, ncols: int = 7):
    """Small panels with shared [0, 1] axes (tick labels only on the outer ones) and fixed spacing."""
    nrows = int(np.ceil(n / ncols))
    fig, axes = new_figure(2.0 * ncols + 0.6, 1.8 * nrows + 0.6, nrows, ncols, sharex=True, sharey=True)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12 / nrows + 0.02, top=1 - 0.6 / (1.8 * nrows + 0.6),
                        hspace=0.35, wspace=0.1)
    return fig, axes.ravel(), axes[-1, 0]


def plot_f1_vs_threshold(oof: OOF, thresholds: Sequence[float] | None = None,
                         classes: Sequence[int] | None = None, path: str | Path | None = None) -> Figure:
    """One small panel per class: F1, precision and recall against the threshold; chosen one marked."""
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    fig, axes, corner = _panel_grid(len(classes), min(7, len(classes)))
    for ax, k in zip(axes, classes):
        c = threshold_curves(oof, k)
        ax.plot(c["threshold"], c["f1"], color="k", label="F1")
        ax.plot(c["threshold"], c["precision"], color="tab:blue", lw=0.8, label="precision")
        ax.plot(c["threshold"], c["recall"], color="tab:orange", lw=0.8, label="recall")
        if thresholds is not None:
            ax.axvline(thresholds[k], color="tab:red", ls="--", label="chosen")
        ax.set_title(f"{CLASS_LABELS[k]} (n={int(oof.y[:, k].sum())})", fontsize=7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=6)
    for ax in axes[len(classes):]:
        ax.axis("off")
    corner.set(xlabel="threshold", ylabel="score")
    axes[0].legend(fontsize=5)
    fig.suptitle("F1 / precision / recall vs threshold per class (red: chosen threshold)")
    return save_figure(fig, path, dpi=70, tight=False)


def plot_pr_curves(oof: OOF, thresholds: Sequence[float] | None = None,
                   classes: Sequence[int] | None = None, path: str | Path | None = None) -> Figure:
    """One panel per class: the precision-recall curve, the chosen threshold's operating point marked."""
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    fig, axes, corner = _panel_grid(len(classes), min(7, len(classes)))
    for ax, k in zip(axes, classes):
        y, p = oof.y[:, k], oof.probs[:, k]
        ax.set_title(f"{CLASS_LABELS[k]} (n={int(y.sum())})", fontsize=7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=6)
        if y.sum() == 0:    # no positives: the curve is undefined; say so instead of drawing noise
            ax.text(0.5, 0.5, "no positives", ha="center", fontsize=7)
            continue
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, color="tab:blue")
        if thresholds is not None:
            pt = threshold_curves(oof, k, np.array([thresholds[k]])).iloc[0]
            ax.plot(pt["recall"], pt["precision"], "o", color="tab:red")
    for ax in axes[len(classes):]:
        ax.axis("off")
    corner.set(xlabel="recall", ylabel="precision")
    fig.suptitle("precision-recall per class (red dot: chosen threshold)")
    return save_figure(fig, path, dpi=70, tight=False)


def honest_vs_optimistic(oof: OOF, strategies: Sequence[str] | None = None,
                         params: dict[str, dict] | None = None, ensure_one: bool = False) -> pd.DataFrame:
    """Per threshold strategy (default: every registered one), pooled OOF macro F1: ``at_0.5``,
    ``in_sample`` (tuned and scored on the same OOF: optimistic), ``nested`` (tuned on the other folds,
    each held-out fold predicted with them: honest), ``gap`` = in_sample - nested, and ``nested_mean``
    (the same nested predictions as a mean of per-fold F1s). ``params``: per strategy, its settings;
    ``ensure_one``: the nested predictions give an empty row its argmax, as ``infer.py`` does."""
    rows = []
    base = macro_f1(oof.y, apply_thresholds(oof.probs, [0.5] * NUM_CLASSES))
    for s in strategies or THRESHOLD_STRATEGIES.names():
        tuner = ThresholdTuner(s, (params or {}).get(s)).fit(oof.probs, oof.y)
        in_sample = macro_f1(oof.y, tuner.predict(oof.probs))
        nested = nested_estimate(oof.probs, oof.y, oof.folds, tuner, ensure_one)
        rows.append({"strategy": s, "at_0.5": base, "in_sample": in_sample, "nested": nested["pooled"],
                     "gap": in_sample - nested["pooled"], "nested_mean": nested["mean"]})
    return pd.DataFrame(rows)


def plot_honest_vs_optimistic(table: pd.DataFrame, title: str = "threshold tuning: optimistic vs honest",
                              path: str | Path | None = None) -> Figure:
    """Grouped bars per strategy: in-sample (optimistic) and nested (honest) macro F1; 0.5 as a line."""
    x = np.arange(len(table))
    fig, ax = new_figure(7, 4)
    ax.bar(x - 0.2, table["in_sample"], 0.4, label="in-sample (optimistic), pooled", color="tab:orange")
    ax.bar(x + 0.2, table["nested"], 0.4, label="nested CV (honest), pooled", color="tab:green")
    ax.axhline(table["at_0.5"].iat[0], color="k", ls="--", label=f"threshold 0.5 ({table['at_0.5'].iat[0]:.3f})")
    ax.set_xticks(x, table["strategy"])
    ax.set(xlabel="threshold strategy", ylabel="pooled OOF macro F1", ylim=(0, 1), title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def epoch_choice(histories: dict[int, pd.DataFrame]) -> dict:
    """How much choosing each fold's best epoch on its own validation set flatters the score.

    From each fold's ``history.csv`` (``epoch``, ``val_f1`` = validation macro F1 at 0.5), the mean
    over folds of: ``best`` (each fold at its own best epoch: what ``best.pt`` and ``oof.csv`` hold,
    optimistic), ``last`` (each fold's last epoch: no choice) and ``nested`` (each fold at the epoch
    that is best on the mean validation curve of the *other* folds: the choice made without looking at
    the fold it is scored on). An epoch counts for the other folds' curve when at least one of them
    reached it; a fold is scored only at an epoch it has. ``nested`` is None with fewer than 2 folds.
    Returns ``{"best", "last", "nested", "n_folds", "per_fold": {k: {"best", "best_epoch", "last",
    "last_epoch", "nested", "nested_epoch"}}}`` (plain floats and ints).
    """
    curves = {int(k): pd.Series(h["val_f1"].to_numpy(float), index=h["epoch"].to_numpy(int))
              for k, h in sorted(histories.items()) if len(h)}
    table = pd.DataFrame(curves)          # epochs x folds, NaN where a fold stopped earlier
    per_fold = {}
    for k, c in curves.items():
        row = {"best": float(c.max()), "best_epoch": int(c.idxmax()),
               "last": float(c.iloc[-1]), "last_epoch": int(c.index[-1]),
               "nested": None, "nested_epoch": None}
        others = table.drop(columns=k).loc[c.index].mean(axis=1, skipna=True).dropna()
        if len(others):
            e = int(others.idxmax())      # first maximum: the earlier epoch among ties
            row["nested"], row["nested_epoch"] = float(c.loc[e]), e
        per_fold[k] = row

    def mean(key: str) -> float | None:
        vals = [r[key] for r in per_fold.values()]
        return float(np.mean(vals)) if vals and None not in vals else None

    return {"best": mean("best"), "last": mean("last"), "nested": mean("nested"),
            "n_folds": len(per_fold), "per_fold": per_fold}


def epoch_choice_line(ec: dict, pooled: dict | None = None) -> str:
    """One line: the validation macro F1 at 0.5 at the best, last and nested-best epochs, as the mean of
    per-fold figures and, where ``pooled`` (``{select: pooled OOF F1}``) has it, over the pooled OOF."""
    if not ec.get("n_folds"):
        return "epochs: no fold history"
    pooled = pooled or {}

    def fig(key: str) -> str:
        if ec[key] is None:
            return "n/a (one fold)"
        return f"{ec[key]:.4f}" + (f" (pooled {pooled[key]:.4f})" if key in pooled else "")

    swa = f", swa pooled {pooled['swa']:.4f}" if "swa" in pooled else ""
    return (f"epochs (val macro F1 at 0.5, mean of {ec['n_folds']} fold(s)): best epoch {fig('best')} (chosen "
            f"on the scored fold: optimistic), last epoch {fig('last')}, nested best epoch {fig('nested')} "
            f"(chosen on the other folds){swa}")
