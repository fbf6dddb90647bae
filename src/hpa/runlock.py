"""An exclusive lock per run folder, so two runs with the same experiment name never write the same files.

``run_lock(run_dir)`` takes a non-blocking ``fcntl.flock`` on ``run_dir/.lock``. The kernel releases a
flock when its process ends, however it ends (SIGKILL included), so a crashed run never leaves a stale
lock behind and ``--resume`` works at once. Under ``accelerate launch`` only the main process locks:
the other ranks of the same run write nothing and must not be refused. A command that created the run
folder and fails before writing anything into it removes the folder again (no ``.lock`` left behind).
Taking the lock removes the temporaries of killed writes in the folder (``hpa.io.remove_stale_temporaries``).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from hpa.errors import HPAError
from hpa.io import remove_stale_temporaries

LOCK_NAME = ".lock"
F = TypeVar("F", bound=Callable)


def _is_main_process() -> bool:
    """True outside ``accelerate launch`` and on its main process (checked without starting a group)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    from accelerate import PartialState
    return PartialState().is_main_process


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path | None]:
    """Hold the exclusive lock of ``run_dir`` for the block; yield the lock file (None on non-main ranks).

    Raises HPAError ``<run_dir>: another run holds the lock (pid N); wait for it or use another name``
    when another process (or another open of the lock in this process) holds it.
    """
    if not _is_main_process():
        yield None
        return
    run_dir = Path(run_dir)
    created = _missing_ancestors(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise HPAError(f"{run_dir}: another run holds the lock (pid {holder}); "
                           "wait for it or use another name") from None
        # the pid is only for the message above; the lock itself is the flock, not the file's content
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        # every stage that writes a run folder holds this lock: the one place that clears the
        # temporaries a killed write (SIGKILL, power cut) of any of them left behind
        remove_stale_temporaries(run_dir)
        try:
            yield path
        except BaseException:
            if created and os.listdir(run_dir) == [LOCK_NAME]:
                _remove(path, created)      # still holding the lock: nobody else can be using it
            raise
    finally:
        os.close(fd)    # closing the descriptor releases the flock; a used folder keeps the file


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    out = []
    while not path.exists() and path != path.parent:
        out.append(path)
        path = path.parent
    return out


def _remove(lock: Path, folders: list[Path]) -> None:
    """Remove ``lock`` and then the (empty) ``folders`` this command created, deepest first."""
    try:
        lock.unlink()
        for d in folders:
            d.rmdir()
    except OSError:
        pass            # another process has just put something there: leave it


def locked_run(fn: F) -> F:
    """Decorate ``fn(cfg, ...)`` (an ExperimentConfig first) to run under ``run_lock(cfg.run_dir)``."""
    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        with run_lock(cfg.run_dir):
            return fn(cfg, *args, **kwargs)
    return wrapper  # type: ignore[return-value]
