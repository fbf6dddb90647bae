"""The generator protocol: the ``Generator`` base class every generator implements, and the
``GENERATORS`` registry (name -> the class that trains and loads it).

What ``hpa synth train`` / ``hpa synth generate`` need from a generator, in the shape of a diffusers
pipeline: ``check_inputs`` (refuse the call's settings before any work), ``prepare_latents`` (diffusion
generators, ``hpa.synthetic.sampling.DiffusionGenerator``: real images -> the state the sampler starts
from) and ``__call__`` (one batch of planned jobs -> images). Capabilities are class attributes read
by the planner and the runner, so no code outside a generator asks which generator it is:

==================  ===========================================================================
``kind``            the registry name, written to the manifest's ``generator`` column
``modes``           the generation modes it supports (names from ``hpa.synthetic.modes.MODES``)
``source_stains``   channels it copies unchanged from a real image (morph: red, blue, yellow);
                    such a generator needs a source image in every mode
``required_files``  what a trained folder must hold, checked offline before loading
``size``            (instance) the resolution it generates at, in pixels
==================  ===========================================================================

Registering: add the class's import path to ``_BUILTIN`` below (classes are imported only when used,
so ``hpa synth --help`` does not load diffusers). docs/synth.md "Writing a generator" walks through it.
"""
from __future__ import annotations

import abc
import importlib
import json
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.registry import Registry
from hpa.synthetic.config import SynthConfig
from hpa.synthetic.modes import MODES, Job, ModeOptions, plan_job

#: ``load_sources(ids) -> uint8 (B, size, size, 4)``: the real images of ``ids`` at the generator's size
LoadSources = Callable[[list], np.ndarray]


class Generator(abc.ABC):
    """A trained generator, loaded from its folder (``generator.json`` + what ``required_files`` lists).

    Subclasses implement ``train`` (a classmethod writing the folder) and ``__call__``; everything
    else has a default that fits most generators.
    """

    kind: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = ()
    source_stains: ClassVar[tuple[int, ...]] = ()
    required_files: ClassVar[tuple[str, ...]] = ("train_ids.csv",)

    def __init__(self, model_dir: str | Path | None, meta: dict, device: str = "cpu"):
        self.dir = Path(model_dir) if model_dir is not None else None
        self.meta, self.device = meta, device
        self.size = 0

    # --- training -------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def train(cls, cfg: SynthConfig, fold: str, out_dir: Path) -> Path:
        """Train on the images outside ``fold`` ("all" = every image) and write the folder ``out_dir``:
        ``generator.json`` (``generator``, ``fold``, ``generator_trained_on``, ``config``),
        ``train_ids.csv`` (Id,Target of the training images) and the weights. Return ``out_dir``."""

    @classmethod
    def missing_files(cls, model_dir: Path, meta: dict) -> list[Path]:
        """Files of ``required_files`` absent from ``model_dir`` (override when they depend on ``meta``)."""
        return [model_dir / f for f in cls.required_files if not (model_dir / f).exists()]

    # --- generation -----------------------------------------------------------------------------
    def train_rows(self) -> pd.DataFrame:
        """``Id,Target`` of the images this generator was trained on (sources and label sets come from them)."""
        return read_csv(self.dir / "train_ids.csv", ["Id", "Target"])

    def check_inputs(self, opts: ModeOptions) -> None:
        """Refuse settings this generator cannot run (HPAError) before anything is planned or written."""
        if opts.mode not in MODES:
            raise HPAError(f"--mode: unknown mode '{opts.mode}' (valid: {', '.join(MODES)})")
        if opts.mode not in self.modes:
            raise HPAError(f"mode '{opts.mode}' is not available for {self.kind} (valid: {', '.join(self.modes)})")

    def use_lcm(self, folder: str | Path) -> None:
        """Switch to an LCM-distilled model (``--sampler lcm``); only some generators have one."""
        raise HPAError(f"--sampler lcm: not available for {self.kind} (no LCM-distilled model; sd_lora only)")

    def plan(self, rows: pd.DataFrame, opts: ModeOptions, n: int, seed: int, name: str, relabel: bool,
             gamma: float) -> list[Job]:
        """The ``n`` jobs of a run: job ``i`` from seed ``seed + i`` alone (its Id, source, labels)."""
        return [plan_job(rows, opts.mode, seed + i, name, bool(self.source_stains), relabel, opts.strength, gamma)
                for i in range(n)]

    @abc.abstractmethod
    def __call__(self, opts: ModeOptions, jobs: list[Job], load_sources: LoadSources) -> np.ndarray:
        """Make one batch: uint8 RGBY ``(B, size, size, 4)``, image ``b`` from ``jobs[b]`` only (its own
        seed, never the batch), so any image can be regenerated alone."""

    def finish(self, img: np.ndarray, job: Job, size: int, read_source: Callable[[str], np.ndarray]) -> np.ndarray:
        """The image as written, at the training size ``size`` (bicubic upsampling by default;
        ``read_source(id)`` reads a real image at ``size`` for generators that keep its stains)."""
        import cv2
        if img.shape[0] == size:
            return img
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


class DiffusionGenerator(Generator):
    """A generator that denoises. The shared loops (``hpa.synthetic.sampling.run_mode``) see it through a
    noise predictor ``eps_fn(x, t)``, so one loop serves pixel-space DDPMs, morph and Stable Diffusion
    latents. Subclasses set ``sched_config`` (the training scheduler's config; every sampler is built
    from it) and, where it fits, ``prepare_latents`` (real images -> the state an edit starts from)."""

    sched_config: dict

    def check_inputs(self, opts: ModeOptions) -> None:
        """Also refuse an unknown ``--sampler`` and a ``--strength`` outside (0, 1] where they apply."""
        from hpa.synthetic.sampling import DIFFUSION_SAMPLERS, start_index
        super().check_inputs(opts)
        mode = MODES[opts.mode]
        if mode.uses_sampler:
            DIFFUSION_SAMPLERS.get(opts.sampler)
        if mode.uses_strength:
            start_index(opts.steps, opts.strength)


GENERATORS: Registry[str] = Registry("generator")
#: name -> "module:Class" (imported on first use)
_BUILTIN = {"ddpm": "hpa.synthetic.ddpm:DDPMGenerator", "ddpm_simple": "hpa.synthetic.ddpm:SimpleDDPMGenerator",
            "morph": "hpa.synthetic.ddpm:MorphGenerator", "sd_lora": "hpa.synthetic.sd_lora:SDLoraGenerator",
            "standin": "hpa.synthetic.standin:StandinGenerator"}
for _name, _where in _BUILTIN.items():
    GENERATORS.register(_name)(_where)


def generator_class(name: str) -> type[Generator]:
    """The class of generator ``name`` (HPAError listing the valid names when unknown)."""
    module, cls = GENERATORS.get(name).split(":")
    return getattr(importlib.import_module(module), cls)


def train_generator(cfg: SynthConfig, fold: str, out_dir: str | Path | None = None) -> Path:
    """Train ``cfg.generator`` for ``fold`` ("all" or a fold number); return the model folder."""
    cls = generator_class(cfg.generator)
    return cls.train(cfg, str(fold), Path(out_dir) if out_dir else cfg.model_dir(str(fold)))


def read_meta(model_dir: str | Path) -> dict:
    """The ``generator.json`` of a trained generator folder (HPAError when absent or not JSON)."""
    path = Path(model_dir) / "generator.json"
    if not path.is_file():
        raise HPAError(f"{path}: missing (not a trained generator folder; run 'hpa synth train' first)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HPAError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "generator" not in meta:
        raise HPAError(f"{path}: no 'generator' key (not a trained generator folder)")
    return meta


def load_generator(model_dir: str | Path, device: str = "cpu") -> Generator:
    """Load a trained generator folder (any registered kind), offline: a missing file is named, never
    looked up on the model hub."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    cls = generator_class(meta["generator"])
    missing = cls.missing_files(model_dir, meta)
    if missing:
        raise HPAError(f"{missing[0]}: missing (not a trained generator folder)")
    return cls(model_dir, meta, device)
