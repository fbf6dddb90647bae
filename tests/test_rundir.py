"""The run folder (hpa.rundir): its layout, its checked readers, outputs published together, and the
run-folder cases of docs/reliability.md that need no training (thresholds, folds, the lock)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.data.folds import make_folds, read_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.io import write_csv, write_json
from hpa.rundir import THRESHOLD_MAX, OutputGroup, RunDir, data_inputs, load_thresholds, read_oof
from hpa.runlock import run_lock
from test_thresholds import _fake_run


def test_layout_names_every_file_once(tmp_path):
    rd = RunDir(tmp_path / "exp")
    rel = {k: str(p.relative_to(rd.path)) for k, p in vars(rd).items() if k != "path"}
    assert rel == {"config": "config.yaml", "inputs": "inputs.json", "lock": ".lock", "oof": "oof.csv",
                   "metrics": "metrics.json", "test_probs": "test_probs.csv", "report": "report.md",
                   "report_dir": "report", "swa_oof": "swa_oof.csv", "swa_metrics": "swa_metrics.json",
                   "heldout_probs": "heldout_probs.csv",
                   "pseudo_labels": "pseudo_labels.csv"}
    assert [rd.tracking(t).relative_to(rd.path).as_posix() for t in ("tensorboard", "mlflow", "wandb")] \
        == ["tensorboard", "mlruns", "wandb"]
    assert rd.thresholds().name == "thresholds.json" and rd.thresholds("global").name == "thresholds_global.json"
    f = rd.fold(3)
    assert [p.relative_to(rd.path).as_posix() for p in (f.best, f.last, f.history, f.summary, f.oof, f.synthetic,
                                                         f.swa, f.swa_oof, f.epoch_weights(7))] \
        == ["fold3/best.pt", "fold3/last.pt", "fold3/history.csv", "fold3/summary.json", "fold3/oof.csv",
            "fold3/synthetic.json", "fold3/swa.pt", "fold3/swa_oof.csv", "fold3/epoch7.pt"]
    with pytest.raises(HPAError, match="train.select: must be one of best, last, swa, nested, got 'ema'"):
        f.checkpoint("ema")
    with pytest.raises(HPAError, match=r"exp/config.yaml: missing \(train the run first\)"):
        rd.load_config()


def test_output_group_publishes_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "sub" / "b.json"
    a.write_text("old")
    with pytest.raises(RuntimeError):
        with OutputGroup() as g:
            g.path(a).write_text("new")
            g.path(b).write_text("{}")
            raise RuntimeError("the second output failed")
    assert a.read_text() == "old" and not b.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.csv"]   # no temporaries
    with OutputGroup() as g:
        g.path(a).write_text("new")
        g.path(b).write_text("{}")
    assert a.read_text() == "new" and b.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.csv", "b.json"]


@pytest.mark.parametrize("bad, shown", [(1.5, "1.5"), (-0.2, "-0.2"), (True, "true"), ("0.5", '"0.5"')])
def test_thresholds_outside_zero_one_are_refused(tmp_path, bad, shown):
    """Reliability: 1.5 / -0.2 / true would silently predict nothing or everything for that class."""
    path = tmp_path / "thresholds.json"
    values = [0.5] * 28
    values[7] = bad
    write_json(path, {"strategy": "per_class", "thresholds": values})
    with pytest.raises(HPAError) as e:
        load_thresholds(path)
    assert str(e.value) == f"{path}: threshold of class 7 is {shown}; thresholds must be numbers in [0, 1]"
    values[7] = THRESHOLD_MAX        # the tuner's own "never predict" cut when a score is exactly 1
    write_json(path, {"strategy": "per_class", "thresholds": values})
    assert load_thresholds(path)["thresholds"][7] == THRESHOLD_MAX


def test_nan_in_oof_is_named_by_row_and_column(tmp_path, capsys):
    cfg_path, _, _ = _fake_run(tmp_path)
    oof_path = tmp_path / "runs" / "exp" / "oof.csv"
    oof = pd.read_csv(oof_path)
    oof.loc[4, "p3"] = np.nan
    oof.loc[9, "p5"] = np.nan
    oof.to_csv(oof_path, index=False)
    assert run_command("thresholds", ["--config", str(cfg_path)]) == 2
    assert capsys.readouterr().err == (f"error: {oof_path}: row 6, column p3: '' is not a probability in "
                                       "[0, 1] (2 such value(s))\n")
    oof.loc[[4, 9], ["p3", "p5"]] = 0.5
    oof["fold"] = oof["fold"].astype(str)
    oof.loc[2, "fold"] = "x"
    oof.to_csv(oof_path, index=False)
    with pytest.raises(HPAError, match=r"oof.csv: row 4, column fold: 'x' is not an integer fold"):
        read_oof(oof_path)


def test_thresholds_wait_for_the_run_lock_and_write_all_files_together(tmp_path, capsys):
    """Reliability: `hpa thresholds` does not write into a run that is training (or inferring)."""
    cfg_path, _, _ = _fake_run(tmp_path)
    rd = RunDir(tmp_path / "runs" / "exp")
    with run_lock(rd.path):
        assert run_command("thresholds", ["--config", str(cfg_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {rd.path}: another run holds the lock (pid {os.getpid()})")
    assert sorted(os.listdir(rd.path)) == [".lock", "oof.csv"]
    assert run_command("thresholds", ["--config", str(cfg_path), "--strategy", "per_class"]) == 0
    assert run_command("thresholds", ["--config", str(cfg_path)]) == 0        # auto: every strategy, one chosen
    assert sorted(os.listdir(rd.path)) == [".lock", "oof.csv", "thresholds.json", "thresholds.png",
                                           "thresholds_fixed.json", "thresholds_global.json",
                                           "thresholds_per_class.json", "thresholds_proportion.json",
                                           "thresholds_scaled.json"]
    assert rd.read_thresholds()["selection"]["requested"] == "auto"
    assert rd.read_thresholds("per_class")["strategy"] == "per_class"


def test_a_command_that_fails_leaves_no_run_folder(tmp_path, capsys):
    """Reliability: a failed command on a new run name leaves no folder and no .lock behind."""
    cfg_path, _, _ = _fake_run(tmp_path)
    assert run_command("thresholds", ["--config", str(cfg_path), "--set", "name=typo"]) == 2
    assert "runs/typo/oof.csv: file not found" in capsys.readouterr().err
    assert run_command("infer", ["--config", str(cfg_path), "--set", "name=typo", "--out", str(tmp_path / "s.csv")]) == 2
    assert "runs/typo/config.yaml: missing (train the run first)" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / "runs")) == ["exp"]
    with pytest.raises(KeyboardInterrupt):      # an interrupted one likewise
        with run_lock(tmp_path / "new" / "deeper" / "run"):
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()


def test_hpa_folds_will_not_overwrite_the_folds_of_a_run(tiny_demo, tmp_path, capsys):
    """Reliability: a run records the folds it trained on; `hpa folds` refuses to rewrite them (unless
    the split is identical, or --force)."""
    labels = tiny_demo / "train.csv"
    folds = tmp_path / "folds.csv"
    write_folds(folds, make_folds(read_labels(labels), 3, 0))
    rd = RunDir(tmp_path / "runs" / "a")
    write_json(rd.inputs, data_inputs(labels, folds, read_folds(folds), 1.0, 96))
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"runs_dir: {tmp_path / 'runs'}\ndata: {{root: {tiny_demo}}}\n"
                   f"folds: {{file: {folds}, n_splits: 3, seed: 0}}\n")
    before = folds.read_bytes()
    assert run_command("folds", ["--config", str(cfg)]) == 0               # the same split: harmless
    assert folds.read_bytes() == before
    assert run_command("folds", ["--config", str(cfg), "--seed", "7"]) == 2
    assert capsys.readouterr().err == (
        f"error: {folds}: run {rd.path} trained on the folds in this file; another split would break its "
        "--resume and ensembles: write elsewhere (--out, and folds.file in the config) or pass --force\n")
    assert folds.read_bytes() == before
    assert run_command("folds", ["--config", str(cfg), "--seed", "7", "--out", str(tmp_path / "f7.csv")]) == 0
    assert run_command("folds", ["--config", str(cfg), "--seed", "7", "--force"]) == 0
    assert folds.read_bytes() != before
