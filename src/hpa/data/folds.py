"""Multilabel-stratified k folds (``folds.csv`` = ``Id,fold``), optionally duplicate-aware.

``make_folds`` uses iterstrat's ``MultilabelStratifiedKFold``. On the real train.csv (31,072 rows)
stock iterstrat already puts every class within 0.8 of count/k in every fold (checked for k = 4, 5, 10
and several seeds, see tests/test_folds.py), so no repair pass is applied on top of it.

Duplicate-aware folds (``dedup``): near-duplicate images (perceptual hashes of the green stain and of
a reference stain each within ``threshold`` bits, :mod:`hpa.data.duplicates`) are joined into groups
by connected components, over train and, when ``data.external_csv`` is set, the HPAv18 images too;
the groups are stratified on the union of their members' labels and every member gets its group's
fold, so a duplicate pair can never sit on both sides of a train/validation split. The groups are
written beside the folds file (``duplicates.csv``) for the training integration.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from hpa.cli_args import add_renamed
from hpa.classes import CLASS_NAMES
from hpa.config import load_config
from hpa.data.duplicates import (ImageSource, find_duplicates, group_ids, hash_images, hash_pairs,  # noqa: F401
                                 write_groups)
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.external.hpav18 import FORMATS, folder_format, read_hpav18_labels, require_images
from hpa.io import read_csv, write_csv
from hpa.rundir import refuse_folds_overwrite


# ----------------------------------------------------------------------------- folds
def make_folds(labels_df: pd.DataFrame, n_splits: int = 5, seed: int = 42,
               groups: Sequence[int] | None = None) -> pd.Series:
    """Assign each row of a :func:`hpa.data.labels.read_labels` frame to one of ``n_splits`` folds.

    ``groups`` (one int per row, optional) keeps rows with the same group in the same fold.
    Returns an int Series named ``fold``, indexed by Id, in the frame's row order.
    """
    if n_splits < 2:
        raise HPAError(f"folds: n_splits must be >= 2, got {n_splits}")
    y = label_matrix(labels_df)
    if groups is None:
        fold = _stratify(y, n_splits, seed)
    else:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise HPAError(f"folds: {len(groups)} group ids for {len(y)} rows")
        uniq, inverse = np.unique(groups, return_inverse=True)
        # A group carries the union of its members' labels, so a rare label of one member still counts.
        y_group = np.zeros((len(uniq), y.shape[1]), dtype=np.uint8)
        np.maximum.at(y_group, inverse, y)
        fold = _stratify(y_group, n_splits, seed)[inverse]
    _warn_thin_classes(y, fold, n_splits)
    return pd.Series(fold, index=pd.Index(labels_df["Id"], name="Id"), name="fold")


def _warn_thin_classes(y: np.ndarray, fold: np.ndarray, n_splits: int) -> None:
    """Warn (one line) about classes present in the data but absent from some validation folds.

    Such a class has fewer images than folds (or duplicates grouped together): the folds without it
    score it 0 (or not at all) and its tuned threshold rests on the other folds.
    """
    per_fold = np.stack([y[fold == k].sum(axis=0) for k in range(n_splits)])     # (k, 28)
    total, covered = y.sum(axis=0), (per_fold > 0).sum(axis=0)
    thin = [c for c in range(y.shape[1]) if 0 < total[c] and covered[c] < n_splits]
    if thin:
        shown = ", ".join(f"{c} {CLASS_NAMES[c]} ({_images(total[c])}, in {int(covered[c])})"
                          for c in thin[:5]) + (f" and {len(thin) - 5} more" if len(thin) > 5 else "")
        warnings.warn(f"folds: {len(thin)} class(es) missing from some of the {n_splits} validation "
                      f"folds: {shown}; their per-fold F1 and tuned thresholds rest on fewer folds "
                      "(use fewer folds or more data)", stacklevel=3)


def _images(n: int) -> str:
    return f"{int(n)} image" + ("" if n == 1 else "s")


def _stratify(y: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    if len(y) < n_splits:
        raise HPAError(f"folds: {len(y)} samples (or groups) cannot fill {n_splits} folds")
    if len(y) < 2 * n_splits:   # a validation fold of one image says nothing about 28 classes
        fix = f"use at most {len(y) // 2} folds" if len(y) >= 4 else "2 folds need at least 4"
        raise HPAError(f"folds: {len(y)} samples (or groups) for {n_splits} folds leave a validation "
                       f"fold with a single image; {fix}")
    fold = np.full(len(y), -1, dtype=np.int64)
    mskf = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(mskf.split(np.zeros(len(y)), y)):
        fold[val] = k
    return fold


def fold_table(labels_df: pd.DataFrame, folds: pd.Series) -> pd.DataFrame:
    """Per-fold positive counts: one row per class (``name``, ``fold0``..``fold{k-1}``, ``total``)."""
    y = label_matrix(labels_df)
    f = folds.reindex(labels_df["Id"]).to_numpy()
    k = int(f.max()) + 1
    table = pd.DataFrame({"name": CLASS_NAMES})
    for j in range(k):
        table[f"fold{j}"] = y[f == j].sum(axis=0).astype(int)
    table["total"] = y.sum(axis=0).astype(int)
    table.index.name = "class"
    return table


def read_folds(path: str | Path) -> pd.Series:
    """Read an ``Id,fold`` CSV into an int Series indexed by Id; HPAError naming a bad row."""
    df = read_csv(path, ["Id", "fold"])
    fold = pd.to_numeric(df["fold"], errors="coerce")
    bad = fold.isna() | (fold < 0) | (fold != fold.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise HPAError(f"{path}: row {i + 2} (Id {df['Id'].iat[i]}): fold '{df['fold'].iat[i]}' "
                       "is not a non-negative integer")
    if df["Id"].duplicated().any():
        raise HPAError(f"{path}: duplicate Id '{df['Id'][df['Id'].duplicated()].iat[0]}'")
    return pd.Series(fold.astype(np.int64).to_numpy(), index=pd.Index(df["Id"], name="Id"), name="fold")


def select_folds(fold_of: pd.Series, folds: Sequence[int] | None,
                 n_splits: int) -> tuple[list[int], list[int]]:
    """``(every fold of the folds file, the requested ones sorted; all when None or empty)``: an
    HPAError naming the first requested fold the file lacks (``--folds``)."""
    all_folds = sorted(int(f) for f in np.unique(fold_of.to_numpy()))
    chosen = all_folds if not folds else sorted(set(int(f) for f in folds))
    bad = [f for f in chosen if f not in all_folds]
    if bad:
        raise HPAError(f"--folds {bad[0]}: not in the folds file (folds: {all_folds}, n_splits {n_splits})")
    return all_folds, chosen


def folds_path(cfg) -> Path:
    """Return an experiment's folds file: ``cfg.folds.file``, or ``<data.root>/folds.csv`` when empty."""
    return Path(cfg.folds.file) if cfg.folds.file else Path(cfg.data.root) / "folds.csv"


def write_folds(path: str | Path, folds: pd.Series) -> Path:
    """Write a fold Series as ``Id,fold`` (atomically) and return the path."""
    return write_csv(path, pd.DataFrame({"Id": folds.index, "fold": folds.to_numpy()}))


# ----------------------------------------------------------------------------- folds over the union
def external_folds(groups: pd.DataFrame, folds: pd.Series, external_ids: Sequence[str],
                   n_splits: int, seed: int = 42, external_labels: pd.DataFrame | None = None) -> pd.Series:
    """A fold for each external Id, keeping duplicate groups whole (``data.external_in: folds``).

    An external image in a group with Kaggle train images gets their fold (``folds``: Id -> fold of
    train.csv, itself made with these groups); the others are spread over the folds by
    multilabel-stratified k-fold on their groups (``external_labels`` from ``read_labels``; random
    groups when None). Returns an int Series indexed by external Id.
    """
    ext_group = pd.Series(group_ids(groups, "external", external_ids), index=pd.Index(external_ids, name="Id"))
    train = groups[groups["source"] == "train"]
    train_fold = train.assign(fold=folds.reindex(train["Id"]).to_numpy()).dropna(subset=["fold"])
    by_group = train_fold.groupby("group")["fold"].agg(lambda f: int(f.iloc[0]))
    fold = ext_group.map(by_group)
    free = np.flatnonzero(fold.isna().to_numpy())
    free_groups = ext_group.iloc[free].to_numpy()
    if len(np.unique(free_groups)) >= n_splits:
        free_ids = ext_group.index[free]
        if external_labels is None:
            labels = pd.DataFrame({"Id": free_ids, "labels": [[0]] * len(free_ids)})
        else:
            labels = external_labels.set_index("Id").reindex(free_ids).reset_index()
        fold.iloc[free] = make_folds(labels, n_splits, seed, groups=free_groups).to_numpy()
    elif len(free):                      # too few groups to stratify: one group per fold in turn
        fold.iloc[free] = np.unique(free_groups, return_inverse=True)[1] % n_splits
    return fold.astype(np.int64).rename("fold")


# ----------------------------------------------------------------------------- duplicates
def green_hashes(image_dir: str | Path, ids: Sequence[str], kind: str = "kaggle",
                 workers: int = 2) -> np.ndarray:
    """Return the 64-bit perceptual hash (imagehash.phash) of each Id's green channel as uint64."""
    source = ImageSource("train", image_dir, list(ids), kind)
    return hash_images(source, ("green",), workers=workers, progress=False)[:, 0]


def duplicate_groups(image_dir: str | Path, ids: Sequence[str], threshold: int = 4,
                     kind: str = "kaggle", reference: str = "blue") -> np.ndarray:
    """Group near-duplicate images of one folder; return one int group id per Id (equal = same group).

    Two images are linked when the phashes of their green stain and of the ``reference`` stain each
    differ in at most ``threshold`` bits (:mod:`hpa.data.duplicates`); groups are the connected
    components of those links.
    """
    groups, _ = find_duplicates([ImageSource("train", image_dir, list(ids), kind)], threshold, reference,
                                progress=False)
    return groups["group"].to_numpy(np.int64)


def dedup_groups(o: dict) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Duplicate groups of a folds run over train (and the external images when configured).

    Returns ``(group per train row, groups table, links)``; train images linked only through an
    external twin share a group too, so an external image can never sit between two folds.
    """
    sources = [ImageSource("train", o["image_dir"], o["ids"], "kaggle")]
    if o.get("external_csv"):
        ext_dir = Path(o["external_dir"] or "")
        fmt = folder_format(ext_dir) or "jpg"
        ids = require_images(o["external_csv"], ext_dir, read_hpav18_labels(o["external_csv"])["Id"].tolist(),
                             o["skip_missing"], fmt)
        sources.append(ImageSource("external", ext_dir, ids, FORMATS[fmt]))
    groups, links = find_duplicates(sources, o["threshold"], o["reference"], o["hash_cache"], o["workers"])
    return group_ids(groups, "train", o["ids"]), groups, links


# ----------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa folds``: either an experiment config or explicit files."""
    p.add_argument("--config", help="experiment YAML (data.root, data.train_csv, folds.*)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--labels", help="Id,Target CSV (instead of --config)")
    p.add_argument("--out", help="output Id,fold CSV (default <data.root>/folds.csv)")
    p.add_argument("--force", action="store_true",
                   help="overwrite a folds file that runs under runs_dir trained on, with another split")
    p.add_argument("--k", type=int, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, help="random seed (default 42)")
    d = p.add_argument_group("duplicate-aware folds (--dedup)")
    d.add_argument("--dedup", action="store_true", default=None, help="group near-duplicate images")
    d.add_argument("--image-dir", help="Kaggle-layout image folder for --dedup")
    d.add_argument("--hash-distance", dest="threshold", type=int, metavar="BITS",
                   help="max phash Hamming distance per stain (default folds.hash_threshold, 4)")
    add_renamed(d, "--threshold", "--hash-distance", dest="threshold", type=int)
    d.add_argument("--reference", choices=("blue", "red", "yellow"), default="blue",
                   help="stain hashed besides green to pin the field of view (default blue)")
    d.add_argument("--external-csv", help="HPAv18 label file: group across train and HPAv18 "
                   "(default data.external_csv)")
    d.add_argument("--external-dir", help="HPAv18 image folder (default data.external_dir)")
    d.add_argument("--skip-missing", action="store_true", help="leave out HPAv18 Ids without images")
    d.add_argument("--groups-out", help="duplicate groups CSV (default duplicates.csv beside --out)")
    d.add_argument("--hash-cache", help="folder keeping the image hashes (default data.cache_dir; "
                   "none with --labels)")
    d.add_argument("--workers", type=int, default=2, help="hashing threads (default 2)")


def _resolve(args: argparse.Namespace) -> dict:
    """Merge config values and explicit flags (flags win) into the settings of one folds run."""
    if args.config:
        cfg = load_config(args.config, args.set)
        root = Path(cfg.data.root)
        opts = dict(labels=root / cfg.data.train_csv, out=folds_path(cfg),
                    k=cfg.folds.n_splits, seed=cfg.folds.seed, dedup=cfg.folds.dedup,
                    image_dir=root / cfg.data.train_dir, threshold=cfg.folds.hash_threshold,
                    external_csv=cfg.data.external_csv, external_dir=cfg.data.external_dir,
                    hash_cache=cfg.data.cache_dir)
    elif args.labels:
        opts = dict(labels=Path(args.labels), out=Path(args.labels).parent / "folds.csv", k=5, seed=42,
                    dedup=False, image_dir=None, threshold=4, external_csv="", external_dir="",
                    hash_cache=None)
    else:
        raise HPAError("hpa folds: give --config or --labels")
    for key in ("out", "k", "seed", "dedup", "image_dir", "threshold", "external_csv", "external_dir",
                "hash_cache", "groups_out"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    opts.update(reference=args.reference, skip_missing=args.skip_missing, workers=args.workers)
    opts.setdefault("groups_out", Path(opts["out"]).with_name("duplicates.csv"))
    if opts["dedup"] and not opts["image_dir"]:
        raise HPAError("hpa folds: --dedup needs --image-dir")
    if opts["dedup"] and opts["external_csv"] and not opts["external_dir"]:
        raise HPAError("hpa folds: --external-csv needs --external-dir (or data.external_dir)")
    return opts


def main(args: argparse.Namespace) -> int:
    """``hpa folds``: write ``Id,fold`` and print the per-fold class count table."""
    o = _resolve(args)
    t0 = time.perf_counter()
    df = read_labels(o["labels"])
    groups, extra = None, ""
    if o["dedup"]:
        o["ids"] = df["Id"].tolist()
        groups, table, _ = dedup_groups(o)
        extra = f", {len(df) - len(np.unique(groups))} images joined to duplicates"
        ext = table[table["source"] == "external"]
        if len(ext):
            linked = ext["group"].isin(table["group"][table["source"] == "train"]).sum()
            extra += f"; {linked} of {len(ext)} external images duplicate a train image"
    folds = make_folds(df, o["k"], o["seed"], groups)
    if not args.force:          # a run trained on this file would --resume on another split
        runs_dir = load_config(args.config, args.set).runs_dir if args.config else "runs"
        refuse_folds_overwrite(o["out"], folds, runs_dir)
    if o["dedup"]:
        write_groups(o["groups_out"], table)
        extra += f"; groups in {o['groups_out']}"
    write_folds(o["out"], folds)
    print(fold_table(df, folds).to_string())
    print(f"wrote {o['out']}: {len(df)} Ids in {o['k']} folds (seed {o['seed']}{extra}) "
          f"in {time.perf_counter() - t0:.1f}s")
    return 0
