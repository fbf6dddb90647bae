"""Progressive resizing (``train.resize_schedule``, vpp's 5th-place trick): train the first epochs on
small images, then switch to larger ones within one run.

The schedule ``[[0, 256], [10, 512]]`` means epochs 1-10 (0-based 0-9) at 256 px and the rest at 512 px.
The size of an epoch depends only on its number, so ``--resume`` in the middle of a run picks the
right size; the trainer rebuilds its data loaders over the image cache of that size
(:func:`hpa.data.cache.open_images`, one cache file per size) at the switch epoch. Without a schedule
every epoch uses :func:`hpa.transforms.load_size`.
"""
from __future__ import annotations

from hpa.config import ExperimentConfig
from hpa.transforms import load_size


def size_at(cfg: ExperimentConfig, epoch: int) -> int:
    """The image size of 0-based ``epoch``: the last schedule entry at or before it (else the load size)."""
    size = load_size(cfg)
    for start, s in cfg.train.resize_schedule:
        if start <= epoch:
            size = int(s)
    return size


def schedule_sizes(cfg: ExperimentConfig) -> list[int]:
    """Every size a run trains at, in schedule order without repeats (the load size without a schedule)."""
    sizes = [int(s) for _, s in cfg.train.resize_schedule if s] or [load_size(cfg)]
    return list(dict.fromkeys(sizes))

