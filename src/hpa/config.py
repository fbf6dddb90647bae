"""Experiment configuration: YAML files merged over typed dataclass defaults.

``load_config(path, overrides)`` reads a YAML file with ``yaml.safe_load``, applies ``--set a.b=c``
overrides, and builds the typed config. An unknown key or a value of the wrong type raises an
``HPAError`` naming the file and the dotted key. ``save_config`` writes the resolved config that is
stored next to every run's outputs. The same machinery serves other schemas (for example the
generator configs under ``configs/synth/``): pass ``schema=``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hpa.config_yaml import Origins, apply_overrides, origin_of, read_tree, read_yaml  # noqa: F401
from hpa.errors import HPAError
from hpa.io import write_text

C = TypeVar("C")


# ----------------------------------------------------------------------------- checked ranges
@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric (or named-choice) setting; a list setting applies it to each item."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None

    def allows(self, v: Any) -> bool:
        """Whether ``v`` is inside the range."""
        if self.choices is not None:
            return v in self.choices
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def __str__(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        lo = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        hi = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return (">= " if lo[0] == "[" else "> ") + lo[1:]
        return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]


def ranged(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field whose value is checked when the config is built (``ge``/``gt``/``le``/``lt``
    bounds or ``choices``), e.g. ``epochs: int = ranged(10, ge=1)``; ``factory`` for list defaults."""
    if "choices" in limits:
        limits["choices"] = tuple(limits["choices"])
    return field(default=default, default_factory=factory, metadata={"range": Range(**limits)})


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
    image_size: int = ranged(64, ge=8)  # working size (square); images are resized once, into the cache
    cache: bool = True                  # pre-resized uint8 memory-mapped cache
    cache_dir: str = "input/cache"
    fraction: float = ranged(1.0, gt=0, le=1)   # use this share of the training images (data-regime ablations)


@dataclass
class FoldsConfig:
    """How training images are split into k folds."""
    n_splits: int = ranged(5, ge=2)
    seed: int = ranged(42, ge=0)
    file: str = ""                      # Id,fold CSV; empty = <data.root>/folds.csv
    dedup: bool = False                 # group near-duplicate images (green-channel phash) in one fold
    hash_threshold: int = ranged(4, ge=0, le=64)   # max Hamming distance of two 64-bit phashes to count as duplicates


@dataclass
class ModelConfig:
    """A timm backbone with a 28-way head on 4-channel input."""
    name: str = "resnet18"
    pretrained: bool = False
    weights: str = ""                   # local weights file (timm pretrained_cfg overlay)
    in_chans: int = ranged(4, ge=1)
    fourth_channel_init: str = ranged("timm", choices=("timm", "red"))   # red: copy red filters to yellow
    head: str = "linear"                # a HEADS name: linear | arcface
    head_params: dict[str, Any] = field(default_factory=dict)   # the head's keyword arguments (arcface: s, m)
    drop_rate: float = ranged(0.0, ge=0, lt=1)
    mean: list[float] = field(default_factory=lambda: [0.08, 0.05, 0.05, 0.08])
    std: list[float] = ranged(factory=lambda: [0.13, 0.10, 0.14, 0.13], gt=0)
    kwargs: dict[str, Any] = field(default_factory=dict)   # more timm.create_model keyword arguments


@dataclass
class LossTerm:
    """One weighted term of the training loss."""
    name: str = "bce"                   # a LOSSES name
    weight: float = ranged(1.0, ge=0)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "adamw"                 # an OPTIMIZERS name: adamw | sgd
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(1e-4, ge=0)
    params: dict[str, Any] = field(default_factory=dict)   # the optimiser's other keyword arguments (sgd: momentum)


@dataclass
class SchedConfig:
    name: str = "cosine"                # a SCHEDULES name: none | step | multistep | cosine | plateau
    warmup_epochs: float = ranged(0.0, ge=0)   # linear warm-up before any schedule
    params: dict[str, Any] = field(default_factory=dict)   # the schedule's keyword arguments (step: step_size, gamma)


@dataclass
class AugOp:
    """One albumentations transform, by name, with its keyword arguments."""
    name: str = ""                      # an AUGMENTATIONS name
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = ranged(10, ge=1)
    batch_size: int = ranged(32, ge=1)
    val_batch_size: int = ranged(0, ge=0)   # 0 = 2 x batch_size
    accum_steps: int = ranged(1, ge=1)
    clip_grad: float = ranged(0.0, ge=0)   # max grad norm; 0 = off
    ema: bool = False
    ema_decay: float = ranged(0.999, ge=0, le=1)
    sampler: str = "random"             # a DATA_SAMPLERS name: random | oversample (rare-class oversampling)
    sampler_params: dict[str, Any] = field(default_factory=dict)   # the sampler's keyword arguments (oversample: power)
    amp: str = ranged("no", choices=("no", "bf16", "fp16"))   # autocast on CUDA
    channels_last: bool = False
    compile: bool = False
    num_workers: int = ranged(-1, ge=-1)   # -1 = sized to the machine
    pin_memory: bool = True
    persistent_workers: bool = True
    early_stopping: int = ranged(0, ge=0)   # patience in epochs; 0 = off
    augment: list[AugOp] = field(default_factory=list)
    crop_from: int = ranged(0, ge=0)    # resize to this size, then random-crop image_size (0 = off)


@dataclass
class InferConfig:
    tta: int = ranged(8, ge=1, le=8)    # dihedral views
    tta_merge: str = "mean"             # a TTA_MERGES name: mean | max
    ensure_one: bool = True             # predict the argmax when no class passes its threshold
    batch_size: int = ranged(64, ge=1)
    checkpoint: str = ranged("best", choices=("best", "last"))


@dataclass
class ThresholdConfig:
    strategy: str = "per_class"         # a threshold STRATEGIES name: global | per_class | proportion | scaled
    min_positives: int = ranged(5, ge=0)
    default: float = ranged(0.5, ge=0, le=1)
    scale: float = ranged(0.7, gt=0)
    proportions: str = ""               # CSV with class,rate; empty = train label frequencies


@dataclass
class SyntheticConfig:
    strategy: str = "none"              # a synthetic STRATEGIES name
    manifests: list[str] = field(default_factory=list)
    ratio: float = ranged(1.0, gt=0)    # synthetic images per real image drawn into an epoch
    p: float = ranged(0.5, ge=0, le=1)  # replacement probability
    alpha: float = ranged(0.4, gt=0)    # Beta(alpha, alpha) for mixing strategies
    lam: float = ranged(0.5, ge=0, le=1)   # mix_loss weight of the synthetic term
    min_filter_score: float = ranged(0.0, ge=0, le=1)
    soft_labels: bool = False
    allow_no_provenance: bool = False
    finetune_epochs: int = ranged(2, ge=0)   # two_phase: real-only epochs after the mixed phase
    finetune_lr_scale: float = ranged(0.1, gt=0)


@dataclass
class ExperimentConfig:
    """Everything one experiment (``configs/<exp>.yaml``) can set."""
    name: str = ""                      # run folder name; empty = the config file's stem
    seed: int = ranged(42, ge=0)
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

    def problems(self) -> list[tuple[str, str]]:
        """Settings that are fine alone but not together, as ``(key, what is wrong)``."""
        out = []
        if self.train.crop_from and self.train.crop_from < self.data.image_size:
            out.append(("train.crop_from", f"must be 0 or >= data.image_size ({self.data.image_size}), "
                                           f"got {self.train.crop_from}"))
        for k in ("mean", "std"):
            if len(getattr(self.model, k)) != self.model.in_chans:
                out.append((f"model.{k}", f"needs {self.model.in_chans} values (model.in_chans), "
                                          f"got {getattr(self.model, k)}"))
        return out

    @property
    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``: where this experiment's outputs go."""
        return Path(self.runs_dir) / self.name


# keys of configs written before the params dicts (run folders' config.yaml among them) -> their
# place now, and their default then (equal to the factory's default now)
MOVED_KEYS = {"model.arcface_s": "model.head_params.s", "model.arcface_m": "model.head_params.m",
              "optim.momentum": "optim.params.momentum",
              **{f"sched.{k}": f"sched.params.{k}"
                 for k in ("step_size", "gamma", "milestones", "values", "factor", "patience", "min_lr")}}
_OLD_DEFAULTS = {"model.arcface_s": 30.0, "model.arcface_m": 0.5, "optim.momentum": 0.9, "sched.step_size": 10,
                 "sched.gamma": 0.1, "sched.milestones": [], "sched.values": [], "sched.factor": 0.5,
                 "sched.patience": 2, "sched.min_lr": 0.0}


def upgrade_moved_keys(tree: dict[str, Any], where: str) -> None:
    """Read an experiment tree written before the params dicts (a run's saved ``config.yaml``): a moved
    key at its old default is dropped (the factory has the same default), any other value moves into
    its params dict; a warning names the keys. Changes ``tree`` in place."""
    found = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        node = tree.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        value = node.pop(key)
        found.append(old)
        if value != _OLD_DEFAULTS[old]:
            _, params_key, param = new.split(".")
            node.setdefault(params_key, {}).setdefault(param, value)
    if found:
        warnings.warn(f"{where}: keys of an older hpa ({', '.join(found)}) read as their new keys "
                      f"({', '.join(MOVED_KEYS[k] for k in found)}) where not at their defaults", stacklevel=3)


# ----------------------------------------------------------------------------- machinery
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Where:
    """Names the source of a key in errors: the file or ``--set`` item that gave it (see ``origin_of``)."""

    def __init__(self, default: str, origins: Origins | None = None):
        self.default, self.origins = default, origins or {}

    def __call__(self, key: str) -> str:
        return origin_of(self.origins, key, self.default)

    def error(self, key: str, problem: str) -> HPAError:
        """``"<source>: config key '<key>' <problem>"`` (no source prefix when there is none)."""
        src = self(key)
        return HPAError(f"{src + ': ' if src else ''}config key '{key}' {problem}")


def _coerce(value: Any, tp: Any, key: str, where: _Where, strict: bool = True) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted; raise HPAError if wrong.

    ``strict=False`` passes values of annotations this function does not know (third-party factories'
    ``tuple[...]``, ``Literal``...) through unchecked instead of refusing them.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = where.error(key, f"must be {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where, strict)
            except HPAError:
                pass
        raise bad
    if dataclasses.is_dataclass(tp):
        if value is None:
            raise where.error(key, "is an empty (null) section: give it keys or remove it")
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, where, prefix=key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]", where, strict) for i, v in enumerate(value)]
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
        return _finite(value, bad, key, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if not strict:
        return value
    raise bad


def _finite(value: Any, bad: HPAError, key: str, where: _Where) -> float:
    # YAML 1.1 reads "1e-3" as a string; accept anything float() reads, but never a bool.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        x = float(value)
    except ValueError:
        raise bad from None
    if not math.isfinite(x):
        raise where.error(key, f"must be a finite number, got {value!r}")
    return x


def coerce_param(value: Any, tp: Any, key: str) -> Any:
    """Convert one value of a params dict (``optim.params.momentum``) to its factory's annotation ``tp``
    with the config's rules; annotations they do not cover pass unchecked. HPAError naming ``key``."""
    return _coerce(value, tp, key, _Where(""), strict=False)


def _check_range(f: dataclasses.Field, value: Any, key: str, where: _Where) -> None:
    rule = f.metadata.get("range")
    if rule is None:
        return
    items = enumerate(value) if isinstance(value, list) else [(None, value)]
    for i, v in items:
        if not rule.allows(v):
            k = key if i is None else f"{key}[{i}]"
            raise where.error(k, f"must be {rule}, got {v!r}")


def _build(schema: type[C], data: dict[str, Any], where: _Where, prefix: str = "") -> C:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    kwargs = {}
    for k, v in (data or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            hint = f"now '{MOVED_KEYS[key]}'" if key in MOVED_KEYS else f"valid: {', '.join(sorted(fields))}"
            raise HPAError(f"{where(key)}: unknown config key '{key}' ({hint})")
        kwargs[k] = _coerce(v, hints[k], key, where)
        _check_range(fields[k], kwargs[k], key, where)
    obj = schema(**kwargs)
    for key, problem in getattr(obj, "problems", lambda: [])():
        raise where.error(f"{prefix}.{key}" if prefix else key, problem)
    return obj


def from_dict(schema: type[C], data: dict[str, Any], src: str = "<config>", prefix: str = "",
              origins: Origins | None = None) -> C:
    """Build ``schema`` from a plain dict; unknown keys, wrong types and values outside a field's
    :class:`Range` raise HPAError naming the key. The error names ``origins[key]`` (the file or
    ``--set`` item that gave the key) when known, else ``src``.
    """
    return _build(schema, data, _Where(src, origins), prefix)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[C] = ExperimentConfig) -> C:
    """Load ``path`` (or the defaults when None) with its ``base:`` chain, apply ``--set`` overrides,
    and return a typed, range-checked ``schema`` (see :mod:`hpa.config_yaml` for how bases merge).

    For a schema with a ``name`` field an empty ``name`` becomes the config file's stem.
    """
    from hpa.config_names import param_pairs     # the name table knows which params belong to a name

    default = str(path) if path else "<defaults>"
    pairs = param_pairs(schema)
    data, origins = read_tree(path, pairs) if path else ({}, {})
    if schema is ExperimentConfig:
        upgrade_moved_keys(data, default)
    apply_overrides(data, overrides or [], pairs, origins, default)
    cfg = from_dict(schema, data, default, origins=origins)
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
