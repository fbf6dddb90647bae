"""Exploratory plots of a labels file and its images (``notebooks/01_eda.ipynb``).

Each function takes the validated labels DataFrame of ``hpa.data.labels.read_labels`` (columns
``Id, Target, labels``) and/or a Kaggle-layout image folder, and returns a Figure or a table. The
real competition numbers (``hpa.classes``) are drawn next to the data's own for comparison.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from hpa.classes import CLASS_NAMES, LABELS_PER_IMAGE, NUM_CLASSES, TRAIN_COUNTS, TRAIN_ROWS
from hpa.data.images import CHANNELS, read_kaggle_rgby, to_rgb
from hpa.data.labels import label_matrix
from hpa.errors import HPAError
from hpa.reports import class_ticks, new_figure, save_figure

STAIN_CMAPS = ("Reds", "Greens", "Blues", "YlOrBr")


def class_table(labels: pd.DataFrame) -> pd.DataFrame:
    """Per-class table: ``class, name, count, share`` (of images) and ``real_share`` (real train.csv)."""
    counts = label_matrix(labels).sum(axis=0)
    return pd.DataFrame({"class": np.arange(NUM_CLASSES), "name": CLASS_NAMES, "count": counts,
                         "share": np.round(counts / max(len(labels), 1), 4),
                         "real_share": np.round(np.asarray(TRAIN_COUNTS) / TRAIN_ROWS, 4)})


def plot_class_frequencies(labels: pd.DataFrame, title: str = "class frequencies",
                           path: str | Path | None = None) -> Figure:
    """Bar chart (log scale) of each class's share of images, next to the real train.csv share."""
    t = class_table(labels)
    x = np.arange(NUM_CLASSES)
    fig, ax = new_figure(12, 4.5)
    ax.bar(x - 0.2, t["share"].clip(lower=1e-5), 0.4, label=f"this data ({len(labels)} images)")
    ax.bar(x + 0.2, t["real_share"], 0.4, label=f"real train.csv ({TRAIN_ROWS} images)", alpha=0.7)
    ax.set_yscale("log")
    class_ticks(ax)
    ax.set(xlabel="class", ylabel="share of images with the label (log)", title=title)
    ax.legend()
    return save_figure(fig, path)


def cooccurrence(labels: pd.DataFrame) -> np.ndarray:
    """Return the ``(28, 28)`` co-occurrence counts (diagonal: images with that label)."""
    y = label_matrix(labels).astype(np.int64)
    return y.T @ y


def plot_cooccurrence(labels: pd.DataFrame, normalize: bool = True, title: str = "label co-occurrence",
                      path: str | Path | None = None) -> Figure:
    """Heatmap of co-occurrence; with ``normalize`` row i shows P(label j | label i) (diagonal blanked)."""
    c = cooccurrence(labels).astype(np.float64)
    if normalize:
        diag = np.diag(c).copy()
        c = np.divide(c, diag[:, None], out=np.zeros_like(c), where=diag[:, None] > 0)
    np.fill_diagonal(c, np.nan)     # the diagonal (1 or the count) would swamp the colour scale
    fig, ax = new_figure(9, 8)
    im = ax.imshow(c, cmap="viridis")
    class_ticks(ax, "x")
    class_ticks(ax, "y")
    fig.colorbar(im, ax=ax, shrink=0.8, label="P(column label | row label)" if normalize else "images")
    ax.set(xlabel="co-occurring label", ylabel="label", title=title)
    return save_figure(fig, path)


def plot_labels_per_image(labels: pd.DataFrame, title: str = "labels per image",
                          path: str | Path | None = None) -> Figure:
    """Bar chart of the share of images with 1, 2, ... labels, next to the real train.csv shares."""
    n = label_matrix(labels).sum(axis=1)
    ks = np.arange(1, max(int(n.max()) if len(n) else 1, max(LABELS_PER_IMAGE)) + 1)
    ours = np.array([(n == k).mean() if len(n) else 0.0 for k in ks])
    real = np.array([LABELS_PER_IMAGE.get(int(k), 0) / TRAIN_ROWS for k in ks])
    fig, ax = new_figure(6, 4)
    ax.bar(ks - 0.2, ours, 0.4, label="this data")
    ax.bar(ks + 0.2, real, 0.4, label="real train.csv", alpha=0.7)
    ax.set_xticks(ks)
    ax.set(xlabel="number of labels on the image", ylabel="share of images", title=title)
    ax.legend()
    return save_figure(fig, path)


def example_ids(labels: pd.DataFrame, classes: Sequence[int], per_class: int = 1) -> list[tuple[int, str]]:
    """Pick ``per_class`` images per class, single-label images first (they show the class alone)."""
    out = []
    for k in classes:
        has = labels[[k in ls for ls in labels["labels"]]]
        has = has.assign(_n=[len(ls) for ls in has["labels"]]).sort_values("_n", kind="stable")
        out += [(int(k), i) for i in has["Id"].head(per_class)]
    return out


def plot_class_examples(image_dir: str | Path, labels: pd.DataFrame, classes: Sequence[int] | None = None,
                        per_class: int = 1, size: int = 64, path: str | Path | None = None) -> Figure:
    """One row per example image: the RGBY composite and the four stains, labelled with class names."""
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    picks = example_ids(labels, classes, per_class)
    if not picks:
        raise HPAError(f"{image_dir}: no image carries any of the classes {classes}")
    fig, axes = new_figure(8, 1.6 * len(picks), len(picks), 5)
    targets = dict(zip(labels["Id"], labels["Target"]))
    for r, (k, image_id) in enumerate(picks):
        img = read_kaggle_rgby(image_dir, image_id, size)
        panels = [("RGBY composite", to_rgb(img), None)] + [
            (c, img[..., j], STAIN_CMAPS[j]) for j, c in enumerate(CHANNELS)]
        for c, (name, data, cmap) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(data, cmap=cmap, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
        axes[r, 0].set_ylabel(f"{k} {CLASS_NAMES[k]}\n[{targets[image_id]}]", fontsize=7, rotation=0,
                              ha="right", va="center")
    fig.suptitle("example images per class: composite and the four stains")
    return save_figure(fig, path)


def intensity_stats(image_dir: str | Path, ids: Sequence[str], size: int | None = 64) -> pd.DataFrame:
    """Per image and stain: ``Id, channel, mean, std, p99, zero_share`` of 8-bit pixel values."""
    rows = []
    for image_id in tqdm(ids, desc="intensity", leave=False, disable=len(ids) < 200):
        img = read_kaggle_rgby(image_dir, image_id, size).astype(np.float32)
        for j, c in enumerate(CHANNELS):
            x = img[..., j]
            rows.append({"Id": image_id, "channel": c, "mean": float(x.mean()), "std": float(x.std()),
                         "p99": float(np.percentile(x, 99)), "zero_share": float((x == 0).mean())})
    return pd.DataFrame(rows)


def plot_intensity_stats(stats: pd.DataFrame, title: str = "image intensity per stain",
                         path: str | Path | None = None) -> Figure:
    """Box plots of per-image mean and 99th-percentile intensity for each stain."""
    fig, axes = new_figure(10, 4, 1, 2)
    for ax, col in zip(axes[0], ("mean", "p99")):
        data = [stats.loc[stats["channel"] == c, col].to_numpy() for c in CHANNELS]
        box = ax.boxplot(data, patch_artist=True)
        for patch, color in zip(box["boxes"], ("tab:red", "tab:green", "tab:blue", "gold")):
            patch.set_facecolor(color)
        ax.set_xticks(range(1, 5), CHANNELS)
        ax.set(xlabel="stain", ylabel=f"per-image {col} (0-255)", ylim=(0, 255), title=f"{col} intensity")
    fig.suptitle(f"{title} ({stats['Id'].nunique()} images)")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- two datasets side by side
STAIN_COLORS = ("tab:red", "tab:green", "tab:blue", "goldenrod")


def plot_contact_sheet(image_dir: str | Path, labels: pd.DataFrame, n: int = 32, cols: int = 8,
                       size: int = 96, title: str = "contact sheet", path: str | Path | None = None) -> Figure:
    """A grid of the first ``n`` images' RGBY composites (``to_rgb``) at ``size`` px, each titled by its Target.

    One mosaic in one axes (per-image axes are several times slower to draw); low resolution on
    purpose: a sheet shows what the images look like, it is not a copy of them.
    """
    picks = labels.head(n)
    if picks.empty:
        raise HPAError(f"{image_dir}: no images to show")
    rows, gap, strip = -(-len(picks) // cols), 3, 12
    sheet = np.full((rows * (size + strip + gap), cols * (size + gap), 3), 255, np.uint8)
    fig, ax = new_figure(sheet.shape[1] / 80, sheet.shape[0] / 80 + 0.4)
    for k, (image_id, target) in enumerate(zip(picks["Id"], picks["Target"])):
        y, x = (k // cols) * (size + strip + gap) + strip, (k % cols) * (size + gap)
        sheet[y:y + size, x:x + size] = to_rgb(read_kaggle_rgby(image_dir, image_id, size))
        ax.text(x + size / 2, y - 2, str(target), ha="center", va="bottom", fontsize=6)
    ax.imshow(sheet)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def stain_histograms(image_dir: str | Path, ids: Sequence[str], size: int | None = None) -> np.ndarray:
    """``(4, 256)``: the share of pixels at each 8-bit value, per stain, pooled over ``ids`` (resized to
    ``size`` first when given). One image in memory at a time."""
    counts = np.zeros((len(CHANNELS), 256), np.float64)
    for image_id in tqdm(ids, desc="histograms", leave=False, disable=len(ids) < 200):
        img = read_kaggle_rgby(image_dir, image_id, size)
        for j in range(len(CHANNELS)):
            counts[j] += np.bincount(img[..., j].ravel(), minlength=256)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per stain, the earth mover's (Wasserstein-1) distance between two ``(4, 256)`` histograms, in
    grey levels: how far, on average, a pixel value must move to turn one distribution into the other."""
    return np.abs(np.cumsum(a, axis=1) - np.cumsum(b, axis=1)).sum(axis=1)


def intensity_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Median over images of each stain's per-image ``mean``, ``std``, ``p99`` and ``zero_share``
    (rows in stain order), from :func:`intensity_stats`."""
    return stats.groupby("channel")[["mean", "std", "p99", "zero_share"]].median().reindex(list(CHANNELS))


def plot_stain_histograms(hists: dict[str, np.ndarray], title: str = "pixel intensity per stain",
                          path: str | Path | None = None) -> Figure:
    """One panel per stain: the pooled pixel-value distribution of each named dataset (log share)."""
    fig, axes = new_figure(13, 3.4, 1, len(CHANNELS))
    styles = ("-", "--", ":", "-.")
    for j, (c, color) in enumerate(zip(CHANNELS, STAIN_COLORS)):
        ax = axes[0, j]
        for k, (name, h) in enumerate(hists.items()):
            ax.plot(np.arange(256), np.maximum(h[j], 1e-7), styles[k % 4], color=color if k == 0 else "0.3",
                    label=name, lw=1.2)
        ax.set_yscale("log")
        ax.set(xlabel="pixel value (0-255)", title=c, xlim=(0, 255), ylim=(1e-7, 1))
        if j == 0:
            ax.set_ylabel("share of pixels (log)")
            ax.legend(fontsize=7)
    if len(hists) == 2:
        (na, a), (nb, b) = hists.items()
        d = histogram_distance(a, b)
        title += " - earth mover's distance " + ", ".join(f"{c} {v:.1f}" for c, v in zip(CHANNELS, d))
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_class_shares(datasets: dict[str, pd.DataFrame], title: str = "share of images with each label",
                      path: str | Path | None = None) -> Figure:
    """Bars per class (log share of images) for each named labels frame, next to the real train.csv."""
    x = np.arange(NUM_CLASSES)
    series = {f"{name} ({len(df)} images)": class_table(df)["share"].to_numpy() for name, df in datasets.items()}
    series[f"real train.csv ({TRAIN_ROWS} images)"] = np.asarray(TRAIN_COUNTS) / TRAIN_ROWS
    width = 0.8 / len(series)
    fig, ax = new_figure(12, 4.5)
    for k, (name, share) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.clip(share, 1e-5, None), width, label=name)
    ax.set_yscale("log")
    class_ticks(ax)
    ax.set(xlabel="class", ylabel="share of images (log); absent: a stub at 1e-5", title=title, ylim=(1e-5, 5))
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")
    return save_figure(fig, path)
