"""Generation modes for the pixel-space generators (``ddpm``, ``ddpm_simple``, ``morph``).

Each mode maps a batch of jobs (target labels, optional real source images, per-image generators) to
RGBY images in [-1, 1] at the generator's size:

* ``noise``  - class-conditional sampling from pure noise (morph: the source's R/B/Y, new green);
* ``sdedit`` - noise the source to ``strength`` and denoise it under the target labels (Real Guidance);
* ``mix``    - SDEdit toward a different label set, soft labels recorded (Diff-Mix);
* ``invert`` - DDIM-invert the source under its labels, regenerate under the target labels (Diff-II);
* ``interp`` - invert two images of one label set, slerp their noises, regenerate (Diff-II, Phen-LDiff).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpa.errors import HPAError
from hpa.synth import sampling


@dataclass
class ModeOptions:
    """Per-call settings of a generation run."""
    mode: str = "noise"
    sampler: str = "ddim"
    steps: int = 25
    guidance: float = 2.0
    strength: float = 0.6
    interp_alpha: float = 0.5


PIXEL_MODES = ("noise", "sdedit", "mix", "invert", "interp")


def run_pixel_mode(gen, opts: ModeOptions, labels: np.ndarray, source_labels: np.ndarray | None,
                   sources: np.ndarray | None, partners: np.ndarray | None,
                   generators: list[torch.Generator]) -> torch.Tensor:
    """Generate one batch with a ``PixelGenerator``; returns RGBY ``(B,4,S,S)`` in [-1, 1]."""
    if opts.mode not in PIXEL_MODES:
        raise HPAError(f"mode '{opts.mode}' is not available for {gen.kind} (valid: {', '.join(PIXEL_MODES)})")
    y = torch.from_numpy(labels).float()
    x0, cond = gen.prepare(sources)
    eps = gen.eps_fn(y, cond, opts.guidance)
    if opts.mode == "noise":
        sched = sampling.make_scheduler(opts.sampler, gen.sched_config)
        x = sampling.sample(eps, sched, gen.shape(len(y)), opts.steps, generators, gen.device)
    elif opts.mode in ("sdedit", "mix"):
        sched = sampling.make_scheduler(opts.sampler, gen.sched_config)
        x = sampling.sdedit(eps, sched, x0, opts.strength, opts.steps, generators)
    else:
        # inversion runs without guidance under the source's own labels (the deterministic ODE)
        src_eps = gen.eps_fn(torch.from_numpy(source_labels).float(), cond, 1.0)
        x_t = sampling.ddim_invert(src_eps, gen.sched_config, x0, opts.steps)
        if opts.mode == "interp":
            p0, pcond = gen.prepare(partners)
            p_eps = gen.eps_fn(torch.from_numpy(source_labels).float(), pcond, 1.0)
            x_t = sampling.slerp(x_t, sampling.ddim_invert(p_eps, gen.sched_config, p0, opts.steps),
                                 opts.interp_alpha)
        x = sampling.regenerate(eps, gen.sched_config, x_t, opts.steps)
    return gen.assemble(x.clamp(-1, 1), cond)
