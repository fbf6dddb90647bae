"""Every stage on the 61 real 512 px competition samples of ``../shared/hpa/real-samples/kaggle``.

Driven as a user drives it, through the command line (``hpa.cli.run_command`` is what ``hpa`` /
``train.py`` / ``infer.py`` call) and the files it writes: the real PNGs are linked into a temporary
Kaggle layout (``test/`` reuses 12 training images, the sample submission is made from their Ids), then
``hpa cache`` at 512 px and at 32 px, ``hpa folds`` (k=3, duplicate-aware), ``train.py`` (a tiny model,
one epoch per fold), ``hpa thresholds``, ``infer.py`` with 8-view TTA, ``hpa validate``, and
``hpa synth train / generate / report`` for a few steps of ``ddpm`` and ``morph``. Skipped when
``../shared`` is absent.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command

ROOT = Path(__file__).resolve().parents[1]
STAINS = ("red", "green", "blue", "yellow")
N_TEST = 12
SMALL = 32

pytestmark = pytest.mark.slow


def run(*argv: str) -> None:
    """Run one ``hpa`` command line; fail the test with its arguments when it does not exit 0."""
    rc = run_command(argv[0], list(argv[1:]))
    assert rc == 0, f"hpa {' '.join(argv)} exited {rc}"


@pytest.fixture(scope="module")
def real(shared_hpa, tmp_path_factory):
    """The real samples in a Kaggle layout (links, never copies) plus an experiment YAML over them."""
    src = shared_hpa / "real-samples" / "kaggle"
    root = tmp_path_factory.mktemp("real")
    labels = pd.read_csv(src / "train.csv")
    (root / "train").mkdir()
    (root / "test").mkdir()
    test_ids = labels["Id"].iloc[::5].head(N_TEST).tolist()
    for image_id in labels["Id"]:
        for c in STAINS:
            name = f"{image_id}_{c}.png"
            (root / "train" / name).symlink_to(src / "train" / name)
            if image_id in test_ids:
                (root / "test" / name).symlink_to(src / "train" / name)
    labels.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": test_ids, "Predicted": "0"}).to_csv(root / "sample_submission.csv", index=False)
    cfg = {"data": {"root": str(root), "image_size": SMALL, "cache_dir": str(root / "cache")},
           "folds": {"n_splits": 3, "dedup": True},
           "runs_dir": str(root / "runs"), "name": "real",
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}],
           "train": {"epochs": 1, "batch_size": 8, "num_workers": 0,
                     "augment": [{"name": "hflip"}, {"name": "rotate90"}]},
           "infer": {"tta": 8}}
    (root / "real.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "src": src, "labels": labels, "test_ids": test_ids, "cfg": str(root / "real.yaml")}


@pytest.fixture(scope="module")
def trained(real):
    """cache (512 and 32 px) -> folds -> train -> thresholds -> infer -> validate, all by command line."""
    root, cfg = real["root"], real["cfg"]
    run("cache", "--config", cfg, "--set", "data.image_size=512")
    run("cache", "--config", cfg)
    run("folds", "--config", cfg)
    run("train", "--config", cfg)
    run("thresholds", "--config", cfg)
    run("infer", "--config", cfg, "--out", str(root / "submission.csv"))
    run("validate", str(root / "submission.csv"), "--sample", str(root / "sample_submission.csv"))
    return real


def caches(root: Path, size: int) -> dict[int, np.ndarray]:
    """The ``.npy`` caches of one size in ``root/cache``, keyed by their number of images."""
    return {len(a): a for a in (np.load(p, mmap_mode="r") for p in (root / "cache").glob(f"kaggle_{size}_*.npy"))}


def test_cache_at_512_holds_the_real_pixels_and_small_cache_is_their_resize(trained):
    root, labels = trained["root"], trained["labels"]
    full, small = caches(root, 512), caches(root, SMALL)
    assert set(full) == set(small) == {len(labels), N_TEST}
    i = 7
    image_id = labels["Id"].iat[i]
    planes = [cv2.imread(str(trained["src"] / "train" / f"{image_id}_{c}.png"), cv2.IMREAD_UNCHANGED) for c in STAINS]
    assert all(p.shape == (512, 512) and p.dtype == np.uint8 for p in planes)   # real files: 512 px 8-bit
    np.testing.assert_array_equal(full[len(labels)][i], np.stack(planes, axis=-1))
    expect = np.stack([cv2.resize(p, (SMALL, SMALL), interpolation=cv2.INTER_AREA) for p in planes], axis=-1)
    np.testing.assert_array_equal(small[len(labels)][i], expect)
    # real images are mostly dark: the green (protein) stain's mean sits far below mid-grey
    assert full[len(labels)][..., 1].mean() < 60


def test_folds_cover_every_real_image_once(trained):
    folds = pd.read_csv(trained["root"] / "folds.csv")
    assert sorted(folds["Id"]) == sorted(trained["labels"]["Id"])
    sizes = folds["fold"].value_counts().sort_index()
    assert list(sizes.index) == [0, 1, 2] and sizes.min() >= 61 // 3 - 4


def test_training_thresholds_and_submission(trained):
    root, labels = trained["root"], trained["labels"]
    run_dir = root / "runs" / "real"
    oof = pd.read_csv(run_dir / "oof.csv")
    assert sorted(oof["Id"]) == sorted(labels["Id"]) and oof[[f"p{c}" for c in range(28)]].notna().all().all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_images"] == len(labels) and 0 <= metrics["oof_macro_f1"] <= 1
    assert all((run_dir / f"fold{k}" / "best.pt").is_file() for k in range(3))
    thr = json.loads((run_dir / "thresholds.json").read_text())
    assert len(thr["thresholds"]) == 28 and all(0 <= t <= 1 for t in thr["thresholds"])
    sub = pd.read_csv(root / "submission.csv", keep_default_na=False)
    assert sub["Id"].tolist() == trained["test_ids"] and (sub["Predicted"] != "").all()
    probs = pd.read_csv(run_dir / "test_probs.csv")
    assert probs["Id"].tolist() == trained["test_ids"]


@pytest.mark.parametrize("generator", ["ddpm", "morph"])
def test_synth_train_generate_report_on_real_images(trained, generator):
    root = trained["root"]
    common = ["--config", str(ROOT / "configs" / "synth" / f"{generator}_demo.yaml"), "--fold", "0",
              "--set", f"data.root={root}", "--set", f"models_dir={root / 'synth'}",
              "--set", "data.image_size=16", "--set", "model.block_out_channels=[8,16]"]
    out = root / f"gen_{generator}"
    run("synth", "train", *common, "--set", "train.steps=4", "--set", "train.batch_size=4")
    run("synth", "generate", *common, "--mode", "noise", "--n", "4", "--steps", "3", "--out", str(out))
    run("synth", "report", "--manifest", str(out / "manifest.csv"), "--run", str(root / "runs" / "real"))
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert len(manifest) == 4 and set(manifest["generator"]) == {generator}
    folds = pd.read_csv(root / "folds.csv").set_index("Id")["fold"]
    for _, row in manifest.iterrows():
        planes = {c: cv2.imread(str(out / "train" / f"{row['Id']}_{c}.png"), cv2.IMREAD_UNCHANGED) for c in STAINS}
        assert all(p.shape == (512, 512) for p in planes.values())    # upsampled to the real size
        if generator == "morph":
            # morph paints a new green stain onto a real sample's red, blue and yellow, kept exactly
            assert folds[row["source_id"]] != 0              # the source never comes from the held-out fold
            for c in ("red", "blue", "yellow"):
                real_plane = cv2.imread(str(trained["src"] / "train" / f"{row['source_id']}_{c}.png"),
                                        cv2.IMREAD_UNCHANGED)
                np.testing.assert_array_equal(planes[c], real_plane)
    report = json.loads((out / "report" / "report.json").read_text())
    assert 0 <= report["macro_f1"] <= 1 and report["n_real_heldout"] == int((folds == 0).sum())
    assert (out / "report" / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_real_vs_demo_figures_and_numbers(shared_hpa, tiny_demo, tmp_path):
    """tools/real_vs_demo.py: the four figures and the JSON summary of the README subsection."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_vs_demo", ROOT / "tools" / "real_vs_demo.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "figs"
    assert tool.main(["--real", str(shared_hpa / "real-samples" / "kaggle"), "--demo", str(tiny_demo),
                      "--out", str(out), "--n", "16", "--sheet", "8"]) == 0
    for name in ("real_contact_sheet", "demo_contact_sheet", "real_vs_demo_stains", "real_vs_demo_classes"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    s = json.loads((out / "real_vs_demo.json").read_text())
    assert s["size"] == 32 and s["n_real"] == 16 and s["n_demo"] == 16     # compared at the demo's size
    assert set(s["stains"]) == set(STAINS)
    assert all(v["earth_movers_distance"] > 0 for v in s["stains"].values())
    assert abs(sum(s["labels_per_image"]["real samples"].values()) - 1) < 0.01


def test_histogram_distance_known_numbers():
    from hpa.reports.eda import histogram_distance

    a, b = np.zeros((4, 256)), np.zeros((4, 256))
    a[:, 10] = 1
    b[:, 30] = 0.5
    b[:, 50] = 0.5          # half the pixels move 20 levels, half move 40: 30 on average
    np.testing.assert_allclose(histogram_distance(a, b), [30, 30, 30, 30])
    np.testing.assert_allclose(histogram_distance(a, a), 0)
