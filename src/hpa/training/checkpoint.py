"""Checkpoints: atomic ``torch.save`` of plain dicts that load with ``weights_only=True``.

RNG states are stored as tensors and plain numbers (never numpy objects) so the safe loader accepts
them. A checkpoint that fails to load (truncated, corrupt) raises HPAError naming the file.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from hpa.errors import HPAError
# the one loader (weights_only=True) and writer of checkpoints live with the run folder's files
from hpa.rundir import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "newest_valid", "rng_state", "save_checkpoint", "set_rng_state"]


def newest_valid(paths: list[Path]) -> tuple[Path, dict] | None:
    """Return ``(path, state)`` of the first loadable checkpoint among ``paths`` (warning on bad ones)."""
    for p in paths:
        if not Path(p).is_file():
            continue
        try:
            return Path(p), load_checkpoint(p)
        except HPAError as e:
            warnings.warn(f"{e}; trying the next checkpoint", stacklevel=2)
    return None


def rng_state() -> dict:
    """Capture the python, numpy and torch (CPU and CUDA) RNG states as safe-loadable values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": int(py[0]), "state": torch.tensor(py[1], dtype=torch.int64),
                   "gauss": py[2]},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
