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
    from hpa.data.demo import make_demo_dataset

    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, n_train=96, n_test=24, size=32, seed=0, min_per_class=5, contact_sheet=False)
    return out
