"""The real images a generator trains on or starts from: fold-aware selection and loading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.data.images import read_kaggle_rgby
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.synthetic.config import SynthConfig


def read_folds(cfg: SynthConfig) -> pd.DataFrame:
    """Read the ``Id,fold`` CSV named by ``cfg.data.folds`` (default ``<root>/folds.csv``)."""
    path = Path(cfg.data.folds) if cfg.data.folds else Path(cfg.data.root) / "folds.csv"
    if not path.is_file():
        raise HPAError(f"{path}: folds file not found (data.folds); write it with 'hpa folds --labels "
                       f"{Path(cfg.data.root) / cfg.data.train_csv} --k <folds> --out {path}', or 'hpa folds "
                       "--config <the experiment config whose folds.file it is>'")
    df = read_csv(path, ["Id", "fold"])
    try:
        df["fold"] = df["fold"].astype(int)
    except ValueError:
        raise HPAError(f"{path}: column fold must hold integers") from None
    return df


def training_rows(cfg: SynthConfig, fold: str) -> tuple[pd.DataFrame, set[int] | None]:
    """Labels of the images a generator for ``fold`` may see, and the folds they come from.

    ``fold="all"`` -> every image and None; ``fold="k"`` -> the images outside fold k and the set of
    the other folds, so the generator never sees fold k's validation images.
    """
    labels = read_labels(Path(cfg.data.root) / cfg.data.train_csv)
    if fold == "all":
        return labels, None
    try:
        k = int(fold)
    except ValueError:
        raise HPAError(f"--fold: '{fold}' must be a fold number or 'all'") from None
    folds = read_folds(cfg)
    merged = labels.merge(folds, on="Id", how="left")
    if merged["fold"].isna().any():
        missing = merged["Id"][merged["fold"].isna()].iat[0]
        raise HPAError(f"folds file: Id '{missing}' of {cfg.data.train_csv} has no fold")
    all_folds = set(int(f) for f in merged["fold"].unique())
    if k not in all_folds:
        raise HPAError(f"--fold: {k} not in the folds file (folds: {sorted(all_folds)})")
    keep = merged[merged["fold"].astype(int) != k].drop(columns="fold").reset_index(drop=True)
    return keep, all_folds - {k}


def load_images(cfg: SynthConfig, rows: pd.DataFrame, size: int | None = None,
                desc: str = "load") -> np.ndarray:
    """Read the rows' images as an ``(N, H, W, 4)`` uint8 array at ``size`` (default generator size)."""
    image_dir = Path(cfg.data.root) / cfg.data.train_dir
    size = size or cfg.data.image_size
    out = np.zeros((len(rows), size, size, 4), dtype=np.uint8)
    for i, image_id in enumerate(tqdm(rows["Id"], desc=desc, leave=False, disable=len(rows) < 256)):
        out[i] = read_kaggle_rgby(image_dir, image_id, size)
    return out


def to_model(images: np.ndarray) -> "torch.Tensor":
    """uint8 ``(N,H,W,4)`` -> float ``(N,4,H,W)`` in [-1, 1]."""
    import torch
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: "torch.Tensor") -> np.ndarray:
    """float ``(N,C,H,W)`` in [-1, 1] -> uint8 ``(N,H,W,C)`` (clipped, rounded)."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round()
    return y.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


def multihot(rows: pd.DataFrame) -> np.ndarray:
    """``(N, 28)`` float32 label vectors of the rows."""
    return label_matrix(rows).astype(np.float32)
