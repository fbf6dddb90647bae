"""Blending several runs (``infer.py --ensemble configs/ensemble_<name>.yaml``).

Each run contributes its ``oof.csv`` and ``test_probs.csv``; both are blended the same way (weighted
mean of probabilities, or weighted mean of per-class percentile ranks), thresholds are re-tuned on the
blended OOF, and one submission comes out. The blended files go to ``runs/<name>/`` like a run's.
Runs whose OOF Id/fold assignments differ, or that lack a file, are refused before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.config import ExperimentConfig, ThresholdConfig, load_config, ranged
from hpa.errors import HPAError
from hpa.inference.predict import PROB_COLUMNS, read_probs
from hpa.io import write_csv
from hpa.registry import Registry

BLENDS: Registry = Registry("blend")


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
        return Path(self.runs_dir) / self.name


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


def _member_files(run: str) -> tuple[Path, Path, Path]:
    d = Path(run)
    files = (d / "config.yaml", d / "oof.csv", d / "test_probs.csv")
    for f in files:
        if not f.is_file():
            raise HPAError(f"{d}: missing {f.name} (ensemble members need config.yaml, oof.csv, test_probs.csv)")
    return files


def load_members(cfg: EnsembleConfig) -> dict[str, Any]:
    """Read and cross-check every member's OOF and test probabilities; return the aligned matrices.

    Returns ``{"ids", "folds", "oof": [..], "test_ids", "test": [..], "first_cfg"}``; HPAError
    names the run and the file whose Ids/folds differ from the first run's, or that is missing.
    """
    from hpa.thresholds import read_oof

    files = [_member_files(r.dir) for r in cfg.runs]   # every file checked before any is read
    first_cfg = load_config(files[0][0])
    ids = folds = test_ids = None
    oof, test = [], []
    for run, (_, oof_path, test_path) in zip(cfg.runs, files):
        o_ids, o_folds, o_probs = read_oof(oof_path)
        fmap = pd.Series(o_folds, index=o_ids)
        if ids is None:
            ids, folds = o_ids, o_folds
        else:
            other = fmap.reindex(ids)
            if len(o_ids) != len(ids) or other.isna().any() or not np.array_equal(other.to_numpy(), folds):
                raise HPAError(f"{oof_path}: Id/fold assignment differs from {cfg.runs[0].dir}/oof.csv "
                               "(ensemble members must share folds)")
        oof.append(pd.DataFrame(o_probs, index=o_ids).loc[ids].to_numpy())
        t = read_probs(test_path).set_index("Id")
        if test_ids is None:
            test_ids = t.index.tolist()
        elif set(t.index) != set(test_ids):
            raise HPAError(f"{test_path}: test Ids differ from {cfg.runs[0].dir}/test_probs.csv")
        test.append(t.loc[test_ids, PROB_COLUMNS].to_numpy())
    return {"ids": ids, "folds": folds, "oof": oof, "test_ids": test_ids, "test": test, "first_cfg": first_cfg}


def _precheck(m: dict[str, Any], labels: str, sample: str) -> None:
    """Refuse, before writing anything, OOF Ids unknown to the labels and test Ids unlike the sample's."""
    from hpa.data.labels import read_labels
    from hpa.submission import read_sample_ids

    known = set(read_labels(labels)["Id"])
    unknown = [i for i in m["ids"] if i not in known]
    if unknown:
        raise HPAError(f"oof.csv: Id '{unknown[0]}' is not in the training labels {labels}")
    if set(read_sample_ids(sample)) != set(m["test_ids"]):
        raise HPAError(f"test_probs.csv: the members' test Ids differ from the Ids of {sample}")


def run_ensemble(cfg: EnsembleConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Blend the members, re-tune thresholds on the blended OOF, write files and the submission.

    Writes ``runs/<name>/{oof.csv,test_probs.csv,thresholds.json}`` and the submission; returns the
    thresholds result plus ``"submission"`` (path) and ``"validation"`` (summary).
    """
    from hpa.inference.cli import finish_submission
    from hpa.thresholds import tune_run

    m = load_members(cfg)
    first: ExperimentConfig = m["first_cfg"]
    labels = cfg.labels or str(Path(first.data.root) / first.data.train_csv)
    sample = cfg.sample or str(Path(first.data.root) / first.data.sample_submission)
    out = Path(out or cfg.out or f"submissions/{cfg.name}.csv")
    _precheck(m, labels, sample)
    weights = [r.weight for r in cfg.runs]
    oof = pd.DataFrame(blend(m["oof"], weights, cfg.blend), columns=PROB_COLUMNS)
    oof.insert(0, "fold", m["folds"])
    oof.insert(0, "Id", m["ids"])
    test = pd.DataFrame(blend(m["test"], weights, cfg.blend), columns=PROB_COLUMNS)
    test.insert(0, "Id", m["test_ids"])
    write_csv(cfg.run_dir / "oof.csv", oof)
    write_csv(cfg.run_dir / "test_probs.csv", test)
    result = tune_run(cfg.run_dir / "oof.csv", labels, cfg.thresholds, cfg.run_dir / "thresholds.json")
    result["validation"] = finish_submission(test, result, sample, out, cfg.ensure_one)
    result["submission"] = str(out)
    return result

