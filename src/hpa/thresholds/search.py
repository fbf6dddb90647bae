"""Exact threshold search on arrays: the cuts every strategy places (no files, no plots).

Cut placement: when the best cut keeps the scores down to ``s`` and the next lower distinct score is
``s'``, the threshold is the midpoint ``(s + s') / 2`` (``s`` itself when ``s`` is the lowest score),
so small probability shifts on new data do not flip the decision at the boundary. Ties in F1 go to
the higher threshold (fewer positives). A class is predicted when ``prob >= threshold``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


# ----------------------------------------------------------------------------- scoring
def apply_thresholds(probs: np.ndarray, thresholds: Sequence[float], ensure_one: bool = False) -> np.ndarray:
    """Return the ``(N, C)`` uint8 predictions ``probs >= thresholds``.

    With ``ensure_one`` a row where nothing passes gets its argmax class (every HPA image has a label).
    """
    probs = np.asarray(probs, dtype=np.float64)
    pred = (probs >= np.asarray(thresholds, dtype=np.float64)[None, :]).astype(np.uint8)
    if ensure_one and len(pred):
        empty = pred.sum(1) == 0
        pred[np.flatnonzero(empty), probs[empty].argmax(1)] = 1
    return pred


# ----------------------------------------------------------------------------- exact search
def cut_threshold(desc: np.ndarray, k: int) -> float:
    """Threshold that keeps the top ``k`` of descending scores: midpoint to the next lower score."""
    if k <= 0:
        # nothing kept: halfway from the top score to 1 (just above 1 when the top score is 1)
        return float((desc[0] + 1.0) / 2) if desc[0] < 1.0 else float(np.nextafter(1.0, 2.0))
    if k >= len(desc):
        return float(desc[-1])
    hi, lo = float(desc[k - 1]), float(desc[k])
    mid = (hi + lo) / 2
    return mid if lo < mid <= hi else hi   # adjacent floats: the midpoint may round onto lo


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Return ``(threshold, f1)`` maximising F1 of ``scores >= threshold`` for one class, exactly.

    Sort once (descending); the cumulative positive count at the end of each run of equal scores is
    the true-positive count of that cut, so F1 = 2 TP / (positives + predicted) at every distinct cut.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    pos = int(y.sum())
    if pos == 0 or len(scores) == 0:
        return 0.5, 0.0
    # quicksort (4x faster than stable here): the order inside a run of equal scores does not matter,
    # as cuts are only taken at run ends, where the cumulative count includes the whole run
    order = np.argsort(-scores)
    desc, tp = scores[order], np.cumsum(y[order])
    # last index of each run of equal scores: a cut can only fall between distinct values
    ends = np.flatnonzero(np.r_[desc[1:] != desc[:-1], True])
    f1 = 2 * tp[ends] / (pos + ends + 1)
    best = int(np.argmax(f1))           # first maximum = highest threshold among ties
    return cut_threshold(desc, int(ends[best]) + 1), float(f1[best])


def global_curve(probs: np.ndarray, labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Macro F1 of ``probs >= t`` for each candidate ``t`` (vectorised with one sort per class)."""
    n, c = probs.shape
    total = np.zeros(len(candidates))
    for j in range(c):
        asc = np.argsort(probs[:, j], kind="stable")
        s, y = probs[asc, j], labels[asc, j].astype(np.int64)
        # positives among the scores >= t = total positives - positives below t
        below = np.searchsorted(s, candidates, side="left")
        pos_below = np.r_[0, np.cumsum(y)][below]
        tp = y.sum() - pos_below
        denom = y.sum() + (n - below)
        total += np.divide(2.0 * tp, denom, out=np.zeros(len(candidates)), where=denom > 0)
    return total / c


def best_global_threshold(probs: np.ndarray, labels: np.ndarray, exact_max: int = 20_000) -> float:
    """One threshold for all classes maximising macro F1: exact over the distinct scores when there are
    at most ``exact_max`` of them, else over the scores rounded to 1e-4 (a 10,001-point grid; a shared
    threshold finer than that changes nothing that matters, and it keeps 31k x 28 well under a second)."""
    desc = np.unique(probs)[::-1]
    if len(desc) > exact_max:
        desc = np.unique(np.round(probs, 4))[::-1]
    curve = global_curve(probs, labels, desc)
    return cut_threshold(desc, int(np.argmax(curve)) + 1)    # first maximum: the highest among ties


def rate_limits(prior: np.ndarray, n: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """``(floor, ceiling)``: the fewest and most of ``n`` rows each class may be predicted for, from its
    prior rate ``p``: at least ``ceil(n p / ratio)``, at most ``max(floor, floor(n p ratio))``."""
    expected = np.asarray(prior, dtype=np.float64) * n
    lo = np.ceil(expected / ratio - 1e-9).astype(int)
    hi = np.maximum(lo, np.floor(expected * ratio + 1e-9).astype(int))
    return lo, np.minimum(hi, n)


def bound_rates(probs: np.ndarray, thresholds: np.ndarray, prior: np.ndarray, ratio: float) -> np.ndarray:
    """Move each class's threshold just enough that its predicted positive rate on ``probs`` lies within
    ``[prior / ratio, prior * ratio]`` (see :func:`rate_limits`); ``ratio`` 0 returns them unchanged.

    The F1-optimal cut of a class the model barely separates is often "predict it for every image"
    (F1 2p / (1 + p) beats any cut that misses positives), which floods a test set with labels; the
    ceiling forbids it, and the floor keeps a class from never being predicted.
    """
    out = np.array(thresholds, dtype=np.float64)
    if ratio <= 0 or len(probs) == 0:
        return out
    lo, hi = rate_limits(prior, len(probs), ratio)
    for j in range(probs.shape[1]):
        count = int((probs[:, j] >= out[j]).sum())
        if lo[j] <= count <= hi[j]:
            continue
        desc = np.sort(probs[:, j])[::-1]
        out[j] = cut_threshold(desc, int(hi[j] if count > hi[j] else lo[j]))
    return out
