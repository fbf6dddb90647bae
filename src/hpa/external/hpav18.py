"""The HPAv18 external data: its label file, the image server's layout, and a downloaded folder.

Label file (``HPAv18RBGY_wodpl.csv``): ``Id,Target`` like Kaggle's train.csv, but every Id is
``<antibody>_<plate>_<well>_<field>`` (``10580_1610_C1_1``). The v18 image server serves stain ``s``
of that Id as ``{base_url}/10580/1610_C1_1_{s}.jpg``. A downloaded folder holds either the colour
JPEGs (``{Id}_{stain}.jpg``, or the server's names without the antibody prefix) or, after
``--format png``, 8-bit single-channel PNGs in the Kaggle layout (``{Id}_{stain}.png``), never both.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from hpa.data.images import CHANNELS, hpav18_names, hpav18_short_id
from hpa.data.labels import read_labels
from hpa.errors import HPAError

DEFAULT_BASE_URL = "http://v18.proteinatlas.org/images/"
#: every Id of the real HPAv18RBGY_wodpl.csv (74,606) matches this; Kaggle's uuid Ids do not
ID_PATTERN = re.compile(r"\d+_[A-Za-z0-9]+(?:_[A-Za-z0-9]+){2,}", re.ASCII)
FORMATS = {"jpg": "hpav18", "png": "kaggle"}      # folder format -> image reader kind (hpa.data.cache)
_STAIN_FILE = re.compile(r"_(?:red|green|blue|yellow)\.(jpg|png)$")


def read_hpav18_labels(path: str | Path) -> pd.DataFrame:
    """Read an HPAv18 label file (``Id,Target``) like :func:`hpa.data.labels.read_labels`, and check
    that every Id has the HPAv18 form; HPAError naming the first bad row (e.g. a Kaggle train.csv)."""
    df = read_labels(path)
    bad = ~df["Id"].map(lambda i: ID_PATTERN.fullmatch(i) is not None)   # fullmatch: '$' accepts a final newline
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise HPAError(f"{path}: row {i + 2}: Id '{df['Id'].iat[i]}' is not an HPAv18 Id "
                       "(<antibody>_<plate>_<well>_<field>, e.g. 10580_1610_C1_1): not an HPAv18 label file")
    return df


def image_url(base_url: str, image_id: str, stain: str) -> str:
    """URL of one stain of an Id on the v18 server: ``{base_url}/{antibody}/{image}_{stain}.jpg``."""
    antibody = str(image_id).partition("_")[0]
    return f"{base_url.rstrip('/')}/{antibody}/{hpav18_short_id(image_id)}_{stain}.jpg"


def folder_format(folder: str | Path) -> str | None:
    """Return ``"jpg"`` or ``"png"`` for a folder of HPAv18 stain files, None when it holds none.

    HPAError when it holds both (a folder must have one format: the readers pick one per folder).
    Hidden files (temporary downloads) are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = {m.group(1) for n in os.listdir(folder) if not n.startswith(".") and (m := _STAIN_FILE.search(n))}
    if len(found) > 1:
        raise HPAError(f"{folder}: holds both JPEG and PNG stain files; keep one format per folder")
    return found.pop() if found else None


def image_kind(folder: str | Path) -> str:
    """The :data:`hpa.data.cache.IMAGE_READERS` kind that reads a downloaded HPAv18 folder:
    ``hpav18`` for colour JPEGs, ``kaggle`` for ``--format png`` (HPAError when it holds no image)."""
    fmt = folder_format(folder)
    if fmt is None:
        raise HPAError(f"{folder}: no HPAv18 images (expected {{Id}}_{{stain}}.jpg or .png)")
    return FORMATS[fmt]


def missing_stains(present: set[str], image_id: str, ext: str) -> list[str]:
    """The stains of ``image_id`` with no file among the names ``present`` (a JPEG under either name;
    a PNG under the full Id only, as the Kaggle reader reads it)."""
    def names(c: str) -> tuple[str, ...]:
        return hpav18_names(image_id, c, ext) if ext == "jpg" else (f"{image_id}_{c}.{ext}",)
    return [c for c in CHANNELS if not any(n in present for n in names(c))]


def missing_ids(image_dir: str | Path, ids: Sequence[str], ext: str = "jpg") -> list[str]:
    """The Ids (in order) that lack at least one of their four stain files in ``image_dir``."""
    image_dir = Path(image_dir)
    present = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
    return [i for i in ids if missing_stains(present, i, ext)]


def require_images(label_file: str | Path, image_dir: str | Path, ids: Sequence[str],
                   skip_missing: bool = False, ext: str | None = None) -> list[str]:
    """Return the Ids of ``ids`` whose four stains are in ``image_dir``.

    Without ``skip_missing`` an Id without images is an HPAError naming the first one and how many
    there are; with it those Ids are left out. ``ext`` defaults to the folder's format.
    """
    ext = ext or folder_format(image_dir) or "jpg"
    missing = missing_ids(image_dir, ids, ext)
    if missing and not skip_missing:
        raise HPAError(f"{label_file}: {len(missing)} of {len(ids)} Ids have no images in {image_dir} "
                       f"(first: {missing[0]}); download them (hpa download --hpav18) or pass --skip-missing")
    gone = set(missing)
    return [i for i in ids if i not in gone]


def external_labels(cfg: Any, skip_missing: bool | None = None) -> tuple[pd.DataFrame, str, int]:
    """``(labels of the Ids with images, reader kind, number of Ids listed)`` of ``data.external_csv``.

    The reader kind follows the folder (``hpav18`` for colour JPEGs, ``kaggle`` for PNGs). HPAError
    when the folder is missing or holds no images, or (without ``skip_missing``, default
    ``data.external_skip_missing``) when an Id has no images.
    """
    d = cfg.data
    skip = d.external_skip_missing if skip_missing is None else skip_missing
    if not d.external_dir:
        raise HPAError("data.external_dir: empty but data.external_csv is set: name the HPAv18 image folder")
    folder = Path(d.external_dir)
    if not folder.is_dir():
        raise HPAError(f"{folder}: external image folder not found (data.external_dir)")
    labels = read_hpav18_labels(d.external_csv)
    kind = image_kind(folder)
    ext = "jpg" if kind == "hpav18" else "png"
    keep = require_images(d.external_csv, folder, labels["Id"].tolist(), skip, ext)
    if not keep:
        raise HPAError(f"{d.external_csv}: none of its {len(labels)} Ids has images in {folder}")
    kept = labels[labels["Id"].isin(set(keep))].reset_index(drop=True)
    return kept, kind, len(labels)
