"""A cheap, explicitly labelled STAND-IN for diffusion-generated images (``generator: standin``).

Each synthetic image is a perturbed copy of one real training image (random dihedral flip, per-stain
intensity jitter, a light blur and pixel noise), carrying the source's labels. It needs no training,
so it runs in seconds on a CPU; it is *not* a generative model, and results obtained with it say
nothing about diffusion images. For fold k only sources outside fold k are used and the manifest row
records ``generator_trained_on`` = the other folds, so the pool's leak rules apply unchanged.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import format_target
from hpa.synth.manifest import COLUMNS, append_rows, format_folds, load_existing


def perturb(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a label-preserving perturbed copy of an ``HxWx4`` uint8 image."""
    out = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = cv2.GaussianBlur(np.ascontiguousarray(out).astype(np.float32), (3, 3), float(rng.uniform(0.3, 1.0)))
    out = out * rng.uniform(0.8, 1.2, size=4) + rng.normal(0, 4.0, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def make_standin(data_root: str | Path, folds: pd.Series, out_dir: str | Path, held_out: int,
                 per_image: int = 1, size: int = 0, seed: int = 0, train_dir: str = "train") -> Path:
    """Write ``per_image`` stand-in images per real image outside fold ``held_out`` into
    ``out_dir/train`` with ``out_dir/manifest.csv``; return the manifest path (rerun: skips done Ids)."""
    out_dir, src_dir = Path(out_dir), Path(data_root) / train_dir
    manifest = out_dir / "manifest.csv"
    done = set(load_existing(manifest)["Id"])
    labels = pd.read_csv(Path(data_root) / "train.csv", dtype=str, keep_default_na=False)
    labels = labels[labels["Id"].map(folds) != held_out]
    trained_on = format_folds(set(int(f) for f in folds.unique()) - {held_out})
    rows = []
    for n, (sid, target) in enumerate(tqdm(list(zip(labels["Id"], labels["Target"])),
                                          desc=f"stand-in fold {held_out}", leave=False)):
        for j in range(per_image):
            new_id = f"syn-standin-f{held_out}-{n:05d}-{j}"
            if new_id in done:
                continue
            rng = np.random.default_rng([seed, held_out, n, j])
            write_kaggle_rgby(out_dir / "train", new_id, perturb(read_kaggle_rgby(src_dir, sid, size or None), rng))
            rows.append(dict(zip(COLUMNS, [new_id, format_target(sorted(int(t) for t in target.split())),
                                           "", sid, "standin", trained_on, "sdedit", "0", "0", "1",
                                           str(seed), ""])))
    if rows:
        append_rows(manifest, rows)
    return manifest
