"""Each loss against a value computed by hand, plus the registry and the weighted combination."""
import math

import pytest
import torch

from hpa.config import LossTerm
from hpa.errors import HPAError
from hpa.losses import LOSSES, build_loss, lovasz_hinge_flat

LOG2 = math.log(2.0)


def _one(name, logits, targets, **params):
    return float(LOSSES.get(name)(**params)(torch.tensor(logits), torch.tensor(targets)))


def test_bce_and_auto_pos_weight():
    assert _one("bce", [[0.0]], [[1.0]]) == pytest.approx(LOG2)
    # frequency 0.25 -> pos_weight (1 - 0.25) / 0.25 = 3 on the positive term
    assert _one("bce", [[0.0]], [[1.0]], class_freq=[0.25], pos_weight="auto") == pytest.approx(3 * LOG2)
    assert _one("bce", [[0.0]], [[0.0]], class_freq=[0.25], pos_weight="auto") == pytest.approx(LOG2)


def test_focal_hand_values():
    # p = 0.5: ce = log 2, (1 - p_t)^2 = 0.25
    assert _one("focal", [[0.0]], [[1.0]], gamma=2.0) == pytest.approx(0.25 * LOG2)
    assert _one("focal", [[0.0]], [[1.0]], gamma=2.0, alpha=0.25) == pytest.approx(0.0625 * LOG2)
    assert _one("focal", [[0.0]], [[0.0]], gamma=2.0, alpha=0.25) == pytest.approx(0.1875 * LOG2)


def test_soft_f1_hand_value():
    # p = 0.5 everywhere, y = [1, 0]: tp = fp = fn = 0.5 -> F1 = 1 / 2
    assert _one("soft_f1", [[0.0], [0.0]], [[1.0], [0.0]], eps=0.0) == pytest.approx(0.5)
    assert _one("soft_f1", [[20.0], [-20.0]], [[1.0], [0.0]]) == pytest.approx(0.0, abs=1e-6)


def test_lovasz_hand_value():
    # errors 1 - logit*sign = [-1, 0, 1.5]; sorted gt [0,0,1] -> grad [1/2, 1/6, 1/3]; 1.5 * 1/2
    loss = lovasz_hinge_flat(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]))
    assert float(loss) == pytest.approx(0.75)
    assert _one("lovasz", [[2.0, -1.0, 0.5]], [[1.0, 0.0, 0.0]]) == pytest.approx(0.75)


def test_asl_hand_value():
    pos = 0.5 * LOG2                                   # -(1 - 0.5)^1 log 0.5
    neg = -math.log(0.55) * 0.45 ** 4                  # shifted p_neg = 0.5 + 0.05
    got = _one("asl", [[0.0, 0.0]], [[1.0, 0.0]], gamma_neg=4, gamma_pos=1, clip=0.05)
    assert got == pytest.approx((pos + neg) / 2)


def test_arcface_loss_is_bce_on_head_logits():
    assert _one("arcface", [[2.0, -1.0]], [[1.0, 0.0]]) == pytest.approx(
        (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2)


def test_combined_weights_and_errors():
    loss = build_loss([LossTerm("bce", 1.0), LossTerm("focal", 2.0, {"gamma": 2.0})])
    v = loss(torch.zeros(1, 1), torch.ones(1, 1))
    assert float(v) == pytest.approx(LOG2 + 2 * 0.25 * LOG2)
    assert loss.names == ["bce", "focal"] and loss.weights == [1.0, 2.0]
    with pytest.raises(HPAError, match=r"unknown loss 'dice' \(valid: arcface, asl, bce, focal, lovasz, soft_f1\)"):
        build_loss([LossTerm("dice")])
    with pytest.raises(HPAError, match=r"loss\[0\] \(focal\): bad params"):
        build_loss([LossTerm("focal", 1.0, {"gama": 2})])
    with pytest.raises(HPAError, match="loss 'arcface' needs model.head: arcface"):
        build_loss([LossTerm("arcface")], head="linear")
