"""Read-only views over image sequences (memory-mapped caches, lists): rows picked or joined without
copying, and pickled as the memmap's file name so a DataLoader worker re-opens the file instead of
receiving a copy of the whole array."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class RowView:
    """``images[rows[i]]`` without copying a (memory-mapped) array; pickles as the memmap's file name."""

    def __init__(self, images: Sequence[np.ndarray], rows: np.ndarray):
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[int(self.rows[i])]

    def __getstate__(self) -> dict:
        return {"images": _pickle_images(self.images), "rows": self.rows}

    def __setstate__(self, state: dict) -> None:
        self.images, self.rows = _unpickle_images(state["images"]), state["rows"]


class ConcatImages:
    """Several image sequences as one: rows ``[first..., second..., ...]``, nothing copied."""

    def __init__(self, parts: Sequence[Sequence[np.ndarray]]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - int(self.starts[k])]

    def __getstate__(self) -> dict:
        return {"parts": [_pickle_images(p) for p in self.parts], "starts": self.starts}

    def __setstate__(self, state: dict) -> None:
        self.parts, self.starts = [_unpickle_images(p) for p in state["parts"]], state["starts"]


def _pickle_images(images):
    # pickling an np.memmap copies the whole array into every DataLoader worker: send its file name
    if isinstance(images, np.memmap) and images.filename:
        return ("__memmap__", images.filename)
    return images


def _unpickle_images(images):
    if isinstance(images, tuple) and images and images[0] == "__memmap__":
        return np.load(images[1], mmap_mode="r")
    return images
