"""SyntheticPool: per-fold leak exclusion with exact counts, provenance refusal, filter score, soft labels."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.synthetic.mixing.pool import SyntheticPool, load_manifests, read_pool_manifest
from hpa.synthetic.standin import make_standin


def make_synth(demo: Path, work: Path) -> dict:
    """3 folds over the tiny demo, a clean stand-in manifest (one folder per held-out fold, all three
    listed together) and a leaky one: copies of every real image, generator trained on 'fold 3' only,
    so for fold k exactly the rows whose source is in fold k must be dropped."""
    folds = make_folds(read_labels(demo / "train.csv"), 3, 0)
    folds_csv = write_folds(work / "folds.csv", folds)
    fold_of = pd.read_csv(folds_csv).set_index("Id")["fold"]
    clean = [make_standin(demo, fold_of, work / f"clean{k}", held_out=k, size=32) for k in range(3)]
    leaky = make_standin(demo, fold_of, work / "leaky", held_out=99, size=32)
    df = pd.read_csv(leaky, dtype=str, keep_default_na=False)
    df["generator_trained_on"] = "3"
    df.to_csv(leaky, index=False)
    return {"folds_csv": folds_csv, "fold_of": fold_of, "manifests": [str(m) for m in clean + [leaky]]}


@pytest.fixture(scope="module")
def synth(tiny_demo, tmp_path_factory):
    return make_synth(tiny_demo, tmp_path_factory.mktemp("synthpool"))


def split(fold_of, k):
    return fold_of.index[fold_of != k].tolist(), fold_of.index[fold_of == k].tolist()


def test_fold_pool_counts_and_no_validation_source(synth):
    fold_of, man = synth["fold_of"], load_manifests(synth["manifests"])
    assert len(man) == 2 * 96 + 96        # each real image twice in clean (2 of 3 folds), once leaky
    for k in range(3):
        tr, va = split(fold_of, k)
        pool = SyntheticPool.for_fold(man, k, tr, va, 32)
        n_val, n_tr = len(va), len(tr)
        other = sum(96 - (fold_of == j).sum() for j in range(3) if j != k)
        # clean rows of fold k's own folder (n_tr) + leaky rows whose source is in training (n_tr)
        assert pool.counts() == {"fold": k, "manifest_rows": len(man), "used": 2 * n_tr,
                                 "excluded": other + n_val,
                                 "excluded_by": {"generator_saw_fold": other, "source_in_validation": n_val,
                                                 "source_not_in_train": 0, "filter_score": 0}}
        assert not set(pool.source_ids) & set(va)
        assert set(pool.source_ids) <= set(tr)
        assert pool.images.shape == (2 * n_tr, 32, 32, 4) and pool.images.dtype == np.uint8
        assert all(i.startswith(f"syn-standin-f{k}-") or i.startswith("syn-standin-f99-") for i in pool.ids)


def test_sources_outside_the_training_subset_are_excluded(synth):
    fold_of, man = synth["fold_of"], load_manifests(synth["manifests"])
    tr, va = split(fold_of, 0)
    pool = SyntheticPool.for_fold(man, 0, tr[:10], va, 32)     # e.g. data.fraction kept 10 images
    assert pool.counts()["used"] == 20
    assert pool.counts()["excluded_by"]["source_not_in_train"] == 2 * (len(tr) - 10)


def test_manifest_without_provenance_is_refused_unless_allowed(synth, tmp_path):
    src = pd.read_csv(synth["manifests"][0], dtype=str, keep_default_na=False)
    bare = tmp_path / "manifest.csv"
    src[["Id", "Target"]].head(5).to_csv(bare, index=False)
    (tmp_path / "train").symlink_to(Path(synth["manifests"][0]).parent / "train")
    with pytest.raises(HPAError) as e:
        read_pool_manifest(bare)
    assert str(e.value) == (f"{bare}: manifest without provenance (source_id, generator_trained_on); "
                            "refusing it because leaks cannot be ruled out (set "
                            "synthetic.allow_no_provenance=true to accept)")
    rows = read_pool_manifest(bare, allow_no_provenance=True)
    assert len(rows) == 5 and rows["trained_on"].tolist() == [set()] * 5
    pool = SyntheticPool.for_fold(rows, 1, ["a"], ["b"], 32)
    assert pool.counts()["used"] == 5


def test_min_filter_score_and_soft_labels(synth, tmp_path):
    df = pd.read_csv(synth["manifests"][0], dtype=str, keep_default_na=False).head(4)
    df["filter_score"] = ["0.9", "0.2", "", "0.5"]
    df["Target"] = "0 25"
    df["label_weights"] = ["0:0.7000 25:0.3000", "", "", ""]
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    (tmp_path / "train").symlink_to(Path(synth["manifests"][0]).parent / "train")
    tr = synth["fold_of"].index.tolist()
    pool = SyntheticPool.for_fold(load_manifests([str(path)]), 0, tr, [], 32, min_filter_score=0.5,
                                  soft_labels=True)
    assert pool.ids.tolist() == [df["Id"][0], df["Id"][3]]
    assert pool.counts()["excluded_by"]["filter_score"] == 2          # 0.2 and unfiltered ""
    assert pool.y[0, 0] == pytest.approx(0.7) and pool.y[0, 25] == pytest.approx(0.3)
    assert pool.y[1, 0] == 1.0 and pool.y[1, 25] == 1.0 and pool.y.sum() == pytest.approx(3.0)


def test_duplicate_ids_and_empty_manifest_list(synth):
    with pytest.raises(HPAError, match="appears in two manifests"):
        load_manifests(synth["manifests"][:1] * 2)
    with pytest.raises(HPAError, match="synthetic.manifests: empty"):
        load_manifests([])
