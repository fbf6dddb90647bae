"""Augmentation pipelines from config names on 4-channel images, samplers, and the dihedral TTA views."""
import numpy as np
import pytest
import torch

from hpa.config import AugOp
from hpa.errors import HPAError
from hpa.samplers import EpochDataset, OversampleSampler, RandomEpochSampler, oversample_weights
from hpa.transforms import DIHEDRAL_VIEWS, build_train_transform, dihedral

ALL_OPS = [AugOp("hflip"), AugOp("vflip"), AugOp("rotate90"), AugOp("transpose"),
           AugOp("shift_scale_rotate", {"p": 1.0}), AugOp("brightness_contrast", {"p": 1.0})]


def test_pipeline_on_rgby_with_crop_and_seed():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 4), dtype=np.uint8)
    t = build_train_transform(ALL_OPS, image_size=24, crop_from=32, seed=3)
    a = t(image=img)["image"]
    t.set_random_seed(3)
    b = t(image=img)["image"]
    assert a.shape == (24, 24, 4) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_bad_ops_name_the_key():
    with pytest.raises(HPAError, match=r"unknown augmentation 'no_such_augmentation' \(valid: brightness_contrast"):
        build_train_transform([AugOp("hflip"), AugOp("no_such_augmentation")], 64)
    with pytest.raises(HPAError, match=r"train.augment\[0\]: hflip has no parameter 'q' \(valid: p\)"):
        build_train_transform([AugOp("hflip", {"q": 1})], 64)
    with pytest.raises(HPAError, match=r"^train.augment\[0\]: vflip: p: Input should be less than or equal to 1 \(got 2\)$"):
        build_train_transform([AugOp("vflip", {"p": 2})], 64)
    with pytest.raises(HPAError, match=r"train.crop_from \(16\) must be >= data.image_size \(64\)"):
        build_train_transform([], 64, crop_from=16)


def test_dihedral_views():
    x = torch.arange(4.0).view(1, 1, 2, 2)             # [[0, 1], [2, 3]]
    views = [dihedral(x, k) for k in DIHEDRAL_VIEWS]
    assert torch.equal(views[0], x)
    assert views[1].flatten().tolist() == [1, 3, 0, 2]   # rot90 counter-clockwise
    assert views[4].flatten().tolist() == [1, 0, 3, 2]   # horizontal flip
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    with pytest.raises(HPAError, match="dihedral view 8 outside 0-7"):
        dihedral(x, 8)


def test_samplers_are_deterministic_and_encoded():
    y = np.zeros((10, 28), np.uint8)
    y[:, 0] = 1
    y[0, 5] = 1                                          # one rare image
    w = oversample_weights(y, power=1.0)
    assert w[0] == pytest.approx(10.0) and w[1] == pytest.approx(1.0)
    s = RandomEpochSampler(y, seed=1)
    s.set_epoch(2)
    first = list(s)
    assert first == list(s) and sorted(i - 20 for i in first) == list(range(10))
    s.set_epoch(3)
    assert [i - 30 for i in s] != [i - 20 for i in first]
    o = OversampleSampler(y, seed=1, power=1.0)
    draws = np.concatenate([o.order() for o.epoch in range(50)])
    assert (draws == 0).mean() > 0.3                     # 10 / 19 of the mass on the rare image


def test_epoch_dataset_decodes_index():
    class DS:
        transform = None
        def __len__(self):
            return 4
        def __getitem__(self, i):
            return i * 10, i
    assert EpochDataset(DS(), 0)[9] == (10, 1, 1)        # epoch 2, item 1
