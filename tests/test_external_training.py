"""Training with external (HPAv18) images: they train every fold but are never validated (or, with
``data.external_in: folds``, are spread over the folds by duplicate group), OOF stays Kaggle-only,
``data.external_fraction`` subsamples whole groups deterministically, a missing image is one error
(or skipped), and ``--resume`` continues the same run."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.dataset import load_split
from hpa.data.duplicates import read_groups
from hpa.data.folds import read_folds
from hpa.errors import HPAError
from hpa.demo.external import make_external_demo
from hpa.external.train_set import load_external, subsample_groups
from hpa.training.data import TrainingSet
from hpa.training import loop as loop_mod


@pytest.fixture(scope="module")
def ext_cfg(tiny_demo, tmp_path_factory):
    """The tiny demo (96 train images, 32 px) plus 20 demo HPAv18 JPEGs, duplicate-aware folds over
    both (3 folds), and a config training test_resnet 1 epoch with the external images."""
    work = tmp_path_factory.mktemp("exttrain")
    root = work / "demo"
    shutil.copytree(tiny_demo, root)
    make_external_demo(root, 20, seed=0)
    cfg = {
        "data": {"root": str(root), "image_size": 32, "cache_dir": str(work / "cache"),
                 "external_csv": str(root / "hpav18.csv"), "external_dir": str(root / "hpav18")},
        "folds": {"n_splits": 3, "file": str(work / "folds.csv"), "dedup": True},
        "runs_dir": str(work / "runs"),
        "model": {"name": "test_resnet"},
        "loss": [{"name": "bce"}],
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "threads": 1},
        "infer": {"tta": 1},
    }
    path = work / "ext.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_command("folds", ["--config", str(path)]) == 0
    return path


def _training_set(path, *sets):
    cfg = load_config(path, list(sets))
    labels, y, fold_of = load_split(cfg)
    return cfg, TrainingSet.load(cfg, labels, y, fold_of)


def _planted(cfg):
    return pd.read_csv(f"{cfg.data.root}/hpav18_planted.csv", keep_default_na=False)


def test_external_rows_train_every_fold_but_never_validate(ext_cfg):
    cfg, data = _training_set(ext_cfg)
    ext_ids = pd.read_csv(cfg.data.external_csv)["Id"].tolist()
    assert sorted(data.external.ids) == sorted(ext_ids) and data.external.n_skipped == 0
    folds = read_folds(cfg.folds.file)
    twins = _planted(cfg).query("kind == 'twin' and twin_source == 'train'")
    assert len(twins) == 2
    left_out = 0
    for k in range(3):
        f = data.fold_input(k)
        val_ids, train_ids = set(data.ids[f.val_idx]), set(data.ids[f.train_idx])
        assert val_ids == set(folds.index[folds == k]) and not val_ids & set(ext_ids)
        assert f.kaggle_val().all() and not train_ids & val_ids
        # every external image trains fold k, except a twin of one of fold k's validation images
        leaks = {r.Id for r in twins.itertuples() if folds[r.twin_id] == k}
        assert set(ext_ids) - train_ids == leaks
        left_out += len(leaks)
    assert left_out == 2                                    # each planted train twin, in its twin's fold
    # the training images and labels are the external JPEGs resized, rows [kaggle..., external...]
    n = len(folds)
    assert len(data.images) == n + 20 and data.images[n].shape == (32, 32, 4)
    first = pd.read_csv(cfg.data.external_csv).set_index("Id").loc[data.ids[n], "Target"]
    assert set(np.flatnonzero(data.y[n])) == {int(c) for c in str(first).split()}


def test_external_in_folds_keeps_duplicate_groups_in_one_fold(ext_cfg):
    cfg, data = _training_set(ext_cfg, "data.external_in=folds")
    ext = data.external
    assert set(ext.fold) <= {0, 1, 2} and len(set(ext.fold)) == 3       # spread over every fold
    groups = read_groups(cfg.folds.file.replace("folds.csv", "duplicates.csv"))
    folds = read_folds(cfg.folds.file)
    fold_of = {**folds.to_dict(), **dict(zip(ext.ids, ext.fold))}
    members = groups.groupby("group")["Id"].apply(list)
    linked = [m for m in members if len(m) > 1]
    assert len(linked) >= 3                     # 2 train twins + 1 external twin (+ test twins: not here)
    for m in linked:
        assert len({fold_of[i] for i in m if i in fold_of}) == 1, m
    for k in range(3):
        f = data.fold_input(k)
        val_ext = set(data.ids[f.val_idx][~f.kaggle_val()])
        assert val_ext == set(ext.ids[ext.fold == k])
        assert not val_ext & set(data.ids[f.train_idx])


def test_fraction_draws_whole_groups_deterministically(ext_cfg):
    group = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 7])
    a, b = subsample_groups(group, 0.5, 3), subsample_groups(group, 0.5, 3)
    assert a.tolist() == b.tolist() and 5 <= len(a) <= 8
    for g in np.unique(group):                  # a group is kept or dropped whole
        assert np.isin(np.flatnonzero(group == g), a).all() or not np.isin(np.flatnonzero(group == g), a).any()
    assert set(subsample_groups(group, 0.25, 3)) <= set(a)      # a smaller share is a subset
    assert len({tuple(subsample_groups(group, 0.5, s)) for s in range(6)}) > 1   # the seed matters
    cfg, half = _training_set(ext_cfg, "data.external_fraction=0.5")
    _, again = _training_set(ext_cfg, "data.external_fraction=0.5")
    assert 8 <= len(half.external) <= 12 and half.external.ids.tolist() == again.external.ids.tolist()


def test_missing_images_error_or_skip(ext_cfg, tmp_path, capsys):
    cfg = load_config(ext_cfg)
    folder = tmp_path / "hpav18"
    shutil.copytree(cfg.data.external_dir, folder)
    ids = pd.read_csv(cfg.data.external_csv)["Id"].tolist()
    gone = [ids[3], ids[7]]
    for i in gone:
        for f in list(folder.glob(f"*{i.split('_', 1)[1]}_*.jpg")):
            f.unlink()
    sets = ["--set", f"data.external_dir={folder}", "--set", "name=skip"]
    rc = run_command("train", ["--config", str(ext_cfg), *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"2 of 20 Ids have no images in {folder} (first: {gone[0]})" in err[0]
    assert run_command("train", ["--config", str(ext_cfg), *sets, "--skip-missing", "--folds", "0"]) == 0
    assert "external: 18 HPAv18 images (2 of 20 skipped: no images)" in capsys.readouterr().out
    # a Kaggle train.csv given as the external label file: one line naming it
    rc = run_command("train", ["--config", str(ext_cfg), "--set", f"data.external_csv={cfg.data.root}/train.csv"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{cfg.data.root}/train.csv: row 2" in err[0] and "HPAv18" in err[0]


def test_groups_file_is_required(ext_cfg, tmp_path):
    cfg = load_config(ext_cfg, [f"data.external_groups={tmp_path / 'none.csv'}"])
    labels, y, fold_of = load_split(cfg)
    with pytest.raises(HPAError, match="none.csv: duplicate groups file not found.*hpa folds"):
        load_external(cfg, fold_of, 32)


@pytest.mark.slow
def test_train_validate_oof_and_resume(ext_cfg, monkeypatch, capsys):
    seen = []
    original = loop_mod.FoldTrainer.__init__

    def record(self, cfg, fold, data, *a, **k):
        seen.append((fold, data.ids[data.train_idx], data.ids[data.val_idx], data.kaggle_val()))
        original(self, cfg, fold, data, *a, **k)
    monkeypatch.setattr(loop_mod.FoldTrainer, "__init__", record)

    cfg = load_config(ext_cfg, ["name=trainonly"])
    ext_ids = set(pd.read_csv(cfg.data.external_csv)["Id"])
    assert run_command("train", ["--config", str(ext_cfg), "--set", "name=trainonly"]) == 0
    assert "external: 20 HPAv18 images, in the training part of every fold" in capsys.readouterr().out
    assert [s[0] for s in seen] == [0, 1, 2]
    for _, tr, va, _ in seen:
        assert len(set(tr) & ext_ids) >= 19 and not set(va) & ext_ids
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    assert len(oof) == 96 and not set(oof["Id"]) & ext_ids
    inputs = json.loads((cfg.run_dir / "inputs.json").read_text())
    assert inputs["external"]["n_images"] == 20 and inputs["n_images"] == 96
    assert "val_f1_external" not in pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    # thresholds and prediction run on the Kaggle OOF / test images as before
    assert run_command("thresholds", ["--config", str(ext_cfg), "--set", "name=trainonly"]) == 0

    # --resume: finished folds are skipped; another external share is refused
    seen.clear()
    assert run_command("train", ["--config", str(ext_cfg), "--set", "name=trainonly", "--resume"]) == 0
    assert seen == [] and capsys.readouterr().out.count("already finished, skipped") == 3
    rc = run_command("train", ["--config", str(ext_cfg), "--set", "name=trainonly", "--resume",
                               "--set", "data.external_fraction=0.5"])
    assert rc == 2 and "data.external_fraction: 1.0 -> 0.5" in capsys.readouterr().err

    # external_in: folds: external rows validated, reported per source; OOF still Kaggle-only
    seen.clear()
    sets = ["--set", "name=infolds", "--set", "data.external_in=folds"]
    assert run_command("train", ["--config", str(ext_cfg), *sets, "--folds", "0", "1"]) == 0
    for _, tr, va, kag in seen:
        assert set(va[~kag]) <= ext_ids and len(va[~kag]) > 0 and set(va[kag]).isdisjoint(ext_ids)
    run_dir = load_config(ext_cfg, ["name=infolds"]).run_dir
    oof = pd.read_csv(run_dir / "oof.csv")
    assert not set(oof["Id"]) & ext_ids and len(oof) == sum(kag.sum() for *_, kag in seen)
    hist = pd.read_csv(run_dir / "fold0" / "history.csv")
    assert list(hist.columns)[-1] == "val_f1_external" and 0 <= hist["val_f1_external"].iat[0] <= 1
    summary = json.loads((run_dir / "fold0" / "summary.json").read_text())
    assert summary["external"]["val"] == int((~seen[0][3]).sum())
    assert summary["external"]["val_f1"] == pytest.approx(hist["val_f1_external"].iat[0])
    report = (run_dir / "report.md").read_text()
    assert "## External data" in report and "| val F1 kaggle | val F1 external |" in report


def test_synthetic_pools_treat_external_rows_by_their_role(ext_cfg):
    """A synthetic image made from an external image validated in fold k never trains fold k; one
    made from an external training image may (the ids FoldTrainer hands build_strategy)."""
    from types import SimpleNamespace

    from hpa.synthetic.mixing.pool import exclusion_reason

    _, data = _training_set(ext_cfg, "data.external_in=folds")
    f = data.fold_input(0)
    tr, va = set(data.ids[f.train_idx]), set(data.ids[f.val_idx])
    ext_val = data.ids[f.val_idx][~f.kaggle_val()][0]
    ext_train = next(i for i in data.external.ids if i in tr)
    row = lambda source: SimpleNamespace(trained_on=set(), source_id=source, filter_score=np.nan)  # noqa: E731
    assert exclusion_reason(row(ext_val), 0, tr, va, 0.0) == "source_in_validation"
    assert exclusion_reason(row(ext_train), 0, tr, va, 0.0) == ""


def test_external_pseudo_and_resize_schedule_share_one_row_order(ext_cfg):
    """Kaggle, external and pseudo-labelled rows together, at both sizes of a resize schedule: the same
    rows in the same order at each size, pseudo rows train every fold and are never validated."""
    cfg = load_config(ext_cfg, ["train.resize_schedule=[[0, 24], [1, 32]]", "train.epochs=2"])
    labels, y, fold_of = load_split(cfg)
    test_ids = pd.read_csv(f"{cfg.data.root}/sample_submission.csv")["Id"].head(5).tolist()
    pseudo = pd.DataFrame({"Id": test_ids, "Target": ["0", "1 2", "3", "0 25", "7"],
                           "source_run": "r1", "confidence": 0.9})
    data = TrainingSet.load(cfg, labels, y, fold_of, read_folds(cfg.folds.file), pseudo=pseudo)
    n, m = len(labels), len(data.external)
    assert list(data.source[:n]) == ["kaggle"] * n and list(data.source[n + m:]) == ["pseudo"] * 5
    assert list(data.ids[n + m:]) == test_ids and data.y[n + m + 1, [1, 2]].tolist() == [1, 1]
    assert sorted(data.by_size) == [24, 32] and data.images is data.by_size[24]
    for size in (24, 32):
        images = data.by_size[size]
        assert len(images) == n + m + 5 and images[n + m + 4].shape == (size, size, 4)
    pseudo_rows = set(range(n + m, n + m + 5))
    for k in range(3):
        f = data.fold_input(k)
        assert pseudo_rows <= set(f.train_idx) and not pseudo_rows & set(f.val_idx)
        assert f.at(32) is data.by_size[32]
