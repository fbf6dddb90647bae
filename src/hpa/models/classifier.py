"""The HPA classifier: per-channel normalisation, a timm backbone, and a head from the HEADS registry."""
from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from hpa.classes import NUM_CLASSES
from hpa.config import ModelConfig
from hpa.errors import HPAError
from hpa.models.foundation import build_foundation, check_params, foundation_name
from hpa.models.heads import HEADS, ArcMarginHead, LinearHead  # noqa: F401  (re-exported)

FOURTH_CHANNEL_INITS = ("timm", "red")


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

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None,
                mix: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``(B, num_classes)`` logits; margin heads use ``targets`` during training only.

        With ``mix`` (``(B, 1)`` weights), ``x`` holds ``2B`` images (B real, then B synthetic) whose
        pooled features are blended ``mix * f_real + (1 - mix) * f_syn`` before the head (Lin & Cao's
        Mix Representation). It lives in ``forward`` so that a DDP wrapper runs it: calling
        ``features``/``head`` on the unwrapped module would skip DDP's gradient synchronisation.
        """
        feats = self.features(x)
        if mix is not None:
            b = len(feats) // 2
            feats = mix * feats[:b] + (1 - mix) * feats[b:]
        return self.head(feats, targets if self.training else None)


    def group_matcher(self, coarse: bool = False):
        """Layer groups for timm's ``param_groups_layer_decay`` (``optim.layer_decay``): the backbone's
        own grouping (its ``group_matcher``, else timm's automatic one), then the head as the last,
        least-decayed group. Returns a callable ``parameter name -> group ordinal``."""
        from timm.models import group_parameters
        from timm.optim import auto_group_layers

        bb = self.backbone
        layers = (group_parameters(bb, bb.group_matcher(coarse=coarse), reverse=True)
                  if hasattr(bb, "group_matcher") else auto_group_layers(bb))
        head = max(layers.values(), default=-1) + 1
        return lambda name: layers.get(name[len("backbone."):], head) if name.startswith("backbone.") else head

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's activations in the backward pass (timm's ``set_grad_checkpointing``):
        less memory for large inputs (1024 px) at about a third more compute."""
        try:
            self.backbone.set_grad_checkpointing(enable)
        except (AttributeError, AssertionError, NotImplementedError) as e:
            raise HPAError(f"model.grad_checkpointing: timm model '{type(self.backbone).__name__}' does not "
                           f"support gradient checkpointing ({e or type(e).__name__})") from None


def first_conv(backbone: nn.Module) -> nn.Conv2d:
    """Return the input convolution of a timm model (from its ``pretrained_cfg['first_conv']``)."""
    name = (getattr(backbone, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(name, (list, tuple)):
        name = name[0]
    module = backbone.get_submodule(name) if name else None
    if isinstance(module, nn.Conv2d):
        return module
    for m in backbone.modules():            # models without the key: the first conv is the input conv
        if isinstance(m, nn.Conv2d):
            return m
    raise HPAError(f"model '{type(backbone).__name__}' has no input convolution")


def _create_backbone(cfg: ModelConfig) -> nn.Module:
    name = foundation_name(cfg.name)
    if name is not None:     # an HPA-pretrained backbone: its own loader, weights and normalisation
        return build_foundation(name, weights=cfg.weights, pretrained=cfg.pretrained, drop_rate=cfg.drop_rate,
                                in_chans=cfg.in_chans, **check_params(cfg.kwargs, "model.kwargs"))
    kwargs = dict(in_chans=cfg.in_chans, num_classes=0, drop_rate=cfg.drop_rate, **cfg.kwargs)
    pretrained = cfg.pretrained
    if cfg.weights:
        if not Path(cfg.weights).is_file():
            raise HPAError(f"model.weights: file not found: {cfg.weights}")
        # timm loads the file like its hub weights: classifier dropped, input conv adapted to in_chans
        kwargs["pretrained_cfg_overlay"] = dict(file=str(cfg.weights))
        pretrained = True
    try:
        return timm.create_model(cfg.name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            # ~1400 valid names: list the closest few rather than all of them
            close = difflib.get_close_matches(cfg.name, timm.list_models(), n=5, cutoff=0.6)
            raise HPAError(f"model.name: unknown timm model '{cfg.name}' (closest: {', '.join(close) or 'none'};"
                           " all: timm.list_models())") from None
        raise


def build_model(cfg: ModelConfig, num_classes: int = NUM_CLASSES) -> HPAClassifier:
    """Build the classifier described by ``cfg`` (any timm model name, ``in_chans`` input channels;
    ``foundation/<name>``: an HPA-pretrained backbone of :mod:`hpa.models.foundation`, ``kwargs`` its params).

    ``pretrained`` uses timm's hub weights, ``weights`` a local file in the same format; with
    ``fourth_channel_init: red`` the 4th (yellow) input filters are copied from the red ones after
    loading (bestfitting's 1st-place trick) instead of timm's cyclic RGB repeat. ``grad_checkpointing``
    turns on timm's activation recomputation in the backbone.
    """
    if len(cfg.mean) != cfg.in_chans or len(cfg.std) != cfg.in_chans:
        raise HPAError(f"model.mean/model.std need {cfg.in_chans} values (one per input channel)")
    if cfg.fourth_channel_init not in FOURTH_CHANNEL_INITS:
        raise HPAError(f"model.fourth_channel_init: '{cfg.fourth_channel_init}' not one of "
                       f"{', '.join(FOURTH_CHANNEL_INITS)}")
    backbone = _create_backbone(cfg)
    foundation = foundation_name(cfg.name) is not None
    if cfg.fourth_channel_init == "red" and cfg.in_chans >= 4 and not foundation:
        with torch.no_grad():
            conv = first_conv(backbone)
            conv.weight[:, 3] = conv.weight[:, 0]
    # models with a pre-logits conv (MobileNetV3) pool to head_hidden_size, not num_features
    dim = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    head = HEADS.build(cfg.head, cfg.head_params, "model.head_params", in_features=dim, num_classes=num_classes)
    # a foundation backbone normalises raw 0-255 input its own way (per image): pass pixels through
    mean, std = ([0.0] * cfg.in_chans, [1 / 255] * cfg.in_chans) if foundation else (cfg.mean, cfg.std)
    model = HPAClassifier(backbone, head, mean, std)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def check_input_size(model: HPAClassifier, sizes, name: str, key: str = "data.image_size") -> None:
    """HPAError, before anything is trained or written, when the backbone takes one fixed input size
    (a ViT's or Swin's position embedding: timm's ``patch_embed.strict_img_size``) and one of ``sizes``
    is not it; the message says how to build the model for the size instead (``model.kwargs``)."""
    pe = getattr(model.backbone, "patch_embed", None)
    fixed = tuple(getattr(pe, "img_size", None) or ())
    if len(fixed) != 2 or not getattr(pe, "strict_img_size", False) or getattr(model.backbone, "dynamic_img_size", False):
        return
    for size in sizes:
        if fixed != (size, size):
            raise HPAError(f"{key}: {size} px does not fit model '{name}', which takes {fixed[0]}x{fixed[1]} "
                           f"images only (a fixed position embedding); set {key}: {fixed[0]}, or model.kwargs: "
                           f"{{img_size: {size}}} to build it for {size} px")
