"""Multilabel-stratified folds, duplicate-aware grouping, the fold table and ``hpa folds``."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.data.folds import (duplicate_groups, fold_table, green_hashes, hash_pairs, make_folds,
                            read_folds)
from hpa.data.images import write_kaggle_rgby
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError


def _labels_df(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(f"img{i:03d}", " ".join(map(str, sorted(set(rng.integers(0, 28, rng.integers(1, 3)))))))
            for i in range(n)]
    df = pd.DataFrame(rows, columns=["Id", "Target"])
    df["labels"] = [[int(x) for x in t.split()] for t in df["Target"]]
    return df


@pytest.fixture
def noise_images(tmp_path):
    """Eight 32 px random images; 'dupA' copies img0 exactly, 'dupB' is img3 with faint noise."""
    rng = np.random.default_rng(1)
    d = tmp_path / "train"
    imgs = {f"img{i}": rng.integers(0, 256, (32, 32, 4), dtype=np.uint8) for i in range(8)}
    imgs["dupA"] = imgs["img0"].copy()
    imgs["dupB"] = np.clip(imgs["img3"].astype(int) + rng.integers(-2, 3, (32, 32, 4)), 0, 255).astype(np.uint8)
    for k, v in imgs.items():
        write_kaggle_rgby(d, k, v)
    return d, list(imgs)


def test_real_train_csv_every_class_within_one_of_count_over_k(shared_hpa):
    df = read_labels(shared_hpa / "train.csv")
    assert len(df) == 31072
    t0 = time.perf_counter()
    folds = make_folds(df, n_splits=5, seed=42)
    elapsed = time.perf_counter() - t0
    assert elapsed < 30                                 # ~0.8 s on one shared CPU core
    y = label_matrix(df)
    table = fold_table(df, folds)
    counts = table[[f"fold{k}" for k in range(5)]].to_numpy()
    ok = y.sum(axis=0) >= 5
    dev = np.abs(counts - y.sum(axis=0)[:, None] / 5)[ok]
    assert dev.max() <= 1.0
    assert table["total"].tolist() == y.sum(axis=0).tolist()
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4]
    assert folds.index.tolist() == df["Id"].tolist()


def test_make_folds_is_deterministic_and_seeded():
    df = _labels_df()
    a, b, c = make_folds(df, 4, 7), make_folds(df, 4, 7), make_folds(df, 4, 8)
    assert a.equals(b) and not a.equals(c)
    assert a.name == "fold" and a.index.name == "Id"
    assert np.bincount(a).sum() == 120 and np.abs(np.bincount(a) - 30).max() <= 2


def test_groups_share_a_fold():
    df = _labels_df()
    groups = np.arange(len(df)) // 3                    # 40 groups of three
    folds = make_folds(df, 5, 0, groups=groups)
    per_group = pd.Series(folds.to_numpy()).groupby(groups).nunique()
    assert (per_group == 1).all()
    assert folds.nunique() == 5


def test_bad_requests():
    df = _labels_df(4)
    with pytest.raises(HPAError, match="folds: n_splits must be >= 2, got 1"):
        make_folds(df, 1)
    with pytest.raises(HPAError, match="folds: 4 samples \\(or groups\\) cannot fill 5 folds"):
        make_folds(df, 5)
    with pytest.raises(HPAError, match="folds: 3 group ids for 4 rows"):
        make_folds(df, 2, groups=[0, 1, 2])


def test_hash_pairs_matches_brute_force():
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**63, 300, dtype=np.uint64)
    h[10] = h[200] ^ np.uint64(0b1011)                  # 3 bits apart
    h[50] = h[51] ^ np.uint64(0b11111)                  # 5 bits apart: over a threshold of 4
    pairs = hash_pairs(h, threshold=4, block=64)
    brute = [(i, j) for i in range(300) for j in range(i + 1, 300) if bin(int(h[i] ^ h[j])).count("1") <= 4]
    assert sorted(map(tuple, pairs.tolist())) == brute == [(10, 200)]
    assert hash_pairs(h, threshold=5).tolist() == [[10, 200], [50, 51]]


def test_planted_duplicates_are_grouped(noise_images):
    d, ids = noise_images
    hashes = green_hashes(d, ids)
    assert hashes.dtype == np.uint64 and hashes[0] == hashes[ids.index("dupA")]
    groups = duplicate_groups(d, ids, threshold=4)
    assert groups[0] == groups[ids.index("dupA")]
    assert groups[3] == groups[ids.index("dupB")]
    assert len(set(groups.tolist())) == len(ids) - 2   # nothing else joined


def test_planted_duplicate_lands_in_same_fold_cli(noise_images, tmp_path, capsys):
    d, ids = noise_images
    labels = tmp_path / "train.csv"
    labels.write_text("Id,Target\n" + "".join(f"{k},{i % 3}\n" for i, k in enumerate(ids)))
    out = tmp_path / "folds.csv"
    for seed in range(4):
        rc = run_command("folds", ["--labels", str(labels), "--out", str(out), "--k", "3",
                                   "--seed", str(seed), "--dedup", "--image-dir", str(d)])
        assert rc == 0
        f = read_folds(out)
        assert f["img0"] == f["dupA"] and f["img3"] == f["dupB"]
    text = capsys.readouterr().out
    assert "2 images joined to duplicates" in text and "fold2" in text


def test_folds_cli_from_config_writes_default_location(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    df = _labels_df(60)
    df[["Id", "Target"]].to_csv(root / "train.csv", index=False)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  root: {root}\nfolds:\n  n_splits: 3\n  seed: 5\n")
    assert run_command("folds", ["--config", str(cfg)]) == 0
    written = pd.read_csv(root / "folds.csv", dtype={"Id": str})
    assert written.columns.tolist() == ["Id", "fold"]
    assert written["Id"].tolist() == df["Id"].tolist()
    assert written["fold"].tolist() == make_folds(df, 3, 5).tolist()
    assert run_command("folds", ["--config", str(cfg), "--set", "folds.n_splits=4",
                                 "--out", str(tmp_path / "f4.csv")]) == 0
    assert read_folds(tmp_path / "f4.csv").max() == 3
    out = capsys.readouterr().out
    assert "Nucleoplasm" in out and f"wrote {root / 'folds.csv'}: 60 Ids in 3 folds (seed 5)" in out


def test_folds_cli_errors(tmp_path, capsys):
    assert run_command("folds", []) == 2
    assert capsys.readouterr().err == "error: hpa folds: give --config or --labels\n"
    (tmp_path / "t.csv").write_text("Id,Target\na,1\n")
    assert run_command("folds", ["--labels", str(tmp_path / "t.csv"), "--dedup"]) == 2
    assert capsys.readouterr().err == "error: hpa folds: --dedup needs --image-dir\n"


def test_read_folds_rejects_bad_rows(tmp_path):
    (tmp_path / "f.csv").write_text("Id,fold\na,0\nb,x\n")
    with pytest.raises(HPAError, match=r"f.csv: row 3 \(Id b\): fold 'x' is not a non-negative integer"):
        read_folds(tmp_path / "f.csv")
    (tmp_path / "g.csv").write_text("Id,fold\na,0\na,1\n")
    with pytest.raises(HPAError, match="g.csv: duplicate Id 'a'"):
        read_folds(tmp_path / "g.csv")


def test_copied_demo_image_is_grouped_and_shares_a_fold(tiny_demo, tmp_path):
    import shutil

    df = read_labels(tiny_demo / "train.csv")
    d = tmp_path / "train"
    shutil.copytree(tiny_demo / "train", d)
    src = df["Id"].iat[7]
    for c in ("red", "green", "blue", "yellow"):
        shutil.copy(d / f"{src}_{c}.png", d / f"copy_{c}.png")
    df = pd.concat([df, pd.DataFrame({"Id": ["copy"], "Target": [df["Target"].iat[7]],
                                      "labels": [df["labels"].iat[7]]})], ignore_index=True)
    groups = duplicate_groups(d, df["Id"], threshold=4)
    assert groups[7] == groups[-1]
    assert len(set(groups.tolist())) == len(df) - 1     # the demo images themselves are all distinct
    for seed in range(3):
        folds = make_folds(df, 5, seed, groups=groups)
        assert folds[src] == folds["copy"]


@pytest.mark.parametrize("threshold", [0, 2, 4, 7, 16])
def test_hash_pairs_on_clusters_matches_brute_force(threshold):
    """Many identical and near-identical hashes (a blank-image cluster, pairs 1-6 bits apart): the
    chunked search finds exactly the pairs comparing all of them finds."""
    rng = np.random.default_rng(threshold)
    h = rng.integers(0, 2**63, 400, dtype=np.uint64)
    h[:40] = h[0]                                           # 40 identical hashes
    for k in range(40, 200, 2):                             # pairs 1-6 bits apart
        flips = rng.choice(64, size=int(rng.integers(1, 7)), replace=False)
        h[k + 1] = h[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    brute = np.argwhere(np.triu(dist <= threshold, k=1))
    np.testing.assert_array_equal(hash_pairs(h, threshold), brute)
