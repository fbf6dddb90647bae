"""Classifier models: a timm backbone on raw RGBY input with a 28-way head.

Contract used by training, inference, the synthetic-image filter and the benchmarks:
``build_model(model_cfg) -> HPAClassifier``; ``model(x)`` takes a ``(B, 4, H, W)`` tensor of raw pixel
values (uint8 or float in 0-255) and returns ``(B, 28)`` logits. Normalisation (``/255``, then the
per-channel mean and std from the config) happens inside the model, on the device, so loaders can
ship uint8 and a checkpoint carries its own normalisation.
"""
from hpa.models.classifier import HPAClassifier, build_model

__all__ = ["HPAClassifier", "build_model"]
