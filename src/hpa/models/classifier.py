"""The HPA classifier: per-channel normalisation, a timm backbone, and a head from the HEADS registry."""
from __future__ import annotations

import timm
import torch
from torch import nn

from hpa.classes import NUM_CLASSES
from hpa.config import ModelConfig
from hpa.errors import HPAError
from hpa.registry import Registry

HEADS: Registry = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Module):
    """A plain linear layer on pooled features."""

    def __init__(self, in_features: int, num_classes: int, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(feats)


class HPAClassifier(nn.Module):
    """Normalise raw 0-255 RGBY input, extract pooled features with timm, apply the head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.backbone = backbone
        self.head = head
        c = len(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1) * 255.0)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw 0-255 pixels to standardised floats (keeps channels-last memory format)."""
        return (x.float() - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return pooled backbone features ``(B, F)`` for raw input ``x``."""
        return self.backbone(self.normalise(x))

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``(B, num_classes)`` logits; margin heads use ``targets`` during training only."""
        return self.head(self.features(x), targets if self.training else None)


def build_model(cfg: ModelConfig, num_classes: int = NUM_CLASSES) -> HPAClassifier:
    """Build the classifier described by ``cfg`` (any timm model name, ``in_chans`` input channels)."""
    if len(cfg.mean) != cfg.in_chans or len(cfg.std) != cfg.in_chans:
        raise HPAError(f"model.mean/model.std need {cfg.in_chans} values (one per input channel)")
    try:
        backbone = timm.create_model(cfg.name, pretrained=cfg.pretrained, in_chans=cfg.in_chans,
                                     num_classes=0, drop_rate=cfg.drop_rate, **cfg.kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise HPAError(f"model.name: unknown timm model '{cfg.name}'") from None
        raise
    head = HEADS.get(cfg.head)(backbone.num_features, num_classes, cfg)
    return HPAClassifier(backbone, head, cfg.mean, cfg.std)
