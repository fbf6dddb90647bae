"""Per-class decision thresholds, in three layers like every stage:

* ``tuner``: the algorithm (``ThresholdTuner``, ``THRESHOLD_STRATEGIES``, ``apply_thresholds``, the
  nested estimate, ``choose_strategy`` for ``auto``); arrays in, arrays out;
* ``stage``: reads a run's OOF and writes its thresholds files through ``hpa.rundir.RunDir``;
* ``cli``: ``hpa thresholds``.

The algorithm's public names are re-exported here (``from hpa.thresholds import ThresholdTuner``).
"""
from __future__ import annotations

from hpa.rundir import load_thresholds
from hpa.thresholds.tuner import (AUTO, FIXED, THRESHOLD_STRATEGIES, ThresholdTuner, apply_thresholds,
                                  bench_thresholds, best_f1_threshold, choose_strategy, grid_search_thresholds,
                                  nested_estimate, read_proportions, thresholds_for_test, tuner_from_config,
                                  tuners_from_config)

__all__ = ["AUTO", "FIXED", "THRESHOLD_STRATEGIES", "ThresholdTuner", "apply_thresholds", "bench_thresholds",
           "best_f1_threshold", "choose_strategy", "grid_search_thresholds", "load_thresholds", "nested_estimate",
           "read_proportions", "thresholds_for_test", "tuner_from_config", "tuners_from_config"]

