"""How many CPU threads torch uses, chosen from the cores this process may actually run on.

torch starts with one intra-op thread per core it counts, which ignores a container's CPU quota,
the DataLoader workers and other processes that compete for the same cores: on a 2-core machine at
load 7, demo epochs took 57-89 s with 2 threads against 9-12 s with 1 (docs/performance.md).
:func:`set_threads` is called once at the start of each stage (training, inference, ``hpa swa``,
``hpa lr-find``, ``hpa synth``) with the config's ``threads`` setting and returns the line the stage
prints.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from hpa.errors import HPAError

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")


def cgroup_cpu_quota(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> float | None:
    """CPUs allowed by the cgroup CPU quota (v2 ``cpu.max`` "quota period", else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when unlimited or unreadable."""
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if v1.is_file():
            quota = int(v1.read_text())
            period = int((v1.parent / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> tuple[int, str]:
    """``(n, how)``: the CPUs this process may use (affinity mask, capped by the cgroup quota) and
    how that number was found."""
    affinity = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    if quota is not None and math.ceil(quota) < affinity:
        return max(1, math.ceil(quota)), f"cgroup quota {quota:g} CPUs of {affinity} in the affinity mask"
    return affinity, f"{affinity} CPUs in the affinity mask" + ("" if quota is None else f", quota {quota:g}")


def system_load() -> float:
    """The 1-minute load average (runnable processes), 0 where the platform has none."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def choose_threads(setting: int, workers: int = 0) -> tuple[int, str]:
    """``(threads, why)`` for torch in this process.

    ``setting`` > 0 is taken as is. 0 (auto): ``OMP_NUM_THREADS`` when set (the user's choice, and
    what keeps tests repeatable), else the available CPUs, shared between the local processes of a
    multi-process launch (``LOCAL_WORLD_SIZE``), minus one per DataLoader worker, and no more than
    the CPUs the current load leaves idle (rounded), at least 1. Threads beyond the idle cores only
    wait for each other.
    """
    if setting < 0:
        raise HPAError(f"train.threads: must be 0 (auto) or a positive count, got {setting}")
    if setting > 0:
        return setting, "set by train.threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), f"auto: OMP_NUM_THREADS={env}"
    cpus, how = available_cpus()
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    n = cpus // local - max(0, workers)
    share = f" / {local} local processes" if local > 1 else ""
    why = f"auto: {how}{share}, {max(0, workers)} DataLoader workers"
    load = system_load()
    idle = round(max(0.0, cpus - load) / local)
    if idle < n:
        n, why = idle, f"{why}, load {load:.1f} leaves {max(0.0, cpus - load):.1f} idle"
    return max(1, n), why


def set_threads(setting: int, workers: int = 0, stage: str = "train") -> str:
    """Set torch's intra-op thread count by :func:`choose_threads`; return the line to print."""
    import torch

    n, why = choose_threads(setting, workers)
    torch.set_num_threads(n)
    return f"{stage}: {n} torch thread{'s' if n != 1 else ''} ({why})"
