"""End-to-end k-fold training on the tiny demo data: run folder contents, repeatability, --resume,
the NaN guard, checkpoints that rebuild the model, and a 2-process (gloo) accelerate run."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.losses import CombinedLoss
from hpa.models import build_model
from hpa.rundir import RunDir
from hpa.training import run
from hpa.training import loop as loop_mod

ROOT = Path(__file__).resolve().parents[1]
PROBS = [f"p{c}" for c in range(28)]


@pytest.fixture(scope="module")
def tiny_cfg(tiny_experiment, tmp_path_factory):
    """A YAML config over the tiny demo data: 3 folds, test_resnet at 32 px, 2 epochs."""
    return tiny_experiment(tmp_path_factory.mktemp("train"), 3,
                           {"epochs": 2, "batch_size": 16, "num_workers": 0,
                            "augment": [{"name": "hflip"}, {"name": "rotate90"}]},
                           loss=[{"name": "bce"}], sched={"name": "cosine", "warmup_epochs": 0.5})


def _cfg(path, *sets):
    return load_config(path, list(sets))


def _oof(cfg):
    return pd.read_csv(cfg.run_dir / "oof.csv")


@pytest.mark.slow
def test_run_folder_contents_and_summary(tiny_cfg, tiny_demo, capsys):
    rc = run_command("train", ["--config", str(tiny_cfg), "--folds", "0", "2", "--set", "name=full"])
    assert rc == 0
    cfg = _cfg(tiny_cfg, "name=full")
    d = cfg.run_dir
    for f in ("config.yaml", "inputs.json", "oof.csv", "metrics.json", "report.md", "report/curves.png",
              "report/per_class_f1.png"):
        assert (d / f).is_file(), f
    assert not (d / "fold1").exists()
    oof = _oof(cfg)
    assert list(oof.columns) == ["Id", "fold"] + PROBS
    folds = pd.read_csv(cfg.folds.file).set_index("Id")["fold"]
    train_ids = pd.read_csv(tiny_demo / "train.csv")["Id"]
    expected = [i for i in train_ids if folds[i] in (0, 2)]   # train.csv order, folds 0 and 2 only
    assert oof["Id"].tolist() == expected
    assert (oof["fold"] == folds[oof["Id"]].to_numpy()).all()
    assert oof[PROBS].to_numpy().min() >= 0 and oof[PROBS].to_numpy().max() <= 1
    hist = pd.read_csv(d / "fold0" / "history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "val_f1", "lr", "time_s", "image_size"]
    assert hist["image_size"].tolist() == [32, 32]
    assert hist["epoch"].tolist() == [1, 2]
    metrics = yaml.safe_load((d / "metrics.json").read_text())
    assert metrics["n_images"] == len(expected) and len(metrics["per_class_f1"]) == 28
    assert 0 <= metrics["oof_macro_f1"] <= 1 and set(metrics["folds"]) == {"0", "2"}
    out = capsys.readouterr().out
    assert "trained full: folds [0, 2]" in out and "OOF macro F1" in out
    assert out.count("fold 0 epoch 2/2: train loss") == 1

    # best.pt: safe-loadable, rebuilds the model from the saved config, prediction = OOF
    state = torch.load(d / "fold0" / "best.pt", map_location="cpu", weights_only=True)
    best_epoch = int(hist["val_f1"].idxmax()) + 1
    assert state["epoch"] == best_epoch and state["score"] == pytest.approx(hist["val_f1"].max())
    model = build_model(load_config(d / "config.yaml").model)
    model.load_state_dict(state["model"])


def _interrupt_after_first_epoch(monkeypatch):
    original = loop_mod.FoldTrainer.save_epoch

    def save_then_stop(self, *args):
        original(self, *args)
        if self.epoch == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(loop_mod.FoldTrainer, "save_epoch", save_then_stop)


@pytest.mark.slow
def test_repeatable_and_resume_matches_uninterrupted(tiny_cfg, monkeypatch):
    a = _cfg(tiny_cfg, "name=a")
    run(a, [1])
    run(_cfg(tiny_cfg, "name=a2"), [1])
    np.testing.assert_allclose(_oof(a)[PROBS], _oof(_cfg(tiny_cfg, "name=a2"))[PROBS], atol=1e-6)

    b = _cfg(tiny_cfg, "name=b")
    with monkeypatch.context() as m:
        _interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            run(b, [1])
    assert not (b.run_dir / "fold1" / "summary.json").exists()
    run(b, [1], resume=True)
    np.testing.assert_allclose(_oof(a)[PROBS], _oof(b)[PROBS], atol=1e-6)
    wa = torch.load(a.run_dir / "fold1" / "last.pt", weights_only=True)["model"]
    wb = torch.load(b.run_dir / "fold1" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    assert pd.read_csv(b.run_dir / "fold1" / "history.csv")["epoch"].tolist() == [1, 2]

    # a truncated last.pt: warn, fall back to best.pt (epoch 1 here), and still match
    c = _cfg(tiny_cfg, "name=c")
    with monkeypatch.context() as m:
        _interrupt_after_first_epoch(m)
        with pytest.raises(KeyboardInterrupt):
            run(c, [1])
    last = c.run_dir / "fold1" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.warns(UserWarning, match="last.pt: unreadable checkpoint"):
        run(c, [1], resume=True)
    np.testing.assert_allclose(_oof(a)[PROBS], _oof(c)[PROBS], atol=1e-6)
    # a finished fold is skipped on --resume
    run(c, [1], resume=True)
    assert len(pd.read_csv(c.run_dir / "fold1" / "history.csv")) == 2
    # --resume with a config that trains differently is refused before anything is written ...
    before = (c.run_dir / "config.yaml").read_text()
    with pytest.raises(HPAError, match=r"config.yaml: --resume with a different config \(optim.lr: "
                                       r"0.003 -> 0.01; train.epochs: 2 -> 3\); resume with the saved"):
        run(_cfg(tiny_cfg, "name=c", "optim.lr=0.01", "train.epochs=3"), [1], resume=True)
    assert (c.run_dir / "config.yaml").read_text() == before
    # ... while settings that only change evaluation or loading may differ
    run(_cfg(tiny_cfg, "name=c", "infer.tta=2", "train.num_workers=0"), [1], resume=True)


def test_nan_loss_stops_fold_and_keeps_last_checkpoint(tiny_cfg, monkeypatch):
    original = CombinedLoss.forward
    calls = {"train": 0}

    def nan_in_epoch_two(self, logits, targets):
        loss = original(self, logits, targets)
        if logits.requires_grad:
            calls["train"] += 1
            if calls["train"] > 4:                   # 64 training images / batch 16 = 4 steps per epoch
                return loss * float("nan")
        return loss
    monkeypatch.setattr(CombinedLoss, "forward", nan_in_epoch_two)
    cfg = _cfg(tiny_cfg, "name=nan")
    last = cfg.run_dir / "fold0" / "last.pt"
    with pytest.raises(HPAError) as e:
        run(cfg, [0])
    assert str(e.value) == f"fold 0 epoch 2: loss is nan; stopped (last good checkpoint kept: {last})"
    assert torch.load(last, weights_only=True)["epoch"] == 1


def test_cli_errors(tiny_cfg, capsys):
    assert run_command("train", ["--config", str(tiny_cfg), "--folds", "7"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: --folds 7: not in the folds file (folds: [0, 1, 2], n_splits 3)"
    assert run_command("train", ["--config", str(tiny_cfg), "--set", "loss=[{name: dice}]"]) == 2
    assert "unknown loss 'dice'" in capsys.readouterr().err
    assert not _cfg(tiny_cfg).run_dir.exists()          # no config.yaml, no .lock, no folder


def test_a_run_that_fails_on_bad_input_leaves_nothing(tiny_cfg, tiny_demo, tmp_path, capsys):
    """Reliability: bad input found late (an image, a synthetic manifest) still leaves no run folder."""
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    first = pd.read_csv(demo / "train.csv")["Id"].iat[5]
    (demo / "train" / f"{first}_green.png").unlink()
    base = ["--config", str(tiny_cfg), "--set", "name=broken"]
    assert run_command("train", base + ["--set", f"data.root={demo}"]) == 2
    assert f"{first}_green.png" in capsys.readouterr().err
    manifest = tmp_path / "nope" / "manifest.csv"
    assert run_command("train", base + ["--set", "synthetic.strategy=concat",
                                        "--set", f"synthetic.manifests=[{manifest}]"]) == 2
    assert str(manifest) in capsys.readouterr().err
    assert not _cfg(tiny_cfg, "name=broken").run_dir.exists()


@pytest.mark.slow
def test_a_run_holds_one_experiment_on_one_dataset(tiny_cfg, tiny_demo, tmp_path, capsys):
    """Reliability: a run records what it trained on (inputs.json). Training another config into it,
    `hpa folds` over the folds it used, and --resume after its folds changed are refused."""
    folds = tmp_path / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 3, 0))
    sets = ["--set", "name=prov", "--set", f"folds.file={folds}", "--set", "train.epochs=1"]

    def train(*extra):
        return run_command("train", ["--config", str(tiny_cfg), *sets, *extra])
    assert train("--folds", "0") == 0
    rd = RunDir.of(_cfg(tiny_cfg, "name=prov"))
    rec = json.loads(rd.inputs.read_text())
    assert rec["folds"]["path"] == str(folds.resolve()) and rec["n_images"] == 96 and rec["fraction"] == 1.0
    assert rec["labels"]["sha256"] == hashlib.sha256((tiny_demo / "train.csv").read_bytes()).hexdigest()
    before = {p: p.read_bytes() for p in (rd.config, rd.inputs, rd.oof, rd.metrics)}
    capsys.readouterr()
    assert train("--folds", "1", "--set", "optim.lr=0.05") == 2
    assert capsys.readouterr().err == (
        f"error: {rd.config}: folds [0] of this run were trained with another config (optim.lr: 0.003 -> "
        f"0.05); one run folder holds one experiment: use another name (--set name=...) or delete {rd.path} "
        "to start afresh\n")
    assert run_command("folds", ["--config", str(tiny_cfg), *sets, "--seed", "7"]) == 2
    assert f"error: {folds}: run {rd.path} trained on the folds in this file" in capsys.readouterr().err
    assert run_command("folds", ["--config", str(tiny_cfg), *sets, "--seed", "7", "--force"]) == 0
    capsys.readouterr()
    assert train("--folds", "1", "--resume") == 2
    assert capsys.readouterr().err == (
        f"error: {rd.inputs}: folds [0] of this run were trained on other data (the folds file "
        f"{folds.resolve()} assigns other folds since then); restore the original files, or train a new run "
        "(--set name=...)\n")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(rd.path)) == [".lock", "config.yaml", "fold0", "inputs.json", "metrics.json",
                                           "oof.csv", "report", "report.md", "tensorboard"]


@pytest.mark.slow
def test_two_process_accelerate_matches_single_process(tiny_cfg):
    """``accelerate launch --num_processes 2 --cpu`` (gloo DDP): same OOF rows, close metric."""
    single = _cfg(tiny_cfg, "name=single", "train.epochs=1")
    run(single, [0])
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "train.py"), "--config", str(tiny_cfg), "--folds", "0",
           "--set", "name=ddp", "--set", "train.epochs=1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("trained ddp: folds [0]") == 1          # only the main process reports
    ddp = _cfg(tiny_cfg, "name=ddp")
    a, b = _oof(single), _oof(ddp)
    assert a["Id"].tolist() == b["Id"].tolist() and list(a.columns) == list(b.columns)
    ma = yaml.safe_load((single.run_dir / "metrics.json").read_text())["oof_macro_f1"]
    mb = yaml.safe_load((ddp.run_dir / "metrics.json").read_text())["oof_macro_f1"]
    assert abs(ma - mb) < 0.15
    assert np.isfinite(b[PROBS].to_numpy()).all()
    # only the main process tracks: one event file for the fold
    assert len(list((ddp.run_dir / "tensorboard" / "fold0").glob("events.out.tfevents.*"))) == 1


def test_ema_oversampling_accumulation_clipping_plateau_early_stop(tiny_cfg, monkeypatch):
    scores = iter([0.3, 0.2, 0.9])                  # epoch 2 does not improve -> early stop
    monkeypatch.setattr(loop_mod, "macro_f1", lambda y, p: next(scores))
    cfg = _cfg(tiny_cfg, "name=opts", "train.epochs=3", "train.ema=true", "train.ema_decay=0.5",
               "train.sampler=oversample", "train.accum_steps=2", "train.clip_grad=1.0",
               "sched.name=plateau", "sched.params.patience=0", "train.early_stopping=1",
               "optim.name=sgd", "train.channels_last=true")
    run(cfg, [0])
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    summary = yaml.safe_load((cfg.run_dir / "fold0" / "summary.json").read_text())
    f1 = hist["val_f1"].tolist()
    # early stopping (patience 1) ends the fold at the first epoch that does not improve
    first_bad = next((i + 1 for i in range(1, len(f1)) if f1[i] <= max(f1[:i])), None)
    assert first_bad == 2
    assert summary["epochs"] == first_bad == len(hist)
    state = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)
    if first_bad:                   # the plateau scheduler (patience 0) halved the lr after that epoch
        assert summary["stopped"].startswith("early stop")
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 * hist["lr"].iloc[0])
    assert state["ema"] is not None and state["train_model"] is not None
    k = "head.fc.weight"
    assert not torch.equal(state["model"][k], state["train_model"][k])   # EMA weights are saved


@pytest.mark.slow
def test_train_select_one_choice_for_oof_checkpoint_and_estimate(tiny_cfg):
    """Issue 23: train.select decides the run's oof.csv, the checkpoint inference serves and the figure
    printed; the default (last) involves no choice on the scored fold."""
    from hpa.inference.stage import check_selection
    from hpa.reports.cv import epoch_choice

    cfg = _cfg(tiny_cfg, "name=sel", "train.keep_checkpoints=-1")
    assert cfg.train.select == "last"
    run(cfg, [0, 1])
    rd = RunDir(cfg.run_dir)
    metrics = json.loads(rd.metrics.read_text())
    assert metrics["select"] == "last" and metrics["selected_epochs"] == {"0": 2, "1": 2}
    assert set(metrics["select_pooled"]) == {"best", "last", "nested"}
    every = pd.concat([pd.read_csv(rd.fold(k).epochs_oof) for k in (0, 1)])
    assert sorted(every["epoch"].unique()) == [1, 2]
    last = every[every["epoch"] == 2].drop(columns="epoch").set_index("Id").loc[_oof(cfg)["Id"]]
    np.testing.assert_allclose(_oof(cfg)[PROBS].to_numpy(), last[PROBS].to_numpy(), atol=1e-6)
    assert metrics["oof_macro_f1"] == pytest.approx(metrics["select_pooled"]["last"])
    # another choice: --resume rebuilds oof.csv and metrics.json for it; inference follows the record
    best = _cfg(tiny_cfg, "name=sel", "train.keep_checkpoints=-1", "train.select=best")
    run(best, [0, 1], resume=True)
    fold_best = pd.concat([pd.read_csv(rd.fold(k).oof) for k in (0, 1)]).set_index("Id").loc[_oof(cfg)["Id"]]
    np.testing.assert_allclose(_oof(cfg)[PROBS].to_numpy(), fold_best[PROBS].to_numpy(), atol=1e-6)
    assert check_selection(rd, best) == "best"
    with pytest.raises(HPAError, match=r"made with train.select=best, not last: set train.select=best"):
        check_selection(rd, cfg)
    nested = _cfg(tiny_cfg, "name=sel", "train.keep_checkpoints=-1", "train.select=nested")
    run(nested, [0, 1], resume=True)
    ec = epoch_choice(rd.histories())
    want = {str(k): r["nested_epoch"] for k, r in ec["per_fold"].items()}
    assert json.loads(rd.metrics.read_text())["selected_epochs"] == want
    assert rd.checkpoint_paths([0, 1], "nested") == [rd.fold(k).epoch_weights(want[str(k)]) for k in (0, 1)]
    with pytest.raises(HPAError, match=r"train.select.*needs every epoch's weights \(train.keep_checkpoints: -1\)"):
        _cfg(tiny_cfg, "train.select=nested")


def test_selected_epoch_at_another_size_is_reported(tmp_path):
    """Issue 26 case 10: with train.resize_schedule the selected epoch may have trained smaller."""
    from hpa.training.select import check_served_size

    rd = RunDir(tmp_path / "run")
    rd.fold(0).path.mkdir(parents=True)
    rd.fold(0).write_history([{"epoch": 1, "train_loss": 1, "val_loss": 1, "val_f1": 0.3, "lr": 0.1,
                               "time_s": 1, "image_size": 32},
                              {"epoch": 2, "train_loss": 1, "val_loss": 1, "val_f1": 0.2, "lr": 0.1,
                               "time_s": 1, "image_size": 64}])
    assert check_served_size(rd, {0: 2}, 64) == []
    assert check_served_size(rd, {0: 1}, 64) == [
        "fold 0: the selected epoch 1 trained at 32 px but the test set is predicted at data.image_size 64 px"]
