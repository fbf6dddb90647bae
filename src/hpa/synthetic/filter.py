"""``hpa synth filter``: score synthetic images with a real-data classifier and drop the worst (Base-Prob).

A classifier run (``runs/<exp>/config.yaml`` + ``fold<k>/best.pt``, written by ``train.py``) predicts
each synthetic image; its ``filter_score`` is the mean probability of its intended labels (weighted by
``label_weights`` when the image has soft labels). Scores go into ``manifest.csv``; the images above the
dropped share are listed in ``manifest_filtered.csv`` beside it (same columns, same image folder).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hpa.data.images import read_kaggle_rgby
from hpa.errors import HPAError
from hpa.io import write_csv
from hpa.rundir import RunDir
from hpa.synthetic.manifest import COLUMNS, parse_label_weights, read_manifest


def load_classifier(run_dir: str | Path, fold: int = 0, which: str = "best") -> tuple[torch.nn.Module, int]:
    """Rebuild a run's fold-``fold`` classifier from its saved config; return (model in eval, image size)."""
    model, cfg = RunDir(run_dir).load_model(fold, which)
    return model, cfg.data.image_size


@torch.no_grad()
def predict_folder(model: torch.nn.Module, image_dir: str | Path, ids: list[str], size: int,
                   batch_size: int = 64, features: bool = False) -> np.ndarray:
    """Sigmoid probabilities ``(N, 28)`` (or pooled features) of Kaggle-layout images at ``size``."""
    out = []
    for b in tqdm(range(0, len(ids), batch_size), desc="score", leave=False, disable=len(ids) < 512):
        x = np.stack([read_kaggle_rgby(image_dir, i, size) for i in ids[b:b + batch_size]])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        out.append(model.features(x) if features else torch.sigmoid(model(x)))
    return torch.cat(out).numpy()


def intended_scores(probs: np.ndarray, manifest: pd.DataFrame) -> np.ndarray:
    """Mean probability of each image's intended labels (soft-weighted when label_weights is set)."""
    scores = np.zeros(len(manifest))
    for i, (labels, lw) in enumerate(zip(manifest["labels"], manifest["label_weights"])):
        w = parse_label_weights(lw) or {k: 1.0 for k in labels}
        keys = sorted(w)
        scores[i] = float(np.average(probs[i, keys], weights=[w[k] for k in keys]))
    return scores


def filter_manifest(manifest: str | Path, run_dir: str | Path, fold: int = 0, drop: float = 0.2) -> pd.DataFrame:
    """Score every image, write scores into ``manifest.csv`` and the kept rows to ``manifest_filtered.csv``.

    Returns the kept rows. ``drop`` is the share of lowest-scoring images left out (0 <= drop < 1).
    """
    if not 0.0 <= drop < 1.0:
        raise HPAError(f"--drop: {drop} must be in [0, 1)")
    manifest = Path(manifest)
    df = read_manifest(manifest)
    if df.empty:
        raise HPAError(f"{manifest}: no images (only a header); nothing to filter")
    model, size = load_classifier(run_dir, fold)
    probs = predict_folder(model, manifest.parent / "train", list(df["Id"]), size)
    df["filter_score"] = intended_scores(probs, df)
    cut = float(np.quantile(df["filter_score"], drop)) if drop > 0 else -np.inf
    keep = df[df["filter_score"] >= cut] if drop > 0 else df
    extra = [c for c in df.columns if c not in COLUMNS and c != "labels"]
    fmt = df.assign(filter_score=df["filter_score"].map(lambda v: f"{v:.6f}"))
    write_csv(manifest, fmt[COLUMNS + extra])
    write_csv(manifest.parent / "manifest_filtered.csv", fmt.loc[keep.index, COLUMNS + extra])
    print(f"synth filter: {len(df)} images scored (mean {df['filter_score'].mean():.3f}), kept {len(keep)} "
          f"with filter_score >= {cut:.4f} -> {manifest.parent / 'manifest_filtered.csv'}")
    return keep
