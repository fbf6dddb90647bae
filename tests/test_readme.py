"""The README's command blocks, run as a first user runs them: every ```bash block, in order, each
command through the real command line (issue 26, case 23), on tiny data.

What differs from a user's machine is listed here and nowhere else: the configs are the shipped ones
with :data:`TINY` merged in (a 32 px ``test_resnet``, 2 folds, 1 epoch); :data:`SUBS` shrinks the
sizes the commands name; the Kaggle API is a fake that "downloads" a zip of the tiny dataset and
records the submission; the HPAv18 server is a loopback one; what a block says it builds on (``make
demo-main``'s demo dataset, ``make synth-demo``'s manifests) is made beforehand, small. A ``make``
line is not run (``make demo`` takes 14 minutes): its target must exist in the Makefile. A block that
needs what no test has (a foundation model's real weights, a GPU) is marked in the README with
``<!-- readme-test: skip (the reason) -->`` on the line before it.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: merged into every shipped experiment config: the same commands, at the size of a test
TINY = {"data": {"image_size": 32},
        "model": {"name": "test_resnet", "pretrained": False},
        "folds": {"n_splits": 2},
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "amp": "no", "channels_last": False,
                  "keep_checkpoints": 1, "threads": 1}}
#: text replaced in a README command before it runs (sizes and counts only, never the command)
SUBS = [("--size 512", "--size 32"), ("--last 10", "--last 1"), ("--external 300", "--external 20"),
        ("--tta 8", "--tta 2")]
HPAV18_IDS = [f"{100 + k}_{k}_A{k % 9 + 1}_1" for k in range(12)]


#: a README block a test cannot run (real weights, a GPU) is preceded by this comment with its reason
SKIP = re.compile(r"<!-- readme-test: skip \((.+)\) -->")


def readme_blocks(text: str) -> list[tuple[int, list[str], str | None]]:
    """``(line of the block, [commands], skip reason or None)`` for every ```bash block: continuation
    lines joined, comment-only and blank lines dropped; the reason is that of a :data:`SKIP` comment
    on the last non-blank line before the block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            before = next((x for x in reversed(lines[:i]) if x.strip()), "")
            skip = SKIP.search(before)
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            joined = re.sub(r"\\\n\s*", " ", "\n".join(body)).splitlines()
            blocks.append((start, [c.strip() for c in joined if c.strip() and not c.strip().startswith("#")],
                           skip.group(1) if skip else None))
        i += 1
    return blocks


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def dispatch(command: str) -> tuple[str, list[str]] | None:
    """``(hpa command, argv)`` a README line runs, None for a ``make`` line; AssertionError for a
    line this test cannot run (a new kind of command in the README needs a way to run it here)."""
    argv = shlex.split(command, comments=True)
    if argv[0] == "make":
        return None
    if argv[0] in (".venv/bin/hpa", "hpa"):
        return argv[1], argv[2:]
    if argv[0] in (".venv/bin/python", "python") and argv[1] in ("train.py", "infer.py"):
        return argv[1][:-3], argv[2:]
    raise AssertionError(f"README: no way to run {command!r} in this test")


def test_every_readme_command_is_one_this_test_runs():
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 5
    targets = make_targets()
    for line, commands, skip in blocks:
        if skip is not None:
            assert len(skip) > 20, f"README block at line {line}: say why it cannot run in a test"
            continue
        for c in commands:
            if dispatch(c) is None:
                target = shlex.split(c, comments=True)[1]
                assert target in targets, f"README: make {target}: no such Makefile target"


def _tiny_configs(work: Path) -> None:
    shutil.copytree(ROOT / "configs", work / "configs")
    for path in (work / "configs").glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        if any(not isinstance(cfg.get(k, {}), dict) for k in TINY) or "runs" in cfg:
            continue                                    # ensemble / ablation configs: not experiments
        for section, values in TINY.items():
            cfg[section] = {**(cfg.get(section) or {}), **values}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    synth = work / "configs/synth/standin_demo.yaml"
    cfg = yaml.safe_load(synth.read_text())
    cfg.setdefault("train", {})["threads"] = 1
    synth.write_text(yaml.safe_dump(cfg))


class FakeKaggle:
    """The Kaggle API as ``hpa download`` and ``hpa submit`` use it."""

    def __init__(self, zpath: Path):
        self.zpath, self.submitted = zpath, []

    def competition_download_files(self, competition, path=None, quiet=True):
        shutil.copy(self.zpath, Path(path) / f"{competition}.zip")

    def competition_submit(self, file_name, message, competition):
        self.submitted.append((file_name, message))


def _kaggle_zip(tiny_demo: Path, work: Path) -> Path:
    zpath = work / "competition.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(tiny_demo.rglob("*")):
            rel = f.relative_to(tiny_demo).as_posix()
            if f.is_file() and (rel.startswith(("train/", "test/")) or rel in ("train.csv", "sample_submission.csv")):
                zf.write(f, rel)
    return zpath


def _hpav18(work: Path) -> dict:
    """The loopback server's files for :data:`HPAV18_IDS` and the label file in both README places."""
    from hpa.demo.external import write_hpav18_jpegs
    from hpa.demo.loopback import serve_map

    src = work / "v18_server"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in HPAV18_IDS:
        write_hpav18_jpegs(src, i, rng.integers(0, 255, (48, 48, 4), dtype=np.uint8), 90)
    labels = pd.DataFrame({"Id": HPAV18_IDS, "Target": [str(k % 28) for k in range(len(HPAV18_IDS))]})
    (work / "input").mkdir(exist_ok=True)
    for p in (work / "input/HPAv18RBGY_wodpl.csv", work / "HPAv18RBGY_wodpl.csv"):
        labels.to_csv(p, index=False)
    return serve_map(src, HPAV18_IDS)


def _before_block(line: int, text: str, work: Path, tiny_demo: Path) -> None:
    """What a block says it builds on, made small: the demo dataset of ``make demo-main`` (before the
    external demo block), the generated manifests of ``make synth-demo`` (before the block naming them)."""
    if "hpa demo-data --out input/demo --external" in text and not (work / "input/demo").exists():
        shutil.copytree(tiny_demo, work / "input/demo")
    if "hpa demo-data --out input/demo --external" in text or "input/synth/ddpm_demo_fold0_noise" in text:
        if not (work / "input/demo/folds.csv").exists():
            assert run_command("folds", ["--config", "configs/demo.yaml"]) == 0
    if "input/synth/ddpm_demo_fold0_noise" in text:
        cfg = "configs/synth/standin_demo.yaml"
        for k in (0, 1):
            assert run_command("synth", ["train", "--config", cfg, "--fold", str(k)]) == 0
            assert run_command("synth", ["generate", "--config", cfg, "--fold", str(k), "--n", "16",
                                         "--out", f"input/synth/ddpm_demo_fold{k}_noise"]) == 0


@pytest.mark.slow
def test_every_readme_command_block_runs_in_order_on_tiny_data(tmp_path, monkeypatch, tiny_demo):
    import hpa.kaggle.client
    from hpa.demo.loopback import HPAv18Server

    monkeypatch.chdir(tmp_path)
    _tiny_configs(tmp_path)
    kaggle = FakeKaggle(_kaggle_zip(tiny_demo, tmp_path))
    monkeypatch.setattr(hpa.kaggle.client, "default_client", lambda: kaggle)
    text = README.read_text()
    ran = []
    with HPAv18Server(_hpav18(tmp_path)) as srv:
        for line, commands, skip in readme_blocks(text):
            if skip is not None:
                continue
            _before_block(line, "\n".join(commands), tmp_path, tiny_demo)
            for command in commands:
                for a, b in SUBS:
                    command = command.replace(a, b)
                todo = dispatch(command)
                if todo is None:
                    continue
                name, argv = todo
                if name == "download" and "--hpav18" in argv:
                    argv += ["--base-url", srv.url, "--workers", "2"]
                t0 = time.perf_counter()
                assert run_command(name, argv) == 0, f"README block at line {line}: {command}"
                ran.append(command)
                print(f"{time.perf_counter() - t0:.1f}s {command}")
    assert len(ran) >= 20
    assert kaggle.submitted == [("submissions/resnet34.csv", "resnet34 5-fold, auto thresholds")]
    assert json.loads(Path("submissions/resnet34.json").read_text())["checkpoint"] == "swa"   # hpa swa ran first
    assert pd.read_csv("submissions/demo_external.csv").shape[0] == len(pd.read_csv(tiny_demo / "sample_submission.csv"))


# ----------------------------------------------------------------------------- one home per figure
#: README demo-table column -> how docs/recipe.md would head the same recipe's column
SAME_COLUMN = {"demo recipe": ("demo recipe", "new recipe"), "first recipe": ("first recipe", "old recipe"),
               "`hpa baseline`": ("`hpa baseline`",)}
ROW_KEYS = ("OOF macro F1 at 0.5", "test submission", "training time")


def md_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table as rows of cells (the ``---`` row dropped)."""
    tables, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def _figures(table: list[list[str]], columns: dict[str, tuple[str, ...]]) -> dict[tuple[str, str], str]:
    """``{(README column, row key): first number of the cell}`` of a table."""
    out = {}
    for j, head in enumerate(table[0]):
        col = next((c for c, names in columns.items() if any(n in head for n in names)), None)
        for row in table[1:] if col else []:
            key = next((k for k in ROW_KEYS if k in row[0]), None)
            number = re.search(r"\d+(?:\.\d+)?", row[j]) if key and j < len(row) else None
            if number:
                out[(col, key)] = number.group(0)
    return out


def test_each_demo_figure_has_one_home():
    """The README's demo table is the one place the demo figures live: docs/recipe.md may cite them,
    never give the same figure of the same recipe with another value (issue 26, case 24)."""
    demo = next(t for t in md_tables(README.read_text()) if t[0][:2] == ["stage", "demo recipe"])
    ours = _figures(demo, {c: (c,) for c in SAME_COLUMN})
    assert len(ours) == 9
    for table in md_tables((ROOT / "docs/recipe.md").read_text()):
        for key, value in _figures(table, SAME_COLUMN).items():
            assert value == ours[key], f"docs/recipe.md gives {key} as {value}, the README as {ours[key]}"
