"""Fault injection: SIGKILL mid-training then --resume, a save cut short, inference dying while it writes,
two runs with one name (the run lock), and generation killed half-way. Real subprocesses where the fault
is a dead process; monkeypatched writers where the fault is a crash at an exact byte."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.data.folds import make_folds, write_folds
from hpa.data.images import CHANNELS, write_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.runlock import run_lock
from hpa.submission import make_submission, write_submission
from hpa.training.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


@pytest.fixture(scope="module")
def cfg_path(tiny_demo, tmp_path_factory):
    """Tiny experiment YAML: 2 folds, test_resnet at 32 px, 2 epochs, batches of 8 (several steps/epoch)."""
    work = tmp_path_factory.mktemp("faults")
    folds = work / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 2, 0))
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(work / "cache")},
           "folds": {"n_splits": 2, "file": str(folds)}, "runs_dir": str(work / "runs"),
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}], "optim": {"lr": 0.003},
           "train": {"epochs": 2, "batch_size": 8, "num_workers": 0}}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _popen(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` with output to ``log`` (a pipe nobody reads could fill up and stall it)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def _wait_for(pred, proc, timeout=240.0):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before the fault point:\n"
                                 f"{proc.log.read_text()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("fault point never reached")
        time.sleep(0.02)


def _train(cfg_path, log: Path, *extra):
    return _popen([sys.executable, str(ROOT / "train.py"), "--config", str(cfg_path), *extra], log)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finishes_every_fold(cfg_path, tmp_path):
    runs = Path(yaml.safe_load(cfg_path.read_text())["runs_dir"])
    ref = _train(cfg_path, tmp_path / "whole.log", "--set", "name=whole")
    killed = _train(cfg_path, tmp_path / "killed.log", "--set", "name=killed")
    last = runs / "killed" / "fold0" / "last.pt"
    _wait_for(last.is_file, killed)           # epoch 1 of fold 0 saved: epoch 2 is now running
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (runs / "killed" / "oof.csv").exists() and not (runs / "killed" / "fold0" / "summary.json").exists()
    # the kill hit while last.pt was being saved: a cut-short file is detected and best.pt used instead
    last.write_bytes(last.read_bytes()[:200])
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(cfg_path), "--set",
                          "name=killed", "--resume"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]        # the dead process's flock went with it
    assert f"{last}: unreadable checkpoint" in res.stderr and "trying the next checkpoint" in res.stderr
    assert f"fold 0: resumed from {last.with_name('best.pt')} (epoch 1)" in res.stdout
    assert ref.wait(timeout=300) == 0, ref.log.read_text()[-3000:]
    whole, resumed = pd.read_csv(runs / "whole" / "oof.csv"), pd.read_csv(runs / "killed" / "oof.csv")
    ids = read_labels(Path(yaml.safe_load(cfg_path.read_text())["data"]["root"]) / "train.csv")["Id"]
    assert resumed["Id"].tolist() == whole["Id"].tolist() == ids.tolist()     # complete, train.csv order
    assert list(resumed.columns) == list(whole.columns) and sorted(resumed["fold"].unique()) == [0, 1]
    assert pd.read_csv(runs / "killed" / "fold0" / "history.csv")["epoch"].tolist() == [1, 2]
    assert not list((runs / "killed").rglob(".*.tmp"))


def test_checkpoint_save_cut_short_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    before = path.read_bytes()
    real_save = torch.save

    def dies_half_way(obj, f):
        real_save(obj, f)
        Path(f).write_bytes(Path(f).read_bytes()[:50])
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pt"]


@pytest.fixture()
def sample(tmp_path):
    path = tmp_path / "sample_submission.csv"
    pd.DataFrame({"Id": ["a", "b", "c"], "Predicted": ["0"] * 3}).to_csv(path, index=False)
    return path


def test_inference_crash_while_writing_keeps_previous_submission(tmp_path, sample, monkeypatch):
    out = tmp_path / "sub.csv"
    preds = np.zeros((3, 28), np.uint8)
    preds[:, 2] = 1
    write_submission(out, make_submission(["a", "b", "c"], preds), sample)
    before = out.read_bytes()

    def half_then_crash(self, path, **kw):
        Path(path).write_text("Id,Predicted\na,0\n")
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_submission(out, make_submission(["a", "b", "c"], preds * 0), sample)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["sample_submission.csv", "sub.csv"]      # no temporary left


def test_inference_sigkilled_while_writing_leaves_no_submission(tmp_path, sample):
    """A real SIGKILL half-way through the write: no submission (only a hidden temporary may remain)."""
    out = tmp_path / "sub.csv"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, pandas as pd
        from pathlib import Path
        from hpa.submission import make_submission, write_submission
        def half_then_die(self, path, **kw):
            Path(path).write_text("Id,Predicted\\na,0\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        pd.DataFrame.to_csv = half_then_die
        write_submission({str(out)!r}, make_submission(["a", "b", "c"], np.ones((3, 28))), {str(sample)!r})
    """)
    res = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert not out.exists()
    assert all(n.startswith(".sub.csv.") and n.endswith(".tmp") for n in os.listdir(tmp_path)
               if n != "sample_submission.csv")


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    script = (f"from hpa.runlock import run_lock\nimport time\nwith run_lock({str(run_dir)!r}):\n"
              "    print('locked', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_run_with_same_name_is_refused_until_the_first_dies(cfg_path, capsys):
    run_dir = Path(yaml.safe_load(cfg_path.read_text())["runs_dir"]) / "locked"
    holder = _hold_lock(run_dir)
    try:
        msg = f"{run_dir}: another run holds the lock (pid {holder.pid}); wait for it or use another name"
        with pytest.raises(HPAError) as e:
            with run_lock(run_dir):
                pass
        assert str(e.value) == msg
        assert run_command("train", ["--config", str(cfg_path), "--set", "name=locked"]) == 2
        assert capsys.readouterr().err == f"error: {msg}\n"
        assert os.listdir(run_dir) == [".lock"]                 # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(run_dir) as lock:                             # the kernel dropped the dead holder's lock
        assert lock.read_text() == f"{os.getpid()}\n"
    with run_lock(run_dir):                                     # and ours is released on exit
        pass


def test_inference_on_a_locked_run_is_refused(cfg_path, capsys):
    run_dir = Path(yaml.safe_load(cfg_path.read_text())["runs_dir"]) / "busy"
    with run_lock(run_dir):
        assert run_command("infer", ["--config", str(cfg_path), "--set", "name=busy",
                                     "--out", str(run_dir / "sub.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir}: another run holds the lock (pid {os.getpid()})")
    assert os.listdir(run_dir) == [".lock"]


# ---------------------------------------------------------------------------------------- generation
@pytest.fixture(scope="module")
def generator(tmp_path_factory, make_random_dataset):
    """A 2-step ddpm_simple generator over 12 random 16 px images, and its YAML."""
    root = tmp_path_factory.mktemp("gen")
    make_random_dataset(root / "data", 12, 16, [str(i % 3) for i in range(12)], 2, width=2)
    cfg = root / "g.yaml"
    cfg.write_text(f"generator: ddpm_simple\nname: g\nmodels_dir: {root}/m\ndata:\n  root: {root}/data\n"
                   "  image_size: 16\nmodel:\n  block_out_channels: [16, 32]\ntrain:\n  steps: 2\n  batch_size: 4\n")
    assert run_command("synth", ["train", "--config", str(cfg), "--fold", "0"]) == 0
    return cfg


def _manifest_consistent(out: Path) -> pd.DataFrame:
    man = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert not man["Id"].duplicated().any()
    for i in man["Id"]:
        assert all((out / "train" / f"{i}_{c}.png").is_file() for c in CHANNELS), f"{i} listed, not on disk"
    return man


@pytest.mark.slow
def test_generation_sigkilled_half_way_resumes_and_never_lists_missing_images(generator, tmp_path):
    out, n = tmp_path / "o", 60
    cmd = [sys.executable, "-m", "hpa", "synth", "generate", "--config", str(generator), "--fold", "0",
           "--n", str(n), "--steps", "1", "--batch-size", "1", "--out", str(out), "--device", "cpu"]
    proc = _popen(cmd, tmp_path / "gen.log")

    def some_rows():
        m = out / "manifest.csv"
        return m.is_file() and len(m.read_text().splitlines()) > 3
    _wait_for(some_rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _manifest_consistent(out)
    assert 3 <= len(first) < n, "generation finished before the kill; raise n"
    res = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"synth generate: {n - len(first)} new images ({len(first)} already present)" in res.stdout
    final = _manifest_consistent(out)
    assert len(final) == n and final["Id"].tolist()[:len(first)] == first["Id"].tolist()


def test_generation_crash_mid_image_leaves_it_unlisted_and_rerun_completes(generator, tmp_path, monkeypatch):
    from hpa.synth import generate as gen_mod
    out = tmp_path / "o"
    argv = ["generate", "--config", str(generator), "--fold", "0", "--n", "4", "--steps", "1",
            "--batch-size", "1", "--out", str(out), "--device", "cpu"]
    real_write, calls = gen_mod.write_kaggle_rgby, {"n": 0}

    def crash_on_third(image_dir, image_id, img):
        calls["n"] += 1
        if calls["n"] == 3:                 # two channels of image 3 on disk, then the crash
            real_write(image_dir, image_id, img)
            for c in CHANNELS[2:]:
                (Path(image_dir) / f"{image_id}_{c}.png").unlink()
            raise KeyboardInterrupt
        real_write(image_dir, image_id, img)
    monkeypatch.setattr(gen_mod, "write_kaggle_rgby", crash_on_third)
    assert run_command("synth", argv) == 130
    assert len(_manifest_consistent(out)) == 2
    monkeypatch.setattr(gen_mod, "write_kaggle_rgby", real_write)
    assert run_command("synth", argv) == 0
    assert len(_manifest_consistent(out)) == 4


@pytest.mark.parametrize("is_main", [True, False])
def test_under_accelerate_only_the_main_process_locks(tmp_path, monkeypatch, is_main):
    import accelerate

    class FakeState:                          # a 2-process launch, seen from one rank
        is_main_process = is_main
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    with run_lock(tmp_path / "r") as lock:
        assert (lock is not None) == is_main
        assert (tmp_path / "r" / ".lock").exists() == is_main
