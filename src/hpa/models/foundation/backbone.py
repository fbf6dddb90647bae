"""Build a registered foundation backbone as a timm ViT, load its published weights, embed RGBY images.

``build_foundation(name, weights=..., **params)`` returns a :class:`FoundationBackbone`: raw 0-255
``(B, 4, H, W)`` Kaggle RGBY input in, pooled ``(B, F)`` features out. It picks and orders the
channels the model was trained on, normalises them the model's way and pools its tokens the way the
published embedding does. timm builds the architecture (``dynamic_img_size``: the positional
embeddings are interpolated for any input size; at load they are resampled to ``img_size``), so layer
groups for layer-wise lr decay and gradient checkpointing come from timm too.

Loading refuses, in one line naming the file, a file that is missing or unreadable, one whose sha256
differs, a state dict whose keys differ from the published layout (missing or unexpected keys, after
the entry's remap), and weights or images with other input channels.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import re
import typing
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from hpa.config_types import coerce_param
from hpa.errors import HPAError
from hpa.models.foundation.remap import REMAPS
from hpa.models.foundation.specs import FOUNDATION, FoundationSpec
from hpa.models.foundation.weights import DEFAULT_CACHE, resolve_weights, show_licence_once

POOLS = ("cls", "avg", "cls+avg", "gated")


class GatedAttentionPool(nn.Module):
    """SubCell's gated attention pooler (same module names as its ``GatedAttentionPooler``): per head a
    softmax over tokens of ``attention(tanh(V x) * gelu(U x))``; the heads' weighted sums concatenated."""

    def __init__(self, dim: int, int_dim: int = 512, num_heads: int = 2):
        super().__init__()
        self.attention_v = nn.Sequential(nn.Linear(dim, int_dim), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(dim, int_dim), nn.GELU())
        self.attention = nn.Linear(int_dim, num_heads)
        self.out_dim = dim * num_heads

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` tokens -> ``(B, heads * D)``."""
        attn = self.attention(self.attention_v(tokens) * self.attention_u(tokens)).permute(0, 2, 1).softmax(-1)
        return torch.bmm(attn, tokens).flatten(1)


class FoundationBackbone(nn.Module):
    """A published backbone on Kaggle RGBY input: channel choice, its normalisation, timm ViT, pooling."""

    def __init__(self, spec: FoundationSpec, vit: nn.Module, pool: str, pooler: nn.Module | None = None):
        super().__init__()
        self.spec, self.vit, self.pool_kind = spec, vit, pool
        if pooler is not None:
            self.pool = pooler
        self.register_buffer("index", torch.tensor(spec.rgby_index), persistent=False)
        d = vit.num_features
        self.num_features = {"cls": d, "avg": d, "cls+avg": 2 * d}.get(pool) or pooler.out_dim

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Raw 0-255 RGBY ``(B, 4, H, W)`` -> the model's channels, normalised its way (float32)."""
        if x.ndim != 4 or x.shape[1] != 4:
            raise HPAError(f"foundation/{self.spec.name}: input has shape {tuple(x.shape)}; it takes Kaggle RGBY "
                           f"images (B, 4, H, W) and reads the channels {self.spec.channels}")
        x = x.float().index_select(1, self.index) / 255.0
        if self.spec.normalise == "self":       # Cell-DINO SelfNormalize / DINO4Cells self_normalize
            m = x.mean((-2, -1), keepdim=True)
            s = x.std((-2, -1), unbiased=False, keepdim=True)
            return (x - m) / (s + 1e-7)
        lo = x.amin((1, 2, 3), keepdim=True)       # SubCell min_max_standardize: the whole crop at once
        hi = x.amax((1, 2, 3), keepdim=True)
        return (x - lo) / (hi - lo + 1e-6)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` final (normed) tokens -> the pooled feature."""
        if self.pool_kind == "gated":
            return self.pool(tokens)
        cls, avg = tokens[:, 0], tokens[:, self.vit.num_prefix_tokens:].mean(1)
        if self.pool_kind == "cls+avg":       # DINOv2's linear evaluation: class token and mean patch token
            return torch.cat([cls, avg], 1)
        return cls if self.pool_kind == "cls" else avg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw RGBY images -> ``(B, num_features)``."""
        return self.pool_tokens(self.vit.forward_features(self.prepare(x)))

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's layer groups of the ViT, under ``vit.`` (the pooler falls in the last group)."""
        def under(rx: str) -> str:
            return r"^vit\.(?:" + rx.lstrip("^") + ")"
        out = {}
        for k, v in self.vit.group_matcher(coarse).items():
            out[k] = under(v) if isinstance(v, str) else [(under(r), s) for r, s in v]
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's activation recomputation in the ViT blocks."""
        self.vit.set_grad_checkpointing(enable)


def read_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` (argparse.Namespace allowed: DINO checkpoints store their
    args); unwrap ``state_dict``/``model``; HPAError naming the file when it is not a checkpoint."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:       # zip errors, pickle errors, truncation: all mean the same to the user
        raise HPAError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:100] if str(e) else 'truncated?'})") from None
    if not isinstance(sd, dict):
        raise HPAError(f"{path}: holds a {type(sd).__name__}, not a state dict")
    for key in ("state_dict", "model"):
        if isinstance(sd.get(key), dict) and not any(torch.is_tensor(v) for v in sd.values()):
            sd = sd[key]
    return sd


def _few(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def load_published(model: FoundationBackbone, path: Path) -> dict:
    """Load the published checkpoint at ``path`` into ``model`` through the entry's remap; positional
    embeddings resampled to the model's grid. HPAError on any difference; returns counts."""
    spec = model.spec
    sd, ignored = REMAPS[spec.remap](read_checkpoint(path))
    sd = {k if k.startswith("pool.") else f"vit.{k}": v for k, v in sd.items() if torch.is_tensor(v)}
    target = model.state_dict()
    w = sd.get("vit.patch_embed.proj.weight")
    if w is not None and w.ndim == 4 and w.shape[1] != spec.in_chans:
        raise HPAError(f"{path}: patch_embed takes {w.shape[1]} input channels; foundation/{spec.name} "
                       f"takes {spec.in_chans} ({spec.channels})")
    missing, unexpected = set(target) - set(sd), set(sd) - set(target)
    if missing or unexpected:
        raise HPAError(f"{path}: state dict does not match foundation/{spec.name} ({spec.remap} layout): "
                       f"missing {_few(missing) or 'none'}; unexpected {_few(unexpected) or 'none'}")
    pe = sd["vit.pos_embed"]
    if pe.shape != target["vit.pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed
        sd["vit.pos_embed"] = resample_abs_pos_embed(pe, list(model.vit.patch_embed.grid_size),
                                                     num_prefix_tokens=model.vit.num_prefix_tokens)
    bad = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in sd.items() if v.shape != target[k].shape]
    if bad:
        raise HPAError(f"{path}: tensor shapes differ from foundation/{spec.name} (other widths?): {_few(bad)}")
    model.load_state_dict(sd, strict=True)
    return {"loaded": len(sd), "ignored": len(ignored)}


def build_foundation(name: str, weights: str = "", pretrained: bool = True, sha256: str = "", pool: str = "",
                     img_size: int = 0, embed_dim: int = 0, depth: int = 0, num_heads: int = 0,
                     drop_rate: float = 0.0, in_chans: int = 4, cache_dir: str = DEFAULT_CACHE,
                     progress: bool = True) -> FoundationBackbone:
    """The registered backbone ``name`` (``FOUNDATION``), with its published weights when ``pretrained``
    (``weights``: a local file or URL; default the published URL, cached in ``cache_dir``); random
    weights otherwise (a run's checkpoint then supplies them: ``hpa.rundir.load_model``).

    ``img_size`` sets the positional grid (default the native size; other sizes are interpolated at
    run time too); ``embed_dim``/``depth``/``num_heads`` override the published widths (tests build
    tiny models with the published key layout); ``pool`` one of ``POOLS`` (default the entry's)."""
    spec = FOUNDATION.get(name)
    if in_chans != 4:
        raise HPAError(f"model.in_chans: foundation/{name} takes Kaggle RGBY input (4 channels) and reads "
                       f"{spec.channels} from it; got in_chans {in_chans}")
    pool = pool or spec.pool
    if pool not in POOLS or (pool == "gated") != (spec.pool == "gated"):
        raise HPAError(f"foundation/{name}: pool '{pool}' not one of "
                       f"{'gated' if spec.pool == 'gated' else ', '.join(p for p in POOLS if p != 'gated')}")
    kw = dict(spec.arch_kwargs)
    kw.update({k: v for k, v in dict(img_size=img_size, embed_dim=embed_dim, depth=depth,
                                      num_heads=num_heads).items() if v})
    eps = kw.pop("norm_eps", None)
    if eps is not None:
        kw["norm_layer"] = functools.partial(nn.LayerNorm, eps=eps)
    vit = timm.create_model(spec.arch, pretrained=False, num_classes=0, in_chans=spec.in_chans,
                            dynamic_img_size=True, drop_rate=drop_rate, **kw)
    pooler = None
    if pool == "gated":
        pooler = GatedAttentionPool(vit.num_features, spec.extra.get("pool_int_dim", 512) if not embed_dim
                                    else max(8, embed_dim // 2), spec.extra.get("pool_heads", 2))
    model = FoundationBackbone(spec, vit, pool, pooler)
    if pretrained:
        path = resolve_weights(spec, weights, sha256, cache_dir, progress)
        show_licence_once(spec, cache_dir)
        load_published(model, path)
    return model


#: build_foundation's arguments a caller sets itself; the rest come from model.kwargs / embed.params
_FIXED = ("name", "weights", "pretrained", "drop_rate", "in_chans")


def check_params(params: dict, where: str) -> dict:
    """``params`` for :func:`build_foundation` from a config (``model.kwargs``, ``embed.params``), each
    converted to its annotation; HPAError naming an unknown key (with the valid ones) or a wrong type."""
    valid = sorted(set(inspect.signature(build_foundation).parameters) - set(_FIXED))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise HPAError(f"{where}: foundation backbones have no parameter {unknown[0]!r} (valid: {', '.join(valid)})")
    hints = typing.get_type_hints(build_foundation)
    return {k: coerce_param(v, hints.get(k, Any), f"{where}.{k}") for k, v in params.items()}


def foundation_name(model_name: str) -> str | None:
    """``"foundation/<name>"`` -> ``<name>``; None for any other (timm) model name."""
    m = re.fullmatch(r"foundation/(.+)", model_name)
    return m.group(1) if m else None
