"""One explicit registry per pluggable part (losses, heads, schedulers, strategies, generators...)."""
from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from hpa.config_types import coerce_param
from hpa.errors import HPAError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories. ``get`` of an unknown name fails at once and lists the valid names.

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("bce")
    ... def bce(**kw): ...
    """

    def __init__(self, kind: str, fixed: Iterable[str] = ()):
        """``kind`` names the part in errors; ``fixed`` are the factory arguments every caller passes
        itself (``in_features`` for a head), which a config's params dict may not set."""
        self.kind, self.fixed = kind, tuple(fixed)
        self._items: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator that files the object under ``name`` (a duplicate name is a programming error).

        ``info`` are the part's capabilities as data, declared here rather than in a central table
        (a loss's ``needs_head``, a bench row's ``order``; ``example``: params to build it with in the
        contract tests when its defaults do not build); :meth:`info` returns them."""
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            self._info[name] = dict(info)
            return obj
        return deco

    def info(self, name: str) -> dict[str, Any]:
        """The capabilities ``name`` was registered with (empty when none)."""
        self.get(name)
        return dict(self._info.get(name, {}))

    def build(self, name: str, params: dict[str, Any] | None, where: str, /, **fixed: Any) -> Any:
        """Call the factory ``name`` with the ``fixed`` arguments its caller owns and ``params`` (checked by
        :meth:`check_params`); a value the factory refuses (TypeError/ValueError) becomes HPAError
        ``"<where>: <name> <params>: <why>"``."""
        checked = self.check_params(name, params or {}, where)
        try:
            return self.get(name)(**fixed, **checked)
        except (TypeError, ValueError) as e:
            raise HPAError(f"{where}: {name} {params or {}}: {e}") from None

    def describe(self, name: str) -> dict[str, str]:
        """``{parameter: "annotation = default"}`` of what a config may set for ``name`` (for ``hpa list``)."""
        sig = inspect.signature(self.get(name))
        out = {}
        for n in self.params(name):
            p = sig.parameters[n]
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
            ann = "" if p.annotation is p.empty else str(ann or p.annotation).replace("typing.", "")
            default = "" if p.default is p.empty else f"{p.default!r}"
            out[n] = f"{ann}{' = ' if ann and default else ''}{default}" or "required"
        return out

    def get(self, name: str) -> T:
        """Return the object filed under ``name``; raise HPAError listing the valid names if absent."""
        try:
            return self._items[name]
        except KeyError:
            raise HPAError(f"unknown {self.kind} '{name}' (valid: {', '.join(sorted(self._items))})") from None

    def params(self, name: str) -> list[str]:
        """Keyword parameters a config may give the factory ``name``: its named parameters, sorted,
        less the ``fixed`` ones."""
        sig = inspect.signature(self.get(name))
        return sorted(n for n, p in sig.parameters.items()
                      if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in self.fixed)

    def check_params(self, name: str, params: dict[str, Any], where: str) -> dict[str, Any]:
        """Return ``params`` for the factory ``name``, each converted to its annotation (``"1e-4"``, which
        YAML 1.1 reads as a string, becomes a float). HPAError ``"<where>: <name> has no parameter 'x'
        (valid: ...)"`` for a key the factory does not name (a ``**kwargs`` catch-all does not count: a
        typo must not pass) or naming the key whose value has the wrong type."""
        valid = self.params(name)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise HPAError(f"{where}: {name} has no parameter {unknown[0]!r} (valid: {', '.join(valid) or 'none'})")
        factory = self.get(name)
        try:
            hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
        except (NameError, TypeError, AttributeError):   # third-party annotations we cannot resolve
            hints = {}
        return {k: coerce_param(v, hints.get(k, Any), f"{where}.{k}") for k, v in params.items()}

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._items)

    def ordered(self) -> list[str]:
        """Return the registered names by their declared ``order`` (``register(name, order=N)``), those
        without one last; ties by name."""
        return sorted(self._items, key=lambda n: (self._info[n].get("order", float("inf")), n))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
