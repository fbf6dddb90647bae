"""``hpa.gpu_augment`` on CPU tensors: each op's exact effect, determinism per seed, dtype and shape,
bad names, and ``train.gpu_augment`` in a real training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.config import AugOp
from hpa.errors import HPAError
from hpa.gpu_augment import batch_seed, check_gpu_ops, gpu_augment


def batch(b: int = 6, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (b, 4, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def ops(*items) -> list[AugOp]:
    return [AugOp(name, params) for name, params in items]


@pytest.mark.parametrize("name,expect", [("hflip", lambda x: x.flip(3)), ("vflip", lambda x: x.flip(2)),
                                         ("transpose", lambda x: x.transpose(2, 3))])
def test_flips_with_p1_and_p0(name, expect):
    x = batch()
    assert torch.equal(gpu_augment(x, ops((name, {"p": 1.0})), 0), expect(x))
    assert torch.equal(gpu_augment(x, ops((name, {"p": 0.0})), 0), x)


def test_rotate90_turns_each_image_by_a_multiple_of_90_degrees():
    x = batch(32)
    out = gpu_augment(x, ops(("rotate90", {})), 3)
    turns = [next(k for k in range(4) if torch.equal(out[i], torch.rot90(x[i], k, dims=(1, 2)))) for i in range(32)]
    assert sorted(set(turns)) == [0, 1, 2, 3]          # all four angles drawn over 32 images


def test_same_seed_same_batch_other_seed_other_batch():
    chain = ops(("hflip", {}), ("vflip", {}), ("rotate90", {}), ("transpose", {}),
                ("shift_scale_rotate", {"p": 1.0}), ("brightness_contrast", {"p": 1.0}))
    x = batch(8, 16)
    a, b, c = gpu_augment(x, chain, 5), gpu_augment(x, chain, 5), gpu_augment(x, chain, 6)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    f = gpu_augment(x.float(), chain, 5)
    assert f.dtype == torch.float32 and (f.round() - a.float()).abs().max() <= 1


def test_brightness_contrast_matches_albumentations_formula():
    x = batch(4, 8)
    out = gpu_augment(x, ops(("brightness_contrast", {"brightness_limit": 0.1, "contrast_limit": 0.0, "p": 1.0})), 1)
    shift = out.int() - x.int()
    inside = (x > 30) & (x < 225)           # away from clipping every pixel moves by the image's offset
    for i in range(4):
        s = shift[i][inside[i]].unique()
        assert len(s) == 1 and abs(int(s)) <= 26        # one offset per image, within 0.1 x 255


def test_affine_with_zero_limits_is_the_identity_and_rotation_keeps_the_centre():
    x = batch(4, 16)
    still = ops(("shift_scale_rotate", {"shift_limit": 0.0, "scale_limit": 0.0, "rotate_limit": 0, "p": 1.0}))
    assert torch.equal(gpu_augment(x, still, 0), x)
    x = torch.zeros(1, 4, 17, 17, dtype=torch.uint8)
    x[..., 8, 8] = 200
    spin = ops(("shift_scale_rotate", {"shift_limit": 0.0, "scale_limit": 0.0, "rotate_limit": 180, "p": 1.0}))
    out = gpu_augment(x, spin, 2)
    assert int(out[0, 0].argmax()) == 8 * 17 + 8     # the centre pixel stays the brightest


def test_unknown_op_or_parameter_is_an_error():
    with pytest.raises(HPAError, match="unknown GPU augmentation 'blur'|GPU augmentation.*blur"):
        check_gpu_ops(ops(("blur", {})))
    with pytest.raises(HPAError, match=r"train.gpu_augment\[0\]: hflip has no parameter 'q'"):
        check_gpu_ops(ops(("hflip", {"q": 1})))
    with pytest.raises(HPAError, match="square"):
        gpu_augment(torch.zeros(2, 4, 8, 6), ops(("hflip", {})), 0)


def test_batch_seeds_differ_by_epoch_step_and_process():
    seeds = {batch_seed(1, e, s, p) for e in range(3) for s in range(3) for p in range(2)}
    assert len(seeds) == 18 and batch_seed(1, 2, 2, 1) == batch_seed(1, 2, 2, 1)


@pytest.mark.slow
def test_training_with_gpu_augment_is_repeatable(tiny_demo, tmp_path):
    """``train.gpu_augment`` runs in the training step: the same seed gives the same OOF, and the ops
    change what the model learns (another OOF than without them)."""
    from hpa.data.folds import make_folds, write_folds
    from hpa.data.labels import read_labels

    write_folds(tmp_path / "folds.csv", make_folds(read_labels(tiny_demo / "train.csv"), 3, 0))
    cfg = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 3, "file": str(tmp_path / "folds.csv")}, "runs_dir": str(tmp_path / "runs"),
           "model": {"name": "test_resnet"}, "loss": [{"name": "bce"}],
           "train": {"epochs": 1, "batch_size": 16, "num_workers": 0,
                     "gpu_augment": [{"name": "hflip"}, {"name": "rotate90"},
                                     {"name": "shift_scale_rotate", "params": {"p": 1.0}}]}}
    path = tmp_path / "gpu_aug.yaml"
    path.write_text(yaml.safe_dump(cfg))
    oof = {}
    for name, extra in (("a", []), ("b", []), ("plain", ["--set", "train.gpu_augment=[]"])):
        assert run_command("train", ["--config", str(path), "--folds", "0", "--set", f"name={name}", *extra]) == 0
        oof[name] = np.loadtxt(tmp_path / "runs" / name / "oof.csv", delimiter=",", skiprows=1,
                               usecols=range(2, 30))
    np.testing.assert_array_equal(oof["a"], oof["b"])
    assert not np.allclose(oof["a"], oof["plain"])
    bad = ["--config", str(path), "--set", "name=bad", "--set", "train.gpu_augment=[{name: blur}]"]
    assert run_command("train", bad) == 2
    bad_run = tmp_path / "runs" / "bad"
    assert not list(bad_run.glob("**/*.pt")) and not (bad_run / "config.yaml").exists()
