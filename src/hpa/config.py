"""Experiment configuration: YAML files merged over typed dataclass defaults.

``load_config(path, overrides)`` reads a YAML file with ``yaml.safe_load``, applies ``--set a.b=c``
overrides, and builds the typed config. An unknown key or a value of the wrong type raises an
``HPAError`` naming the file and the dotted key. ``save_config`` writes the resolved config that is
stored next to every run's outputs. The same machinery serves other schemas (for example the
generator configs under ``configs/synth/``): pass ``schema=``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hpa.errors import HPAError
from hpa.io import write_text

C = TypeVar("C")


# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Where the Kaggle-layout data lives and at what size it is used."""
    root: str = "input/demo"            # folder with train.csv, train/, test/, sample_submission.csv
    train_csv: str = "train.csv"
    train_dir: str = "train"
    test_dir: str = "test"
    sample_submission: str = "sample_submission.csv"
    external_csv: str = ""              # HPAv18 label file (Id,Target); empty = no external data
    external_dir: str = ""              # HPAv18 JPEG folder
    image_size: int = 64                # working size (square); images are resized once, into the cache
    cache: bool = True                  # pre-resized uint8 memory-mapped cache
    cache_dir: str = "input/cache"
    fraction: float = 1.0               # use this share of the training images (data-regime ablations)


@dataclass
class FoldsConfig:
    """How training images are split into k folds."""
    n_splits: int = 5
    seed: int = 42
    file: str = ""                      # Id,fold CSV; empty = <data.root>/folds.csv
    dedup: bool = False                 # group near-duplicate images (green-channel phash) in one fold
    hash_threshold: int = 4             # max Hamming distance of two phashes to count as duplicates


@dataclass
class ModelConfig:
    """A timm backbone with a 28-way head on 4-channel input."""
    name: str = "resnet18"
    pretrained: bool = False
    weights: str = ""                   # local weights file (timm pretrained_cfg overlay)
    in_chans: int = 4
    fourth_channel_init: str = "timm"   # timm | red (copy red filters to the yellow channel)
    head: str = "linear"                # linear | arcface
    arcface_s: float = 30.0
    arcface_m: float = 0.5
    drop_rate: float = 0.0
    mean: list[float] = field(default_factory=lambda: [0.08, 0.05, 0.05, 0.08])
    std: list[float] = field(default_factory=lambda: [0.13, 0.10, 0.14, 0.13])
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossTerm:
    """One weighted term of the training loss."""
    name: str = "bce"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adamw"                 # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9


@dataclass
class SchedConfig:
    name: str = "cosine"                # none | step | multistep | cosine | plateau
    warmup_epochs: float = 0.0
    step_size: int = 10                 # step: x gamma every step_size epochs
    gamma: float = 0.1
    milestones: list[int] = field(default_factory=list)   # multistep: epochs where lr changes
    values: list[float] = field(default_factory=list)     # multistep: lr from each milestone on
    factor: float = 0.5                 # plateau
    patience: int = 2                   # plateau
    min_lr: float = 0.0


@dataclass
class AugOp:
    """One albumentations transform, by name, with its keyword arguments."""
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    val_batch_size: int = 0             # 0 = 2 x batch_size
    accum_steps: int = 1
    clip_grad: float = 0.0              # max grad norm; 0 = off
    ema: bool = False
    ema_decay: float = 0.999
    sampler: str = "random"             # random | oversample (rare-class oversampling)
    amp: str = "no"                     # no | bf16 | fp16 (autocast on CUDA)
    channels_last: bool = False
    compile: bool = False
    num_workers: int = -1               # -1 = sized to the machine
    pin_memory: bool = True
    persistent_workers: bool = True
    early_stopping: int = 0             # patience in epochs; 0 = off
    augment: list[AugOp] = field(default_factory=list)
    gpu_augment: list[AugOp] = field(default_factory=list)   # ops run on each batch on the device (hpa.gpu_augment)
    crop_from: int = 0                  # resize to this size, then random-crop image_size (0 = off)


@dataclass
class InferConfig:
    tta: int = 8                        # 1..8 dihedral views
    tta_merge: str = "mean"             # mean | max
    ensure_one: bool = True             # predict the argmax when no class passes its threshold
    batch_size: int = 64
    checkpoint: str = "best"            # best | last


@dataclass
class ThresholdConfig:
    strategy: str = "per_class"         # global | per_class | proportion | scaled
    min_positives: int = 5
    default: float = 0.5
    scale: float = 0.7
    proportions: str = ""               # CSV with class,rate; empty = train label frequencies


@dataclass
class SyntheticConfig:
    strategy: str = "none"
    manifests: list[str] = field(default_factory=list)
    ratio: float = 1.0                  # synthetic images per real image drawn into an epoch
    p: float = 0.5                      # replacement probability
    alpha: float = 0.4                  # Beta(alpha, alpha) for mixing strategies
    lam: float = 0.5                    # mix_loss weight of the synthetic term
    min_filter_score: float = 0.0
    soft_labels: bool = False
    allow_no_provenance: bool = False
    finetune_epochs: int = 2            # two_phase: real-only epochs after the mixed phase
    finetune_lr_scale: float = 0.1


@dataclass
class ExperimentConfig:
    """Everything one experiment (``configs/<exp>.yaml``) can set."""
    name: str = ""                      # run folder name; empty = the config file's stem
    seed: int = 42
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm()])
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    @property
    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``: where this experiment's outputs go."""
        return Path(self.runs_dir) / self.name


# ----------------------------------------------------------------------------- machinery
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted; raise HPAError if wrong."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = HPAError(f"{src}: config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, src)
            except HPAError:
                pass
        raise bad
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return from_dict(tp, value, src, prefix=key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        # YAML 1.1 reads "1e-3" as a string; accept anything float() reads, but never a bool.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad


def from_dict(schema: type[C], data: dict[str, Any], src: str = "<config>", prefix: str = "") -> C:
    """Build ``schema`` from a plain dict; unknown keys and wrong types raise HPAError naming the key."""
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    kwargs = {}
    for k, v in (data or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise HPAError(f"{src}: unknown config key '{key}' (valid: {', '.join(sorted(fields))})")
        kwargs[k] = _coerce(v, hints[k], key, src)
    return schema(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise HPAError(f"--set {dotted}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise HPAError(f"--set {item}: expected key=value")
        k, v = item.split("=", 1)
        _set_dotted(tree, k.strip(), yaml.safe_load(v) if v.strip() else "")
    return tree


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; raise HPAError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise HPAError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HPAError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[C] = ExperimentConfig) -> C:
    """Load ``path`` (or the defaults when None), apply ``--set`` overrides, return a typed config.

    For an ExperimentConfig an empty ``name`` becomes the config file's stem.
    """
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides or [])
    cfg = from_dict(schema, data, str(path) if path else "<defaults>")
    if hasattr(cfg, "name") and not getattr(cfg, "name") and path:
        cfg.name = Path(path).stem
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return the config as plain nested dicts and lists."""
    return asdict(cfg)


def dotted_items(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a nested config dict (lists are leaves), as ``--set`` names them."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(dotted_items(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) and return the path."""
    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
