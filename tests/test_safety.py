"""Safety: no credential ever reaches a run folder, a submission or the console; checkpoints and YAML
are loaded with the safe loaders (a booby-trapped file runs nothing); Ids cannot name paths outside
their dataset folder."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.folds import make_folds, write_folds
from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.training.checkpoint import load_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src" / "hpa"
TOKEN = "KGAT_planted_secret_0123456789abcdef"


@pytest.mark.slow
def test_credentials_never_reach_outputs_or_console(tiny_demo, tmp_path, monkeypatch, capsys):
    """Train, tune thresholds and infer with a token in every place kaggle looks; grep every output."""
    monkeypatch.setenv("KAGGLE_KEY", TOKEN)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    monkeypatch.setenv("KAGGLE_USERNAME", "planted_user")
    kdir = tmp_path / "kaggle_cfg"
    kdir.mkdir()
    (kdir / "kaggle.json").write_text(json.dumps({"username": "planted_user", "key": TOKEN}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(kdir))
    folds = tmp_path / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 2, 0))
    cfg = {"name": "secret", "data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 2, "file": str(folds)}, "runs_dir": str(tmp_path / "runs"),
           "model": {"name": "test_resnet"}, "infer": {"tta": 1},
           "train": {"epochs": 1, "batch_size": 16, "num_workers": 0}}
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sub = tmp_path / "submissions" / "secret.csv"
    assert run_command("train", ["--config", str(path)]) == 0
    assert run_command("thresholds", ["--config", str(path)]) == 0
    assert run_command("infer", ["--config", str(path), "--out", str(sub)]) == 0
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    files = [p for d in (tmp_path / "runs", sub.parent) for p in d.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "oof.csv", "metrics.json", "thresholds.json", "test_probs.csv", "best.pt",
            "last.pt", "secret.csv"} <= names
    leaked = [str(p) for p in files if TOKEN.encode() in p.read_bytes() or b"planted_user" in p.read_bytes()]
    assert leaked == []


def _calls(tree: ast.AST, module: str, attr: str):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr
                and isinstance(node.func.value, ast.Name) and node.func.value.id == module):
            yield node


def test_every_loader_in_the_package_is_the_safe_one():
    """Static check of src/hpa: torch.load only with weights_only=True; no yaml.load, pickle or eval."""
    problems, n_torch = [], 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "torch", "load"):
            n_torch += 1
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                problems.append(f"{path}:{call.lineno}: torch.load without weights_only=True")
        for attr in ("load", "unsafe_load", "full_load", "load_all"):
            problems += [f"{path}:{c.lineno}: yaml.{attr}" for c in _calls(tree, "yaml", attr)]
        for attr in ("load", "loads"):
            problems += [f"{path}:{c.lineno}: pickle.{attr}" for c in _calls(tree, "pickle", attr)]
        problems += [f"{path}:{n.lineno}: eval/exec" for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name) and n.func.id in ("eval", "exec")]
    assert problems == [] and n_torch >= 2


class _Trap:
    """Unpickling this would create a file (a stand-in for running any command)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_booby_trapped_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "best.pt"
    torch.save({"model": {}, "payload": _Trap(str(marker))}, bad)
    with pytest.raises(HPAError) as e:
        load_checkpoint(bad)
    # never torch's advice to retry with weights_only=False
    assert str(e.value) == f"{bad}: not a plain checkpoint: it carries pickled code (getattr); it will not be loaded"
    assert not marker.exists()


def test_booby_trapped_yaml_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]\n")
    with pytest.raises(HPAError) as e:
        load_config(cfg)
    assert str(e.value).startswith(f"{cfg}: invalid YAML (could not determine a constructor for the tag")
    assert not marker.exists()


@pytest.mark.parametrize("bad_id", ["../x", "a/../../x", "/etc/passwd", ".hidden", "..", "a\\b", ""])
def test_ids_cannot_name_paths_outside_the_image_folder(tmp_path, bad_id):
    outside = tmp_path / "x_red.png"
    write_kaggle_rgby(tmp_path / "imgs", "ok", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(HPAError, match=r"^Id: Id '.*' is not a plain file-name stem$"):
        read_kaggle_rgby(tmp_path / "imgs", bad_id)
    with pytest.raises(HPAError, match="is not a plain file-name stem"):
        write_kaggle_rgby(tmp_path / "imgs", bad_id, np.zeros((4, 4, 4), np.uint8))
    assert not outside.exists() and sorted(os.listdir(tmp_path)) == ["imgs"]
    assert read_kaggle_rgby(tmp_path / "imgs", "ok").shape == (4, 4, 4)
