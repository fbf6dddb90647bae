"""Threshold strategies: the ``THRESHOLD_STRATEGIES`` registry (kind "threshold strategy").

A strategy is a class registered by name. Its settings are the keyword arguments of its ``__init__``
(config ``thresholds.params.<name>``, checked against that signature); what it needs and can do is
declared on the class, never in a list elsewhere:

* ``needs_labels``: fitting uses the labels (``False``: it can be fitted on unlabelled probabilities);
* ``refit_on_test``: re-fitted on the probabilities it is applied to (the test set, a held-out fold),
  from their scores alone; its nested estimate does the same;
* ``bounded``: the tuner keeps each class's predicted positive rate within ``thresholds.rate_ratio``
  of the training prior (:func:`hpa.thresholds.search.bound_rates`); only the untuned reference
  ``fixed`` is exempt;
* ``complexity``: how much it adapts to the labels it is tuned on (0: nothing, 1: one value or the
  class rates, 28: one value per class); ``auto`` prefers the lowest among candidates whose nested
  estimate is within the fold-to-fold spread of the best.

``fit(probs, labels, tuner)`` returns 28 thresholds; ``tuner`` gives ``default`` (0.5) and ``prior_``
(the training label rates). A class is predicted when ``prob >= threshold``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hpa.classes import NUM_CLASSES
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.registry import Registry
from hpa.thresholds.search import best_f1_threshold, best_global_threshold, cut_threshold

THRESHOLD_STRATEGIES: Registry = Registry("threshold strategy")


class ThresholdStrategy:
    """Base of every strategy: the capability defaults (a labelled, bounded, per-class tuner)."""
    needs_labels = True
    refit_on_test = False
    bounded = True
    complexity = 28

    def fit(self, probs: np.ndarray, labels: np.ndarray | None, tuner: Any) -> np.ndarray:
        """Return ``(C,)`` thresholds for ``probs`` (and ``labels`` when ``needs_labels``)."""
        raise NotImplementedError


@THRESHOLD_STRATEGIES.register("fixed")
class Fixed(ThresholdStrategy):
    """``thresholds.default`` (0.5) for every class: no tuning, the reference every tuned strategy must
    beat (never moved by the rate bounds, so its figure is the plain OOF F1 at 0.5)."""
    needs_labels, bounded, complexity = False, False, 0

    def fit(self, probs, labels, tuner):
        return np.full(probs.shape[1], float(tuner.default))


@THRESHOLD_STRATEGIES.register("global")
class Global(ThresholdStrategy):
    """One threshold for all classes, exact (:func:`~hpa.thresholds.search.best_global_threshold`)."""
    complexity = 1

    def fit(self, probs, labels, tuner):
        return np.full(probs.shape[1], best_global_threshold(probs, labels))


@THRESHOLD_STRATEGIES.register("proportion")
class Proportion(ThresholdStrategy):
    """Per class, the threshold whose predicted positive rate is the target rate, re-fitted on the
    probabilities it is applied to (as the 1st and 3rd place teams did). ``rates``: a ``class,rate``
    CSV (28 rows); empty = the training prior."""
    needs_labels, refit_on_test, complexity = False, True, 1

    def __init__(self, rates: str = ""):
        self.rates = rates
        self.target = read_proportions(rates) if rates else None     # a bad file fails when built

    def fit(self, probs, labels, tuner):
        target = np.asarray(tuner.prior_ if self.target is None else self.target)
        out = np.empty(probs.shape[1])
        for j in range(probs.shape[1]):
            out[j] = cut_threshold(np.sort(probs[:, j])[::-1], int(round(target[j] * len(probs))))
        return out


@THRESHOLD_STRATEGIES.register("per_class")
class PerClass(ThresholdStrategy):
    """The exact F1-optimal threshold of each class, shrunk toward the ``global`` threshold by the
    class's positives ``n``: ``(n t_class + shrink t_global) / (n + shrink)``; below ``min_positives``
    positives the global threshold itself (a cut tuned on three positives is noise)."""

    def __init__(self, min_positives: int = 5, shrink: float = 10.0):
        self.min_positives, self.shrink = int(min_positives), float(shrink)
        if self.min_positives < 0 or self.shrink < 0:
            raise HPAError("thresholds per_class: min_positives and shrink must be >= 0")

    def fit(self, probs, labels, tuner):
        t_global = best_global_threshold(probs, labels)
        out = np.full(probs.shape[1], t_global)
        # one transpose up front: sorting contiguous columns is faster than strided ones
        probs_t, labels_t = np.ascontiguousarray(probs.T), np.ascontiguousarray(labels.T)
        for j in range(probs.shape[1]):
            n = int(labels_t[j].sum())
            if n >= max(1, self.min_positives):
                t = best_f1_threshold(probs_t[j], labels_t[j])[0]
                out[j] = (n * t + self.shrink * t_global) / (n + self.shrink)
        return out


@THRESHOLD_STRATEGIES.register("scaled")
class Scaled(PerClass):
    """The ``per_class`` thresholds times ``scale`` (2nd place used 0.7: lower thresholds for a test set
    whose probabilities run lower than the OOF's)."""
    complexity = 29

    def __init__(self, scale: float = 0.7, min_positives: int = 5, shrink: float = 10.0):
        super().__init__(min_positives, shrink)
        self.scale = float(scale)
        if self.scale <= 0:
            raise HPAError(f"thresholds scaled: scale must be > 0, got {scale}")

    def fit(self, probs, labels, tuner):
        return super().fit(probs, labels, tuner) * self.scale


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
