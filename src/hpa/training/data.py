"""What a run trains on: the Kaggle training images, plus the external ones when configured.

``TrainingSet.load(cfg, labels, y, fold_of)`` opens the Kaggle images (through the cache) and, with
``data.external_csv``, the external set (:mod:`hpa.external.train_set`); rows are
``[kaggle..., external...]`` and :meth:`TrainingSet.fold_input` gives one fold's
:class:`~hpa.training.loop.FoldInput` with each row's source, so the loop scores, selects epochs
and writes OOF on Kaggle rows only and reports the external rows' validation apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hpa.external.train_set import ConcatImages, ExternalSet, load_external
from hpa.training.loop import FoldInput
from hpa.transforms import load_size

KAGGLE, EXTERNAL = "kaggle", "external"


@dataclass
class TrainingSet:
    """All rows a run may train or validate on, and each Kaggle row's fold."""
    images: Sequence[np.ndarray]
    y: np.ndarray                   # (N + M, 28) uint8
    ids: np.ndarray                 # (N + M,) str
    source: np.ndarray              # (N + M,) "kaggle" | "external"
    kaggle_fold: np.ndarray         # (N,) fold of each Kaggle row
    external: ExternalSet | None

    @classmethod
    def load(cls, cfg: Any, labels: pd.DataFrame, y: np.ndarray, fold_of: pd.Series,
             all_folds: pd.Series | None = None, skip_missing: bool | None = None) -> "TrainingSet":
        """Open the Kaggle rows ``labels`` (from ``load_split``) and the external images of ``cfg``.

        ``all_folds`` (the whole folds file; default ``fold_of``) places external twins of Kaggle
        images; ``skip_missing`` overrides ``data.external_skip_missing``.
        """
        from hpa.data.cache import open_images

        d = cfg.data
        size = load_size(cfg)
        kaggle = open_images(Path(d.root) / d.train_dir, labels["Id"].tolist(), size, kind="kaggle",
                             cache=d.cache, cache_dir=d.cache_dir)
        ext = load_external(cfg, fold_of if all_folds is None else all_folds, size, skip_missing)
        return cls.join(kaggle, y, labels["Id"].to_numpy().astype(str), fold_of.to_numpy(), ext)

    @classmethod
    def join(cls, kaggle, y: np.ndarray, ids: np.ndarray, kaggle_fold: np.ndarray,
             ext: ExternalSet | None) -> "TrainingSet":
        """Rows ``[kaggle..., external...]`` (the Kaggle ones alone when ``ext`` is None)."""
        if ext is None or len(ext) == 0:
            return cls(kaggle, y, ids, np.full(len(ids), KAGGLE), np.asarray(kaggle_fold), None)
        return cls(ConcatImages([kaggle, ext.images]), np.concatenate([y, ext.y]),
                   np.concatenate([ids, ext.ids]),
                   np.concatenate([np.full(len(ids), KAGGLE), np.full(len(ext), EXTERNAL)]),
                   np.asarray(kaggle_fold), ext)

    def fold_input(self, fold: int) -> FoldInput:
        """Fold ``fold``: Kaggle rows of other folds plus the external rows that may train it; Kaggle
        rows of the fold plus the external rows validated in it."""
        kf = self.kaggle_fold
        train, val = np.flatnonzero(kf != fold), np.flatnonzero(kf == fold)
        if self.external is not None:
            n = len(kf)
            train = np.concatenate([train, n + self.external.train_rows(fold)])
            val = np.concatenate([val, n + self.external.val_rows(fold)])
        return FoldInput(self.images, self.y, self.ids, train, val, self.source)

    def describe(self, folds: Sequence[int], external_in: str) -> str:
        """One line on the external images ("" without them)."""
        return "" if self.external is None else self.external.describe(folds, external_in)

    def inputs(self, cfg: Any) -> dict | None:
        """The ``inputs.json`` record of the external rows used (None without them)."""
        from hpa.rundir import file_digest, ids_digest

        if self.external is None:
            return None
        csv = Path(cfg.data.external_csv)
        return {"labels": {"path": str(csv.resolve()), "sha256": file_digest(csv)},
                "n_images": len(self.external), "ids_sha256": ids_digest(self.external.ids),
                "skipped": self.external.n_skipped}
