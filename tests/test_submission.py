"""Submissions: building, atomic writing in sample order, and every check of ``hpa validate``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.errors import HPAError
from hpa.submission import make_submission, validate_submission, write_submission


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"Id": ["a", "b", "c"], "Predicted": ["0"] * 3}).to_csv(path, index=False)
    return path


def _write(path, text):
    path.write_text(text)
    return path


def test_make_and_write_in_sample_order(tmp_path, sample):
    preds = np.zeros((3, 28), np.uint8)
    preds[0, [27, 3]] = 1
    preds[2, 0] = 1
    df = make_submission(["c", "a", "b"], preds)        # deliberately not in sample order
    out = tmp_path / "sub" / "s.csv"
    summary = write_submission(out, df, sample)
    assert out.read_text() == "Id,Predicted\na,\nb,0\nc,3 27\n"
    assert summary == {"rows": 3, "labels_per_row": 1.0, "empty": 1}
    assert [p.name for p in out.parent.iterdir()] == ["s.csv"]     # no temporary file left


def test_write_refuses_missing_id_and_leaves_nothing(tmp_path, sample):
    df = make_submission(["a", "b"], np.ones((2, 28), np.uint8))
    out = tmp_path / "s.csv"
    with pytest.raises(HPAError, match=f"submission: no prediction for Id 'c' of {sample}"):
        write_submission(out, df, sample)
    assert list(tmp_path.iterdir()) == [sample]


@pytest.mark.parametrize("text, message", [
    ("Id,Labels\na,0\nb,0\nc,0\n", "header must be 'Id,Predicted', found 'Id,Labels'"),
    ("Id,Predicted\na,0\nb,0\n", "1 Id(s) of {sample} missing, first 'c'"),
    ("Id,Predicted\na,0\nb,0\nc,0\na,1\n", "Id 'a' appears more than once"),
    ("Id,Predicted\na,0\nb,0\nc,0\nz,1\n", "Id 'z' is not in {sample}"),
    ("Id,Predicted\na,0\nb,28\nc,0\n", "row 3 (Id b): label '28' is not an integer 0-27"),
    ("Id,Predicted\na,0\nb,1.5\nc,0\n", "row 3 (Id b): label '1.5' is not an integer 0-27"),
])
def test_validate_errors(tmp_path, sample, text, message):
    path = _write(tmp_path / "s.csv", text)
    with pytest.raises(HPAError) as e:
        validate_submission(path, sample)
    assert str(e.value) == f"{path}: " + message.format(sample=sample)


def test_validate_cli(tmp_path, sample, capsys):
    good = _write(tmp_path / "good.csv", "Id,Predicted\nb,1 2\na,0\nc,\n")
    assert run_command("validate", [str(good), "--sample", str(sample)]) == 0
    assert capsys.readouterr().out == f"{good}: valid (3 rows, 1.00 labels per row, 1 empty)\n"
    bad = _write(tmp_path / "bad.csv", "Id,Predicted\na,0\n")
    assert run_command("validate", [str(bad), "--sample", str(sample)]) == 2
    assert capsys.readouterr().err == f"error: {bad}: 2 Id(s) of {sample} missing, first 'b'\n"
