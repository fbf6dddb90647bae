"""The demo HPAv18 folder (``hpa demo-data --external N``), ``hpa leak-report`` on it, and the bad
inputs of the external path (Ids without images, undecodable JPEGs, a wrong label file)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.data.cache import open_images
from hpa.data.images import hpav18_short_id, read_hpav18_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.demo.external import make_external_demo
from hpa.external.hpav18 import read_hpav18_labels, require_images


def _digest(folder: Path, skip: str = "hpav18") -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip):
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo_ext(tiny_demo, tmp_path_factory) -> Path:
    """The tiny demo dataset plus a 40-sample demo HPAv18 folder (added by the CLI)."""
    root = tmp_path_factory.mktemp("ext") / "demo"
    shutil.copytree(tiny_demo, root)
    before = _digest(root)
    assert run_command("demo-data", ["--out", str(root), "--external", "40"]) == 0
    assert _digest(root) == before               # the Kaggle-layout part is untouched
    return root


def _leak(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["--set", f"data.root={root}", "--set", f"data.cache_dir={tmp / 'cache'}",
            "--external-csv", str(root / "hpav18.csv"), "--external-dir", str(root / "hpav18"),
            "--out", str(tmp / "leak"), *extra]


def test_demo_external_folder(demo_ext, tmp_path):
    labels = read_hpav18_labels(demo_ext / "hpav18.csv")
    assert len(labels) == 40 and labels["Id"].is_monotonic_increasing
    names = {p.name for p in (demo_ext / "hpav18").iterdir()}
    short = [i for i in labels["Id"] if f"{i}_red.jpg" not in names]
    assert 0 < len(short) < 40 and all(f"{hpav18_short_id(i)}_red.jpg" in names for i in short)
    assert len(names) == 160
    sides = {cv2.imread(str(demo_ext / "hpav18" / n)).shape[0] for n in names if n.endswith("_red.jpg")}
    assert sides == {48, 64, 96}                 # 1.5x, 2x, 3x the 32 px demo
    jpg = cv2.imread(str(demo_ext / "hpav18" / next(n for n in sorted(names) if n.endswith("_blue.jpg"))))
    assert jpg[..., 0].mean() > 5 * (jpg[..., 1].mean() + jpg[..., 2].mean() + 0.1)   # blue signal in B
    planted = pd.read_csv(demo_ext / "hpav18_planted.csv", dtype=str, keep_default_na=False)
    assert planted["kind"].value_counts().to_dict() == {"twin": 7, "decoy_dim_green": 2, "decoy_same_cells": 1}
    assert planted[planted.kind == "twin"]["twin_source"].value_counts().to_dict() == \
        {"train": 4, "test": 2, "external": 1}
    # a twin carries its Kaggle image's labels (the hidden test labels for a test twin)
    test = read_labels(demo_ext / "test_labels.csv").set_index("Id")["Target"]
    t = planted[planted.twin_source == "test"].iloc[0]
    assert labels.set_index("Id")["Target"][t.Id] == test[t.twin_id]
    # the image cache reads the folder, both file-name forms, through the hpav18 reader
    arr = open_images(demo_ext / "hpav18", labels["Id"], 16, "hpav18", cache_dir=tmp_path)
    assert arr.shape == (40, 16, 16, 4)
    np.testing.assert_array_equal(arr[labels["Id"].tolist().index(short[0])],
                                  read_hpav18_rgby(demo_ext / "hpav18", short[0], 16))
    # same seed, same bytes
    again = tmp_path / "again"
    shutil.copytree(demo_ext, again, ignore=shutil.ignore_patterns("hpav18*"))
    make_external_demo(again, 40)
    assert _digest(again, skip="x") == _digest(demo_ext, skip="x")
    with pytest.raises(HPAError, match=r"hpav18: exists \(use --overwrite to rebuild the demo dataset\)"):
        make_external_demo(again, 40)


def test_leak_report_finds_the_planted_twins(demo_ext, tmp_path, capsys):
    drop = tmp_path / "hpav18_no_test.csv"
    args = _leak(demo_ext, tmp_path, "--examples", "3", "--planted", str(demo_ext / "hpav18_planted.csv"),
                 "--drop-test-duplicates", str(drop))
    assert run_command("leak-report", args) == 0
    out = capsys.readouterr().out
    assert ("40 external images: 4 duplicate a Kaggle train image, 2 a Kaggle test image, "
            "2 another external image") in out
    assert "Kaggle: 0 train-train and 0 train-test duplicate pairs among 96 train and 24 test images" in out
    assert "planted twins found: 7 of 7; false matches: 0 (decoys linked: 0; green-only hashing would link" in out
    summary = json.loads((tmp_path / "leak" / "summary.json").read_text())
    assert summary["pairs"] == {"external-test": 2, "external-train": 4, "external-external": 1,
                                "train-test": 0, "train-train": 0, "test-test": 0}
    pairs = pd.read_csv(tmp_path / "leak" / "pairs.csv", dtype=str)
    assert pairs.columns.tolist() == ["source_a", "id_a", "source_b", "id_b", "green_bits", "blue_bits"]
    planted = json.loads((tmp_path / "leak" / "planted.json").read_text())
    assert planted["green_only_links"] > 7       # the empty-green decoys: linked by green alone
    groups = pd.read_csv(tmp_path / "leak" / "duplicates.csv", dtype=str)
    assert len(groups) == 96 + 24 + 40
    assert cv2.imread(str(tmp_path / "leak" / "pairs.png")).shape[0] > 300
    kept = pd.read_csv(drop, dtype=str)
    test_twins = set(pd.read_csv(demo_ext / "hpav18_planted.csv", dtype=str).query("twin_source == 'test'")["Id"])
    assert len(kept) == 38 and not set(kept["Id"]) & test_twins
    assert f"wrote {drop}: 38 external Ids (2 duplicating Kaggle test images dropped)" in out


def test_ids_without_images_and_skip_missing(demo_ext, tmp_path, capsys):
    root = tmp_path / "demo"
    shutil.copytree(demo_ext, root)
    ids = read_hpav18_labels(root / "hpav18.csv")["Id"].tolist()
    gone = sorted(ids)[3], sorted(ids)[10]
    for i in gone:
        for p in (root / "hpav18").glob(f"*{hpav18_short_id(i)}_green.jpg"):
            p.unlink()
    assert run_command("leak-report", _leak(root, tmp_path)) == 2
    assert capsys.readouterr().err == (f"error: {root / 'hpav18.csv'}: 2 of 40 Ids have no images in "
                                       f"{root / 'hpav18'} (first: {gone[0]}); download them "
                                       "(hpa download --hpav18) or pass --skip-missing\n")
    assert not (tmp_path / "leak").exists()      # nothing written
    assert run_command("leak-report", _leak(root, tmp_path, "--skip-missing")) == 0
    assert "skipping 2 of 40 external Ids without images" in capsys.readouterr().out
    assert require_images("x.csv", root / "hpav18", ids, skip_missing=True) == [i for i in ids if i not in gone]


def test_bad_external_input_is_one_line(demo_ext, tmp_path, capsys):
    root = tmp_path / "demo"
    shutil.copytree(demo_ext, root)
    bad = sorted((root / "hpav18").glob("*_yellow.jpg"))[5]
    bad.write_bytes(bad.read_bytes()[:200])      # truncated JPEG
    # yellow is not hashed: the leak report passes, the image cache (which reads all four stains) stops
    assert run_command("leak-report", _leak(root, tmp_path)) == 0
    ids = read_hpav18_labels(root / "hpav18.csv")["Id"].tolist()
    with pytest.raises(HPAError, match="unreadable or truncated image"):
        open_images(root / "hpav18", ids, 16, "hpav18", cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.npy"))
    bad_green = sorted((root / "hpav18").glob("*_green.jpg"))[5]
    bad_green.write_bytes(b"not a jpeg")
    assert run_command("leak-report", _leak(root, tmp_path, "--set", "data.cache_dir=" + str(tmp_path / "c2"))) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {bad_green}: unreadable or truncated image"
    # a Kaggle train.csv given as the external label file
    args = _leak(root, tmp_path)
    args[args.index(str(root / "hpav18.csv"))] = str(root / "train.csv")
    assert run_command("leak-report", args) == 2
    assert "is not an HPAv18 Id" in capsys.readouterr().err
    # PNG and JPEG stain files mixed in one external folder
    (root / "hpav18" / "1_2_A1_1_red.png").write_bytes(b"")
    assert run_command("leak-report", _leak(root, tmp_path)) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"error: {root / 'hpav18'}: holds both JPEG and PNG "
                                                        "stain files; keep one format per folder")
    assert run_command("demo-data", ["--out", str(root), "--external", "5"]) == 2
    assert capsys.readouterr().err == "error: --external: must be an integer >= 10, got 5\n"
