"""Kaggle submissions (``Id,Predicted``): building, checking and writing them (``hpa validate``).

A submission has the header ``Id,Predicted``, every sample-submission Id exactly once, and in
``Predicted`` space-separated ascending class indices 0-27 (empty when nothing is predicted).
:func:`write_submission` writes a temporary file, checks it with :func:`validate_submission`, and only
then renames it into place, so a bad submission is never left behind.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hpa.classes import CLASS_NAMES, NUM_CLASSES, train_frequencies
from hpa.cli_args import add_file
from hpa.config import load_config
from hpa.data.labels import ASCII_INT, check_separators, check_unique_ids, label_matrix, read_labels
from hpa.errors import HPAError
from hpa.io import atomic_path, read_csv
from hpa.reports import save_figure

HEADER = ["Id", "Predicted"]


def make_submission(ids: Sequence[str], preds: np.ndarray) -> pd.DataFrame:
    """Turn Ids and an ``(N, 28)`` 0/1 prediction matrix into an ``Id,Predicted`` DataFrame."""
    preds = np.asarray(preds)
    if preds.shape != (len(ids), NUM_CLASSES):
        raise HPAError(f"submission: predictions {preds.shape} do not match {len(ids)} Ids x {NUM_CLASSES}")
    text = [" ".join(str(int(j)) for j in np.flatnonzero(row)) for row in preds]
    return pd.DataFrame({"Id": list(ids), "Predicted": text})


def read_sample_ids(sample: str | Path) -> list[str]:
    """Return the Ids of a sample submission, in order.

    HPAError naming the file (and row) for a missing file or column, no rows, or a duplicate, empty
    or path-like Id (Ids become image file names).
    """
    df = read_csv(sample, ["Id"], nonempty=True)
    check_unique_ids(df, sample)
    return df["Id"].tolist()


def validate_submission(path: str | Path, sample: str | Path) -> dict[str, float]:
    """Check a submission file against a sample submission; return ``{"rows", "labels_per_row", "empty"}``.

    Raises HPAError naming the file and the first problem: wrong header, an Id missing, repeated or not
    in the sample, a label that is not an ASCII integer 0-27, labels not separated by single spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: file not found")
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if header != HEADER:
        raise HPAError(f"{path}: header must be 'Id,Predicted', found {','.join(header or [])!r}")
    df = read_csv(path, HEADER)
    expected = read_sample_ids(sample)
    dup = df["Id"].duplicated()
    if dup.any():
        raise HPAError(f"{path}: Id '{df['Id'][dup].iat[0]}' appears more than once")
    extra = ~df["Id"].isin(set(expected))
    if extra.any():
        raise HPAError(f"{path}: Id '{df['Id'][extra].iat[0]}' is not in {sample}")
    have = set(df["Id"])
    missing = [i for i in expected if i not in have]
    if missing:
        raise HPAError(f"{path}: {len(missing)} Id(s) of {sample} missing, first '{missing[0]}'")
    counts = np.zeros(NUM_CLASSES, np.int64)
    for i, text in enumerate(df["Predicted"]):
        if text == "":
            continue
        where = f"{path}: row {i + 2} (Id {df['Id'].iat[i]})"
        for tok in check_separators(text, where):
            if not ASCII_INT.fullmatch(tok) or not 0 <= int(tok) < NUM_CLASSES:
                raise HPAError(f"{where}: label '{tok}' is not an integer 0-{NUM_CLASSES - 1}")
            counts[int(tok)] += 1
    empty = int((df["Predicted"].str.strip() == "").sum())
    n = max(len(df), 1)
    return {"rows": len(df), "labels_per_row": float(counts.sum() / n), "empty": empty,
            "class_rates": [float(c / n) for c in counts]}


def label_warnings(summary: dict, train_rates: Sequence[float], where: str = "training") -> list[str]:
    """Warnings for a submission whose labels are far from the training distribution (flooding
    thresholds): more than twice the training mean labels per row, or a class predicted for more than
    half the rows and more than twice its training rate. ``summary``: :func:`validate_submission`'s."""
    rates = np.asarray(train_rates, dtype=np.float64)
    mean, out = float(rates.sum()), []
    if summary["labels_per_row"] > 2 * mean:
        out.append(f"{summary['labels_per_row']:.2f} labels per row, more than twice the {where} mean "
                   f"{mean:.2f}: thresholds that flood labels?")
    for j, r in enumerate(summary.get("class_rates") or []):
        if r > 0.5 and r > 2 * rates[j]:
            out.append(f"class {j} ({CLASS_NAMES[j]}) predicted for {r:.0%} of the rows against {rates[j]:.1%} "
                       f"in the {where} labels")
    return out


def train_rates_from_args(args: argparse.Namespace, sample: Path) -> tuple[list[float], str]:
    """Training label rates to compare a submission with: ``--labels``, else ``--config``'s train.csv,
    else a ``train.csv`` beside the sample submission, else the competition's train frequencies.
    Returns ``(28 rates, where they came from)``."""
    path = Path(args.labels) if args.labels else None
    if path is None and args.config:
        cfg = load_config(args.config, args.set)
        path = Path(cfg.data.root) / cfg.data.train_csv
    if path is None and (sample.parent / "train.csv").is_file():
        path = sample.parent / "train.csv"
    if path is None:
        return train_frequencies(), "competition's training"
    return label_matrix(read_labels(path)).mean(axis=0).tolist(), str(path)


def submission_record_path(submission: str | Path) -> Path:
    """``<name>.json`` beside a submission ``<name>.csv``: what produced it (run, folds, TTA, which
    thresholds and why; docs/formats.md "Submission")."""
    return Path(submission).with_suffix(".json")


def write_submission(path: str | Path, df: pd.DataFrame, sample: str | Path) -> dict[str, float]:
    """Write ``df`` in sample-submission order, validate the written file, then rename it into place.

    Returns the :func:`validate_submission` summary. On any error nothing is left at ``path``.
    """
    order = read_sample_ids(sample)
    have = set(df["Id"])
    missing = [i for i in order if i not in have]
    if missing:
        raise HPAError(f"submission: no prediction for Id '{missing[0]}' of {sample}")
    df = df.set_index("Id").loc[order].reset_index()[HEADER]
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
        summary = validate_submission(tmp, sample)
    return summary


def plot_label_rates(preds: np.ndarray, path: str | Path, title: str) -> Path:
    """Bar chart of each class's predicted positive rate next to its train frequency (PNG); return path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(NUM_CLASSES)
    fig, ax = plt.subplots(figsize=(12, 5))
    ax.bar(x - 0.2, np.asarray(preds).mean(0) if len(preds) else np.zeros(NUM_CLASSES), 0.4, label="predicted")
    ax.bar(x + 0.2, train_frequencies(), 0.4, label="train frequency")
    ax.set_xticks(x, [f"{i} {n}" for i, n in enumerate(CLASS_NAMES)], rotation=75, ha="right", fontsize=7)
    ax.set_xlabel("class")
    ax.set_ylabel("positive rate")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa validate``."""
    add_file(p, "submission", "submission CSV to check")
    p.add_argument("--sample", help="sample_submission.csv giving the expected Ids "
                   "(default: data.sample_submission of --config)")
    p.add_argument("--config", help="experiment YAML naming the sample submission (data.root, "
                   "data.sample_submission)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--labels", help="training labels to compare label rates with (default: --config's "
                   "train.csv, else train.csv beside the sample, else the competition's frequencies)")


def sample_from_args(args: argparse.Namespace, default: str | None = None) -> Path:
    """The sample submission of ``--sample``, else of ``--config``, else ``default``; HPAError if none."""
    if args.sample:
        return Path(args.sample)
    if args.config:
        cfg = load_config(args.config, args.set)
        return Path(cfg.data.root) / cfg.data.sample_submission
    if default:
        return Path(default)
    raise HPAError("give --sample, or a --config naming the sample submission (data.root, "
                   "data.sample_submission)")


def main(args: argparse.Namespace) -> int:
    """Validate a submission; print one summary line (HPAError -> one error line, exit 2)."""
    sample = sample_from_args(args)
    s = validate_submission(args.submission, sample)
    rates, where = train_rates_from_args(args, sample)
    for w in label_warnings(s, rates, where):
        print(f"warning: {args.submission}: {w}", file=sys.stderr)
    print(f"{args.submission}: valid ({s['rows']} rows, {s['labels_per_row']:.2f} labels per row against "
          f"{sum(rates):.2f} in the {where} labels, {s['empty']} empty)")
    return 0
