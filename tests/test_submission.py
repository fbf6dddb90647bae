"""Submissions: building, atomic writing in sample order, and every check of ``hpa validate``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.errors import HPAError
from hpa.submission import (make_submission, read_sample_ids, sample_from_args, validate_submission,
                            write_submission)


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
    assert {k: summary[k] for k in ("rows", "labels_per_row", "empty")} == {"rows": 3, "labels_per_row": 1.0, "empty": 1}
    assert sum(summary["class_rates"]) == pytest.approx(1.0)
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
    assert capsys.readouterr().out == (f"{good}: valid (3 rows, 1.00 labels per row against 1.63 in the "
                                       "competition's training labels, 1 empty)\n")
    bad = _write(tmp_path / "bad.csv", "Id,Predicted\na,0\n")
    assert run_command("validate", [str(bad), "--sample", str(sample)]) == 2
    assert capsys.readouterr().err == f"error: {bad}: 2 Id(s) of {sample} missing, first 'b'\n"


# ------------------------------------------------------------------ second round (issue 17)
def test_header_only_sample_is_an_error_and_nothing_is_written(tmp_path):
    sample = _write(tmp_path / "sample_submission.csv", "Id,Predicted\n")
    out = tmp_path / "sub.csv"
    with pytest.raises(HPAError) as e:
        write_submission(out, make_submission([], np.zeros((0, 28))), sample)
    assert str(e.value) == f"{sample}: no rows (only a header)"
    with pytest.raises(HPAError, match=r"sample_submission.csv: no rows \(only a header\)$"):
        validate_submission(_write(tmp_path / "s.csv", "Id,Predicted\n"), sample)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "sample_submission.csv"]


@pytest.mark.parametrize("text, message", [
    ("Id,Predicted\n../etc,0\n", "row 2: Id '../etc' is not a plain file-name stem"),
    ("Id,Predicted\na,0\na,0\n", "duplicate Id 'a' at row 3"),
    ("Id,Predicted\na,0\n,0\n", "empty Id at row 3"),
])
def test_sample_submission_ids_are_checked_with_their_row(tmp_path, text, message):
    sample = _write(tmp_path / "sample_submission.csv", text)
    with pytest.raises(HPAError) as e:
        read_sample_ids(sample)
    assert str(e.value) == f"{sample}: {message}"


@pytest.mark.parametrize("labels, message", [
    ("+3", "label '+3' is not an integer 0-27"),
    ("３", "label '３' is not an integer 0-27"),
    ("²", "label '²' is not an integer 0-27"),
    (" 3", "labels must be separated by single spaces, found ' 3'"),
    ("3 ", "labels must be separated by single spaces, found '3 '"),
    (" ", "labels must be separated by single spaces, found ' '"),
])
def test_validate_refuses_labels_kaggle_would_not_read(tmp_path, sample, labels, message):
    path = _write(tmp_path / "s.csv", f'Id,Predicted\na,0\nb,"{labels}"\nc,\n')
    with pytest.raises(HPAError) as e:
        validate_submission(path, sample)
    assert str(e.value) == f"{path}: row 3 (Id b): {message}"


def test_sample_from_the_config_for_validate_and_submit(tmp_path):
    import argparse

    cfg = _write(tmp_path / "c.yaml", f"data:\n  root: {tmp_path}/data\n  sample_submission: s.csv\n")
    ns = argparse.Namespace(sample=None, config=str(cfg), set=[])
    assert sample_from_args(ns) == tmp_path / "data" / "s.csv"
    assert sample_from_args(argparse.Namespace(sample="x.csv", config=str(cfg), set=[])) == Path("x.csv")
    assert sample_from_args(argparse.Namespace(sample=None, config=None, set=[]), "d.csv") == Path("d.csv")
    with pytest.raises(HPAError, match="give --sample, or a --config naming the sample submission"):
        sample_from_args(argparse.Namespace(sample=None, config=None, set=[]))


def test_validate_warns_when_labels_flood(tmp_path, capsys):
    """Issue 23: a submission far from the training distribution (thresholds near 0) is valid but flagged."""
    ids = [f"id{i}" for i in range(10)]
    sample = _write(tmp_path / "sample.csv", "Id,Predicted\n" + "".join(f"{i},0\n" for i in ids))
    train = _write(tmp_path / "train.csv", "Id,Target\n" + "".join(f"t{i},{i % 3} 25\n" for i in range(20)))
    flood = _write(tmp_path / "flood.csv", "Id,Predicted\n" + "".join(f"{i},0 1 2 3 4 7\n" for i in ids))
    assert run_command("validate", [str(flood), "--sample", str(sample), "--labels", str(train)]) == 0
    out, err = capsys.readouterr()
    assert f"6.00 labels per row against 2.00 in the {train} labels" in out
    assert err.splitlines()[0] == (f"warning: {flood}: 6.00 labels per row, more than twice the {train} mean "
                                   "2.00: thresholds that flood labels?")
    # classes 3, 4, 7 (never in training) and 0-2 (35 %, 35 %, 30 %) are predicted for every row
    assert f"warning: {flood}: class 3 (Nucleoli fibrillar center) predicted for 100% of the rows against 0.0% in the" in err
    assert len(err.splitlines()) == 1 + 6
    calm = _write(tmp_path / "calm.csv", "Id,Predicted\n" + "".join(f"{i},{k % 3} 25\n" for k, i in enumerate(ids)))
    assert run_command("validate", [str(calm), "--sample", str(sample)]) == 0    # train.csv beside the sample
    assert capsys.readouterr().err == ""
