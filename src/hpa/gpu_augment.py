"""Training augmentation on the batch, on the training device (``train.gpu_augment``).

At 512 px one CPU core runs the 3rd-place augmentations (flips, 90-degree rotations, transpose,
affine, brightness/contrast; ``configs/pudae_resnet34.yaml``) at about 100-120 images/s: with the
default 4 loader workers that is under half of what one H200 trains ResNet34 at. Moving the ops to the
batch on the GPU leaves the workers a copy of the cached uint8 image (about 1,100 images/s per core).

``train.gpu_augment`` lists ops like ``train.augment`` (names and parameters of ``hpa.transforms``,
albumentations semantics); an op listed here runs on each training batch after it reached the device,
so move it out of ``train.augment`` (or it runs twice). Random parameters are drawn per image on a CPU
generator seeded by (seed, epoch, step, process), so a batch is augmented the same way on any device
and on every run with that seed. Written by hand because albumentations works on single HxWxC arrays
on the CPU; kornia would do it but is one more dependency for six short functions.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F

from hpa.config import AugOp
from hpa.errors import HPAError
from hpa.registry import Registry

#: name -> factory(**params) -> op(x float (B,C,H,W), g CPU generator) -> x
GPU_AUGMENTATIONS: Registry[Callable[..., Callable]] = Registry("GPU augmentation")
Op = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _mask(b: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    """``(B,)`` bool: which images an op with probability ``p`` touches."""
    return (torch.rand(b, generator=g) < p).to(device)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


@GPU_AUGMENTATIONS.register("hflip")
def hflip(p: float = 0.5) -> Op:
    """Mirror left-right (``A.HorizontalFlip``)."""
    return lambda x, g: _where(_mask(len(x), p, g, x.device), x.flip(3), x)


@GPU_AUGMENTATIONS.register("vflip")
def vflip(p: float = 0.5) -> Op:
    """Mirror top-bottom (``A.VerticalFlip``)."""
    return lambda x, g: _where(_mask(len(x), p, g, x.device), x.flip(2), x)


@GPU_AUGMENTATIONS.register("transpose")
def transpose(p: float = 0.5) -> Op:
    """Swap rows and columns (``A.Transpose``; square images)."""
    return lambda x, g: _where(_mask(len(x), p, g, x.device), x.transpose(2, 3), x)


@GPU_AUGMENTATIONS.register("rotate90")
def rotate90(p: float = 1.0) -> Op:
    """Rotate by k x 90 degrees, k uniform in 0-3 (``A.RandomRotate90``; square images)."""
    def op(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        k = torch.randint(0, 4, (len(x),), generator=g) * (torch.rand(len(x), generator=g) < p)
        out = x.clone()
        for turns in (1, 2, 3):
            idx = (k == turns).nonzero().flatten().to(x.device)
            if len(idx):
                out[idx] = torch.rot90(x[idx], turns, dims=(2, 3))
        return out
    return op


_PADDING = {0: "zeros", 1: "border", 2: "reflection", 4: "reflection"}   # cv2 border modes


@GPU_AUGMENTATIONS.register("shift_scale_rotate")
def shift_scale_rotate(shift_limit: float = 0.1, scale_limit: float = 0.1, rotate_limit: float = 30,
                       border_mode: int = 0, p: float = 0.5) -> Op:
    """Random shift (share of the size), scale and rotation (degrees) about the centre, bilinear
    (``hpa.transforms.shift_scale_rotate``); ``border_mode`` 0 fills zeros, 1 repeats the edge, 2/4 reflect."""
    if border_mode not in _PADDING:
        raise HPAError(f"train.gpu_augment: shift_scale_rotate border_mode {border_mode} not one of "
                       f"{sorted(_PADDING)}")

    def op(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = len(x)
        pick = torch.rand(b, generator=g) < p
        u = torch.rand(b, 4, generator=g, dtype=torch.float64) * 2 - 1          # uniform(-1, 1)
        idx = pick.nonzero().flatten()
        if not len(idx):
            return x
        angle = u[idx, 0] * math.radians(rotate_limit)
        scale = 1 + u[idx, 1] * scale_limit
        # affine_grid maps output to input coordinates in [-1, 1]: the inverse of the forward transform
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        tx, ty = -u[idx, 2] * shift_limit * 2, -u[idx, 3] * shift_limit * 2
        theta = torch.stack([torch.stack([cos, -sin, cos * tx - sin * ty], 1),
                             torch.stack([sin, cos, sin * tx + cos * ty], 1)], 1)
        sel = x[idx.to(x.device)]
        grid = F.affine_grid(theta.to(x.device, torch.float32), list(sel.shape), align_corners=False)
        out = x.clone()
        out[idx.to(x.device)] = F.grid_sample(sel, grid, mode="bilinear", padding_mode=_PADDING[border_mode],
                                              align_corners=False)
        return out
    return op


@GPU_AUGMENTATIONS.register("brightness_contrast")
def brightness_contrast(brightness_limit: float = 0.2, contrast_limit: float = 0.2, p: float = 0.5) -> Op:
    """``x * (1 + c) + b * 255`` with ``c``, ``b`` uniform in +-limit (``A.RandomBrightnessContrast``
    with ``brightness_by_max``), clipped to 0-255."""
    def op(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = len(x)
        pick = (torch.rand(b, generator=g) < p).float()
        u = torch.rand(b, 2, generator=g) * 2 - 1
        alpha = (1 + pick * u[:, 0] * contrast_limit).to(x.device)[:, None, None, None]
        beta = (pick * u[:, 1] * brightness_limit * 255).to(x.device)[:, None, None, None]
        return (x * alpha + beta).clamp_(0, 255)
    return op


def _build(name: str, params: tuple, where: str) -> Op:
    return GPU_AUGMENTATIONS.build(name, dict(params), where)


@lru_cache(maxsize=64)
def _ops(spec: tuple) -> tuple[Op, ...]:
    return tuple(_build(name, params, f"train.gpu_augment[{i}]") for i, (name, params) in enumerate(spec))


def _spec(ops: list[AugOp]) -> tuple:
    return tuple((op.name, tuple(sorted(op.params.items()))) for op in ops)


def check_gpu_ops(ops: list[AugOp]) -> None:
    """Build every op once: an unknown name or parameter raises HPAError naming it (before training)."""
    _ops(_spec(ops))


def batch_seed(seed: int, epoch: int, step: int, process: int = 0) -> int:
    """The seed of one batch's augmentation: a different stream per (seed, epoch, step, process)."""
    return int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(
        ((seed * 1_000_003 + epoch) * 1_000_003 + step) * 1_009 + process)))


def gpu_augment(x: torch.Tensor, ops: list[AugOp], seed: int) -> torch.Tensor:
    """Augment a ``(B, C, H, W)`` batch (uint8 0-255 or float) on its own device; same dtype back.

    Flips, rotations and transposes are exact pixel moves; the affine and brightness ops compute in
    float32 and round back to uint8. The same ``seed`` draws the same parameters on every device (the
    pixels then agree up to float rounding in the bilinear affine).
    """
    if not ops:
        return x
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise HPAError(f"train.gpu_augment: needs square (B, C, H, W) batches, got {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    out = x.float()
    for op in _ops(_spec(ops)):
        out = op(out, g)
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)
