"""Facts about the 28 HPA classes, derived from the real Kaggle ``train.csv`` (31,072 rows).

The label-set frequency table lives in ``resources/label_sets.csv`` (``Target,count``; labels sorted
ascending, 577 distinct sets). Nothing here reads the real competition files at run time.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

NUM_CLASSES = 28

#: Probability columns of every OOF / test-probability file (docs/formats.md), class index order.
PROB_COLUMNS: list[str] = [f"p{i}" for i in range(NUM_CLASSES)]

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm", "Nuclear membrane", "Nucleoli", "Nucleoli fibrillar center",
    "Nuclear speckles", "Nuclear bodies", "Endoplasmic reticulum", "Golgi apparatus",
    "Peroxisomes", "Endosomes", "Lysosomes", "Intermediate filaments", "Actin filaments",
    "Focal adhesion sites", "Microtubules", "Microtubule ends", "Cytokinetic bridge",
    "Mitotic spindle", "Microtubule organizing center", "Centrosome", "Lipid droplets",
    "Plasma membrane", "Cell junctions", "Mitochondria", "Aggresome", "Cytosol",
    "Cytoplasmic bodies", "Rods & rings",
)

#: Positive count of each class in the real train.csv.
TRAIN_COUNTS: tuple[int, ...] = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537, 1066, 21,
    530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328, 11,
)
TRAIN_ROWS = 31072

#: Number of images with 1..5 labels in the real train.csv.
LABELS_PER_IMAGE: dict[int, int] = {1: 15126, 2: 12485, 3: 3160, 4: 299, 5: 2}


def train_frequencies() -> list[float]:
    """Return each class's positive rate in the real train.csv (28 floats in [0, 1])."""
    return [c / TRAIN_ROWS for c in TRAIN_COUNTS]


@lru_cache(maxsize=1)
def label_set_table() -> tuple[tuple[tuple[int, ...], int], ...]:
    """Return the real label sets with their counts, most common first: ``((labels, count), ...)``."""
    text = resources.files("hpa.resources").joinpath("label_sets.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return tuple((tuple(int(x) for x in r["Target"].split()), int(r["count"])) for r in rows)
