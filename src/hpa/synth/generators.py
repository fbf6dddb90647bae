"""The GENERATORS registry: name -> how to train one and how to load a trained one.

Pixel-space generators (``ddpm``, ``ddpm_simple``, ``morph``) live in ``hpa.synth.pixel``; the
Stable Diffusion LoRA generator (``sd_lora``) in ``hpa.synth.sd_lora`` (imported only when used).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hpa.registry import Registry
from hpa.synth.config import SynthConfig


@dataclass(frozen=True)
class GeneratorSpec:
    """``train(cfg, fold, out_dir) -> Path`` and ``load(model_dir, meta, device) -> generator``."""
    train: Callable[[SynthConfig, str, Path], Path]
    load: Callable[[Path, dict, str], Any]


GENERATORS: Registry = Registry("generator")


def _pixel_train(cfg, fold, out_dir):
    from hpa.synth.pixel import train_pixel
    return train_pixel(cfg, fold, out_dir)


def _pixel_load(model_dir, meta, device):
    from hpa.synth.pixel import PixelGenerator
    return PixelGenerator(model_dir, meta, device)


def _sd_train(cfg, fold, out_dir):
    from hpa.synth.sd_lora import train_sd_lora
    return train_sd_lora(cfg, fold, out_dir)


def _sd_load(model_dir, meta, device):
    from hpa.synth.sd_generate import SDLoraGenerator
    return SDLoraGenerator(model_dir, meta, device)


for _name in ("ddpm", "ddpm_simple", "morph"):
    GENERATORS.register(_name)(GeneratorSpec(_pixel_train, _pixel_load))
GENERATORS.register("sd_lora")(GeneratorSpec(_sd_train, _sd_load))


def train_generator(cfg: SynthConfig, fold: str, out_dir: str | Path | None = None) -> Path:
    """Train ``cfg.generator`` for ``fold`` ("all" or a fold number); return the model folder."""
    spec = GENERATORS.get(cfg.generator)
    return spec.train(cfg, str(fold), Path(out_dir) if out_dir else cfg.model_dir(str(fold)))


def load_generator(model_dir: str | Path, device: str = "cpu"):
    """Load a trained generator folder (any registered kind)."""
    from hpa.synth.generate import read_meta
    meta = read_meta(model_dir)
    return GENERATORS.get(meta["generator"]).load(Path(model_dir), meta, device)
