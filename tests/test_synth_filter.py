"""filter and report with a fake classifier run (test_resnet, random weights saved like train.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.config import ExperimentConfig, load_config, save_config
from hpa.data.images import write_kaggle_rgby
from hpa.models import build_model
from hpa.synthetic.filter import filter_manifest, intended_scores
from hpa.synthetic.manifest import COLUMNS, append_rows, read_manifest
from hpa.synthetic.report import label_agreement, nearest_cosine, synth_report


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filter")
    rng = np.random.default_rng(0)
    real = tmp / "real"
    ids = [f"r{i}" for i in range(6)]
    for i in ids:
        write_kaggle_rgby(real / "train", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    pd.DataFrame({"Id": ids, "Target": ["0", "25", "0 25", "2", "0", "25"]}).to_csv(real / "train.csv", index=False)
    cfg = ExperimentConfig(name="fake")
    cfg.data.root, cfg.data.image_size, cfg.model.name = str(real), 16, "test_resnet"
    run = tmp / "run"
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    (run / "fold0").mkdir(parents=True)
    torch.save({"model": build_model(cfg.model).state_dict(), "epoch": 1, "score": 0.0}, run / "fold0" / "best.pt")
    syn = tmp / "syn"
    rows = []
    for i in range(10):
        sid = f"syn-t-noise-{i:06d}"
        write_kaggle_rgby(syn / "train", sid, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
        rows.append({"Id": sid, "Target": ["0", "25", "0 25"][i % 3], "label_weights": "", "source_id": "",
                     "generator": "ddpm", "generator_trained_on": "all", "mode": "noise", "strength": "1",
                     "steps": "5", "guidance": "2", "seed": str(i), "filter_score": ""})
    append_rows(syn / "manifest.csv", rows)
    return run, syn


def test_intended_scores_soft_and_hard():
    probs = np.array([[0.2] + [0.0] * 24 + [0.8, 0, 0]])
    man = pd.DataFrame({"labels": [[0, 25]], "label_weights": [""]})
    assert intended_scores(probs, man)[0] == pytest.approx(0.5)
    man = pd.DataFrame({"labels": [[0, 25]], "label_weights": ["0:0.75 25:0.25"]})
    assert intended_scores(probs, man)[0] == pytest.approx(0.35)


def test_filter_drops_lowest_share(setup):
    run, syn = setup
    kept = filter_manifest(syn / "manifest.csv", run, 0, drop=0.3)
    full = read_manifest(syn / "manifest.csv")
    filt = read_manifest(syn / "manifest_filtered.csv")
    assert len(kept) == len(filt) == 7 and full["filter_score"].notna().all()
    assert filt["filter_score"].min() >= full["filter_score"].sort_values().iloc[2]
    assert pd.read_csv(syn / "manifest_filtered.csv").columns.tolist() == COLUMNS


def test_label_agreement_and_control():
    labels = [[0], [1], [2], [3]] * 5
    probs = np.zeros((20, 28))
    for i, ls in enumerate(labels):
        probs[i, ls] = 0.9
    res = label_agreement(probs, labels, seed=0)
    assert res["macro_f1"] == 1.0 and res["shuffled_control_f1"] < 0.5 and res["n_classes"] == 4
    assert res["per_class_f1"][:4] == [1.0] * 4 and res["per_class_f1"][4:] == [None] * 24
    probs[:5, 1] = 0.9                    # class 1 also predicted on images 0-4 (4 of them class 0)
    res = label_agreement(probs, labels, seed=0)
    assert res["per_class_f1"][1] == pytest.approx(2 * 5 / (2 * 5 + 4))     # 5 TP, 4 FP, 0 FN
    assert res["macro_f1"] == pytest.approx((3 + 10 / 14) / 4)


def test_nearest_cosine():
    sims = nearest_cosine(np.array([[1.0, 0], [1, 1]]), np.array([[2.0, 0], [0, 3]]))
    assert sims == pytest.approx([1.0, np.sqrt(0.5)])


def test_report_writes_numbers_and_figures(setup, tmp_path):
    run, syn = setup
    res = synth_report(syn / "manifest.csv", run, 0, out=tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["n_images"] == 10 and saved["n_classes"] == 2 and 0 <= saved["macro_f1"] <= 1
    assert saved == res
    assert "real_heldout_f1" not in saved                   # the run has no folds file: no reference
    # no folds file: the quality reference is all 6 real images, halves of 3; no class has 10 per half
    assert saved["quality"]["n_per_set"] == 3 and saved["per_class_summary"] == {"n_classes": 0}
    assert saved["quality_reference"].startswith("all 6 real images")
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Synthetic images: ddpm (noise), 10 images") and "| FID, 3 vs 3 images |" in md
    pd.DataFrame({"Id": [f"r{i}" for i in range(6)], "fold": [0, 1, 0, 1, 0, 1]}).to_csv(
        tmp_path / "folds.csv", index=False)
    cfg = load_config(run / "config.yaml")
    cfg.folds.file = str(tmp_path / "folds.csv")
    run2 = tmp_path / "run2"
    shutil.copytree(run, run2)
    save_config(cfg, run2 / "config.yaml")
    res = synth_report(syn / "manifest.csv", run2, 0, out=tmp_path / "r2")
    assert res["n_real_heldout"] == 3 and 0 <= res["real_heldout_f1"] <= 1      # r0, r2, r4
    assert {k: res[k] for k in ("macro_f1", "n_images")} == {k: saved[k] for k in ("macro_f1", "n_images")}
    assert res["real_heldout_per_class_f1"][0] is not None and res["real_heldout_per_class_f1"][1] is None
    for png in ("memorization.png", "grid.png", "per_class_agreement.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_filter_and_bad_drop(setup):
    import subprocess
    import sys
    run, syn = setup
    base = [sys.executable, "-m", "hpa", "synth", "filter", "--manifest", str(syn / "manifest.csv"), "--run", str(run)]
    r = subprocess.run(base + ["--drop", "0.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "synth filter: 10 images scored" in r.stdout and "kept 5 with filter_score >=" in r.stdout
    r = subprocess.run(base + ["--drop", "1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --drop: 1.5 must be in [0, 1)"
