"""Classifier heads on pooled features: a plain linear layer and an ArcFace-style angular-margin head.

Every head is ``HEADS.get(name)(in_features, num_classes, **params)`` (``params`` = ``model.head_params``,
plain keyword arguments as in timm) and is called as ``head(feats, targets)``; ``targets`` is the
``(B, C)`` multi-hot batch during training and ``None`` at evaluation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpa.registry import Registry

HEADS: Registry = Registry("head", fixed=("in_features", "num_classes"))


@HEADS.register("linear")
class LinearHead(nn.Module):
    """A plain linear layer on pooled features."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``(B, C)`` logits."""
        return self.fc(feats)


@HEADS.register("arcface")
class ArcMarginHead(nn.Module):
    """Multi-label ArcMarginProduct: ``s * cos(theta + m * y)`` with ``theta`` the feature-class angle.

    The margin ``m`` is added to the angle of each positive label during training only (``targets``
    given); at evaluation the logits are ``s * cos(theta)``. Train with BCE on these scaled logits
    (loss ``arcface``), as in the ArcMarginProduct experiments of Lin & Cao. ``s`` is the logit scale,
    ``m`` the angular margin in radians.
    """

    def __init__(self, in_features: int, num_classes: int, s: float = 30.0, m: float = 0.5):
        super().__init__()
        self.s, self.m = float(s), float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """Return the ``(B, C)`` cosine between each feature vector and each class weight."""
        return F.linear(F.normalize(feats.float()), F.normalize(self.weight.float()))

    def forward(self, feats: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``s * cos(theta + m)`` for positives (training) and ``s * cos(theta)`` elsewhere."""
        cos = self.cosine(feats)
        if targets is None:
            return self.s * cos
        # clamp keeps acos's gradient finite at +-1; cos(theta + m) is only taken where theta + m < pi
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        margin = torch.cos(torch.clamp(theta + self.m, max=math.pi))
        return self.s * torch.where(targets > 0.5, margin, cos)
