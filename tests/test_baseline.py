"""``hpa baseline``: pooled stain features -> logistic regression, written like a trained run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.baseline import feature_matrix, fit_predict, pooled_features
from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.cli import run_command
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import label_matrix, read_labels
from hpa.metrics import macro_f1
from hpa.training.run import constant_f1
from hpa.rundir import RunDir
from hpa.submission import validate_submission


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A small demo dataset (240 train, 60 test images of 32 px) with a 3-fold split."""
    from hpa.demo.dataset import make_demo_dataset

    out = tmp_path_factory.mktemp("bdemo")
    make_demo_dataset(out, n_train=240, n_test=60, size=32, seed=3, min_per_class=6, contact_sheet=False)
    write_folds(out / "folds.csv", make_folds(read_labels(out / "train.csv"), n_splits=3, seed=42))
    return out


def _config(tmp_path: Path, demo: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{root: {demo}, image_size: 32, cache: false}}\nfolds: {{n_splits: 3}}\n"
                    f"runs_dir: {tmp_path / 'runs'}\nthresholds: {{min_positives: 3}}\n")
    return path


def test_pooled_features_are_fixed_length_and_see_where_green_is():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 40, (32, 32, 4), dtype=np.uint8)
    img[8:16, 8:16, 2] = 250                        # a nucleus
    inside = img.copy()
    inside[8:16, 8:16, 1] = 250                     # green in the nucleus
    outside = img.copy()
    outside[20:28, 20:28, 1] = 250                  # the same green elsewhere
    fi, fo = pooled_features(inside), pooled_features(outside)
    assert fi.shape == fo.shape and fi.dtype == np.float32 and np.isfinite(fi).all()
    np.testing.assert_allclose(fi[:4], fo[:4], atol=2e-3)   # about the same channel means ...
    assert fi[-3] > 0.5 and fo[-3] < 0.1            # ... but green follows blue only in the first


def test_fit_predict_handles_a_class_without_positives():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.zeros((60, NUM_CLASSES), dtype=np.uint8)
    y[:, 0] = x[:, 0] > 0                           # class 0 learnable, the others never positive
    (p,) = fit_predict(x, y, [x])
    assert p.shape == (60, NUM_CLASSES) and ((p >= 0) & (p <= 1)).all()
    assert macro_f1(y[:, :1], p[:, :1] > 0.5) > 0.9 and (p[:, 1:] < 0.5).all()


def test_baseline_writes_a_run_that_beats_the_constant_and_joins_an_ensemble(tmp_path, demo, capsys):
    cfg = _config(tmp_path, demo)
    sub = tmp_path / "baseline.csv"
    assert run_command("baseline", ["--config", str(cfg), "--out", str(sub)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("baseline exp_baseline: logistic regression on ") and str(sub) in out
    rd = RunDir(tmp_path / "runs" / "exp_baseline")
    train = read_labels(demo / "train.csv")
    ids, folds, probs = rd.read_oof(train["Id"].tolist())     # checked: Ids, folds, values in [0, 1]
    assert len(ids) == 240 and sorted(set(folds)) == [0, 1, 2] and rd.finished_folds() == [0, 1, 2]
    y = label_matrix(train.set_index("Id").loc[ids].reset_index())
    f1 = macro_f1(y, probs > 0.5)
    assert f1 > constant_f1(y) + 0.05
    assert rd.read_metrics()["oof_macro_f1"] == pytest.approx(f1)
    test = rd.read_test_probs()
    assert test["Id"].tolist() == pd.read_csv(demo / "sample_submission.csv")["Id"].tolist()
    assert validate_submission(sub, demo / "sample_submission.csv")["rows"] == 60
    th = rd.read_thresholds()       # the baseline's thresholds are chosen like a trained run's (auto)
    sel = th["selection"]
    assert sel["requested"] == "auto" and th["strategy"] == sel["strategy"]
    # auto: the best estimate, or a simpler candidate within the fold spread of it; its own estimate too
    assert sel["strategy"] in sel["reason"] and 0 < sel["auto"]["nested_f1_pooled"] <= 1
    # the baseline and a second one (other C) blend like trained runs
    assert run_command("baseline", ["--config", str(cfg), "--name", "b2", "--C", "0.5"]) == 0
    ens = tmp_path / "ens.yaml"
    ens.write_text(f"runs_dir: {tmp_path / 'runs'}\nruns:\n  - {{dir: {rd.path}}}\n"
                   f"  - {{dir: {tmp_path / 'runs' / 'b2'}}}\nthresholds: {{min_positives: 3}}\n"
                   f"out: {tmp_path / 'ens.csv'}\n")
    assert run_command("infer", ["--ensemble", str(ens)]) == 0
    blended = pd.read_csv(tmp_path / "runs" / "ens" / "test_probs.csv")
    b2 = RunDir(tmp_path / "runs" / "b2").read_test_probs()
    np.testing.assert_allclose(blended[PROB_COLUMNS].to_numpy(),
                               (test[PROB_COLUMNS].to_numpy() + b2[PROB_COLUMNS].to_numpy()) / 2)


def test_baseline_refuses_an_unknown_fold(tmp_path, demo, capsys):
    assert run_command("baseline", ["--config", str(_config(tmp_path, demo)), "--folds", "7"]) == 2
    assert "--folds 7: not in the folds file" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "exp_baseline").exists()


def test_feature_matrix_stacks_images():
    imgs = [np.full((16, 16, 4), v, dtype=np.uint8) for v in (0, 128)]
    x = feature_matrix(imgs)
    assert x.shape[0] == 2 and x[1, 0] == pytest.approx(128 / 255)


def test_baseline_refuses_a_run_folder_in_use(tmp_path, demo, capsys):
    from hpa.runlock import run_lock

    cfg = _config(tmp_path, demo)
    with run_lock(tmp_path / "runs" / "exp_baseline"):              # e.g. a training still writing it
        assert run_command("baseline", ["--config", str(cfg)]) == 2
    assert "exp_baseline" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "exp_baseline" / "oof.csv").exists()
