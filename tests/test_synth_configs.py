"""Every shipped generator config (demo and real-scale) builds and trains one step with tiny overrides,
so none can rot; sd_lora uses the tiny offline Stable Diffusion of `hpa synth tiny-sd`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpa.synthetic.config import load_synth_config
from hpa.synthetic.protocol import GENERATORS, train_generator

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "synth").glob("*.yaml"))
TINY = ["data.image_size=16", "model.block_out_channels=[8,16]", "model.layers_per_block=1",
        "model.simple_channels=8", "train.steps=1", "train.batch_size=2", "train.mixed_precision='no'",
        "train.log_every=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, make_random_dataset):
    root = tmp_path_factory.mktemp("configs")
    make_random_dataset(root / "data", 8, 16, ["0", "25", "0 25", "2"] * 2, 2)
    from hpa.synthetic.tiny_sd import make_tiny_sd
    make_tiny_sd(root / "tiny-sd")
    return root


def test_real_recipes_ship_beside_the_demo_ones():
    stems = {p.stem for p in CONFIGS}
    assert {"ddpm_real", "morph_real", "sd_lora_real", "ddpm_simple_lincao"} <= stems
    sd = load_synth_config(CONFIGS[[p.stem for p in CONFIGS].index("sd_lora_real")])
    assert sd.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5" and sd.data.image_size == 512
    lc = load_synth_config(CONFIGS[[p.stem for p in CONFIGS].index("ddpm_simple_lincao")])
    assert (lc.train.steps, lc.train.batch_size) == (round(30 * (31072 - 3107) / 64), 64)   # 30 epochs of 90%
    for p in CONFIGS:
        if not p.stem.endswith("_demo"):
            assert "Expected GPU time" in p.read_text(), p


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_trains_one_step(path, data, tmp_path):
    sets = TINY + [f"data.root={data / 'data'}", "data.folds=", f"models_dir={tmp_path}"]
    cfg = load_synth_config(path, sets)
    if cfg.model.pretrained:
        cfg = load_synth_config(path, sets + [f"model.pretrained={data / 'tiny-sd'}"])
    assert cfg.generator in GENERATORS
    out = train_generator(cfg, "0")
    meta = json.loads((out / "generator.json").read_text())
    assert meta["generator"] == cfg.generator and meta["generator_trained_on"] == "1"


def test_gpu_time_estimate_counts_the_configs_own_network():
    import importlib.util
    spec = importlib.util.spec_from_file_location("est", CONFIGS[0].parents[2] / "tools" / "estimate_gpu_time.py")
    est = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(est)
    e = est.estimate(str(CONFIGS[[p.stem for p in CONFIGS].index("ddpm_simple_lincao")]), 10_752)
    # three 3x3 convs (4+16 -> 64 -> 64 -> 4 channels) at 64 px: 2 x 4096 x 9 x (20*64 + 64*64 + 64*4) FLOPs
    assert e["call_gflop"] == pytest.approx(2 * 4096 * 9 * (20 * 64 + 64 * 64 + 64 * 4) / 1e9, abs=0.05)
    assert e["train_samples"] == 13109 * 64
    assert e["generate_hours"] == pytest.approx(10_752 * 1000 * e["call_gflop"] * 1e9 / (989e12 * 0.3) / 3600,
                                                rel=0.2)
