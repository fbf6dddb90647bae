"""Optimisers and learning-rate schedules, each from a registry, built from config sections.

Every schedule is a :class:`LRSchedule`: ``step_batch()`` after each optimiser step (per-iteration
warm-up and cosine), ``step_epoch(score)`` after validation (ReduceLROnPlateau on macro F1), and
``state_dict``/``load_state_dict`` for ``--resume``. ``step`` and ``multistep`` are piecewise in the
epoch, evaluated from the iteration count so every schedule resumes the same way.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from hpa.config import OptimConfig, SchedConfig
from hpa.errors import HPAError
from hpa.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("scheduler")


@OPTIMIZERS.register("adamw")
def adamw(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW with ``lr`` and decoupled ``weight_decay``."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (when ``momentum`` > 0) and ``weight_decay``."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0)


def param_groups(model: nn.Module, cfg: OptimConfig) -> list:
    """The parameters to optimise, grouped by timm when asked (never re-implemented here).

    ``no_decay_norm_bias``: timm's ``param_groups_weight_decay`` puts 1-d parameters (norm weights,
    biases) in a group with ``weight_decay`` 0. ``layer_decay`` (0 < d < 1): timm's
    ``param_groups_layer_decay`` scales each layer group's lr by ``d ** (depth from the head)``, using
    the model's ``group_matcher``; each group's ``lr`` is set to ``cfg.lr * lr_scale`` here because
    our schedules scale the groups' own lrs. Without either, one plain list of parameters.
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    if cfg.layer_decay:
        if not 0 < cfg.layer_decay <= 1:
            raise HPAError(f"optim.layer_decay must be in (0, 1] (0 = off), got {cfg.layer_decay}")
        groups = param_groups_layer_decay(model, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                                          weight_decay_exclude_1d=cfg.no_decay_norm_bias)
        for g in groups:
            g["lr"] = cfg.lr * g["lr_scale"]
        return groups
    if cfg.no_decay_norm_bias:
        return param_groups_weight_decay(model, cfg.weight_decay)
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Return the optimiser named ``cfg.name`` over the model's trainable parameters (grouped by
    :func:`param_groups`)."""
    if cfg.lr <= 0:
        raise HPAError(f"optim.lr must be > 0, got {cfg.lr}")
    return OPTIMIZERS.get(cfg.name)(param_groups(model, cfg), cfg)


class LRSchedule:
    """Per-iteration multiplier ``factor(epoch_float)`` on the base lr, times a linear warm-up.

    ``plateau`` wraps ``ReduceLROnPlateau`` (mode max) and only moves in ``step_epoch``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[float], float] | None,
                 steps_per_epoch: int, warmup_epochs: float = 0.0, plateau: dict | None = None):
        self.optimizer = optimizer
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.warmup_steps = warmup_epochs * self.steps_per_epoch
        self.factor = factor or (lambda e: 1.0)
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", **plateau)
                        if plateau is not None else None)
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.iteration = 0
        self._apply()

    def multiplier(self, iteration: int) -> float:
        """Return the lr multiplier at ``iteration`` (optimiser steps taken so far)."""
        warm = min(1.0, (iteration + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return warm * self.factor(iteration / self.steps_per_epoch)

    def _apply(self) -> None:
        m = self.multiplier(self.iteration)
        scale = self.plateau_scale()
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * m * scale

    def plateau_scale(self) -> float:
        """Reduction applied so far by the plateau scheduler (1.0 without one)."""
        if self.plateau is None:
            return 1.0
        return self.optimizer.param_groups[0].get("plateau_scale", 1.0)

    def step_batch(self) -> None:
        """Advance one optimiser step."""
        self.iteration += 1
        self._apply()

    def step_epoch(self, score: float) -> None:
        """End of epoch with validation ``score`` (macro F1): lets the plateau scheduler react."""
        if self.plateau is None:
            return
        before = self.optimizer.param_groups[0]["lr"]
        self.plateau.step(score)
        after = self.optimizer.param_groups[0]["lr"]
        if after < before:                       # remember the cut so warm-up does not undo it
            for g in self.optimizer.param_groups:
                g["plateau_scale"] = g.get("plateau_scale", 1.0) * after / before

    def get_last_lr(self) -> list[float]:
        """Return the current lr of every parameter group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Return the resumable state (iteration count, base lrs, plateau state)."""
        return {"iteration": self.iteration, "base_lrs": list(self.base_lrs),
                "plateau": self.plateau.state_dict() if self.plateau is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (the optimiser's own state is restored separately)."""
        self.iteration = int(state["iteration"])
        self.base_lrs = list(state["base_lrs"])
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


@SCHEDULES.register("none")
def _constant(cfg: SchedConfig, base_lr: float, epochs: int):
    return lambda e: 1.0


@SCHEDULES.register("step")
def _step(cfg: SchedConfig, base_lr: float, epochs: int):
    """x ``gamma`` every ``step_size`` epochs (Lin & Cao scheduler A: x0.1 every 15 of 30 epochs)."""
    if cfg.step_size <= 0:
        raise HPAError(f"sched.step_size must be > 0, got {cfg.step_size}")
    return lambda e: cfg.gamma ** math.floor(e / cfg.step_size + 1e-9)


@SCHEDULES.register("multistep")
def _multistep(cfg: SchedConfig, base_lr: float, epochs: int):
    """Explicit stages: lr = ``values[i]`` from epoch ``milestones[i]`` on (base lr before the first)."""
    ms, vs = list(cfg.milestones), list(cfg.values)
    if not ms or len(ms) != len(vs) or ms != sorted(ms):
        raise HPAError("sched: multistep needs ascending milestones and one value per milestone "
                       f"(got milestones={ms}, values={vs})")

    def factor(e: float) -> float:
        lr = base_lr
        for m, v in zip(ms, vs):
            if e + 1e-9 >= m:
                lr = v
        return lr / base_lr
    return factor


@SCHEDULES.register("cosine")
def _cosine(cfg: SchedConfig, base_lr: float, epochs: int):
    """Cosine from the base lr to ``min_lr`` over the epochs after warm-up."""
    span = max(1e-9, epochs - cfg.warmup_epochs)
    floor = cfg.min_lr / base_lr

    def factor(e: float) -> float:
        t = min(1.0, max(0.0, (e - cfg.warmup_epochs) / span))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


@SCHEDULES.register("plateau")
def _plateau(cfg: SchedConfig, base_lr: float, epochs: int):
    return None


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedConfig, epochs: int,
                    steps_per_epoch: int) -> LRSchedule:
    """Return the :class:`LRSchedule` named ``cfg.name`` for ``epochs`` of ``steps_per_epoch`` steps."""
    group = optimizer.param_groups[0]
    base_lr = group["lr"] / group.get("lr_scale", 1.0)     # layer decay scales groups' lrs
    factor = SCHEDULES.get(cfg.name)(cfg, base_lr, epochs)
    plateau = (dict(factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr)
               if cfg.name == "plateau" else None)
    return LRSchedule(optimizer, factor, steps_per_epoch, cfg.warmup_epochs, plateau)
