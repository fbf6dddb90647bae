"""The benchmark machinery: the row registry, side-by-side timing, the result file and its table.

Every row is a function ``row(ctx) -> dict`` filed in ``ROWS`` with its place in the table
(``@ROWS.register("name", order=8)``) in a ``*_rows.py`` module of this package (each is imported by
:func:`load_rows`, so a new row is one new file); it times a hot path of the package
against its natural baseline *in the same process, interleaved* (A B A B ...), so machine load hits
both alike, and reports ratios plus the absolute figures. A row dict has the keys of ``ROW_KEYS``:
``ratios`` maps ``"candidate / baseline"`` to a float, ``met`` is True/False (goal checked), None
(report only or not run), ``status`` is ``ok``, ``not run`` or ``error``.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from hpa.io import atomic_path
from hpa.registry import Registry

# ../shared/hpa beside the checkout; HPA_SHARED (the tests' variable, the folder holding hpa/) or
# HPA_SHARED_HPA (the hpa folder itself) point elsewhere, e.g. from a git worktree
DEFAULT_SHARED = os.environ.get("HPA_SHARED_HPA") or str(
    Path(os.environ["HPA_SHARED"]) / "hpa" if os.environ.get("HPA_SHARED")
    else Path(__file__).resolve().parents[3].parent / "shared" / "hpa")

ROWS: Registry[Callable[["BenchContext"], dict]] = Registry("bench row", fixed=("ctx",))
ROW_KEYS = ("row", "name", "unit", "figures", "ratios", "goal", "met", "status", "note")
SCHEMA_VERSION = 1


@dataclass
class BenchContext:
    """Settings shared by all rows (built by the CLI from its flags)."""
    device: str = "cpu"                 # cpu | cuda
    size: int = 64                      # model input size of the training / inference rows
    data_size: int = 512                # image size of the data-loading row (the real PNGs are 512)
    quick: bool = False                 # toy sizes and few repeats (tests, smoke runs)
    work: Path = Path("/tmp")           # scratch folder (PNG files, caches, fake checkpoints)
    model: str = "resnet18"
    batch_size: int = 16
    repeats: int = 3                    # timed rounds per variant (the median is reported)
    compile: bool = False               # torch.compile the training row's model
    peak_tflops: float | None = None    # overrides the bf16 dense peak table of row 7
    generator: str = ""                 # trained pixel generator folder (row 6 label agreement)
    classifier: str = ""                # trained classifier run folder (row 6 label agreement)
    gen_images: int = 8                 # images per generation batch (row 6)
    ddpm_steps: int = 0                 # DDPM steps actually timed, scaled to 1000 (0 = all 1000)
    agreement_images: int = 64          # images generated per sampler for row 6's label agreement
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def sync(self) -> None:
        """Wait for queued GPU work, so a timer measures it (no-op on the CPU)."""
        if self.device == "cuda":
            torch.cuda.synchronize()


def load_rows() -> list[str]:
    """Import every ``*_rows`` module of :mod:`hpa.bench` (each files its rows in ``ROWS``); return the
    row names in table order (their registered ``order``, then by name)."""
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if m.name.endswith("_rows"):
            importlib.import_module(f"hpa.bench.{m.name}")
    return ROWS.ordered()


def make_row(name: str, unit: str, figures: dict[str, float], ratios: dict[str, float],
             goal: str, met: bool | None, note: str = "", status: str = "ok", row: int = 0) -> dict:
    """Return one result row (the keys of ``ROW_KEYS``) with floats rounded for the JSON file; ``row``
    (its number in the table) is filled in by :func:`run_rows` from the registered ``order``."""
    def r(v):
        return None if v is None else float(f"{float(v):.4g}")
    return {"row": row, "name": name, "unit": unit, "figures": {k: r(v) for k, v in figures.items()},
            "ratios": {k: r(v) for k, v in ratios.items()}, "goal": goal, "met": met,
            "status": status, "note": note}


def not_run(name: str, unit: str, goal: str, why: str) -> dict:
    """A row that could not run here (``status`` "not run", ``note`` says why)."""
    return make_row(name, unit, {}, {}, goal, None, why, status="not run")


def interleaved(fns: dict[str, Callable[[], int]], repeats: int, sync: Callable[[], None] = lambda: None,
                warmup: int = 1) -> dict[str, float]:
    """Time each ``fn() -> items processed`` round-robin; return the median items/s of each name.

    ``warmup`` untimed rounds first (allocator, autotuning, page cache, lazy imports), then
    ``repeats`` rounds of A, B, C, ... so a burst of load from other processes hits every variant.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
        sync()
    rates: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            n = fn()
            sync()
            rates[name].append(n / max(time.perf_counter() - t0, 1e-9))
    return {name: statistics.median(v) for name, v in rates.items()}


def run_rows(ctx: BenchContext, names: list[str], progress: bool = True) -> list[dict]:
    """Run the named rows in table order; a row that raises becomes an ``error`` row (never dropped)."""
    from tqdm import tqdm

    rows = []
    order = load_rows()
    todo = [n for n in order if n in names]
    bar = tqdm(todo, desc="bench", unit="row", disable=not progress)
    for name in bar:
        bar.set_postfix(row=name)
        t0 = time.perf_counter()
        try:
            result = ROWS.get(name)(ctx)
        except Exception as e:      # noqa: BLE001 - one broken row must not lose the others' minutes
            result = make_row(name, "", {}, {}, "", None,
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                              status="error")
        result["row"] = order.index(name) + 1
        result["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(result)
    return rows


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware the figures were measured on."""
    import os

    import timm

    env = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads()}
    try:
        env["load_avg_1min"] = round(os.getloadavg()[0], 2)   # shared machines: how busy it was
    except OSError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def result_stem(device: str, quick: bool, when: datetime | None = None) -> str:
    """``<device>-<YYYY-MM-DD>`` (``-quick`` appended for quick runs, so they never replace a real one)."""
    when = when or datetime.now(timezone.utc)
    return f"{device}-{when:%Y-%m-%d}" + ("-quick" if quick else "")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def markdown_table(result: dict) -> str:
    """The result as a markdown table: one line per row, ratios first, then the absolute figures."""
    lines = [f"`hpa bench` on {result['device']} ({result['date']}, "
             f"{'quick' if result['settings']['quick'] else 'full'} run, {result['total_seconds']:.0f} s)",
             "", "| # | measure | ratio | goal | met | figures | note |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratios = "; ".join(f"{k} = {_fmt(v)}x" for k, v in r["ratios"].items()) or r["status"]
        figs = "; ".join(f"{k}: {_fmt(v)}" for k, v in r["figures"].items())
        unit = f" ({r['unit']})" if r["unit"] else ""
        met = {True: "yes", False: "no", None: "n/a" if r["status"] == "ok" else r["status"]}[r["met"]]
        lines.append(f"| {r['row']} | {r['name']}{unit} | {ratios} | {r['goal']} | {met} | {figs} | "
                     f"{r['note'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot_ratios(result: dict, path: Path) -> Path:
    """Save a bar chart of every measured ratio (log scale) with the row's goal as a marker; return it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values, colours = [], [], []
    for r in result["rows"]:
        for k, v in r["ratios"].items():
            if v is not None and v > 0:
                labels.append(f"{r['row']} {r['name']}: {k}")
                values.append(v)
                colours.append({True: "tab:green", False: "tab:red", None: "tab:grey"}[r["met"]])
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(labels), 2) + 1.5))
    ax.barh(range(len(values)), values, color=colours)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("ratio (candidate / baseline, log scale); green = goal met, red = missed, grey = report")
    ax.set_title(f"hpa bench, {result['device']}, {result['date']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
