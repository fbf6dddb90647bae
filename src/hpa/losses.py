"""Multi-label losses on ``(B, 28)`` logits and multi-hot targets, one registry, weighted combinations.

Every factory is ``LOSSES.get(name)(class_freq=..., **params) -> nn.Module`` whose forward takes
``(logits, targets)`` and returns a scalar. ``build_loss(cfg.loss, class_freq)`` sums weighted terms,
so a config may combine, for example, focal and Lovasz (bestfitting's 1st-place recipe). Capabilities
are declared at registration: ``needs_head="arcface"`` for a loss made for that head's logits.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from hpa.config import LossTerm
from hpa.errors import HPAError
from hpa.registry import Registry

LOSSES: Registry = Registry("loss", fixed=("class_freq",))


def _pos_weight(spec, class_freq) -> torch.Tensor | None:
    """``"auto"`` -> (1 - f) / f from label frequencies (clipped to [1, 100]); a list is taken as is."""
    if spec is None or spec is False:
        return None
    if spec == "auto":
        if class_freq is None:
            raise HPAError("loss bce: pos_weight 'auto' needs the training label frequencies")
        f = np.clip(np.asarray(class_freq, dtype=np.float64), 1e-6, 1.0)
        return torch.tensor(np.clip((1 - f) / f, 1.0, 100.0), dtype=torch.float32)
    return torch.tensor(list(spec), dtype=torch.float32)


@LOSSES.register("bce")
class BCELoss(nn.Module):
    """Mean binary cross-entropy with logits; ``pos_weight`` ``"auto"`` or a list of 28 floats."""

    def __init__(self, class_freq: Sequence[float] | None = None, pos_weight=None):
        super().__init__()
        self.register_buffer("pos_weight", _pos_weight(pos_weight, class_freq), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float(),
                                                  pos_weight=self.pos_weight)


@LOSSES.register("arcface", needs_head="arcface")
class ArcFaceLoss(BCELoss):
    """BCE on the ``s``-scaled angular-margin logits of the ``arcface`` head (the margin is in the head)."""


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Mean focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al.); ``alpha`` None = unweighted.

    torchvision's ``sigmoid_focal_loss`` (the same operations: values and gradients bitwise equal to
    the hand-written version this replaced)."""

    def __init__(self, class_freq=None, gamma: float = 2.0, alpha: float | None = None):
        super().__init__()
        self.gamma, self.alpha = float(gamma), alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits.float(), targets.float(), gamma=self.gamma,
                                  alpha=-1 if self.alpha is None else self.alpha, reduction="mean")


@LOSSES.register("soft_f1")
class SoftF1Loss(nn.Module):
    """``1 - mean_c soft-F1_c`` with probabilities in place of 0/1 predictions (differentiable macro F1)."""

    def __init__(self, class_freq=None, eps: float = 1e-7):
        super().__init__()
        self.eps = float(eps)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p, y = torch.sigmoid(logits.float()), targets.float()
        tp = (p * y).sum(0)
        fp = (p * (1 - y)).sum(0)
        fn = ((1 - p) * y).sum(0)
        return 1 - (2 * tp / (2 * tp + fp + fn + self.eps)).mean()


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge of flat logits and 0/1 labels: ``relu(1 - logit * sign)`` sorted, dot Lovasz grad."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, descending=True)
    return torch.dot(F.relu(errors_sorted), lovasz_grad(labels[perm]))


@LOSSES.register("lovasz")
class LovaszHingeLoss(nn.Module):
    """Lovasz hinge over the whole flattened batch (default, as bestfitting) or averaged per class."""

    def __init__(self, class_freq=None, per_class: bool = False):
        super().__init__()
        self.per_class = bool(per_class)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        if self.per_class:
            return torch.stack([lovasz_hinge_flat(logits[:, c], targets[:, c])
                                for c in range(logits.shape[1])]).mean()
        return lovasz_hinge_flat(logits.reshape(-1), targets.reshape(-1))


@LOSSES.register("asl")
class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021), averaged over elements.

    Negatives: probability shifted by ``clip`` and focused with ``gamma_neg``; positives focused with
    ``gamma_pos``. timm's ``AsymmetricLossMultiLabel`` with ``reduction="mean"`` (values and gradients
    bitwise equal to the hand-written version this replaced).
    """

    def __init__(self, class_freq=None, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                 clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.timm = AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps,
                                             reduction="mean")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.timm(logits, targets)


def hard_example_mask(logits: torch.Tensor, targets: torch.Tensor, neg_more: int = 2,
                      neg_least_ratio: float = 0.5, neg_max_ratio: float = 0.7) -> torch.Tensor:
    """Boolean mask of the examples bestfitting's hard log loss keeps in each column of ``(B, C)``.

    Every positive is kept. Of ``n_neg`` negatives the ``k`` with the highest logits are kept, where
    ``k = min(n_neg, n_pos + max(neg_more, floor(neg_least_ratio * n_neg)),
    floor(neg_max_ratio * n_neg) + neg_more)``, and all negatives when ``k`` is 0 (as in his
    ``get_hard_samples``). Ties keep the earlier row.
    """
    neg = targets <= 0
    n_neg = neg.sum(0).double()                       # float64: floor() as Python's int() on his floats
    n_pos = (~neg).sum(0).double()
    at_least = torch.clamp(torch.floor(neg_least_ratio * n_neg), min=float(neg_more))
    k = torch.minimum(torch.minimum(n_neg, n_pos + at_least), torch.floor(neg_max_ratio * n_neg) + neg_more)
    k = torch.where(k > 0, k, n_neg)
    scores = logits.detach().float().masked_fill(~neg, float("-inf"))
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    rank = torch.argsort(order, dim=0)                # inverse permutation: each row's rank
    return ~neg | (rank < k.to(rank.device))


@LOSSES.register("hard_bce")
class HardBCELoss(nn.Module):
    """BCE over all positives and the hardest negatives only (bestfitting's 1st-place ``HardLogLoss``).

    ``per_class`` (default, as his loss): the mining of :func:`hard_example_mask` and the mean BCE
    run in each class column, then the 28 means are averaged. ``per_class: false`` mines once over
    the flattened batch. His defaults: ``neg_more`` 2, ``neg_least_ratio`` 0.5, ``neg_max_ratio`` 0.7,
    so about half to 70% of the negatives, the highest-scoring ones, contribute.
    """

    def __init__(self, class_freq=None, per_class: bool = True, neg_more: int = 2,
                 neg_least_ratio: float = 0.5, neg_max_ratio: float = 0.7):
        super().__init__()
        self.per_class = bool(per_class)
        self.mining = dict(neg_more=int(neg_more), neg_least_ratio=float(neg_least_ratio),
                           neg_max_ratio=float(neg_max_ratio))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float(), targets.float()
        if not self.per_class:
            logits, targets = logits.reshape(-1, 1), targets.reshape(-1, 1)
        keep = hard_example_mask(logits, targets, **self.mining).float()
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return ((bce * keep).sum(0) / keep.sum(0)).mean()


class CombinedLoss(nn.Module):
    """``sum_i weight_i * loss_i(logits, targets)`` (``names`` and ``weights`` in term order)."""

    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [n for n, _, _ in terms]
        self.weights = [w for _, w, _ in terms]
        self.terms = nn.ModuleList([m for _, _, m in terms])

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # no per-term float(): each would be a device-to-host sync on every training step
        return sum(w * m(logits, targets) for w, m in zip(self.weights, self.terms))


def build_loss(terms: list[LossTerm], class_freq: Sequence[float] | None = None,
               head: str | None = None) -> CombinedLoss:
    """Build the weighted sum of ``terms``; unknown names or parameters raise HPAError naming them.

    ``class_freq`` (28 positive rates) feeds ``pos_weight: auto``; ``head`` is checked against a loss's
    ``needs_head`` (the ``arcface`` loss only with the ``arcface`` head).
    """
    if not terms:
        raise HPAError("loss: at least one loss term is needed")
    built = []
    for i, t in enumerate(terms):
        needs = LOSSES.info(t.name).get("needs_head")
        if needs and head is not None and head != needs:
            raise HPAError(f"loss[{i}]: loss '{t.name}' needs model.head: {needs} (got '{head}')")
        module = LOSSES.build(t.name, t.params, f"loss[{i}].params", class_freq=class_freq)
        built.append((t.name, float(t.weight), module))
    return CombinedLoss(built)
