"""tools/reproduce_lincao.py: the paper's table layout with our figures, and the 90/10 split file."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lincao():
    spec = importlib.util.spec_from_file_location("reproduce_lincao", ROOT / "tools" / "reproduce_lincao.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_puts_the_papers_figures_beside_ours(lincao):
    res = {split: {m: {"oof_macro_f1": 0.1 + i / 10, "test_macro_f1": None if split == "90/10" else 0.05}
                   for i, m in enumerate(lincao.PAPER)} for split in lincao.SPLITS}
    md = lincao.table(res, "demo").splitlines()
    assert md[0].startswith("| Model | Mix Method | paper: Validation | paper: Public | paper: Private |")
    assert md[2] == "| ResNet18 | BCE baseline | 0.6383 | 0.45702 | 0.43363 | 0.1000 | 0.1000 | — | 0.0500 |"
    assert md[4] == ("| ResNet18 | Mix Representation | 0.3250 | 0.01924 | 0.01955 | 0.3000 | 0.3000 | — "
                     "| 0.0500 |")
    assert set(lincao.CLASSIFIERS) == set(lincao.PAPER) and all((ROOT / c).is_file() for c in lincao.CLASSIFIERS.values())


def test_ninety_ten_split_holds_one_tenth_out(lincao, tiny_demo, tmp_path):
    shutil.copy(tiny_demo / "train.csv", tmp_path / "train.csv")
    path = lincao.ensure_folds(tmp_path, "folds10.csv", 10)
    folds = pd.read_csv(path)
    assert sorted(folds["fold"].unique()) == list(range(10)) and len(folds) == 96
    assert 7 <= (folds["fold"] == 0).sum() <= 12                     # ~10% validation in fold 0
    before = path.read_bytes()
    assert lincao.ensure_folds(tmp_path, "folds10.csv", 10).read_bytes() == before     # made once


def test_missing_data_is_a_one_line_error(lincao, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert lincao.main(["--scale", "real"]) == 2
    assert capsys.readouterr().err.strip() == "error: input/hpa/train.csv: missing (hpa download first)"
