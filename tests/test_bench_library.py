"""Bench row 8 (hpa.bench.library_rows): the hand-written pieces give the libraries' answers where
they claim to, measured on toy sizes."""
from pathlib import Path

import numpy as np
import pytest

from hpa.bench.core import BenchContext
from hpa.bench.library_rows import cosine_lrs, row_libraries


def test_library_row_reports_exact_f1_and_the_cosine_gap(tmp_path: Path):
    r = row_libraries(BenchContext(quick=True, repeats=1, work=tmp_path))
    assert r["status"] == "ok" and r["met"] is None
    assert r["figures"]["macro F1 gap to sklearn"] == 0.0
    assert set(r["ratios"]) == {"F1 ours / sklearn", "batch aug ours / v2 per image"}
    assert all(v > 0 for v in r["ratios"].values())


def test_cosine_matches_timm_without_warmup_and_differs_with_it():
    ours, timm = cosine_lrs(0.0)
    np.testing.assert_allclose(ours, timm, rtol=1e-12, atol=1e-18)
    ours, timm = cosine_lrs(1.0)
    assert ours[5] == pytest.approx(1e-3 * 6 / 20)       # our warm-up: a ramp times the (still flat) cosine
    assert np.abs(ours - timm).max() > 1e-5
