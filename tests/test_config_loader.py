"""Typed config: defaults, YAML merge, --set overrides, error messages, save/load round trip."""
from __future__ import annotations

import os

import pytest
import yaml

from hpa.config import (DataConfig, ExperimentConfig, LossTerm, apply_overrides, from_dict,
                        load_config, save_config, to_dict)
from hpa.errors import HPAError


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults():
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.data.image_size, cfg.folds.n_splits, cfg.folds.seed, cfg.model.name) == (64, 5, 42, "resnet18")
    assert cfg.loss == [LossTerm("bce", 1.0, {})]
    assert cfg.optim.lr == 1e-3 and cfg.name == "" and str(cfg.run_dir) == "runs"


def test_yaml_merges_over_defaults_and_name_from_stem(tmp_path):
    p = _write(tmp_path, "data:\n  image_size: 32\nloss:\n  - {name: focal, weight: 2, params: {gamma: 2}}\n",
               "my_exp.yaml")
    cfg = load_config(p)
    assert cfg.data.image_size == 32 and cfg.data.root == "input/demo"      # sibling keys keep defaults
    assert cfg.loss == [LossTerm("focal", 2.0, {"gamma": 2})]
    assert isinstance(cfg.loss[0].weight, float)
    assert cfg.name == "my_exp" and str(cfg.run_dir) == "runs/my_exp"
    assert load_config(_write(tmp_path, "name: other\n", "x.yaml")).name == "other"


def test_set_overrides_nested_and_lists(tmp_path):
    p = _write(tmp_path, "train:\n  epochs: 3\n")
    cfg = load_config(p, ["train.epochs=7", "model.mean=[0.1, 0.2, 0.3, 0.4]",
                          "train.augment=[{name: HorizontalFlip, params: {p: 0.5}}]",
                          "sched.milestones=[2,4]", "data.root=/x/y", "model.kwargs.depth=3"])
    assert cfg.train.epochs == 7
    assert cfg.model.mean == [0.1, 0.2, 0.3, 0.4]
    assert cfg.train.augment[0].name == "HorizontalFlip" and cfg.train.augment[0].params == {"p": 0.5}
    assert cfg.sched.milestones == [2, 4] and cfg.data.root == "/x/y" and cfg.model.kwargs == {"depth": 3}


def test_float_from_scientific_string(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 without a dot as a string
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    cfg = load_config(_write(tmp_path, "optim:\n  lr: 1e-3\n"), ["optim.weight_decay=5e-4"])
    assert cfg.optim.lr == 0.001 and cfg.optim.weight_decay == 0.0005
    assert load_config(None, ["optim.lr=2"]).optim.lr == 2.0


def test_unknown_key_names_the_dotted_key(tmp_path):
    p = _write(tmp_path, "data:\n  imagesize: 32\n")
    with pytest.raises(HPAError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p}: unknown config key 'data.imagesize' (valid: cache, cache_dir,")
    # issue 17 item 15: a key given by --set is blamed on the --set item, not on the file
    with pytest.raises(HPAError, match=r"^--set train.epoch=3: unknown config key 'train.epoch' \(valid: "):
        load_config(_write(tmp_path, "train:\n  epochs: 3\n", "ok.yaml"), ["train.epoch=3"])
    with pytest.raises(HPAError, match=r"unknown config key 'loss\[1\].wieght'"):
        load_config(None, ["loss=[{name: bce}, {wieght: 2}]"])


def test_wrong_types_name_the_key(tmp_path):
    p = _write(tmp_path, "train:\n  epochs: ten\n")
    with pytest.raises(HPAError, match=rf"^{p}: config key 'train.epochs' must be int, got 'ten'$"):
        load_config(p)
    with pytest.raises(HPAError, match=r"config key 'data.cache' must be bool, got 'yes please'"):
        load_config(None, ["data.cache=yes please"])
    with pytest.raises(HPAError, match=r"config key 'optim.lr' must be float, got True"):
        load_config(None, ["optim.lr=true"])
    with pytest.raises(HPAError, match=r"config key 'train.epochs' must be int, got 2.5"):
        load_config(None, ["train.epochs=2.5"])
    with pytest.raises(HPAError, match=r"config key 'model.mean\[1\]' must be float, got 'x'"):
        load_config(None, ["model.mean=[1, x]"])
    with pytest.raises(HPAError, match=r"config key 'data' must be DataConfig, got 3"):
        load_config(None, ["data=3"])


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(HPAError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(HPAError, match=r"bad.yaml: invalid YAML"):
        load_config(_write(tmp_path, "data: [1, 2\n", "bad.yaml"))
    with pytest.raises(HPAError, match=r"list.yaml: expected a mapping at the top level"):
        load_config(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(HPAError, match=r"^--set train.epochs: expected key=value$"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(HPAError, match=r"^--set seed.x: 'seed' is not a section$"):
        apply_overrides({"seed": 3}, ["seed.x=1"])


def test_save_load_round_trip(tmp_path):
    cfg = load_config(None, ["name=rt", "optim.lr=3e-4", "loss=[{name: focal, params: {gamma: 2.0}}]",
                             "train.augment=[{name: VerticalFlip}]", "model.kwargs={a: [1, 2]}"])
    path = save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["config.yaml"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask       # not mkstemp's private 0600
    back = load_config(path)
    assert back == cfg and to_dict(back) == to_dict(cfg)
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 3e-4


def test_from_dict_other_schema():
    d = from_dict(DataConfig, {"root": "r", "image_size": 16})
    assert (d.root, d.image_size, d.cache) == ("r", 16, True)
