"""Pixel-space DDPM generators: ``ddpm`` (label-conditioned UNet), ``ddpm_simple`` (Lin & Cao's three-conv
denoiser) and ``morph`` (green channel generated from a real image's red, blue and yellow stains).

The three differ only in class attributes (which denoiser, which stains are kept from a real image),
so one training loop and one generation path serve them all. Training runs through ``accelerate``
(gradient accumulation, mixed precision, main-process writes) with EMA weights
(``diffusers.training_utils.EMAModel``). A trained generator is a folder in the diffusers layout:
``denoiser/`` (``save_pretrained``), ``scheduler/``, ``generator.json`` (kind, config,
``generator_trained_on``), ``train_ids.csv`` and ``history.csv`` (loss per logged step).
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
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm

from hpa.errors import HPAError
from hpa.io import write_csv, write_json
from hpa.synthetic import sampling
from hpa.synthetic.config import SynthConfig, as_dict
from hpa.synthetic.data import load_images, multihot, to_model, to_uint8, training_rows
from hpa.synthetic.denoisers import LabelUNet, SimpleDenoiser
from hpa.synthetic.generate import image_generators, job_arrays
from hpa.synthetic.manifest import format_folds
from hpa.synthetic.modes import LABEL_DIFFUSION_MODES, MODES, ModeOptions
from hpa.synthetic.protocol import DiffusionGenerator

CHANNELS = (0, 1, 2, 3)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    # the dihedral group: fluorescence fields have no up, down, left or right
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(2)
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.transpose(2, 3)
    return x


def train_pixel(gen_cls: type["DDPMGenerator"], cfg: SynthConfig, fold: str, out_dir: str | Path) -> Path:
    """Train a ``gen_cls`` generator on the images outside ``fold`` ("all" = every image); return its folder."""
    out_dir = Path(out_dir)
    t_start = time.time()
    rows, trained_on = training_rows(cfg, fold)
    images = load_images(cfg, rows)      # uint8 until the batch: 4x less RAM than float32
    labels = torch.from_numpy(multihot(rows))
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision,
                      gradient_accumulation_steps=cfg.train.accum_steps)
    torch.manual_seed(cfg.seed)
    model = gen_cls.build_denoiser(cfg)
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
        x = to_model(images[idx.numpy()])
        x = _augment(x, g) if cfg.train.augment else x
        y = labels[idx].clone()
        y[torch.rand(bs, generator=g) < cfg.model.label_dropout] = 0.0     # null label -> CFG works
        target, cond = gen_cls.split(x)
        noise = torch.randn(target.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (bs,), generator=g)
        noisy = sched.add_noise(target, noise, t)
        inp = noisy if cond is None else torch.cat([noisy, cond], 1)
        # the schedulers read prediction_type from the saved config, so sampling follows automatically
        goal = {"epsilon": noise, "sample": target}.get(cfg.model.prediction_type)
        goal = sched.get_velocity(target, noise, t) if goal is None else goal
        inp, t, y, goal = (v.to(acc.device) for v in (inp, t, y, goal))
        with acc.accumulate(model):
            loss = _loss(model(inp, t, y).float(), goal, sched, t, cfg.model)
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
        every = cfg.train.save_every
        if every and acc.is_main_process and acc.sync_gradients and (it + 1) % every == 0 and it + 1 < len(bar):
            # a usable snapshot (EMA weights) while training goes on: a long CPU run can be judged early
            _save_snapshot(gen_cls.kind, acc.unwrap_model(model), ema, sched, cfg, fold, trained_on, rows,
                           history, out_dir)
    acc.wait_for_everyone()
    if acc.is_main_process:
        net = acc.unwrap_model(model)
        if ema is not None:
            ema.copy_to(net.parameters())
        _save(gen_cls.kind, net, sched, cfg, fold, trained_on, rows, history, out_dir)
        print(f"synth train: {gen_cls.kind} on {len(rows)} images (folds {format_folds(trained_on)}), "
              f"{cfg.train.steps} steps, final loss {history[-1]['loss']:.4f}, "
              f"{time.time() - t_start:.0f}s -> {out_dir}")
    return out_dir


def _save_snapshot(kind, net, ema, sched, cfg, fold, trained_on, rows, history, out_dir: Path) -> None:
    if ema is not None:
        ema.store(net.parameters())
        ema.copy_to(net.parameters())
    _save(kind, net, sched, cfg, fold, trained_on, rows, history, out_dir)
    if ema is not None:
        ema.restore(net.parameters())


def _loss(pred: torch.Tensor, goal: torch.Tensor, sched, t: torch.Tensor, m) -> torch.Tensor:
    """MSE, weighted per sample by Min-SNR-gamma when ``m.snr_gamma`` > 0 (faster convergence: the
    low-noise steps no longer dominate the gradient)."""
    if not m.snr_gamma:
        return F.mse_loss(pred, goal)
    snr = compute_snr(sched, t.cpu()).to(pred.device)
    w = torch.clamp(snr, max=m.snr_gamma)
    w = w / (snr + 1) if m.prediction_type == "v_prediction" else w / snr if m.prediction_type == "epsilon" else w
    per = F.mse_loss(pred, goal, reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per * w).mean()


def _save(kind: str, net, sched, cfg, fold, trained_on, rows, history, out_dir: Path) -> None:
    # write into a sibling temp folder, then swap it in: a crash never leaves half a generator
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(tmp / "denoiser")
    sched.save_pretrained(tmp / "scheduler")
    write_csv(tmp / "history.csv", pd.DataFrame(history))
    write_csv(tmp / "train_ids.csv", rows[["Id", "Target"]])
    write_json(tmp / "generator.json", {"generator": kind, "fold": fold,
                                        "generator_trained_on": format_folds(trained_on),
                                        "n_images": len(rows), "config": as_dict(cfg)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


class DDPMGenerator(DiffusionGenerator):
    """``ddpm``: a label-conditioned ``LabelUNet`` denoising all four stains (see the module docstring).

    Subclasses change ``build_denoiser`` (the network) and ``source_stains`` (stains kept from a real
    image: the rest are generated, the kept ones are the denoiser's conditioning input)."""

    kind = "ddpm"
    modes = LABEL_DIFFUSION_MODES
    denoiser_cls = LabelUNet
    required_files = ("denoiser", "denoiser/config.json", "denoiser/diffusion_pytorch_model.safetensors",
                      "scheduler", "scheduler/scheduler_config.json", "train_ids.csv")

    def __init__(self, model_dir: str | Path, meta: dict, device: str = "cpu"):
        super().__init__(model_dir, meta, device)
        self.net = self.denoiser_cls.from_pretrained(self.dir / "denoiser").to(device).eval()
        self.sched_config = dict(DDPMScheduler.load_config(self.dir / "scheduler"))
        self.size = int(self.net.config.sample_size)

    # --- what the class attributes imply ---------------------------------------------------------
    @classmethod
    def generated(cls) -> tuple[int, ...]:
        """The stains this generator makes (those it does not keep from a real image)."""
        return tuple(c for c in CHANNELS if c not in cls.source_stains)

    @classmethod
    def build_denoiser(cls, cfg: SynthConfig):
        """The untrained denoiser at ``cfg.data.image_size``: noisy generated stains (+ kept stains) in,
        the generated stains' prediction out."""
        m, out_ch = cfg.model, len(cls.generated())
        return LabelUNet(cfg.data.image_size, out_ch + len(cls.source_stains), out_ch,
                         tuple(m.block_out_channels), m.layers_per_block, m.attention, patch_size=m.patch_size)

    @classmethod
    def split(cls, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(stains to denoise, conditioning stains) of a [-1,1] RGBY batch."""
        if not cls.source_stains:
            return x, None
        return x[:, list(cls.generated())], x[:, list(cls.source_stains)]

    @classmethod
    def train(cls, cfg: SynthConfig, fold: str, out_dir: Path) -> Path:
        """See ``Generator.train``; the loop is :func:`train_pixel`."""
        return train_pixel(cls, cfg, fold, out_dir)

    # --- generation -----------------------------------------------------------------------------
    def prepare_latents(self, images: np.ndarray | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Split real uint8 images into (state to denoise, conditioning) in model space."""
        if images is None:
            return None, None
        return self.split(to_model(images).to(self.device))

    def shape(self, n: int) -> tuple:
        """Shape of a batch of ``n`` denoised states."""
        return (n, len(self.generated()), self.size, self.size)

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

    def __call__(self, opts: ModeOptions, jobs, load_sources) -> np.ndarray:
        """Make one batch of ``jobs`` (see ``Generator.__call__``); uint8 ``(B,S,S,4)`` at model size."""
        mode = MODES[opts.mode]
        labels, src_labels = job_arrays(jobs)
        needs_src = mode.start != "noise" or bool(self.source_stains)
        sources = load_sources([j.source_id for j in jobs]) if needs_src else None
        partners = load_sources([j.partner_id for j in jobs]) if mode.partner else None
        x = run_pixel_mode(self, opts, labels, src_labels, sources, partners, image_generators(jobs))
        return to_uint8(x)

    def assemble(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Full RGBY [-1,1] batch from a denoised state (kept stains put back in their places)."""
        if cond is None:
            return x
        parts, gen, kept = [], iter(range(x.shape[1])), iter(range(cond.shape[1]))
        for c in CHANNELS:
            i = next(kept) if c in self.source_stains else next(gen)
            parts.append((cond if c in self.source_stains else x)[:, i:i + 1])
        return torch.cat(parts, 1)


class SimpleDDPMGenerator(DDPMGenerator):
    """``ddpm_simple``: Lin & Cao's reduced denoiser (three conv layers, no timestep input); epsilon target."""

    kind = "ddpm_simple"
    denoiser_cls = SimpleDenoiser

    @classmethod
    def build_denoiser(cls, cfg: SynthConfig):
        """Lin & Cao's three-conv denoiser of width ``model.simple_channels``."""
        return SimpleDenoiser(4, 4, cfg.model.simple_channels, sample_size=cfg.data.image_size)


class MorphGenerator(DDPMGenerator):
    """``morph``: generates the green (protein) stain from a real image's red, blue and yellow stains and a
    target label set (CELL-Diff-style, labels in place of the protein sequence). Every mode needs a
    source image; from noise it takes a different label set than the source's."""

    kind = "morph"
    source_stains = (0, 2, 3)

    def finish(self, img, job, size, read_source) -> np.ndarray:
        """The real source at ``size`` with the generated stains upsampled into it (real stains untouched)."""
        import cv2
        real = read_source(job.source_id).copy()
        for c in self.generated():
            real[..., c] = cv2.resize(img[..., c], (size, size), interpolation=cv2.INTER_CUBIC)
        return real


def run_pixel_mode(gen: DDPMGenerator, opts: ModeOptions, labels: np.ndarray, source_labels: np.ndarray | None,
                   sources: np.ndarray | None, partners: np.ndarray | None,
                   generators: list[torch.Generator]) -> torch.Tensor:
    """Generate one batch with a pixel-space generator; returns RGBY ``(B,4,S,S)`` in [-1, 1]."""
    mode = MODES[opts.mode]
    y = torch.from_numpy(labels).float()
    x0, cond = gen.prepare_latents(sources)
    eps = gen.eps_fn(y, cond, opts.guidance)
    src_eps = partner = None
    if mode.start == "inversion":
        # inversion runs without guidance under the source's own labels (the deterministic ODE)
        src_y = torch.from_numpy(source_labels).float()
        src_eps = gen.eps_fn(src_y, cond, 1.0)
        if mode.partner:
            p0, pcond = gen.prepare_latents(partners)
            partner = (gen.eps_fn(src_y, pcond, 1.0), p0)
    x = sampling.run_mode(opts, eps, gen.shape(len(y)), gen.sched_config, generators, gen.device, x0,
                          src_eps, partner)
    return gen.assemble(x.clamp(-1, 1), cond)
