"""Per-class and rare-group figures of the ``hpa ablate`` grid.

Macro F1 weighs the rarest class as much as the most frequent, and the rare classes are where synthetic
images are meant to help, so the ablation also reports, per cell, each class's F1 (OOF and test, at
0.5, read from the cell's ``oof.csv`` and ``test_probs.csv``) and the **rare-group F1**: the mean F1 of
the classes carried by fewer than ``rare_below`` of the training images (``train.csv`` of the data
root: on the real data at 1%, classes 8, 9, 10, 15, 17, 20 and 27).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import CLASS_NAMES, NUM_CLASSES, PROB_COLUMNS
from hpa.data.labels import label_matrix, read_labels
from hpa.io import read_csv
from hpa.metrics import per_class_f1
from hpa.reports import new_figure, save_figure
from hpa.rundir import RunDir

KEYS = ["strategy", "fraction", "seed"]


def rare_classes(labels: np.ndarray, below: float) -> list[int]:
    """Classes carried by fewer than ``below`` (a share) of the ``(N, 28)`` multi-hot ``labels``."""
    counts = np.asarray(labels).sum(0)
    return [c for c in range(NUM_CLASSES) if counts[c] < below * len(labels)]


def _f1(probs_csv: Path, truth: pd.DataFrame) -> np.ndarray:
    """Per-class F1 at 0.5 of a probabilities CSV (Id, p0..p27) against ``truth`` (Id-indexed multi-hot)."""
    if not probs_csv.is_file():
        return np.full(NUM_CLASSES, np.nan)
    probs = read_csv(probs_csv, ["Id"] + PROB_COLUMNS, dtype=None)
    probs = probs[probs["Id"].isin(truth.index)]
    return per_class_f1(truth.loc[probs["Id"]].to_numpy(), probs[PROB_COLUMNS].to_numpy() > 0.5)


def truth_table(csv: Path) -> pd.DataFrame | None:
    """Id-indexed multi-hot labels of a ``Id,Target`` CSV (None when it does not exist)."""
    if not Path(csv).is_file():
        return None
    df = read_labels(csv)
    return pd.DataFrame(label_matrix(df), index=df["Id"])


def per_class_cells(cells: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame | None) -> pd.DataFrame:
    """Long table, one row per cell and class: ``strategy, fraction, seed, class, oof_f1, test_f1``."""
    rows = []
    for cell in cells.itertuples():
        run = RunDir(cell.run_dir)
        oof = _f1(run.oof, train)
        tst = _f1(run.test_probs, test) if test is not None else np.full(NUM_CLASSES, np.nan)
        rows += [dict(strategy=cell.strategy, fraction=cell.fraction, seed=cell.seed, **{"class": c},
                      oof_f1=oof[c], test_f1=tst[c]) for c in range(NUM_CLASSES)]
    return pd.DataFrame(rows, columns=KEYS + ["class", "oof_f1", "test_f1"])


def rare_summary(per_class: pd.DataFrame, rare: list[int]) -> pd.DataFrame:
    """Per (strategy, fraction): mean and sd over seeds of the rare-group F1 (mean over ``rare``), the
    ``none`` baseline and the difference: ``rare_{oof,test}_{mean,sd,baseline,delta}``."""
    cell = per_class[per_class["class"].isin(rare)].groupby(KEYS, sort=False)[["oof_f1", "test_f1"]].mean()
    g = cell.reset_index().groupby(["strategy", "fraction"], sort=False)
    out = g.agg(rare_oof_mean=("oof_f1", "mean"), rare_oof_sd=("oof_f1", "std"),
                rare_test_mean=("test_f1", "mean"), rare_test_sd=("test_f1", "std")).reset_index()
    base = out[out["strategy"] == "none"].set_index("fraction")
    for m in ("oof", "test"):
        out[f"rare_{m}_baseline"] = out["fraction"].map(base[f"rare_{m}_mean"]) if len(base) else np.nan
        out[f"rare_{m}_delta"] = out[f"rare_{m}_mean"] - out[f"rare_{m}_baseline"]
    return out


def class_deltas(per_class: pd.DataFrame, rare: list[int]) -> pd.DataFrame:
    """Per (strategy, fraction, class): mean OOF / test F1 over seeds, ``none``'s, the differences and
    whether the class is in the rare group (``ablation_per_class.csv``)."""
    g = per_class.groupby(["strategy", "fraction", "class"], sort=False)[["oof_f1", "test_f1"]].mean().reset_index()
    base = g[g["strategy"] == "none"].set_index(["fraction", "class"])
    for m in ("oof", "test"):
        key = list(zip(g["fraction"], g["class"]))
        g[f"{m}_baseline"] = [base[f"{m}_f1"].get(k, np.nan) for k in key]
        g[f"{m}_delta"] = g[f"{m}_f1"] - g[f"{m}_baseline"]
    g.insert(3, "name", [CLASS_NAMES[c] for c in g["class"]])
    g["rare"] = g["class"].isin(rare)
    return g


def plot_class_deltas(deltas: pd.DataFrame, path: Path, title: str) -> Path:
    """Heat map per data regime: Δ test F1 (strategy − none) for every strategy and class; rare classes
    are marked with * (PNG)."""
    d = deltas[deltas["strategy"] != "none"]
    fractions = sorted(d["fraction"].unique()) or [1.0]
    strategies = list(dict.fromkeys(d["strategy"]))
    fig, axes = new_figure(13, 0.6 + len(fractions) * (2.2 + 0.3 * len(strategies)), nrows=len(fractions))
    axes = np.atleast_1d(axes).ravel()
    rare = set(d.loc[d["rare"], "class"])
    labels = [f"{'*' if c in rare else ''}{c} {CLASS_NAMES[c]}" for c in range(NUM_CLASSES)]
    for ax, f in zip(axes, fractions):
        m = d[d["fraction"] == f].pivot(index="strategy", columns="class", values="test_delta")
        m = m.reindex(index=strategies, columns=range(NUM_CLASSES))
        im = ax.imshow(m.to_numpy(dtype=float), cmap="RdBu", vmin=-0.5, vmax=0.5, aspect="auto")
        ax.set_yticks(range(len(strategies)), strategies, fontsize=7)
        ax.set_xticks(range(NUM_CLASSES), labels, rotation=75, ha="right", fontsize=6)
        ax.set_title(f"fraction {f:g}: Δ test F1 per class vs none (* = rare group)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    fig.suptitle(title)
    save_figure(fig, path, dpi=100)
    return Path(path)
