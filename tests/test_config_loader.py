"""Typed config: defaults, YAML merge, --set overrides, error messages, save/load round trip."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    assert (cfg.data.image_size, cfg.folds.n_splits, cfg.folds.seed, cfg.model.name) == (64, 5, 42, "resnet10t")
    assert cfg.loss == [LossTerm("bce", 1.0, {}), LossTerm("soft_f1", 1.0, {})] and cfg.train.epochs == 18
    assert cfg.optim.lr == 1e-3 and cfg.name == ""
    with pytest.raises(HPAError, match="config key 'name' is empty"):   # it would write into runs_dir itself
        cfg.run_dir


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
                          "sched.params.milestones=[2,4]", "data.root=/x/y", "model.kwargs.depth=3"])
    assert cfg.train.epochs == 7
    assert cfg.model.mean == [0.1, 0.2, 0.3, 0.4]
    assert cfg.train.augment[0].name == "HorizontalFlip" and cfg.train.augment[0].params == {"p": 0.5}
    assert cfg.sched.params == {"milestones": [2, 4]} and cfg.data.root == "/x/y" and cfg.model.kwargs == {"depth": 3}


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
    assert str(e.value).startswith(f"{p}: unknown config key 'data.imagesize' (did you mean 'data.image_size'? valid: cache, cache_dir,")
    # issue 17 item 15: a key given by --set is blamed on the --set item, not on the file
    with pytest.raises(HPAError, match=r"^--set train.epoch=3: unknown config key 'train.epoch' \(did you mean 'train.epochs'\? valid: "):
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


# ----------------------------------------------------------------------------- base: inheritance
def test_base_chain_and_list_merge_deeply_lists_replace(tmp_path):
    _write(tmp_path, "name: root_name\nseed: 1\ndata: {root: r, image_size: 32}\n"
                     "loss: [{name: bce}, {name: soft_f1}]\ntrain: {epochs: 3, augment: [{name: hflip}]}\n",
           "root.yaml")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "base: ../root.yaml\ndata: {image_size: 48}\nloss: [{name: focal}]\n", "mid.yaml")
    _write(tmp_path / "sub", "optim: {lr: 0.01}\ntrain: {batch_size: 4}\n", "extra.yaml")
    child = _write(tmp_path / "sub", "base: [mid.yaml, extra.yaml]\ntrain: {epochs: 5}\n", "child.yaml")
    cfg = load_config(child)
    assert (cfg.seed, cfg.data.root, cfg.data.image_size) == (1, "r", 48)       # deep merge, chain
    assert cfg.loss == [LossTerm("focal")]                                        # lists replace
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (5, 4, 0.01)  # list of bases, in order
    assert [a.name for a in cfg.train.augment] == ["hflip"]
    assert cfg.name == "child"                                    # name is never inherited
    saved = yaml.safe_load(save_config(cfg, tmp_path / "config.yaml").read_text())
    assert "base" not in saved and load_config(tmp_path / "config.yaml") == cfg   # fully resolved


def test_base_cycle_missing_and_bad_value_are_one_line(tmp_path):
    a = _write(tmp_path, "base: b.yaml\n", "a.yaml")
    _write(tmp_path, "base: [a.yaml]\nseed: 1\n", "b.yaml")
    with pytest.raises(HPAError, match=rf"^{a}: 'base' files form a cycle \({a} -> {tmp_path}/b.yaml -> "
                                       rf"{tmp_path}/a.yaml\)$"):
        load_config(a)
    with pytest.raises(HPAError, match=r"^.*m.yaml: base file 'nope.yaml' not found \(.*nope.yaml\)$"):
        load_config(_write(tmp_path, "base: nope.yaml\n", "m.yaml"))
    with pytest.raises(HPAError, match=r"^.*n.yaml: 'base' must be a file name or a list of file names, got 3$"):
        load_config(_write(tmp_path, "base: 3\n", "n.yaml"))


def test_errors_name_the_file_or_set_item_that_gave_the_key(tmp_path):
    _write(tmp_path, "train: {epochz: 3}\n", "base.yaml")
    child = _write(tmp_path, "base: base.yaml\nseed: 1\n", "child.yaml")
    with pytest.raises(HPAError, match=rf"^{tmp_path}/base.yaml: unknown config key 'train.epochz'"):
        load_config(child)
    _write(tmp_path, "train: {epochs: 3}\n", "base.yaml")
    with pytest.raises(HPAError, match=r"^--set train.epochs=x: config key 'train.epochs' must be int, got 'x'$"):
        load_config(child, ["train.epochs=x"])
    with pytest.raises(HPAError, match=r"^--set loss=\[\{wieght: 2\}\]: unknown config key 'loss\[0\].wieght'"):
        load_config(child, ["loss=[{wieght: 2}]"])


def test_a_renamed_part_drops_the_params_of_its_old_name(tmp_path):
    _write(tmp_path, "sched: {name: step, params: {step_size: 15}}\nmodel: {head: arcface, head_params: {s: 8}}\n",
           "base.yaml")
    cfg = load_config(_write(tmp_path, "base: base.yaml\nsched: {name: multistep, params: {milestones: [1], "
                                       "values: [0.1]}}\nmodel: {head_params: {m: 0.2}}\n", "child.yaml"))
    assert cfg.sched.params == {"milestones": [1], "values": [0.1]}       # step's step_size dropped
    assert cfg.model.head_params == {"s": 8, "m": 0.2}                    # same head: params merge
    assert load_config(tmp_path / "base.yaml", ["sched.name=cosine"]).sched.params == {}   # --set alike
    assert load_config(tmp_path / "base.yaml", ["sched.params.min_lr=0.1", "sched.name=cosine"]).sched.params \
        == {"min_lr": 0.1}                                                # in any order of the items


def test_base_works_for_every_schema(tmp_path):
    from hpa.ablation.grid import AblationConfig
    from hpa.inference.ensemble import EnsembleConfig
    from hpa.synthetic.config import SynthConfig
    _write(tmp_path, "generator: morph\ntrain: {steps: 7, lr: 0.1}\n", "g0.yaml")
    g = load_config(_write(tmp_path, "base: g0.yaml\ntrain: {steps: 9}\n", "g1.yaml"), schema=SynthConfig)
    assert (g.generator, g.train.steps, g.train.lr, g.name) == ("morph", 9, 0.1, "g1")
    _write(tmp_path, "runs: [{dir: a}]\nblend: rank\n", "e0.yaml")
    e = load_config(_write(tmp_path, "base: e0.yaml\nthresholds: {default: 0.3}\n", "e1.yaml"), schema=EnsembleConfig)
    assert (e.runs[0].dir, e.blend, e.thresholds.default) == ("a", "rank", 0.3)
    _write(tmp_path, "strategies: [none, mixup]\nseeds: [3]\n", "a0.yaml")
    a = load_config(_write(tmp_path, "base: a0.yaml\nseeds: [4]\n", "a1.yaml"), schema=AblationConfig)
    assert (a.strategies, a.seeds) == (["none", "mixup"], [4])


# ----------------------------------------------------------------------------- checked values
@pytest.mark.parametrize("item,message", [
    ("train.epochs=0", "config key 'train.epochs' must be >= 1, got 0"),
    ("train.epochs=-1", "config key 'train.epochs' must be >= 1, got -1"),
    ("train.batch_size=0", "config key 'train.batch_size' must be >= 1, got 0"),
    ("train.accum_steps=0", "config key 'train.accum_steps' must be >= 1, got 0"),
    ("optim.lr=nan", "config key 'optim.lr' must be a finite number, got 'nan'"),
    ("optim.lr=.inf", "config key 'optim.lr' must be a finite number, got inf"),
    ("optim.lr=0", "config key 'optim.lr' must be > 0, got 0.0"),
    ("optim.weight_decay=-0.1", "config key 'optim.weight_decay' must be >= 0, got -0.1"),
    ("synthetic.p=1.5", "config key 'synthetic.p' must be in [0, 1], got 1.5"),
    ("thresholds.default=-0.2", "config key 'thresholds.default' must be in [0, 1], got -0.2"),
    ("data.fraction=0", "config key 'data.fraction' must be in (0, 1], got 0.0"),
    ("data.image_size=0", "config key 'data.image_size' must be >= 8, got 0"),
    ("folds.n_splits=1", "config key 'folds.n_splits' must be >= 2, got 1"),
    ("model.std=[0.1, 0.1, 0, 0.1]", "config key 'model.std[2]' must be > 0, got 0.0"),
    ("model.mean=[0.1]", "config key 'model.mean' needs 4 values (model.in_chans), got [0.1]"),
    ("infer.tta=9", "config key 'infer.tta' must be in [1, 8], got 9"),
    ("train.amp=fp8", "config key 'train.amp' must be one of no, bf16, fp16, got 'fp8'"),
    ("train.crop_from=32", "config key 'train.crop_from' must be 0 or >= data.image_size (64), got 32"),
])
def test_values_outside_their_range_are_refused_naming_the_set_item(item, message):
    with pytest.raises(HPAError) as e:
        load_config(None, [item])
    assert str(e.value) == f"--set {item}: {message}"


def test_ranges_hold_in_every_schema_and_in_files(tmp_path):
    from hpa.ablation.grid import AblationConfig
    from hpa.inference.ensemble import EnsembleConfig
    from hpa.synthetic.config import SynthConfig
    with pytest.raises(HPAError, match=r"^--set train.steps=0: config key 'train.steps' must be >= 1, got 0$"):
        load_config(None, ["train.steps=0"], schema=SynthConfig)
    with pytest.raises(HPAError, match=r"config key 'generate.strength' must be in \(0, 1\], got 1.5$"):
        load_config(None, ["generate.strength=1.5"], schema=SynthConfig)
    with pytest.raises(HPAError, match=r"config key 'fractions\[1\]' must be in \(0, 1\], got 2.0$"):
        load_config(None, ["fractions=[0.5, 2]"], schema=AblationConfig)
    with pytest.raises(HPAError, match=r"config key 'runs\[0\].weight' must be > 0, got -1.0$"):
        load_config(None, ["runs=[{dir: a, weight: -1}]"], schema=EnsembleConfig)
    p = _write(tmp_path, "train:\n  epochs: 0\n")
    with pytest.raises(HPAError, match=rf"^{p}: config key 'train.epochs' must be >= 1, got 0$"):
        load_config(p)
    for schema in (ExperimentConfig, SynthConfig, AblationConfig, EnsembleConfig):
        assert from_dict(schema, {}) == schema()                         # the defaults pass their ranges


def test_bad_set_values_are_one_line_naming_the_item():
    with pytest.raises(HPAError, match=r"^--set train.epochs=\[1: invalid YAML \(expected ',' or '\]', but got "
                                       r"'<stream end>'\) at line 1, column 3$"):
        load_config(None, ["train.epochs=[1"])
    with pytest.raises(HPAError, match=r"^--set name=!!python/object/apply:os.system \[\"true\"\]: invalid YAML "
                                       r"\(could not determine a constructor for the tag "
                                       r"'tag:yaml.org,2002:python/object/apply:os.system'\) at line 1, column 1$"):
        load_config(None, ['name=!!python/object/apply:os.system ["true"]'])


def test_a_tab_in_yaml_names_its_line(tmp_path):
    p = _write(tmp_path, "train:\n  epochs: 3\n\tbatch_size: 4\n", "tab.yaml")
    with pytest.raises(HPAError, match=rf"^{p}: invalid YAML \(a tab character; YAML indents with spaces\) "
                                       r"at line 3, column 1$"):
        load_config(p)


def test_an_empty_file_is_refused(tmp_path):
    p = _write(tmp_path, "# nothing but a comment\n", "empty.yaml")
    with pytest.raises(HPAError, match=rf"^{p}: empty config file \(no settings\)$"):
        load_config(p)


def test_a_null_section_is_refused_with_or_without_set(tmp_path):
    p = _write(tmp_path, "seed: 1\ntrain: null\n", "null.yaml")
    for sets in ([], ["train.epochs=3"]):
        with pytest.raises(HPAError, match=rf"^{p}: config key 'train' is an empty \(null\) section: give it keys "
                                           r"or remove it$"):
            load_config(p, sets)


def test_a_duplicated_key_is_refused_naming_both_lines(tmp_path):
    p = _write(tmp_path, "seed: 1\ntrain:\n  epochs: 3\n  batch_size: 2\n  epochs: 4\n", "dup.yaml")
    with pytest.raises(HPAError, match=rf"^{p}: invalid YAML \(duplicate key 'epochs', first at line 3\) "
                                       r"at line 5, column 3$"):
        load_config(p)
    with pytest.raises(HPAError, match=r"duplicate key 'seed', first at line 1\) at line 2"):
        load_config(_write(tmp_path, "seed: 1\nseed: 2\n", "dup2.yaml"))
    # YAML merge keys may override what they merge in: that is not a duplicate
    merged = load_config(_write(tmp_path, "a: &a {x: 1, y: 2}\nb: {<<: *a, y: 3}\n", "merge.yaml"), schema=_Two)
    assert (merged.a, merged.b) == ({"x": 1, "y": 2}, {"x": 1, "y": 3})


@dataclass
class _Two:
    a: dict[str, int] = field(default_factory=dict)
    b: dict[str, int] = field(default_factory=dict)


def test_bad_config_through_the_cli_is_one_line_and_writes_nothing(tmp_path, capsys):
    from hpa.cli import run_command
    p = _write(tmp_path, f"runs_dir: {tmp_path}/runs\ndata: {{root: {tmp_path}/none}}\n")
    assert run_command("train", ["--config", str(p), "--set", "train.epochs=0"]) == 2
    assert capsys.readouterr().err == ("error: --set train.epochs=0: config key 'train.epochs' must be >= 1, "
                                       "got 0\n")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["exp.yaml"]


def test_a_moved_key_names_its_new_place():
    with pytest.raises(HPAError, match=r"^--set model.arcface_s=20: unknown config key 'model.arcface_s' "
                                       r"\(now 'model.head_params.s'\)$"):
        load_config(None, ["model.arcface_s=20"])


def test_yaml_booleans_for_words():
    # YAML 1.1 reads `amp: no` as false; a field of word choices takes it as the word it was
    assert load_config(None, ["train.amp=no"]).train.amp == "no"
    with pytest.raises(HPAError, match=r"^--set data.root=off: config key 'data.root' must be str, got False "
                                       r"\(YAML reads yes/no/on/off as true/false: quote the word\)$"):
        load_config(None, ["data.root=off"])


def test_moved_keys_table_moves_values_drops_old_defaults_and_warns_once(monkeypatch):
    from hpa import config_moved
    from hpa.config_moved import Moved
    monkeypatch.setattr(config_moved, "MOVED", config_moved.MOVED + (
        Moved("train.old_power", "train.sampler_params.power", 1.0),
        Moved("train.gone", ""),
        Moved("data.both", ("data.a.x", "data.b.x"), schema=("ExperimentConfig", "EnsembleConfig"))))
    tree = {"train": {"old_power": 0.5, "gone": 3}, "optim": {"momentum": 0.9}, "data": {"both": 7}}
    with pytest.warns(UserWarning) as w:
        found = config_moved.upgrade(tree, "ExperimentConfig", "exp.yaml")
    assert found == ["optim.momentum", "train.old_power", "train.gone", "data.both"]
    assert tree == {"train": {"sampler_params": {"power": 0.5}}, "optim": {},      # momentum at its old default
                    "data": {"a": {"x": 7}, "b": {"x": 7}}}
    assert len(w) == 1 and str(w[0].message) == (
        "exp.yaml: keys of an older hpa read at their new places (optim.momentum -> optim.params.momentum, "
        "train.old_power -> train.sampler_params.power, train.gone -> (removed), data.both -> data.a.x + "
        "data.b.x; old defaults dropped)")
    assert config_moved.new_place("EnsembleConfig", "data.both") == "data.a.x, data.b.x"
    # an explicit new key wins over the old one
    tree = {"model": {"arcface_s": 20.0, "head_params": {"s": 40.0}}}
    with pytest.warns(UserWarning):
        config_moved.upgrade(tree, "ExperimentConfig", "x")
    assert tree == {"model": {"head_params": {"s": 40.0}}}


def test_every_moved_key_lands_on_a_key_its_schema_has():
    """The new place of every row is a field of its schema, or a key inside one of its params dicts."""
    import dataclasses

    from hpa.ablation.grid import AblationConfig
    from hpa.config_moved import MOVED
    from hpa.inference.ensemble import EnsembleConfig
    from hpa.synthetic.config import SynthConfig
    schemas = {s.__name__: s for s in (ExperimentConfig, SynthConfig, AblationConfig, EnsembleConfig)}
    for m in MOVED:
        for schema in (m.schema,) if isinstance(m.schema, str) else m.schema:
            for place in m.places:
                node = schemas[schema]()
                for part in place.split("."):
                    if isinstance(node, dict):
                        break               # inside a params dict: the part's schema checks it
                    assert part in {f.name for f in dataclasses.fields(node)}, (m, schema)
                    node = getattr(node, part)
