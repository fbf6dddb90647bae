"""Optimisers and lr schedules: known lr sequences, plateau reductions, state round trips."""
import pytest
import torch

from hpa.config import OptimConfig, SchedConfig
from hpa.errors import HPAError
from hpa.optim import build_optimizer, build_scheduler


def _lrs(sched_cfg, epochs=5, steps=2, lr=1.0):
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=lr, weight_decay=0.0, params={"momentum": 0.0}))
    s = build_scheduler(opt, sched_cfg, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(round(s.get_last_lr()[0], 6))
        s.step_batch()
    return out, s, opt


def test_step_schedule():
    lrs, _, _ = _lrs(SchedConfig(name="step", params={"step_size": 2, "gamma": 0.1}))
    assert lrs == [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01]


def test_multistep_schedule():
    lrs, _, _ = _lrs(SchedConfig(name="multistep", params={"milestones": [0, 2, 4], "values": [0.3, 0.15, 0.03]}))
    assert lrs == [0.3, 0.3, 0.3, 0.3, 0.15, 0.15, 0.15, 0.15, 0.03, 0.03]
    with pytest.raises(HPAError, match="multistep needs ascending milestones"):
        _lrs(SchedConfig(name="multistep", params={"milestones": [2, 0], "values": [0.1, 0.2]}))


def test_cosine_with_linear_warmup():
    lrs, _, _ = _lrs(SchedConfig(name="cosine", warmup_epochs=1), epochs=3)
    assert lrs == [0.5, 1.0, 1.0, 0.853553, 0.5, 0.146447]


def test_plateau_on_macro_f1_and_state_round_trip():
    _, s, opt = _lrs(SchedConfig(name="plateau", params={"factor": 0.5, "patience": 1}), epochs=1, lr=0.1)
    for score in (0.5, 0.4, 0.4):
        s.step_epoch(score)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    s.step_batch()                                   # per-step updates keep the plateau cut
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    _, s2, _ = _lrs(SchedConfig(name="plateau", params={"factor": 0.5, "patience": 1}), epochs=1, lr=0.1)
    s2.load_state_dict(s.state_dict())
    assert s2.plateau.best == 0.5 and s2.iteration == s.iteration


def test_optimizers_and_unknown_names():
    m = torch.nn.Linear(2, 1)
    assert isinstance(build_optimizer(m, OptimConfig(name="adamw")), torch.optim.AdamW)
    sgd = build_optimizer(m, OptimConfig(name="sgd", params={"momentum": 0.9}))
    assert sgd.param_groups[0]["nesterov"] is True
    with pytest.raises(HPAError, match=r"unknown optimizer 'no_such_optimizer' \(valid: .*\badamw\b.*\)$"):
        build_optimizer(m, OptimConfig(name="no_such_optimizer"))
    with pytest.raises(HPAError, match=r"unknown scheduler 'no_such_schedule' \(valid: .*\bcosine\b.*\)$"):
        _lrs(SchedConfig(name="no_such_schedule"))


def test_no_decay_norm_bias_and_layer_decay_groups():
    from hpa.config import ModelConfig
    from hpa.models import build_model

    model = build_model(ModelConfig(name="test_resnet"))
    names = {id(p): n for n, p in model.named_parameters()}
    plain = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.01))
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 0.01
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.01, no_decay_norm_bias=True))
    decay = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay["backbone.conv1.0.weight"] == 0.01 and decay["head.fc.weight"] == 0.01
    assert decay["backbone.conv1.1.weight"] == 0.0 and decay["head.fc.bias"] == 0.0   # norm, bias
    assert len(decay) == len(names)
    # test_resnet: stem, layer1..4, head -> 6 layer groups; lr x 0.5 per group below the head
    ld = build_optimizer(model, OptimConfig(lr=0.1, layer_decay=0.5))
    lr = {names[id(p)]: g["lr"] for g in ld.param_groups for p in g["params"]}
    assert lr["head.fc.weight"] == pytest.approx(0.1)
    assert lr["backbone.layer4.0.conv1.weight"] == pytest.approx(0.05)
    assert lr["backbone.conv1.0.weight"] == pytest.approx(0.1 * 0.5 ** 5)
    assert {g["weight_decay"] for g in ld.param_groups} == {1e-4}        # 1-d params decay unless asked
    # schedules scale every group by the same factor (cosine: half-way = half of each group's lr)
    s = build_scheduler(ld, SchedConfig(name="cosine", params={"min_lr": 0.0}), 2, 1)
    s.step_batch()
    assert {round(g["lr"] / g["lr_scale"], 6) for g in ld.param_groups} == {0.05}
    with pytest.raises(HPAError, match=r"optim.layer_decay must be in \(0, 1\]"):
        build_optimizer(model, OptimConfig(layer_decay=1.5))
