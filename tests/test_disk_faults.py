"""A real full disk and a real read-only folder: a tiny tmpfs mounted in a private mount namespace
(``unshare -rm``, no root needed where user namespaces are allowed; skipped elsewhere). Each test runs
the real CLI inside the namespace and lists the mount afterwards, since the mount goes with it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.data.images import write_kaggle_rgby

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
PY = sys.executable


def _can_mount() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs unshare -rm (user and mount namespaces)")


def _in_tmpfs(mount: Path, size_kb: int, script: str, read_only: bool = False,
              prepare: str = "true") -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a ``size_kb`` tmpfs at ``mount``; ``prepare`` runs before a read-only
    remount. The mount and its files exist only for the script."""
    mount.mkdir(parents=True, exist_ok=True)
    ro = f" && mount -o remount,ro {mount}" if read_only else ""
    cmd = f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && {prepare}{ro} && {script}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", cmd], env=ENV, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture()
def data(tmp_path):
    """Eight 64 px images, labels, a sample submission, and a config caching at 128 px (512 KiB)."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    ids = [f"im{i}" for i in range(8)]
    for i in ids + ["t0"]:
        write_kaggle_rgby(root / ("test" if i == "t0" else "train"), i, rng.integers(0, 255, (64, 64, 4), np.uint8))
    pd.DataFrame({"Id": ids, "Target": [str(i % 2) for i in range(8)]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": ["t0"], "Predicted": ["0"]}).to_csv(root / "sample_submission.csv", index=False)
    cfg = {"data": {"root": str(root), "image_size": 128, "cache_dir": str(tmp_path / "m" / "cache")},
           "runs_dir": str(tmp_path / "m" / "runs"), "model": {"name": "test_resnet"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _cache_name(data: Path) -> str:
    from hpa.data.cache import cache_path
    return cache_path(data / "data" / "train", [f"im{i}" for i in range(8)], 128, cache_dir="x").name


# One Python process per test (imports dominate): each step goes through the real CLI entry point (or
# a library call, its HPAError printed as the CLI would) and prints its exit status, its error lines
# and what is left in the mount afterwards.
STEPS = """
import os, sys, contextlib, io
import numpy as np, torch
from hpa.cli import run_command
import hpa.data.cache as cache
from hpa.submission import make_submission, write_submission
from hpa.training.checkpoint import save_checkpoint
m = sys.argv[1]
def step(name, fn):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = fn()
        except Exception as e:
            print(("error: " if type(e).__name__ == "HPAError" else "Traceback: ") + str(e), file=sys.stderr)
            rc = 2
    lines = [s for s in err.getvalue().splitlines() if s.startswith(("error", "Traceback"))]
    inside = os.listdir(m + "/cache") if os.path.isdir(m + "/cache") else []
    left = sorted(os.listdir(m)) + sorted("cache/" + n for n in inside)
    print(name, rc, lines, left, flush=True)
"""


def _run_steps(data: Path, size_kb: int, steps: str, **kw) -> list[str]:
    script = data / "steps.py"
    script.write_text(STEPS + steps)
    res = _in_tmpfs(data / "m", size_kb, f"{PY} {script} {data / 'm'}", **kw)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout.splitlines()


@pytest.mark.slow
def test_full_disk_is_one_line_for_the_cache_checkpoints_and_folds(data):
    """Before: the memory-mapped cache build died of SIGBUS (exit 135) leaving its temporary file,
    torch.save raised 'unexpected pos' and hpa folds an OSError traceback."""
    m, cache_file = data / "m", f"{data}/m/cache/{_cache_name(data)}"
    need = 8 * 128 * 128 * 4 + 4096
    out = _run_steps(data, 256, f"""
cfg = ["--config", "{data}/c.yaml"]
step("cache", lambda: run_command("cache", cfg))
cache.check_free_space = lambda *a, **k: None    # bypassed: the space is reserved before the map is written
step("cache-unchecked", lambda: run_command("cache", cfg))
step("checkpoint", lambda: save_checkpoint(m + "/last.pt", {{"model": {{"w": torch.ones(200_000)}}}}))
open(m + "/folds.csv", "w").write("old\\n")
with open(m + "/fill", "wb") as f:
    try:
        f.write(b"0" * 400_000)
    except OSError:
        pass
step("folds", lambda: run_command("folds", ["--labels", "{data}/data/train.csv", "--out", m + "/folds.csv",
                                            "--k", "2"]))
print(open(m + "/folds.csv").read().strip())
""")
    assert out[0] == (f"cache 2 ['error: {cache_file}: the image cache needs {need / 1024:.1f} KiB but only "
                      f"256.0 KiB is free in {m}/cache; free some space or set data.cache_dir to a larger "
                      "disk'] []")
    assert out[1].startswith(f"cache-unchecked 2 ['error: {cache_file}: cannot write (No space left on device): ")
    assert out[1].endswith(f"free in {m}/cache, the file needs more than 512.1 KiB'] ['cache']")
    assert out[2].startswith(f"checkpoint 2 ['error: {m}/last.pt: cannot write (No space left on device): ")
    assert out[2].endswith("'] ['cache']") and "the file needs more than" in out[2]
    assert out[3] == (f"folds 2 ['error: {m}/folds.csv: cannot write (No space left on device): 0 B free in "
                      f"{m}'] ['cache', 'fill', 'folds.csv']")
    assert out[4:] == ["old"]


@pytest.mark.slow
def test_read_only_output_folders_are_one_line(data):
    """runs_dir (training), hpa folds --out, the cache folder and a submission folder, read-only."""
    m = data / "m"
    out = _run_steps(data, 4096, f"""
step("train", lambda: run_command("train", ["--config", "{data}/c.yaml", "--set", "name=exp"]))
step("folds", lambda: run_command("folds", ["--labels", "{data}/data/train.csv", "--out", m + "/folds.csv",
                                            "--k", "2"]))
step("cache", lambda: run_command("cache", ["--config", "{data}/c.yaml"]))
step("submission", lambda: write_submission(m + "/subs/s.csv", make_submission(["t0"], np.ones((1, 28))),
                                            "{data}/data/sample_submission.csv"))
""", read_only=True, prepare=f"mkdir {m}/runs {m}/subs")
    left = "['runs', 'subs']"
    assert out == [f"train 2 ['error: {m}/runs/exp: Read-only file system'] {left}",
                   f"folds 2 ['error: {m}/folds.csv: cannot write (Read-only file system)'] {left}",
                   f"cache 2 ['error: {m}/cache/{_cache_name(data)}: cannot write (Read-only file system)'] {left}",
                   f"submission 2 ['error: {m}/subs/s.csv: cannot write (Read-only file system)'] {left}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway")
def test_folder_without_write_permission_is_one_line(data):
    out = data / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = subprocess.run([PY, "-m", "hpa", "folds", "--labels", f"{data}/data/train.csv", "--out",
                              f"{out}/folds.csv", "--k", "2"], env=ENV, capture_output=True, text=True)
        assert res.returncode == 2 and res.stderr.endswith(
            f"error: {out}/folds.csv: cannot write (Permission denied)\n")
    finally:
        out.chmod(0o755)
