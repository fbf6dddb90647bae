"""``manifest.csv``: one row per synthetic image, saying where it came from.

Columns (see docs/formats.md): ``Id, Target, label_weights, source_id, generator, generator_trained_on,
mode, strength, steps, guidance, seed, filter_score``. Rows are added only after an image's four PNGs
are on disk, and the file is rewritten atomically, so the manifest never lists a missing image.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hpa.data.images import CHANNELS, check_id
from hpa.data.labels import parse_target
from hpa.errors import HPAError
from hpa.io import read_csv, write_csv

COLUMNS = ["Id", "Target", "label_weights", "source_id", "generator", "generator_trained_on", "mode",
           "strength", "steps", "guidance", "seed", "filter_score"]
ID_PREFIX = "syn-"


def trained_on_folds(value: str) -> set[int] | None:
    """Parse ``generator_trained_on``: ``"all"`` -> None (every fold), ``"1 2 3"`` -> ``{1, 2, 3}``."""
    s = str(value).strip()
    if s == "all":
        return None
    try:
        folds = {int(v) for v in s.split()}
    except ValueError:
        raise HPAError(f"generator_trained_on: '{value}' is neither 'all' nor space-separated fold numbers") from None
    if not folds or min(folds) < 0:
        raise HPAError(f"generator_trained_on: '{value}' is neither 'all' nor space-separated fold numbers")
    return folds


def format_folds(folds: set[int] | None) -> str:
    """Inverse of :func:`trained_on_folds`."""
    return "all" if folds is None else " ".join(str(f) for f in sorted(folds))


def parse_label_weights(text: str, where: str = "label_weights") -> dict[int, float]:
    """Parse ``"0:0.7 25:0.3"`` into ``{0: 0.7, 25: 0.3}`` ("" -> {}); raise HPAError if malformed."""
    out: dict[int, float] = {}
    for pair in str(text).split():
        try:
            k, w = pair.split(":")
            k_int, w_f = parse_target(k, where)[0], float(w)
        except (ValueError, IndexError):
            raise HPAError(f"{where}: '{pair}' is not a label:weight pair") from None
        if not 0.0 <= w_f <= 1.0:
            raise HPAError(f"{where}: weight {w_f} of label {k_int} outside 0-1")
        out[k_int] = w_f
    return out


def format_label_weights(weights: dict[int, float]) -> str:
    """Format soft label weights as ``"label:weight"`` pairs, ascending by label, 4 decimals."""
    return " ".join(f"{k}:{weights[k]:.4f}" for k in sorted(weights) if weights[k] > 0)


def read_manifest(path: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest; return it with a ``labels`` column (lists) and typed numbers.

    Raises HPAError naming the file and row for a missing column, a duplicate Id, an Id that is not a
    plain stem (or lacks the ``syn-`` prefix), a bad Target / label_weights / generator_trained_on, or
    (``check_files``) an image whose PNGs are missing from ``<manifest folder>/train``.
    """
    path = Path(path)
    df = read_csv(path, COLUMNS)
    image_dir = path.parent / "train"
    labels = []
    for i, row in enumerate(df.itertuples(index=False)):
        where = f"{path}: row {i + 2} (Id {row.Id})"
        check_id(row.Id, where)
        if not row.Id.startswith(ID_PREFIX):
            raise HPAError(f"{where}: synthetic Id must start with '{ID_PREFIX}'")
        labels.append(parse_target(row.Target, where))
        parse_label_weights(row.label_weights, where)
        trained_on_folds(row.generator_trained_on)
        if row.source_id:
            check_id(row.source_id, f"{where} source_id")
        if check_files and not all((image_dir / f"{row.Id}_{c}.png").is_file() for c in CHANNELS):
            raise HPAError(f"{where}: image files missing under {image_dir}")
    dup = df["Id"].duplicated()
    if dup.any():
        raise HPAError(f"{path}: duplicate Id '{df['Id'][dup].iat[0]}'")
    df["labels"] = labels
    for col, typ in (("strength", float), ("steps", int), ("guidance", float), ("seed", int)):
        try:
            df[col] = df[col].replace("", "0").astype(typ)
        except ValueError:
            raise HPAError(f"{path}: column {col} has a non-numeric value") from None
    df["filter_score"] = pd.to_numeric(df["filter_score"].replace("", "nan"), errors="coerce")
    return df


def load_existing(path: str | Path) -> pd.DataFrame:
    """The manifest rows already written (an empty frame with the columns when there is none)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    return read_csv(path, COLUMNS)


def append_rows(path: str | Path, rows: list[dict]) -> pd.DataFrame:
    """Append ``rows`` (dicts with every column) to the manifest, atomically; return the whole table."""
    missing = [c for c in COLUMNS if rows and c not in rows[0]]
    if missing:
        raise HPAError(f"manifest rows lack column(s) {', '.join(missing)}")
    old = load_existing(path)
    # extra columns (``sampler``) follow the contract's columns
    cols = COLUMNS + [c for c in (rows[0] if rows else {}) if c not in COLUMNS]
    new = pd.DataFrame(rows, columns=cols).astype(str)
    df = pd.concat([old, new], ignore_index=True).fillna("") if len(old) else new
    write_csv(path, df)
    return df
