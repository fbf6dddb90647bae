"""sd_lora on a tiny random Stable Diffusion saved locally: LoRA training, reload, img2img, inversion."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby  # noqa: E402
from hpa.errors import HPAError  # noqa: E402
from hpa.synthetic.config import load_synth_config  # noqa: E402
from hpa.synthetic.generate import generate  # noqa: E402
from hpa.synthetic.manifest import read_manifest  # noqa: E402
from hpa.synthetic.modes import ModeOptions  # noqa: E402
from hpa.synthetic.protocol import load_generator, train_generator  # noqa: E402
from hpa.synthetic.tiny_sd import make_tiny_sd, tiny_tokenizer  # noqa: E402


def test_tiny_tokenizer_merges():
    assert tiny_tokenizer()("protein").input_ids == [0, 516, 518, 1]   # "prot" + "ein</w>" in bos..eos


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A random tiny Stable Diffusion saved with ``save_pretrained`` + 8 random 32 px RGBY images."""
    folder = tmp_path_factory.mktemp("tiny_sd")
    make_tiny_sd(folder / "pipe")
    root = folder / "data"
    rng = np.random.default_rng(0)
    ids = [f"img{i:02d}" for i in range(8)]
    for i in ids:
        write_kaggle_rgby(root / "train", i, rng.integers(0, 255, (32, 32, 4), dtype=np.uint8))
    pd.DataFrame({"Id": ids, "Target": ["0", "25", "0 25", "2"] * 2}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": ids, "fold": [i % 2 for i in range(8)]}).to_csv(root / "folds.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def trained_sd(tiny_sd):
    cfg = load_synth_config(None, [
        "generator=sd_lora", "name=sdt", f"models_dir={tiny_sd}/models", f"data.root={tiny_sd}/data",
        "data.image_size=32", f"model.pretrained={tiny_sd}/pipe", "model.textual_inversion=true",
        "train.steps=3", "train.batch_size=2", "train.lr=0.01"])
    return cfg, train_generator(cfg, "1")


def test_lora_saved_in_diffusers_format_and_reload_reproduces(trained_sd, tiny_sd):
    from diffusers import StableDiffusionPipeline
    _, d = trained_sd
    assert (d / "lora" / "pytorch_lora_weights.safetensors").is_file() and (d / "tokens.pt").is_file()
    meta = json.loads((d / "generator.json").read_text())
    assert meta["generator_trained_on"] == "0" and meta["rgby_scheme"] == "two_views"
    base = StableDiffusionPipeline.from_pretrained(tiny_sd / "pipe", safety_checker=None,
                                                   requires_safety_checker=False)
    x = torch.randn(1, 4, 16, 16)
    t, text = torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = base.unet(x, t, text).sample
        base.load_lora_weights(d / "lora")
        after = base.unet(x, t, text).sample
    assert len(base.unet.peft_config) == 1 and not torch.allclose(before, after)      # the trained LoRA changes outputs
    gen = load_generator(d)
    with torch.no_grad():
        again = gen.pipe.unet(x, t, text).sample
    assert torch.allclose(after, again, atol=1e-5)                    # and reloading reproduces them


@pytest.mark.parametrize("mode", ["noise", "sdedit", "mix", "invert", "interp", "prompt_mix"])
def test_sd_modes_write_rgby(trained_sd, tmp_path, mode):
    cfg, d = trained_sd
    gen = load_generator(d)
    generate(cfg, gen, ModeOptions(mode=mode, steps=2, guidance=2.0, strength=0.5), 2, 0, tmp_path)
    man = read_manifest(tmp_path / "manifest.csv")
    assert len(man) == 2 and set(man["generator"]) == {"sd_lora"} and set(man["mode"]) == {mode}
    img = read_kaggle_rgby(tmp_path / "train", man["Id"].iat[0])
    assert img.shape == (32, 32, 4) and img.std() > 0
    if mode not in ("noise", "prompt_mix"):
        assert (man["source_id"] != "").all()


def test_sd_same_seed_same_bytes(trained_sd, tmp_path):
    cfg, d = trained_sd
    gen = load_generator(d)
    generate(cfg, gen, ModeOptions(mode="noise", steps=2), 2, 5, tmp_path / "a")
    generate(cfg, gen, ModeOptions(mode="noise", steps=2), 1, 6, tmp_path / "b")
    i = pd.read_csv(tmp_path / "a/manifest.csv")["Id"].iat[1]
    assert (tmp_path / f"a/train/{i}_yellow.png").read_bytes() == (tmp_path / f"b/train/{i}_yellow.png").read_bytes()


def test_sd_lcm_sampler_with_lcm_weights(trained_sd, tiny_sd, tmp_path):
    from diffusers import UNet2DConditionModel
    cfg, d = trained_sd
    UNet2DConditionModel.from_pretrained(tiny_sd / "pipe" / "unet").save_pretrained(tmp_path / "lcm")
    gen = load_generator(d)
    with pytest.raises(HPAError, match="--sampler lcm: set model.lcm_weights"):
        generate(cfg, gen, ModeOptions(sampler="lcm", steps=2), 1, 0, tmp_path / "o")
    cfg.model.lcm_weights = str(tmp_path / "lcm")
    generate(cfg, gen, ModeOptions(sampler="lcm", steps=2), 1, 0, tmp_path / "o")
    assert read_manifest(tmp_path / "o" / "manifest.csv")["sampler"].tolist() == ["lcm"]


def test_sd_lcm_folder_without_a_model_is_refused_offline(trained_sd, tmp_path):
    cfg, d = trained_sd
    gen = load_generator(d)
    (tmp_path / "empty").mkdir()
    for folder, msg in ((tmp_path / "gone", f"{tmp_path}/gone: missing (no such folder)"),
                        (tmp_path / "empty", f"{tmp_path}/empty/config.json: missing (not a diffusers UNet folder)")):
        with pytest.raises(HPAError) as e:
            generate(replace(cfg, model=replace(cfg.model, lcm_weights=str(folder))), gen,
                     ModeOptions(sampler="lcm", steps=2), 1, 0, tmp_path / "o")
        assert str(e.value) == f"model.lcm_weights: {msg}"
    assert not (tmp_path / "o").exists()
