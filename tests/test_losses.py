"""Each loss against a value computed by hand, plus the registry and the weighted combination."""
import math

import pytest
import torch

from hpa.config import LossTerm
from hpa.errors import HPAError
from hpa.losses import LOSSES, build_loss, hard_example_mask, lovasz_hinge_flat

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
    with pytest.raises(HPAError, match=r"unknown loss 'no_such_loss' \(valid: .*\bbce, .*\bfocal\b"):
        build_loss([LossTerm("no_such_loss")])
    with pytest.raises(HPAError, match=r"loss\[0\].params: focal has no parameter 'gama' \(valid: alpha, gamma\)"):
        build_loss([LossTerm("focal", 1.0, {"gama": 2})])
    with pytest.raises(HPAError, match="loss 'arcface' needs model.head: arcface"):
        build_loss([LossTerm("arcface")], head="linear")


def _softplus(x):
    return math.log1p(math.exp(x))


def test_hard_bce_hand_value():
    # one positive, five negatives: k = min(5, 1 + max(2, floor(2.5)), floor(3.5) + 2) = 3 hardest
    # negatives (logits 1, 0.5, 0) join the positive (logit 2); -1 and -3 are dropped
    logits, targets = [[2.0], [-1.0], [0.0], [1.0], [-3.0], [0.5]], [[1.0]] + [[0.0]] * 5
    keep = hard_example_mask(torch.tensor(logits), torch.tensor(targets))
    assert keep[:, 0].tolist() == [True, False, True, True, False, True]
    want = (_softplus(-2.0) + _softplus(1.0) + _softplus(0.5) + _softplus(0.0)) / 4
    assert _one("hard_bce", logits, targets) == pytest.approx(want)
    # a column without negatives keeps everything; per-class means are averaged over columns
    two = _one("hard_bce", [[2.0, 1.0]] + [[x[0], 1.0] for x in logits[1:]], [[1.0, 1.0]] + [[0.0, 1.0]] * 5)
    assert two == pytest.approx((want + _softplus(-1.0)) / 2)
    # per_class: false mines once over the flattened batch: the same six values as a 2 x 3 batch
    flat = _one("hard_bce", [[2.0, -1.0, 0.0], [1.0, -3.0, 0.5]], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                per_class=False)
    assert flat == pytest.approx(want)


def _bestfitting_hard_log_loss(logits, labels, neg_more=2, least=0.5, most=0.7):
    """His HardLogLoss written the way his code does it (per class: boolean index, topk, BCE)."""
    total = 0.0
    for c in range(logits.shape[1]):
        x, y = logits[:, c], labels[:, c]
        pos_x, neg_x = x[y > 0], x[y <= 0]
        hard = min(len(neg_x), len(pos_x) + max(neg_more, int(least * len(neg_x))),
                   int(most * len(neg_x)) + neg_more)
        if hard > 0:
            neg_x = torch.topk(neg_x, min(hard, len(neg_x))).values
        xs = torch.cat([pos_x, neg_x])
        ys = torch.cat([torch.ones(len(pos_x)), torch.zeros(len(neg_x))])
        total += torch.nn.functional.binary_cross_entropy_with_logits(xs, ys)
    return total / logits.shape[1]


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_hard_bce_matches_bestfitting_and_combines(batch):
    g = torch.Generator().manual_seed(batch)
    logits = torch.randn(batch, 28, generator=g) * 3
    targets = (torch.rand(batch, 28, generator=g) < 0.2).float()
    got = LOSSES.get("hard_bce")()(logits, targets)
    assert float(got) == pytest.approx(float(_bestfitting_hard_log_loss(logits, targets)), rel=1e-5)
    combined = build_loss([LossTerm("focal", 1.0), LossTerm("hard_bce", 0.5, {"neg_max_ratio": 0.7})])
    assert float(combined(logits, targets)) == pytest.approx(
        float(LOSSES.get("focal")()(logits, targets)) + 0.5 * float(got), rel=1e-5)
