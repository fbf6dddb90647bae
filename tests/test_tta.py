"""Multi-crop TTA: crop positions, views of each crop, the merge over crops x views, and inference
reading test images at the crop_from size."""
import numpy as np
import pandas as pd
import pytest
import torch

from hpa.cli import run_command
from hpa.config import ExperimentConfig, ModelConfig, load_config, save_config
from hpa.data.images import read_kaggle_rgby
from hpa.errors import HPAError
from hpa.inference.predict import load_fold_model, open_test_images, predict_images, tta_boxes, tta_views
from hpa.models import build_model
from hpa.transforms import crop_boxes, dihedral

P = [f"p{i}" for i in range(28)]


def test_crop_boxes_fixed_and_random():
    assert crop_boxes(10, 6, 5) == [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)]    # centre, then corners
    assert crop_boxes(10, 6, 1) == [(2, 2)]
    rnd = crop_boxes(10, 6, 7, "random", seed=3)
    assert rnd == crop_boxes(10, 6, 7, "random", seed=3) != crop_boxes(10, 6, 7, "random", seed=4)
    assert len(rnd) == 7 and all(0 <= y <= 4 and 0 <= x <= 4 for y, x in rnd)
    with pytest.raises(HPAError, match="crop_mode 'fixed' has 5 crops"):
        crop_boxes(10, 6, 6)
    with pytest.raises(HPAError, match=r"infer.crop_mode: 'grid' not one of fixed, random"):
        crop_boxes(10, 6, 2, "grid")
    cfg = ExperimentConfig()
    cfg.data.image_size, cfg.train.crop_from, cfg.infer.crops = 32, 40, 2
    assert tta_boxes(cfg) == [(4, 4, 32), (0, 0, 32)]
    cfg.train.crop_from = 0
    with pytest.raises(HPAError, match="infer.crops: 2 crops of 32 px need a larger image"):
        tta_boxes(cfg)
    cfg.infer.crops = 0
    assert tta_boxes(cfg) == []


def test_predict_images_merges_crops_times_views():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="test_resnet")).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 4), dtype=np.uint8) for _ in range(3)]
    boxes = [(4, 4, 32), (0, 8, 32)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    v = tta_views(x, 2, boxes[1])
    assert v.shape == (6, 4, 32, 32) and torch.equal(v[3:], dihedral(x[:, :, 0:32, 8:40], 1))
    with torch.no_grad():
        views = torch.stack([torch.sigmoid(model(dihedral(x[:, :, t:t + 32, l:l + 32], k)))
                             for t, l, _ in boxes for k in range(2)]).numpy()
    np.testing.assert_allclose(predict_images(model, images, 2, "mean", 2, boxes=boxes), views.mean(0), atol=1e-5)
    np.testing.assert_allclose(predict_images(model, images, 2, "max", 16, boxes=boxes), views.max(0), atol=1e-5)


def test_infer_with_crops_reads_crop_from_images(tmp_path, tiny_demo, capsys):
    from test_inference import make_run

    cfg_path = make_run(tmp_path, tiny_demo)
    run = tmp_path / "runs" / "r"
    saved = load_config(run / "config.yaml")
    saved.train.crop_from = 40                     # the run trained on 32 px crops of 40 px images
    save_config(saved, run / "config.yaml")
    out = tmp_path / "s.csv"
    args = ["--config", str(cfg_path), "--out", str(out), "--folds", "0",
            "--set", "infer.crops=3", "--set", "infer.crop_mode=fixed"]
    assert run_command("infer", args) == 0
    assert "infer r: 1 fold(s) x 2 TTA views x 3 crops" in capsys.readouterr().out
    ids = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"].tolist()
    images = [read_kaggle_rgby(tiny_demo / "test", i, 40) for i in ids]
    assert open_test_images(saved, ids)[0].shape == (40, 40, 4)
    model = load_fold_model(saved, run / "fold0" / "best.pt")
    want = predict_images(model, images, 2, boxes=[(4, 4, 32), (0, 0, 32), (0, 8, 32)])
    np.testing.assert_allclose(pd.read_csv(run / "test_probs.csv")[P].to_numpy(), want, atol=1e-5)
