"""Experiment tracking (train.log_with): a 1-epoch tiny run writes TensorBoard scalars, per-class F1
and a sample batch into the run folder; `none` writes nothing; a missing tracker package is one line."""
import importlib.util

import pandas as pd
import pytest

from hpa.classes import CLASS_NAMES
from hpa.cli import run_command
from hpa.config import load_config
from hpa.errors import HPAError
from hpa.rundir import RunDir
from hpa.training import run
from hpa.training.tracking import check_tracker, rgb_view



@pytest.fixture(scope="module")
def cfg_path(tiny_experiment, tmp_path_factory):
    return tiny_experiment(tmp_path_factory.mktemp("tracking"), 3,
                           {"epochs": 1, "batch_size": 16, "num_workers": 0, "threads": 1})


def test_tensorboard_events_hold_the_scalars(cfg_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(cfg_path, ["name=tb"])
    run(cfg, [0])
    rd = RunDir.of(cfg)
    logdir = rd.tracking("tensorboard") / "fold0"
    assert logdir == cfg.run_dir / "tensorboard" / "fold0"
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/macro_f1", "train/image_size",
            f"val_f1/00_{CLASS_NAMES[0]}", f"val_f1/27_{CLASS_NAMES[27]}"} <= tags
    hist = pd.read_csv(rd.fold(0).history)
    n_train = int((pd.read_csv(cfg.folds.file)["fold"] != 0).sum())
    steps = n_train // 16                                    # drop_last, batch 16
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(steps))
    f1 = ea.Scalars("val/macro_f1")
    assert len(f1) == 1 and f1[0].step == steps
    assert f1[0].value == pytest.approx(hist["val_f1"].iat[0], abs=1e-6)
    assert ea.Scalars("val/loss")[0].value == pytest.approx(hist["val_loss"].iat[0], abs=1e-5)
    assert ea.Scalars("train/image_size")[0].value == 32
    assert ea.Tags()["images"] == ["train/sample_batch"]     # logged once
    assert len(ea.Images("train/sample_batch")) == 1


def test_log_with_none_writes_no_tracking_folder(cfg_path):
    cfg = load_config(cfg_path, ["name=quiet", "train.log_with=none"])
    run(cfg, [0])
    assert (cfg.run_dir / "fold0" / "summary.json").is_file()
    assert not (cfg.run_dir / "tensorboard").exists()


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_tracker_package_is_one_line(name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed")
    with pytest.raises(HPAError, match=rf"^train.log_with: {name} needs the '{name}' package "
                                       rf"\(pip install {name}\), or set train.log_with: none$"):
        check_tracker(name)


def test_train_with_a_missing_tracker_stops_before_writing(cfg_path, capsys):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    assert run_command("train", ["--config", str(cfg_path), "--set", "name=w", "--set", "train.log_with=wandb"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: train.log_with: wandb needs the 'wandb' package (pip install wandb), "
                   "or set train.log_with: none\n")
    assert not (load_config(cfg_path, ["name=w"]).run_dir / "config.yaml").exists()


def test_unknown_tracker_is_refused_by_the_config():
    with pytest.raises(HPAError, match="train.log_with"):
        load_config(None, ["train.log_with=comet"])


def test_rgb_view_blends_yellow_into_red_and_green():
    import torch

    x = torch.zeros(2, 4, 2, 2, dtype=torch.uint8)
    x[:, 3] = 255
    x[:, 2] = 51
    rgb = rgb_view(x)
    assert rgb.shape == (2, 3, 2, 2)
    assert rgb[0, :, 0, 0].tolist() == pytest.approx([0.5, 0.5, 0.2])
