"""The external (HPAv18) images a training run uses, and where they train and validate.

``load_external(cfg, folds)`` reads ``data.external_csv`` (:func:`~hpa.external.hpav18.read_hpav18_labels`:
an HPAError naming the file when it is not an HPAv18 label file), keeps the Ids whose four stains are
in ``data.external_dir`` (``require_images``: an Id without images is an HPAError naming the first and
the count, unless ``data.external_skip_missing``), opens them through the image cache (one ``.npy``
per source, keyed by folder, reader kind, size and Ids: the Kaggle cache is never rebuilt for them),
reads the duplicate groups (``data.external_groups``, default ``duplicates.csv`` beside the folds file,
written by ``hpa folds --dedup`` with ``data.external_csv``: without them thousands of HPAv18 twins of
Kaggle train images would leak into validation), draws ``data.external_fraction`` by whole groups and
decides, per fold:

* ``data.external_in: train`` (default): every external image trains every fold, except those in a
  duplicate group with a Kaggle image validated in that fold (:func:`hpa.data.duplicates.leaking_external`);
  none is validated, so OOF, thresholds and the scores are Kaggle-only;
* ``data.external_in: folds``: every external image gets one fold (:func:`hpa.data.folds.external_folds`:
  the fold of its group's Kaggle images, else stratified by group), trains the other folds and is
  validated in its own; the run reports its validation F1 apart from the Kaggle images', and OOF
  and thresholds stay Kaggle-only.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hpa.data.cache import open_images
from hpa.data.duplicates import group_ids, leaking_external, read_groups
from hpa.data.folds import external_folds, folds_path
from hpa.data.views import RowView
from hpa.external.hpav18 import external_labels
from hpa.data.labels import label_matrix
from hpa.errors import HPAError


@dataclass
class ExternalSet:
    """The external images of one run: rows of :attr:`images` in label-file order."""
    ids: np.ndarray                 # (M,) str
    y: np.ndarray                   # (M, 28) uint8
    images: Sequence[np.ndarray]    # M images, HxWx4 uint8
    group: np.ndarray               # (M,) duplicate group (the groups file's numbering)
    fold: np.ndarray                # (M,) validation fold (external_in: folds); -1 = validated nowhere
    blocked: dict[int, np.ndarray]  # fold -> (M,) bool: must not train that fold (a twin is validated there)
    n_listed: int                   # Ids in the label file
    n_skipped: int                  # of them without images (data.external_skip_missing)
    opened: tuple = ()              # (Ids opened from data.external_dir, reader kind, rows kept of them)

    def __len__(self) -> int:
        return len(self.ids)

    def images_at(self, cfg: Any, size: int) -> Sequence[np.ndarray]:
        """The same rows at ``size`` (``train.resize_schedule``), through the cache; labels, groups and
        folds are not read again."""
        return _open_rows(cfg, *self.opened, size)

    def train_rows(self, fold: int) -> np.ndarray:
        """Rows that train fold ``fold``."""
        return np.flatnonzero((self.fold != fold) & ~self.blocked.get(fold, np.zeros(len(self), bool)))

    def val_rows(self, fold: int) -> np.ndarray:
        """Rows validated in fold ``fold`` (none with ``external_in: train``)."""
        return np.flatnonzero(self.fold == fold)

    def describe(self, folds: Sequence[int], external_in: str) -> str:
        """One line: how many external images, skipped, and where they go."""
        skipped = f" ({self.n_skipped} of {self.n_listed} skipped: no images)" if self.n_skipped else ""
        if external_in == "folds":
            per = ", ".join(f"{int((self.fold == k).sum())}" for k in folds)
            where = f"spread over the folds by duplicate group (validated per fold: {per})"
        else:
            per = ", ".join(f"{int(self.blocked[k].sum())}" for k in folds)
            where = (f"in the training part of every fold (left out as twins of a fold's validation "
                     f"images: {per})")
        return f"external: {len(self)} HPAv18 images{skipped}, {where}"


def groups_path(cfg: Any) -> Path:
    """The duplicate groups file training reads: ``data.external_groups``, or ``duplicates.csv``
    beside the folds file (where ``hpa folds --dedup`` writes it)."""
    return Path(cfg.data.external_groups) if cfg.data.external_groups else folds_path(cfg).with_name("duplicates.csv")


def subsample_groups(group: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted rows of about ``fraction`` of the images, drawn by whole duplicate groups (``seed``).

    The groups are put in a seeded random order and taken until ``round(fraction * M)`` images are
    reached, so a twin pair is kept or dropped together, and with one seed a smaller fraction is a
    subset of a larger one.
    """
    if not 0 < fraction <= 1:
        raise HPAError(f"data.external_fraction: must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(group))
    uniq, inverse, sizes = np.unique(group, return_inverse=True, return_counts=True)
    order = np.random.default_rng([seed, 15]).permutation(len(uniq))
    before = np.cumsum(sizes[order]) - sizes[order]          # images taken before each group
    target = max(1, int(round(fraction * len(group))))
    taken = np.zeros(len(uniq), bool)
    taken[order[before < target]] = True
    return np.flatnonzero(taken[inverse])


def load_external(cfg: Any, folds: pd.Series, size: int, skip_missing: bool | None = None) -> ExternalSet | None:
    """The external images of ``cfg`` for training on the Kaggle ``folds`` (Id -> fold); None when
    ``data.external_csv`` is empty. Images are opened at ``size`` through the cache (built on first use)."""
    d = cfg.data
    if not d.external_csv:
        return None
    labels, kind, n_listed = external_labels(cfg, skip_missing)
    gpath = groups_path(cfg)
    if not gpath.is_file():
        raise HPAError(f"{gpath}: duplicate groups file not found; external data needs one (else HPAv18 twins "
                       f"of Kaggle images leak into validation): run 'hpa folds --config <this config> --dedup' "
                       "(it groups train + data.external_csv), or set data.external_groups")
    groups = read_groups(gpath)
    try:
        group = group_ids(groups, "external", labels["Id"].tolist())
    except HPAError as e:
        raise HPAError(f"{gpath}: {e}") from None
    keep = subsample_groups(group, d.external_fraction, cfg.seed)
    opened = (labels["Id"].tolist(), kind, keep)
    images = _open_rows(cfg, *opened, size)
    labels, group = labels.iloc[keep].reset_index(drop=True), group[keep]
    ids = labels["Id"].to_numpy().astype(str)
    fold_numbers = sorted(int(f) for f in np.unique(folds.to_numpy()))
    if d.external_in == "folds":
        with warnings.catch_warnings():     # classes thin among the external images alone: the
            warnings.simplefilter("ignore")  # scores and thresholds that matter are on Kaggle rows
            fold = external_folds(groups, folds, ids.tolist(), cfg.folds.n_splits, cfg.folds.seed,
                                  labels).to_numpy(np.int64)
        blocked = {}
    else:
        fold = np.full(len(ids), -1, np.int64)
        blocked = {k: np.isin(ids, list(leaking_external(groups, folds, k))) for k in fold_numbers}
    return ExternalSet(ids, label_matrix(labels), images, group, fold, blocked, n_listed,
                       n_listed - len(opened[0]), opened)


def _open_rows(cfg: Any, ids: list, kind: str, keep: np.ndarray, size: int) -> Sequence[np.ndarray]:
    """Rows ``keep`` of the external images ``ids`` at ``size``, opened through the cache."""
    d = cfg.data
    images = open_images(d.external_dir, ids, size, kind, d.cache, d.cache_dir)
    return images if len(keep) == len(images) else RowView(images, keep)
