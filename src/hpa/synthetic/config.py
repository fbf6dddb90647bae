"""Generator configs (``configs/synth/*.yaml``): one typed schema loaded with ``hpa.config.load_config``.

``load_synth_config(path, overrides)`` = ``load_config(path, overrides, schema=SynthConfig)``; an unknown
key or a wrong type raises HPAError naming the key. One schema serves every generator in the
``GENERATORS`` registry (``hpa.synthetic.protocol``); a generator reads only the keys it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpa.config import load_config, ranged


@dataclass
class SynthData:
    """The real images a generator learns from (Kaggle layout) and their folds."""
    root: str = "input/demo"            # folder with train.csv and train/
    train_csv: str = "train.csv"
    train_dir: str = "train"
    folds: str = ""                     # Id,fold CSV; empty = <root>/folds.csv
    image_size: int = ranged(32, ge=8)  # generator resolution (images are resized to it)
    output_size: int = ranged(0, ge=0)  # generated images are upsampled (bicubic) to this; 0 = source size


@dataclass
class SynthModel:
    """Denoiser architecture (pixel-space generators) or the pretrained pipeline (sd_lora)."""
    block_out_channels: list[int] = ranged(factory=lambda: [32, 64, 64], ge=1)
    layers_per_block: int = ranged(1, ge=1)
    attention: bool = True              # last down / first up block with self-attention
    simple_channels: int = ranged(64, ge=1)   # ddpm_simple: width of its three conv layers
    label_dropout: float = ranged(0.1, ge=0, lt=1)   # share of training samples with the null label (for CFG)
    train_timesteps: int = ranged(1000, ge=1)
    beta_schedule: str = "squaredcos_cap_v2"
    # what the denoiser predicts: epsilon | v_prediction | sample. v, because with the cosine schedule an
    # epsilon model never learns the dark HPA background at high noise in a short (CPU) training: its
    # x0 estimate is amplified noise, sampling stays on it, and the samples come out grey (docs/synth.md)
    prediction_type: str = ranged("v_prediction", choices=("epsilon", "v_prediction", "sample"))
    pretrained: str = ""                # sd_lora: hub id or local diffusers folder
    lora_rank: int = ranged(4, ge=1)
    lora_alpha: int = ranged(4, ge=1)
    textual_inversion: bool = False     # sd_lora: learn one token per class (<hpa-k>)
    lcm_weights: str = ""               # folder with an LCM-distilled unet (sampler lcm)


@dataclass
class SynthTrain:
    """Training loop settings (accelerate)."""
    steps: int = ranged(300, ge=1)
    batch_size: int = ranged(16, ge=1)
    lr: float = ranged(2e-4, gt=0)
    accum_steps: int = ranged(1, ge=1)
    ema: bool = True
    ema_decay: float = ranged(0.995, ge=0, le=1)
    mixed_precision: str = ranged("no", choices=("no", "bf16", "fp16"))   # CUDA
    channels_last: bool = False
    augment: bool = True                # random dihedral flips (HPA images have no orientation)
    log_every: int = ranged(50, ge=1)
    threads: int = ranged(0, ge=0)      # torch CPU threads of every hpa synth step; 0 = auto (hpa.threads)


@dataclass
class SynthGenerate:
    """Defaults of ``hpa synth generate`` (each one can be given on the command line)."""
    sampler: str = "ddim"               # ddpm | ddim | dpmpp | lcm
    steps: int = ranged(25, ge=1)
    guidance: float = ranged(2.0, ge=0)   # classifier-free guidance scale (1 = off)
    strength: float = ranged(0.6, gt=0, le=1)   # sdedit / mix: share of the noise schedule re-run
    mix_gamma: float = ranged(0.5, gt=0)   # mix: soft weight of the target labels = strength ** gamma
    interp_alpha: float = ranged(0.5, ge=0, le=1)   # interp: slerp position between two inverted images
    batch_size: int = ranged(16, ge=1)
    seed: int = ranged(0, ge=0)


@dataclass
class SynthConfig:
    """Everything one generator config can set."""
    name: str = ""                      # model folder name; empty = the config file's stem
    generator: str = "ddpm"             # a name in hpa.synthetic.protocol.GENERATORS
    seed: int = ranged(0, ge=0)
    models_dir: str = "runs/synth"      # trained generators go to <models_dir>/<name>/fold<k>|all
    data: SynthData = field(default_factory=SynthData)
    model: SynthModel = field(default_factory=SynthModel)
    train: SynthTrain = field(default_factory=SynthTrain)
    generate: SynthGenerate = field(default_factory=SynthGenerate)

    def model_dir(self, fold: str) -> Path:
        """``<models_dir>/<name>/fold<k>`` (or ``.../all``): where one trained generator lives."""
        return Path(self.models_dir) / self.name / (fold if fold == "all" else f"fold{fold}")


def load_synth_config(path: str | Path | None, overrides: list[str] | None = None) -> SynthConfig:
    """Load a generator config (YAML over SynthConfig defaults, ``--set`` overrides)."""
    return load_config(path, overrides, schema=SynthConfig)


def as_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config (for metadata JSON)."""
    from dataclasses import asdict
    return asdict(cfg)
