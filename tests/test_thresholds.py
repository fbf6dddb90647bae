"""Threshold tuning: every strategy on hand-made examples with known answers, brute force, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from hpa.classes import NUM_CLASSES, TRAIN_COUNTS, TRAIN_ROWS
from hpa.cli import run_command
from hpa.config import ExperimentConfig, save_config
from hpa.errors import HPAError
from hpa.metrics import macro_f1
from hpa.rundir import RunDir
from hpa.thresholds import (THRESHOLD_STRATEGIES, ThresholdTuner, apply_thresholds, bench_thresholds,
                            best_f1_threshold, load_thresholds, nested_estimate, read_proportions)


def _brute_best_f1(s: np.ndarray, y: np.ndarray) -> float:
    """Best F1 of ``s >= t`` over every distinct score t, with sklearn's F1."""
    return max(f1_score(y, (s >= t).astype(int), zero_division=0) for t in np.unique(s))


def test_per_class_hand_example_known_threshold_and_f1():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 0, 0])
    t, f1 = best_f1_threshold(s, y)
    # keeping the top 4 gives TP=3, FP=1, FN=0: F1 = 6/7; midpoint of 0.6 and 0.5
    assert t == pytest.approx(0.55)
    assert f1 == pytest.approx(6 / 7)


def test_per_class_ties_move_together():
    t, f1 = best_f1_threshold(np.array([0.9, 0.7, 0.7, 0.2]), np.array([1, 1, 0, 0]))
    assert t == pytest.approx(0.45)     # both 0.7s kept: TP=2, FP=1 -> F1 0.8
    assert f1 == pytest.approx(0.8)


def test_per_class_matches_brute_force_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        s = np.round(rng.random(n), 2)   # rounding makes ties
        y = (rng.random(n) < 0.3).astype(int)
        if y.sum() == 0:
            y[0] = 1
        t, f1 = best_f1_threshold(s, y)
        assert f1 == pytest.approx(_brute_best_f1(s, y))
        assert f1_score(y, (s >= t).astype(int)) == pytest.approx(f1)


def test_per_class_min_positives_falls_back_to_global():
    probs = np.array([[0.9, 0.8], [0.2, 0.7], [0.1, 0.1], [0.3, 0.05]])
    labels = np.array([[1, 1], [0, 1], [0, 0], [0, 0]])
    tuner = ThresholdTuner("per_class", {"min_positives": 2, "shrink": 0}, rate_ratio=0).fit(probs, labels)
    # global: 0.45 (between 0.7 and 0.3) keeps 0.9 | 0.8, 0.7: both classes perfect
    assert tuner.thresholds_[0] == pytest.approx(0.5)    # one positive < 2: the global threshold
    assert tuner.thresholds_[1] == pytest.approx(0.4)    # keeps 0.8 and 0.7: midpoint to 0.1


def test_per_class_shrinks_toward_global_by_positives():
    probs = np.array([[0.9, 0.8], [0.2, 0.7], [0.1, 0.1], [0.3, 0.05]])
    labels = np.array([[1, 1], [0, 1], [0, 0], [0, 0]])
    # class 1: 2 positives, own cut 0.4, global 0.5 -> (2 * 0.4 + 2 * 0.5) / (2 + 2) = 0.45
    tuner = ThresholdTuner("per_class", {"min_positives": 2, "shrink": 2}, rate_ratio=0).fit(probs, labels)
    assert tuner.thresholds_[1] == pytest.approx(0.45)


def test_global_hand_example():
    probs = np.array([[0.9, 0.6], [0.8, 0.4], [0.3, 0.1], [0.2, 0.05]])
    labels = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    tuner = ThresholdTuner("global", rate_ratio=0).fit(probs, labels)
    np.testing.assert_allclose(tuner.thresholds_, [0.35, 0.35])   # midpoint of 0.4 and 0.3
    assert macro_f1(labels, tuner.predict(probs)) == 1.0


def test_global_is_exact_against_brute_force():
    rng = np.random.default_rng(2)
    probs = np.round(rng.random((40, 3)), 2)
    labels = (rng.random((40, 3)) < 0.4).astype(np.uint8)
    tuner = ThresholdTuner("global", rate_ratio=0).fit(probs, labels)
    best = max(macro_f1(labels, (probs >= t).astype(np.uint8)) for t in np.unique(probs))
    assert macro_f1(labels, tuner.predict(probs)) == pytest.approx(best)


def test_proportion_matches_target_rates():
    probs = np.tile(np.arange(10)[:, None] / 10, (1, NUM_CLASSES))
    rates = [0.3] + [0.0] * (NUM_CLASSES - 2) + [1.0]
    tuner = ThresholdTuner("proportion", prior=rates).fit(probs)     # labels not needed: the prior
    assert tuner.thresholds_[0] == pytest.approx(0.65)
    assert tuner.thresholds_[1] == pytest.approx(0.95)   # keep none: halfway from 0.9 to 1
    assert tuner.thresholds_[-1] == pytest.approx(0.0)
    np.testing.assert_allclose(tuner.predict(probs).mean(0), rates)


def test_proportion_default_is_train_frequencies():
    rng = np.random.default_rng(3)
    probs = rng.random((TRAIN_ROWS, NUM_CLASSES))
    pred = ThresholdTuner("proportion").fit(probs).predict(probs)
    assert pred.sum(0).tolist() == list(TRAIN_COUNTS)


def test_scaled_is_per_class_times_scale():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 0, 0])
    probs, labels = np.tile(s[:, None], (1, 2)), np.tile(y[:, None], (1, 2))
    tuner = ThresholdTuner("scaled", {"min_positives": 1, "scale": 0.7, "shrink": 0}, rate_ratio=0).fit(probs, labels)
    np.testing.assert_allclose(tuner.thresholds_, [0.385, 0.385])


def test_read_proportions_csv(tmp_path):
    path = tmp_path / "rates.csv"
    pd.DataFrame({"class": range(NUM_CLASSES), "rate": [0.1] * NUM_CLASSES}).to_csv(path, index=False)
    assert read_proportions(path) == [0.1] * NUM_CLASSES
    pd.DataFrame({"class": range(3), "rate": [0.1] * 3}).to_csv(path, index=False)
    with pytest.raises(HPAError, match=r"rates.csv: no rate for class\(es\) 3, 4, 5"):
        read_proportions(path)


def test_unknown_strategy_or_param_lists_valid_names():
    valid = ", ".join(THRESHOLD_STRATEGIES.names())
    with pytest.raises(HPAError, match=rf"unknown threshold strategy 'best' \(valid: {valid}\)"):
        ThresholdTuner("best").fit(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(HPAError, match=r"thresholds.params.scaled: scaled has no parameter 'scal' "
                                       r"\(valid: min_positives, scale, shrink\)"):
        ThresholdTuner("scaled", {"scal": 0.5}).fit(np.zeros((2, 2)), np.zeros((2, 2)))


def test_apply_thresholds_ensure_one():
    probs = np.array([[0.1, 0.3, 0.2], [0.9, 0.8, 0.1]])
    assert apply_thresholds(probs, [0.5] * 3).tolist() == [[0, 0, 0], [1, 1, 0]]
    assert apply_thresholds(probs, [0.5] * 3, ensure_one=True).tolist() == [[0, 1, 0], [1, 1, 0]]


def test_nested_estimate_separable_and_overfit():
    probs = np.array([[0.9], [0.8], [0.2], [0.1]] * 4)
    labels = np.array([[1], [1], [0], [0]] * 4)
    folds = np.repeat([0, 1], 8)
    r = nested_estimate(probs, labels, folds, ThresholdTuner("per_class", {"min_positives": 1}))
    assert r == {"per_fold": [1.0, 1.0], "mean": 1.0, "pooled": 1.0, "labels_per_row": 0.5}
    # pure noise: tuned in-sample F1 is optimistic, the nested estimate is lower
    rng = np.random.default_rng(4)
    probs, labels = rng.random((400, 5)), (rng.random((400, 5)) < 0.1).astype(np.uint8)
    folds = rng.integers(0, 5, 400)
    raw = ThresholdTuner("per_class", {"shrink": 0}, rate_ratio=0).fit(probs, labels)
    raw_gap = macro_f1(labels, raw.predict(probs)) - nested_estimate(probs, labels, folds, raw)["mean"]
    assert raw_gap > 0.03
    # the rate bounds and the shrinkage toward the global cut leave less noise to fit
    safe = ThresholdTuner("per_class").fit(probs, labels)
    safe_gap = macro_f1(labels, safe.predict(probs)) - nested_estimate(probs, labels, folds, safe)["mean"]
    assert 0 < safe_gap < raw_gap / 2


def test_real_size_tuning_is_fast_and_beats_grid():
    r = bench_thresholds(n_rows=31072, seed=0)
    assert r["exact_f1"] >= r["grid_f1"]
    assert r["exact_s"] < 2.0            # measured ~0.1 s; generous for a shared CPU


def write_oof_run(tmp_path, probs, y, folds, **thresholds) -> tuple[str, RunDir]:
    """``data/train.csv`` with the labels ``y``, a config (``thresholds`` settings applied) and a run
    folder holding only ``oof.csv`` of ``probs``: what ``hpa thresholds`` needs. Returns (config, RunDir)."""
    ids = [f"img{i:03d}" for i in range(len(y))]
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"Id": ids, "Target": [" ".join(map(str, np.flatnonzero(r))) for r in y]}).to_csv(
        data / "train.csv", index=False)
    cfg = ExperimentConfig(name="exp", runs_dir=str(tmp_path / "runs"))
    cfg.data.root = str(data)
    for key, value in thresholds.items():
        setattr(cfg.thresholds, key, value)
    save_config(cfg, tmp_path / "exp.yaml")
    oof = pd.DataFrame(np.asarray(probs).round(6), columns=[f"p{i}" for i in range(NUM_CLASSES)])
    oof.insert(0, "fold", folds)
    oof.insert(0, "Id", ids)
    rd = RunDir(cfg.run_dir)
    rd.path.mkdir(parents=True)
    oof.to_csv(rd.oof, index=False)
    return str(tmp_path / "exp.yaml"), rd


def _fake_run(tmp_path, n=40, seed=0):
    """Write train.csv and a run folder with config.yaml and a synthetic oof.csv; return (config, y, p)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, NUM_CLASSES)) < 0.2).astype(np.uint8)
    y[np.arange(n), rng.integers(0, NUM_CLASSES, n)] = 1
    p = np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1).round(4)
    path, _ = write_oof_run(tmp_path, p, y, np.arange(n) % 4, params={"per_class": {"min_positives": 3}})
    return Path(path), y, p


def test_cli_writes_thresholds_json(tmp_path, capsys):
    cfg_path, y, p = _fake_run(tmp_path)
    assert run_command("thresholds", ["--config", str(cfg_path), "--strategy", "per_class"]) == 0
    out = capsys.readouterr().out
    data = load_thresholds(tmp_path / "runs" / "exp" / "thresholds.json")
    assert list(data)[:9] == ["strategy", "thresholds", "params", "tuner", "prior", "oof_f1_at_0.5",
                              "oof_f1_tuned", "nested_f1_pooled", "nested_f1_mean"]
    assert data["params"] == {"min_positives": 3} and data["prior"] == pytest.approx(y.mean(0).tolist())
    assert data["selection"]["requested"] == "per_class" and data["selection"]["file"] == "thresholds_per_class.json"
    expected = ThresholdTuner("per_class", {"min_positives": 3}).fit(p, y).thresholds_
    np.testing.assert_allclose(data["thresholds"], expected)
    assert data["oof_f1_at_0.5"] == pytest.approx(macro_f1(y, (p >= 0.5).astype(np.uint8)))
    assert data["oof_f1_tuned"] == pytest.approx(macro_f1(y, apply_thresholds(p, expected)))
    assert len(data["nested_f1_per_fold"]) == 4
    assert data["oof_f1_tuned"] >= data["oof_f1_at_0.5"]
    assert f"{data['oof_f1_tuned']:.4f} tuned" in out
    assert (tmp_path / "runs" / "exp" / "thresholds.png").stat().st_size > 1000


def test_cli_rejects_oof_ids_not_in_labels(tmp_path, capsys):
    cfg_path, _, _ = _fake_run(tmp_path)
    oof_path = tmp_path / "runs" / "exp" / "oof.csv"
    oof = pd.read_csv(oof_path)
    oof.loc[3, "Id"] = "stranger"
    oof.to_csv(oof_path, index=False)
    assert run_command("thresholds", ["--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {oof_path}: Id 'stranger' is not in the training labels (1 unknown Id(s))\n"
    assert not (tmp_path / "runs" / "exp" / "thresholds.json").exists()


def test_load_thresholds_wrong_class_count(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"strategy": "per_class", "thresholds": [0.5] * 10}))
    with pytest.raises(HPAError, match="thresholds.json: expected 28 thresholds, found 10"):
        load_thresholds(path)
