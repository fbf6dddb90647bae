"""One table of every config key that names a registry entry, with the params dict that goes with it.

``NAMES[schema class name]`` lists :class:`NameKey` rows. :func:`check_names` looks every such name
up (an unknown one fails listing the valid names) and checks its params against the factory's
keyword arguments, before anything is written. :func:`param_pairs` tells the YAML layer which params
belong to which name (a child config that names another optimiser drops the base's ``optim.params``).

Registries are given as ``"module:ATTRIBUTE"`` and imported only when checked, so loading a config
does not import torch. To make a new part pluggable: add its registry, a ``name`` (+ ``params``)
field to the schema, and one row here.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from hpa.errors import HPAError
from hpa.registry import Registry


@dataclass(frozen=True)
class NameKey:
    """A config key holding a registry name. ``key``/``params``: dotted, ``[]`` = every list item,
    ``{}`` = every key of a mapping; ``params`` is the key of the factory's keyword arguments."""
    key: str
    registry: str                       # "module:ATTRIBUTE"
    params: str = ""                    # "{}": each mapping key's own value is its params (thresholds.params)
    also: str = ""                      # a mapping whose keys are valid names too (ablation variants)
    extra: tuple[str, ...] = ()         # names valid besides the registry's (thresholds.strategy: auto)


NAMES: dict[str, tuple[NameKey, ...]] = {
    "ExperimentConfig": (
        NameKey("model.head", "hpa.models.heads:HEADS", "model.head_params"),
        NameKey("loss[].name", "hpa.losses:LOSSES", "loss[].params"),
        NameKey("optim.name", "hpa.optim:OPTIMIZERS", "optim.params"),
        NameKey("sched.name", "hpa.optim:SCHEDULES", "sched.params"),
        NameKey("train.sampler", "hpa.samplers:DATA_SAMPLERS", "train.sampler_params"),
        NameKey("train.augment[].name", "hpa.transforms:AUGMENTATIONS", "train.augment[].params"),
        NameKey("train.gpu_augment[].name", "hpa.gpu_augment:GPU_AUGMENTATIONS", "train.gpu_augment[].params"),
        NameKey("infer.tta_merge", "hpa.inference.predict:TTA_MERGES"),
        NameKey("thresholds.strategy", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES", extra=("auto",)),
        NameKey("thresholds.candidates[]", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES"),
        NameKey("thresholds.params{}", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES", "{}"),
        NameKey("synthetic.strategy", "hpa.synthetic.mixing.strategies:MIXING_STRATEGIES"),
    ),
    "SynthConfig": (
        NameKey("generator", "hpa.synthetic.protocol:GENERATORS"),
        NameKey("generate.sampler", "hpa.synthetic.sampling:DIFFUSION_SAMPLERS"),
    ),
    "AblationConfig": (
        NameKey("strategies[]", "hpa.synthetic.mixing.strategies:MIXING_STRATEGIES", also="variants"),
        NameKey("strategy_manifests{}", "hpa.synthetic.mixing.strategies:MIXING_STRATEGIES"),
    ),
    "EnsembleConfig": (
        NameKey("blend", "hpa.inference.ensemble:BLENDS"),
        NameKey("thresholds.strategy", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES", extra=("auto",)),
        NameKey("thresholds.candidates[]", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES"),
        NameKey("thresholds.params{}", "hpa.thresholds.strategies:THRESHOLD_STRATEGIES", "{}"),
    ),
}


def registry(spec: str) -> Registry:
    """Import ``"module:ATTRIBUTE"`` and return that registry."""
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


def param_pairs(schema: type) -> list[tuple[str, str]]:
    """``(name key, params key)`` of ``schema``'s parts outside lists (lists are replaced whole)."""
    return [(n.key, n.params) for n in NAMES.get(schema.__name__, ()) if n.params and "[" not in n.key and "{" not in n.key]


def values_at(tree: Any, key: str, prefix: str = "") -> Iterator[tuple[str, Any, dict]]:
    """``(dotted key, value, the mapping holding it)`` for every value at ``key`` in nested dicts and
    lists (``[]`` expands list items, ``{}`` the keys of a mapping, which are then the values)."""
    head, _, rest = key.partition(".")
    name = head.rstrip("[]{}")
    if not isinstance(tree, dict) or name not in tree:
        return
    here, node = f"{prefix}{name}", tree[name]
    if head.endswith("[]"):
        items = [(f"{here}[{i}]", v) for i, v in enumerate(node)]
    elif head.endswith("{}"):
        items = [(f"{here}.{k}", k) for k in node]
    else:
        items = [(here, node)]
    for dotted, v in items:
        if rest:
            yield from values_at(v, rest, f"{dotted}.")
        else:
            yield dotted, v, tree


def check_names(cfg: Any) -> None:
    """Look up every name ``NAMES`` lists for ``cfg``'s schema and check its params; HPAError naming
    the unknown name (with the valid ones) or the key of a bad parameter."""
    for row in NAMES.get(type(cfg).__name__, ()):
        reg = registry(row.registry)
        tree = asdict(cfg)
        for dotted, name, holder in values_at(tree, row.key):
            if row.also and name in (tree.get(row.also) or {}):
                continue                # a label the config defines itself (an ablation variant)
            if name in row.extra:
                continue                # a choice between the registry's names (auto)
            if row.extra and name not in reg:
                valid = ", ".join(sorted([*reg.names(), *row.extra]))
                raise HPAError(f"unknown {reg.kind} '{name}' (valid: {valid})")
            reg.get(name)
            if row.params == "{}":      # {name: params}: thresholds.params.scaled = {scale: 0.7}
                field_name = row.key.rsplit(".", 1)[-1].rstrip("{}")
                reg.check_params(name, holder[field_name][name] or {}, dotted)
            elif row.params:            # a name and its params sit side by side: loss[2].name, loss[2].params
                params_field = row.params.rsplit(".", 1)[-1]
                reg.check_params(name, holder.get(params_field) or {},
                                 dotted[:dotted.rfind(".") + 1] + params_field)
