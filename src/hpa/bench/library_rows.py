"""Bench row ``libraries``: the pieces still written by hand against the library that would replace them.

Each pair is checked for the same answer and timed in the same process (interleaved), so the README's
library table can say why the hand-written piece stays: macro F1 against scikit-learn (exact, speed),
the cosine ``LRSchedule`` against ``timm.scheduler.CosineLRScheduler`` (the same lrs without warm-up,
another warm-up shape with it), and the batch augmentation of ``hpa.gpu_augment`` against torchvision's
``transforms.v2`` applied image by image (v2 draws one set of parameters per call, and its
brightness/contrast refuses 4-channel images).
"""
from __future__ import annotations

import numpy as np
import torch

from hpa.bench.core import ROWS, BenchContext, interleaved, make_row
from hpa.config import AugOp
from hpa.gpu_augment import gpu_augment
from hpa.metrics import macro_f1
from hpa.optim import cosine

GPU_OPS = [AugOp("hflip"), AugOp("vflip"), AugOp("shift_scale_rotate", {"p": 1.0})]


def cosine_lrs(warmup: float, epochs: int = 18, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The lr of every step of our cosine schedule and of timm's ``CosineLRScheduler`` set up alike
    (timm's warm-up: linear from ``lr / warmup_steps``, then the cosine over the remaining steps)."""
    from timm.scheduler import CosineLRScheduler

    def opt():
        return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    ours, theirs = opt(), opt()
    sched = cosine(ours, epochs=epochs, steps_per_epoch=steps, warmup_epochs=warmup)
    warm = int(warmup * steps)
    timm_sched = CosineLRScheduler(theirs, t_initial=epochs * steps - warm, lr_min=0.0, warmup_t=warm,
                                   warmup_lr_init=1e-3 / warm if warm else 0, warmup_prefix=True,
                                   t_in_epochs=False)
    a, b = [], []
    for i in range(epochs * steps):
        timm_sched.step_update(i)
        a.append(ours.param_groups[0]["lr"])
        b.append(theirs.param_groups[0]["lr"])
        sched.step_batch()
    return np.array(a), np.array(b)


@ROWS.register("libraries", order=9)
def row_libraries(ctx: BenchContext) -> dict:
    """Hand-written pieces vs their libraries: same answers, and rates where speed is the reason."""
    import torchvision.transforms.v2 as T
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(ctx.seed)
    n = 3000 if ctx.quick else 31072                      # the real training set's size
    y, p = rng.random((n, 28)) < 0.1, rng.random((n, 28)) < 0.12
    f1_gap = abs(macro_f1(y, p) - f1_score(y, p, average="macro", zero_division=0))
    f1 = interleaved({"ours": lambda: macro_f1(y, p) and n,
                      "sklearn": lambda: f1_score(y, p, average="macro", zero_division=0) and n},
                     ctx.repeats)
    plain, warm = cosine_lrs(0.0), cosine_lrs(1.0)
    side = 32 if ctx.quick else 128
    x = torch.from_numpy(rng.integers(0, 256, (16, 4, side, side), dtype=np.uint8))
    v2 = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                    T.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.9, 1.1))])
    aug = interleaved({"ours": lambda: len(gpu_augment(x, GPU_OPS, 0)),
                       "v2": lambda: len(torch.stack([v2(im) for im in x]))}, ctx.repeats)
    figures = {"macro F1 rows/s ours": f1["ours"], "macro F1 rows/s sklearn": f1["sklearn"],
               "macro F1 gap to sklearn": f1_gap,
               "cosine max rel lr gap, no warm-up": float(np.abs(plain[0] - plain[1]).max() / 1e-3),
               "cosine max rel lr gap, 1 warm-up epoch": float(np.abs(warm[0] - warm[1]).max() / 1e-3),
               f"batch aug img/s ours ({side} px, CPU)": aug["ours"], "batch aug img/s v2 per image": aug["v2"]}
    ratios = {"F1 ours / sklearn": f1["ours"] / f1["sklearn"], "batch aug ours / v2 per image": aug["ours"] / aug["v2"]}
    note = (f"macro F1 equals sklearn's (gap {f1_gap:.1e}); timm cosine: same lrs without warm-up, "
            f"{figures['cosine max rel lr gap, 1 warm-up epoch']:.1%} apart with one (another warm-up shape)")
    return make_row("libraries", "ratio", figures, ratios, "report", None, note)
