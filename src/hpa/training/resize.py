"""Progressive resizing (``train.resize_schedule``, vpp's 5th-place trick): train the first epochs on
small images, then switch to larger ones within one run.

The schedule ``[[0, 256], [10, 512]]`` means epochs 1-10 (0-based 0-9) at 256 px and the rest at 512 px.
The size of an epoch depends only on its number, so ``--resume`` in the middle of a run picks the
right size; the trainer rebuilds its data loaders over the image cache of that size
(:func:`hpa.data.cache.open_images`, one cache file per size) at the switch epoch. Without a schedule
every epoch uses :func:`hpa.transforms.load_size`.
"""
from __future__ import annotations

from typing import Sequence


def size_at(schedule: Sequence[Sequence[int]], load: int, epoch: int) -> int:
    """The image size of 0-based ``epoch`` under ``schedule`` (``train.resize_schedule``): the last entry at
    or before it (else ``load``, the run's load size)."""
    size = load
    for start, s in schedule:
        if start <= epoch:
            size = int(s)
    return size


def schedule_sizes(schedule: Sequence[Sequence[int]], load: int) -> list[int]:
    """Every size a run trains at, in schedule order without repeats (``[load]`` without a schedule)."""
    sizes = [int(s) for _, s in schedule if s] or [load]
    return list(dict.fromkeys(sizes))

