"""Contract tests over the registries: one test per kind builds and runs every registered entry, so a
new entry is checked without being named here (and adding one breaks no test). ``hpa list`` and the
README's generated table come from the same registries.

Threshold strategies, synthetic strategies and generators have their own contract tests
(``test_thresholds*.py``, ``test_mixing_strategies.py``, ``test_synth_protocol.py``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpa.catalog import KINDS, entries, kind_registry, markdown
from hpa.cli import run_command
from hpa.config import AugOp

ROOT = Path(__file__).resolve().parents[1]


def example(reg, name: str) -> dict:
    """The params an entry declares for building it in tests (``register(..., example={...})``), else {}."""
    return reg.info(name).get("example", {})


def _labels(n: int = 24, seed: int = 0) -> np.ndarray:
    y = (np.random.default_rng(seed).random((n, 28)) < 0.15).astype(np.uint8)
    y[np.arange(n), np.arange(n) % 28] = 1                  # every image has a label
    return y


@pytest.mark.parametrize("name", kind_registry("loss").names())
def test_every_loss_is_a_finite_scalar_lower_for_right_logits(name):
    from hpa.losses import LOSSES
    y = torch.from_numpy(_labels()).float()
    loss = LOSSES.build(name, example(LOSSES, name), "loss[0].params", class_freq=y.mean(0).numpy())
    logits = torch.randn(y.shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = loss(logits, y)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.isfinite(logits.grad).all()
    right, wrong = 6 * (2 * y - 1), -6 * (2 * y - 1)
    assert float(loss(right, y)) < float(loss(wrong, y))


@pytest.mark.parametrize("name", kind_registry("head").names())
def test_every_head_maps_features_to_28_logits(name):
    from hpa.models.heads import HEADS
    head = HEADS.build(name, example(HEADS, name), "model.head_params", in_features=8, num_classes=28)
    feats, y = torch.randn(4, 8), torch.from_numpy(_labels(4)).float()
    assert head(feats, y).shape == head(feats, None).shape == (4, 28)


@pytest.mark.parametrize("name", kind_registry("optimizer").names())
def test_every_optimizer_steps(name):
    from hpa.optim import OPTIMIZERS
    model = torch.nn.Linear(4, 2)
    before = model.weight.detach().clone()
    opt = OPTIMIZERS.build(name, example(OPTIMIZERS, name), "optim.params", params=model.parameters(),
                           lr=0.1, weight_decay=0.0)
    model(torch.ones(3, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


@pytest.mark.parametrize("name", kind_registry("schedule").names())
def test_every_schedule_gives_lrs_and_resumes(name):
    from hpa.optim import SCHEDULES
    def make():
        opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.01)
        return SCHEDULES.build(name, example(SCHEDULES, name), "sched.params", optimizer=opt, epochs=3,
                               steps_per_epoch=4, warmup_epochs=0.5)
    sched = make()
    lrs = []
    for _ in range(12):
        sched.step_batch()
        lrs.append(sched.get_last_lr()[0])
        if len(lrs) % 4 == 0:
            sched.step_epoch(0.5)
    assert all(lr >= 0 for lr in lrs) and lrs[0] > 0
    again = make()
    again.load_state_dict(sched.state_dict())
    assert again.iteration == sched.iteration


@pytest.mark.parametrize("name", kind_registry("data-sampler").names())
def test_every_data_sampler_is_deterministic_per_seed_and_epoch(name):
    from hpa.samplers import DATA_SAMPLERS
    y = _labels()

    def order(epoch):
        s = DATA_SAMPLERS.build(name, example(DATA_SAMPLERS, name), "train.sampler_params", labels=y, seed=3)
        s.set_epoch(epoch)
        return list(s)
    first = order(1)
    assert len(first) == len(y) and first == order(1)
    assert all(len(y) <= i < 2 * len(y) for i in first)      # encoded as epoch * n + index


@pytest.mark.parametrize("name", kind_registry("augmentation").names())
def test_every_augmentation_keeps_an_rgby_uint8_image(name):
    from hpa.transforms import AUGMENTATIONS, build_train_transform
    t = build_train_transform([AugOp(name, example(AUGMENTATIONS, name))], image_size=8, seed=0)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    out = t(image=img)["image"]
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 4


@pytest.mark.parametrize("name", kind_registry("gpu-augmentation").names())
def test_every_gpu_augmentation_keeps_shape_and_dtype_and_is_seeded(name):
    from hpa.gpu_augment import GPU_AUGMENTATIONS, gpu_augment
    ops = [AugOp(name, {**example(GPU_AUGMENTATIONS, name), "p": 1.0})]
    x = torch.randint(0, 256, (3, 4, 16, 16), dtype=torch.uint8)
    a, b = gpu_augment(x, ops, seed=5), gpu_augment(x, ops, seed=5)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)


@pytest.mark.parametrize("name", kind_registry("tta-merge").names())
def test_every_tta_merge_gives_one_probability_per_image_and_class(name):
    from hpa.inference.predict import TTA_MERGES
    p = torch.rand(8, 5, 28, generator=torch.Generator().manual_seed(0))
    out = TTA_MERGES.get(name)(p)
    assert out.shape == (5, 28)
    assert (out >= p.amin(0) - 1e-6).all() and (out <= p.amax(0) + 1e-6).all()


@pytest.mark.parametrize("name", kind_registry("blend").names())
def test_every_blend_of_one_run_keeps_its_ranking(name):
    from hpa.inference.ensemble import BLENDS
    a = np.random.default_rng(0).random((30, 28))
    b = np.random.default_rng(1).random((30, 28))
    out = BLENDS.get(name)([a, b], np.array([1.0, 0.0]))
    assert out.shape == a.shape and np.isfinite(out).all()
    assert (np.argsort(out[:, 0], kind="stable") == np.argsort(a[:, 0], kind="stable")).all()


@pytest.mark.parametrize("name", kind_registry("diffusion-sampler").names())
def test_every_diffusion_sampler_schedules_steps(name):
    from diffusers import DDPMScheduler

    from hpa.synthetic.sampling import DIFFUSION_SAMPLERS
    sched = DIFFUSION_SAMPLERS.get(name)(DDPMScheduler(num_train_timesteps=100).config)
    sched.set_timesteps(4)
    assert 1 <= len(sched.timesteps) <= 100


@pytest.mark.parametrize("name", kind_registry("image-kind").names())
def test_every_image_kind_names_four_channel_files(name):
    from hpa.data.cache import IMAGE_READERS, channel_names
    files = channel_names("x1", name)
    ext = IMAGE_READERS.info(name)["ext"]
    assert len(set(files)) == 4 and all(f.endswith(f".{ext}") for f in files)


def test_bench_rows_and_gpu_parts_declare_distinct_places():
    """A declared ``order`` is an int no other entry of the kind takes (entries without one go last)."""
    for kind in ("bench-row", "gpu-check-part"):
        orders = [e["info"]["order"] for e in entries(kind) if "order" in e["info"]]
        assert len(set(orders)) == len(orders) and all(isinstance(o, int) for o in orders), kind
    shares = [e["info"]["share"] for e in entries("gpu-check-part")]
    assert all(s > 0 for s in shares) and sum(shares) == pytest.approx(1.0)


def test_hpa_list_prints_every_entry_with_its_params(capsys):
    assert run_command("list", ["loss"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "loss (config loss[].name)"
    assert [line.split()[0] for line in out[1:]] == kind_registry("loss").names()
    focal = next(line for line in out if line.split()[0] == "focal")
    assert "gamma: float = 2.0" in focal
    assert run_command("list", ["lossy"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown kind 'lossy' (valid: loss, head, ")
    assert run_command("list", []) == 0
    out = capsys.readouterr().out
    assert all(k in out for k in KINDS)


def test_readme_table_of_parts_is_current():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from readme_lists import rewrite
    finally:
        sys.path.pop(0)
    text = (ROOT / "README.md").read_text()
    assert rewrite(text) == text, "README.md's parts table is stale: run python tools/readme_lists.py"
    assert markdown() in text


def test_registry_builds_with_checked_params_and_keeps_capabilities():
    from hpa.errors import HPAError
    from hpa.registry import Registry
    reg = Registry("widget", fixed=("size",))

    @reg.register("b", order=2, needs="x")
    def b(size: int, gain: float = 1.0):
        """A widget."""
        return size * gain

    @reg.register("a", order=1)
    def a(size: int):
        if size < 0:
            raise ValueError("size must be >= 0")
        return size

    assert reg.build("b", {"gain": "2.5"}, "w.params", size=2) == 5.0     # "2.5" read as a float
    assert reg.info("b") == {"order": 2, "needs": "x"} and reg.ordered() == ["a", "b"]
    assert reg.describe("b") == {"gain": "float = 1.0"}
    with pytest.raises(HPAError, match=r"^w.params: b has no parameter 'gian' \(valid: gain\)$"):
        reg.build("b", {"gian": 2}, "w.params", size=2)
    with pytest.raises(HPAError, match=r"^w.params: a \{\}: size must be >= 0$"):
        reg.build("a", {}, "w.params", size=-1)
