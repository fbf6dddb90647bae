"""Per-class decision thresholds, in layers like every stage:

* ``search``: exact cuts on arrays (``best_f1_threshold``, the rate bounds ``bound_rates``);
* ``strategies``: the ``THRESHOLD_STRATEGIES`` registry, each strategy a class with its params and
  declared capabilities;
* ``tuner``: ``ThresholdTuner`` (one strategy + the rate bounds), ``thresholds_for_test``;
* ``selection``: nested estimates, ``auto``'s rule (``pick_strategy``) and its own honest estimate;
* ``stage``: reads a run's OOF and writes its thresholds files through ``hpa.rundir.RunDir``;
* ``cli``: ``hpa thresholds``.

The algorithm's public names are re-exported here (``from hpa.thresholds import ThresholdTuner``).
"""
from __future__ import annotations

from hpa.rundir import load_thresholds
from hpa.thresholds.search import apply_thresholds, best_f1_threshold, bound_rates, rate_limits
from hpa.thresholds.selection import (auto_estimate, choose_strategy, nested_estimate, pick_strategy,
                                      tuner_from_config, tuners_from_config)
from hpa.thresholds.strategies import THRESHOLD_STRATEGIES, ThresholdStrategy, read_proportions
from hpa.thresholds.tuner import (AUTO, FIXED, ThresholdTuner, bench_thresholds, grid_search_thresholds,
                                  thresholds_for_test)

__all__ = ["AUTO", "FIXED", "THRESHOLD_STRATEGIES", "ThresholdStrategy", "ThresholdTuner", "apply_thresholds",
           "auto_estimate", "bench_thresholds", "best_f1_threshold", "bound_rates", "choose_strategy",
           "grid_search_thresholds", "load_thresholds", "nested_estimate", "pick_strategy", "rate_limits",
           "read_proportions", "thresholds_for_test", "tuner_from_config", "tuners_from_config"]
