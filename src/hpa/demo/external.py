"""A demo HPAv18-style external folder beside the demo dataset (``hpa demo-data --external N``).

``make_external_demo(root, n)`` reads a demo dataset in ``root`` (``hpa demo-data``) and writes:

* ``root/hpav18/``: ``n`` samples as one colour JPEG per stain (red in R, green in G, blue in B,
  yellow in R and G, as the v18 server serves them), of varied sizes (1.5x, 2x, 3x the demo size),
  about a third under the server's file name without the antibody prefix (``1610_C1_1_red.jpg``),
  the rest under the full Id (``10580_1610_C1_1_red.jpg``);
* ``root/hpav18.csv``: the label file in the HPAv18 format (``Id,Target``, Ids
  ``<antibody>_<plate>_<well>_<field>``, labels in no fixed order), with antibody siblings (the same
  well, several fields, same labels) as in the real file;
* ``root/hpav18_planted.csv``: what was planted, so a test can check the leak report: ``twin`` rows
  are near-duplicates (same sample re-sized, re-exposed, JPEG-compressed) of a demo train image, a
  demo test image or another external image; ``decoy_same_cells`` rows reuse a train image's red,
  blue and yellow stains with another protein in green (must not match); ``decoy_dim_green`` rows
  have an empty green stain (their green hashes match each other; the reference stain must
  keep them apart).

Same demo dataset and seed, same bytes. The folder is built in a temporary folder and renamed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.classes import label_set_table
from hpa.demo.dataset import render_sample
from hpa.data.images import CHANNELS, read_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.io import write_csv

_EXTERNAL = 10                          # SeedSequence stream tag (demo.py uses 0-3)
SCALES = (1.5, 2.0, 3.0)
#: BGR colour of each stain in an HPAv18 JPEG: the plane(s) that carry its signal
_BGR = {"red": (0, 0, 1), "green": (0, 1, 0), "blue": (1, 0, 0), "yellow": (0, 1, 1)}
PLANTED_COLUMNS = ["Id", "kind", "twin_source", "twin_id"]
MIN_N = 10


def write_hpav18_jpegs(folder: Path, stem: str, img: np.ndarray, quality: int) -> None:
    """Write an ``HxWx4`` RGBY uint8 image as the four colour JPEGs ``{stem}_{stain}.jpg``."""
    for k, c in enumerate(CHANNELS):
        bgr = img[..., k][..., None] * np.array(_BGR[c], np.uint8)
        if not cv2.imwrite(str(folder / f"{stem}_{c}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise HPAError(f"{folder / f'{stem}_{c}.jpg'}: could not write image")


def _retake(img: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """The same sample published again: resized to ``side``, another exposure, fresh sensor noise."""
    big = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big = big * rng.uniform(0.85, 1.15, 4) + rng.normal(0, 2.0, big.shape)
    return np.clip(big, 0, 255).round().astype(np.uint8)


def _dim_green(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace green by a stain that shows nothing: black but for sparse 1-2 grey-level specks. Its
    phash is all zeros, like every other empty stain's (the case pudae's scripts skipped)."""
    out = img.copy()
    out[..., 1] = (rng.random(img.shape[:2]) < 0.05) * rng.integers(1, 3, img.shape[:2])
    return out


class _Ids:
    """Distinct HPAv18-like Ids: ``<antibody>_<plate>_<well>_<field>``, siblings share the well."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.wells = rng, set()

    def new_well(self) -> str:
        """A new ``<antibody>_<plate>_<well>`` (plate and well unique, so server names are unique)."""
        r = self.rng
        while True:
            plate_well = f"{int(r.integers(1, 2000))}_{'ABCDEFGH'[int(r.integers(8))]}{int(r.integers(1, 13))}"
            if plate_well not in self.wells:
                self.wells.add(plate_well)
                return f"{int(r.integers(100, 70000))}_{plate_well}"


def _plan(n: int) -> dict[str, int]:
    """How many samples of each planted kind ``n`` external samples hold (the rest are fresh)."""
    plan = {"twin_train": max(2, n // 10), "twin_test": max(1, n // 20), "twin_external": max(1, n // 50),
            "decoy_same_cells": max(1, n // 50), "decoy_dim_green": max(2, n // 50)}
    plan["fresh"] = n - sum(plan.values()) - plan["twin_external"]   # each external twin needs an original
    return plan


def make_external_demo(root: str | Path, n: int, seed: int = 0, overwrite: bool = False) -> dict:
    """Write ``root/hpav18/``, ``root/hpav18.csv`` and ``root/hpav18_planted.csv`` for the demo dataset
    in ``root``; return a summary dict (``n``, ``sizes``, ``short_names``, ``planted`` counts, ``seconds``)."""
    t0 = time.perf_counter()
    root = Path(root)
    if int(n) != n or n < MIN_N:
        raise HPAError(f"--external: must be an integer >= {MIN_N}, got {n}")
    for f in ("train.csv", "test_labels.csv"):
        if not (root / f).is_file():
            raise HPAError(f"{root / f}: not found; --external adds to a demo dataset (hpa demo-data)")
    folder = root / "hpav18"
    if (folder.exists() or (root / "hpav18.csv").exists()) and not overwrite:
        raise HPAError(f"{folder}: exists (use --overwrite to rebuild the demo dataset)")
    train, test = read_labels(root / "train.csv"), read_labels(root / "test_labels.csv")
    rng = np.random.default_rng([seed, _EXTERNAL])
    size = read_kaggle_rgby(root / "train", train["Id"].iat[0]).shape[0]
    plan, ids = _plan(int(n)), _Ids(rng)
    table = label_set_table()
    weights = np.array([c for _, c in table], float)
    rows, planted = [], []
    tmp = Path(tempfile.mkdtemp(prefix=".hpav18.", suffix=".tmp", dir=root))
    try:
        def emit(img, labels, kind="", twin_source="", twin_id="", well=None, field=1):
            image_id = f"{well or ids.new_well()}_{field}"
            stem = image_id.split("_", 1)[1] if rng.random() < 0.3 else image_id
            write_hpav18_jpegs(tmp, stem, img, int(rng.integers(85, 96)))
            order = rng.permutation(len(labels))
            rows.append({"Id": image_id, "Target": " ".join(str(labels[i]) for i in order)})
            if kind:
                planted.append({"Id": image_id, "kind": kind, "twin_source": twin_source, "twin_id": twin_id})
            return image_id

        def side() -> int:
            return int(round(size * SCALES[rng.integers(len(SCALES))]))

        def fresh_labels() -> list[int]:
            return list(table[rng.choice(len(table), p=weights / weights.sum())][0])

        for split, df, count in (("train", train, plan["twin_train"]), ("test", test, plan["twin_test"])):
            for i in sorted(rng.choice(len(df), count, replace=False)):
                img = read_kaggle_rgby(root / split, df["Id"].iat[i])
                emit(_retake(img, side(), rng), df["labels"].iat[i], "twin", split, df["Id"].iat[i])
        for _ in range(plan["twin_external"]):
            labels, s = fresh_labels(), side()
            img = render_sample(labels, s, rng)
            first = emit(img, labels)
            emit(_retake(img, side(), rng), labels, "twin", "external", first)
        for i in sorted(rng.choice(len(train), plan["decoy_same_cells"], replace=False)):
            img = _retake(read_kaggle_rgby(root / "train", train["Id"].iat[i]), side(), rng)
            labels = fresh_labels()
            img[..., 1] = render_sample(labels, img.shape[0], rng)[..., 1]
            emit(img, labels, "decoy_same_cells", "train", train["Id"].iat[i])
        for _ in range(plan["decoy_dim_green"]):
            labels = fresh_labels()
            emit(_dim_green(render_sample(labels, side(), rng), rng), labels, "decoy_dim_green")
        left = plan["fresh"]
        while left > 0:                  # fresh samples; some wells imaged in 2-3 fields (antibody siblings)
            labels, well = fresh_labels(), ids.new_well()
            for field in range(1, min(left, int(rng.choice([1, 1, 2, 3]))) + 1):
                emit(render_sample(labels, side(), rng), labels, well=well, field=field)
                left -= 1
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    write_csv(root / "hpav18.csv", pd.DataFrame(rows, columns=["Id", "Target"]).sort_values("Id"))
    write_csv(root / "hpav18_planted.csv", pd.DataFrame(planted, columns=PLANTED_COLUMNS))
    names = os.listdir(folder)
    return {"n": len(rows), "folder": str(folder), "short_names": sum(1 for r in rows
            if f"{r['Id']}_red.jpg" not in names),
            "sizes": sorted({cv2.imread(str(folder / x)).shape[0] for x in names if x.endswith("_red.jpg")}),
            "planted": {k: v for k, v in plan.items() if k != "fresh"},
            "seconds": round(time.perf_counter() - t0, 2)}
