"""Which Kaggle train and test images a foundation model's pretraining set contains (``hpa leak-report
--pretraining``).

The HPA-pretrained backbones (docs/foundation.md) learnt from Atlas images, and the 2018 competition
images were cut from the same Atlas: a score from such a backbone may include images it saw in
pretraining. Given the pretraining list, two tests:

* by Id: each entry (a line of a text/CSV list, or a file name) is searched for Kaggle-style Ids (the
  36-character UUIDs; single-cell entries such as ``<Id>_15`` and prefixed names such as
  ``HPA_FoV_<Id>.png`` included) and for exact Kaggle Ids;
* by image (when the list is a folder of images): the existing perceptual-hash duplicate test
  (:mod:`hpa.data.duplicates`: green AND a reference stain within ``threshold`` bits) between every
  pretraining image and every Kaggle train/test image. A folder in the Kaggle layout
  (``<Id>_green.png``) or the HPAv18 layout (``<Id>_green.jpg``) is read as such; any other image file
  is one multi-channel image whose channels are R, G, B, Y (RGBA PNG/TIFF, the form of Cell-DINO's
  HPA-FoV samples).

Writes ``pretraining_ids.csv`` (``source,Id,entry``), ``pretraining_pairs.csv`` (``entry,source,Id,
green_bits,<ref>_bits``) and ``pretraining.json`` (the counts) into the report folder.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from hpa.data.duplicates import HASH_SIDE, ImageSource, hash_images, near_pairs, phash64
from hpa.data.images import resize
from hpa.errors import HPAError
from hpa.io import write_csv, write_json

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
STAIN_INDEX = {"red": 0, "green": 1, "blue": 2, "yellow": 3}


def read_entries(path: str | Path) -> tuple[list[str], Path | None]:
    """The entries of a pretraining list and, for a folder, the folder: a folder gives its image file
    names; a CSV its ``Id``/``id``/``path``/``file`` column (else the first); a text file its lines."""
    path = Path(path)
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not names:
            raise HPAError(f"--pretraining {path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        return names, path
    if not path.is_file():
        raise HPAError(f"--pretraining {path}: no such file or folder")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        col = next((c for c in ("Id", "id", "ID", "path", "file", "filename") if c in df.columns), df.columns[0])
        return [str(v) for v in df[col] if str(v)], None
    return [s.strip() for s in path.read_text().splitlines() if s.strip() and not s.startswith("#")], None


def match_ids(entries: Sequence[str], kaggle: dict[str, set[str]]) -> pd.DataFrame:
    """Rows ``source,Id,entry`` for every Kaggle Id (of ``kaggle``: source -> Ids) an entry names."""
    rows = []
    for e in entries:
        stem = Path(e).name
        found = {u.lower() for u in UUID.findall(stem)} | {stem, Path(stem).stem}
        for source, ids in kaggle.items():
            rows += [(source, i, e) for i in sorted(found & ids)]
    return pd.DataFrame(rows, columns=["source", "Id", "entry"]).drop_duplicates(["source", "Id", "entry"])


def _folder_layout(folder: Path, names: list[str]) -> tuple[str | None, list[str]]:
    """``("kaggle"|"hpav18", Ids)`` when the folder holds per-stain files, else ``(None, names)``."""
    for kind, suffix in (("kaggle", "_green.png"), ("hpav18", "_green.jpg")):
        ids = [n[: -len(suffix)] for n in names if n.endswith(suffix)]
        if ids:
            return kind, ids
    return None, names


def hash_multichannel(folder: Path, names: Sequence[str], stains: Sequence[str], progress: bool = True) -> np.ndarray:
    """``(N, len(stains))`` phashes of single multi-channel image files (channels R, G, B, Y)."""
    out = np.zeros((len(names), len(stains)), np.uint64)
    for k, n in enumerate(tqdm(names, desc="hash pretraining", disable=not progress, leave=False)):
        try:
            with Image.open(folder / n) as im:
                img = np.asarray(im)
        except OSError:
            raise HPAError(f"{folder / n}: unreadable image") from None
        if img.ndim != 3 or img.shape[2] < 3:
            raise HPAError(f"{folder / n}: {img.shape} is not a multi-channel image (R, G, B[, Y])")
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        for j, s in enumerate(stains):
            c = STAIN_INDEX[s]
            plane = img[..., c] if c < img.shape[2] else np.zeros(img.shape[:2], np.uint8)
            out[k, j] = phash64(resize(plane, HASH_SIDE) if max(plane.shape) > HASH_SIDE else plane)
    return out


def match_images(folder: Path, names: list[str], kaggle_sources: Sequence[ImageSource], threshold: int,
                 reference: str, cache_dir, progress: bool = True) -> pd.DataFrame:
    """Rows ``entry,source,Id,green_bits,<reference>_bits``: pretraining images within ``threshold``
    bits of a Kaggle image in both stains."""
    stains = ("green", reference)
    kind, ids = _folder_layout(folder, names)
    if kind is None:
        pre = hash_multichannel(folder, ids, stains, progress)
    else:
        pre = hash_images(ImageSource("pretraining", folder, ids, kind), stains, cache_dir, progress=progress)
    hashes = [hash_images(s, stains, cache_dir, progress=progress) for s in kaggle_sources]
    owner = [("pretraining", i) for i in ids] + [(s.name, i) for s in kaggle_sources for i in s.ids]
    pairs, bits = near_pairs(np.concatenate([pre, *hashes]), threshold)
    rows = []
    for (a, b), d in zip(pairs, bits):
        (sa, ia), (sb, ib) = owner[a], owner[b]
        if (sa == "pretraining") != (sb == "pretraining"):
            entry, (src, kid) = (ia, (sb, ib)) if sa == "pretraining" else (ib, (sa, ia))
            rows.append((entry, src, kid, int(d[0]), int(d[1])))
    return pd.DataFrame(rows, columns=["entry", "source", "Id", "green_bits", f"{reference}_bits"])


def pretraining_report(pretraining: str | Path, kaggle_sources: Sequence[ImageSource], out: str | Path,
                       threshold: int = 4, reference: str = "blue", cache_dir=None, progress: bool = True) -> dict:
    """Audit one pretraining list against the Kaggle sources (``train``, ``test``); write the files of the
    module docstring into ``out``; return the counts."""
    entries, folder = read_entries(pretraining)
    kaggle = {s.name: set(s.ids) for s in kaggle_sources}
    by_id = match_ids(entries, kaggle)
    by_image = (match_images(folder, entries, kaggle_sources, threshold, reference, cache_dir, progress)
                if folder is not None else None)
    summary = {"pretraining": str(pretraining), "entries": len(entries), "threshold": threshold,
               "reference": reference, "hashed": folder is not None}
    for s in kaggle_sources:
        idset = set(by_id["Id"][by_id["source"] == s.name])
        imgset = set(by_image["Id"][by_image["source"] == s.name]) if by_image is not None else set()
        summary[s.name] = {"images": len(s.ids), "by_id": len(idset), "by_image": len(imgset),
                           "either": len(idset | imgset), "share": len(idset | imgset) / max(1, len(s.ids))}
    out = Path(out)
    write_csv(out / "pretraining_ids.csv", by_id)
    if by_image is not None:
        write_csv(out / "pretraining_pairs.csv", by_image)
    write_json(out / "pretraining.json", summary)
    return summary


def summary_line(s: dict) -> str:
    """One line of counts for the command line."""
    parts = [f"{name}: {s[name]['either']} of {s[name]['images']} ({100 * s[name]['share']:.1f}%; "
             f"{s[name]['by_id']} by Id, " + (f"{s[name]['by_image']} by image)" if s["hashed"] else "images not given)")
             for name in ("train", "test") if name in s]
    return f"pretraining list {s['pretraining']} ({s['entries']} entries) contains Kaggle " + "; ".join(parts)
