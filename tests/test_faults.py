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
from hpa.data.folds import write_folds
from hpa.data.images import CHANNELS
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.runlock import run_lock
from hpa.submission import make_submission, write_submission
from hpa.training.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


@pytest.fixture(scope="module")
def cfg_path(tiny_experiment, tmp_path_factory):
    """Tiny experiment YAML: 2 folds, test_resnet at 32 px, 2 epochs, batches of 8 (several steps/epoch)."""
    return tiny_experiment(tmp_path_factory.mktemp("faults"), 2, {"epochs": 2, "batch_size": 8, "num_workers": 0},
                           loss=[{"name": "bce"}])


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
    from hpa.synthetic import generate as gen_mod
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


# ------------------------------------------------------------------ second round (issue 17)
import errno  # noqa: E402
import re  # noqa: E402

from hpa import io as hio  # noqa: E402


def _writers(tmp_path, sample):
    """Every kind of atomic output: (name, write(path)) for CSV, JSON, folds, checkpoint, submission."""
    from hpa.io import write_csv, write_json
    preds = np.zeros((3, 28), np.uint8)
    return [("oof.csv", lambda p: write_csv(p, pd.DataFrame({"Id": ["a"], "p0": [0.5]}))),
            ("thresholds.json", lambda p: write_json(p, {"thresholds": [0.5] * 28})),
            ("folds.csv", lambda p: write_folds(p, pd.Series([0, 1], index=pd.Index(["a", "b"], name="Id")))),
            ("last.pt", lambda p: save_checkpoint(p, {"model": {"w": torch.ones(2)}})),
            ("sub.csv", lambda p: write_submission(p, make_submission(["a", "b", "c"], preds), sample))]


def test_every_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, sample, monkeypatch):
    """Durable, not only atomic: a power cut after the rename cannot leave an empty file behind."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(hio.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                     real_fsync(fd))[1])
    monkeypatch.setattr(hio.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    for name, write in _writers(tmp_path, sample):
        events.clear()
        path = tmp_path / "out" / name
        write(path)
        assert len(events) == 3 and events[0][0] == "fsync", (name, events)
        assert re.fullmatch(rf"{tmp_path}/out/\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp", events[0][1])
        assert events[1:] == [("replace", str(path)), ("fsync", str(tmp_path / "out"))], name


def test_full_disk_during_a_write_is_one_line_and_leaves_the_old_file(tmp_path, sample, monkeypatch, capsys):
    """hpa folds (any atomic write) on a full disk: one line naming the file and the space, nothing left."""
    labels = tmp_path / "train.csv"
    labels.write_text("Id,Target\n" + "".join(f"i{k},{k % 2}\n" for k in range(8)))
    out = tmp_path / "folds.csv"
    out.write_text("old\n")

    def fills_the_disk(self, path, **kw):
        Path(path).write_text("Id,fold\ni0,0\n")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_csv", fills_the_disk)
    assert run_command("folds", ["--labels", str(labels), "--out", str(out), "--k", "2"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: {out}: cannot write \(No space left on device\): [0-9.]+ [KMG]?i?B free in "
                        rf"{tmp_path}, the file needs more than 13 B\n", err), err
    assert out.read_text() == "old\n" and sorted(os.listdir(tmp_path)) == ["folds.csv", "sample_submission.csv",
                                                                         "train.csv"]


def test_checkpoint_save_on_a_full_disk_is_one_line_not_torchs_error(tmp_path, monkeypatch):
    """torch reports a failed write as RuntimeError 'unexpected pos': it becomes the same one line."""
    import shutil

    def torch_on_a_full_disk(obj, f):
        Path(f).write_bytes(b"PK" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", torch_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 10 << 20, 4096))
    with pytest.raises(HPAError) as e:
        save_checkpoint(tmp_path / "fold0" / "last.pt", {"model": {}})
    assert str(e.value) == (f"{tmp_path}/fold0/last.pt: cannot write (No space left on device): 4.0 KiB free "
                            f"in {tmp_path}/fold0, the file needs more than 200 B")
    assert os.listdir(tmp_path / "fold0") == []
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("some torch bug")))
    with pytest.raises(RuntimeError, match="some torch bug"):            # not every RuntimeError is a disk
        save_checkpoint(tmp_path / "last.pt", {"model": {}})


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    """A folder we may not write (read-only, no permission): one line naming the file, no traceback."""
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "ro" / ".folds.csv.x.tmp"))
    monkeypatch.setattr(hio.tempfile, "mkstemp", read_only)
    labels = tmp_path / "train.csv"
    labels.write_text("Id,Target\n" + "".join(f"i{k},{k % 2}\n" for k in range(8)))
    out = tmp_path / "ro" / "folds.csv"
    assert run_command("folds", ["--labels", str(labels), "--out", str(out), "--k", "2"]) == 2
    assert capsys.readouterr().err == f"error: {out}: cannot write (Read-only file system)\n"


def test_cli_prints_environment_oserrors_in_one_line_but_keeps_bugs_visible(tmp_path, monkeypatch, capsys):
    """An OSError that blames the place (EROFS, EACCES, ENOSPC...) from a write outside hpa.io (the run
    lock's mkdir, say) is one line; a FileNotFoundError may be a bug and keeps its traceback."""
    import types

    from hpa import cli
    mod = types.ModuleType("fake_cmd")
    mod.add_arguments = lambda p: p.add_argument("--errno", type=int)
    mod.main = lambda a: (_ for _ in ()).throw(OSError(a.errno, os.strerror(a.errno), "/data/runs/x"))
    monkeypatch.setitem(sys.modules, "fake_cmd", mod)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_cmd", "test"))
    assert run_command("fake", ["--errno", str(errno.EACCES)]) == 2
    assert capsys.readouterr().err == "error: /data/runs/x: Permission denied\n"
    with pytest.raises(FileNotFoundError):
        run_command("fake", ["--errno", str(errno.ENOENT)])


def test_stale_temporaries_are_removed_but_not_live_or_foreign_files(tmp_path):
    """Only '.<name>.XXXXXXXX.tmp' files older than this process and not held by a live writer go."""
    from hpa.io import atomic_path, remove_stale_temporaries

    fold = tmp_path / "fold0"
    fold.mkdir()
    stale = [fold / ".best.pt.k2j4_x9a.tmp", fold / ".last.pt.0a1b2c3d.tmp", tmp_path / ".oof.csv.zz99aa11.tmp"]
    keep = [fold / ".notes.tmp", fold / "x.tmp", fold / ".last.pt.tmp", fold / "last.pt"]
    for p in stale + keep:
        p.write_bytes(b"x" * 1000)
    old = 1e9                                            # 2001: before this process started
    for p in stale + keep:
        os.utime(p, (old, old))
    held = _popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from hpa.io import atomic_path
        with atomic_path({str(fold / 'best.pt')!r}) as tmp:
            tmp.write_text("being written")
            print(tmp, flush=True)
            time.sleep(60)
    """)], tmp_path / "held.log")
    try:
        _wait_for(lambda: (tmp_path / "held.log").read_text().strip(), held)
        live = Path((tmp_path / "held.log").read_text().strip())
        os.utime(live, (old, old))                       # old, but its writer is alive: kept
        with atomic_path(fold / "oof.csv") as ours:      # ours, in progress: kept
            ours.write_text("x")
            removed = remove_stale_temporaries(tmp_path)
            assert ours.exists()
        assert sorted(removed) == sorted(stale)
        assert live.exists() and all(p.exists() for p in keep) and not any(p.exists() for p in stale)
    finally:
        held.kill()
        held.wait()
    assert remove_stale_temporaries(tmp_path) == [live]  # its writer died: now it is stale


@pytest.mark.parametrize("sig, rc, message", [(signal.SIGTERM, 143, "error: terminated"),
                                              (signal.SIGHUP, 129, "error: terminated (hang-up)")])
def test_sigterm_is_one_line_like_ctrl_c_and_removes_temporaries(tmp_path, sig, rc, message):
    """SIGTERM (a scheduler's kill, `timeout`) ends a command like Ctrl-C: message, status, cleanup."""
    out = tmp_path / "big.csv"
    script = textwrap.dedent(f"""
        import sys, time, types
        from hpa import cli
        from hpa.io import atomic_path
        def main(args):
            with atomic_path({str(out)!r}) as tmp:
                tmp.write_text("half")
                print("writing", flush=True)
                time.sleep(60)
        sys.modules["slow_cmd"] = types.SimpleNamespace(add_arguments=lambda p: None, main=main)
        cli.COMMANDS["slow"] = ("slow_cmd", "test")
        sys.exit(cli.run_command("slow", []))
    """)
    # the signal at its default in the child even when the suite runs under nohup (SIGHUP ignored, which
    # the command rightly respects)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == rc
    assert proc.stderr.read() == message + "\n"
    assert os.listdir(tmp_path) == []                    # neither the output nor its temporary


def test_training_starts_by_removing_the_temporaries_of_a_killed_save(cfg_path, capsys):
    """A run killed while saving leaves '.last.pt.XXXXXXXX.tmp': the next training command removes it
    (here one refused at once for a wrong --folds, so the removal comes before anything else)."""
    fold = Path(yaml.safe_load(cfg_path.read_text())["runs_dir"]) / "killed_save" / "fold0"
    fold.mkdir(parents=True)
    stale = fold / ".last.pt.a1b2c3d4.tmp"
    stale.write_bytes(b"\0" * 4096)
    os.utime(stale, (1e9, 1e9))                             # written before this process started
    assert run_command("train", ["--config", str(cfg_path), "--set", "name=killed_save", "--folds", "7"]) == 2
    out = capsys.readouterr().out
    assert f"{fold.parent}: removed 1 stale temporary file(s) of killed writes (4.0 KiB, e.g. {stale.name})" in out
    assert not stale.exists()


def test_closed_output_pipe_ends_quietly(monkeypatch, capsys):
    """`hpa score ... | head`: the reader leaves early; no BrokenPipeError traceback, status 141."""
    import types

    from hpa import cli

    def main(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
    monkeypatch.setitem(sys.modules, "pipe_cmd", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.COMMANDS, "pipe", ("pipe_cmd", "test"))
    assert run_command("pipe", []) == 141
    assert capsys.readouterr().err == ""
