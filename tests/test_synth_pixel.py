"""Pixel-space generators (ddpm, ddpm_simple, morph): fold-aware training, every mode, determinism."""
from __future__ import annotations

import json
import os
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.errors import HPAError
from hpa.synthetic import sampling
from hpa.synthetic.config import load_synth_config
from hpa.synthetic.generate import generate
from hpa.synthetic.manifest import COLUMNS, read_manifest
from hpa.synthetic.modes import ModeOptions, mix_weights
from hpa.synthetic.protocol import load_generator, train_generator


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, make_random_dataset):
    """24 random 32 px images in the Kaggle layout, 3 folds (fold = i % 3)."""
    root = tmp_path_factory.mktemp("synthdata")
    make_random_dataset(root, 24, 32, [str(i % 3) if i % 4 else f"{i % 3} 25" for i in range(24)], 3)
    return root


def _cfg(root, models, kind="ddpm", **extra):
    sets = [f"data.root={root}", "data.image_size=16", "train.steps=3", "train.batch_size=4",
            f"generator={kind}", f"name={kind}t", f"models_dir={models}", "model.block_out_channels=[16,32]"]
    return load_synth_config(None, sets + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("ddpm", "ddpm_simple", "morph"):
        cfg = _cfg(data_root, models, kind)
        out[kind] = (cfg, train_generator(cfg, "0"))
    return out


def test_fold_aware_training_records_folds(trained, data_root):
    cfg, d = trained["ddpm"]
    meta = json.loads((d / "generator.json").read_text())
    assert meta["generator_trained_on"] == "1 2"
    ids = pd.read_csv(d / "train_ids.csv")["Id"]
    folds = pd.read_csv(data_root / "folds.csv").set_index("Id")["fold"]
    assert len(ids) == 16 and set(folds[ids]) == {1, 2}      # fold 0's 8 images never seen
    assert (d / "denoiser" / "config.json").is_file() and (d / "scheduler" / "scheduler_config.json").is_file()
    assert len(pd.read_csv(d / "history.csv")) >= 1


def test_bad_fold_is_refused(data_root, tmp_path):
    with pytest.raises(HPAError, match=r"--fold: 7 not in the folds file \(folds: \[0, 1, 2\]\)"):
        train_generator(_cfg(data_root, tmp_path), "7")


@pytest.mark.parametrize("kind", ["ddpm", "ddpm_simple", "morph"])
@pytest.mark.parametrize("mode", ["noise", "sdedit", "mix", "invert", "interp"])
def test_every_mode_writes_images_and_manifest(trained, data_root, tmp_path, kind, mode):
    cfg, d = trained[kind]
    gen = load_generator(d)
    df = generate(cfg, gen, ModeOptions(mode=mode, steps=3, guidance=2.0), 2, 0, tmp_path, batch_size=2)
    man = read_manifest(tmp_path / "manifest.csv")
    assert list(man.columns[:len(COLUMNS)]) == COLUMNS and len(man) == 2 == len(df)
    img = read_kaggle_rgby(tmp_path / "train", man["Id"].iat[0])
    assert img.shape == (32, 32, 4)                             # upsampled from 16 to the real size
    assert set(man["generator_trained_on"]) == {"1 2"} and set(man["generator"]) == {kind}
    if mode != "noise" or kind == "morph":
        assert (man["source_id"] != "").all()
    if kind == "morph":   # real red/blue/yellow stains are kept untouched
        real = read_kaggle_rgby(data_root / "train", man["source_id"].iat[0])
        assert np.array_equal(img[..., [0, 2, 3]], real[..., [0, 2, 3]])


def test_same_seed_same_bytes_and_single_regeneration(trained, tmp_path):
    cfg, d = trained["ddpm"]
    gen = load_generator(d)
    for sampler in ("ddpm", "dpmpp"):
        opts = ModeOptions(mode="noise", sampler=sampler, steps=3)
        generate(cfg, gen, opts, 3, 10, tmp_path / f"a{sampler}", batch_size=3)
        generate(cfg, gen, opts, 1, 11, tmp_path / f"b{sampler}", batch_size=1)   # image 2 alone
        ida = pd.read_csv(tmp_path / f"a{sampler}/manifest.csv")["Id"]
        for c in ("red", "green"):
            a = (tmp_path / f"a{sampler}/train/{ida[1]}_{c}.png").read_bytes()
            b = (tmp_path / f"b{sampler}/train/{ida[1]}_{c}.png").read_bytes()
            assert a == b


def test_per_fold_generators_of_one_config_never_share_ids(trained, data_root, tmp_path):
    cfg, d0 = trained["ddpm"]
    d1 = train_generator(cfg, "1")
    opts = ModeOptions(mode="noise", steps=2)
    ids0 = generate(cfg, load_generator(d0), opts, 2, 0, tmp_path / "f0")["Id"].tolist()
    ids1 = generate(cfg, load_generator(d1), opts, 2, 0, tmp_path / "f1")["Id"].tolist()
    assert ids0 == ["syn-ddpmt-f0-noise-000000", "syn-ddpmt-f0-noise-000001"]
    assert ids1 == ["syn-ddpmt-f1-noise-000000", "syn-ddpmt-f1-noise-000001"]


def test_resume_skips_existing(trained, tmp_path):
    cfg, d = trained["ddpm_simple"]
    gen = load_generator(d)
    generate(cfg, gen, ModeOptions(steps=2), 2, 0, tmp_path)
    again = generate(cfg, gen, ModeOptions(steps=2), 3, 0, tmp_path)
    assert len(again) == 1 and len(pd.read_csv(tmp_path / "manifest.csv")) == 3


def test_mix_weights_and_manifest_soft_labels(trained, tmp_path):
    w = mix_weights([0], [25, 0], 0.25, 0.5)
    assert w == {0: 1.0, 25: 0.5}
    cfg, d = trained["ddpm"]
    generate(cfg, load_generator(d), ModeOptions(mode="mix", steps=2, strength=0.64), 2, 0, tmp_path)
    man = read_manifest(tmp_path / "manifest.csv")
    assert all(man["label_weights"] != "") and set(man["strength"]) == {0.64}
    assert "0.8000" in " ".join(man["label_weights"])      # 0.64 ** 0.5 on the target labels


def test_ddim_inversion_reconstructs():
    """DDIM inversion then regeneration returns the input (the exact denoiser of Gaussian data).

    An untrained UNet does not invert (GroupNorm makes it scale-free, and the cosine schedule divides
    by sqrt(alpha_bar) ~ 0.02 at the end), so the loop is checked with the optimal denoiser of
    x0 ~ N(0, 0.25 I): eps*(x_t, t) = sqrt(1 - a_t) x_t / (0.25 a_t + 1 - a_t).
    """
    from diffusers import DDPMScheduler
    config = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    ac = DDPMScheduler.from_config(config).alphas_cumprod
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, 16, 16) * 0.5

    def eps(x, t):
        a = ac[int(t)]
        return (1 - a).sqrt() * x / (0.25 * a + 1 - a)
    x_t = sampling.ddim_invert(eps, config, x0, 25)
    rec = sampling.regenerate(eps, config, x_t, 25)
    assert 0.95 < x_t.std().item() < 1.05                     # inverted to unit-variance noise
    assert ((rec - x0) ** 2).mean().item() < 0.002             # vs 0.5 for an unrelated image


def test_unknown_sampler_and_mode(trained, tmp_path):
    cfg, d = trained["ddpm"]
    gen = load_generator(d)
    with pytest.raises(HPAError, match="unknown diffusion sampler 'euler' \\(valid: ddim, ddpm, dpmpp, lcm\\)"):
        generate(cfg, gen, ModeOptions(sampler="euler"), 1, 0, tmp_path)
    with pytest.raises(HPAError, match="mode 'prompt_mix' is not available for ddpm"):
        generate(cfg, gen, ModeOptions(mode="prompt_mix"), 1, 0, tmp_path)
    with pytest.raises(HPAError, match=r"^strength: 1.5 must be in \(0, 1\]$"):
        generate(cfg, gen, ModeOptions(mode="sdedit", strength=1.5), 1, 0, tmp_path / "o")
    with pytest.raises(HPAError, match="--sampler lcm: not available for ddpm"):
        generate(replace(cfg, model=replace(cfg.model, lcm_weights="x")), gen, ModeOptions(sampler="lcm"), 1, 0,
                 tmp_path / "o")
    assert not (tmp_path / "o").exists()                       # refused before the folder is made


def test_cli_train_and_generate(data_root, tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"generator: ddpm_simple\nmodels_dir: {tmp_path}/m\ndata:\n  root: {data_root}\n"
                   "  image_size: 16\ntrain:\n  steps: 2\n  batch_size: 4\n")
    run = [sys.executable, "-m", "hpa", "synth"]
    r = subprocess.run(run + ["train", "--config", str(cfg), "--fold", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "synth train: ddpm_simple on 16 images (folds 0 2)" in r.stdout
    r = subprocess.run(run + ["generate", "--config", str(cfg), "--fold", "1", "--n", "2", "--steps", "2",
                              "--out", str(tmp_path / "o"), "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(read_manifest(tmp_path / "o" / "manifest.csv")) == 2
    r = subprocess.run(run + ["generate", "--config", str(cfg), "--fold", "2", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "not a trained generator" in r.stderr


@pytest.mark.slow
def test_two_process_training_and_generation(data_root, tmp_path):
    """Under ``accelerate launch --num_processes 2`` (gloo DDP): ``hpa synth train`` writes one
    generator from the main process; ``hpa synth generate`` splits every chunk between the processes,
    only the main one writes, and the images are byte-identical to a one-process run."""
    (tmp_path / "g.yaml").write_text(
        f"generator: ddpm\nname: ddpmt\nmodels_dir: {tmp_path}/m\ndata:\n  root: {data_root}\n"
        "  image_size: 16\nmodel:\n  block_out_channels: [16, 32]\ntrain:\n  steps: 3\n  batch_size: 4\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hpa", "synth"]
    common = ["--config", str(tmp_path / "g.yaml"), "--fold", "0"]
    tr = subprocess.run(launch + ["train", *common], capture_output=True, text=True, env=env, timeout=300)
    assert tr.returncode == 0, tr.stderr[-3000:]
    assert tr.stdout.count("synth train: ddpm on 16 images (folds 1 2)") == 1   # the main process writes
    assert json.loads((tmp_path / "m/ddpmt/fold0/generator.json").read_text())["generator_trained_on"] == "1 2"
    args = [*common, "--mode", "sdedit", "--n", "5", "--steps", "3", "--batch-size", "2", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "hpa", "synth", "generate", *args, "--out",
                          str(tmp_path / "one")], capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(launch + ["generate", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("synth generate: 5 new images") == 1
    a, b = (read_manifest(tmp_path / k / "manifest.csv") for k in ("one", "two"))
    assert sorted(a["Id"]) == sorted(b["Id"]) and len(b) == 5          # every job once, none twice
    for i in a["Id"]:
        for c in ("red", "green", "blue", "yellow"):
            assert (tmp_path / f"one/train/{i}_{c}.png").read_bytes() == \
                (tmp_path / f"two/train/{i}_{c}.png").read_bytes(), (i, c)


def test_epsilon_prediction_trains_and_samples(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, "ddpm", **{"model.prediction_type": "epsilon"})
    d = train_generator(cfg, "all")
    assert json.loads((d / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    generate(cfg, load_generator(d), ModeOptions(mode="invert", steps=2), 1, 0, tmp_path / "o")
    assert read_manifest(tmp_path / "o" / "manifest.csv")["generator_trained_on"].tolist() == ["all"]


def test_default_ddpm_learns_the_dark_background_in_a_short_training(tmp_path):
    """Regression: an epsilon-prediction DDPM (cosine schedule) trained briefly samples grey noise (mean
    pixel ~110 here, ~115 on the demo) instead of dark fields; the default v-prediction gets ~41."""
    rng = np.random.default_rng(0)
    ids = [f"img{i:02d}" for i in range(24)]
    for i in ids:                                   # black fields with one bright 3x3 spot: mean pixel 28
        im = np.zeros((8, 8, 4), np.uint8)
        y, x = rng.integers(0, 5, 2)
        im[y:y + 3, x:x + 3] = 200
        write_kaggle_rgby(tmp_path / "d" / "train", i, im)
    pd.DataFrame({"Id": ids, "Target": ["0"] * 24}).to_csv(tmp_path / "d" / "train.csv", index=False)
    cfg = load_synth_config(None, [f"data.root={tmp_path / 'd'}", "data.image_size=8", "train.steps=150",
                                   "train.batch_size=8", "train.lr=0.002", f"models_dir={tmp_path / 'm'}",
                                   "model.block_out_channels=[16,32]", "model.attention=false"])
    assert cfg.model.prediction_type == "v_prediction"
    gen = load_generator(train_generator(cfg, "all"))
    labels = torch.zeros(16, 28)
    labels[:, 0] = 1
    x = sampling.sample(gen.eps_fn(labels, None, 1.0), sampling.make_scheduler("ddim", gen.sched_config),
                        gen.shape(16), 20, [torch.Generator().manual_seed(i) for i in range(16)])
    assert float(((x.clamp(-1, 1) + 1) * 127.5).mean()) < 70
