"""The typed layer of configs: build a dataclass schema from a plain tree, converting and checking each
value against its annotation and its field's :class:`Range`; errors name the dotted key and the file
or ``--set`` item that gave it (``origins`` from :mod:`hpa.config_yaml`).

Schemas are plain dataclasses; a field with a range is written ``epochs: int = ranged(10, ge=1)``, and
a schema may add a ``problems()`` method for settings that clash. ``coerce_param`` applies the same
rules to the params dicts of registry factories (:meth:`hpa.registry.Registry.check_params`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from hpa.config_moved import new_place
from hpa.config_yaml import Origins, origin_of
from hpa.errors import HPAError

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


# ----------------------------------------------------------------------------- machinery
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _Where:
    """Names the source of a key in errors: the file or ``--set`` item that gave it (see ``origin_of``)."""

    def __init__(self, default: str, origins: Origins | None = None, schema: str = ""):
        self.default, self.origins, self.schema = default, origins or {}, schema

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
        if isinstance(value, bool):         # YAML 1.1 reads no/yes/off/on as booleans
            raise where.error(key, f"must be str, got {value!r} (YAML reads yes/no/on/off as true/false: "
                                   "quote the word)")
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


def _unbool(f: dataclasses.Field, value: Any) -> Any:
    """``amp: no`` is YAML 1.1 for ``amp: false``: a boolean given to a field of word choices becomes the
    one choice YAML reads as that boolean (``"no"``), when there is exactly one."""
    rule = f.metadata.get("range")
    if not isinstance(value, bool) or rule is None or rule.choices is None:
        return value
    words = [c for c in rule.choices if isinstance(c, str) and yaml.safe_load(c) is value]
    return words[0] if len(words) == 1 else value


def nearest(key: str, valid, prefix: str = "") -> str:
    """``did you mean 'train.epochs'? valid: ...`` (difflib's closest name, when one is close), or
    ``valid: ...``: the hint after an unknown key."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    names = f"valid: {', '.join(sorted(valid))}"
    return f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'? {names}" if close else names


def _build(schema: type[C], data: dict[str, Any], where: _Where, prefix: str = "") -> C:
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    kwargs = {}
    for k, v in (data or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            moved = new_place(where.schema, key)
            hint = f"now '{moved}'" if moved else nearest(str(k), fields, prefix)
            raise HPAError(f"{where(key)}: unknown config key '{key}' ({hint})")
        kwargs[k] = _coerce(_unbool(fields[k], v), hints[k], key, where)
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
    return _build(schema, data, _Where(src, origins, schema.__name__), prefix)
