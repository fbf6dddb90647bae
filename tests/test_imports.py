"""Every ``hpa`` module imports on its own, the package's import graph has no cycle, and imports point
down the layer table of docs/architecture.md (``LAYERS``; the exceptions it documents are ``UPWARD``).

The graph's edges are the ``import`` statements of each module, read with ``ast``: at module level and
inside functions alike (a lazy import hides a cycle from the interpreter, not from a reader). An import
of ``hpa.a.b`` is an edge to ``hpa.a.b``; ``from hpa.a import b`` is an edge to ``hpa.a.b`` when ``b``
is a module, else to ``hpa.a``.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "hpa"


def module_names() -> list[str]:
    """Every module of the package, dotted (``hpa.training.run``; a package by its own name)."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def _path(module: str) -> Path:
    base = SRC.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imports_of(module: str, known: set[str]) -> set[str]:
    """The ``hpa`` modules ``module`` imports anywhere in its source (module level or in a function)."""
    tree = ast.parse(_path(module).read_text())
    is_pkg = _path(module).name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:      # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not name.startswith("hpa"):
                continue
            for a in node.names:
                sub = f"{name}.{a.name}"
                out.add(sub if sub in known else name)
    out.discard(module)
    return {m for m in out if m in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


#: docs/architecture.md's layer table: module (or package prefix) -> layer; the longest prefix wins
LAYERS = {
    1: ("hpa.errors", "hpa.registry", "hpa.classes", "hpa.io", "hpa.config", "hpa.config_types", "hpa.config_yaml",
        "hpa.config_names", "hpa.config_moved", "hpa.runlock", "hpa.threads", "hpa.cli_args", "hpa.resources",
        "hpa.devices", "hpa.progress"),
    2: ("hpa.data", "hpa.external", "hpa.kaggle", "hpa.transforms", "hpa.gpu_augment", "hpa.samplers", "hpa.models",
        "hpa.losses", "hpa.optim", "hpa.metrics", "hpa.submission", "hpa.reports"),
    3: ("hpa.rundir", "hpa.synthetic.manifest"),
    4: ("hpa.training", "hpa.thresholds", "hpa.inference", "hpa.synthetic"),
    5: ("hpa.training.run", "hpa.training.data", "hpa.training.select", "hpa.training.swa", "hpa.training.lr_find", "hpa.pseudo",
        "hpa.thresholds.stage", "hpa.inference.stage", "hpa.synthetic.generate", "hpa.synthetic.filter",
        "hpa.synthetic.report", "hpa.synthetic.verdict", "hpa.synthetic.figures", "hpa.ablation", "hpa.bench",
        "hpa.probe", "hpa.reports.cv", "hpa.reports.ensemble", "hpa.reports.eda", "hpa.reports.run_report",
        "hpa.baseline", "hpa.external.leak", "hpa.demo"),
    6: ("hpa", "hpa.__main__", "hpa.cli", "hpa.catalog", "hpa.training.cli", "hpa.thresholds.cli",
        "hpa.inference.cli", "hpa.synthetic.cli", "hpa.demo.cli"),
}
#: the documented upward imports (docs/architecture.md, "Layers"); a package __init__ re-exporting its
#: own modules is allowed by rule
UPWARD = {
    ("hpa.data.folds", "hpa.rundir"),            # hpa folds asks which runs used a folds file
    ("hpa.bench.stage", "hpa.cli"),              # the scale run times the commands themselves (lazily)
    ("hpa.synthetic.ddpm", "hpa.synthetic.generate"),    # output_size: issue 24's generator part (syn)
    ("hpa.synthetic.sd_lora", "hpa.synthetic.generate"),
    ("hpa.synthetic.standin", "hpa.synthetic.generate"),
}
#: library layers never import the demo and stand-in scaffolding
DEMO = ("hpa.demo",)


def layer_of(module: str) -> int:
    """The layer of ``module`` in ``LAYERS`` (longest matching prefix); KeyError when unmapped."""
    best = max(((len(p), layer) for layer, prefixes in LAYERS.items() for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    if best is None:
        raise KeyError(f"{module}: not in the layer table (tests/test_imports.py LAYERS, docs/architecture.md)")
    return best[1]


def _is_own_package(importer: str, imported: str) -> bool:
    return _path(importer).name == "__init__.py" and imported.startswith(importer + ".")


def test_imports_point_down_the_layer_table():
    names = module_names()
    known = set(names)
    upward = sorted((m, d) for m in names for d in imports_of(m, known)
                    if layer_of(d) > layer_of(m) and not _is_own_package(m, d))
    assert [e for e in upward if e not in UPWARD] == [], "upward imports outside the documented exceptions"
    assert [e for e in UPWARD if e not in upward and e[0] in known] == [], "a documented exception is gone: drop it"


def test_library_layers_never_import_the_demo_scaffolding():
    names = module_names()
    known = set(names)
    bad = sorted((m, d) for m in names if layer_of(m) <= 4 and not m.startswith(DEMO)
                 for d in imports_of(m, known) if d.startswith(DEMO))
    assert bad == []


def test_find_cycle_reports_the_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_is_acyclic():
    names = module_names()
    known = set(names)
    graph = {m: imports_of(m, known) for m in names}
    assert sum(map(len, graph.values())) > 50          # the parser found the package's imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module in a fresh interpreter (one process, a child per module would take a minute):
    modules are imported one by one after clearing every ``hpa`` entry of ``sys.modules``."""
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for k in [k for k in sys.modules if k == 'hpa' or k.startswith('hpa.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    names = [m for m in module_names() if not m.endswith(".__main__")]    # that one runs the CLI
    res = subprocess.run([sys.executable, "-c", script, *names], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
