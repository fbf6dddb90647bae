"""Training-curve and per-class F1 figures of a run (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from hpa.classes import CLASS_NAMES  # noqa: E402
from hpa.reports import save_figure  # noqa: E402


def plot_curves(run_dir: Path, folds: list[int]) -> Path:
    """Write ``curves.png``: train/val loss and val macro F1 per epoch for each fold; return its path."""
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for k in folds:
        h = pd.read_csv(run_dir / f"fold{k}" / "history.csv")
        line, = ax_loss.plot(h["epoch"], h["train_loss"], label=f"fold {k} train")
        ax_loss.plot(h["epoch"], h["val_loss"], "--", color=line.get_color(), label=f"fold {k} val")
        ax_f1.plot(h["epoch"], h["val_f1"], marker="o", color=line.get_color(), label=f"fold {k}")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="loss")
    ax_f1.set(title="validation macro F1 (threshold 0.5)", xlabel="epoch", ylabel="macro F1")
    ax_loss.legend(fontsize=7)
    ax_f1.legend(fontsize=7)
    fig.suptitle(f"training curves: {run_dir.name}")
    path = run_dir / "curves.png"
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def plot_per_class(path: Path, metrics: dict, name: str) -> Path:
    """Write a bar chart of OOF F1 per class (class names on the axis); return its path."""
    values = [metrics["per_class_f1"][c] for c in CLASS_NAMES]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(values)), values)
    ax.axhline(metrics["oof_macro_f1"], color="k", ls="--", label=f"macro {metrics['oof_macro_f1']:.3f}")
    ax.set_xticks(range(len(values)), [f"{i} {c}" for i, c in enumerate(CLASS_NAMES)], rotation=75,
                  fontsize=7)
    ax.set(title=f"{name}: OOF F1 per class (threshold 0.5)", xlabel="class", ylabel="F1", ylim=(0, 1))
    ax.legend()
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return Path(path)
