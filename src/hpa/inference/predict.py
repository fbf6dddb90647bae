"""Test-set prediction of a trained run: fold checkpoints x dihedral TTA -> ``test_probs.csv``.

All TTA views of a batch go through the model in one forward pass (concatenated along the batch
dimension); sigmoid probabilities are merged over views (mean or max), then averaged over folds.
Every input is checked before any model runs: checkpoints, the sample submission, the test images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.config import ExperimentConfig
from hpa.data.cache import check_images, open_images
from hpa.errors import HPAError
from hpa.registry import Registry
from hpa.rundir import RunDir, load_model
from hpa.transforms import crop_boxes, dihedral, load_size

TTA_MERGES: Registry = Registry("TTA merge", fixed=("p",))
TTA_MERGES.register("mean")(lambda p: p.mean(0))
TTA_MERGES.register("max")(lambda p: p.amax(0))


def tta_views(x: torch.Tensor, n: int, box: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Stack the first ``n`` dihedral views of a ``(B, C, H, W)`` batch into ``(n * B, C, H, W)``;
    with ``box`` ``(top, left, size)`` the views are of that crop of every image."""
    if not 1 <= n <= 8:
        raise HPAError(f"infer.tta: must be 1-8 dihedral views, got {n}")
    if box is not None:
        top, left, size = box
        x = x[:, :, top:top + size, left:left + size]
    return torch.cat([dihedral(x, k) for k in range(n)], dim=0)


@torch.no_grad()
def predict_images(model: torch.nn.Module, images: Sequence[np.ndarray], tta: int = 8,
                   merge: str = "mean", batch_size: int = 64, desc: str = "predict",
                   device: str | torch.device | None = None, amp: str = "no",
                   boxes: Sequence[tuple[int, int, int]] = ()) -> np.ndarray:
    """Return ``(N, 28)`` sigmoid probabilities of ``HxWx4`` uint8 images, merged over ``tta`` views.

    ``boxes`` (``(top, left, size)`` each, from :func:`tta_boxes`): multi-crop TTA, ``tta`` views of
    every crop, all ``len(boxes) * tta`` merged together (bestfitting merged crops x flips by max);
    empty: the whole image. One forward pass per crop keeps the batch at ``tta * batch_size``.
    ``device`` defaults to CUDA when available; there the model runs channels-last, uint8 batches
    are copied without blocking and ``amp`` ("bf16"/"fp16") autocast applies.
    """
    merge_fn = TTA_MERGES.get(merge)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    model.eval().to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, leave=False):
        batch = np.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
        # uint8 crosses to the device (4x fewer bytes than float); the model normalises there.
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device, non_blocking=cuda)
        probs = []
        for box in boxes or [None]:
            with torch.autocast(device.type, dtype=dtype, enabled=cuda and dtype is not None):
                logits = model(tta_views(x, tta, box).contiguous(
                    memory_format=torch.channels_last if cuda else torch.contiguous_format))
            probs.append(torch.sigmoid(logits.float()).view(tta, len(batch), -1))
        out.append(merge_fn(torch.cat(probs)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def tta_boxes(cfg: ExperimentConfig) -> list[tuple[int, int, int]]:
    """The crops of multi-crop TTA for ``cfg``: ``infer.crops`` boxes ``(top, left, data.image_size)``
    in the image loaded at ``train.crop_from`` (``infer.crop_mode``, seeded by ``seed``); [] when
    ``infer.crops`` is 0 (the whole image)."""
    n = cfg.infer.crops
    if n == 0:
        return []
    size, crop = load_size(cfg.data.image_size, cfg.train.crop_from), cfg.data.image_size
    if size <= crop:
        raise HPAError(f"infer.crops: {n} crops of {crop} px need a larger image: set train.crop_from "
                       f"above data.image_size (the run loads {size} px)")
    return [(y, x, crop) for y, x in crop_boxes(size, crop, n, cfg.infer.crop_mode, cfg.seed)]


def load_fold_model(cfg: ExperimentConfig, path: str | Path) -> torch.nn.Module:
    """Rebuild the run's model from its config and load a checkpoint (``hpa.rundir.load_model``)."""
    return load_model(cfg, path)


def check_test_images(image_dir: str | Path, ids: Sequence[str]) -> int:
    """Check every Id has its four channel PNGs (HPAError names the first missing file); return count."""
    return check_images(image_dir, ids, "kaggle")


def open_test_images(cfg: ExperimentConfig, ids: Sequence[str]) -> Sequence[np.ndarray]:
    """Open the run's test images at its load size (``train.crop_from`` when cropping, as validation
    saw them; through the image cache when configured)."""
    d = cfg.data
    return open_images(Path(d.root) / d.test_dir, list(ids), load_size(d.image_size, cfg.train.crop_from),
                       "kaggle", d.cache, d.cache_dir)


def predict_run(cfg: ExperimentConfig, run_dir: str | Path, ids: Sequence[str], images: Sequence[np.ndarray],
                folds: Sequence[int], tta: int, merge: str, which: str = "best") -> pd.DataFrame:
    """Average each fold's TTA probabilities on ``images`` (multi-crop when ``infer.crops``); return
    ``Id,p0..p27`` in ``ids`` order."""
    total = np.zeros((len(ids), NUM_CLASSES), dtype=np.float64)
    paths = RunDir(run_dir).checkpoint_paths(folds, which)
    boxes = tta_boxes(cfg)
    for k, path in zip(folds, paths):
        model = load_fold_model(cfg, path)
        total += predict_images(model, images, tta, merge, cfg.infer.batch_size,
                                desc=f"fold {k} x{tta * max(1, len(boxes))} TTA", amp=cfg.train.amp,
                                boxes=boxes)
    df = pd.DataFrame(total / len(paths), columns=PROB_COLUMNS)
    df.insert(0, "Id", list(ids))
    return df
