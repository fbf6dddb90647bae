"""Macro F1 (equal to sklearn's), per-class F1, and scoring a submission file."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from hpa.cli import run_command
from hpa.errors import HPAError
from hpa.metrics import macro_f1, per_class_f1, score_submission

# Hand-computed case: 4 images. Per class (true / predicted):
#   0: {a,b} / {a,c} -> tp 1, fp 1, fn 1 -> F1 = 2/4 = 0.5
#   1: {a} / {a}     -> 1.0
#   2: {b} / {}      -> 0.0
#   3: {} / {d}      -> 0.0
#   4: {c,d} / {c}   -> 2/3
#   5-27: nothing    -> 0.0 (zero_division=0)
# macro = (0.5 + 1 + 2/3) / 28 = 13/168
TRUTH = "Id,Target\na,0 1\nb,2 0\nc,4\nd,4\n"
SUB = "Id,Predicted\nd,3\nc,4 0\nb,\na,1 0\n"   # any row order; b predicts nothing


@pytest.fixture
def files(tmp_path):
    (tmp_path / "truth.csv").write_text(TRUTH)
    (tmp_path / "sub.csv").write_text(SUB)
    return tmp_path / "sub.csv", tmp_path / "truth.csv"


def test_hand_computed_submission(files):
    macro, per_class = score_submission(*files)
    assert macro == pytest.approx(13 / 168, abs=1e-12)
    expected = np.zeros(28)
    expected[[0, 1, 4]] = [0.5, 1.0, 2 / 3]
    np.testing.assert_allclose(per_class, expected, atol=1e-12)


def test_equals_sklearn_on_random_matrices():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 60))
        rate_t, rate_p = rng.uniform(0, 0.3, 28), rng.uniform(0, 0.3, 28)
        y_true = (rng.random((n, 28)) < rate_t).astype(np.uint8)
        y_pred = (rng.random((n, 28)) < rate_p).astype(np.uint8)
        y_true[:, trial % 28] = 0                   # a class absent from the truth
        y_pred[:, (trial + 5) % 28] = 0             # and a class never predicted
        ref = f1_score(y_true, y_pred, average="macro", zero_division=0)
        assert macro_f1(y_true, y_pred) == pytest.approx(ref, abs=1e-12)
        np.testing.assert_allclose(per_class_f1(y_true, y_pred),
                                   f1_score(y_true, y_pred, average=None, zero_division=0), atol=1e-12)


def test_shape_mismatch_is_an_error():
    with pytest.raises(HPAError, match=r"y_true shape \(2, 28\) != y_pred shape \(3, 28\)"):
        macro_f1(np.zeros((2, 28)), np.zeros((3, 28)))


def test_missing_and_extra_ids(tmp_path, files):
    _, truth = files
    (tmp_path / "short.csv").write_text("Id,Predicted\na,0\nb,0\nc,0\n")
    with pytest.raises(HPAError, match=r"short.csv: missing Id 'd' \(1 missing in all\)"):
        score_submission(tmp_path / "short.csv", truth)
    (tmp_path / "long.csv").write_text(SUB + "zz,1\n")
    with pytest.raises(HPAError, match=r"long.csv: extra Id 'zz' not in .*truth.csv"):
        score_submission(tmp_path / "long.csv", truth)
    (tmp_path / "bad.csv").write_text("Id,Predicted\na,0\nb,28\nc,0\nd,0\n")
    with pytest.raises(HPAError, match=r"bad.csv: row 3 \(Id b\): label 28 outside 0-27"):
        score_submission(tmp_path / "bad.csv", truth)


def test_score_cli_prints_table_and_macro(files, capsys):
    sub, truth = files
    assert run_command("score", ["--submission", str(sub), "--labels", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "macro F1 = 0.0774" in out
    line = next(ln for ln in out.splitlines() if "Nuclear speckles" in ln)
    assert line.split()[-2:] == ["2", "0.6667"]     # support 2, F1 2/3


def test_score_cli_plot(files, tmp_path, capsys):
    sub, truth = files
    png = tmp_path / "f1.png"
    assert run_command("score", ["--submission", str(sub), "--labels", str(truth), "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and f"plot {png}" in capsys.readouterr().out


def test_score_cli_error_is_one_line(tmp_path, files, capsys):
    _, truth = files
    assert run_command("score", ["--submission", str(tmp_path / "nope.csv"), "--labels", str(truth)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope.csv'}: file not found\n"
