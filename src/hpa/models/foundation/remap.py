"""Published state-dict layouts -> timm's ``VisionTransformer`` keys (``REMAPS``).

Each remap takes the loaded checkpoint (a dict) and returns ``(state dict in timm's names, keys left
out on purpose)``. Keys it does not know pass through unchanged, so a renamed or foreign key shows up
as "unexpected" in the loader's check instead of being dropped silently. The layouts, read from the
models' own code:

* ``dinov2_chunked`` (Cell-DINO, DINOv2 code with ``block_chunks=4``): ``blocks.<chunk>.<i>.<...>``
  (a chunk holds Identity placeholders, so ``<i>`` is the global block index), LayerScale ``ls1.gamma``,
  plus ``mask_token`` (iBOT masking; not used to embed).
* ``hf_vit_subcell`` (SubCell, Hugging Face ``ViTModel`` under ``encoder.`` plus ``pool_model.``): separate
  ``query``/``key``/``value`` projections (concatenated into timm's ``qkv``), ``layernorm_before/after``;
  the gated attention pooler's Linear layers at index 0 or 1 of their Sequential (SubCellPortable's loader
  maps ``1.`` to ``0.``); keys outside ``encoder.``/``pool_model.`` are ignored as that loader does.
* ``dino_teacher`` (DINO4Cells, the original DINO code): a training checkpoint whose ``teacher`` entry
  holds ``module.backbone.<timm-like key>`` and the DINO projection head ``head.*`` (not the backbone).
"""
from __future__ import annotations

import re
from typing import Callable

import torch

Remap = Callable[[dict], tuple[dict, list[str]]]
REMAPS: dict[str, Remap] = {}


def _register(name: str):
    def deco(fn: Remap) -> Remap:
        REMAPS[name] = fn
        return fn
    return deco


@_register("dinov2_chunked")
def dinov2_chunked(sd: dict) -> tuple[dict, list[str]]:
    """Cell-DINO / DINOv2 backbone keys -> timm."""
    out, ignored = {}, []
    for k, v in sd.items():
        if k == "mask_token":
            ignored.append(k)
            continue
        out[re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)] = v
    return out, ignored


_HF_BLOCK = {
    "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}


@_register("hf_vit_subcell")
def hf_vit_subcell(sd: dict) -> tuple[dict, list[str]]:
    """SubCell ``encoder.pth`` (Hugging Face ViT + gated attention pooler) -> timm + ``pool.*``."""
    out, ignored, qkv = {}, [], {}
    for k, v in sd.items():
        if k.startswith("pool_model."):
            rest = re.sub(r"^(attention_[uv])\.[01]\.", r"\1.0.", k[len("pool_model."):])
            out[f"pool.{rest}"] = v
            continue
        if not k.startswith("encoder."):
            ignored.append(k)
            continue
        k = k[len("encoder."):]
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m:
            i, part, kind = m.groups()
            q = re.fullmatch(r"attention\.attention\.(query|key|value)", part)
            if q:
                qkv.setdefault((i, kind), {})[q.group(1)] = v
                continue
            if part in _HF_BLOCK:
                out[f"blocks.{i}.{_HF_BLOCK[part]}.{kind}"] = v
                continue
        out[_HF_TOP.get(k, k)] = v
    for (i, kind), parts in qkv.items():
        if set(parts) == {"query", "key", "value"}:     # timm's qkv rows: q, then k, then v
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:                                            # incomplete: keep the names, the check reports them
            out.update({f"encoder.layer.{i}.attention.attention.{p}.{kind}": t for p, t in parts.items()})
    return out, ignored


@_register("dino_teacher")
def dino_teacher(sd: dict) -> tuple[dict, list[str]]:
    """DINO training checkpoint (``teacher``) or a bare backbone state dict -> timm."""
    if isinstance(sd.get("teacher"), dict):
        sd = sd["teacher"]
    out, ignored = {}, []
    for k, v in sd.items():
        k2 = k.replace("module.", "", 1) if k.startswith("module.") else k
        k2 = k2[len("backbone."):] if k2.startswith("backbone.") else k2
        if k2.startswith("head."):                       # DINOHead projection: training only
            ignored.append(k)
            continue
        out[k2] = v
    return out, ignored
