"""Pseudo-labelling (pseudo.from_run, hpa pseudo-label): the selection rule on exact numbers, and a tiny
second round whose pseudo-labelled test Ids are in every fold's training rows, never in validation or
the OOF, recorded in the run's pseudo_labels.csv and inputs.json."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.pseudo import PSEUDO_COLUMNS, read_pseudo, select_pseudo
from hpa.training import loop as loop_mod
from hpa.training import run

PROBS = [f"p{c}" for c in range(28)]


def _probs(rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(0.1, index=range(len(rows)), columns=PROBS)
    for r, (i, hot) in enumerate(rows.items()):
        for c, p in hot.items():
            df.loc[r, f"p{c}"] = p
    df.insert(0, "Id", list(rows))
    return df


def test_selection_rule_on_exact_numbers():
    probs = _probs({"a": {0: 0.9, 3: 0.7}, "b": {}, "c": {5: 0.55}, "d": {0: 0.95}})
    thr = np.full(28, 0.5)
    every = select_pseudo(probs, thr, source_run="runs/x")
    assert list(every.columns) == PSEUDO_COLUMNS
    assert every["Id"].tolist() == ["a", "c", "d"]             # b: no class over its threshold
    assert every["Target"].tolist() == ["0 3", "5", "0"]
    assert every["confidence"].tolist() == pytest.approx([0.7, 0.55, 0.95])   # weakest predicted class
    assert (every["source_run"] == "runs/x").all()
    assert select_pseudo(probs, thr, min_confidence=0.6)["Id"].tolist() == ["a", "d"]
    assert select_pseudo(probs, thr, min_confidence=0.6, max_fraction=0.25)["Id"].tolist() == ["d"]
    thr[3] = 0.8                                               # per-class thresholds decide the labels
    assert select_pseudo(probs, thr)["Target"].tolist() == ["0", "5", "0"]


@pytest.fixture(scope="module")
def rounds(tiny_demo, tmp_path_factory):
    """A first round's run folder (test_probs.csv + thresholds.json, made by hand) and a second-round config."""
    work = tmp_path_factory.mktemp("pseudo")
    first = work / "runs" / "first"
    first.mkdir(parents=True)
    test_ids = pd.read_csv(tiny_demo / "sample_submission.csv")["Id"].tolist()
    probs = _probs({i: ({} if k % 4 == 0 else {k % 28: 0.5 + 0.02 * k}) for k, i in enumerate(test_ids)})
    probs.to_csv(first / "test_probs.csv", index=False)
    (first / "thresholds.json").write_text(json.dumps({"strategy": "per_class", "thresholds": [0.5] * 28}))
    folds = work / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 3, 0))
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(work / "cache")},
           "folds": {"n_splits": 3, "file": str(folds)}, "runs_dir": str(work / "runs"),
           "model": {"name": "test_resnet"}, "optim": {"lr": 0.003},
           "train": {"epochs": 1, "batch_size": 16, "num_workers": 0, "threads": 1, "log_with": "none"},
           "pseudo": {"from_run": str(first), "min_confidence": 0.6, "max_fraction": 0.5}}
    path = work / "second.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return first, path, test_ids


def test_second_round_trains_on_pseudo_labels_never_validates_on_them(rounds, monkeypatch, tmp_path):
    first, path, test_ids = rounds
    cfg = load_config(path, ["name=second"])
    seen = {}
    init = loop_mod.FoldTrainer.__init__

    def spy(self, cfg, fold, data, acc, fold_dir):
        seen[fold] = (set(data.ids[data.train_idx]), set(data.ids[data.val_idx]),
                      {i: data.y[r] for r, i in enumerate(data.ids)})
        init(self, cfg, fold, data, acc, fold_dir)
    monkeypatch.setattr(loop_mod.FoldTrainer, "__init__", spy)
    run(cfg, [0, 1])

    csv = read_pseudo(cfg.run_dir / "pseudo_labels.csv")
    # k % 4 != 0 and 0.5 + 0.02 k >= 0.6 (k >= 5), then the 12 (0.5 x 24) most confident of those
    k_ok = [k for k in range(len(test_ids)) if k % 4 and 0.5 + 0.02 * k >= 0.6 - 1e-12]
    expected = sorted(k_ok, key=lambda k: -k)[:12]
    assert csv["Id"].tolist() == [test_ids[k] for k in sorted(expected)]
    assert csv["Target"].tolist() == [str(k % 28) for k in sorted(expected)]
    assert (csv["source_run"] == str(first)).all()
    pseudo = set(csv["Id"])
    for fold, (train, val, y) in seen.items():
        assert pseudo <= train and not pseudo & val, fold
        for i, t in zip(csv["Id"], csv["Target"]):
            assert np.flatnonzero(y[i]).tolist() == [int(t)]
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    assert not pseudo & set(oof["Id"])
    assert set(oof["Id"]) <= set(pd.read_csv(cfg.data.root + "/train.csv")["Id"])
    record = json.loads((cfg.run_dir / "inputs.json").read_text())["pseudo"]
    assert record["n_images"] == 12 and record["from_run"] == str(first)

    # the command writes the same table
    out = tmp_path / "preview.csv"
    assert run_command("pseudo-label", ["--run", str(first), "--out", str(out), "--min-confidence", "0.6",
                                        "--max-fraction", "0.5"]) == 0
    pd.testing.assert_frame_equal(read_pseudo(out), csv)

    # --resume keeps the saved pseudo labels; a fresh start over trained folds with other ones is refused
    (first / "thresholds.json").write_text(json.dumps({"strategy": "per_class", "thresholds": [0.7] * 28}))
    run(cfg, [0, 1], resume=True)
    with pytest.raises(HPAError, match=r"inputs.json: folds \[0, 1\] of this run were trained on other data "
                                       r"\(the pseudo labels .* differ"):
        run(cfg, [0])


def test_own_folder_and_missing_files_are_refused(rounds, tmp_path):
    first, path, _ = rounds
    cfg = load_config(path, ["name=first"])
    with pytest.raises(HPAError, match="pseudo.from_run: .* is this run's own folder"):
        run(cfg)
    with pytest.raises(HPAError, match=r"test_probs.csv: not found \(pseudo.from_run needs"):
        run(load_config(path, ["name=third", f"pseudo.from_run={tmp_path}"]))
