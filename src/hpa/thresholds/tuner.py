"""Per-class decision thresholds: the tuner (pure functions on arrays; no files, no plots).

``ThresholdTuner`` has the scikit-learn shape: parameters in ``__init__``, ``fit(probs, labels)``
returns self and stores ``thresholds_`` (28 floats) and ``prior_`` (the training label rates),
``predict(probs)`` returns a 0/1 matrix. The strategy (``hpa.thresholds.strategies``) places the
cuts; the tuner then applies the rule every strategy but the untuned ``fixed`` obeys: each class's
predicted positive rate on the data it was tuned on stays within ``[prior / rate_ratio,
prior * rate_ratio]`` (:func:`~hpa.thresholds.search.bound_rates`), so no tuned threshold predicts a
class for every image.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from hpa.classes import NUM_CLASSES, train_frequencies
from hpa.errors import HPAError
from hpa.metrics import macro_f1
from hpa.thresholds.search import apply_thresholds, bound_rates, global_curve
from hpa.thresholds.strategies import THRESHOLD_STRATEGIES, ThresholdStrategy

AUTO, FIXED = "auto", "fixed"
RATE_RATIO = 2.0        # default thresholds.rate_ratio: a class predicted at most 2x (at least 1/2x) its prior


class ThresholdTuner:
    """Tune per-class thresholds with one strategy (scikit-learn shape; learned ``thresholds_``).

    ``params``: the strategy's own settings (checked against its ``__init__``); ``default``: the
    threshold of ``fixed`` (0.5); ``rate_ratio``: the rate bound (0 = off); ``prior``: 28 training
    label rates (None: the labels given to ``fit``, else the competition's train frequencies).
    """

    def __init__(self, strategy: str = "per_class", params: dict[str, Any] | None = None,
                 default: float = 0.5, rate_ratio: float = RATE_RATIO, prior: Sequence[float] | None = None):
        self.strategy = strategy
        self.params = dict(params or {})
        self.default = default
        self.rate_ratio = rate_ratio
        self.prior = prior

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters (plain values, for ``thresholds.json`` and cloning)."""
        prior = None if self.prior is None else [float(x) for x in self.prior]
        return {"strategy": self.strategy, "params": dict(self.params), "default": float(self.default),
                "rate_ratio": float(self.rate_ratio), "prior": prior}

    def clone(self, **changes: Any) -> "ThresholdTuner":
        """A new unfitted tuner with the same parameters (``changes`` replace some)."""
        return ThresholdTuner(**{**self.get_params(), **changes})

    def build(self) -> ThresholdStrategy:
        """The strategy object, its params checked (HPAError naming ``thresholds.params.<name>.<key>``)."""
        cls = THRESHOLD_STRATEGIES.get(self.strategy)
        return cls(**THRESHOLD_STRATEGIES.check_params(self.strategy, self.params,
                                                       f"thresholds.params.{self.strategy}"))

    def fit(self, probs: np.ndarray, labels: np.ndarray | None = None) -> "ThresholdTuner":
        """Learn ``thresholds_`` (float64 array of 28) from probabilities (and labels); return self."""
        strategy = self.build()
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2:
            raise HPAError(f"thresholds: expected an (N, C) probability matrix, got shape {probs.shape}")
        if labels is None and strategy.needs_labels:
            raise HPAError(f"thresholds: strategy '{self.strategy}' needs labels")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.uint8)
            if labels.shape != probs.shape:
                raise HPAError(f"thresholds: labels {labels.shape} do not match probabilities {probs.shape}")
        if self.prior is not None:
            prior = np.asarray(self.prior, dtype=np.float64)
        elif labels is not None:
            prior = labels.mean(0) if len(labels) else np.zeros(probs.shape[1])
        else:
            prior = np.asarray(train_frequencies(), dtype=np.float64)
        if len(prior) != probs.shape[1]:
            raise HPAError(f"thresholds: {len(prior)} prior rates for {probs.shape[1]} classes")
        self.prior_ = prior
        out = np.asarray(strategy.fit(probs, labels, self), dtype=np.float64)
        if strategy.bounded:
            out = bound_rates(probs, out, prior, self.rate_ratio)
        self.thresholds_ = out
        return self

    def predict(self, probs: np.ndarray, ensure_one: bool = False) -> np.ndarray:
        """Return ``(N, C)`` uint8 predictions with the learned thresholds."""
        if not hasattr(self, "thresholds_"):
            raise HPAError("thresholds: predict() called before fit()")
        return apply_thresholds(probs, self.thresholds_, ensure_one)


def check_strategy(name: str) -> str:
    """Return ``name`` when it is ``auto`` or a registered strategy; else HPAError listing them all."""
    if name != AUTO and name not in THRESHOLD_STRATEGIES:
        valid = ", ".join(sorted([AUTO, *THRESHOLD_STRATEGIES.names()]))
        raise HPAError(f"unknown threshold strategy '{name}' (valid: {valid})")
    return name


def tuner_from_record(thr: dict[str, Any]) -> ThresholdTuner:
    """The tuner a ``thresholds.json`` record was made with (records before the params dicts kept the
    tuner's settings flat in ``params``, the proportion rates as ``proportions``)."""
    params = dict(thr.get("params") or {})
    if {"strategy", "proportions"} & set(params):   # an older record: {strategy, min_positives, ..., proportions}
        return ThresholdTuner(thr["strategy"], {}, params.get("default", 0.5), 0.0, params.get("proportions"))
    tuner = thr.get("tuner") or {}
    return ThresholdTuner(thr["strategy"], params, tuner.get("default", 0.5),
                          tuner.get("rate_ratio", RATE_RATIO), thr.get("prior"))


def thresholds_for_test(thr: dict[str, Any], probs: np.ndarray) -> np.ndarray:
    """Thresholds to apply to test probabilities from a thresholds record (``thresholds.json``); a
    strategy that declares ``refit_on_test`` (``proportion``) is re-fitted on the test set itself with
    the record's settings and training prior (target rates are about the test distribution, as the 1st
    and 3rd place teams applied them)."""
    name = thr.get("strategy")
    if name in THRESHOLD_STRATEGIES and THRESHOLD_STRATEGIES.get(name).refit_on_test:
        return tuner_from_record(thr).fit(probs).thresholds_
    return np.asarray(thr["thresholds"], dtype=np.float64)


def grid_search_thresholds(probs: np.ndarray, labels: np.ndarray, n: int = 100) -> np.ndarray:
    """Baseline for ``hpa bench``: per class, the best of ``n`` evenly spaced thresholds in (0, 1)."""
    grid = np.linspace(0, 1, n + 2)[1:-1]
    return np.array([grid[int(np.argmax(global_curve(probs[:, [j]], labels[:, [j]], grid)))]
                     for j in range(probs.shape[1])])


def bench_thresholds(n_rows: int = 31072, seed: int = 0) -> dict[str, float]:
    """Time exact per-class tuning against a 100-point grid on a random OOF; return times and F1s."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_rows, NUM_CLASSES)) < np.asarray(train_frequencies())).astype(np.uint8)
    probs = np.clip(0.35 * labels + rng.beta(1, 4, labels.shape), 0, 1)
    t0 = time.perf_counter()
    exact = ThresholdTuner("per_class", {"min_positives": 1, "shrink": 0}, rate_ratio=0).fit(probs, labels).thresholds_
    t1 = time.perf_counter()
    grid = grid_search_thresholds(probs, labels)
    t2 = time.perf_counter()
    return {"exact_s": t1 - t0, "grid_s": t2 - t1,
            "exact_f1": macro_f1(labels, apply_thresholds(probs, exact)),
            "grid_f1": macro_f1(labels, apply_thresholds(probs, grid))}
