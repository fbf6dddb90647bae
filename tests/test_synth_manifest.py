"""manifest.csv contract: columns, validation errors naming the row, fold provenance parsing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpa.data.images import write_kaggle_rgby
from hpa.errors import HPAError
from hpa.synthetic.manifest import (COLUMNS, append_rows, format_label_weights, parse_label_weights,
                                read_manifest, trained_on_folds)


def _row(i, **kw):
    row = {"Id": f"syn-x-noise-{i:06d}", "Target": "0 25", "label_weights": "", "source_id": "",
           "generator": "ddpm", "generator_trained_on": "1 2 3 4", "mode": "noise", "strength": "1",
           "steps": "25", "guidance": "2", "seed": str(i), "filter_score": ""}
    row.update(kw)
    return row


def _write(tmp_path, rows):
    for r in rows:
        write_kaggle_rgby(tmp_path / "train", r["Id"], np.zeros((8, 8, 4), np.uint8))
    append_rows(tmp_path / "manifest.csv", rows)
    return tmp_path / "manifest.csv"


def test_columns_exact_and_roundtrip(tmp_path):
    path = _write(tmp_path, [_row(0), _row(1, label_weights="0:0.7000 25:0.3000", mode="mix",
                                              source_id="abc", strength="0.6")])
    assert pd.read_csv(path).columns.tolist() == COLUMNS
    assert path.read_text().splitlines()[2] == ("syn-x-noise-000001,0 25,0:0.7000 25:0.3000,abc,ddpm,"
                                                "1 2 3 4,mix,0.6,25,2,1,")
    df = read_manifest(path)
    assert df["labels"].tolist() == [[0, 25], [0, 25]] and df["steps"].tolist() == [25, 25]
    assert df["filter_score"].isna().all() and df["strength"].tolist() == [1.0, 0.6]


def test_trained_on_folds():
    assert trained_on_folds("all") is None
    assert trained_on_folds("1 2 3 4") == {1, 2, 3, 4}
    with pytest.raises(HPAError, match="generator_trained_on: 'fold1' is neither 'all'"):
        trained_on_folds("fold1")


def test_label_weights():
    assert parse_label_weights("0:0.7 25:0.3") == {0: 0.7, 25: 0.3}
    assert format_label_weights({25: 0.3, 0: 0.7}) == "0:0.7000 25:0.3000"
    with pytest.raises(HPAError, match="label_weights: '0=0.7' is not a label:weight pair"):
        parse_label_weights("0=0.7")


@pytest.mark.parametrize("bad, message", [
    ({"Id": "../evil"}, r"row 2 \(Id \.\./evil\): Id '\.\./evil' is not a plain file-name stem"),
    ({"Id": "plain-real-id"}, r"row 2 \(Id plain-real-id\): synthetic Id must start with 'syn-'"),
    ({"source_id": "a/b"}, r"row 2 .* source_id: Id 'a/b' is not a plain file-name stem"),
    ({"Target": "0 30"}, r"row 2 .*: label 30 outside 0-27"),
    ({"generator_trained_on": "x"}, "generator_trained_on: 'x' is neither"),
])
def test_bad_rows_are_refused_naming_the_row(tmp_path, bad, message):
    path = tmp_path / "manifest.csv"
    pd.DataFrame([_row(0, **bad)], columns=COLUMNS).to_csv(path, index=False)
    with pytest.raises(HPAError, match=message):
        read_manifest(path, check_files=False)


def test_missing_image_and_column(tmp_path):
    path = tmp_path / "manifest.csv"
    pd.DataFrame([_row(0)], columns=COLUMNS).to_csv(path, index=False)
    with pytest.raises(HPAError, match=r"row 2 \(Id syn-x-noise-000000\): image files missing under"):
        read_manifest(path)
    pd.DataFrame([_row(0)], columns=COLUMNS).drop(columns="seed").to_csv(path, index=False)
    with pytest.raises(HPAError, match="missing column"):
        read_manifest(path)


def test_every_shipped_synth_config_loads():
    from pathlib import Path

    from hpa.synthetic.config import load_synth_config
    from hpa.synthetic.protocol import GENERATORS
    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "synth").glob("*.yaml"))
    assert [p.stem for p in paths] == ["ddpm_demo", "ddpm_real", "ddpm_simple_demo", "ddpm_simple_lincao",
                                      "morph_demo", "morph_real", "sd_lora_demo", "sd_lora_real", "standin_demo"]
    for p in paths:
        cfg = load_synth_config(p)
        assert cfg.name == p.stem and cfg.generator in GENERATORS


def test_unknown_config_key_and_generator(tmp_path):
    from hpa.synthetic.config import load_synth_config
    from hpa.synthetic.protocol import train_generator
    with pytest.raises(HPAError, match=r"unknown config key 'train.stepz'"):
        load_synth_config(None, ["train.stepz=3"])
    with pytest.raises(HPAError, match=r"unknown generator 'gan' \(valid: ddpm, ddpm_simple, morph, sd_lora, standin\)"):
        train_generator(load_synth_config(None, ["generator=gan"]), "all", tmp_path)
