"""The lr range test on a tiny dataset: curve, divergence stop, suggestions, plot, determinism."""
import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.training.lr_find import lr_schedule, suggest


def test_schedule_and_suggestions():
    np.testing.assert_allclose(lr_schedule(1e-4, 1.0, 5), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    with pytest.raises(HPAError, match="need 0 < --start < --end"):
        lr_schedule(1.0, 1e-3, 10)
    lr = lr_schedule(1e-5, 1.0, 11)                       # one point per decade / 2
    sm = [2.0, 2.0, 1.98, 1.95, 1.7, 1.2, 1.0, 0.9, 1.5, 3.0, 9.0]
    s = suggest(pd.DataFrame({"lr": lr, "smoothed": sm}))
    assert s["min_loss"] == pytest.approx(lr[7]) and s["suggested"] == pytest.approx(lr[7] / 10)
    # central slopes per decade: at lr[4] (1.2 - 1.95) / 1 = -0.75, at lr[5] (1.0 - 1.7) / 1 = -0.7
    assert s["steepest"] == pytest.approx(lr[4])


@pytest.mark.slow
def test_lr_find_writes_curve_plot_and_is_deterministic(tiny_demo, tmp_path, capsys):
    write_folds(tmp_path / "folds.csv", make_folds(read_labels(tiny_demo / "train.csv"), 2, 0))
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 2, "file": str(tmp_path / "folds.csv")}, "runs_dir": str(tmp_path / "runs"),
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}],
           "train": {"batch_size": 16, "num_workers": 0}}
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    args = ["--config", str(path), "--start", "1e-4", "--end", "100", "--steps", "12"]
    assert run_command("lr-find", args) == 0              # 48 training images: 3 batches, 4 epochs
    out = capsys.readouterr().out
    assert "lr-find lr fold 0: lr 1e-04 -> 1e+02 over" in out and "suggested optim.lr" in out
    first = pd.read_csv(tmp_path / "runs" / "lr" / "lr_find.csv")
    assert first.columns.tolist() == ["step", "lr", "loss", "smoothed"] and 3 <= len(first) <= 12
    np.testing.assert_allclose(first["lr"], lr_schedule(1e-4, 100, 12)[:len(first)])
    assert (tmp_path / "runs" / "lr" / "lr_find.png").stat().st_size > 5000
    assert run_command("lr-find", args + ["--out", str(tmp_path / "again")]) == 0
    again = pd.read_csv(tmp_path / "again" / "lr_find.csv")
    pd.testing.assert_frame_equal(first, again)
    assert run_command("lr-find", args + ["--fold", "5"]) == 2
    assert "--fold 5: not in the folds file" in capsys.readouterr().err
