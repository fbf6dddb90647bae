"""The name table (hpa.config_names): every registry a config can name is in it, every row points at a
real key, and check_names refuses unknown names and params that do not fit the factory."""
from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from hpa.config import ExperimentConfig, load_config
from hpa.config_names import NAMES, check_names, registry, values_at
from hpa.errors import HPAError

SRC = Path(__file__).resolve().parents[1] / "src" / "hpa"


def _schemas() -> dict[str, type]:
    from hpa.ablation.grid import AblationConfig
    from hpa.inference.ensemble import EnsembleConfig
    from hpa.synthetic.config import SynthConfig
    return {s.__name__: s for s in (ExperimentConfig, SynthConfig, AblationConfig, EnsembleConfig)}


def _registries_in_source() -> set[str]:
    """``module:NAME`` of every ``NAME = Registry(...)`` / ``NAME: Registry = Registry(...)`` under src/hpa."""
    found = set()
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            value = getattr(node, "value", None)
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if (isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Registry"
                    and isinstance(target, ast.Name)):
                found.add(f"{module}:{target.id}")
    return found


def test_every_registry_is_listed_and_every_name_key_points_at_one():
    """Every ``Registry`` in the source is a kind of ``hpa list`` (hpa.catalog.KINDS), and every row of the
    name table points at one of them; no two registries report the same kind in errors."""
    from hpa.catalog import KINDS
    listed = {id(registry(spec)): spec for spec in KINDS.values()}
    assert {id(registry(spec)) for spec in _registries_in_source()} == set(listed)
    assert {id(registry(row.registry)) for rows in NAMES.values() for row in rows} <= set(listed)
    assert len({registry(spec).kind for spec in KINDS.values()}) == len(KINDS)


def _annotation(schema: type, key: str) -> typing.Any:
    """The annotation at ``key`` (``[]``: a list's items, ``{}``: a mapping's keys)."""
    tp: typing.Any = schema
    for part in key.split("."):
        tp = typing.get_type_hints(tp)[part.rstrip("[]{}")]
        if part.endswith(("[]", "{}")):
            tp = typing.get_args(tp)[0]
    return tp


def test_every_row_points_at_a_string_key_and_a_params_dict():
    schemas = _schemas()
    for schema_name, rows in NAMES.items():
        for row in rows:
            assert _annotation(schemas[schema_name], row.key) is str, (schema_name, row.key)
            if row.params == "{}":      # {name: params}: each key's value is that part's params dict
                mapping = _annotation(schemas[schema_name], row.key.rstrip("{}"))
                assert typing.get_origin(typing.get_args(mapping)[1]) is dict, row.key
            elif row.params:
                assert typing.get_origin(_annotation(schemas[schema_name], row.params)) is dict, row.params


def test_values_at_expands_lists_and_mapping_keys():
    tree = {"loss": [{"name": "bce"}, {"name": "focal"}], "m": {"a": [1], "b": [2]}, "x": {"y": "z"}}
    assert [(k, v) for k, v, _ in values_at(tree, "loss[].name")] == [("loss[0].name", "bce"), ("loss[1].name", "focal")]
    assert [(k, v) for k, v, _ in values_at(tree, "m{}")] == [("m.a", "a"), ("m.b", "b")]
    assert [(k, v) for k, v, _ in values_at(tree, "x.y")] == [("x.y", "z")]
    assert list(values_at(tree, "nope.y")) == []


@pytest.mark.parametrize("sets,message", [
    (["model.head=no_such_head"], "unknown head 'no_such_head' (valid: "),
    (["loss=[{name: bce}, {name: no_such_loss}]"], "unknown loss 'no_such_loss' (valid: "),
    (["optim.name=no_such_optimizer"], "unknown optimizer 'no_such_optimizer' (valid: "),
    (["sched.name=no_such_schedule"], "unknown scheduler 'no_such_schedule' (valid: "),
    (["train.sampler=no_such_sampler"], "unknown data sampler 'no_such_sampler' (valid: "),
    (["train.augment=[{name: hflip}, {name: no_such_augmentation}]"], "unknown augmentation 'no_such_augmentation' (valid: "),
    (["infer.tta_merge=no_such_merge"], "unknown TTA merge 'no_such_merge' (valid: "),
    (["thresholds.strategy=otsu"], "unknown threshold strategy 'otsu' (valid: "),
    (["synthetic.strategy=cutmix"], "unknown mixing strategy 'cutmix' (valid: "),
    (["model.head=arcface", "model.head_params={margin: 0.3}"],
     "model.head_params: arcface has no parameter 'margin' (valid: m, s)"),
    (["model.head_params={s: 8}"], "model.head_params: linear has no parameter 's' (valid: none)"),
    (["loss=[{name: bce}, {name: focal, params: {gama: 2}}]"],
     "loss[1].params: focal has no parameter 'gama' (valid: alpha, gamma)"),
    (["optim.params={momentum: 0.9}"], "optim.params: adamw has no parameter 'momentum' (valid: betas, eps)"),
    (["optim.params={lr: 0.1}"], "optim.params: adamw has no parameter 'lr' (valid: betas, eps)"),
    (["sched.name=step", "sched.params={step_size: 2, gamma: abc}"],
     "config key 'sched.params.gamma' must be float, got 'abc'"),
    (["train.sampler=oversample", "train.sampler_params={pow: 1}"],
     "train.sampler_params: oversample has no parameter 'pow' (valid: power)"),
    (["train.augment=[{name: hflip, params: {q: 1}}]"], "train.augment[0].params: hflip has no parameter 'q' (valid: p)"),
])
def test_check_names_refuses_unknown_names_and_params(sets, message):
    cfg = load_config(None, sets)
    with pytest.raises(HPAError) as e:
        check_names(cfg)
    assert str(e.value).startswith(message)
    if message.endswith("(valid: "):        # the registry's names, whatever is registered, in order
        row = next(r for rows in NAMES.values() for r in rows if r.key.split("[")[0] in sets[-1])
        valid = sorted([*registry(row.registry).names(), *row.extra])
        assert str(e.value) == f"{message}{', '.join(valid)})"


def test_every_shipped_config_passes_its_name_check():
    from test_shipped_configs import CONFIGS, schema_of, shipped
    for rel in shipped():
        check_names(load_config(CONFIGS / rel, schema=schema_of(rel)))
    with pytest.raises(HPAError, match=r"unknown mixing strategy 'cutmix'"):
        check_names(load_config(CONFIGS / "ablation_standin.yaml", ["strategy_manifests={cutmix: []}"],
                                schema=schema_of("ablation_standin.yaml")))


def test_params_reach_the_factories_converted():
    import torch

    from hpa.models import build_model
    from hpa.optim import build_optimizer, build_scheduler
    from hpa.samplers import DATA_SAMPLERS
    cfg = load_config(None, ["model.name=test_resnet", "model.head=arcface", "model.head_params={s: 8, m: 0.25}",
                             "optim.name=sgd", "optim.params={momentum: 0.5, nesterov: false}",
                             "sched.name=step", "sched.params={step_size: 1, gamma: 5e-1}"])
    model = build_model(cfg.model)
    assert (model.head.s, model.head.m) == (8.0, 0.25)
    opt = build_optimizer(model, cfg.optim)
    assert (opt.defaults["momentum"], opt.defaults["nesterov"]) == (0.5, False)
    sched = build_scheduler(opt, cfg.sched, epochs=3, steps_per_epoch=1)
    sched.step_batch()
    assert sched.get_last_lr()[0] == pytest.approx(cfg.optim.lr * 0.5)   # "5e-1" (a YAML string) as 0.5
    sampler = DATA_SAMPLERS.get("oversample")(torch.eye(3).numpy(), 0, power=2.0)
    assert len(list(sampler)) == 3


def test_threshold_strategy_params_are_checked_by_name():
    with pytest.raises(HPAError, match=r"thresholds.params.scaled: scaled has no parameter 'scal' "
                                       r"\(valid: min_positives, scale, shrink\)"):
        check_names(load_config(None, ["thresholds.params={scaled: {scal: 0.5}}"]))
    with pytest.raises(HPAError, match=r"unknown threshold strategy 'otsu'"):
        check_names(load_config(None, ["thresholds.candidates=[fixed, otsu]"]))
    check_names(load_config(None, ["thresholds.params={per_class: {shrink: 5}}"]))
