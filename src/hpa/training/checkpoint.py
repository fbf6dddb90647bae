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
from hpa.io import atomic_path


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, then rename) and return the path."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True``; HPAError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise HPAError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise HPAError(f"{path}: not an hpa checkpoint (no 'model' entry)")
    return state


def keep_epoch_weights(fold_dir: str | Path, state: dict, keep: int) -> Path | None:
    """Save the weights of ``state`` (model, epoch, score, fold; no optimiser) as
    ``fold_dir/epoch<e>.pt`` and delete those older than the last ``keep`` epochs (``keep`` -1: keep
    all, 0: save nothing). Returns the path written, or None."""
    if keep < -1:
        raise HPAError(f"train.keep_checkpoints: must be -1 (all), 0 (none) or a count, got {keep}")
    if keep == 0:
        return None
    epoch = int(state["epoch"])
    path = save_checkpoint(Path(fold_dir) / f"epoch{epoch}.pt",
                           {k: state[k] for k in ("model", "epoch", "score", "fold")})
    if keep > 0:
        for old, e in epoch_files(fold_dir):
            if e <= epoch - keep:
                old.unlink()
    return path


def epoch_files(fold_dir: str | Path) -> list[tuple[Path, int]]:
    """``(path, epoch)`` of the ``epoch<e>.pt`` files in ``fold_dir``, by epoch."""
    found = [(p, int(p.stem[5:])) for p in Path(fold_dir).glob("epoch*.pt") if p.stem[5:].isdigit()]
    return sorted(found, key=lambda pe: pe[1])


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
