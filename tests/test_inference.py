"""Inference and ensembling on fake runs (tiny test_resnet checkpoints, synthetic OOF) over the tiny demo."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpa.classes import NUM_CLASSES
from hpa.cli import run_command
from hpa.config import ExperimentConfig, load_config, save_config
from hpa.data.images import read_kaggle_rgby
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.inference.ensemble import blend, load_ensemble_config
from hpa.inference.predict import load_fold_model, predict_images, tta_views
from hpa.io import write_json
from hpa.models import build_model
from hpa.submission import validate_submission
from hpa.rundir import RunDir
from hpa.thresholds import ThresholdTuner, apply_thresholds, load_thresholds, thresholds_for_test
from hpa.transforms import dihedral

P = [f"p{i}" for i in range(NUM_CLASSES)]
ROOT = Path(__file__).resolve().parents[1]


def make_run(tmp_path: Path, demo: Path, name: str = "r", n_splits: int = 2, seed: int = 0,
             fold_shift: int = 0) -> Path:
    """A fake trained run: config.yaml, fold<k>/best.pt of random test_resnets, synthetic oof.csv.

    Returns the experiment YAML path (runs_dir inside tmp_path)."""
    cfg = ExperimentConfig(name=name, runs_dir=str(tmp_path / "runs"), seed=seed)
    cfg.data.root, cfg.data.image_size, cfg.data.cache = str(demo), 32, False
    cfg.model.name = "test_resnet"
    cfg.folds.n_splits = n_splits
    cfg.infer.tta, cfg.infer.batch_size = 2, 16
    cfg.train.select = "best"               # the fake run holds best.pt
    save_config(cfg, cfg.run_dir / "config.yaml")
    save_config(cfg, tmp_path / f"{name}.yaml")
    for k in range(n_splits):
        torch.manual_seed(seed * 10 + k)
        model = build_model(cfg.model)
        (cfg.run_dir / f"fold{k}").mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "epoch": 0, "score": 0.0}, cfg.run_dir / f"fold{k}" / "best.pt")
    train = read_labels(demo / "train.csv")
    rng = np.random.default_rng(seed)
    y = label_matrix(train)
    oof = pd.DataFrame(np.clip(0.5 * y + 0.5 * rng.random(y.shape), 0, 1), columns=P)
    oof.insert(0, "fold", (np.arange(len(train)) + fold_shift) % n_splits)
    oof.insert(0, "Id", train["Id"])
    oof.to_csv(cfg.run_dir / "oof.csv", index=False)
    return tmp_path / f"{name}.yaml"


def test_tta_views_are_the_eight_dihedral_views():
    x = torch.arange(4.0).view(1, 1, 2, 2).repeat(2, 1, 1, 1) + torch.tensor([0.0, 10.0]).view(2, 1, 1, 1)
    v = tta_views(x, 8)
    assert v.shape == (16, 1, 2, 2)
    assert torch.equal(v[:2], x) and torch.equal(v[2:4], dihedral(x, 1))
    assert len({tuple(v[2 * k, 0].flatten().tolist()) for k in range(8)}) == 8
    with pytest.raises(HPAError, match="infer.tta: must be 1-8 dihedral views, got 9"):
        tta_views(x, 9)


def test_predict_images_merges_views_in_one_pass(tiny_demo):
    cfg = ExperimentConfig()
    cfg.model.name = "test_resnet"
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    ids = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"][:5]
    images = [read_kaggle_rgby(tiny_demo / "test", i, 32) for i in ids]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with torch.no_grad():
        views = torch.stack([torch.sigmoid(model(dihedral(x, k))) for k in range(4)]).numpy()
    mean = predict_images(model, images, tta=4, merge="mean", batch_size=2)
    np.testing.assert_allclose(mean, views.mean(0), atol=1e-5)
    np.testing.assert_allclose(predict_images(model, images, tta=4, merge="max", batch_size=16),
                               views.max(0), atol=1e-5)


def test_infer_end_to_end(tmp_path, tiny_demo, capsys):
    cfg_path = make_run(tmp_path, tiny_demo)
    assert run_command("thresholds", ["--config", str(cfg_path)]) == 0
    out = tmp_path / "sub" / "r.csv"
    assert run_command("infer", ["--config", str(cfg_path), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    run = tmp_path / "runs" / "r"
    probs = pd.read_csv(run / "test_probs.csv")
    sample_ids = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"].tolist()
    assert probs.columns.tolist() == ["Id"] + P and probs["Id"].tolist() == sample_ids
    # fold average of each checkpoint's 2-view TTA, recomputed by hand
    cfg = load_config(run / "config.yaml")
    images = [read_kaggle_rgby(tiny_demo / "test", i, 32) for i in sample_ids]
    folds = [predict_images(load_fold_model(cfg, run / f"fold{k}" / "best.pt"), images, 2) for k in range(2)]
    np.testing.assert_allclose(probs[P].to_numpy(), np.mean(folds, 0), atol=1e-5)
    thr = load_thresholds(run / "thresholds.json")["thresholds"]
    expected = apply_thresholds(probs[P].to_numpy(), thr, ensure_one=True)
    sub = pd.read_csv(out, keep_default_na=False)
    assert sub["Id"].tolist() == sample_ids
    assert sub["Predicted"].tolist() == [" ".join(map(str, np.flatnonzero(r))) for r in expected]
    assert validate_submission(out, tiny_demo / "sample_submission.csv")["empty"] == 0
    chosen = load_thresholds(run / "thresholds.json")
    assert f"infer r: 2 fold(s) x 2 TTA views, thresholds '{chosen['strategy']}' (auto: " in stdout
    record = json.loads(out.with_suffix(".json").read_text())     # the submission's record
    assert record["thresholds"]["strategy"] == chosen["strategy"]
    assert record["thresholds"]["requested"] == "auto" and record["thresholds"]["file"] == str(run / "thresholds.json")
    assert record["thresholds"]["chosen_from"] == f"thresholds_{chosen['strategy']}.json"
    assert record["thresholds"]["nested_f1_mean"] == chosen["nested_f1_mean"]
    assert record["folds"] == [0, 1] and record["tta"] == 2 and record["rows"] == 24
    assert out.with_suffix(".png").stat().st_size > 1000


def test_infer_without_thresholds_warns_and_uses_default(tmp_path, tiny_demo, capsys):
    cfg_path = make_run(tmp_path, tiny_demo)
    out = tmp_path / "s.csv"
    args = ["--config", str(cfg_path), "--out", str(out), "--tta", "1", "--folds", "0", "--no-ensure-one",
            "--set", "thresholds.default=0.999"]
    assert run_command("infer", args) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'runs' / 'r' / 'thresholds.json'} not found; using thresholds.default=0.999" in err
    assert set(pd.read_csv(out, keep_default_na=False)["Predicted"]) == {""}   # nothing reaches 0.999


@pytest.mark.parametrize("breakage", ["checkpoint", "image", "thresholds", "range", "pickled"])
def test_bad_input_is_one_line_before_work_and_leaves_no_submission(tmp_path, tiny_demo, capsys, breakage):
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cfg_path = make_run(tmp_path, demo)
    run = tmp_path / "runs" / "r"
    first = pd.read_csv(demo / "sample_submission.csv")["Id"].iat[3]
    expected = {"checkpoint": f"{run / 'fold1' / 'best.pt'}: missing checkpoint",
                "image": f"{demo / 'test' / f'{first}_green.png'}: missing channel file",
                "thresholds": f"{run / 'thresholds.json'}: expected 28 thresholds, found 27",
                "range": f"{run / 'thresholds.json'}: threshold of class 27 is 1.5; thresholds must be numbers "
                         "in [0, 1]",
                "pickled": f"{run / 'fold1' / 'best.pt'}: not a plain checkpoint: it carries pickled code "
                           "(posix.getcwd); it will not be loaded"}[breakage]
    if breakage == "checkpoint":
        (run / "fold1" / "best.pt").unlink()
    elif breakage == "image":
        (demo / "test" / f"{first}_green.png").unlink()
    elif breakage == "pickled":         # a function reference: code torch would run with weights_only=False
        torch.save({"model": {}, "hook": os.getcwd}, run / "fold1" / "best.pt")
    else:
        write_json(run / "thresholds.json", {"strategy": "per_class",
                                             "thresholds": [0.5] * 27 + ([1.5] if breakage == "range" else [])})
    out = tmp_path / "sub" / "r.csv"
    assert run_command("infer", ["--config", str(cfg_path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not out.exists() and not (run / "test_probs.csv").exists()


def test_header_only_sample_submission_is_refused_and_keeps_test_probs(tmp_path, tiny_demo, capsys):
    """Reliability: a sample submission with no Ids used to give a 0-row 'valid' submission and an empty
    test_probs.csv over the run's real one."""
    demo = tmp_path / "demo"
    shutil.copytree(tiny_demo, demo)
    cfg_path = make_run(tmp_path, demo)
    rd = RunDir(tmp_path / "runs" / "r")
    args = ["--config", str(cfg_path), "--tta", "1", "--folds", "0"]
    assert run_command("infer", args + ["--out", str(tmp_path / "a.csv")]) == 0
    before = rd.test_probs.read_bytes()
    (demo / "sample_submission.csv").write_text("Id,Predicted\n")
    capsys.readouterr()
    assert run_command("infer", args + ["--out", str(tmp_path / "b.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {demo / 'sample_submission.csv'}: ") and err.count("\n") == 1
    assert rd.test_probs.read_bytes() == before and not (tmp_path / "b.csv").exists()


def test_failed_inference_changes_no_output(tmp_path, tiny_demo):
    """Reliability: outputs of one command appear together or not at all: a submission that cannot be
    written (its folder is a file here; read-only or full in real life) leaves test_probs.csv as it was."""
    cfg_path = make_run(tmp_path, tiny_demo)
    rd = RunDir(tmp_path / "runs" / "r")
    assert run_command("infer", ["--config", str(cfg_path), "--tta", "1", "--out", str(tmp_path / "a.csv")]) == 0
    before = rd.test_probs.read_bytes()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the submission folder should be")
    try:
        rc = run_command("infer", ["--config", str(cfg_path), "--tta", "2", "--out", str(blocker / "b.csv")])
    except OSError:         # a one-line error once write failures are reported as such
        rc = None
    assert rc != 0
    assert rd.test_probs.read_bytes() == before
    assert sorted(p.name for p in rd.path.iterdir()) == [".lock", "config.yaml", "fold0", "fold1", "oof.csv",
                                                         "test_probs.csv"]     # no temporary left


def test_infer_applies_the_thresholds_of_a_named_strategy(tmp_path, tiny_demo, capsys):
    cfg_path = make_run(tmp_path, tiny_demo)
    rd = RunDir(tmp_path / "runs" / "r")
    args = ["--config", str(cfg_path), "--tta", "1", "--folds", "0", "--out", str(tmp_path / "s.csv"),
            "--thresholds", "global"]
    assert run_command("infer", args) == 2
    assert capsys.readouterr().err == (f"error: {rd.thresholds('global')}: not found (run 'hpa thresholds' "
                                       "first: it writes every strategy's file)\n")
    assert run_command("thresholds", ["--config", str(cfg_path), "--strategy", "per_class"]) == 0
    capsys.readouterr()
    assert run_command("infer", args) == 0                  # every strategy's file is written
    assert "thresholds 'global' (global (asked for by name)" in capsys.readouterr().out
    assert rd.read_thresholds()["strategy"] == "per_class"
    assert json.loads((tmp_path / "s.json").read_text())["thresholds"]["chosen_from"] == "thresholds_global.json"


def test_run_folds_follow_the_oof(tmp_path):
    assert RunDir(tmp_path).oof_folds(3) == [0, 1, 2]                # no oof.csv: all folds
    (tmp_path / "oof.csv").write_text("Id,fold,p0\na,2,0.1\nb,0,0.2\nc,2,0.3\n")
    assert RunDir(tmp_path).oof_folds(5) == [0, 2]                   # only the folds that finished


def test_proportion_thresholds_are_refit_on_test():
    rng = np.random.default_rng(0)
    probs = rng.random((200, NUM_CLASSES))
    rates = [0.25] * NUM_CLASSES
    thr = thresholds_for_test({"strategy": "proportion", "thresholds": [0.9] * NUM_CLASSES,
                               "params": {"proportions": rates}}, probs)
    assert apply_thresholds(probs, thr).sum(0).tolist() == [50] * NUM_CLASSES
    fixed = thresholds_for_test({"strategy": "per_class", "thresholds": [0.9] * NUM_CLASSES}, probs)
    assert fixed.tolist() == [0.9] * NUM_CLASSES


def test_blend_mean_and_rank():
    a = np.array([[0.1, 0.9], [0.3, 0.5], [0.2, 0.7]])
    b = np.array([[0.5, 0.1], [0.9, 0.3], [0.7, 0.2]])
    np.testing.assert_allclose(blend([a, b], [3, 1], "mean"), 0.75 * a + 0.25 * b)
    # ranks per column: a col0 -> 1/3, 3/3, 2/3 ; b col0 -> same order
    np.testing.assert_allclose(blend([a, b], [1, 1], "rank")[:, 0], [1 / 3, 1.0, 2 / 3])
    with pytest.raises(HPAError, match=r"unknown blend 'no_such_blend' \(valid: .*\bmean\b.*\)$"):
        blend([a], [1], "no_such_blend")


def _fake_test_probs(tmp_path, name, demo, seed):
    ids = pd.read_csv(demo / "sample_submission.csv")["Id"]
    df = pd.DataFrame(np.random.default_rng(seed).random((len(ids), NUM_CLASSES)), columns=P)
    df.insert(0, "Id", ids)
    df.to_csv(tmp_path / "runs" / name / "test_probs.csv", index=False)
    return df


def _ensemble_yaml(tmp_path, blend_name="mean"):
    path = tmp_path / "ensemble_t.yaml"
    path.write_text(f"runs_dir: {tmp_path / 'runs'}\nblend: {blend_name}\n"
                    f"runs:\n  - {{dir: {tmp_path / 'runs' / 'a'}, weight: 3.0}}\n"
                    f"  - {{dir: {tmp_path / 'runs' / 'b'}, weight: 1.0}}\n"
                    f"thresholds: {{strategy: per_class, min_positives: 2}}\nout: {tmp_path / 'ens.csv'}\n")
    return path


def test_ensemble_blends_retunes_and_writes_one_submission(tmp_path, tiny_demo, capsys):
    make_run(tmp_path, tiny_demo, "a", seed=1)
    make_run(tmp_path, tiny_demo, "b", seed=2)
    ta, tb = (_fake_test_probs(tmp_path, n, tiny_demo, s) for n, s in (("a", 1), ("b", 2)))
    assert run_command("infer", ["--ensemble", str(_ensemble_yaml(tmp_path))]) == 0
    out_dir = tmp_path / "runs" / "ensemble_t"
    test = pd.read_csv(out_dir / "test_probs.csv")
    np.testing.assert_allclose(test[P].to_numpy(), 0.75 * ta[P].to_numpy() + 0.25 * tb[P].to_numpy())
    oof = pd.read_csv(out_dir / "oof.csv")
    oa, ob = (pd.read_csv(tmp_path / "runs" / n / "oof.csv") for n in "ab")
    np.testing.assert_allclose(oof[P].to_numpy(), 0.75 * oa[P].to_numpy() + 0.25 * ob[P].to_numpy())
    y = label_matrix(read_labels(tiny_demo / "train.csv"))
    thr = load_thresholds(out_dir / "thresholds.json")["thresholds"]
    np.testing.assert_allclose(thr, ThresholdTuner("per_class", {"min_positives": 2}).fit(oof[P].to_numpy(), y).thresholds_)
    assert validate_submission(tmp_path / "ens.csv", tiny_demo / "sample_submission.csv")["rows"] == 24
    assert "ensemble of 2 runs (mean)" in capsys.readouterr().out


def test_ensemble_refuses_different_folds_and_missing_files(tmp_path, tiny_demo, capsys):
    make_run(tmp_path, tiny_demo, "a", seed=1)
    make_run(tmp_path, tiny_demo, "b", seed=2, fold_shift=1)
    _fake_test_probs(tmp_path, "a", tiny_demo, 1)
    yaml_path = _ensemble_yaml(tmp_path, "rank")
    assert run_command("infer", ["--ensemble", str(yaml_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'runs' / 'b'}: missing test_probs.csv (ensemble "
                                       "members need config.yaml, oof.csv, test_probs.csv)\n")
    _fake_test_probs(tmp_path, "b", tiny_demo, 2)
    assert run_command("infer", ["--ensemble", str(yaml_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'runs' / 'b' / 'oof.csv'}: Id/fold assignment differs "
                                       f"from {tmp_path / 'runs' / 'a'}/oof.csv (ensemble members must share folds)\n")
    assert not (tmp_path / "ens.csv").exists() and not (tmp_path / "runs" / "ensemble_t").exists()


def test_shipped_ensemble_config_loads():
    cfg = load_ensemble_config(ROOT / "configs" / "ensemble_demo.yaml")
    assert cfg.name == "ensemble_demo" and cfg.blend in ("mean", "rank") and len(cfg.runs) >= 1
