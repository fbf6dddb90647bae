"""The one check of a ``--device`` value, used by every command that takes the flag (``hpa swa``,
``hpa synth generate``, ``hpa bench``): a name torch knows, and a GPU that is really there, so a
machine without one gets one line instead of torch's "Found no NVIDIA driver" traceback."""
from __future__ import annotations

import re

from hpa.errors import HPAError

_NAME = re.compile(r"cpu|cuda(?::\d+)?")


def resolve_device(name: str | None, flag: str = "--device") -> str:
    """``name`` checked (``cpu``, ``cuda``, ``cuda:N``); empty or None: ``cuda`` when a GPU is
    available, else ``cpu``. HPAError naming ``flag`` for another name or a GPU that is not there."""
    import torch

    if not name:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not _NAME.fullmatch(name):
        raise HPAError(f"{flag}: '{name}' is not a device (cpu, cuda, cuda:N)")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HPAError(f"{flag} {name}: no CUDA device is available on this machine (use {flag} cpu)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise HPAError(f"{flag} {name}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                           f"(cuda:0-{torch.cuda.device_count() - 1})")
    return name
