"""Rows 2, 3 and 7: the training loop and TTA x folds inference against bare PyTorch loops.

The training row builds the real ``FoldTrainer`` (accelerate, DataLoader over an in-memory uint8
array, loss, scheduler, finite-loss check, progress bar) and times whole epochs; the baseline is a
bare timm loop on the same architecture, batch, precision and data, already as tensors on the device.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from hpa.bench.core import ROWS, BenchContext, interleaved, make_row, not_run
from hpa.classes import NUM_CLASSES
from hpa.config import ExperimentConfig
from hpa.inference.predict import load_fold_model, predict_images
from hpa.models import build_model
from hpa.rundir import RunDir
from hpa.training.loop import FoldInput, FoldTrainer
from hpa.training.run import make_accelerator
from hpa.transforms import dihedral

#: bf16 dense matrix-multiply peak, TFLOP/s, by a substring of the CUDA device name
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0,
                    "L4": 121.0, "4090": 165.0, "3090": 71.0}
GPU_MODELS = ("resnet18", "resnet34", "densenet121")


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """The bf16 dense peak of a GPU by name (``override`` wins); None when the name is not in the table."""
    if override:
        return float(override)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def train_config(model: str, size: int, batch: int, cuda: bool, compile_: bool = False):
    """An ``ExperimentConfig`` for speed runs: no augmentation; bf16 + channels-last + workers on CUDA."""
    cfg = ExperimentConfig(name="bench")
    cfg.model.name, cfg.data.image_size = model, size
    # CPU: in-process loading (workers would compete with the model for 2 cores); CUDA: the
    # pipeline's default worker count (-1 = sized to the machine) with pinned memory
    cfg.train.batch_size, cfg.train.num_workers, cfg.train.augment = batch, -1 if cuda else 0, []
    cfg.train.amp = "bf16" if cuda else "no"
    cfg.train.channels_last = cuda
    cfg.train.compile = compile_
    cfg.sched.name = "none"
    return cfg


def synthetic_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size, 4)`` uint8 images and ``(n, 28)`` labels (speed runs: content is irrelevant)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 4), dtype=np.uint8)
    y = (rng.random((n, NUM_CLASSES)) < 0.1).astype(np.uint8)
    y[np.arange(n), rng.integers(0, NUM_CLASSES, n)] = 1
    return images, y


def bare_trainer(cfg, images: np.ndarray, y: np.ndarray, device: str):
    """A bare timm loop: returns ``epoch() -> images`` over pre-made device tensors (same model/batch/amp)."""
    import timm

    torch.manual_seed(cfg.seed)
    model = timm.create_model(cfg.model.name, in_chans=4, num_classes=NUM_CLASSES).to(device).train()
    cl = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=cl)
    net = torch.compile(model) if cfg.train.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bs = cfg.train.batch_size
    # already normalised floats on the device: the bare loop does nothing but the step itself
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device, memory_format=cl)
    y_all = torch.from_numpy(y).float().to(device)
    batches = [(x_all[i:i + bs], y_all[i:i + bs]) for i in range(0, len(x_all) - bs + 1, bs)]
    amp = cfg.train.amp == "bf16" and device == "cuda"

    def epoch() -> int:
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
        return len(batches) * bs

    return epoch, model, batches[0]


def pipeline_trainer(cfg, images: np.ndarray, y: np.ndarray, work: Path):
    """The real ``FoldTrainer`` on the same data: returns ``epoch() -> images`` (train_epoch only)."""
    n = len(images)
    val = np.arange(n - cfg.train.batch_size, n)      # FoldTrainer needs a validation split
    data = FoldInput(images, y, np.array([f"i{i}" for i in range(n)]), np.arange(n - len(val)), val)
    trainer = FoldTrainer(cfg, 0, data, make_accelerator(cfg), RunDir(work).fold(0).path)

    def epoch() -> int:
        trainer.train_epoch()
        trainer.epoch += 1                          # a new sampler order each epoch, as in fit()
        return len(trainer.train_loader) * cfg.train.batch_size

    return epoch


def step_flops(model: torch.nn.Module, batch: tuple, device: str, amp: bool) -> float:
    """FLOPs of one training step (forward + backward) counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    xb, yb = batch
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def compare_training(ctx: BenchContext, model: str, size: int, batch: int, steps: int) -> dict:
    """Images/s of ``FoldTrainer.train_epoch`` and of the bare loop, plus FLOPs per image."""
    cuda = ctx.device == "cuda"
    cfg = train_config(model, size, batch, cuda, ctx.compile)
    images, y = synthetic_images(batch * (steps + 1), size, ctx.seed)
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        ours = pipeline_trainer(cfg, images, y, Path(tmp))
        bare, net, first = bare_trainer(cfg, images[:batch * steps], y[:batch * steps], ctx.device)
        rates = interleaved({"pipeline": ours, "bare": bare}, ctx.repeats, ctx.sync)
    flops = step_flops(net, first, ctx.device, cuda) / batch
    return {"pipeline": rates["pipeline"], "bare": rates["bare"], "flops_per_image": flops}


@ROWS.register("train", order=2)
def row_train(ctx: BenchContext) -> dict:
    """Row 2: ``train.py``'s epoch loop vs a bare timm loop, images/s."""
    steps = 3 if ctx.quick else 4
    m = compare_training(ctx, ctx.model, ctx.size, ctx.batch_size, steps)
    ratio = m["pipeline"] / m["bare"]
    prec = "bf16 + channels-last" if ctx.device == "cuda" else "fp32"
    return make_row("training step", "images/s",
                    {"train loop": m["pipeline"], "bare timm": m["bare"],
                     "GFLOP/image": m["flops_per_image"] / 1e9},
                    {"train loop / bare": ratio}, "overhead < 10% (>= 0.9)", bool(ratio >= 0.9),
                    f"{ctx.model} {ctx.size}px, batch {ctx.batch_size}, {steps} steps/epoch, {prec}, "
                    "in-memory uint8 (loop) vs ready float tensors (bare)")


def save_fake_run(run_dir: Path, cfg, folds: list[int]) -> None:
    """Write ``config.yaml`` and ``fold<k>/best.pt`` (random weights) so ``predict_run`` can load them."""
    rd = RunDir(run_dir)
    rd.save_config(cfg)
    for k in folds:
        torch.manual_seed(k)
        rd.fold(k).path.mkdir(parents=True, exist_ok=True)
        torch.save({"model": build_model(cfg.model).state_dict(), "epoch": 0, "score": 0.0}, rd.fold(k).best)


@ROWS.register("infer", order=3)
def row_infer(ctx: BenchContext) -> dict:
    """Row 3: ``predict_images`` (batched TTA) over the fold models vs the same number of bare forwards.

    The fold checkpoints are loaded once through ``load_fold_model`` (timed apart: a one-off per fold,
    amortised over the 11,702 test images), so the ratio measures the per-image hot path.
    """
    import time

    folds, tta = ([0, 1], 4) if ctx.quick else ([0, 1, 2], 8)
    n = 8 if ctx.quick else 12
    cfg = train_config(ctx.model, ctx.size, ctx.batch_size, False)
    images, _ = synthetic_images(n, ctx.size, ctx.seed)
    run_dir = ctx.work / "infer_run"
    save_fake_run(run_dir, cfg, folds)
    t0 = time.perf_counter()
    run_cfg = RunDir(run_dir).load_config()
    models = [load_fold_model(run_cfg, p) for p in RunDir(run_dir).checkpoint_paths(folds)]
    load_s = (time.perf_counter() - t0) / len(folds)
    # both on the CPU on every device: hpa.inference.predict has no device handling (yet)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    views = torch.cat([dihedral(x, k) for k in range(tta)])
    batch = min(n, run_cfg.infer.batch_size)

    def ours() -> int:
        for m in models:
            predict_images(m, images, tta, "mean", batch)
        return n * tta * len(folds)

    @torch.no_grad()
    def bare() -> int:
        for m in models:
            for i in range(0, len(views), batch * tta):
                m(views[i:i + batch * tta])
        return n * tta * len(folds)

    rates = interleaved({"predict": ours, "bare": bare}, ctx.repeats)
    ratio = rates["predict"] / rates["bare"]
    return make_row("inference TTA x folds", "views/s",
                    {"predict_images": rates["predict"], "bare forward": rates["bare"],
                     "checkpoint load s/fold": load_s},
                    {"predict / bare": ratio}, ">= 0.9", bool(ratio >= 0.9),
                    f"{ctx.model} {ctx.size}px, {len(folds)} folds x {tta} views x {n} images, "
                    f"{batch} images ({batch * tta} views) per forward, fp32 on the CPU")


@ROWS.register("gpu_train", order=7)
def row_gpu_train(ctx: BenchContext) -> dict:
    """Row 7 (CUDA only): 512 px bf16 channels-last training of three backbones, share of matmul peak."""
    goal = "report (loop >= 0.9x bare)"
    if ctx.device != "cuda":
        return not_run("GPU training 512px", "images/s", goal, "not run (needs --device cuda)")
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name, ctx.peak_tflops)
    figures, ratios, ok = {}, {}, True
    for model in GPU_MODELS:
        m = compare_training(ctx, model, 512, 64, 6)
        tflops = m["flops_per_image"] * m["pipeline"] / 1e12
        figures[f"{model} loop"] = m["pipeline"]
        figures[f"{model} bare"] = m["bare"]
        figures[f"{model} TFLOP/s"] = tflops
        if peak:
            figures[f"{model} % peak"] = 100 * tflops / peak
        ratios[f"{model} loop / bare"] = m["pipeline"] / m["bare"]
        ok = ok and ratios[f"{model} loop / bare"] >= 0.9
    note = f"{name}, batch 64, bf16 autocast + channels-last; peak {peak or 'unknown (use --peak-tflops)'} TFLOP/s"
    return make_row("GPU training 512px", "images/s", figures, ratios, goal, ok, note)

