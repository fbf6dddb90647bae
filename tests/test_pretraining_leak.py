"""``hpa leak-report --pretraining``: Kaggle images inside a foundation model's pretraining set, by Id and by image."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from hpa.cli import run_command
from hpa.data.images import read_kaggle_rgby
from hpa.external.pretraining import match_ids


def test_ids_are_found_in_entries_of_every_form():
    kaggle = {"train": {"00070df0-bbc3-11e8-b2bc-ac1f6b6435d0"}, "test": {"abc"}}
    m = match_ids(["HPA_FoV_00070df0-bbc3-11e8-b2bc-ac1f6b6435d0.png", "00070DF0-BBC3-11E8-B2BC-AC1F6B6435D0_15",
                   "sub/abc.png", "abcd", "nothing"], kaggle)
    assert sorted(m["entry"]) == ["00070DF0-BBC3-11E8-B2BC-AC1F6B6435D0_15",
                                  "HPA_FoV_00070df0-bbc3-11e8-b2bc-ac1f6b6435d0.png", "sub/abc.png"]
    assert m.set_index("entry").loc["sub/abc.png", "source"] == "test"


def test_a_pretraining_folder_is_matched_by_id_and_by_perceptual_hash(tiny_demo, tmp_path, capsys):
    train = pd.read_csv(tiny_demo / "train.csv")["Id"].tolist()
    test = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"].tolist()
    pre = tmp_path / "pre"
    pre.mkdir()
    for i in test[:3]:           # named like Cell-DINO's HPA-FoV samples: found by Id and by image
        Image.fromarray(read_kaggle_rgby(tiny_demo / "test", i, None)).save(pre / f"HPA_FoV_{i}.png")
    for k, i in enumerate(train[:2]):      # renamed and rescaled: found by image only
        img = read_kaggle_rgby(tiny_demo / "train", i, 64)
        Image.fromarray(img).save(pre / f"crop_{k}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(pre / "noise.png")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{root: {tiny_demo}, cache_dir: {tmp_path / 'cache'}}}\n")
    assert run_command("leak-report", ["--config", str(cfg), "--pretraining", str(pre), "--out", str(tmp_path / "r")]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"pretraining list {pre} (6 entries) contains Kaggle train: ")
    s = json.loads((tmp_path / "r" / "pretraining.json").read_text())
    assert s["test"]["by_id"] == 3 and s["train"]["by_id"] == 0
    pairs = pd.read_csv(tmp_path / "r" / "pretraining_pairs.csv")
    found = set(zip(pairs["entry"], pairs["Id"]))
    assert {(f"HPA_FoV_{i}.png", i) for i in test[:3]} <= found
    assert {(f"crop_{k}.png", i) for k, i in enumerate(train[:2])} <= found
    assert "noise.png" not in set(pairs["entry"])
    assert s["train"]["by_image"] >= 2 and s["test"]["either"] >= 3
    # an Id list (no images): by Id only
    lst = tmp_path / "list.txt"
    lst.write_text(f"# Cell-DINO single cells\n{train[5]}_15\n{test[7]}_2\nother\n")
    assert run_command("leak-report", ["--config", str(cfg), "--pretraining", str(lst), "--out", str(tmp_path / "r2")]) == 0
    assert "1 by Id, images not given" in capsys.readouterr().out
    ids = pd.read_csv(tmp_path / "r2" / "pretraining_ids.csv")
    assert sorted(zip(ids["source"], ids["Id"])) == [("test", test[7]), ("train", train[5])]
    assert run_command("leak-report", ["--config", str(cfg), "--pretraining", str(tmp_path / "absent")]) == 2
    assert "--pretraining" in capsys.readouterr().err
