"""Epoch samplers that are deterministic given (seed, epoch): same order on every DDP process,
with or without DataLoader workers, and after ``--resume``.

Indices are yielded *encoded* as ``epoch * n + i`` so that :class:`EpochDataset` can seed the
augmentation of each sample from (seed, epoch, i) inside any worker. ``DATA_SAMPLERS`` holds the
training samplers by name (``train.sampler``): ``random`` (a permutation per epoch) and ``oversample``
(rare-class oversampling with replacement, as the 2nd-place team did); each is
``DATA_SAMPLERS.get(name)(labels, seed, **train.sampler_params)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from hpa.registry import Registry

# "data sampler": the diffusion samplers (hpa.synthetic.sampling) are another registry
DATA_SAMPLERS: Registry = Registry("data sampler", fixed=("labels", "seed"))


class _EpochSampler(Sampler[int]):
    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter((self.order() + self.epoch * self.n).tolist())


@DATA_SAMPLERS.register("random")
class RandomEpochSampler(_EpochSampler):
    """A fresh permutation of ``range(n)`` each epoch."""

    def __init__(self, labels: np.ndarray, seed: int):
        super().__init__(len(labels), seed)

    def order(self) -> np.ndarray:
        """Return this epoch's indices (not encoded)."""
        return torch.randperm(self.n, generator=self._generator()).numpy()


def oversample_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-sample weights: the rarest label's ``(max_count / count) ** power`` (``(N,)`` float64)."""
    counts = np.maximum(labels.sum(0), 1).astype(np.float64)
    class_w = (counts.max() / counts) ** power
    w = (labels * class_w).max(1)
    return np.where(w > 0, w, 1.0)


@DATA_SAMPLERS.register("oversample")
class OversampleSampler(_EpochSampler):
    """``n`` draws with replacement, each image weighted by :func:`oversample_weights` with ``power``."""

    def __init__(self, labels: np.ndarray, seed: int, power: float = 0.5):
        super().__init__(len(labels), seed)
        self.weights = torch.tensor(oversample_weights(np.asarray(labels), power))

    def order(self) -> np.ndarray:
        """Return this epoch's indices (not encoded): torch's ``WeightedRandomSampler`` on this epoch's
        generator (the same draws as the ``torch.multinomial`` call it replaced)."""
        draws = WeightedRandomSampler(self.weights, self.n, replacement=True, generator=self._generator())
        return np.fromiter(draws, dtype=np.int64, count=self.n)


class EvalSampler(_EpochSampler):
    """``0..n-1`` in order (epoch 0 encoding), for validation and prediction."""

    def order(self) -> np.ndarray:
        """Return ``arange(n)``."""
        return np.arange(self.n)


class EpochDataset(Dataset):
    """Wrap an ``HPADataset``: decode ``epoch * n + i``, reseed the augmentation, return ``(x, y, i)``."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)
        self.transform = getattr(dataset, "transform", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, code: int):
        epoch, i = divmod(int(code), len(self.dataset))
        if self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed((self.seed * 7919 + epoch * 104_729 + i) % (2**32))
        x, y = self.dataset[i]
        return x, y, i
