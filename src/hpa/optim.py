"""Optimisers and learning-rate schedules, each from a registry, built from config sections.

Factories take plain keyword arguments (timm's style): ``OPTIMIZERS.get(name)(params, lr=,
weight_decay=, **optim.params)`` and ``SCHEDULES.get(name)(optimizer, epochs=, steps_per_epoch=,
warmup_epochs=, **sched.params)``; ``optim.params``/``sched.params`` may set only the keyword
arguments a factory names (``momentum`` for ``sgd``, ``step_size`` for ``step``...).

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

# the fixed arguments come from build_optimizer / build_scheduler, not from optim.params / sched.params
OPTIMIZERS: Registry = Registry("optimizer", fixed=("params", "lr", "weight_decay"))
SCHEDULES: Registry = Registry("scheduler", fixed=("optimizer", "epochs", "steps_per_epoch", "warmup_epochs"))


@OPTIMIZERS.register("adamw")
def adamw(params, lr: float, weight_decay: float = 0.0, betas: list[float] = (0.9, 0.999),
          eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW with ``lr`` and decoupled ``weight_decay``."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("sgd")
def sgd(params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
        nesterov: bool | None = None) -> torch.optim.Optimizer:
    """SGD with ``momentum``, Nesterov by default when ``momentum`` > 0, and ``weight_decay``."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=momentum > 0 if nesterov is None else nesterov)


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
    return OPTIMIZERS.build(cfg.name, cfg.params, "optim.params", params=param_groups(model, cfg), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)


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


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The configured lr: the first group's lr without its layer-decay scale (timm's ``lr_scale``)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


@SCHEDULES.register("none")
def constant(optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> LRSchedule:
    """The base lr throughout (after the warm-up)."""
    return LRSchedule(optimizer, None, steps_per_epoch, warmup_epochs)


@SCHEDULES.register("step")
def step(optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0, step_size: int = 10,
         gamma: float = 0.1) -> LRSchedule:
    """x ``gamma`` every ``step_size`` epochs (Lin & Cao scheduler A: x0.1 every 15 of 30 epochs)."""
    if step_size <= 0:
        raise HPAError(f"sched.params.step_size must be > 0, got {step_size}")
    return LRSchedule(optimizer, lambda e: gamma ** math.floor(e / step_size + 1e-9), steps_per_epoch,
                      warmup_epochs)


@SCHEDULES.register("multistep", example={"milestones": [1], "values": [1e-4]})
def multistep(optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
              milestones: list[int] = (), values: list[float] = ()) -> LRSchedule:
    """Explicit stages: lr = ``values[i]`` from epoch ``milestones[i]`` on (base lr before the first)."""
    ms, vs = list(milestones), list(values)
    if not ms or len(ms) != len(vs) or ms != sorted(ms):
        raise HPAError("sched: multistep needs ascending milestones and one value per milestone "
                       f"(got milestones={ms}, values={vs})")
    lr0 = base_lr(optimizer)

    def factor(e: float) -> float:
        lr = lr0
        for m, v in zip(ms, vs):
            if e + 1e-9 >= m:
                lr = v
        return lr / lr0
    return LRSchedule(optimizer, factor, steps_per_epoch, warmup_epochs)


@SCHEDULES.register("cosine")
def cosine(optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
           min_lr: float = 0.0) -> LRSchedule:
    """Cosine from the base lr to ``min_lr`` over the epochs after warm-up."""
    span = max(1e-9, epochs - warmup_epochs)
    floor = min_lr / base_lr(optimizer)

    def factor(e: float) -> float:
        t = min(1.0, max(0.0, (e - warmup_epochs) / span))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return LRSchedule(optimizer, factor, steps_per_epoch, warmup_epochs)


@SCHEDULES.register("plateau")
def plateau(optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0, factor: float = 0.5,
            patience: int = 2, min_lr: float = 0.0) -> LRSchedule:
    """``ReduceLROnPlateau`` (mode max) on the validation macro F1: x ``factor`` after ``patience``
    epochs without improvement, not below ``min_lr``."""
    return LRSchedule(optimizer, None, steps_per_epoch, warmup_epochs,
                      plateau=dict(factor=factor, patience=patience, min_lr=min_lr))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedConfig, epochs: int,
                    steps_per_epoch: int) -> LRSchedule:
    """Return the :class:`LRSchedule` named ``cfg.name`` for ``epochs`` of ``steps_per_epoch`` steps."""
    return SCHEDULES.build(cfg.name, cfg.params, "sched.params", optimizer=optimizer, epochs=epochs,
                           steps_per_epoch=steps_per_epoch, warmup_epochs=cfg.warmup_epochs)
