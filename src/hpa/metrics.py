"""The competition metric: macro F1 over the 28 classes, and ``hpa score`` for submission files.

``macro_f1`` is exactly scikit-learn's ``f1_score(average="macro", zero_division=0)`` on 0/1 matrices
(a class with no true and no predicted positives scores 0, as on Kaggle). It is computed with a
vectorised numpy formula, proven equal to sklearn in ``tests/test_metrics.py``, because threshold
tuning calls it thousands of times and sklearn's input validation dominates at that rate.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.cli_args import add_file
from hpa.data.labels import label_matrix, parse_target, read_labels, to_multihot
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.reports import save_figure


def _as_binary(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 2:
        raise HPAError(f"{name}: expected an (N, C) 0/1 matrix, got shape {y.shape}")
    return y.astype(bool)


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Return each column's F1 (``(C,)`` float64) for two ``(N, C)`` 0/1 matrices; 0 where undefined."""
    t, p = _as_binary(y_true, "y_true"), _as_binary(y_pred, "y_pred")
    if t.shape != p.shape:
        raise HPAError(f"y_true shape {t.shape} != y_pred shape {p.shape}")
    tp = (t & p).sum(axis=0).astype(np.float64)
    denom = t.sum(axis=0) + p.sum(axis=0)          # = 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Return the unweighted mean of :func:`per_class_f1` (the Kaggle leaderboard score)."""
    return float(per_class_f1(y_true, y_pred).mean())


def _predicted_matrix(sub: pd.DataFrame, path: Path) -> np.ndarray:
    """Multi-hot matrix of a submission's Predicted column; an empty cell means no labels (a cell of
    spaces is refused like any label string Kaggle would not read)."""
    labels = [parse_target(t, f"{path}: row {i + 2} (Id {sub['Id'].iat[i]})") if t != "" else []
              for i, t in enumerate(sub["Predicted"])]
    return to_multihot(labels)


def score_submission(submission_csv: str | Path, labels_csv: str | Path) -> tuple[float, np.ndarray]:
    """Score an ``Id,Predicted`` CSV against an ``Id,Target`` CSV; return ``(macro_f1, per_class(28))``.

    The two files must hold exactly the same Ids (any order); an Id missing from or extra in the
    submission raises HPAError naming it.
    """
    submission_csv, labels_csv = Path(submission_csv), Path(labels_csv)
    truth = read_labels(labels_csv)
    sub = read_csv(submission_csv, ["Id", "Predicted"])
    dup = sub["Id"].duplicated()
    if dup.any():
        raise HPAError(f"{submission_csv}: duplicate Id '{sub['Id'][dup].iat[0]}'")
    missing = ~truth["Id"].isin(sub["Id"])
    if missing.any():
        raise HPAError(f"{submission_csv}: missing Id '{truth['Id'][missing].iat[0]}' "
                       f"({int(missing.sum())} missing in all)")
    extra = ~sub["Id"].isin(truth["Id"])
    if extra.any():
        raise HPAError(f"{submission_csv}: extra Id '{sub['Id'][extra].iat[0]}' not in {labels_csv}")
    sub = sub.set_index("Id").loc[truth["Id"]].reset_index()
    y_pred = _predicted_matrix(sub, submission_csv)
    per_class = per_class_f1(label_matrix(truth), y_pred)
    return float(per_class.mean()), per_class


def f1_table(per_class: np.ndarray, support: np.ndarray) -> pd.DataFrame:
    """Return a per-class table (class, name, support, f1) for printing or saving."""
    return pd.DataFrame({"class": np.arange(NUM_CLASSES), "name": CLASS_NAMES,
                         "support": np.asarray(support, dtype=int), "f1": np.round(per_class, 4)})


def plot_per_class_f1(path: str | Path, per_class: np.ndarray, support: np.ndarray, title: str) -> Path:
    """Save a bar chart of the 28 per-class F1 scores (x labels: class names and support) as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.bar(np.arange(NUM_CLASSES), per_class, color="tab:green")
    ax.axhline(per_class.mean(), color="k", ls="--", label=f"macro F1 {per_class.mean():.4f}")
    ax.set_xticks(np.arange(NUM_CLASSES),
                  [f"{i} {n} ({int(s)})" for i, (n, s) in enumerate(zip(CLASS_NAMES, support))],
                  rotation=75, ha="right", fontsize=7)
    ax.set(ylim=(0, 1), xlabel="class (support)", ylabel="F1", title=title)
    ax.legend(loc="upper right")
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa score``."""
    add_file(p, "submission", "Id,Predicted CSV")
    p.add_argument("--labels", required=True, help="Id,Target CSV with the true labels")
    p.add_argument("--plot", help="also save a per-class F1 bar chart to this PNG")


def main(args: argparse.Namespace) -> int:
    """``hpa score``: print macro F1 and the per-class table."""
    macro, per_class = score_submission(args.submission, args.labels)
    support = label_matrix(read_labels(args.labels)).sum(axis=0)
    print(f1_table(per_class, support).to_string(index=False))
    if args.plot:
        plot_per_class_f1(args.plot, per_class, support, f"per-class F1 of {Path(args.submission).name}")
    print(f"macro F1 = {macro:.4f} ({args.submission} vs {args.labels})"
          + (f", plot {args.plot}" if args.plot else ""))
    return 0
