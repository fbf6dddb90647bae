"""Atomic, durable file writes and small readers shared by every stage.

Every output a later stage reads (folds, OOF, thresholds, checkpoints, manifests, submissions) is
written to a hidden temporary file in the same folder (``.<name>.XXXXXXXX.tmp``), flushed to disk
(``fsync``), and renamed into place, and the folder is flushed too: a crash or a power cut never leaves
a half-written or empty file under the final name. While it is written the temporary file is held
under an ``flock``, so :func:`remove_stale_temporaries` can tell the leftovers of a killed write from
one in progress.

A write that fails because of where it writes (disk full, read-only folder, no permission) becomes
one :class:`HPAError` naming the file, with the temporary file removed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from hpa.errors import ENVIRONMENT_ERRNOS, FULL_ERRNOS, HPAError

_UMASK = os.umask(0)    # read the process umask once (os.umask can only be read by setting it)
os.umask(_UMASK)

#: when this process (its first import of hpa.io) started; a temporary made later may be a live write
_STARTED = time.time()
#: our temporary names: '.' + final name + '.' + mkstemp's 8 random characters + '.tmp'
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (binary units, one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space (bytes usable by this user) on the file system holding ``folder`` or its nearest parent."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(path: str | os.PathLike, needed: int, what: str = "the file",
                     hint: str = "free some space or write it elsewhere") -> None:
    """Raise HPAError ``<path>: <what> needs N but only M is free in <folder>; <hint>`` when the disk
    holding ``path`` has less than ``needed`` bytes free (checked before a large write starts)."""
    folder = Path(path).parent
    free = free_bytes(folder)
    if needed > free:
        raise HPAError(f"{path}: {what} needs {format_bytes(needed)} but only {format_bytes(free)} is free "
                       f"in {folder}; {hint}")


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a dangling symlink counts as existing)."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path("/")


def check_output_dir(path: str | os.PathLike, what: str = "") -> Path:
    """Check, before anything is written, that ``path`` is a folder or can be made one: HPAError
    ``<path>: exists and is not a folder (<what>)`` or ``<path>: cannot be written: <f> is a file, not
    a folder`` otherwise. Returns the path."""
    path = Path(path)
    found = _first_existing(path)
    if not found.is_dir():
        if found == path:
            raise HPAError(f"{path}: exists and is not a folder" + (f" ({what})" if what else ""))
        raise HPAError(f"{path}: cannot be written: {found} is a file, not a folder")
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, before any work, that a file can be written at ``path``: not a folder (HPAError
    ``<path>: --out is a folder; give a file name``), and no file where a parent folder must be."""
    path = Path(path)
    if path.is_dir():
        raise HPAError(f"{path}: {flag + ' ' if flag else ''}is a folder; give a file name")
    found = _first_existing(path.parent)
    if not found.is_dir():
        raise HPAError(f"{path}: cannot be written: {found} is a file, not a folder")
    return path


def make_output_dir(path: str | os.PathLike, what: str = "") -> Path:
    """:func:`check_output_dir`, then create the folder (and its parents); a folder the system will not
    create (``/proc``, read-only, no permission) is one HPAError naming it. Returns the path."""
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HPAError(f"{path}: cannot create the folder ({e.strerror or e})") from None
    return path


def write_error(path: str | os.PathLike, e: OSError, written: int = 0) -> HPAError:
    """One-line HPAError for a failed write of ``path``: the reason, and for a full disk the free space."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    msg = f"{path}: cannot write ({reason})"
    if e.errno in FULL_ERRNOS:
        folder = Path(path).parent
        msg += f": {format_bytes(free_bytes(folder))} free in {folder}"
        if written:
            msg += f", the file needs more than {format_bytes(written)}"
    return HPAError(msg)


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if not directory or e.errno not in (errno.EINVAL, errno.EBADF):  # some file systems refuse
            raise                                                        # to fsync a folder
    finally:
        os.close(fd)


def _fsync_file(fd: int, tmp: Path) -> None:
    """fsync the temporary file through our descriptor (any descriptor of a file flushes all its
    data), or by path if the writer replaced the file with a new one."""
    if os.fstat(fd).st_ino == os.stat(tmp).st_ino:
        os.fsync(fd)
    else:
        _fsync(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``durable``: fsync the file before the rename and the folder after it (a power cut leaves the old
    file or the new one, never an empty one). A full disk, a read-only folder or a permission error
    raise HPAError naming ``path`` (see :func:`write_error`); the temporary file is removed whatever
    happens (an exception, Ctrl-C, SIGTERM through ``hpa.cli``).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    tmp = Path(name)
    try:
        with contextlib.suppress(OSError):      # some network file systems have no flock: best effort
            fcntl.flock(fd, fcntl.LOCK_EX)      # "being written": remove_stale_temporaries skips it
        os.fchmod(fd, 0o666 & ~_UMASK)          # mkstemp makes 0600 files; give outputs the usual mode
        try:
            yield tmp
        except OSError as e:
            # in the block only a failed write is ours to explain: an OSError about another file
            # (a permission error reading an input, say) passes through unchanged
            if e.errno not in FULL_ERRNOS + (errno.EIO,):
                raise
            raise _failed(path, tmp, e) from None
        try:
            if durable:
                _fsync_file(fd, tmp)
            os.replace(tmp, path)
            if durable:
                _fsync(path.parent, directory=True)
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            raise _failed(path, tmp, e) from None
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)                            # releases the flock


def _failed(path: Path, tmp: Path, e: OSError) -> HPAError:
    written = tmp.stat().st_size if tmp.exists() else 0
    tmp.unlink(missing_ok=True)                 # free the space before measuring what is free
    return write_error(path, e, written)


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporaries of killed writes in ``folder`` (and its subfolders when ``recursive``);
    return what was removed.

    Only files named like ours (``.<name>.XXXXXXXX.tmp``) are touched, and only when no live process
    writes them: older than this process and not under the flock :func:`atomic_path` holds while
    writing (where the file system has no flock, nothing is removed). Prints one line when something
    was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, size = [], 0
    for p in sorted(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        if not _TEMP_NAME.match(p.name) or not p.is_file() or p.stat().st_mtime >= _STARTED:
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue                            # gone meanwhile (another process cleaned it)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            size += os.fstat(fd).st_size
            p.unlink(missing_ok=True)
            removed.append(p)
        except OSError:
            pass                                # a live process is writing it (or no flock here)
        finally:
            os.close(fd)
    if removed:
        print(f"{folder}: removed {len(removed)} stale temporary file(s) of killed writes "
              f"({format_bytes(size)}, e.g. {removed[0].name})")
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as None (JSON ``null``: strict parsers refuse ``NaN``) and
    numpy scalars and arrays as plain Python values."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):     # numpy scalar or array
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def number(value: Any) -> float:
    """A number read back from JSON: ``null`` (how :func:`write_json` writes NaN) is NaN again."""
    return float("nan") if value is None else float(value)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically and return the path; NaN and infinity become ``null``
    (:func:`json_safe`), so every JSON file we write is standard JSON."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame, float_format: str | None = None) -> Path:
    """Write a DataFrame as CSV (no index) atomically and return the path."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def read_csv(path: str | os.PathLike, columns: list[str], dtype: Any = str,
             nonempty: bool = False) -> pd.DataFrame:
    """Read a CSV and check it has ``columns`` (and, with ``nonempty``, at least one row).

    Raises HPAError naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HPAError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise HPAError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(df.columns)})")
    if nonempty and df.empty:
        raise HPAError(f"{path}: no rows (only a header)")
    return df
