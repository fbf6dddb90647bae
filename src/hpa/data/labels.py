"""Reading and checking label tables (``Id,Target``) and converting targets to multi-hot arrays."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES
from hpa.errors import HPAError
from hpa.io import read_csv


#: one label: ASCII digits only (``str.isdigit`` and ``int`` also accept '３', '²' or '+3'; Kaggle does
#: not); a minus sign is read so that '-1' is reported as out of range
ASCII_INT = re.compile(r"-?[0-9]+")


def check_separators(text: str, where: str) -> list[str]:
    """Split a label string on single spaces; HPAError for a tab, a double, leading or trailing space.

    Kaggle reads labels as ASCII digits separated by single spaces: anything else is refused here,
    in every reader of labels (train.csv, manifests, submissions).
    """
    tokens = str(text).split(" ")
    if any(t == "" or any(c.isspace() for c in t) for t in tokens):
        raise HPAError(f"{where}: labels must be separated by single spaces, found {str(text)!r}")
    return tokens


def parse_target(text: str, where: str = "Target") -> list[int]:
    """Parse a Target (``"16 0"``: ASCII integers 0-27, single spaces) into sorted unique ints.

    Raises HPAError (prefixed by ``where``) for an empty Target, other separators, a label that is not
    an ASCII integer (``+3``, ``３``, ``²``, ``1.5``) or one outside 0-27.
    """
    if not str(text).strip():
        raise HPAError(f"{where}: empty Target")
    labels = []
    for p in check_separators(text, where):
        if not ASCII_INT.fullmatch(p):
            hint = " (ASCII digits 0-9 only)" if any(c.isdigit() for c in p) else ""
            raise HPAError(f"{where}: label '{p}' is not an integer{hint}")
        v = int(p)
        if not 0 <= v < NUM_CLASSES:
            raise HPAError(f"{where}: label {v} outside 0-{NUM_CLASSES - 1}")
        labels.append(v)
    return sorted(set(labels))


def format_target(labels: Iterable[int]) -> str:
    """Format label indices as a Kaggle Target string (ascending, space-separated)."""
    return " ".join(str(int(x)) for x in sorted(set(int(v) for v in labels)))


def to_multihot(targets: Iterable[Iterable[int]]) -> np.ndarray:
    """Turn label lists into an ``(N, 28)`` uint8 multi-hot matrix."""
    targets = list(targets)
    out = np.zeros((len(targets), NUM_CLASSES), dtype=np.uint8)
    for i, labels in enumerate(targets):
        out[i, list(labels)] = 1
    return out


def from_multihot(matrix: np.ndarray) -> list[list[int]]:
    """Turn an ``(N, 28)`` 0/1 matrix back into label lists."""
    return [list(np.flatnonzero(row)) for row in np.asarray(matrix)]


def check_unique_ids(df: pd.DataFrame, path: str | Path) -> None:
    """Raise HPAError naming the first duplicated, empty or path-like Id (with its CSV row number)."""
    dup = df["Id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise HPAError(f"{path}: duplicate Id '{df['Id'].iat[i]}' at row {i + 2}")
    empty = df["Id"].str.strip() == ""
    if empty.any():
        raise HPAError(f"{path}: empty Id at row {int(np.flatnonzero(empty.to_numpy())[0]) + 2}")
    # Ids become file names: one with a separator or a leading dot could reach outside the image folder
    unsafe = df["Id"].str.contains(r"[/\\\x00]", regex=True) | df["Id"].str.startswith(".")
    if unsafe.any():
        i = int(np.flatnonzero(unsafe.to_numpy())[0])
        raise HPAError(f"{path}: row {i + 2}: Id '{df['Id'].iat[i]}' is not a plain file-name stem")


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read an ``Id,Target`` CSV, check every row, and return it with a ``labels`` column of lists.

    Raises HPAError naming the file and row (1-based, header = row 1) for a missing column, no rows,
    an empty or malformed Target (see :func:`parse_target`), or a duplicate Id.
    """
    df = read_csv(path, ["Id", "Target"], nonempty=True)
    check_unique_ids(df, path)
    # The location string is built lazily (only on error) so 31k rows parse in well under a second.
    df["labels"] = [_parse_row(t, path, i, image_id)
                    for i, (image_id, t) in enumerate(zip(df["Id"], df["Target"]))]
    df["Target"] = [format_target(v) for v in df["labels"]]
    return df.reset_index(drop=True)


def _parse_row(text: str, path: str | Path, i: int, image_id: str) -> list[int]:
    try:
        return parse_target(text, "")
    except HPAError as e:
        raise HPAError(f"{path}: row {i + 2} (Id {image_id}){e}") from None


def label_matrix(df: pd.DataFrame) -> np.ndarray:
    """Return the ``(N, 28)`` uint8 multi-hot matrix of a frame from :func:`read_labels`."""
    return to_multihot(df["labels"])
