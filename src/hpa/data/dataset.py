"""The torch Dataset over cached images, and ``load_split``: labels + folds (+ data fraction) of a config.

``HPADataset`` yields ``(uint8 tensor (4, H, W), float32 tensor (28,))``; pixels stay raw 0-255
because normalisation happens inside the model (``hpa.models``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hpa.classes import NUM_CLASSES
from hpa.data.folds import folds_path, read_folds
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError


class HPADataset(Dataset):
    """Images (a sequence of ``HxWx4`` uint8, e.g. from ``open_images``) with optional multi-hot targets.

    ``transform`` is an albumentations ``Compose`` (called as ``transform(image=img)["image"]``) that
    must return an ``HxWx4`` uint8 array (no ``ToTensorV2``). Item ``i`` is
    ``(torch.uint8 (4, H, W), torch.float32 (28,))``; the target is all zeros when ``targets`` is None.
    """

    def __init__(self, images: Sequence[np.ndarray], targets: np.ndarray | None = None,
                 transform: Any = None):
        if targets is not None:
            targets = np.asarray(targets)
            if targets.shape != (len(images), NUM_CLASSES):
                raise HPAError(f"HPADataset: targets shape {targets.shape}, expected "
                               f"({len(images)}, {NUM_CLASSES})")
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = np.array(self.images[i])      # a private copy: memmap pages are read-only
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 4 or img.dtype != np.uint8:
            raise HPAError(f"HPADataset item {i}: transform must return an HxWx4 uint8 array, got "
                           f"{type(img).__name__} {getattr(img, 'shape', '')} {getattr(img, 'dtype', '')}")
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if self.targets is None:
            return x, torch.zeros(NUM_CLASSES, dtype=torch.float32)
        return x, torch.from_numpy(self.targets[i].astype(np.float32))

    def __getstate__(self) -> dict:
        # Pickling an np.memmap copies the whole array into every DataLoader worker (spawn/forkserver);
        # send the file name instead and re-map it on the other side.
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and self.images.filename:
            state["images"] = ("__memmap__", self.images.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("images"), tuple) and state["images"][0] == "__memmap__":
            state["images"] = np.load(state["images"][1], mmap_mode="r")
        self.__dict__.update(state)


def subset_fraction(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Return sorted row indices of a deterministic, roughly stratified ``fraction`` of ``y`` (N, 28).

    Rows are grouped by their rarest label and shuffled within each group (``seed``); a row's key is
    its relative position in its group, so taking the ``round(fraction * N)`` smallest keys draws every
    group in proportion. The first row of every group is always kept (no class vanishes), and with the
    same seed a smaller fraction is a subset of a larger one.
    """
    if not 0 < fraction <= 1:
        raise HPAError(f"data.fraction: must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(y))
    counts = y.sum(axis=0)
    # rarest label of each row (rows without labels form their own stratum, -1)
    rarity = np.where(y.astype(bool), counts[None, :], np.iinfo(np.int64).max)
    stratum = np.where(y.any(axis=1), rarity.argmin(axis=1), -1)
    rng = np.random.default_rng(seed)
    key = np.empty(len(y))
    groups = np.unique(stratum)
    for s in groups:
        rows = rng.permutation(np.flatnonzero(stratum == s))
        key[rows] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
        key[rows[0]] = -1.0
    n_keep = max(int(round(fraction * len(y))), len(groups))
    return np.sort(np.argsort(key, kind="stable")[:n_keep])


def load_split(cfg: Any) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """Read an experiment's train.csv and folds.csv; return ``(labels_df, label_matrix, folds)``.

    ``labels_df`` comes from ``read_labels`` (Id, Target, labels; index reset), ``label_matrix`` is
    its (N, 28) uint8 multi-hot matrix and ``folds`` an int Series indexed by Id in the same order.
    Both files must hold the same Ids (HPAError naming the first missing or extra one).
    ``cfg.data.fraction`` < 1 keeps a deterministic stratified subset (seed ``cfg.seed``).
    """
    labels_path = Path(cfg.data.root) / cfg.data.train_csv
    fpath = folds_path(cfg)
    df = read_labels(labels_path)
    if not fpath.is_file():
        raise HPAError(f"{fpath}: folds file not found (run 'hpa folds --config ...' first)")
    folds = read_folds(fpath)
    missing = ~df["Id"].isin(folds.index)
    if missing.any():
        raise HPAError(f"{fpath}: missing Id '{df['Id'][missing].iat[0]}' of {labels_path}")
    extra = ~folds.index.isin(df["Id"])
    if extra.any():
        raise HPAError(f"{fpath}: extra Id '{folds.index[extra][0]}' not in {labels_path}")
    y = label_matrix(df)
    keep = subset_fraction(y, cfg.data.fraction, cfg.seed)
    df = df.iloc[keep].reset_index(drop=True)
    return df, y[keep], folds.reindex(df["Id"])
