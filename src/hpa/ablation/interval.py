"""Intervals of the ablation: each arm's macro F1 and rare-group F1 as a mean over seeds with a 95%
bootstrap interval over images *and* seeds, and its gain over a reference arm (``oversample``), paired.

A cell (arm, fraction, seed) leaves per-image probabilities on two image sets: the held-out fold's
images (``heldout``) and the demo test images (``test``). One bootstrap draw resamples the images of a
set (multinomial weights, the same draw for every cell, so arms are compared on the same images) and
the seeds (with replacement, the same seed indices for both arms of a gain: a seed fixes the
``data.fraction`` subset and the initial weights, so it pairs the arms); the statistic is the mean
over the drawn seeds of the weighted F1. Its 2.5 and 97.5 percentiles are the interval. With a single
fold scored per cell, the images of that fold and the test images are the whole sample: the interval
covers which images and which seeds, not which fold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpa.reports import save_figure

SETS = ("heldout", "test")


@dataclass
class CellPredictions:
    """Binary predictions (threshold 0.5) of one cell on the images of one set, in ``truth`` order."""
    arm: str
    fraction: float
    seed: int
    split: str
    pred: np.ndarray            # (N, 28) bool


def _counts(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, p = truth.astype(bool), pred.astype(bool)
    return (t & p).astype(np.float32), (~t & p).astype(np.float32), (t & ~p).astype(np.float32)


def weighted_f1(truth: np.ndarray, pred: np.ndarray, weights: np.ndarray, classes: list[int] | None = None) -> np.ndarray:
    """Macro F1 (over ``classes``, default all; 0 where a class is absent from both, as sklearn's
    ``zero_division=0``) of ``pred`` against ``truth`` under each row of image ``weights`` ``(B, N)``;
    returns ``(B,)``. Weights 1 everywhere give the plain macro F1."""
    tp, fp, fn = (weights @ m for m in _counts(truth, pred))
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return f1[:, classes].mean(1) if classes is not None else f1.mean(1)


def image_weights(n: int, draws: int, seed: int) -> np.ndarray:
    """``(draws, n)`` bootstrap weights: how often each image is drawn (n draws with replacement)."""
    rng = np.random.default_rng([seed, 7])
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws).astype(np.float32)


def seed_draws(k: int, draws: int, seed: int) -> np.ndarray:
    """``(draws, k)`` seed indices drawn with replacement."""
    return np.random.default_rng([seed, 11]).integers(k, size=(draws, k))


def interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap ``values``."""
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def arm_statistics(truth: np.ndarray, preds: list[np.ndarray], ref: list[np.ndarray] | None,
                   classes: list[int] | None, draws: int = 1000, seed: int = 0) -> dict:
    """Mean over seeds of the macro F1 of ``preds`` (one ``(N, 28)`` matrix per seed), its 95% interval
    and, given the reference arm's ``ref`` (same seeds, same order), the paired gain and its interval."""
    w = image_weights(len(truth), draws, seed)
    ones = np.ones((1, len(truth)), np.float32)
    per_seed = np.stack([weighted_f1(truth, p, w, classes) for p in preds])          # (k, B)
    idx = seed_draws(len(preds), draws, seed)
    boot = np.take_along_axis(per_seed, idx.T, 0).mean(0)
    point = float(np.mean([weighted_f1(truth, p, ones, classes)[0] for p in preds]))
    out = {"n_seeds": len(preds), "mean": point, "lo": interval(boot)[0], "hi": interval(boot)[1]}
    if ref is not None:
        ref_seed = np.stack([weighted_f1(truth, p, w, classes) for p in ref])
        gain = np.take_along_axis(per_seed - ref_seed, idx.T, 0).mean(0)
        ref_point = float(np.mean([weighted_f1(truth, p, ones, classes)[0] for p in ref]))
        out |= {"gain": point - ref_point, "gain_lo": interval(gain)[0], "gain_hi": interval(gain)[1]}
    return out


def study_table(cells: list[CellPredictions], truths: dict[str, np.ndarray], rare: list[int],
                reference: str = "oversample", draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (arm, fraction, set, group): mean, 95% interval and the gain over ``reference``
    (paired by seed; only the seeds both arms have). ``group`` is ``macro`` (all 28 classes) or
    ``rare`` (the mean F1 of the ``rare`` classes)."""
    by = {}
    for c in cells:
        by.setdefault((c.arm, c.fraction, c.split), {})[c.seed] = c.pred
    rows = []
    for (arm, fraction, split), seeds in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        ref = by.get((reference, fraction, split), {})
        common = sorted(set(seeds) & set(ref)) if arm != reference and ref else sorted(seeds)
        for group, classes in (("macro", None), ("rare", rare)):
            stats = arm_statistics(truths[split], [seeds[s] for s in common],
                                   [ref[s] for s in common] if arm != reference and ref else None,
                                   classes, draws, seed)
            rows.append({"arm": arm, "fraction": fraction, "set": split, "group": group} | stats)
    cols = ["arm", "fraction", "set", "group", "n_seeds", "mean", "lo", "hi", "gain", "gain_lo", "gain_hi"]
    return pd.DataFrame(rows).reindex(columns=cols)


def markdown(table: pd.DataFrame, reference: str, arms: list[str]) -> str:
    """The study's table: per fraction and arm, macro and rare-group F1 (held-out fold and test) as
    ``mean [lo, hi]``, and the gain over ``reference`` with its interval."""
    def cell(r):
        if r is None:
            return "—"
        s = f"{r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
        if not pd.isna(r.get("gain", np.nan)):
            s += f"<br>Δ {r['gain']:+.3f} [{r['gain_lo']:+.3f}, {r['gain_hi']:+.3f}]"
        return s

    look = {(r["arm"], r["fraction"], r["set"], r["group"]): r for r in table.to_dict("records")}
    head = ["fraction", "arm", "seeds", "macro F1, held-out fold", "macro F1, demo test",
            "rare-group F1, held-out fold", "rare-group F1, demo test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in sorted(table["fraction"].unique()):
        for a in arms:
            if (a, f, "test", "macro") not in look:
                continue
            n = look[(a, f, "test", "macro")]["n_seeds"]
            vals = [cell(look.get((a, f, s, g))) for g in ("macro", "rare") for s in SETS]
            lines.append(f"| {f:g} | {a} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + f"\n\nMean over seeds [95% bootstrap interval over images and seeds]; Δ = gain over `{reference}` (paired by seed and image).\n"


def plot_gain(table: pd.DataFrame, path, reference: str, title: str):
    """The study's figure: gain over ``reference`` in macro F1 (held-out fold, demo test) against the
    real-data fraction, one line per arm, with its 95% interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = table[(table["group"] == "macro") & table["gain"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    arms = list(dict.fromkeys(d["arm"]))
    for ax, split in zip(axes, SETS):
        for j, a in enumerate(arms):
            r = d[(d["arm"] == a) & (d["set"] == split)].sort_values("fraction")
            x = np.log10(r["fraction"].to_numpy()) + (j - len(arms) / 2) * 0.012
            ax.errorbar(x, r["gain"], yerr=[r["gain"] - r["gain_lo"], r["gain_hi"] - r["gain"]],
                        marker="o", capsize=3, label=a)
        fr = sorted(d["fraction"].unique())
        ax.set_xticks(np.log10(fr), [f"{f:g}" for f in fr])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("fraction of the real training images")
        ax.set_title({"heldout": "held-out fold", "test": "demo test"}[split])
    axes[0].set_ylabel(f"macro F1 gain over {reference} (95% CI)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
