"""Issue 18: thresholds are applied only when they help on folds they were not tuned on (``auto``), every
strategy keeps its own file, the submission records which one it used, and the best epoch is reported
next to the last and a nested best epoch."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hpa.classes import NUM_CLASSES
from hpa.cli import run_command
from hpa.config import ThresholdConfig, load_config
from hpa.errors import HPAError
from hpa.inference.stage import resolve_thresholds
from hpa.reports.cv import epoch_choice, epoch_choice_line
from hpa.thresholds import THRESHOLD_STRATEGIES, choose_strategy, pick_strategy
from hpa.thresholds.stage import tune_all
from test_thresholds import write_oof_run

N, K = 240, 4


def _oof(cuts: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, labels, folds)``: 25 % positives per class; class ``j``'s positives score in
    ``[cuts[j], 1)`` and its negatives in ``[0, cuts[j])``, so ``cuts`` separates them exactly."""
    rng = np.random.default_rng(seed)
    y = (rng.random((N, NUM_CLASSES)) < 0.25).astype(np.uint8)
    u = rng.random((N, NUM_CLASSES))
    probs = np.where(y == 1, cuts + u * (1 - cuts), u * cuts)
    return probs, y, np.arange(N) % K


def overfit_case():
    """0.5 separates every class exactly: a cut tuned on the other folds can only lose held out."""
    return _oof(np.full(NUM_CLASSES, 0.5))


def helpful_case():
    """Each class separates at its own cut (0.05 to 0.3): 0.5 misses the positives below it, one global
    cut fits no class well, per-class cuts fit each."""
    return _oof(np.linspace(0.05, 0.3, NUM_CLASSES))


def test_auto_keeps_fixed_when_per_class_overfits():
    probs, y, folds = overfit_case()
    results, sel = tune_all(ThresholdConfig(), probs, y, folds)
    assert list(results) == list(dict.fromkeys(["fixed", *ThresholdConfig().candidates]))
    nested = sel["nested_f1"]
    assert nested["fixed"] == 1.0 and sel["nested_f1_pooled"]["fixed"] == 1.0
    assert results["per_class"]["oof_f1_tuned"] == 1.0            # in-sample it looks as good...
    assert nested["per_class"] < nested["fixed"]                  # ...held out it loses
    assert sel["strategy"] == "fixed" and sel["warning"] is None
    assert sel["reason"] == "auto: fixed best (mean of folds 1.0000) -> fixed"
    assert sel["auto"]["choices"] == ["fixed"] * K and sel["auto"]["nested_f1_pooled"] == 1.0
    # asked for by name: applied, with a warning
    named = choose_strategy(nested, "per_class")
    assert named["strategy"] == "per_class"
    assert named["warning"].startswith(f"per_class's nested estimate {nested['per_class']:.4f} is below fixed 0.5's")


def test_auto_picks_per_class_when_it_helps_and_estimates_itself():
    probs, y, folds = helpful_case()
    results, sel = tune_all(ThresholdConfig(), probs, y, folds)
    nested = sel["nested_f1"]
    assert nested["per_class"] > 0.97 and nested["fixed"] < 0.8 and nested["global"] < 0.95
    assert sel["strategy"] == "per_class"
    assert sel["reason"] == f"auto: per_class best (mean of folds {nested['per_class']:.4f}) -> per_class"
    # the choice made inside the outer loop picks per_class on every fold, so auto's own estimate is
    # exactly per_class's nested one (same training folds, same held-out predictions)
    assert sel["auto"]["choices"] == ["per_class"] * K
    assert sel["auto"]["nested_f1_pooled"] == pytest.approx(sel["nested_f1_pooled"]["per_class"])
    assert choose_strategy(nested, "per_class")["warning"] is None


def test_pick_strategy_prefers_the_simpler_within_the_fold_spread():
    noisy = {"fixed": [0.50, 0.52, 0.48], "per_class": [0.53, 0.49, 0.52]}     # +0.013, gaps sd 0.036
    name, why = pick_strategy(noisy)
    assert name == "fixed" and why.startswith("per_class best (mean of folds 0.5133) but fixed is simpler")
    steady = {"fixed": [0.50, 0.52, 0.48], "per_class": [0.52, 0.54, 0.51]}    # +0.023 on every fold
    assert pick_strategy(steady)[0] == "per_class"
    # complexity is declared by each strategy: global (1) beats per_class (28) when within the spread
    assert pick_strategy({"per_class": [0.6, 0.5], "global": [0.5, 0.6]})[0] == "global"
    assert pick_strategy({"global": [], "fixed": []})[0] == "global"          # no estimate: first candidate
    with pytest.raises(HPAError, match=r"unknown threshold strategy 'best' \(valid: auto, fixed, global, "):
        choose_strategy({"fixed": 0.2}, "best")


def test_auto_chooses_only_among_the_listed_candidates():
    probs, y, folds = helpful_case()
    cfg = ThresholdConfig(candidates=["fixed", "global"])
    results, sel = tune_all(cfg, probs, y, folds)
    assert list(results) == ["fixed", "global"]                 # nothing else is tuned or written
    assert sel["strategy"] == "global" and set(sel["auto"]["choices"]) == {"global"}


def test_cli_writes_every_strategy_and_applies_auto_choice(tmp_path, capsys):
    assert load_config(None).thresholds.strategy == "auto"             # the default
    cfg_path, rd = write_oof_run(tmp_path, *overfit_case())
    assert run_command("thresholds", ["--config", cfg_path]) == 0
    out = capsys.readouterr().out
    for name in ThresholdConfig().candidates:
        assert rd.read_thresholds(name)["strategy"] == name             # each strategy in its own file
    chosen = rd.read_thresholds()
    assert chosen["strategy"] == "fixed" and chosen["thresholds"] == [0.5] * NUM_CLASSES
    assert chosen["selection"]["file"] == "thresholds_fixed.json" and chosen["selection"]["requested"] == "auto"
    assert "auto: fixed best (mean of folds 1.0000) -> fixed" in out
    assert "auto itself (chosen inside the loop): 1.0000/1.0000 (per fold: fixed, fixed, fixed, fixed)" in out
    # asking for per_class by name applies it, with a warning; the other files stay
    assert run_command("thresholds", ["--config", cfg_path, "--strategy", "per_class"]) == 0
    captured = capsys.readouterr()
    assert "warning: per_class's nested estimate" in captured.err and "asked for by name" in captured.err
    assert rd.read_thresholds()["strategy"] == "per_class"
    assert rd.read_thresholds("fixed")["strategy"] == "fixed"
    assert run_command("thresholds", ["--config", cfg_path, "--strategy", "otsu"]) == 2
    assert "unknown threshold strategy 'otsu' (valid: auto, fixed," in capsys.readouterr().err


def test_inference_records_the_thresholds_it_applies(tmp_path, capsys):
    cfg_path, rd = write_oof_run(tmp_path, *overfit_case())
    assert run_command("thresholds", ["--config", cfg_path]) == 0
    thr, used = resolve_thresholds(rd, 0.5)
    assert thr["strategy"] == used["strategy"] == "fixed"
    assert used["file"] == str(rd.thresholds()) and used["chosen_from"] == "thresholds_fixed.json"
    assert used["requested"] == "auto" and used["reason"] == "auto: fixed best (mean of folds 1.0000) -> fixed"
    assert used["nested_f1_mean"] == used["fixed_nested_f1"] == 1.0
    capsys.readouterr()
    thr, used = resolve_thresholds(rd, 0.5, "per_class")           # infer.py --thresholds per_class
    assert thr["strategy"] == "per_class" and used["chosen_from"] == "thresholds_per_class.json"
    assert used["nested_f1_mean"] < used["fixed_nested_f1"]
    assert "warning: per_class's nested estimate" in capsys.readouterr().err


def test_nested_best_epoch_on_a_toy_history():
    h = {0: pd.DataFrame({"epoch": [1, 2, 3], "val_f1": [0.1, 0.5, 0.2]}),
         1: pd.DataFrame({"epoch": [1, 2, 3], "val_f1": [0.1, 0.2, 0.4]}),
         2: pd.DataFrame({"epoch": [1, 2], "val_f1": [0.3, 0.2]})}          # stopped early
    ec = epoch_choice(h)
    # fold 0: others' mean curve 0.2, 0.2, 0.4 (epoch 3: fold 1 only) -> epoch 3 -> 0.2
    # fold 1: others' 0.2, 0.35, 0.2 -> epoch 2 -> 0.2; fold 2: others' 0.1, 0.35 -> epoch 2 -> 0.2
    assert [ec["per_fold"][k]["nested_epoch"] for k in range(3)] == [3, 2, 2]
    assert ec["best"] == pytest.approx(0.4) and ec["last"] == pytest.approx(0.8 / 3)
    assert ec["nested"] == pytest.approx(0.2) and ec["n_folds"] == 3
    assert "best epoch 0.4000" in epoch_choice_line(ec) and "nested best epoch 0.2000" in epoch_choice_line(ec)
    one = epoch_choice({0: h[0]})
    assert one["nested"] is None and "n/a (one fold)" in epoch_choice_line(one)
    json.dumps(one)                                                      # metrics.json-ready
