"""Near-duplicates across Kaggle train, Kaggle test and HPAv18 (``hpa.data.duplicates``) and the
duplicate-aware folds over train + HPAv18 (``hpa folds --dedup --external-csv``)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

import hpa.data.duplicates as dup
from hpa.cli import run_command
from hpa.data.folds import external_folds
from hpa.data.duplicates import (ImageSource, find_duplicates, hash_images, leaking_external,
                                 near_pairs, read_groups)
from hpa.data.folds import read_folds
from hpa.data.images import read_hpav18_rgby, read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.demo.external import write_hpav18_jpegs

HPAV18 = ["10580_1610_C1_1", "10580_1610_C1_2", "10580_1756_B1_1", "10580_1756_B1_2", "10580_1758_B1_1",
          "10580_1758_B1_2", "11088_89_B5_1", "30741_800_A6_1"]


def test_near_pairs_is_exact_on_every_column():
    rng = np.random.default_rng(5)
    h = rng.integers(0, 2**63, (500, 2), dtype=np.uint64)
    for a in range(0, 490, 9):                          # planted pairs 0-6 bits apart in each column
        h[a + 1] = h[a] ^ rng.integers(0, 64, 2).astype(np.uint64)
    h[300:380, 1] = h[300, 1]                           # 80 equal reference hashes: one big bucket
    h[350, 0] = h[340, 0]                               # ... holding one exact pair
    counts = []
    for t in (0, 3, 4):
        pairs, bits = near_pairs(h, t)
        brute = [(i, j) for i in range(500) for j in range(i + 1, 500)
                 if all(bin(int(h[i, s] ^ h[j, s])).count("1") <= t for s in (0, 1))]
        assert list(map(tuple, pairs.tolist())) == brute and (340, 350) in brute
        assert bits.shape == (len(brute), 2) and bits.max() <= t
        counts.append(len(brute))
    assert counts[0] < counts[1] < counts[2] and counts[2] > 10
    assert near_pairs(h[:1], 4)[0].shape == (0, 2)


@pytest.mark.slow
def test_real_hpav18_jpeg_and_its_512_png_hash_alike_and_real_images_do_not(shared_hpa, tmp_path):
    d = shared_hpa / "real-samples" / "hpav18"
    for i in HPAV18:                                    # the Kaggle-style copy: 512 px 8-bit PNGs
        write_kaggle_rgby(tmp_path / "k", i, read_hpav18_rgby(d, i, 512))
    kaggle = shared_hpa / "real-samples" / "kaggle"
    real = read_labels(kaggle / "train.csv")["Id"].tolist()
    sources = [ImageSource("external", d, HPAV18, "hpav18"), ImageSource("train", tmp_path / "k", HPAV18),
               ImageSource("test", kaggle / "train", real)]
    groups, pairs = find_duplicates(sources, threshold=4, progress=False)
    assert len(pairs) == 8                              # each JPEG with its own PNG, nothing else
    assert (pairs["source_a"] == "external").all() and (pairs["id_a"] == pairs["id_b"]).all()
    assert pairs["green_bits"].max() <= 2 and pairs["blue_bits"].max() <= 2
    assert (groups["group_size"] == np.where(groups["source"] == "test", 1, 2)).all()
    # different real images (incl. two fields of one well) are far apart: 18+ bits in green and blue
    h = np.concatenate([hash_images(s, ("green", "blue"), progress=False) for s in sources[::2]])
    dist = np.bitwise_count(h[:, None] ^ h[None])
    assert np.sort(dist.max(axis=2)[np.triu_indices(len(h), 1)])[0] >= 18


def test_green_and_reference_must_both_match(tmp_path):
    """Same cells with another protein, and two empty green stains: neither is a duplicate."""
    rng = np.random.default_rng(0)
    from hpa.demo.dataset import render_sample

    a, b, c = (render_sample([k], 64, np.random.default_rng(k)) for k in (7, 23, 11))
    other_protein = a.copy()
    other_protein[..., 1] = b[..., 1]                   # a's cells (red, blue, yellow), b's protein
    empty1, empty2 = b.copy(), c.copy()
    empty1[..., 1] = 0
    empty2[..., 1] = (rng.random((64, 64)) < 0.01)      # black but for a few 1-level specks
    twin = np.clip(a * 1.1 + rng.normal(0, 2, a.shape), 0, 255).astype(np.uint8)
    for name, img in {"a": a, "other_protein": other_protein, "empty1": empty1, "empty2": empty2,
                      "twin": twin}.items():
        write_kaggle_rgby(tmp_path, name, img)
    ids = ["a", "other_protein", "empty1", "empty2", "twin"]
    h = hash_images(ImageSource("train", tmp_path, ids), ("green", "blue"), progress=False)
    assert np.bitwise_count(h[2, 0] ^ h[3, 0]) <= 4     # empty greens: green alone would link them
    _, pairs = find_duplicates([ImageSource("train", tmp_path, ids)], threshold=4, progress=False)
    assert pairs[["id_a", "id_b"]].values.tolist() == [["a", "twin"]]


def test_hash_cache_reads_each_image_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    for k in range(6):
        write_kaggle_rgby(tmp_path / "img", f"i{k}", rng.integers(0, 255, (24, 24, 4), dtype=np.uint8))
    calls = []
    real = dup.read_stain
    monkeypatch.setattr(dup, "read_stain", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    src = ImageSource("train", tmp_path / "img", [f"i{k}" for k in range(6)])
    first = hash_images(src, cache_dir=tmp_path / "cache", progress=False)
    assert len(calls) == 12                             # green + blue of 6 images
    again = hash_images(src, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(first, again)
    assert len(calls) == 12                             # all from the cache
    write_kaggle_rgby(tmp_path / "img", "i2", rng.integers(0, 255, (24, 24, 4), dtype=np.uint8))
    os.utime(tmp_path / "img" / "i2_green.png", ns=(1, 1))   # make sure the stamp changes
    third = hash_images(src, cache_dir=tmp_path / "cache", progress=False)
    assert calls[12:] == ["i2", "i2"] and not (third[2] == first[2]).all()
    cached = pd.read_csv(next((tmp_path / "cache").glob("phash_kaggle_*.csv")), dtype=str)
    assert cached.columns.tolist() == ["Id", "stamp", "green", "blue"] and len(cached) == 6


def test_union_folds_keep_external_twins_with_their_train_image(tiny_demo, tmp_path, capsys):
    """Train images 3 and 9 are not alike, but one external image copies 3 and another copies 9 AND
    the two external images are one sample: all four must land in one fold, whatever the seed."""
    train = read_labels(tiny_demo / "train.csv")
    t3, t9 = train["Id"].iat[3], train["Id"].iat[9]
    ext = tmp_path / "hpav18"
    ext.mkdir()
    img3, img9 = read_kaggle_rgby(tiny_demo / "train", t3), read_kaggle_rgby(tiny_demo / "train", t9)
    write_hpav18_jpegs(ext, "1_1_A1_1", np.kron(img3, np.ones((2, 2, 1), np.uint8)), 95)
    write_hpav18_jpegs(ext, "2_2_A1_1", np.kron(img3, np.ones((3, 3, 1), np.uint8)), 90)   # short name...
    shutil.move(ext / "2_2_A1_1_red.jpg", ext / "2_A1_1_red.jpg")                          # ...for one stain
    write_hpav18_jpegs(ext, "3_3_A1_1", np.kron(img9, np.ones((2, 2, 1), np.uint8)), 95)
    pd.DataFrame({"Id": ["1_1_A1_1", "2_2_A1_1", "3_3_A1_1"], "Target": ["0", "0", "5"]}).to_csv(
        tmp_path / "ext.csv", index=False)
    base = ["folds", "--labels", str(tiny_demo / "train.csv"), "--dedup", "--image-dir", str(tiny_demo / "train"),
            "--external-csv", str(tmp_path / "ext.csv"), "--external-dir", str(ext), "--k", "4",
            "--hash-cache", str(tmp_path / "cache")]
    for seed in range(3):
        out = tmp_path / f"f{seed}.csv"
        assert run_command(base[0], base[1:] + ["--seed", str(seed), "--out", str(out)]) == 0
        assert read_folds(out).index.tolist() == train["Id"].tolist()   # train Ids only, in order
    text = capsys.readouterr().out
    assert "3 of 3 external images duplicate a train image" in text
    groups = read_groups(tmp_path / "duplicates.csv")
    assert groups.columns.tolist() == ["source", "Id", "group", "group_size"] and len(groups) == 99
    g = groups.set_index(["source", "Id"])["group"]
    assert g["external", "1_1_A1_1"] == g["external", "2_2_A1_1"] == g["train", t3]
    assert g["external", "3_3_A1_1"] == g["train", t9] != g["train", t3]
    folds = read_folds(tmp_path / "f0.csv")
    ext_fold = external_folds(groups, folds, ["1_1_A1_1", "2_2_A1_1", "3_3_A1_1"], 4)
    assert ext_fold.tolist() == [folds[t3], folds[t3], folds[t9]]
    same = {"3_3_A1_1"} if folds[t9] == folds[t3] else set()
    assert leaking_external(groups, folds, folds[t3]) == {"1_1_A1_1", "2_2_A1_1"} | same
    assert leaking_external(groups, folds, (folds[t3] + 1) % 4) == ({"3_3_A1_1"} - same if
                                                                    folds[t9] == (folds[t3] + 1) % 4 else set())


def test_external_folds_spread_unlinked_images_over_whole_groups():
    groups = pd.DataFrame({"source": ["train"] * 4 + ["external"] * 9,
                           "Id": [f"t{k}" for k in range(4)] + [f"e{k}" for k in range(9)],
                           "group": [0, 1, 2, 3, 0, 7, 7, 8, 9, 10, 11, 12, 13]})
    folds = pd.Series([0, 1, 2, 0], index=pd.Index([f"t{k}" for k in range(4)], name="Id"))
    ids = [f"e{k}" for k in range(9)]
    f = external_folds(groups, folds, ids, 3, seed=0)
    assert f["e0"] == 0 and f["e1"] == f["e2"]          # linked to t0; one group kept whole
    assert sorted(set(f.tolist())) == [0, 1, 2]
    with pytest.raises(HPAError, match="no external Id 'e9'"):
        external_folds(groups, folds, ids + ["e9"], 3)
