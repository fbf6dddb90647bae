"""The flags every command spells the same way (hpa.cli_args): a run by --run or --config, a file as a
positional argument or a flag, and a renamed flag that still works with one warning line."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.cli import COMMANDS, build_parser, run_command
from hpa.config import load_config, save_config
from hpa.errors import HPAError
from hpa.rundir import experiment, run_folder

#: commands that read or add to a trained run; each takes --run and --config
RUN_COMMANDS = ("thresholds", "infer", "swa", "lr-find", "report", "pseudo-label")


def _sample(tmp_path: Path) -> tuple[Path, Path]:
    sub, sample = tmp_path / "sub.csv", tmp_path / "sample.csv"
    sub.write_text("Id,Predicted\nt0,1\nt1,0 2\n")
    sample.write_text("Id,Predicted\nt0,0\nt1,0\n")
    return sub, sample


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_every_run_command_takes_run_or_config(command):
    parser, _ = build_parser(command)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--run", "--config"} <= flags, command
    for sub in ("filter", "report"):
        args = build_parser("synth")[0].parse_args([sub, "--manifest", "m.csv", "--run", "runs/x"])
        assert args.run == "runs/x" and args.config is None


def test_a_run_folder_gives_its_saved_config_pointed_at_the_folder(tmp_path):
    cfg = load_config(None, ["name=first", f"runs_dir={tmp_path}/elsewhere", "train.epochs=3"])
    moved = tmp_path / "moved" / "kept"
    save_config(cfg, moved / "config.yaml")
    got = experiment(moved, None, ["train.batch_size=8"])
    assert (got.train.epochs, got.train.batch_size, got.run_dir) == (3, 8, moved)
    assert run_folder(moved, None) == moved
    config = tmp_path / "exp.yaml"
    config.write_text(f"runs_dir: {tmp_path}/runs\n")
    assert run_folder(None, config) == tmp_path / "runs" / "exp"
    with pytest.raises(HPAError, match=rf"^--run {tmp_path}: no config.yaml \(not a run folder"):
        experiment(tmp_path, None)


def test_report_by_config_or_run_names_the_same_missing_run(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(f"runs_dir: {tmp_path}/runs\n")
    assert run_command("report", ["--config", str(config)]) == 2
    by_config = capsys.readouterr().err
    assert run_command("report", ["--run", str(tmp_path / "runs" / "exp")]) == 2
    assert capsys.readouterr().err == by_config and str(tmp_path / "runs" / "exp") in by_config


def test_a_file_is_positional_or_a_flag(tmp_path, capsys):
    sub, sample = _sample(tmp_path)
    assert run_command("validate", [str(sub), "--sample", str(sample)]) == 0
    positional = capsys.readouterr().out
    assert run_command("validate", ["--submission", str(sub), "--sample", str(sample)]) == 0
    assert capsys.readouterr().out == positional
    assert positional.startswith(f"{sub}: valid (2 rows, 1.50 labels per row")
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\nt0,1\nt1,0 2\n")
    assert run_command("score", [str(sub), "--labels", str(labels)]) == 0
    assert capsys.readouterr().out.endswith(f"macro F1 = 0.1071 ({sub} vs {labels})\n")
    with pytest.raises(SystemExit) as e:
        run_command("validate", [str(sub), "--submission", "other.csv"])
    assert e.value.code == 2 and "submission given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_command("score", ["--labels", str(labels)])
    assert "the following arguments are required: submission (or --submission)" in capsys.readouterr().err


def test_hash_distance_flag_and_its_old_name(tmp_path, capsys):
    from hpa.data.images import write_kaggle_rgby

    rng = np.random.default_rng(0)
    ids = [f"im{i}" for i in range(8)]
    for i in ids:
        write_kaggle_rgby(tmp_path / "train", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    pd.DataFrame({"Id": ids, "Target": ["0", "1"] * 4}).to_csv(tmp_path / "train.csv", index=False)
    common = ["folds", "--labels", str(tmp_path / "train.csv"), "--k", "2", "--dedup",
              "--image-dir", str(tmp_path / "train")]
    assert run_command(common[0], common[1:] + ["--hash-distance", "3", "--out", str(tmp_path / "a.csv")]) == 0
    assert "renamed" not in capsys.readouterr().err
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert run_command(common[0], common[1:] + ["--threshold", "3", "--out", str(tmp_path / "b.csv")]) == 0
    assert [str(x.message) for x in w if "renamed" in str(x.message)] == [
        "--threshold is renamed --hash-distance (the old name goes in the next release)"]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_no_command_spells_the_hash_distance_threshold():
    for command in COMMANDS:
        if command in ("folds", "leak-report"):
            parser, _ = build_parser(command)
            visible = {s for a in parser._actions if a.help != "==SUPPRESS==" for s in a.option_strings}
            assert "--hash-distance" in visible and "--threshold" not in visible
