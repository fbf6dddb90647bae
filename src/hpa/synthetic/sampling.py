"""Diffusion samplers (``DIFFUSION_SAMPLERS``, a registry of diffusers schedulers) and the loops every
diffusion generator shares, with ``run_mode`` running one batch of any diffusion mode.

The loops see a generator only through ``eps_fn(x, t) -> predicted noise`` (guidance already applied),
so the same code runs pixel-space DDPMs, the morph model and Stable Diffusion latents.
Randomness comes from one ``torch.Generator`` per image (``randn_tensor`` with a list of generators),
so an image's bytes depend on its own seed only, never on its batch.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import (DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       LCMScheduler)
from diffusers.utils.torch_utils import randn_tensor

from hpa.errors import HPAError
from hpa.registry import Registry
from hpa.synthetic.modes import MODES, ModeOptions

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DIFFUSION_SAMPLERS: Registry = Registry("diffusion sampler", fixed=("config",))


@DIFFUSION_SAMPLERS.register("ddpm")
def _ddpm(config: dict) -> DDPMScheduler:
    return DDPMScheduler.from_config(config, clip_sample=True)


@DIFFUSION_SAMPLERS.register("ddim")
def _ddim(config: dict) -> DDIMScheduler:
    # eta = 0 and no clipping: the deterministic ODE that DDIM inversion runs backwards
    return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)


@DIFFUSION_SAMPLERS.register("dpmpp")
def _dpmpp(config: dict) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


@DIFFUSION_SAMPLERS.register("lcm")
def _lcm(config: dict) -> LCMScheduler:
    return LCMScheduler.from_config(config)


def make_scheduler(name: str, train_config: dict):
    """Build sampler ``name`` from the training scheduler's config; unknown name -> HPAError."""
    return DIFFUSION_SAMPLERS.get(name)(dict(train_config))


def initial_noise(shape: tuple, generators: list[torch.Generator], device="cpu",
                  dtype=torch.float32) -> torch.Tensor:
    """Gaussian noise of ``shape`` (B,...) drawn per image from ``generators`` (one per image)."""
    return randn_tensor(shape, generator=generators, device=torch.device(device), dtype=dtype)


def _step(scheduler, eps: torch.Tensor, t, x: torch.Tensor, generators) -> torch.Tensor:
    kw = {"generator": generators} if "generator" in scheduler.step.__code__.co_varnames else {}
    if isinstance(scheduler, DDIMScheduler):
        kw["eta"] = 0.0
    return scheduler.step(eps, t, x, **kw).prev_sample


def start_index(steps: int, strength: float) -> int:
    """First schedule index that SDEdit runs for ``strength`` in (0, 1] (1 = from pure noise)."""
    if not 0.0 < strength <= 1.0:
        raise HPAError(f"strength: {strength} must be in (0, 1]")
    return steps - max(1, min(steps, int(round(steps * strength))))


def denoise(eps_fn: EpsFn, scheduler, x: torch.Tensor, steps: int,
            generators: list[torch.Generator], begin: int = 0) -> torch.Tensor:
    """Run the reverse process from schedule index ``begin`` (``x`` already at that noise level)."""
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin * scheduler.order)
    for t in scheduler.timesteps[begin * scheduler.order:]:
        x_in = scheduler.scale_model_input(x, t)
        x = _step(scheduler, eps_fn(x_in, t), t, x, generators)
    return x


def sample(eps_fn: EpsFn, scheduler, shape: tuple, steps: int,
           generators: list[torch.Generator], device="cpu") -> torch.Tensor:
    """Generate from pure noise (class-conditional / text-to-image)."""
    scheduler.set_timesteps(steps, device=device)
    x = initial_noise(shape, generators, device) * scheduler.init_noise_sigma
    return denoise(eps_fn, scheduler, x, steps, generators)


def sdedit(eps_fn: EpsFn, scheduler, x0: torch.Tensor, strength: float, steps: int,
           generators: list[torch.Generator]) -> torch.Tensor:
    """SDEdit: noise the real ``x0`` to the level ``strength`` and denoise it under the new condition."""
    scheduler.set_timesteps(steps, device=x0.device)
    begin = start_index(steps, strength)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin * scheduler.order)
    t0 = scheduler.timesteps[begin * scheduler.order]
    noise = initial_noise(tuple(x0.shape), generators, x0.device, x0.dtype)
    x = scheduler.add_noise(x0, noise, t0.repeat(x0.shape[0]))
    return denoise(eps_fn, scheduler, x, steps, generators, begin)


def ddim_invert(eps_fn: EpsFn, train_config: dict, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """DDIM inversion (``DDIMInverseScheduler``): map a clean ``x0`` to the noise that regenerates it."""
    inv = DDIMInverseScheduler.from_config(dict(train_config), clip_sample=False, set_alpha_to_one=False)
    inv.set_timesteps(steps, device=x0.device)
    x = x0
    for t in inv.timesteps:
        x = inv.step(eps_fn(x, t), t, x).prev_sample
    return x


def regenerate(eps_fn: EpsFn, train_config: dict, x_t: torch.Tensor, steps: int) -> torch.Tensor:
    """Run DDIM (eta 0) from inverted noise ``x_t`` back to an image."""
    sched = make_scheduler("ddim", train_config)
    sched.set_timesteps(steps, device=x_t.device)
    return denoise(eps_fn, sched, x_t, steps, [])


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per sample between noise tensors ``a`` and ``b`` (keeps their norm)."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-8)
    omega = torch.arccos(cos.clamp(-1 + 1e-6, 1 - 1e-6))[:, None]
    so = torch.sin(omega)
    out = torch.sin((1 - alpha) * omega) / so * af + torch.sin(alpha * omega) / so * bf
    lin = (1 - alpha) * af + alpha * bf    # nearly parallel vectors: slerp = lerp
    out = torch.where(so.abs() < 1e-4, lin, out)
    return out.view_as(a)



def run_mode(opts: ModeOptions, eps_fn: EpsFn, shape: tuple, sched_config: dict,
             generators: list[torch.Generator], device="cpu", x0: torch.Tensor | None = None,
             source_eps: EpsFn | None = None, partner: tuple[EpsFn, torch.Tensor] | None = None) -> torch.Tensor:
    """One batch of diffusion mode ``opts.mode`` in model space (pixels or latents).

    ``eps_fn`` predicts noise under the target condition; from noise the batch has ``shape``; ``x0`` is
    the real start (edit and inversion modes); inversion runs ``source_eps`` (the source's own
    condition, no guidance), and ``partner`` = (its eps_fn, its x0) is the second image of ``interp``.
    """
    start = MODES[opts.mode].start
    if start == "noise":
        return sample(eps_fn, make_scheduler(opts.sampler, sched_config), shape, opts.steps, generators, device)
    if start == "edit":
        return sdedit(eps_fn, make_scheduler(opts.sampler, sched_config), x0, opts.strength, opts.steps, generators)
    x_t = ddim_invert(source_eps, sched_config, x0, opts.steps)
    if partner is not None:
        p_eps, p0 = partner
        x_t = slerp(x_t, ddim_invert(p_eps, sched_config, p0, opts.steps), opts.interp_alpha)
    return regenerate(eps_fn, sched_config, x_t, opts.steps)
