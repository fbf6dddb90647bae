"""Generator configs (``configs/synth/*.yaml``): one typed schema loaded with ``hpa.config.load_config``.

``load_synth_config(path, overrides)`` = ``load_config(path, overrides, schema=SynthConfig)``; an unknown
key or a wrong type raises HPAError naming the key. One schema serves every generator in the
``GENERATORS`` registry; a generator reads only the keys it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpa.config import load_config


@dataclass
class SynthData:
    """The real images a generator learns from (Kaggle layout) and their folds."""
    root: str = "input/demo"            # folder with train.csv and train/
    train_csv: str = "train.csv"
    train_dir: str = "train"
    folds: str = ""                     # Id,fold CSV; empty = <root>/folds.csv
    image_size: int = 32                # generator resolution (images are resized to it)
    output_size: int = 0                # generated images are upsampled (bicubic) to this; 0 = source size


@dataclass
class SynthModel:
    """Denoiser architecture (pixel-space generators) or the pretrained pipeline (sd_lora)."""
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    attention: bool = True              # last down / first up block with self-attention
    simple_channels: int = 64           # ddpm_simple: width of its three conv layers
    label_dropout: float = 0.1          # share of training samples with the null label (for CFG)
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # what the denoiser predicts: epsilon | v_prediction | sample. v, because with the cosine schedule an
    # epsilon model never learns the dark HPA background at high noise in a short (CPU) training: its
    # x0 estimate is amplified noise, sampling stays on it, and the samples come out grey (docs/synth.md)
    prediction_type: str = "v_prediction"
    pretrained: str = ""                # sd_lora: hub id or local diffusers folder
    lora_rank: int = 4
    lora_alpha: int = 4
    textual_inversion: bool = False     # sd_lora: learn one token per class (<hpa-k>)
    lcm_weights: str = ""               # folder with an LCM-distilled unet (sampler lcm)


@dataclass
class SynthTrain:
    """Training loop settings (accelerate)."""
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-4
    accum_steps: int = 1
    ema: bool = True
    ema_decay: float = 0.995
    mixed_precision: str = "no"         # no | bf16 | fp16 (CUDA)
    channels_last: bool = False
    augment: bool = True                # random dihedral flips (HPA images have no orientation)
    log_every: int = 50
    threads: int = 0                    # torch CPU threads of every hpa synth step; 0 = auto (hpa.threads)


@dataclass
class SynthGenerate:
    """Defaults of ``hpa synth generate`` (each one can be given on the command line)."""
    sampler: str = "ddim"               # ddpm | ddim | dpmpp | lcm
    steps: int = 25
    guidance: float = 2.0               # classifier-free guidance scale (1 = off)
    strength: float = 0.6               # sdedit / mix: share of the noise schedule re-run
    mix_gamma: float = 0.5              # mix: soft weight of the target labels = strength ** gamma
    interp_alpha: float = 0.5           # interp: slerp position between two inverted images
    batch_size: int = 16
    seed: int = 0


@dataclass
class SynthConfig:
    """Everything one generator config can set."""
    name: str = ""                      # model folder name; empty = the config file's stem
    generator: str = "ddpm"             # ddpm | ddpm_simple | morph | sd_lora
    seed: int = 0
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
