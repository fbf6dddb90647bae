"""Plots of a synthetic-image folder (``notebooks/03_synthetic.ipynb``).

Input: ``input/synth/<name>/manifest.csv`` (+ ``manifest_filtered.csv`` after ``hpa synth filter``)
with its images under ``train/``, the real training labels and images, and optionally a classifier run
for label agreement. ``hpa synth report`` (``hpa.synthetic.report``) writes the JSON/PNG report; these
functions add the per-class views a notebook wants and return Figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.data.images import read_kaggle_rgby, to_rgb
from hpa.errors import HPAError
from hpa.reports import CLASS_LABELS, class_ticks, new_figure, save_figure
from hpa.synthetic.filter import load_classifier, predict_folder
from hpa.synthetic.manifest import read_manifest


def load_synth(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read ``folder/manifest.csv`` (required) and ``manifest_filtered.csv`` (None when absent)."""
    folder = Path(folder)
    man = read_manifest(folder / "manifest.csv")
    filt = folder / "manifest_filtered.csv"
    return man, (read_manifest(filt) if filt.is_file() else None)


def _has(df: pd.DataFrame, k: int) -> list[str]:
    return df["Id"][[k in ls for ls in df["labels"]]].tolist()


def plot_real_vs_synthetic(man: pd.DataFrame, syn_dir: str | Path, real: pd.DataFrame, real_dir: str | Path,
                           classes: Sequence[int] | None = None, per_class: int = 3, size: int = 64,
                           path: str | Path | None = None) -> Figure:
    """One row per class: ``per_class`` real images (left) and synthetic images (right) carrying it.

    ``classes`` defaults to every class the manifest intends; composites are RGBY -> RGB (``to_rgb``).
    """
    classes = [k for k in range(NUM_CLASSES) if _has(man, k)] if classes is None else list(classes)
    if not classes:
        raise HPAError("manifest: no image intends any of the requested classes")
    fig, axes = new_figure(2 * per_class * 1.2 + 1.5, 1.3 * len(classes), len(classes), 2 * per_class)
    for r, k in enumerate(classes):
        cells = [(real_dir, i) for i in _has(real, k)[:per_class]]
        cells += [None] * (per_class - len(cells))
        syn = [(syn_dir, i) for i in _has(man, k)[:per_class]]
        cells += syn + [None] * (per_class - len(syn))
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if cell:
                ax.imshow(to_rgb(read_kaggle_rgby(cell[0], cell[1], size)))
            else:
                ax.axis("off")      # fewer images than per_class: leave the slot blank
            if r == 0:
                ax.set_title("real" if c < per_class else "synthetic", fontsize=8)
        axes[r, 0].set_ylabel(CLASS_LABELS[k], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"real (left {per_class}) vs synthetic (right {per_class}) per class")
    return save_figure(fig, path)


def _pixel_vectors(image_dir: str | Path, ids: Sequence[str], size: int) -> np.ndarray:
    """Flattened, mean-centred, unit-norm pixel vectors (cosine of these = Pearson correlation)."""
    # float32: the real train set (31k images x 4096 values at 32 px) stays near 0.5 GB
    x = np.empty((len(ids), size * size * 4), dtype=np.float32)
    for n, i in enumerate(tqdm(ids, desc=f"read {Path(image_dir).name}", leave=False, disable=len(ids) < 500)):
        x[n] = read_kaggle_rgby(image_dir, i, size).reshape(-1)
    x -= x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)


def nearest_real(man: pd.DataFrame, syn_dir: str | Path, real: pd.DataFrame, real_dir: str | Path,
                 size: int = 32) -> pd.DataFrame:
    """Per synthetic image: ``Id, nearest_id, similarity`` (pixel Pearson correlation at ``size`` px,
    over the four stains) to the most similar real training image. Near 1 = a copy (memorisation)."""
    syn = _pixel_vectors(syn_dir, man["Id"].tolist(), size)
    ref = _pixel_vectors(real_dir, real["Id"].tolist(), size)
    sim = syn @ ref.T
    best = sim.argmax(axis=1)
    return pd.DataFrame({"Id": man["Id"].to_numpy(), "nearest_id": real["Id"].to_numpy()[best],
                         "similarity": sim[np.arange(len(best)), best]})


def plot_memorization(similarity: np.ndarray, copy_level: float = 0.95, what: str = "pixel correlation",
                      path: str | Path | None = None) -> Figure:
    """Histogram of each synthetic image's similarity to its nearest real image; ``copy_level`` marked."""
    s = np.asarray(similarity, dtype=np.float64)
    fig, ax = new_figure(6, 4)
    ax.hist(s, bins=30, range=(min(0.0, float(s.min())), 1.0), color="tab:green")
    ax.axvline(copy_level, color="tab:red", ls="--",
               label=f"> {copy_level}: {(s > copy_level).mean():.1%} of {len(s)} images")
    ax.set(xlabel=f"{what} to the nearest real image", ylabel="synthetic images",
           title="memorisation check: nearest real image per synthetic image")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def classifier_probs(run_dir: str | Path, syn_dir: str | Path, ids: Sequence[str], fold: int = 0) -> np.ndarray:
    """Sigmoid probabilities ``(N, 28)`` of a trained run's fold-``fold`` classifier on synthetic images."""
    model, size = load_classifier(run_dir, fold)
    return predict_folder(model, syn_dir, list(ids), size)


def label_agreement_per_class(labels: Sequence[Sequence[int]], probs: np.ndarray) -> pd.DataFrame:
    """Per intended class: ``class, name, n_images, mean_prob`` (classifier probability of the class on
    images meant to show it) and ``recall_at_0.5`` (share of those images where it passes 0.5)."""
    rows = []
    for k in range(NUM_CLASSES):
        m = np.array([k in ls for ls in labels], dtype=bool)
        p = probs[m, k]
        rows.append({"class": k, "name": CLASS_NAMES[k], "n_images": int(m.sum()),
                     "mean_prob": float(p.mean()) if m.any() else np.nan,
                     "recall_at_0.5": float((p >= 0.5).mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def plot_label_agreement(table: pd.DataFrame, title: str = "label agreement per class",
                         path: str | Path | None = None) -> Figure:
    """Bars per class: mean classifier probability of the intended class and its recall at 0.5."""
    x = np.arange(NUM_CLASSES)
    fig, ax = new_figure(12, 4.5)
    ax.bar(x - 0.2, table["mean_prob"].fillna(0), 0.4, label="mean probability of intended class")
    ax.bar(x + 0.2, table["recall_at_0.5"].fillna(0), 0.4, label="share recognised at 0.5")
    ax.set_xticks(x, [f"{CLASS_LABELS[k]} ({n})" for k, n in zip(table["class"], table["n_images"])],
                  rotation=75, ha="right", fontsize=7)
    ax.set(xlabel="intended class (synthetic images)", ylabel="probability / share", ylim=(0, 1.05),
           title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def filter_effect(man: pd.DataFrame, filtered: pd.DataFrame) -> pd.DataFrame:
    """Per class: ``class, name, before, after, kept_share`` image counts of the filter."""
    before = np.array([len(_has(man, k)) for k in range(NUM_CLASSES)])
    after = np.array([len(_has(filtered, k)) for k in range(NUM_CLASSES)])
    kept = np.divide(after, before, out=np.full(NUM_CLASSES, np.nan), where=before > 0)
    return pd.DataFrame({"class": np.arange(NUM_CLASSES), "name": CLASS_NAMES, "before": before,
                         "after": after, "kept_share": kept})


def plot_filter_effect(man: pd.DataFrame, filtered: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Left: filter_score histogram of kept vs dropped images. Right: images per class before/after."""
    if man["filter_score"].isna().all():
        raise HPAError("manifest.csv: filter_score is empty (run `hpa synth filter` first)")
    kept = man["Id"].isin(set(filtered["Id"]))
    fig, axes = new_figure(15, 4.5, 1, 2, width_ratios=[1, 3])
    a, b = axes[0]
    bins = np.linspace(0, 1, 26)
    a.hist(man.loc[kept, "filter_score"], bins=bins, label=f"kept ({int(kept.sum())})", color="tab:green")
    a.hist(man.loc[~kept, "filter_score"], bins=bins, label=f"dropped ({int((~kept).sum())})", color="tab:red")
    a.set(xlabel="filter_score (classifier prob. of intended labels)", ylabel="synthetic images",
          title="filter scores")
    a.legend(fontsize=8)
    t = filter_effect(man, filtered)
    x = np.arange(NUM_CLASSES)
    b.bar(x - 0.2, t["before"], 0.4, label="before filter")
    b.bar(x + 0.2, t["after"], 0.4, label="after filter")
    class_ticks(b)
    b.set(xlabel="intended class", ylabel="synthetic images", title="images per class")
    b.legend(fontsize=8)
    fig.suptitle("effect of the synthetic-image filter")
    return save_figure(fig, path)
