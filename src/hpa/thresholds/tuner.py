"""Per-class decision thresholds: the algorithm (pure functions on arrays; no files, no plots).

``ThresholdTuner`` has the scikit-learn shape: parameters in ``__init__``, ``fit(probs, labels)``
returns self and stores ``thresholds_`` (28 floats), ``predict(probs)`` returns a 0/1 matrix.
A class is predicted when ``prob >= threshold``. Strategies live in the ``THRESHOLD_STRATEGIES``
registry (kind "threshold strategy"):

* ``global``: one threshold for all classes, exact over the distinct scores (a 1e-4 grid when
  there are more than 20,000 of them);
* ``per_class``: the exact F1-optimal threshold of each class (scores sorted once, cumulative true
  positives give F1 at every distinct cut, O(n log n)); a class with fewer than ``min_positives``
  positives falls back to ``default``;
* ``proportion``: the threshold at which the predicted positive rate of each class matches a target
  rate (train label frequencies by default), as the 1st and 3rd place teams did;
* ``scaled``: the ``per_class`` thresholds multiplied by ``scale`` (2nd place used 0.7);
* ``fixed``: ``default`` (0.5) for every class, the untuned baseline every tuned strategy must beat.

``auto`` is not a strategy but a choice between them: :func:`choose_strategy` takes each strategy's
nested (honest) estimate and picks the best, ``fixed`` included and winning ties, so tuning is only
applied when it helps on folds it was not tuned on.

Cut placement: when the best cut keeps the scores down to ``s`` and the next lower distinct score is
``s'``, the threshold is the midpoint ``(s + s') / 2`` (``s`` itself when ``s`` is the lowest score),
so small probability shifts on new data do not flip the decision at the boundary. Ties in F1 go to
the higher threshold (fewer positives).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hpa.classes import NUM_CLASSES, train_frequencies
from hpa.config import ThresholdConfig
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.metrics import macro_f1
from hpa.registry import Registry

THRESHOLD_STRATEGIES: Registry = Registry("threshold strategy")
GLOBAL_EXACT_MAX = 20_000
AUTO, FIXED = "auto", "fixed"
LABEL_FREE = ("proportion", "fixed")        # strategies that fit without labels
REFIT_ON_TEST = ("proportion",)             # re-fitted on the probabilities they are applied to


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
def _cut_threshold(desc: np.ndarray, k: int) -> float:
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
    return _cut_threshold(desc, int(ends[best]) + 1), float(f1[best])


def _global_curve(probs: np.ndarray, labels: np.ndarray, candidates: np.ndarray) -> np.ndarray:
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


# ----------------------------------------------------------------------------- strategies
@THRESHOLD_STRATEGIES.register("global")
def _global(probs: np.ndarray, labels: np.ndarray, tuner: "ThresholdTuner") -> np.ndarray:
    """One threshold for all classes: exact over the distinct scores when there are at most
    ``GLOBAL_EXACT_MAX`` of them, else over the scores rounded to 1e-4 (a 10,001-point grid; a shared
    threshold finer than that changes nothing that matters, and it keeps 31k x 28 well under a second).
    """
    desc = np.unique(probs)[::-1]
    if len(desc) > GLOBAL_EXACT_MAX:
        desc = np.unique(np.round(probs, 4))[::-1]
    curve = _global_curve(probs, labels, desc)
    k = int(np.argmax(curve)) + 1       # first maximum: the highest threshold among ties
    return np.full(probs.shape[1], _cut_threshold(desc, k))


@THRESHOLD_STRATEGIES.register("per_class")
def _per_class(probs: np.ndarray, labels: np.ndarray, tuner: "ThresholdTuner") -> np.ndarray:
    """Exact F1-optimal threshold per class; ``default`` below ``min_positives`` positives."""
    out = np.full(probs.shape[1], float(tuner.default))
    # one transpose up front: sorting contiguous columns is faster than strided ones
    probs_t, labels_t = np.ascontiguousarray(probs.T), np.ascontiguousarray(labels.T)
    for j in range(probs.shape[1]):
        if labels_t[j].sum() >= max(1, tuner.min_positives):
            out[j] = best_f1_threshold(probs_t[j], labels_t[j])[0]
    return out


@THRESHOLD_STRATEGIES.register("scaled")
def _scaled(probs: np.ndarray, labels: np.ndarray, tuner: "ThresholdTuner") -> np.ndarray:
    """The ``per_class`` thresholds times ``scale`` (lower thresholds for a shifted test set)."""
    return _per_class(probs, labels, tuner) * float(tuner.scale)


@THRESHOLD_STRATEGIES.register("fixed")
def _fixed(probs: np.ndarray, labels: np.ndarray | None, tuner: "ThresholdTuner") -> np.ndarray:
    """``default`` (0.5) for every class: no tuning, the baseline of ``auto`` (labels unused)."""
    return np.full(probs.shape[1], float(tuner.default))


@THRESHOLD_STRATEGIES.register("proportion")
def _proportion(probs: np.ndarray, labels: np.ndarray | None, tuner: "ThresholdTuner") -> np.ndarray:
    """Per class, the threshold whose predicted positive rate is the target rate (labels unused)."""
    rates = np.asarray(tuner.proportions if tuner.proportions is not None else train_frequencies())
    n = probs.shape[0]
    out = np.empty(probs.shape[1])
    for j in range(probs.shape[1]):
        desc = np.sort(probs[:, j])[::-1]
        out[j] = _cut_threshold(desc, int(round(rates[j] * n)))
    return out


# ----------------------------------------------------------------------------- tuner
class ThresholdTuner:
    """Tune per-class thresholds (scikit-learn shape: ``fit`` returns self, learned ``thresholds_``).

    ``proportions``: 28 target positive rates for the ``proportion`` strategy (None = train
    frequencies). ``fit(probs, labels)`` takes ``(N, 28)`` probabilities and 0/1 labels (labels may
    be None for ``proportion``); ``predict(probs)`` returns ``(N, 28)`` uint8 predictions.
    """

    def __init__(self, strategy: str = "per_class", min_positives: int = 5, default: float = 0.5,
                 scale: float = 0.7, proportions: Sequence[float] | None = None):
        self.strategy = strategy
        self.min_positives = min_positives
        self.default = default
        self.scale = scale
        self.proportions = proportions

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters (for ``thresholds.json`` and cloning)."""
        props = None if self.proportions is None else [float(x) for x in self.proportions]
        return {"strategy": self.strategy, "min_positives": int(self.min_positives),
                "default": float(self.default), "scale": float(self.scale), "proportions": props}

    def fit(self, probs: np.ndarray, labels: np.ndarray | None = None) -> "ThresholdTuner":
        """Learn ``thresholds_`` (float64 array of 28) from probabilities and labels; return self."""
        fn = THRESHOLD_STRATEGIES.get(self.strategy)
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2:
            raise HPAError(f"thresholds: expected an (N, C) probability matrix, got shape {probs.shape}")
        if self.proportions is not None and len(self.proportions) != probs.shape[1]:
            raise HPAError(f"thresholds.proportions: {len(self.proportions)} rates for {probs.shape[1]} classes")
        if labels is None and self.strategy not in LABEL_FREE:
            raise HPAError(f"thresholds: strategy '{self.strategy}' needs labels")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.uint8)
            if labels.shape != probs.shape:
                raise HPAError(f"thresholds: labels {labels.shape} do not match probabilities {probs.shape}")
        self.thresholds_ = np.asarray(fn(probs, labels, self), dtype=np.float64)
        return self

    def predict(self, probs: np.ndarray, ensure_one: bool = False) -> np.ndarray:
        """Return ``(N, C)`` uint8 predictions with the learned thresholds."""
        if not hasattr(self, "thresholds_"):
            raise HPAError("thresholds: predict() called before fit()")
        return apply_thresholds(probs, self.thresholds_, ensure_one)


def read_proportions(path: str | Path) -> list[float]:
    """Read a ``class,rate`` CSV (28 rows, class 0-27 once each, rate in [0, 1]) into 28 floats."""
    df = read_csv(path, ["class", "rate"])
    rates: dict[int, float] = {}
    for i, (c, r) in enumerate(zip(df["class"], df["rate"])):
        try:
            c, r = int(c), float(r)
        except ValueError:
            raise HPAError(f"{path}: row {i + 2}: class and rate must be numbers") from None
        if not 0 <= c < NUM_CLASSES or not 0.0 <= r <= 1.0 or c in rates:
            raise HPAError(f"{path}: row {i + 2}: need a new class 0-{NUM_CLASSES - 1} and a rate in [0, 1]")
        rates[c] = r
    if len(rates) != NUM_CLASSES:
        missing = sorted(set(range(NUM_CLASSES)) - set(rates))
        raise HPAError(f"{path}: no rate for class(es) {', '.join(map(str, missing))}")
    return [rates[c] for c in range(NUM_CLASSES)]


def check_strategy(name: str) -> str:
    """Return ``name`` when it is ``auto`` or a registered strategy; else HPAError listing them all."""
    if name != AUTO and name not in THRESHOLD_STRATEGIES:
        valid = ", ".join(sorted([AUTO, *THRESHOLD_STRATEGIES.names()]))
        raise HPAError(f"unknown threshold strategy '{name}' (valid: {valid})")
    return name


def tuner_from_config(cfg: ThresholdConfig, strategy: str | None = None) -> ThresholdTuner:
    """Build a :class:`ThresholdTuner` from a ``thresholds:`` config section (``strategy`` overrides
    ``cfg.strategy``; ``auto`` is a choice between tuners, see :func:`tuners_from_config`)."""
    strategy = strategy or cfg.strategy
    if strategy == AUTO:
        raise HPAError("thresholds.strategy 'auto' chooses between strategies: build them with "
                       "tuners_from_config and pick with choose_strategy")
    THRESHOLD_STRATEGIES.get(strategy)        # fail early, listing the valid names
    props = read_proportions(cfg.proportions) if cfg.proportions else None
    return ThresholdTuner(strategy, cfg.min_positives, cfg.default, cfg.scale, props)


def tuners_from_config(cfg: ThresholdConfig) -> dict[str, ThresholdTuner]:
    """One :class:`ThresholdTuner` per registered strategy (``fixed`` first), sharing ``cfg``'s
    parameters: what ``hpa thresholds`` evaluates whatever ``cfg.strategy`` asks for."""
    check_strategy(cfg.strategy)
    props = read_proportions(cfg.proportions) if cfg.proportions else None
    names = [FIXED] + [n for n in THRESHOLD_STRATEGIES.names() if n != FIXED]
    return {n: ThresholdTuner(n, cfg.min_positives, cfg.default, cfg.scale, props) for n in names}


def nested_estimate(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                    tuner: ThresholdTuner) -> dict[str, Any]:
    """Honest estimate: tune on the other folds, score each held-out fold with those thresholds.

    Returns ``{"per_fold": [macro F1 of each fold, ascending fold order], "mean": float}``; the gap
    between this mean and the in-sample tuned F1 is how much of the gain is overfitting. A strategy
    re-fitted on the data it is applied to (``proportion``, as :func:`thresholds_for_test` does on the
    test set) is fitted on the held-out fold's probabilities, never its labels. Fewer than two folds:
    no estimate (``per_fold`` empty, ``mean`` NaN).
    """
    folds = np.asarray(folds)
    per_fold = []
    if len(np.unique(folds)) < 2:
        return {"per_fold": per_fold, "mean": float("nan")}
    for f in np.unique(folds):
        held = folds == f
        if tuner.strategy in REFIT_ON_TEST:
            t = copy.copy(tuner).fit(probs[held])
        else:
            t = copy.copy(tuner).fit(probs[~held], labels[~held])
        per_fold.append(macro_f1(labels[held], t.predict(probs[held])))
    return {"per_fold": per_fold, "mean": float(np.mean(per_fold))}


def choose_strategy(nested: dict[str, float], requested: str = AUTO, default: float = 0.5) -> dict[str, Any]:
    """Pick the thresholds to apply from each strategy's nested estimate (``{strategy: mean F1}``,
    ``fixed`` among them).

    ``auto``: the highest estimate; ``fixed`` wins ties and stands when no estimate exists (NaN, one
    fold). A named strategy is applied as asked, with a ``warning`` when its estimate is below
    ``fixed``'s. Returns ``{"requested", "strategy" (chosen), "reason" (one line), "warning" (or None),
    "nested_f1" (the estimates)}``.
    """
    check_strategy(requested)
    base = nested.get(FIXED, float("nan"))
    fixed = f"fixed {default:g}"

    def score(name: str) -> float:
        v = nested.get(name, float("nan"))
        return -np.inf if v is None or np.isnan(v) else float(v)

    out: dict[str, Any] = {"requested": requested, "nested_f1": {k: float(v) for k, v in nested.items()},
                           "warning": None}
    if requested != AUTO:
        out["strategy"] = requested
        if requested == FIXED:
            out["reason"] = f"{fixed} (asked for by name): nested {base:.4f}"
        elif score(requested) < score(FIXED):
            out["reason"] = (f"{requested} (asked for by name): nested {score(requested):.4f} < "
                             f"{fixed} {base:.4f}")
            out["warning"] = (f"{requested}'s nested estimate {score(requested):.4f} is below {fixed}'s "
                              f"{base:.4f}: tuned thresholds that lose on held-out folds; applied because "
                              f"asked for by name ('auto' would not)")
        else:
            out["reason"] = (f"{requested} (asked for by name): nested {nested.get(requested, float('nan')):.4f}"
                             f" vs {fixed} {base:.4f}")
        return out
    order = [FIXED] + [n for n in nested if n != FIXED]
    best = max(order, key=score)            # first maximum: fixed wins ties
    if np.isneginf(score(best)):
        out["strategy"], out["reason"] = FIXED, f"auto: no nested estimate (fewer than 2 folds) -> {fixed}"
    elif best == FIXED:
        runner = max((n for n in order if n != FIXED), key=score, default=None)
        vs = f" (best tuned: {runner} {score(runner):.4f})" if runner and not np.isneginf(score(runner)) else ""
        out["strategy"] = FIXED
        out["reason"] = f"auto: no strategy beats {fixed} nested {base:.4f}{vs} -> fixed"
    else:
        out["strategy"] = best
        out["reason"] = f"auto: {best} nested {score(best):.4f} > {fixed} {base:.4f} -> {best}"
    return out


def grid_search_thresholds(probs: np.ndarray, labels: np.ndarray, n: int = 100) -> np.ndarray:
    """Baseline for ``hpa bench``: per class, the best of ``n`` evenly spaced thresholds in (0, 1)."""
    grid = np.linspace(0, 1, n + 2)[1:-1]
    return np.array([grid[int(np.argmax(_global_curve(probs[:, [j]], labels[:, [j]], grid)))]
                     for j in range(probs.shape[1])])


def bench_thresholds(n_rows: int = 31072, seed: int = 0) -> dict[str, float]:
    """Time exact per-class tuning against a 100-point grid on a random OOF; return times and F1s."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_rows, NUM_CLASSES)) < np.asarray(train_frequencies())).astype(np.uint8)
    probs = np.clip(0.35 * labels + rng.beta(1, 4, labels.shape), 0, 1)
    t0 = time.perf_counter()
    exact = ThresholdTuner("per_class", min_positives=1).fit(probs, labels).thresholds_
    t1 = time.perf_counter()
    grid = grid_search_thresholds(probs, labels)
    t2 = time.perf_counter()
    return {"exact_s": t1 - t0, "grid_s": t2 - t1,
            "exact_f1": macro_f1(labels, apply_thresholds(probs, exact)),
            "grid_f1": macro_f1(labels, apply_thresholds(probs, grid))}


def thresholds_for_test(thr: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    """Thresholds to apply to test probabilities from a thresholds record (``thresholds.json``);
    ``proportion`` is re-fitted on the test set itself (target rates are about the test distribution,
    as the 1st and 3rd place teams applied them)."""
    if thr.get("strategy") in REFIT_ON_TEST:
        props = (thr.get("params") or {}).get("proportions")
        return ThresholdTuner("proportion", proportions=props).fit(probs).thresholds_
    return np.asarray(thr["thresholds"], dtype=np.float64)
