"""Kept epoch weights and checkpoint averaging (hpa swa) on a tiny trained run."""
import pandas as pd
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.training.run import run
from hpa.rundir import FoldDir
from hpa.training.checkpoint import load_checkpoint
from hpa.training.swa import select_checkpoints


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory):
    """2 folds of test_resnet at 32 px, 3 epochs, the last 2 epochs' weights kept."""
    work = tmp_path_factory.mktemp("swa")
    write_folds(work / "folds.csv", make_folds(read_labels(tiny_demo / "train.csv"), 2, 0))
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(work / "cache")},
           "folds": {"n_splits": 2, "file": str(work / "folds.csv")}, "runs_dir": str(work / "runs"),
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}], "optim": {"lr": 0.003},
           "train": {"epochs": 3, "batch_size": 16, "num_workers": 0, "keep_checkpoints": 2},
           "infer": {"tta": 2, "batch_size": 16}}
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run(load_config(path))
    return path


def test_keep_checkpoints_keeps_the_last_k(trained, tmp_path):
    fold = load_config(trained).run_dir / "fold0"
    assert sorted(p.name for p in fold.glob("epoch*.pt")) == ["epoch2.pt", "epoch3.pt"]
    state = load_checkpoint(fold / "epoch3.pt")
    assert set(state) == {"model", "epoch", "score", "fold"} and state["epoch"] == 3
    last = load_checkpoint(fold / "last.pt")
    assert all(torch.equal(state["model"][k], v) for k, v in last["model"].items())
    s = {"model": {}, "epoch": 5, "score": 0.1, "fold": 0}
    assert FoldDir(tmp_path).keep_epoch_weights(s, 0) is None and not list(tmp_path.iterdir())
    for e in (1, 2, 3):
        FoldDir(tmp_path).keep_epoch_weights({**s, "epoch": e}, -1)               # -1 keeps every epoch
    assert len(list(tmp_path.glob("epoch*.pt"))) == 3
    with pytest.raises(HPAError, match="train.keep_checkpoints: must be -1"):
        FoldDir(tmp_path).keep_epoch_weights(s, -2)


@pytest.mark.slow
def test_swa_averages_recomputes_bn_and_writes_its_oof(trained, capsys):
    cfg = load_config(trained)
    assert run_command("swa", ["--config", str(trained), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "swa tiny: folds [0, 1], last 2 kept epochs each" in out and "best-epoch checkpoints" in out
    for k in (0, 1):
        fold = cfg.run_dir / f"fold{k}"
        swa = load_checkpoint(fold / "swa.pt")
        e2, e3 = (load_checkpoint(fold / f"epoch{e}.pt")["model"] for e in (2, 3))
        assert swa["epochs"] == [2, 3] and swa["source"] == "last 2"
        w = "backbone.conv1.0.weight"
        torch.testing.assert_close(swa["model"][w], (e2[w] + e3[w]) / 2)
        bn = "backbone.layer1.0.bn1.running_mean"                       # recomputed, not averaged
        assert not torch.allclose(swa["model"][bn], (e2[bn] + e3[bn]) / 2)
        oof = pd.read_csv(fold / "swa_oof.csv")
        assert (oof["fold"] == k).all() and len(oof) == len(pd.read_csv(fold / "oof.csv"))
    merged = pd.read_csv(cfg.run_dir / "swa_oof.csv")
    assert merged["Id"].tolist() == read_labels(cfg.data.root + "/train.csv")["Id"].tolist()
    metrics = (cfg.run_dir / "swa_metrics.json").read_text()
    assert '"best_epoch_oof_macro_f1"' in metrics
    # the best 1 of the kept epochs: the same parameters as that epoch's weights
    chosen = select_checkpoints(FoldDir(cfg.run_dir / "fold0"), best=1)
    assert len(chosen) == 1 and chosen[0][2] == max(s for _, _, s in select_checkpoints(FoldDir(cfg.run_dir / "fold0"), last=2))
    # train.select swa: inference refuses until the run's oof.csv holds the average, then reads swa.pt
    sub = trained.parent / "swa.csv"
    assert run_command("infer", ["--config", str(trained), "--set", "train.select=swa", "--out", str(sub)]) == 2
    assert "made with train.select=last, not swa: set train.select=last, or run 'hpa swa' first" in capsys.readouterr().err
    assert run_command("swa", ["--config", str(trained), "--last", "2", "--set", "train.select=swa"]) == 0
    assert "(train.select: swa, now oof.csv)" in capsys.readouterr().out
    assert pd.read_csv(cfg.run_dir / "oof.csv").equals(merged)
    assert yaml.safe_load((cfg.run_dir / "metrics.json").read_text())["select"] == "swa"
    assert run_command("infer", ["--config", str(trained), "--set", "train.select=swa", "--out", str(sub)]) == 0
    assert sub.is_file() and yaml.safe_load(sub.with_suffix(".json").read_text())["checkpoint"] == "swa"


def test_swa_refuses_missing_or_ambiguous_input(trained, capsys):
    assert run_command("swa", ["--config", str(trained), "--last", "3"]) == 2
    assert "2 epoch<e>.pt file(s), 3 needed (train with train.keep_checkpoints >= 3)" in capsys.readouterr().err
    with pytest.raises(HPAError, match="exactly one of --last K or --best K"):
        select_checkpoints(FoldDir(load_config(trained).run_dir / "fold0"), last=0, best=0)
    assert run_command("infer", ["--config", str(trained), "--set", "train.select=swa2"]) == 2
    assert "'train.select' must be one of best, last, swa, nested, got 'swa2'" in capsys.readouterr().err
