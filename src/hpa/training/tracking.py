"""Experiment tracking through ``accelerate``'s trackers (``train.log_with``).

``tensorboard`` (the default) writes event files into the run folder (``runs/<exp>/tensorboard/fold<k>/``,
the path from :meth:`hpa.rundir.RunDir.tracking`); ``wandb`` and ``mlflow`` are accepted and need
their package only when chosen; ``none`` turns tracking off. What is logged, on the main process only:
the loss and learning rate of every optimiser step, the validation loss, macro F1 and per-class F1 of
every epoch, the image size (progressive resizing), and one sample training batch (RGB view of the
RGBY input) at the first step. Every value is logged at the global optimiser step, so the x axes agree
and wandb (which needs increasing steps) accepts them.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpa.classes import CLASS_NAMES
from hpa.config import dotted_items, to_dict
from hpa.errors import HPAError
from hpa.io import check_output_dir

#: tracker name -> the packages that provide it (any one is enough)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
TRACKERS = tuple(TRACKER_PACKAGES) + ("none",)


def check_tracker(name: str) -> None:
    """HPAError (one line) when tracker ``name`` is unknown or its package is not installed."""
    if name == "none":
        return
    if name not in TRACKER_PACKAGES:
        raise HPAError(f"train.log_with: '{name}' not one of {', '.join(TRACKERS)}")
    packages = TRACKER_PACKAGES[name]
    if not any(importlib.util.find_spec(p) is not None for p in packages):
        raise HPAError(f"train.log_with: {name} needs the '{packages[0]}' package (pip install {packages[0]}), "
                       "or set train.log_with: none")


def accelerator_kwargs(name: str, tracking_dir: Path | None) -> dict:
    """``Accelerator`` keyword arguments for tracker ``name`` (``train.log_with``) writing under
    ``tracking_dir`` (None or ``none``: no tracking)."""
    if tracking_dir is None or name == "none":
        return {}
    check_tracker(name)
    check_output_dir(tracking_dir, "train.log_with writes there")    # before config.yaml is written
    return {"log_with": name, "project_dir": str(tracking_dir)}


def flat_config(cfg: Any) -> dict:
    """The config as ``{"a.b": scalar}`` (lists and dicts as strings): what trackers take as hparams."""
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in dotted_items(to_dict(cfg)).items()}


def rgb_view(x: torch.Tensor, n: int = 16) -> torch.Tensor:
    """The first ``n`` images of an RGBY uint8 batch ``(B, 4, H, W)`` as float RGB in [0, 1]
    (yellow shown as half red + half green, the usual HPA rendering)."""
    x = x[:n].detach().float().cpu() / 255.0
    rgb = x[:, :3].clone()
    if x.shape[1] > 3:
        rgb[:, 0] += x[:, 3] / 2
        rgb[:, 1] += x[:, 3] / 2
    return rgb.clamp(0, 1)


class FoldTracker:
    """One fold's tracking run (``fold<k>``) on the accelerator's trackers; a no-op without them.

    ``log_with`` is the tracker's name (``train.log_with``), ``hparams`` the flat settings it records
    (:func:`flat_config` of the experiment)."""

    def __init__(self, accelerator, fold: int, log_with: str, hparams: dict):
        self.acc, self.fold, self.log_with, self.hparams = accelerator, fold, log_with, hparams
        self.on = bool(getattr(accelerator, "log_with", None))
        self.image_logged = False

    def start(self, resume: bool) -> None:
        """Open the fold's run; a fresh (non-resumed) fold first removes its old event files."""
        if not self.on:
            return
        if self.acc.is_main_process and not resume and self.acc.logging_dir:
            shutil.rmtree(Path(self.acc.logging_dir) / f"fold{self.fold}", ignore_errors=True)
        init = {"wandb": {"dir": str(self.acc.logging_dir)}} if self.log_with == "wandb" else {}
        self.acc.init_trackers(f"fold{self.fold}", config=self.hparams, init_kwargs=init)

    def step(self, step: int, loss: float, lr: float) -> None:
        """Log one optimiser step's loss and learning rate."""
        if self.on:
            self.acc.log({"train/loss": loss, "train/lr": lr}, step=step)

    def sample_batch(self, x: torch.Tensor, step: int) -> None:
        """Log the first training batch seen (once per fold run) as images."""
        if not self.on or self.image_logged or not self.acc.is_main_process:
            return
        self.image_logged = True
        rgb = rgb_view(x)
        for tracker in self.acc.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"train/sample_batch": rgb}, step=step, dataformats="NCHW")
            elif hasattr(tracker, "log_images"):
                try:
                    tracker.log_images({"train/sample_batch": [im.permute(1, 2, 0).numpy() for im in rgb]},
                                       step=step)
                except NotImplementedError:
                    pass

    def epoch(self, step: int, row: dict, per_class: np.ndarray, image_size: int) -> None:
        """Log one epoch's history row (train/val loss, val macro F1), per-class F1 and image size."""
        if not self.on:
            return
        values = {"epoch": row["epoch"], "train/epoch_loss": row["train_loss"], "val/loss": row["val_loss"],
                  "val/macro_f1": row["val_f1"], "train/image_size": image_size}
        values.update({f"val_f1/{i:02d}_{name}": float(f) for i, (name, f) in enumerate(zip(CLASS_NAMES, per_class))})
        self.acc.log(values, step=step)

    def finish(self) -> None:
        """Close the fold's trackers (the accelerator stays usable for the next fold)."""
        if not self.on:
            return
        for tracker in self.acc.trackers:
            tracker.finish()
        self.acc.trackers = []
