"""Plots and tables the notebooks and run reports show (matplotlib Figures, Agg-safe).

Every ``plot_*`` function takes DataFrames/arrays (or paths), returns a matplotlib ``Figure`` and,
when given ``path``, also saves it as a PNG atomically. Notebooks stay thin: they pick paths and call
these functions. Modules: ``eda`` (the labels and images), ``cv`` (OOF F1, folds, thresholds),
``synthetic`` (generated images), ``ensemble`` (several runs, submissions), ``run_report``
(``runs/<exp>/report.md``, ``hpa report``).
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.io import atomic_path

CLASS_LABELS: tuple[str, ...] = tuple(f"{i} {n}" for i, n in enumerate(CLASS_NAMES))


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    """Return ``(fig, axes)`` from a pyplot-free ``Figure`` (no global state, closes itself when dropped).

    Notebooks display a returned Figure through IPython's rich repr, so nothing needs ``plt.show``.
    """
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes if (nrows, ncols) != (1, 1) else axes[0, 0]


def class_ticks(ax, axis: str = "x", classes=None, fontsize: int = 7) -> None:
    """Label ``axis`` with ``"<index> <class name>"`` for ``classes`` (default all 28), readable."""
    classes = list(range(NUM_CLASSES)) if classes is None else list(classes)
    labels = [CLASS_LABELS[c] for c in classes]
    if axis == "x":
        ax.set_xticks(range(len(classes)), labels, rotation=75, ha="right", fontsize=fontsize)
    else:
        ax.set_yticks(range(len(classes)), labels, fontsize=fontsize)


def save_figure(fig: Figure, path: str | Path | None, dpi: int = 90, tight: bool = True) -> Figure:
    """Lay ``fig`` out (``tight``) and save it as a PNG at ``path`` atomically (not when ``path`` is
    None); return ``fig``. Panel grids pass ``tight=False``: they set their own spacing, and
    tight_layout over 28 panels costs seconds on a busy CPU."""
    if tight:
        # keep a band of about 0.3 inch for the suptitle, whatever the figure's height
        top = 1 - 0.3 / fig.get_figheight() if fig._suptitle is not None else 1
        fig.tight_layout(rect=(0, 0, 1, top))
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    return fig
