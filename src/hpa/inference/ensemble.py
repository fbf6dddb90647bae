"""Blending several runs: the ensemble config and the blends (``infer.py --ensemble``).

Each run contributes its ``oof.csv`` and ``test_probs.csv``; both are blended the same way (weighted
mean of probabilities, or weighted mean of per-class percentile ranks) by :func:`blend`. Reading the
members, re-tuning thresholds and writing ``runs/<name>/`` is the stage (``hpa.inference.stage``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.config import ThresholdConfig, check_run_name, load_config, ranged
from hpa.errors import HPAError
from hpa.registry import Registry

BLENDS: Registry = Registry("blend", fixed=("mats", "weights"))


@dataclass
class EnsembleRun:
    """One member run: its folder and its weight in the blend."""
    dir: str = ""
    weight: float = ranged(1.0, gt=0)


@dataclass
class EnsembleConfig:
    """Schema of ``configs/ensemble_<name>.yaml`` (loaded with ``load_config(path, schema=...)``)."""
    name: str = ""                      # output folder runs/<name>; empty = the file's stem
    runs_dir: str = "runs"
    runs: list[EnsembleRun] = field(default_factory=list)
    blend: str = "mean"                 # mean | rank
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    ensure_one: bool = True
    out: str = ""                       # submission path; empty = submissions/<name>.csv
    labels: str = ""                    # empty = the first run's <data.root>/<data.train_csv>
    sample: str = ""                    # empty = the first run's <data.root>/<data.sample_submission>

    @property
    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``: where the blended OOF, test probabilities and thresholds go."""
        return Path(self.runs_dir) / check_run_name(self.name)


@BLENDS.register("mean")
def _mean(mats: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of probabilities."""
    return np.tensordot(weights / weights.sum(), np.stack(mats), axes=1)


@BLENDS.register("rank")
def _rank(mats: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of per-class percentile ranks in (0, 1] (scale-free: robust to calibration)."""
    ranks = [pd.DataFrame(m).rank(pct=True, method="average").to_numpy() for m in mats]
    return _mean(ranks, weights)


def blend(mats: list[np.ndarray], weights: list[float], how: str = "mean") -> np.ndarray:
    """Blend ``(N, 28)`` matrices (rows aligned) with ``weights`` by ``how`` (a BLENDS name)."""
    return BLENDS.get(how)(mats, np.asarray(weights, dtype=np.float64))


def load_ensemble_config(path: str | Path, overrides: list[str] | None = None) -> EnsembleConfig:
    """Load and check an ensemble YAML: at least one run, positive weights, known blend."""
    cfg = load_config(path, overrides, schema=EnsembleConfig)
    if not cfg.runs:
        raise HPAError(f"{path}: 'runs' lists no run")
    for i, r in enumerate(cfg.runs):
        if not r.dir or r.weight <= 0:
            raise HPAError(f"{path}: runs[{i}] needs a 'dir' and a positive 'weight'")
    BLENDS.get(cfg.blend)
    return cfg
