"""Shared fixtures: a tiny demo dataset built once per test session, and the path to ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HPA_SHARED", ROOT.parent / "shared")) / "hpa"

# Tests are CPU-only and deterministic; keep torch from grabbing both cores per process twice over.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_hpa() -> Path:
    """The real competition files in ../shared/hpa; the test is skipped when they are absent."""
    if not (SHARED / "train.csv").is_file():
        pytest.skip("../shared/hpa not present")
    return SHARED


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo dataset in the Kaggle layout (96 train, 24 test images of 32 px, every class >= 5)."""
    from hpa.demo.dataset import make_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, n_train=96, n_test=24, size=32, seed=0, min_per_class=5, contact_sheet=False)
    return out


@pytest.fixture(scope="session")
def make_random_dataset():
    """A function writing ``n`` random ``size`` px RGBY images in the Kaggle layout under
    ``root/train`` plus ``root/train.csv`` (the given targets) and ``root/folds.csv`` (fold = i % k);
    returns the Ids. Same arguments, same bytes (seeded)."""
    import numpy as np
    import pandas as pd

    from hpa.data.images import write_kaggle_rgby

    def make(root: Path, n: int, size: int, targets: list[str], n_folds: int, width: int = 3) -> list[str]:
        rng = np.random.default_rng(0)
        ids = [f"img{i:0{width}d}" for i in range(n)]
        for i in ids:
            write_kaggle_rgby(root / "train", i, rng.integers(0, 255, (size, size, 4), dtype=np.uint8))
        pd.DataFrame({"Id": ids, "Target": targets}).to_csv(root / "train.csv", index=False)
        pd.DataFrame({"Id": ids, "fold": [i % n_folds for i in range(n)]}).to_csv(root / "folds.csv", index=False)
        return ids

    return make


@pytest.fixture(scope="session")
def tiny_experiment(tiny_demo):
    """``make(work, n_folds, train, **sections) -> path``: a YAML experiment over the tiny demo data in
    ``work`` (its own folds file, cache and runs folder): test_resnet at 32 px, lr 0.003; ``train``
    is the train section, ``sections`` add or replace top-level sections (``loss``, ``sched``...)."""
    import yaml

    from hpa.data.folds import make_folds, write_folds
    from hpa.data.labels import read_labels

    def make(work: Path, n_folds: int, train: dict, **sections) -> Path:
        folds = work / "folds.csv"
        write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), n_folds, 0))
        cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(work / "cache")},
               "folds": {"n_splits": n_folds, "file": str(folds)}, "runs_dir": str(work / "runs"),
               "model": {"name": "test_resnet"}, "optim": {"lr": 0.003}, "train": train, **sections}
        path = work / "tiny.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make

