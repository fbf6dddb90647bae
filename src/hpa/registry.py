"""One explicit registry per pluggable part (losses, heads, schedulers, strategies, generators...)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from hpa.errors import HPAError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories. ``get`` of an unknown name fails at once and lists the valid names.

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("bce")
    ... def bce(**kw): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files the object under ``name`` (a duplicate name is a programming error)."""
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        """Return the object filed under ``name``; raise HPAError listing the valid names if absent."""
        try:
            return self._items[name]
        except KeyError:
            raise HPAError(f"unknown {self.kind} '{name}' (valid: {', '.join(sorted(self._items))})") from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
