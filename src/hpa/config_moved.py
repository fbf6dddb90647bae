"""Config keys that moved: the one table of old key -> new key, read by the loader for every schema.

A config written for an older hpa (a shipped YAML, a run folder's saved ``config.yaml``) keeps loading:
:func:`upgrade` moves each old key's value to its new place before the typed layer sees the tree, and
one warning line names the keys. A value at the old default is dropped rather than moved (the part
that owns the setting now has the same default, so a saved config's every-key dump stays quiet in
the new params dicts). An unknown-key error for an old key names its new place (:func:`new_place`).

To move a key: add one row below (and nothing else).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Moved:
    """``old`` (dotted) now lives at ``new`` (dotted; several places when one old key now feeds several
    parts; ``""``: the setting is gone and its value ignored). ``default``: the old default, dropped
    rather than moved. ``schema``: the config class(es) it belongs to."""
    old: str
    new: str | tuple[str, ...]
    default: Any = _NO_DEFAULT
    schema: str | tuple[str, ...] = "ExperimentConfig"

    @property
    def places(self) -> tuple[str, ...]:
        """The new dotted keys (none when the setting is gone)."""
        return (self.new,) if isinstance(self.new, str) and self.new else tuple(self.new or ())


MOVED: tuple[Moved, ...] = (
    # parts' settings moved into their params dicts (name + params)
    Moved("model.arcface_s", "model.head_params.s", 30.0),
    Moved("model.arcface_m", "model.head_params.m", 0.5),
    Moved("optim.momentum", "optim.params.momentum", 0.9),
    Moved("sched.step_size", "sched.params.step_size", 10),
    Moved("sched.gamma", "sched.params.gamma", 0.1),
    Moved("sched.milestones", "sched.params.milestones", []),
    Moved("sched.values", "sched.params.values", []),
    Moved("sched.factor", "sched.params.factor", 0.5),
    Moved("sched.patience", "sched.params.patience", 2),
    Moved("sched.min_lr", "sched.params.min_lr", 0.0),
    # thresholds: each strategy's own settings (one old key may feed several strategies), the served
    # checkpoint now train.select
    Moved("thresholds.scale", "thresholds.params.scaled.scale", 0.7, ("ExperimentConfig", "EnsembleConfig")),
    Moved("thresholds.min_positives", ("thresholds.params.per_class.min_positives",
                                       "thresholds.params.scaled.min_positives"), 5,
          ("ExperimentConfig", "EnsembleConfig")),
    Moved("thresholds.proportions", "thresholds.params.proportion.rates", "", ("ExperimentConfig", "EnsembleConfig")),
    Moved("infer.checkpoint", "train.select", "best"),
    # synthetic data

)


def rows(schema: type | str) -> list[Moved]:
    """The rows of ``schema`` (a config class or its name)."""
    name = schema if isinstance(schema, str) else schema.__name__
    return [m for m in MOVED if name in ((m.schema,) if isinstance(m.schema, str) else m.schema)]


def new_place(schema: type | str, key: str) -> str | None:
    """Where the old dotted ``key`` of ``schema`` lives now (``""``: gone; places joined by ``, ``), or
    None if it never moved."""
    return next((", ".join(m.places) for m in rows(schema) if m.old == key), None)


def _pop(tree: dict, dotted: str) -> Any:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        return _NO_DEFAULT
    return node.pop(last)


def _put(tree: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` unless the tree already gives it (the new key, written explicitly, wins)."""
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            return                          # the typed layer names the bad section
    node.setdefault(last, value)


def upgrade(tree: dict[str, Any], schema: type | str, where: str) -> list[str]:
    """Move the old keys of ``tree`` (a config of ``schema``) to their new places, in place; warn once,
    naming ``where`` and the keys; return the old keys found."""
    found = []
    for m in rows(schema):
        value = _pop(tree, m.old)
        if value is _NO_DEFAULT:
            continue
        found.append(m)
        if not (m.default is not _NO_DEFAULT and value == m.default):
            for place in m.places:
                _put(tree, place, value)
    if found:
        moves = ", ".join(f"{m.old} -> {' + '.join(m.places) or '(removed)'}" for m in found)
        warnings.warn(f"{where}: keys of an older hpa read at their new places ({moves}; "
                      "old defaults dropped)", stacklevel=3)
    return [m.old for m in found]
