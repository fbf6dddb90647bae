"""Config files as plain trees: strict YAML, ``base:`` inheritance, ``--set`` overrides, and where every
value came from (so an error names the file, or the ``--set`` item, that gave the bad value).

- :class:`StrictLoader`: ``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps
  the last one silently), naming the key and both lines.
- ``base:``: a config may name one base file, or a list applied in order, relative to its own folder
  (a later base overrides an earlier one only with what its own chain adds, not with values of a
  shared parent the earlier base already overrode).
  Bases may have bases; a cycle is an error naming the files. The child's mappings merge deeply over
  the base's, while lists and scalars replace. Two exceptions: ``name`` is never inherited (a run folder
  belongs to one file), and a child that names another part (``optim.name``, ``model.head``...) drops
  the base's params for it (``optim.params``, ``model.head_params``), which belonged to the other part.
- ``--set a.b=c``: the value is parsed as YAML with the same loader and replaces the value at ``a.b``.

The typed layer (:mod:`hpa.config`) builds a schema from the merged tree; nothing here knows a schema
except through the ``pairs`` of (name key, params key) it is given.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from hpa.errors import HPAError

Origins = dict[str, str]          # dotted key ("train.epochs", "loss") -> file or "--set item" that set it
Pairs = Iterable[tuple[str, str]]  # (name key, params key), e.g. ("optim.name", "optim.params")
_MISSING = object()


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys in a mapping (YAML merge keys ``<<`` still work)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:               # an unhashable key: SafeLoader's own error names it
                continue
            line = key_node.start_mark.line + 1
            if seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}', first at line {first_line[key]}", key_node.start_mark)
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _describe(e: yaml.YAMLError) -> str:
    """``"(what) at line L, column C"`` for a YAML error, a tab said plainly."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "'\\t'" in problem:
        problem = "a tab character; YAML indents with spaces"
    mark = getattr(e, "problem_mark", None)
    return f"({problem})" + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "")


def parse_yaml(text: str, where: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; HPAError ``"<where>: invalid YAML (...) at line L, ..."``."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise HPAError(f"{where}: invalid YAML {_describe(e)}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML file that must hold a non-empty mapping; HPAError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: config file not found")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        raise HPAError(f"{path}: empty config file (no settings)")
    if not isinstance(data, dict):
        raise HPAError(f"{path}: expected a mapping at the top level")
    return data


def leaf_origins(tree: dict[str, Any], where: str, prefix: str = "") -> Origins:
    """``{dotted key: where}`` for every key of ``tree`` (mappings recursed, lists and scalars are leaves)."""
    out = {}
    for k, v in tree.items():
        out[f"{prefix}{k}"] = where
        if isinstance(v, dict):
            out.update(leaf_origins(v, where, f"{prefix}{k}."))
    return out


def origin_of(origins: Origins, key: str, default: str) -> str:
    """Who set ``key`` (``"loss[1].weight"``): its own entry, else its closest parent's, else ``default``."""
    while key:
        if key in origins:
            return origins[key]
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return default


def get_dotted(tree: dict[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c`` in nested dicts, or ``_MISSING``."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _pop_dotted(tree: dict[str, Any], dotted: str) -> None:
    head, _, last = dotted.rpartition(".")
    parent = get_dotted(tree, head) if head else tree
    if isinstance(parent, dict):
        parent.pop(last, None)


def _drop_stale_params(tree: dict[str, Any], new_names: dict[str, Any], pairs: Pairs) -> None:
    """A part that ``new_names`` (name key -> value) renames loses the params ``tree`` gave its old name.

    Only an explicit change counts: a name left at its default in ``tree`` keeps its params, so a
    mismatch is reported by the name check instead of being dropped silently.
    """
    for name_key, params_key in pairs:
        new, old = new_names.get(name_key, _MISSING), get_dotted(tree, name_key)
        if new is not _MISSING and old is not _MISSING and new != old:
            _pop_dotted(tree, params_key)


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def merge(dst: dict[str, Any], src: dict[str, Any], origins: Origins, src_origins: Origins,
          pairs: Pairs = ()) -> dict[str, Any]:
    """Merge ``src`` over ``dst`` in place (mappings deeply, lists and scalars replaced); return ``dst``.

    ``origins`` is updated with ``src_origins``; ``pairs`` (name key, params key) drop the params of a
    part whose name ``src`` changes.
    """
    pairs = list(pairs)
    _drop_stale_params(dst, {k: get_dotted(src, k) for k, _ in pairs}, pairs)
    _merge(dst, src)
    origins.update(src_origins)
    return dst


def _base_list(data: dict[str, Any], path: Path) -> list[str]:
    base = data.pop("base", None)
    if base is None:
        return []
    bases = [base] if isinstance(base, str) else base
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise HPAError(f"{path}: 'base' must be a file name or a list of file names, got {base!r}")
    return bases


def _without_keys_from(tree: dict[str, Any], origins: Origins, files: set[str], prefix: str = "") -> dict[str, Any]:
    """A copy of ``tree`` without the leaves set by one of ``files`` (mappings emptied by that go too)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            sub = _without_keys_from(v, origins, files, f"{key}.")
            if sub:
                out[k] = sub
        elif not _read_by(origins.get(key), files):
            out[k] = v
    return out


def _read_by(origin: str | None, files: set[str]) -> bool:
    """Whether the file ``origin`` names is one of ``files`` (resolved paths)."""
    return origin is not None and str(Path(origin).resolve()) in files


def read_tree(path: str | Path, pairs: Pairs = (), _chain: tuple[Path, ...] = ()) -> tuple[dict, Origins]:
    """Read ``path`` with its ``base:`` chain merged in; return ``(tree, origins)`` without ``base`` keys.

    A base path is relative to the folder of the file that names it. Of a list of bases, a later one
    overrides an earlier one only with values set in its own chain by files the earlier ones did not
    read: with ``base: [x.yaml, y.yaml]`` both built on ``p.yaml``, what ``x`` sets wins over the
    ``p`` value ``y`` merely inherits. HPAError for a missing base, a cycle (naming the files in
    order), or any YAML problem of any file in the chain.
    """
    tree, origins, _ = _read_tree(Path(path), list(pairs), _chain)
    return tree, origins


def _read_tree(path: Path, pairs: list, _chain: tuple[Path, ...]) -> tuple[dict, Origins, set[str]]:
    """:func:`read_tree`, plus the files (as ``origins`` names them) read for it."""
    if path.resolve() in {p.resolve() for p in _chain}:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise HPAError(f"{_chain[0]}: 'base' files form a cycle ({cycle})")
    data = read_yaml(path)
    tree: dict[str, Any] = {}
    origins: Origins = {}
    files: set[str] = set()
    for b in _base_list(data, path):
        base_path = path.parent / b
        if not base_path.is_file():
            raise HPAError(f"{path}: base file '{b}' not found ({base_path})")
        base_tree, base_origins, base_files = _read_tree(base_path, pairs, (*_chain, path))
        base_tree.pop("name", None)              # a run folder belongs to one file: never inherited
        base_origins.pop("name", None)
        # a value this base only inherits from a file an earlier base read already is that file's
        # value, which the earlier base may have overridden: it must not override it back
        base_tree = _without_keys_from(base_tree, base_origins, files)
        base_origins = {k: v for k, v in base_origins.items() if not _read_by(v, files)}
        merge(tree, base_tree, origins, base_origins, pairs)
        files |= base_files
    merge(tree, data, origins, leaf_origins(data, str(path)), pairs)
    return tree, origins, files | {str(path.resolve())}


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origins: Origins, default: str) -> None:
    node = tree
    parts = dotted.split(".")
    for i, p in enumerate(parts[:-1]):
        child = node.get(p, _MISSING)
        if child is _MISSING:
            child = node[p] = {}
        elif child is None:
            section = ".".join(parts[:i + 1])
            raise HPAError(f"{origin_of(origins, section, default)}: config key '{section}' is an empty "
                           "(null) section: give it keys or remove it")
        if not isinstance(child, dict):
            raise HPAError(f"--set {dotted}: '{p}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any, str]]:
    """``["a.b=c", ...]`` -> ``[(key, parsed YAML value, item), ...]``; HPAError naming a bad item."""
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise HPAError(f"--set {item}: expected key=value")
        k, v = item.split("=", 1)
        value = parse_yaml(v, f"--set {item}") if v.strip() else ""
        out.append((k.strip(), value, item))
    return out


def apply_overrides(tree: dict[str, Any], overrides: list[str] | None, pairs: Pairs = (),
                    origins: Origins | None = None, default: str = "<config>") -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place.

    ``origins`` records ``"--set <item>"`` for each key set; a part renamed by ``--set`` loses the old
    part's params first (in any order of the items), as a child config's does.
    """
    origins = {} if origins is None else origins
    items = parse_overrides(overrides)
    _drop_stale_params(tree, {k: v for k, v, _ in items}, list(pairs))
    for key, value, item in items:
        _set_dotted(tree, key, value, origins, default)
        origins.update({k: f"--set {item}" for k in
                        [key, *(leaf_origins(value, "", f"{key}.") if isinstance(value, dict) else [])]})
    return tree
