"""Pixel-space generators: ``ddpm`` (label-conditioned UNet), ``ddpm_simple`` (Lin & Cao's three-conv
denoiser) and ``morph`` (green channel generated from a real image's red, blue and yellow stains).

Training runs through ``accelerate`` (gradient accumulation, mixed precision, main-process writes) with
EMA weights (``diffusers.training_utils.EMAModel``). A trained generator is a folder in the diffusers
layout: ``denoiser/`` (``save_pretrained``), ``scheduler/``, ``generator.json`` (kind, config,
``generator_trained_on``) and ``history.csv`` (loss per logged step).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from hpa.classes import NUM_CLASSES
from hpa.errors import HPAError
from hpa.io import read_csv, write_csv, write_json
from hpa.synth.config import SynthConfig, as_dict
from hpa.synth.data import load_images, multihot, to_model, to_uint8, training_rows
from hpa.synth.denoisers import LabelUNet, SimpleDenoiser
from hpa.synth.manifest import format_folds

MORPH_COND = [0, 2, 3]      # red, blue, yellow: the reference stains morph keeps from the real image


def build_denoiser(cfg: SynthConfig):
    """The untrained denoiser of ``cfg.generator`` at ``cfg.data.image_size``."""
    m, size = cfg.model, cfg.data.image_size
    if cfg.generator == "ddpm_simple":
        return SimpleDenoiser(4, 4, m.simple_channels, sample_size=size)
    in_ch, out_ch = (4, 1) if cfg.generator == "morph" else (4, 4)
    return LabelUNet(size, in_ch, out_ch, tuple(m.block_out_channels), m.layers_per_block, m.attention)


def _split(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(target to denoise, conditioning channels) of a [-1,1] RGBY batch."""
    if kind == "morph":
        return x[:, 1:2], x[:, MORPH_COND]
    return x, None


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # the dihedral group: fluorescence fields have no up, down, left or right
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(2)
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.transpose(2, 3)
    return x


def train_pixel(cfg: SynthConfig, fold: str, out_dir: str | Path) -> Path:
    """Train ``cfg.generator`` on the images outside ``fold`` ("all" = every image); return its folder."""
    out_dir = Path(out_dir)
    t_start = time.time()
    rows, trained_on = training_rows(cfg, fold)
    images = to_model(load_images(cfg, rows))
    labels = torch.from_numpy(multihot(rows))
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision,
                      gradient_accumulation_steps=cfg.train.accum_steps)
    torch.manual_seed(cfg.seed)
    model = build_denoiser(cfg)
    if cfg.train.channels_last and acc.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    sched = DDPMScheduler(num_train_timesteps=cfg.model.train_timesteps,
                          beta_schedule=cfg.model.beta_schedule, clip_sample=True,
                          prediction_type=cfg.model.prediction_type)
    if cfg.model.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise HPAError(f"model.prediction_type: '{cfg.model.prediction_type}' is not epsilon, v_prediction or sample")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=0.0)
    model, opt = acc.prepare(model, opt)
    ema = EMAModel(acc.unwrap_model(model).parameters(), decay=cfg.train.ema_decay) if cfg.train.ema else None
    if ema is not None:
        ema.to(acc.device)
    g = torch.Generator().manual_seed(cfg.seed + 1000 * acc.process_index)
    n, bs = len(images), min(cfg.train.batch_size, len(images))
    history, running = [], []
    bar = tqdm(range(cfg.train.steps * cfg.train.accum_steps), desc=f"synth train {cfg.name} fold {fold}",
               disable=not acc.is_main_process)
    for it in bar:
        idx = torch.randint(0, n, (bs,), generator=g)
        x = images[idx]
        x = _augment(x, g) if cfg.train.augment else x
        y = labels[idx].clone()
        y[torch.rand(bs, generator=g) < cfg.model.label_dropout] = 0.0     # null label -> CFG works
        target, cond = _split(x, cfg.generator)
        noise = torch.randn(target.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (bs,), generator=g)
        noisy = sched.add_noise(target, noise, t)
        inp = noisy if cond is None else torch.cat([noisy, cond], 1)
        # the schedulers read prediction_type from the saved config, so sampling follows automatically
        goal = {"epsilon": noise, "sample": target}.get(cfg.model.prediction_type)
        goal = sched.get_velocity(target, noise, t) if goal is None else goal
        inp, t, y, goal = (v.to(acc.device) for v in (inp, t, y, goal))
        with acc.accumulate(model):
            loss = F.mse_loss(model(inp, t, y).float(), goal)
            acc.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if acc.sync_gradients and ema is not None:
            ema.step(acc.unwrap_model(model).parameters())
        running.append(loss.item())
        if (it + 1) % max(1, cfg.train.log_every) == 0 or it + 1 == len(bar):
            history.append({"step": it + 1, "loss": float(np.mean(running))})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            running = []
    acc.wait_for_everyone()
    if acc.is_main_process:
        net = acc.unwrap_model(model)
        if ema is not None:
            ema.copy_to(net.parameters())
        _save(net, sched, cfg, fold, trained_on, rows, history, out_dir)
        print(f"synth train: {cfg.generator} on {len(rows)} images (folds {format_folds(trained_on)}), "
              f"{cfg.train.steps} steps, final loss {history[-1]['loss']:.4f}, "
              f"{time.time() - t_start:.0f}s -> {out_dir}")
    return out_dir


def _save(net, sched, cfg, fold, trained_on, rows, history, out_dir: Path) -> None:
    # write into a sibling temp folder, then swap it in: a crash never leaves half a generator
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp / "denoiser")
    sched.save_pretrained(tmp / "scheduler")
    write_csv(tmp / "history.csv", pd.DataFrame(history))
    write_csv(tmp / "train_ids.csv", rows[["Id", "Target"]])
    write_json(tmp / "generator.json", {"generator": cfg.generator, "fold": fold,
                                        "generator_trained_on": format_folds(trained_on),
                                        "n_images": len(rows), "config": as_dict(cfg)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


class PixelGenerator:
    """A trained pixel-space generator: its denoiser, training scheduler config and training ids."""

    modes = ("noise", "sdedit", "mix", "invert", "interp")

    def __init__(self, model_dir: str | Path, meta: dict, device: str = "cpu"):
        self.dir = Path(model_dir)
        self.meta = meta
        self.kind = meta["generator"]
        cls = SimpleDenoiser if self.kind == "ddpm_simple" else LabelUNet
        self.net = cls.from_pretrained(self.dir / "denoiser").to(device).eval()
        self.sched_config = dict(DDPMScheduler.load_config(self.dir / "scheduler"))
        self.size = int(self.net.config.sample_size)
        self.device = device

    def train_rows(self) -> pd.DataFrame:
        """``Id,Target`` of the images this generator was trained on."""
        return read_csv(self.dir / "train_ids.csv", ["Id", "Target"])

    def prepare(self, images: np.ndarray | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Split real uint8 images into (state to denoise, conditioning) in model space."""
        if images is None:
            return None, None
        return _split(to_model(images).to(self.device), self.kind)

    def shape(self, n: int) -> tuple:
        """Shape of a batch of ``n`` denoised states."""
        return (n, 1 if self.kind == "morph" else 4, self.size, self.size)

    def eps_fn(self, labels: torch.Tensor, cond: torch.Tensor | None, guidance: float):
        """Noise predictor for ``labels`` (B,28) with classifier-free guidance ``guidance``."""
        labels = labels.to(self.device)

        @torch.no_grad()
        def fn(x, t):
            tt = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
            inp = x if cond is None else torch.cat([x, cond], 1)
            if abs(guidance - 1.0) < 1e-9:
                return self.net(inp, tt, labels)
            null = torch.zeros_like(labels)
            e = self.net(torch.cat([inp, inp]), torch.cat([tt, tt]), torch.cat([null, labels]))
            e_u, e_c = e.chunk(2)
            return e_u + guidance * (e_c - e_u)
        return fn

    def generate_batch(self, opts, jobs, load_sources) -> np.ndarray:
        """Make one batch of ``jobs`` (see ``hpa.synth.generate``); uint8 ``(B,S,S,4)`` at model size."""
        from hpa.synth.generate import image_generators, job_arrays
        from hpa.synth.modes import run_pixel_mode
        labels, src_labels = job_arrays(jobs)
        needs_src = opts.mode != "noise" or self.kind == "morph"
        sources = load_sources([j.source_id for j in jobs]) if needs_src else None
        partners = load_sources([j.partner_id for j in jobs]) if opts.mode == "interp" else None
        x = run_pixel_mode(self, opts, labels, src_labels, sources, partners, image_generators(jobs))
        return to_uint8(x)

    def assemble(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Full RGBY [-1,1] batch from a denoised state (morph: put the green between the real stains)."""
        if self.kind != "morph":
            return x
        return torch.cat([cond[:, 0:1], x, cond[:, 1:3]], 1)


def check_labels(labels: np.ndarray) -> None:
    """Refuse label vectors that are not (B, 28)."""
    if labels.ndim != 2 or labels.shape[1] != NUM_CLASSES:
        raise HPAError(f"labels: expected shape (B, {NUM_CLASSES}), got {labels.shape}")
