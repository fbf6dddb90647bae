"""The synthetic demo dataset: layout, label floors, determinism, atomic writes, CLI."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.classes import NUM_CLASSES, label_set_table
from hpa.cli import run_command
from hpa.demo import dataset as demo
from hpa.demo.dataset import make_demo_dataset, make_ids, render_sample, sample_label_sets
from hpa.demo.patterns import PATTERNS
from hpa.data.images import CHANNELS, read_kaggle_rgby
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


def test_tiny_demo_has_the_kaggle_layout(tiny_demo):
    assert sorted(p.name for p in tiny_demo.iterdir()) == [
        "sample_submission.csv", "test", "test_labels.csv", "train", "train.csv"]
    train, test = read_labels(tiny_demo / "train.csv"), read_labels(tiny_demo / "test_labels.csv")
    assert (len(train), len(test)) == (96, 24)
    assert all(UUID.match(i) for i in list(train.Id) + list(test.Id))
    assert not set(train.Id) & set(test.Id)
    sub = pd.read_csv(tiny_demo / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == ["Id", "Predicted"]
    assert list(sub.Id) == list(test.Id) and set(sub.Predicted) == {"0"}
    assert len(list((tiny_demo / "train").iterdir())) == 4 * 96
    assert len(list((tiny_demo / "test").iterdir())) == 4 * 24
    for c in CHANNELS:
        png = cv2.imread(str(tiny_demo / "train" / f"{train.Id[0]}_{c}.png"), cv2.IMREAD_UNCHANGED)
        assert png.shape == (32, 32) and png.dtype == np.uint8
    assert read_kaggle_rgby(tiny_demo / "test", test.Id[0]).shape == (32, 32, 4)
    assert not list(tiny_demo.parent.glob(f".{tiny_demo.name}.*"))  # no temp folder left


def test_tiny_demo_class_floor_and_multilabel(tiny_demo):
    y = label_matrix(read_labels(tiny_demo / "train.csv"))
    assert y.sum(0).min() >= 5
    assert (y.sum(1) > 1).mean() > 0.3
    yt = label_matrix(read_labels(tiny_demo / "test_labels.csv"))
    assert yt.sum(0).min() >= 1  # floor max(1, 5 // 4) reached even with 24 test images


def test_label_sets_follow_the_real_table():
    sets = sample_label_sets(3000, np.random.default_rng(0), floor=0, grow=False)
    top = [s for s, _ in Counter(sets).most_common(4)]
    assert set(top[:2]) == {(0,), (0, 25)}
    real = dict(label_set_table())
    total = sum(real.values())
    for s in [(0,), (0, 25), (23,), (25,)]:
        assert abs(sets.count(s) / 3000 - real[s] / total) < 0.015


def test_floor_replaces_then_grows():
    sets = sample_label_sets(30, np.random.default_rng(1), floor=3, grow=True)
    counts = np.zeros(NUM_CLASSES, int)
    for s in sets:
        counts[list(s)] += 1
    assert counts.min() >= 3 and len(sets) >= 30
    small = sample_label_sets(10, np.random.default_rng(1), floor=1, grow=False)
    assert len(small) == 10  # best effort: never more rows than asked


def test_ids_are_deterministic_and_distinct():
    a, b = make_ids(50, np.random.default_rng(7)), make_ids(50, np.random.default_rng(7))
    assert a == b and len(set(a)) == 50 and all(UUID.match(i) for i in a)


@pytest.mark.parametrize("cls", range(NUM_CLASSES))
def test_every_class_draws_a_visible_green_pattern(cls):
    assert sorted(PATTERNS) == list(range(NUM_CLASSES))
    img = render_sample([cls], 64, np.random.default_rng([3, cls]))
    assert img.shape == (64, 64, 4) and img.dtype == np.uint8
    green, blue = img[..., 1].astype(int), img[..., 2].astype(int)
    assert green.max() > 100  # the pattern stands out of the noise floor (see the next test)
    assert 0.02 < (blue > 60).mean() < 0.7  # nuclei present but not everywhere


def test_no_label_leaves_only_green_noise():
    for seed in range(5):
        img = render_sample([], 64, np.random.default_rng(seed))
        assert img[..., 1].max() < 60 and img[..., 0].max() > 100 and img[..., 2].max() > 100


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_train=12, n_test=4, size=32, min_per_class=0)
    s = make_demo_dataset(tmp_path / "a", seed=5, contact_sheet=True, progress=False, **kw)
    make_demo_dataset(tmp_path / "b", seed=5, contact_sheet=True, progress=False, **kw)
    make_demo_dataset(tmp_path / "c", seed=6, contact_sheet=False, progress=False, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert (tmp_path / "a" / "contact_sheet.png").stat().st_size > 10_000
    assert _digest(tmp_path / "a" / "train") != _digest(tmp_path / "c" / "train")
    assert (s["n_train"], s["n_test"], len(s["train_class_counts"])) == (12, 4, NUM_CLASSES)


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(HPAError, match=r"d: folder exists and is not empty \(use --overwrite to replace it\)$"):
        make_demo_dataset(out, n_train=4, n_test=2, size=32, min_per_class=0, progress=False)
    with pytest.raises(HPAError, match=r"d: refusing to overwrite a folder without train.csv \(not a dataset\)$"):
        make_demo_dataset(out, n_train=4, n_test=2, size=32, min_per_class=0, overwrite=True)
    (out / "train.csv").write_text("Id,Target\n")
    make_demo_dataset(out, n_train=4, n_test=2, size=32, min_per_class=0, progress=False,
                      contact_sheet=False, overwrite=True)
    assert not (out / "keep.txt").exists() and len(read_labels(out / "train.csv")) == 4


def test_failure_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    calls = []

    def broken(folder, image_id, img):
        calls.append(image_id)
        if len(calls) == 3:
            raise OSError("disk full")
        Path(folder).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(demo, "write_kaggle_rgby", broken)
    with pytest.raises(OSError, match="disk full"):
        make_demo_dataset(tmp_path / "e", n_train=6, n_test=2, size=32, min_per_class=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_reports_bad_args(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--n-train", "8", "--n-test", "3", "--size", "32",
            "--min-per-class", "0", "--no-contact-sheet"]
    assert run_command("demo-data", argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"demo dataset: 8 train + 3 test images of 32 px in {out} (")
    assert run_command("demo-data", ["--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert capsys.readouterr().err.strip() == "error: size: must be an integer >= 16, got 8"
    assert run_command("demo-data", argv) == 2
    assert "folder exists and is not empty" in capsys.readouterr().err
