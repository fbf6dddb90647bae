"""Atomic file writes and small readers shared by every stage.

Every output a later stage reads (folds, OOF, thresholds, manifests, submissions) is written to a
temporary file in the same folder and renamed into place, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from hpa.errors import HPAError

_UMASK = os.umask(0)    # read the process umask once (os.umask can only be read by setting it)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give outputs the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically and return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame, float_format: str | None = None) -> Path:
    """Write a DataFrame as CSV (no index) atomically and return the path."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def read_csv(path: str | os.PathLike, columns: list[str], dtype: Any = str) -> pd.DataFrame:
    """Read a CSV and check it has ``columns``; raise HPAError naming the file otherwise."""
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
    return df
