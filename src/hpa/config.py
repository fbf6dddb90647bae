"""Experiment configuration: YAML files merged over typed dataclass defaults.

``load_config(path, overrides)`` reads a YAML file and its ``base:`` files (:mod:`hpa.config_yaml`:
mappings merge deeply, lists replace), applies ``--set a.b=c`` overrides, and builds the typed config.
An unknown key, a value of the wrong type, or one outside its field's range (``ranged(10, ge=1)``)
raises an ``HPAError`` naming the file or ``--set`` item that gave it and the dotted key, before
anything is written. Pluggable parts are a registry name plus a ``params`` dict of the factory's
keyword arguments (``model.head`` + ``model.head_params``, ``optim.name`` + ``optim.params``...);
the names are checked against their registries by :mod:`hpa.config_names`. A key that moved (a
config of an older hpa) is read at its new place with one warning line (:mod:`hpa.config_moved`,
the one table of moved keys). ``save_config`` writes the
resolved config stored next to every run's outputs. The same machinery serves the other schemas
(generator, ablation and ensemble configs): pass ``schema=``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpa.config_moved import upgrade as upgrade_moved_keys
from hpa.config_names import param_pairs
from hpa.config_types import C, Range, from_dict, ranged  # noqa: F401  (re-exported)
from hpa.config_yaml import apply_overrides, read_tree, read_yaml  # noqa: F401  (re-exported)
from hpa.errors import HPAError
from hpa.io import write_text


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
    external_dir: str = ""              # HPAv18 folder: colour JPEGs, or Kaggle-layout PNGs (hpa download --format png)
    external_in: str = ranged("train", choices=("train", "folds"))   # train: in every fold's training part;
                                        # folds: spread over the folds by duplicate group (validated too)
    external_fraction: float = ranged(1.0, gt=0, le=1)   # use this share of the external images (whole groups, seeded)
    external_skip_missing: bool = False  # train on the external Ids that have images (else an error)
    external_groups: str = ""           # duplicate groups CSV; empty = duplicates.csv beside the folds file
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
    name: str = "resnet10t"             # deep 3x3 stem: learns small images where resnet18's 7x7 one does not (docs/recipe.md)
    pretrained: bool = False
    weights: str = ""                   # local weights file (timm pretrained_cfg overlay)
    in_chans: int = ranged(4, ge=1)
    fourth_channel_init: str = ranged("timm", choices=("timm", "red"))   # red: copy red filters to yellow
    head: str = "linear"                # a HEADS name: linear | arcface
    head_params: dict[str, Any] = field(default_factory=dict)   # the head's keyword arguments (arcface: s, m)
    drop_rate: float = ranged(0.0, ge=0, lt=1)
    grad_checkpointing: bool = False    # recompute activations in backward (timm): large inputs fit in memory
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
    no_decay_norm_bias: bool = False    # no weight decay on norm weights and biases (timm param groups)
    layer_decay: float = ranged(0.0, ge=0, le=1)   # layer-wise lr decay (e.g. 0.75 per layer group from the head); 0 = off


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
    epochs: int = ranged(18, ge=1)      # small data from scratch still improves after 12 epochs (docs/recipe.md)
    batch_size: int = ranged(32, ge=1)
    val_batch_size: int = ranged(0, ge=0)   # 0 = 2 x batch_size
    accum_steps: int = ranged(1, ge=1)
    clip_grad: float = ranged(0.0, ge=0)   # max grad norm; 0 = off
    freeze_backbone_epochs: int = ranged(0, ge=0)   # warm-up: only the head learns for this many epochs
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
    keep_checkpoints: int = ranged(0, ge=-1)   # keep the last K epochs' weights (fold<k>/epoch<e>.pt, for hpa swa); -1 = all
    threads: int = ranged(0, ge=0)      # torch CPU threads; 0 = auto (available CPUs minus DataLoader workers)
    augment: list[AugOp] = field(default_factory=list)
    gpu_augment: list[AugOp] = field(default_factory=list)   # ops run on each batch on the device (hpa.gpu_augment)
    crop_from: int = ranged(0, ge=0)    # resize to this size, then random-crop image_size (0 = off)
    log_with: str = ranged("tensorboard", choices=("tensorboard", "wandb", "mlflow", "none"))   # accelerate tracker
    resize_schedule: list[list[int]] = field(default_factory=list)   # [[epoch, size], ...]: progressive resizing
    # which weights of each fold make its OOF, serve the test set and give the printed estimate:
    # last (no choice: honest), nested (the epoch best on the other folds' mean curve; needs
    # keep_checkpoints -1), swa (hpa swa's average), best (chosen on the scored fold: optimistic)
    select: str = ranged("last", choices=("best", "last", "swa", "nested"))


@dataclass
class InferConfig:
    tta: int = ranged(8, ge=1, le=8)    # dihedral views (of the whole image, or of each crop)
    crops: int = ranged(0, ge=0)        # 0 = the whole image at the load size; N = N crops of data.image_size
                                        # from the train.crop_from image, each in tta views (multi-crop TTA)
    crop_mode: str = ranged("fixed", choices=("fixed", "random"))   # fixed: centre, then the 4 corners (<= 5)
    tta_merge: str = "mean"             # a TTA_MERGES name: mean | max
    ensure_one: bool = True             # predict the argmax when no class passes its threshold
    batch_size: int = ranged(64, ge=1)


@dataclass
class ThresholdConfig:
    # auto: chosen among `candidates` by their nested (honest) estimates, the simplest within the fold
    # spread of the best (hpa.thresholds.selection); or a THRESHOLD_STRATEGIES name, applied as asked
    strategy: str = "auto"
    candidates: list[str] = field(default_factory=lambda: ["fixed", "global", "per_class", "proportion", "scaled"])
    params: dict[str, dict[str, Any]] = field(default_factory=dict)   # per strategy name: its own settings
    default: float = ranged(0.5, ge=0, le=1)   # the fixed strategy's threshold (and with no thresholds.json)
    rate_ratio: float = ranged(2.0, ge=0)      # every tuned class predicted for prior/r..prior*r of the rows; 0 = off


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
    sample: str = ranged("uniform", choices=("uniform", "rare"))   # rare: draw pool images by 1 / count of their rarest label


@dataclass
class PseudoConfig:
    """A second round that adds confidently predicted test images of a first run to training."""
    from_run: str = ""                  # the first round's run folder (test_probs.csv + thresholds.json); "" = off
    min_confidence: float = ranged(0.0, ge=0, le=1)   # every predicted class of an image needs p >= this
    max_fraction: float = ranged(1.0, gt=0, le=1)     # keep at most this share of the test images (most confident)


@dataclass
class EmbedConfig:
    """``hpa embed``: a frozen backbone's embeddings of the images, cached (docs/foundation.md)."""
    source: str = ""                    # foundation/<name> | run:<run folder> (its fold checkpoints, per fold)
    weights: str = ""                   # foundation: local weights file or URL (default: its published URL)
    params: dict[str, Any] = field(default_factory=dict)   # foundation loader params (pool, img_size, sha256...)
    size: int = ranged(0, ge=0)         # side the images are read at; 0 = data.image_size
    tiles: int = ranged(1, ge=1)        # crop policy: a tiles x tiles grid of crops, embeddings averaged
    flips: int = ranged(1, choices=(1, 2, 4, 8))   # dihedral views of each crop, averaged
    batch_size: int = ranged(64, ge=1)
    cache_dir: str = "input/embeddings"
    external: bool = False              # also embed the HPAv18 images of data.external_csv


@dataclass
class ProbeConfig:
    """``hpa probe``: heads fitted per fold on cached embeddings; one run folder ``<name>_<head>`` each."""
    heads: list[str] = field(default_factory=lambda: ["linear", "mlp"])   # linear | mlp
    C: float = ranged(1.0, gt=0)        # linear: inverse L2 strength of the per-class logistic regressions
    class_weight: str = ranged("balanced", choices=("balanced", "none"))   # linear
    hidden: int = ranged(256, ge=1)     # mlp: hidden units
    alpha: float = ranged(1e-3, ge=0)   # mlp: L2 penalty
    max_iter: int = ranged(200, ge=1)   # mlp: epochs (adam)


@dataclass
class ExperimentConfig:
    """Everything one experiment (``configs/<exp>.yaml``) can set."""
    name: str = ""                      # run folder name; empty = the config file's stem
    seed: int = ranged(42, ge=0)
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # BCE + soft-F1 (no pos_weight): F1 at 0.5 and about the true number of labels per image (docs/recipe.md)
    loss: list[LossTerm] = field(default_factory=lambda: [LossTerm(), LossTerm("soft_f1")])
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    thresholds: ThresholdConfig = field(default_factory=ThresholdConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def problems(self) -> list[tuple[str, str]]:
        """Settings that are fine alone but not together, as ``(key, what is wrong)``."""
        out = []
        if self.name and run_name_problem(self.name):
            out.append(("name", run_name_problem(self.name)))
        if self.loss and not any(t.weight > 0 for t in self.loss):
            out.append(("loss", "has no term with a weight > 0 (it would train nothing)"))
        if self.train.crop_from and self.train.crop_from < self.data.image_size:
            out.append(("train.crop_from", f"must be 0 or >= data.image_size ({self.data.image_size}), "
                                           f"got {self.train.crop_from}"))
        if self.data.external_csv and not self.data.external_dir:
            out.append(("data.external_dir", "is empty but data.external_csv is set: name the HPAv18 image folder"))
        if self.train.select == "nested" and self.train.keep_checkpoints != -1:
            out.append(("train.select", "nested serves each fold's epoch chosen on the other folds: it needs "
                                        "every epoch's weights (train.keep_checkpoints: -1)"))
        for k in ("mean", "std"):
            if len(getattr(self.model, k)) != self.model.in_chans:
                out.append((f"model.{k}", f"needs {self.model.in_chans} values (model.in_chans), "
                                          f"got {getattr(self.model, k)}"))
        out += resize_problems(self)
        return out

    @property
    def run_dir(self) -> Path:
        """``<runs_dir>/<name>``: where this experiment's outputs go (HPAError for a name that is not
        a plain folder name: it would write outside ``runs_dir``, or into it)."""
        return Path(self.runs_dir) / check_run_name(self.name)


def run_name_problem(name: str) -> str | None:
    """What is wrong with a run name (None when it is a plain folder name: no separator, not ``.`` or
    ``..``, no leading ``.``, no control character)."""
    if not name:
        return "is empty"
    if name in (".", "..") or any(c in name for c in "/\\") or name.startswith(".") or \
            any(ord(c) < 32 for c in name):
        return f"must be a plain folder name (no '/', not '.' or '..', no leading '.'), got '{name}'"
    return None


def check_run_name(name: str, where: str = "name") -> str:
    """``name`` when it is a plain folder name (:func:`run_name_problem`), else HPAError
    ``<where>: config key 'name' <problem>``."""
    problem = run_name_problem(name)
    if problem:
        raise HPAError(f"{where}: config key 'name' {problem}")
    return name


def resize_problems(cfg: "ExperimentConfig") -> list[tuple[str, str]]:
    """What is wrong with ``train.resize_schedule``: pairs ``[epoch, size]``, the first at epoch 0,
    epochs increasing, sizes >= 8; not with ``train.crop_from`` or a synthetic strategy."""
    sched, key = cfg.train.resize_schedule, "train.resize_schedule"
    if not sched:
        return []
    if any(len(p) != 2 for p in sched):
        return [(key, f"needs [epoch, size] pairs, got {sched}")]
    epochs, sizes = [p[0] for p in sched], [p[1] for p in sched]
    if epochs[0] != 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
        return [(key, f"epochs must start at 0 and increase, got {epochs}")]
    if min(sizes) < 8:
        return [(key, f"sizes must be >= 8, got {sizes}")]
    if cfg.train.crop_from:
        return [(key, "cannot be combined with train.crop_from")]
    if cfg.synthetic.strategy != "none":
        return [(key, "cannot be combined with a synthetic strategy (its pool has one size)")]
    return []


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[C] = ExperimentConfig) -> C:
    """Load ``path`` (or the defaults when None) with its ``base:`` chain, apply ``--set`` overrides,
    and return a typed, range-checked ``schema`` (see :mod:`hpa.config_yaml` for how bases merge).

    For a schema with a ``name`` field an empty ``name`` becomes the config file's stem.
    """
    default = str(path) if path else "<defaults>"
    pairs = param_pairs(schema)
    data, origins = read_tree(path, pairs) if path else ({}, {})
    upgrade_moved_keys(data, schema, default)
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
