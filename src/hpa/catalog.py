"""``hpa list [kind]``: every kind of pluggable part, its registered entries and the params a config may
give each (from the factory's own signature), plus the capabilities it was registered with.

``KINDS`` is the one table of registries (a new kind of part adds a row; a new entry of a kind adds
nothing here). The config keys that pick each kind come from :data:`hpa.config_names.NAMES`. The
README's list of parts is :func:`markdown` (``tools/readme_lists.py`` rewrites the marked block;
``tests/test_registries.py`` fails when it is stale).
"""
from __future__ import annotations

import argparse
import inspect
from typing import Any

from hpa.config_names import NAMES, registry
from hpa.errors import HPAError
from hpa.registry import Registry

#: kind (as ``hpa list`` names it) -> its registry, ``"module:ATTRIBUTE"`` (imported when listed)
KINDS: dict[str, str] = {
    "loss": "hpa.losses:LOSSES",
    "head": "hpa.models.heads:HEADS",
    "optimizer": "hpa.optim:OPTIMIZERS",
    "schedule": "hpa.optim:SCHEDULES",
    "data-sampler": "hpa.samplers:DATA_SAMPLERS",
    "augmentation": "hpa.transforms:AUGMENTATIONS",
    "gpu-augmentation": "hpa.gpu_augment:GPU_AUGMENTATIONS",
    "tta-merge": "hpa.inference.predict:TTA_MERGES",
    "blend": "hpa.inference.ensemble:BLENDS",
    "threshold-strategy": "hpa.thresholds.strategies:THRESHOLD_STRATEGIES",
    "mixing-strategy": "hpa.synthetic.mixing.strategies:MIXING_STRATEGIES",
    "generator": "hpa.synthetic.protocol:GENERATORS",
    "diffusion-sampler": "hpa.synthetic.sampling:DIFFUSION_SAMPLERS",
    "foundation-backbone": "hpa.models.foundation.specs:FOUNDATION",
    "image-kind": "hpa.data.cache:IMAGE_READERS",
    "bench-row": "hpa.bench:ROWS",
    "gpu-check-part": "hpa.bench.gpu_parts:GPU_PARTS",
}


def kind_registry(kind: str) -> Registry:
    """The registry of ``kind``; HPAError listing the kinds when unknown."""
    if kind not in KINDS:
        raise HPAError(f"unknown kind '{kind}' (valid: {', '.join(KINDS)})")
    return registry(KINDS[kind])


def config_keys(kind: str) -> list[str]:
    """The config keys that name an entry of ``kind`` (``schema: key``), from ``hpa.config_names.NAMES``."""
    return [f"{schema}: {row.key}" for schema, rows in NAMES.items() for row in rows
            if row.registry == KINDS[kind]]


def params_of(reg: Registry, name: str) -> dict[str, str]:
    """``{parameter: "annotation = default"}`` of entry ``name``; {} for an entry that is not a factory
    (a lazily imported class path)."""
    obj = reg.get(name)
    if not callable(obj):
        return {}
    try:
        return reg.describe(name)
    except (TypeError, ValueError):       # a builtin without a signature
        return {}


def entries(kind: str) -> list[dict[str, Any]]:
    """Every entry of ``kind`` in listing order: ``name``, ``params`` (:func:`params_of`), ``info`` (its
    registered capabilities) and ``doc`` (the first line of its docstring)."""
    reg = kind_registry(kind)
    out = []
    for name in reg.ordered():
        obj = reg.get(name)
        doc = (inspect.getdoc(obj) or "").split("\n")[0] if callable(obj) and not isinstance(obj, str) else ""
        out.append({"name": name, "params": params_of(reg, name), "info": reg.info(name), "doc": doc})
    return out


def text(kind: str) -> str:
    """``hpa list <kind>``: one line per entry, its params and capabilities."""
    keys = list(dict.fromkeys(k.split(": ")[1] for k in config_keys(kind)))
    lines = [f"{kind}" + (f" (config {', '.join(keys)})" if keys else "")]
    rows = entries(kind)
    width = max((len(e["name"]) for e in rows), default=0)
    for e in rows:
        params = ", ".join(f"{k}: {v}" for k, v in e["params"].items()) or "-"
        info = "; ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in e["info"].items())
        lines.append(f"  {e['name']:<{width}}  {params}" + (f"  [{info}]" if info else ""))
    return "\n".join(lines)


def markdown() -> str:
    """The README table of every kind a config picks: its config keys and its entries with their
    parameter names (bench rows, image kinds and GPU check parts: ``hpa list`` only)."""
    lines = ["| kind (`hpa list <kind>`) | picked by | entries (their params) |", "| --- | --- | --- |"]
    for kind in (k for k in KINDS if config_keys(k)):
        keys = ", ".join(dict.fromkeys(f"`{k.split(': ')[1]}`" for k in config_keys(kind)))
        items = ", ".join(f"`{e['name']}`" + (f" ({', '.join(e['params'])})" if e["params"] else "")
                          for e in entries(kind))
        lines.append(f"| {kind} | {keys} | {items} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa list``."""
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(KINDS)} (default: every kind)")
    p.add_argument("--markdown", action="store_true", help="the README table of every kind")


def main(args: argparse.Namespace) -> int:
    """Print the entries of one kind (or all), or the README table."""
    if args.markdown:
        print(markdown(), end="")
        return 0
    kinds = [args.kind] if args.kind else list(KINDS)
    kind_registry(kinds[0])                 # an unknown kind fails before anything is printed
    print("\n\n".join(text(k) for k in kinds))
    return 0
