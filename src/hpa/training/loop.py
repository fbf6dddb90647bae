"""Train and validate one fold through ``accelerate`` (single process, DDP, CPU or CUDA).

Only the main process writes files. Validation gathers ``(logits, targets, index)`` with
``gather_for_metrics`` so the OOF rows are exact across processes (padding of the last batch dropped,
rows placed by their index). Checkpoints carry everything ``--resume`` needs.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.config import ExperimentConfig, TrainConfig, to_dict
from hpa.data.dataset import HPADataset
from hpa.data.views import RowView
from hpa.errors import HPAError
from hpa.gpu_augment import batch_seed, gpu_augment
from hpa.losses import build_loss
from hpa.metrics import macro_f1, per_class_f1
from hpa.models import build_model
from hpa.models.classifier import check_input_size
from hpa.optim import build_optimizer, build_scheduler
from hpa.samplers import DATA_SAMPLERS, EpochDataset, EvalSampler
from hpa.rundir import FoldDir
from hpa.synthetic.mixing.strategies import build_strategy
from hpa.training.checkpoint import newest_valid, rng_state, save_checkpoint, set_rng_state
from hpa.training.resize import size_at
from hpa.training.tracking import FoldTracker, flat_config
from hpa.transforms import build_eval_transform, build_train_transform, load_size

@dataclass
class FoldInput:
    """One fold's data: all training images, labels and Ids, and the train/validation row indices."""
    images: object                  # sequence of HxWx4 uint8
    y: np.ndarray                   # (N, 28) uint8
    ids: np.ndarray                 # (N,) str
    train_idx: np.ndarray
    val_idx: np.ndarray
    source: np.ndarray | None = None    # (N,) "kaggle" | "external" | "pseudo" per row; None = all Kaggle
    images_at: Callable[[int], object] | None = None   # the same images at another size (progressive resizing)

    def at(self, size: int):
        """The images at ``size`` (``images`` itself when no other sizes are available)."""
        return self.images if self.images_at is None else self.images_at(size)

    def kaggle_val(self) -> np.ndarray:
        """Bool mask over ``val_idx``: the Kaggle rows (scored, selected on, written to OOF)."""
        if self.source is None:
            return np.ones(len(self.val_idx), bool)
        return self.source[self.val_idx] == "kaggle"


def num_workers(n: int) -> int:
    """``-1`` -> ``min(4, cpu_count)``; otherwise ``n``."""
    return min(4, os.cpu_count() or 1) if n < 0 else n


def make_loaders(t: TrainConfig, image_size: int, data: FoldInput, seed: int, cuda: bool, strategy=None,
                 images=None):
    """Return ``(train_loader, val_loader, train_sampler)`` for one fold over ``images`` (default
    ``data.images``; training set rebuilt by a synthetic ``strategy`` when given; validation is always
    real images only), from the ``train`` section ``t`` and the model input size ``image_size``."""
    images = data.images if images is None else images
    ytr = data.y[data.train_idx]
    train_ds = EpochDataset(HPADataset(RowView(images, data.train_idx), ytr, build_train_transform(
        t.augment, image_size, t.crop_from, seed)), seed)
    val_ds = EpochDataset(HPADataset(RowView(images, data.val_idx), data.y[data.val_idx],
                                     build_eval_transform()), seed)
    if strategy is not None:
        train_ds, ytr = strategy.wrap_train(train_ds, ytr, data.ids[data.train_idx])
    sampler = DATA_SAMPLERS.build(t.sampler, t.sampler_params, "train.sampler_params", labels=ytr, seed=seed)
    workers = num_workers(t.num_workers)
    common = dict(num_workers=workers, pin_memory=t.pin_memory and cuda,
                  persistent_workers=t.persistent_workers and workers > 0)
    # drop_last: a last batch of one image breaks BatchNorm in training mode
    train = DataLoader(train_ds, batch_size=t.batch_size, sampler=sampler,
                       drop_last=len(train_ds) > t.batch_size, **common)
    val = DataLoader(val_ds, batch_size=t.val_batch_size or 2 * t.batch_size,
                     sampler=EvalSampler(len(val_ds), seed), **common)
    return train, val, sampler


def class_frequencies(y: np.ndarray) -> np.ndarray:
    """Positive rate of each class in ``y`` (for ``pos_weight: auto``)."""
    return y.astype(np.float64).mean(0)


class FoldTrainer:
    """Everything one fold trains with; :meth:`fit` runs the epochs and returns the fold summary."""

    def __init__(self, cfg: ExperimentConfig, fold: int, data: FoldInput, accelerator, fold_dir: Path):
        self.cfg, self.fold, self.data, self.acc = cfg, fold, data, accelerator
        self.files = FoldDir(fold_dir)      # nothing is written before fit(): a bad input leaves no folder
        seed = self.seed = cfg.seed + fold
        torch.manual_seed(seed)                     # same initial weights on every process
        np.random.seed(seed % 2**32)
        self.base = build_model(cfg.model)
        check_input_size(self.base, [cfg.data.image_size] + [int(s) for _, s in cfg.train.resize_schedule],
                         cfg.model.name)    # a ViT's fixed input size fails here, before any output
        if cfg.train.channels_last:
            self.base = self.base.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(cfg.loss, class_frequencies(data.y[data.train_idx]), cfg.model.head)
        optimizer = build_optimizer(self.base, cfg.optim)
        model = torch.compile(self.base) if cfg.train.compile else self.base
        self.load_size = load_size(cfg.data.image_size, cfg.train.crop_from)
        self.strategy = build_strategy(cfg, fold, data.ids[data.train_idx], data.ids[data.val_idx],
                                       self.load_size, seed)
        self.size = size_at(cfg.train.resize_schedule, self.load_size, 0)   # the size the loaders serve
        train, val, self.sampler = make_loaders(cfg.train, cfg.data.image_size, data, seed,
                                                accelerator.device.type == "cuda",
                                                self.strategy, data.at(self.size))
        self.model, self.optimizer, self.train_loader, self.val_loader = accelerator.prepare(
            model, optimizer, train, val)
        steps = math.ceil(len(self.train_loader) / cfg.train.accum_steps)
        self.sched = build_scheduler(self.optimizer.optimizer, cfg.sched, cfg.train.epochs, steps)
        self.steps_per_epoch = steps
        self.tracker = FoldTracker(accelerator, fold, cfg.train.log_with, flat_config(cfg))
        self.ema = (AveragedModel(self.base, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay),
                                  use_buffers=True) if cfg.train.ema else None)
        self.epoch, self.best_score, self.best_epoch, self.bad_epochs = 0, -1.0, 0, 0
        self.epoch_score = -1.0                     # validation macro F1 of the latest epoch
        self.history: list[dict] = []
        self.epoch_oof: list[pd.DataFrame] = []     # each epoch's held-out probabilities (train.select)

    # ------------------------------------------------------------------ state
    def eval_model(self) -> torch.nn.Module:
        """The weights validated and saved as ``model``: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def state(self) -> dict:
        """A resumable checkpoint dict (safe-loadable)."""
        scaler = self.acc.scaler.state_dict() if self.acc.scaler is not None else None
        eval_weights = self.ema.module if self.ema is not None else self.base
        return {"model": eval_weights.state_dict(), "epoch": self.epoch, "score": self.epoch_score,
                "fold": self.fold, "config": to_dict(self.cfg),
                "train_model": self.base.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": scaler, "ema": self.ema.state_dict() if self.ema is not None else None,
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "rng": rng_state()}

    def restore(self, state: dict) -> None:
        """Load a :meth:`state` dict (model, optimiser, scheduler, scaler, EMA, counters, RNG)."""
        self.base.load_state_dict(state["train_model"] if state.get("train_model") else state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.acc.scaler is not None and state.get("scaler"):
            self.acc.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.best_score, self.best_epoch = float(state["best_score"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        set_rng_state(state["rng"])

    def try_resume(self) -> str | None:
        """Continue from the newest loadable of ``last.pt`` / ``best.pt``; return a note or None."""
        found = newest_valid([self.files.last, self.files.best])
        if found is None:
            return None
        path, state = found
        self.restore(state)
        if self.files.history.is_file():
            h = self.files.read_history()
            self.history = h[h["epoch"] <= self.epoch].to_dict("records")
        done = self.files.read_epochs_oof()
        if done is not None:
            self.epoch_oof = [g for e, g in done.groupby("epoch") if e <= self.epoch]
        return f"fold {self.fold}: resumed from {path} (epoch {self.epoch})"

    # ------------------------------------------------------------------ epochs
    def resize(self) -> None:
        """Rebuild the data loaders over the images of this epoch's size when it changed."""
        size = size_at(self.cfg.train.resize_schedule, self.load_size, self.epoch)
        if size == self.size:
            return
        self.size = size
        train, val, self.sampler = make_loaders(self.cfg.train, self.cfg.data.image_size, self.data, self.seed,
                                                self.acc.device.type == "cuda",
                                                self.strategy, self.data.at(size))
        self.train_loader, self.val_loader = self.acc.prepare(train, val)
        self.acc.print(f"fold {self.fold} epoch {self.epoch + 1}: image size {size} px")

    def train_epoch(self) -> float:
        """One pass over the training loader; return the mean training loss."""
        self.model.train()
        # self.epoch = epochs done so far. accelerate's loader re-sets its sampler's epoch from its own
        # iteration counter (0 after --resume), so set that counter too.
        self.sampler.set_epoch(self.epoch)
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)
        self.strategy.start_epoch(self)
        total, n = 0.0, 0
        bar = tqdm(self.train_loader, desc=f"fold {self.fold} epoch {self.epoch + 1} train",
                   leave=False, disable=not self.acc.is_local_main_process)
        for step, (x, y, _) in enumerate(bar):
            if self.cfg.train.gpu_augment:      # augmentation on the batch, on the device (hpa.gpu_augment)
                x = gpu_augment(x, self.cfg.train.gpu_augment, batch_seed(
                    self.cfg.seed + self.fold, self.epoch, step, self.acc.process_index))
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.acc.accumulate(self.model):
                with self.acc.autocast():
                    loss = self.strategy.batch_loss(self.model, self.loss_fn, x, y)
                self.check_finite(loss)
                self.acc.backward(loss)
                if self.acc.sync_gradients and self.cfg.train.clip_grad > 0:
                    self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
                if self.epoch < self.cfg.train.freeze_backbone_epochs:
                    # frozen-backbone warm-up: no gradient, so the optimiser skips the backbone (weight
                    # decay and moments included); works under DDP, unlike toggling requires_grad
                    for p in self.base.backbone.parameters():
                        p.grad = None
                self.optimizer.step()
                self.optimizer.zero_grad()
                if self.acc.sync_gradients:
                    self.sched.step_batch()
                    if self.ema is not None:
                        self.ema.update_parameters(self.base)
            value = float(loss.detach())        # one device-to-host copy per step, shared by both uses
            total, n = total + value * len(x), n + len(x)
            if self.tracker.on and self.acc.sync_gradients:
                gstep = self.epoch * self.steps_per_epoch + step // self.cfg.train.accum_steps
                self.tracker.sample_batch(x, gstep)
                self.tracker.step(gstep, value, self.sched.get_last_lr()[0])
            bar.set_postfix(loss=f"{total / n:.4f}")
        mean = self.acc.reduce(torch.tensor([total, n], device=self.acc.device), "sum")
        return float(mean[0] / mean[1])

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop the fold (on every process) when any process's loss is NaN or infinite."""
        losses = self.acc.gather(loss.detach().float().reshape(1))
        if not torch.isfinite(losses).all():
            bad = losses[~torch.isfinite(losses)][0].item()
            last = self.files.last
            kept = str(last) if last.is_file() else "none yet"
            raise HPAError(f"fold {self.fold} epoch {self.epoch + 1}: loss is {bad}; stopped "
                           f"(last good checkpoint kept: {kept})")

    @torch.no_grad()
    def validate(self) -> tuple[float, np.ndarray]:
        """Return ``(val_loss, probs (n_val, 28))`` on the held-out fold, rows in ``val_idx`` order."""
        model = self.eval_model()
        model.eval()
        n_val = len(self.data.val_idx)
        probs = np.zeros((n_val, NUM_CLASSES), dtype=np.float64)
        kaggle = torch.from_numpy(self.data.kaggle_val())
        total, count = 0.0, 0
        bar = tqdm(self.val_loader, desc=f"fold {self.fold} epoch {self.epoch + 1} valid", leave=False,
                   disable=not self.acc.is_local_main_process)
        for x, y, idx in bar:
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.acc.autocast():
                logits = model(x)
            logits, y, idx = self.acc.gather_for_metrics((logits.float(), y, idx))
            keep = kaggle[idx.cpu()].to(logits.device)      # the loss of Kaggle rows only
            if bool(keep.all()):
                total += float(self.loss_fn(logits, y)) * len(y)
                count += len(y)
            elif bool(keep.any()):
                total += float(self.loss_fn(logits[keep], y[keep])) * int(keep.sum())
                count += int(keep.sum())
            probs[idx.cpu().numpy()] = torch.sigmoid(logits).cpu().double().numpy()
        return total / max(count, 1), probs

    def fit(self, resume: bool = False) -> dict:
        """Train the remaining epochs; write history, checkpoints and the fold OOF; return a summary."""
        if self.acc.is_main_process and self.cfg.synthetic.strategy != "none":
            self.files.write_synthetic(self.strategy.counts())
        note = self.try_resume() if resume else None
        if note:
            self.acc.print(note)
        self.tracker.start(resume)
        try:
            stop = self.epochs()
        finally:
            self.tracker.finish()
        summary = dict(fold=self.fold, best_epoch=self.best_epoch, best_score=self.best_score,
                       epochs=self.epoch, stopped=stop or "finished", synthetic=self.strategy.counts())
        if self.data.source is not None and (self.data.source == "external").any():
            summary["external"] = self.external_summary()
        if self.acc.is_main_process:
            self.files.write_summary(summary)
        self.acc.wait_for_everyone()
        return summary

    def epochs(self) -> str:
        """Train and validate until the last epoch or an early stop; return the stop reason ("" = none)."""
        y_val = self.data.y[self.data.val_idx]
        kag = self.data.kaggle_val()
        stop = ""
        while self.epoch < self.cfg.train.epochs and not stop:
            self.resize()
            t0 = time.perf_counter()
            train_loss = self.train_epoch()
            val_loss, probs = self.validate()
            score = macro_f1(y_val[kag], probs[kag] > 0.5)        # Kaggle rows: model selection, OOF
            self.epoch += 1
            lr = self.sched.get_last_lr()[0]
            self.history.append(dict(epoch=self.epoch, train_loss=train_loss, val_loss=val_loss,
                                     val_f1=score, lr=lr, time_s=time.perf_counter() - t0, image_size=self.size))
            if not kag.all():                                     # external rows validated too
                self.history[-1]["val_f1_external"] = macro_f1(y_val[~kag], probs[~kag] > 0.5)
            self.tracker.epoch(self.epoch * self.steps_per_epoch, self.history[-1],
                               per_class_f1(y_val[kag], probs[kag] > 0.5), self.size)
            improved = score > self.best_score
            if improved:
                self.best_score, self.best_epoch, self.bad_epochs = score, self.epoch, 0
            else:
                self.bad_epochs += 1
            self.sched.step_epoch(score)
            self.epoch_score = score
            self.save_epoch(probs, improved)
            ext = self.history[-1].get("val_f1_external")
            self.acc.print(f"fold {self.fold} epoch {self.epoch}/{self.cfg.train.epochs}: "
                           f"train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                           f"val macro F1 {score:.4f}{' *' if improved else ''}"
                           f"{'' if ext is None else f' (external {ext:.4f})'}, lr {lr:.2e}, "
                           f"{self.history[-1]['time_s']:.1f}s, {self.size} px")
            es = self.cfg.train.early_stopping
            if es and self.bad_epochs >= es:
                stop = f"early stop after {self.bad_epochs} epochs without improvement"
        return stop

    def external_summary(self) -> dict:
        """External rows trained and validated in this fold, and their validation macro F1 at the best
        epoch (None when none is validated)."""
        src, best = self.data.source, None
        for row in self.history:
            if row["epoch"] == self.best_epoch:
                best = row.get("val_f1_external")
        return {"train": int((src[self.data.train_idx] == "external").sum()),
                "val": int((src[self.data.val_idx] == "external").sum()),
                "val_f1": None if best is None else float(best)}

    def save_epoch(self, probs: np.ndarray, improved: bool) -> None:
        """Main process: history.csv, the epoch's held-out probabilities (epochs_oof.csv), best.pt + fold
        OOF when improved, last.pt, the epoch's weights (``train.keep_checkpoints``)."""
        if self.acc.is_main_process:
            self.files.write_history(self.history)
            kag = self.data.kaggle_val()        # OOF holds the Kaggle rows only
            oof = pd.DataFrame(probs[kag], columns=PROB_COLUMNS)
            oof.insert(0, "fold", self.fold)
            oof.insert(0, "Id", self.data.ids[self.data.val_idx][kag])
            self.epoch_oof.append(oof.assign(epoch=self.epoch)[["Id", "fold", "epoch", *PROB_COLUMNS]])
            self.files.write_epochs_oof(pd.concat(self.epoch_oof, ignore_index=True))
            state = self.state()
            if improved:
                save_checkpoint(self.files.best, state)
                self.files.write_oof(oof)
            save_checkpoint(self.files.last, state)
            self.files.keep_epoch_weights(state, self.cfg.train.keep_checkpoints)
        self.acc.wait_for_everyone()
