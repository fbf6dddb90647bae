"""The memory-mapped image cache, check_images, HPADataset and load_split."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from hpa.cli import run_command
from hpa.config import ExperimentConfig
from hpa.data.cache import LazyImages, cache_path, check_images, open_images
from hpa.data.dataset import HPADataset, load_split, subset_fraction
from hpa.data.folds import make_folds, write_folds
from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError

IDS = [f"s{i}" for i in range(6)]


@pytest.fixture
def images(tmp_path):
    """Six random 40 px Kaggle-layout samples; returns (folder, ids, arrays)."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 40, 4), dtype=np.uint8) for _ in IDS]
    for i, a in zip(IDS, arrays):
        write_kaggle_rgby(tmp_path / "train", i, a)
    return tmp_path / "train", IDS, arrays


def test_cache_is_a_readonly_memmap_equal_to_the_lazy_reader(images, tmp_path):
    d, ids, _ = images
    arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    assert isinstance(arr, np.memmap) and arr.shape == (6, 32, 32, 4) and arr.dtype == np.uint8
    assert not arr.flags.writeable
    lazy = open_images(d, ids, 32, cache=False)
    assert isinstance(lazy, LazyImages) and len(lazy) == 6
    for i in range(6):
        np.testing.assert_array_equal(arr[i], lazy[i])
        np.testing.assert_array_equal(arr[i], read_kaggle_rgby(d, ids[i], 32))
    meta = json.loads(cache_path(d, ids, 32, cache_dir=tmp_path / "cache").with_suffix(".json").read_text())
    assert (meta["ids"], meta["size"], meta["kind"]) == (ids, 32, "kaggle")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [Path(arr.filename).name, Path(arr.filename).with_suffix(".json").name])


def test_cache_is_reused_and_keyed_by_ids_and_size(images, tmp_path, monkeypatch):
    d, ids, arrays = images
    first = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    import hpa.data.cache as cache_mod
    monkeypatch.setattr(cache_mod, "build_cache", lambda *a, **k: pytest.fail("rebuilt a good cache"))
    again = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    assert again.filename == first.filename
    monkeypatch.undo()
    other = [cache_path(d, ids[::-1], 32, cache_dir=tmp_path), cache_path(d, ids, 16, cache_dir=tmp_path),
             cache_path(d, ids, 32, "hpav18", tmp_path)]
    assert len({p.name for p in other} | {Path(first.filename).name}) == 4
    rev = open_images(d, ids[::-1], 40, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(rev[0], arrays[-1])   # 40 px: no resize, exact pixels


def test_bad_cache_is_rebuilt_with_a_warning(images, tmp_path):
    d, ids, _ = images
    arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    path, good = arr.filename, np.array(arr)
    del arr
    with open(path, "r+b") as f:                        # truncate: a crash mid-copy, say
        f.truncate(1000)
    with pytest.warns(UserWarning, match="bad image cache .*rebuilding"):
        arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(arr, good)
    meta_path = cache_path(d, ids, 32, cache_dir=tmp_path / "cache").with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["size"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="sidecar does not match"):
        open_images(d, ids, 32, cache_dir=tmp_path / "cache")


def test_read_error_names_the_file_and_leaves_no_cache(images, tmp_path):
    d, ids, _ = images
    (d / "s3_blue.png").write_bytes((d / "s3_blue.png").read_bytes()[:60])   # truncated PNG
    with pytest.raises(HPAError, match=r"s3_blue.png: unreadable or truncated image"):
        open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_check_images_names_every_missing_file_in_one_line(images):
    """One missing file is named alone; several are counted in one line (first five named), so a
    single rerun after fixing them is enough."""
    d, ids, _ = images
    assert check_images(d, ids) == 6
    (d / "s2_yellow.png").unlink()
    with pytest.raises(HPAError, match=r"^.*/train/s2_yellow.png: missing channel file$"):
        check_images(d, ids)
    (d / "s4_red.png").unlink()
    with pytest.raises(HPAError) as e:
        check_images(d, ids)
    assert str(e.value) == f"{d}: 2 missing channel files: s2_yellow.png, s4_red.png"
    for p in list(d.glob("s[0135]_*.png")):
        p.unlink()
    with pytest.raises(HPAError) as e:
        check_images(d, ids)
    assert str(e.value) == (f"{d}: 18 missing channel files: s0_red.png, s0_green.png, s0_blue.png, "
                            "s0_yellow.png, s1_red.png and 13 more")
    with pytest.raises(HPAError, match=r"unknown image kind 'tiff' \(valid: .*\bkaggle\b.*\)$"):
        check_images(d, ids, "tiff")
    with pytest.raises(HPAError, match=r"nowhere: image folder not found"):
        check_images(d.parent / "nowhere", ids)


def test_dataset_items_types_targets_and_transform(images, tmp_path):
    d, ids, _ = images
    arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    y = np.zeros((6, 28), np.uint8)
    y[1, [0, 25]] = 1
    ds = HPADataset(arr, y)
    x, t = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (4, 32, 32) and t.dtype == torch.float32
    assert t.nonzero().flatten().tolist() == [0, 25]
    np.testing.assert_array_equal(x.numpy(), np.transpose(arr[1], (2, 0, 1)))
    x0, t0 = HPADataset(arr)[0]
    assert t0.shape == (28,) and t0.sum() == 0
    flip = HPADataset(arr, y, A.Compose([A.HorizontalFlip(p=1.0)]))
    np.testing.assert_array_equal(flip[1][0].numpy(), x.numpy()[:, :, ::-1])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 4, 32, 32) and batch[1].shape == (4, 28)
    with pytest.raises(HPAError, match=r"HPADataset: targets shape \(5, 28\), expected \(6, 28\)"):
        HPADataset(arr, y[:5])
    bad = HPADataset(arr, transform=A.Compose([A.ToFloat(max_value=255)]))
    with pytest.raises(HPAError, match="transform must return an HxWx4 uint8 array, got ndarray"):
        bad[0]


def test_dataset_pickles_memmap_by_file_name(images, tmp_path):
    d, ids, _ = images
    arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    ds = HPADataset(arr)
    blob = pickle.dumps(ds)
    assert len(blob) < 2000                             # the 24 KiB of pixels did not travel
    back = pickle.loads(blob)
    assert isinstance(back.images, np.memmap)
    np.testing.assert_array_equal(back[3][0].numpy(), ds[3][0].numpy())


def _split_cfg(tmp_path, n=200, fraction=1.0):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    targets = [str(rng.integers(0, 26)) for _ in range(n - 3)] + ["27", "27 0", "15"]
    pd.DataFrame({"Id": [f"x{i}" for i in range(n)], "Target": targets}).to_csv(root / "train.csv", index=False)
    cfg = ExperimentConfig()
    cfg.data.root, cfg.data.fraction = str(root), fraction
    return cfg, root


def test_load_split_aligns_labels_and_folds(tmp_path):
    cfg, root = _split_cfg(tmp_path)
    df = read_labels(root / "train.csv")
    folds = make_folds(df, 5, 0)
    write_folds(root / "folds.csv", folds.iloc[::-1])   # folds.csv in another order
    out_df, y, f = load_split(cfg)
    assert out_df["Id"].tolist() == df["Id"].tolist() and y.shape == (200, 28)
    assert f.index.tolist() == df["Id"].tolist() and f.equals(folds)


def test_load_split_id_mismatch_and_missing_file(tmp_path):
    cfg, root = _split_cfg(tmp_path)
    with pytest.raises(HPAError, match=r"folds.csv: folds file not found \(run 'hpa folds --config"):
        load_split(cfg)
    folds = make_folds(read_labels(root / "train.csv"), 5, 0)
    write_folds(root / "folds.csv", folds.drop("x7"))
    with pytest.raises(HPAError, match=r"folds.csv: missing Id 'x7' of .*train.csv"):
        load_split(cfg)
    write_folds(root / "folds.csv", pd.concat([folds, pd.Series([1], index=["ghost"])]))
    with pytest.raises(HPAError, match=r"folds.csv: extra Id 'ghost' not in .*train.csv"):
        load_split(cfg)


def test_fraction_is_deterministic_nested_and_keeps_rare_classes(tmp_path):
    cfg, root = _split_cfg(tmp_path, fraction=0.25)
    write_folds(root / "folds.csv", make_folds(read_labels(root / "train.csv"), 5, 0))
    df, y, f = load_split(cfg)
    assert len(df) == 50 and f.index.tolist() == df["Id"].tolist()
    full_y = np.asarray(pd.read_csv(root / "train.csv")["Target"].str.split().map(
        lambda t: np.isin(np.arange(28), list(map(int, t)))).tolist(), dtype=np.uint8)
    assert ((y.sum(axis=0) > 0) == (full_y.sum(axis=0) > 0)).all()   # no class vanished
    assert y[:, 27].sum() >= 1 and full_y[:, 27].sum() == 2
    small, big = subset_fraction(full_y, 0.25, 1), subset_fraction(full_y, 0.5, 1)
    assert set(small) < set(big) and np.array_equal(small, subset_fraction(full_y, 0.25, 1))
    assert subset_fraction(full_y, 1.0, 1).tolist() == list(range(200))
    with pytest.raises(HPAError, match=r"data.fraction: must be in \(0, 1\], got 0.0"):
        subset_fraction(full_y, 0.0, 1)


def test_cache_cli_builds_train_and_test(tiny_demo, tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  root: {tiny_demo}\n  image_size: 16\n  cache_dir: {tmp_path / 'cache'}\n")
    assert run_command("cache", ["--config", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and ": 96 images at 16px" in out[0] and ": 24 images at 16px" in out[1]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 4 and all(n.startswith("kaggle_16_") for n in files)
    ids = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"].tolist()
    test = open_images(tiny_demo / "test", ids, 16, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(test[5], read_kaggle_rgby(tiny_demo / "test", ids[5], 16))


# ------------------------------------------------------------------ second round (issue 17)
def test_cache_is_rebuilt_when_a_source_image_changes_and_refused_when_one_vanishes(images, tmp_path, capsys):
    """The cache is keyed on what it was built from (file sizes and modification times), through
    `hpa cache` as through training (both call open_images)."""
    d, ids, arrays = images
    cache = tmp_path / "cache"
    old = np.array(open_images(d, ids, 40, cache_dir=cache))
    new = arrays[2][::-1].copy()                                  # same size on disk may not differ: time does
    write_kaggle_rgby(d, "s2", new)
    for c in ("red", "green", "blue", "yellow"):
        os.utime(d / f"s2_{c}.png", ns=(10**18, 10**18))
    with pytest.warns(UserWarning) as record:
        arr = open_images(d, ids, 40, cache_dir=cache)
    path = cache_path(d, ids, 40, cache_dir=cache)
    assert [str(w.message) for w in record] == [
        f"{path}: stale or bad image cache (4 source file(s) changed since it was built (size or "
        f"modification time), first {d / 's2_red.png'}); rebuilding"]
    np.testing.assert_array_equal(arr[2], new)
    np.testing.assert_array_equal(arr[1], old[1])
    (d / "s4_green.png").unlink()
    with pytest.raises(HPAError) as e:
        open_images(d, ids, 40, cache_dir=cache)
    assert str(e.value) == f"{d / 's4_green.png'}: missing channel file"


def test_cache_built_by_an_older_hpa_is_rebuilt(images, tmp_path):
    d, ids, _ = images
    arr = open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    meta_path = Path(arr.filename).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    assert len(meta["sources"]["size"]) == len(meta["sources"]["mtime_ns"]) == 24
    del meta["sources"]
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"built without the sizes and times of its source files"):
        open_images(d, ids, 32, cache_dir=tmp_path / "cache")
    assert "sources" in json.loads(meta_path.read_text())


def test_cache_build_checks_free_space_first_and_removes_stale_temporaries(images, tmp_path, monkeypatch):
    """The cache knows its size: too little space is one error before any image is decoded; a killed
    build's hidden temporary (gigabytes on the real data) is removed by the next build."""
    import shutil

    import hpa.data.cache as cache_mod
    d, ids, _ = images
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / ".kaggle_32_0123456789abcdef.npy.x1y2z3w4.tmp"
    stale.write_bytes(b"\0" * 2048)
    os.utime(stale, (1, 1))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    monkeypatch.setitem(cache_mod.IMAGE_READERS._items, "kaggle", lambda *a: pytest.fail("decoded"))
    with pytest.raises(HPAError) as e:
        open_images(d, ids, 32, cache_dir=cache)
    assert str(e.value) == (f"{cache_path(d, ids, 32, cache_dir=cache)}: the image cache needs 28.0 KiB but only "
                            f"9.8 KiB is free in {cache}; free some space or set data.cache_dir to a larger disk")
    assert os.listdir(cache) == []


def test_uncached_images_are_checked_up_front(images):
    """cache=False reads lazily, but a missing file is still reported before training starts."""
    d, ids, _ = images
    (d / "s5_blue.png").unlink()
    with pytest.raises(HPAError, match=r"s5_blue.png: missing channel file$"):
        open_images(d, ids, 32, cache=False)


def test_image_views_pickle_a_memmap_as_its_file(tmp_path):
    """RowView / ConcatImages over a memory-mapped cache reach DataLoader workers as the file name
    (re-opened there), not as a copy of the array; rows come out the same."""
    import pickle

    from hpa.data.views import ConcatImages, RowView

    arr = np.lib.format.open_memmap(tmp_path / "c.npy", mode="w+", dtype=np.uint8, shape=(5, 64, 64, 4))
    arr[:] = np.arange(5, dtype=np.uint8)[:, None, None, None]
    arr.flush()
    mm = np.load(tmp_path / "c.npy", mmap_mode="r")
    view = ConcatImages([RowView(mm, [4, 1]), [np.full((64, 64, 4), 9, np.uint8)]])
    blob = pickle.dumps(view)
    assert len(blob) < 64 * 64 * 4 + 2000                    # a file name and one list image, not 5 more
    back = pickle.loads(blob)
    assert [int(back[i][0, 0, 0]) for i in range(len(back))] == [4, 1, 9]
    assert isinstance(back.parts[0].images, np.memmap)
