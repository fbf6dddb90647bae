"""What a run trains on: the Kaggle training images, plus the external ones when configured.

``TrainingSet.load(cfg, labels, y, fold_of)`` opens the Kaggle images (through the cache), with
``data.external_csv`` the external set (:mod:`hpa.external.train_set`) and with ``pseudo.from_run``
the pseudo-labelled test images (:mod:`hpa.pseudo`), at every size of ``train.resize_schedule``; rows
are ``[kaggle..., external..., pseudo...]`` and :meth:`TrainingSet.fold_input` gives one fold's
:class:`~hpa.training.loop.FoldInput` with each row's source, so the loop scores, selects epochs
and writes OOF on Kaggle rows only and reports the external rows' validation apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hpa.data.cache import open_images
from hpa.data.views import ConcatImages
from hpa.external.train_set import ExternalSet, load_external
from hpa.pseudo import pseudo_matrix
from hpa.rundir import file_digest, ids_digest
from hpa.training.loop import FoldInput
from hpa.training.resize import schedule_sizes, size_at
from hpa.transforms import load_size

KAGGLE, EXTERNAL, PSEUDO = "kaggle", "external", "pseudo"


@dataclass
class TrainingSet:
    """All rows a run may train or validate on, and each Kaggle row's fold."""
    images: Sequence[np.ndarray]
    y: np.ndarray                   # (N + M + P, 28) uint8
    ids: np.ndarray                 # (N + M + P,) str
    source: np.ndarray              # (N + M + P,) "kaggle" | "external" | "pseudo"
    kaggle_fold: np.ndarray         # (N,) fold of each Kaggle row
    external: ExternalSet | None
    by_size: dict = field(default_factory=dict)     # size -> the same rows at that size (resize schedule)

    @classmethod
    def load(cls, cfg: Any, labels: pd.DataFrame, y: np.ndarray, fold_of: pd.Series,
             all_folds: pd.Series | None = None, skip_missing: bool | None = None,
             pseudo: pd.DataFrame | None = None) -> "TrainingSet":
        """Open the Kaggle rows ``labels`` (from ``load_split``), the external images of ``cfg`` and the
        pseudo-labelled test images ``pseudo`` (:mod:`hpa.pseudo`), at every size the run trains at.

        ``all_folds`` (the whole folds file; default ``fold_of``) places external twins of Kaggle
        images; ``skip_missing`` overrides ``data.external_skip_missing``.
        """
        d, root = cfg.data, Path(cfg.data.root)
        folds = fold_of if all_folds is None else all_folds
        load, schedule = load_size(d.image_size, cfg.train.crop_from), cfg.train.resize_schedule
        first = size_at(schedule, load, 0)
        sizes = list(dict.fromkeys([first, *schedule_sizes(schedule, load)]))
        ext = load_external(cfg, folds, sizes[0], skip_missing)     # labels, groups and folds read once
        by_size = {}
        for size in sizes:
            parts = [open_images(root / d.train_dir, labels["Id"].tolist(), size, kind="kaggle",
                                 cache=d.cache, cache_dir=d.cache_dir)]
            if ext is not None and len(ext):
                parts.append(ext.images if size == sizes[0] else ext.images_at(cfg, size))
            if pseudo is not None and len(pseudo):
                parts.append(open_images(root / d.test_dir, pseudo["Id"].tolist(), size, kind="kaggle",
                                         cache=d.cache, cache_dir=d.cache_dir))
            by_size[size] = parts[0] if len(parts) == 1 else ConcatImages(parts)
        ext = ext if ext is not None and len(ext) else None
        ids = labels["Id"].to_numpy().astype(str)
        ys, idss, sources = [y], [ids], [np.full(len(ids), KAGGLE)]
        for extra, name in ((ext, EXTERNAL), (pseudo, PSEUDO)):
            if extra is not None and len(extra):
                ys.append(extra.y if name == EXTERNAL else pseudo_matrix(extra))
                idss.append(extra.ids if name == EXTERNAL else extra["Id"].to_numpy().astype(str))
                sources.append(np.full(len(extra), name))
        return cls(by_size[first], np.concatenate(ys), np.concatenate(idss), np.concatenate(sources),
                   fold_of.to_numpy(), ext, by_size)

    def fold_input(self, fold: int) -> FoldInput:
        """Fold ``fold``: Kaggle rows of other folds, the external rows that may train it and every
        pseudo-labelled row; Kaggle rows of the fold plus the external rows validated in it."""
        kf = self.kaggle_fold
        train, val = np.flatnonzero(kf != fold), np.flatnonzero(kf == fold)
        if self.external is not None:
            n = len(kf)
            train = np.concatenate([train, n + self.external.train_rows(fold)])
            val = np.concatenate([val, n + self.external.val_rows(fold)])
        # pseudo-labelled test images join every fold's training rows, never a validation fold
        train = np.concatenate([train, np.flatnonzero(self.source == PSEUDO)])
        return FoldInput(self.images, self.y, self.ids, train, val, self.source,
                         self.by_size.__getitem__ if len(self.by_size) > 1 else None)

    def describe(self, folds: Sequence[int], external_in: str) -> str:
        """One line on the external images ("" without them)."""
        return "" if self.external is None else self.external.describe(folds, external_in)

    def inputs(self, cfg: Any) -> dict | None:
        """The ``inputs.json`` record of the external rows used (None without them)."""
        if self.external is None:
            return None
        csv = Path(cfg.data.external_csv)
        return {"labels": {"path": str(csv.resolve()), "sha256": file_digest(csv)},
                "n_images": len(self.external), "ids_sha256": ids_digest(self.external.ids),
                "skipped": self.external.n_skipped}
