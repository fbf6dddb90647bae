"""The ``hpa`` dispatcher: help, unknown commands, and HPAError -> one line + exit 2 (real subprocesses)."""
from __future__ import annotations

import subprocess
import sys

from hpa.cli import COMMANDS, main


def _hpa(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hpa", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_help_lists_every_command():
    r = _hpa("--help")
    assert r.returncode == 0
    listed = [ln.split()[0] for ln in r.stdout.split("commands:")[1].splitlines() if ln.startswith("  ")]
    assert listed == list(COMMANDS)
    for name, (_, help_) in COMMANDS.items():
        assert help_ in r.stdout


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "commands:" in capsys.readouterr().out


def test_score_help():
    r = _hpa("score", "--help")
    assert r.returncode == 0
    assert "usage: hpa score" in r.stdout and "--submission" in r.stdout and "--labels" in r.stdout


def test_unknown_command_fails():
    r = _hpa("trian")
    assert r.returncode == 2
    assert "unknown command 'trian' (valid: demo-data, folds, cache" in r.stderr


def test_hpa_error_is_one_line_and_exit_2(tmp_path):
    r = _hpa("score", "--submission", "missing_sub.csv", "--labels", "missing_labels.csv", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == "error: missing_labels.csv: file not found\n"
    assert r.stdout == ""


def test_bad_config_is_one_line(tmp_path):
    (tmp_path / "exp.yaml").write_text("data:\n  sise: 3\n")
    r = _hpa("folds", "--config", "exp.yaml", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("error: exp.yaml: unknown config key 'data.sise' (valid: ")
    assert r.stderr.count("\n") == 1


def test_argparse_error_exits_2():
    r = _hpa("score", "--submission", "x.csv")
    assert r.returncode == 2 and "the following arguments are required: --labels" in r.stderr
