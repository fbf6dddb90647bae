"""Row 8, ``embed``: ``hpa embed``'s batched path against a bare forward of the same backbone, and the
counted cost of embedding 10,000 images with each registered foundation backbone on a GPU.

The row times :func:`hpa.probe.embed.embed_batch` (uint8 batch -> device -> views -> channel choice and
per-image normalisation -> ViT -> pooling -> host) against ``vit.forward_features`` on float tensors
already on the device, interleaved. On the CPU (and with ``--quick``) the backbone is a tiny ViT of the
published layout (64-d, 2 blocks) at 64 px; with ``--device cuda`` it is the published size at its
native resolution, bf16 + channels-last (tools/gpu_check.sh runs it).

:func:`embed_estimates` counts FLOPs per image (``FlopCounterMode`` on the meta device: no weights)
and turns them into GPU seconds per 10,000 images at an assumed share of the bf16 matmul peak
(``ASSUMED_VIT_SHARE``); every such figure is an estimate until the GPU row measures it.
"""
from __future__ import annotations

import numpy as np
import torch

from hpa.bench.core import ROWS, BenchContext, interleaved, make_row
from hpa.bench.projection import H200_BF16_TFLOPS
from hpa.config import EmbedConfig
from hpa.models.foundation import FOUNDATION, build_foundation
from hpa.probe.embed import embed_batch

#: ViT inference in bf16 at batch 64 keeps its matmuls large: 40% of the matmul peak assumed (ViT-B/L
#: inference in timm's benchmark tables reach 35-50% on A100/H100); used only for the estimates
ASSUMED_VIT_SHARE = 0.40
TINY = dict(embed_dim=64, depth=2, num_heads=2)


def embed_flops(name: str, size: int, tiny: bool = False) -> float:
    """Forward FLOPs of one ``size`` px image through foundation backbone ``name`` (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_foundation(name, pretrained=False, img_size=size, **(TINY if tiny else {})).eval()
        x = torch.empty(1, 4, size, size)
    with FlopCounterMode(display=False) as fc:
        model(x)
    return float(fc.get_total_flops())


def embed_estimates(size: int | None = None, images: int = 10_000) -> list[dict]:
    """Per registered backbone: GFLOP/image at ``size`` (default its native size) and estimated GPU
    seconds for ``images`` images (H200 bf16 peak x ``ASSUMED_VIT_SHARE``)."""
    out = []
    for name in FOUNDATION.names():
        spec = FOUNDATION.get(name)
        px = size or spec.native_size
        f = embed_flops(name, px)
        out.append({"name": name, "size": px, "gflop": f / 1e9,
                    "seconds": images * f / (H200_BF16_TFLOPS * 1e12 * ASSUMED_VIT_SHARE)})
    return out


@ROWS.register("embed", order=8)
def row_embed(ctx: BenchContext) -> dict:
    """Row 8: ``hpa embed``'s batch path vs a bare forward of the same backbone, images/s."""
    name = ctx.extra.get("foundation", "celldino_hpa_sc")
    full = ctx.device == "cuda" and not ctx.quick
    size = FOUNDATION.get(name).native_size if full else 64
    dev = torch.device(ctx.device)
    torch.manual_seed(ctx.seed)
    model = build_foundation(name, pretrained=False, img_size=size, **({} if full else TINY)).eval().to(dev)
    if full:
        model = model.to(memory_format=torch.channels_last)
    batch = ctx.batch_size if full else 8
    n = batch * (2 if ctx.quick else 4)
    images = np.random.default_rng(ctx.seed).integers(0, 255, (n, size, size, 4), dtype=np.uint8)
    e = EmbedConfig(batch_size=batch)
    x = model.prepare(torch.from_numpy(images).permute(0, 3, 1, 2).to(dev))
    if full:
        x = x.contiguous(memory_format=torch.channels_last)

    def ours() -> int:
        for b in range(0, n, batch):
            embed_batch(model, images[b:b + batch], e, dev)
        return n

    @torch.no_grad()
    def bare() -> int:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=full):
            for b in range(0, n, batch):
                model.vit.forward_features(x[b:b + batch])
        return n

    r = interleaved({"embed": ours, "bare": bare}, ctx.repeats, ctx.sync)
    ratio = r["embed"] / r["bare"]
    what = f"{name} {'published size' if full else 'tiny (64-d, 2 blocks)'} at {size}px, batch {batch}"
    return make_row("embedding", "images/s",
                    {"hpa embed": r["embed"], "bare forward": r["bare"],
                     "s per 10k images": 10_000 / r["embed"]},
                    {"embed / bare": ratio}, "GPU, published size: overhead < 15% (>= 0.85); tiny CPU: report",
                    bool(ratio >= 0.85) if full else None,
                    f"{what}, {'bf16 + channels-last' if full else 'fp32'}; embed includes uint8 -> device, "
                    "normalisation, pooling and the copy back")


def readme_table() -> str:
    """The README's table of foundation backbones, generated from ``FOUNDATION`` and the counted
    FLOPs (``tests/test_foundation.py`` checks the README holds exactly this)."""
    est = {r["name"]: r for r in embed_estimates()}
    lines = ["| `model.name` / `embed.source` | model | licence | channels (from Kaggle RGBY) | size | "
             "embedding | GPU s / 10,000 images (estimate) | weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in FOUNDATION.names():
        s, e = FOUNDATION.get(name), est[name]
        licence = ("**non-commercial**: " if s.non_commercial else "") + s.licence
        repo = s.source.split(" ")[0]
        weights = "published URL, cached" if s.url else "URL not confirmed: give `weights`"
        lines.append(f"| `foundation/{name}` | {s.title} ([{repo}](https://github.com/{repo})) | {licence} | "
                     f"{s.channels} | {s.params_m:.0f} M, {s.native_size} px, patch {s.patch_size} | "
                     f"{s.pool}, {_dim(s)}-d | {e['seconds']:.0f} s ({e['gflop']:.0f} GFLOP/image) | {weights} |")
    return "\n".join(lines)


def _dim(spec) -> int:
    d = spec.arch_kwargs["embed_dim"]
    return d * spec.extra.get("pool_heads", 1) if spec.pool == "gated" else d * (2 if spec.pool == "cls+avg" else 1)
