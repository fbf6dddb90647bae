"""Contract tests over every registered threshold strategy (no pinned list of names): each declares its
capabilities, builds from its own params, fits, respects the rate bounds, and runs through ``auto``."""
from __future__ import annotations

import numpy as np
import pytest

from hpa.classes import NUM_CLASSES
from hpa.config import ThresholdConfig, load_config
from hpa.thresholds import (THRESHOLD_STRATEGIES, ThresholdStrategy, ThresholdTuner, rate_limits,
                            thresholds_for_test)
from hpa.thresholds.stage import tune, tune_all

STRATEGIES = THRESHOLD_STRATEGIES.names()


def _oof(n: int = 300, seed: int = 0):
    """A weak model: class rates from 2 % to 40 %, positives score a little higher than negatives."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.02, 0.4, NUM_CLASSES)
    y = (rng.random((n, NUM_CLASSES)) < rates).astype(np.uint8)
    probs = np.clip(0.15 * y + 0.9 * rng.random(y.shape) ** 2, 0, 1)
    return probs, y, np.arange(n) % 3


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_declares_capabilities_and_builds_from_defaults(name):
    cls = THRESHOLD_STRATEGIES.get(name)
    assert issubclass(cls, ThresholdStrategy)
    for attr in ("needs_labels", "refit_on_test", "bounded"):
        assert isinstance(getattr(cls, attr), bool), attr
    assert isinstance(cls.complexity, int) and cls.complexity >= 0
    tuner = ThresholdTuner(name)
    assert isinstance(tuner.build(), cls)                     # every param has a default
    for param in THRESHOLD_STRATEGIES.params(name):           # each setting is readable back from the object
        assert hasattr(tuner.build(), param), param


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_fits_within_the_rate_bounds(name):
    probs, y, _ = _oof()
    labels = y if THRESHOLD_STRATEGIES.get(name).needs_labels else None
    tuner = ThresholdTuner(name, rate_ratio=2.0, prior=y.mean(0)).fit(probs, labels)
    t = tuner.thresholds_
    assert t.shape == (NUM_CLASSES,) and np.isfinite(t).all() and (t >= 0).all() and (t <= 1 + 1e-12).all()
    if THRESHOLD_STRATEGIES.get(name).bounded:
        lo, hi = rate_limits(y.mean(0), len(probs), 2.0)
        counts = tuner.predict(probs).sum(0)
        assert (counts >= lo).all() and (counts <= hi).all(), (counts, lo, hi)


@pytest.mark.parametrize("name", STRATEGIES)
def test_record_round_trip_applies_to_test(name):
    probs, y, folds = _oof()
    record = tune(ThresholdTuner(name), probs, y, folds)
    shifted = probs * 0.8                                     # a test set whose scores run lower
    applied = thresholds_for_test(record, shifted)
    if THRESHOLD_STRATEGIES.get(name).refit_on_test:          # re-fitted on the test scores themselves
        assert not np.allclose(applied, record["thresholds"])
        fresh = ThresholdTuner(name, record["params"], prior=record["prior"]).fit(shifted).thresholds_
        np.testing.assert_allclose(applied, fresh)
    else:
        np.testing.assert_allclose(applied, record["thresholds"])
    assert 0 < record["nested_f1_pooled"] <= 1 and len(record["nested_f1_per_fold"]) == 3


def test_auto_over_every_registered_strategy_chooses_among_them_and_estimates_itself():
    probs, y, folds = _oof()
    cfg = ThresholdConfig(candidates=STRATEGIES)
    results, sel = tune_all(cfg, probs, y, folds)
    assert set(results) == set(STRATEGIES)
    assert sel["strategy"] in STRATEGIES and set(sel["auto"]["choices"]) <= set(STRATEGIES)
    assert 0 < sel["auto"]["nested_f1_pooled"] <= 1


def test_old_threshold_keys_load_as_strategy_params(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("thresholds: {strategy: scaled, scale: 0.6, min_positives: 3, proportions: rates.csv}\n"
                   "infer: {checkpoint: swa}\n")
    with pytest.warns(UserWarning, match=r"keys of an older hpa read at their new places \(thresholds.scale -> "
                                         r"thresholds.params.scaled.scale, thresholds.min_positives -> "
                                         r"thresholds.params.per_class.min_positives \+ "
                                         r"thresholds.params.scaled.min_positives, thresholds.proportions -> "
                                         r"thresholds.params.proportion.rates, infer.checkpoint -> train.select;"):
        cfg = load_config(old)
    assert cfg.thresholds.params == {"scaled": {"scale": 0.6, "min_positives": 3},
                                     "per_class": {"min_positives": 3}, "proportion": {"rates": "rates.csv"}}
    assert cfg.train.select == "swa"
