"""The synthetic demo dataset: HPA-like RGBY images in the exact Kaggle layout, learnable by design.

``make_demo_dataset(out, ...)`` writes ``train.csv``, ``train/``, ``test/``, ``sample_submission.csv``,
the hidden ``test_labels.csv`` and ``contact_sheet.png``. Label sets are drawn from the real label-set
table (``hpa.classes.label_set_table``) with a per-class floor; each label adds its own green pattern
(``hpa.demo.patterns.PATTERNS``). The same seed gives the same bytes.
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
from tqdm import tqdm

from hpa.classes import CLASS_NAMES, NUM_CLASSES, label_set_table
from hpa.demo.patterns import PATTERNS, draw_blue, draw_red, draw_yellow, layout
from hpa.data.images import to_rgb, write_kaggle_rgby
from hpa.data.labels import format_target, to_multihot
from hpa.errors import HPAError
from hpa.io import write_csv

MIN_SIZE = 16
# Stream tags for np.random.SeedSequence so labels, ids and each image get independent streams.
_LABELS, _IDS, _IMAGES, _SHEET = 0, 1, 2, 3


def sample_label_sets(n: int, rng: np.random.Generator, floor: int, grow: bool) -> list[tuple[int, ...]]:
    """Draw ``n`` real label sets (weighted by their real counts), then lift every class to ``floor``.

    A class short of its floor gets real label sets that contain it (weighted by count; the single
    class if the table has none) in place of drawn rows whose classes all stay above the floor.
    When no such row is left, a row is appended if ``grow`` (so the result may exceed ``n``),
    otherwise the floor of that class is given up (best effort, used for small test splits).
    """
    table = label_set_table()
    counts = np.array([c for _, c in table], dtype=float)
    sets = [table[i][0] for i in rng.choice(len(table), size=n, p=counts / counts.sum())]
    locked = np.zeros(n, bool)
    per_class = to_multihot(sets).sum(0).astype(int)
    with_class = {c: [i for i, (s, _) in enumerate(table) if c in s] for c in range(NUM_CLASSES)}
    # Rarest classes first, so their sets (often multi-label) count towards the common ones too.
    for c in np.argsort(per_class, kind="stable"):
        while per_class[c] < floor:
            cand = with_class[c]
            if cand:
                w = counts[cand]
                new = table[cand[rng.choice(len(cand), p=w / w.sum())]][0]
            else:
                new = (int(c),)
            victims = [i for i in np.flatnonzero(~locked)
                       if c not in sets[i] and all(per_class[k] > floor for k in sets[i])]
            if victims:
                i = int(victims[rng.integers(len(victims))])
                per_class[list(sets[i])] -= 1
                sets[i] = new
                locked[i] = True
            elif grow:
                sets.append(new)
                locked = np.append(locked, True)
            else:
                break
            per_class[list(new)] += 1
    return sets


def make_ids(n: int, rng: np.random.Generator) -> list[str]:
    """Return ``n`` distinct Kaggle-like Ids (``8-4-4-4-12`` lowercase hex) drawn from ``rng``."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        h = rng.bytes(16).hex()
        s = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        if s not in seen:
            seen.add(s)
            ids.append(s)
    return ids


def render_sample(labels, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one HPA-like image with the green patterns of ``labels``; return ``size x size x 4`` uint8.

    Each label's pattern is drawn in a random subset (half to all) of the cells with its own
    intensity; every stain gets a random gain, background, blur and noise.
    """
    labels = sorted(set(int(c) for c in labels))
    sc = layout(rng, size, labels)
    red, blue, yellow = draw_red(sc), draw_blue(sc), draw_yellow(sc)
    green = np.zeros((size, size), np.float32)
    normal = [c for c in sc.cells if c.kind == "normal"] or sc.cells
    for c in labels:
        k = max(1, int(np.ceil(len(normal) * rng.uniform(0.5, 1.0))))
        cells = [normal[i] for i in sorted(rng.choice(len(normal), k, replace=False))]
        layer = np.zeros_like(green)
        PATTERNS[c](sc, cells, layer)
        green += rng.uniform(0.6, 1.0) * layer
    blur = rng.uniform(0.3, 0.8) * sc.s
    green = cv2.GaussianBlur(green, (0, 0), blur)
    planes = []
    for img, gain in ((red, rng.uniform(0.5, 0.9)), (green, rng.uniform(0.6, 1.0)),
                      (blue, rng.uniform(0.55, 0.9)), (yellow, rng.uniform(0.4, 0.8))):
        noise = rng.normal(rng.uniform(0.01, 0.04), rng.uniform(0.008, 0.025), img.shape)
        planes.append(np.clip((img * gain + noise) * 255, 0, 255))
    return np.stack(planes, -1).round().astype(np.uint8)


def _image_rng(seed: int, split: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, _IMAGES, split, i])


def write_split(folder: Path, ids, sets, size: int, seed: int, split: int, bar: tqdm) -> None:
    """Render and write the images of one split (``folder/{Id}_{stain}.png``), advancing ``bar``."""
    for i, (image_id, labels) in enumerate(zip(ids, sets)):
        write_kaggle_rgby(folder, image_id, render_sample(labels, size, _image_rng(seed, split, i)))
        bar.update(1)


def write_contact_sheet(path: Path, size: int, seed: int) -> Path:
    """Save a 4x7 PNG grid with one single-label RGB composite per class (``to_rgb``), titled by name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tile, gap, strip, cols = max(size, 128), 4, 16, 7
    # One mosaic in one axes: 28 separate axes made the sheet several times slower to draw.
    sheet = np.full((4 * (tile + strip + gap), cols * (tile + gap), 3), 255, np.uint8)
    fig, ax = plt.subplots(figsize=(sheet.shape[1] / 80, sheet.shape[0] / 80 + 0.5), dpi=80)
    for c in range(NUM_CLASSES):
        y, x = (c // cols) * (tile + strip + gap) + strip, (c % cols) * (tile + gap)
        img = render_sample([c], tile, np.random.default_rng([seed, _SHEET, c]))
        sheet[y:y + tile, x:x + tile] = to_rgb(img)
        ax.text(x + tile / 2, y - 3, f"{c} {CLASS_NAMES[c]}", ha="center", va="bottom", fontsize=7)
    ax.imshow(sheet)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("green = the class's protein pattern; red microtubules, blue nucleus, yellow ER")
    ax.set_title(f"Demo dataset: one synthetic {tile} px image per class (seed {seed})")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _check_args(out: Path, n_train, n_test, size, min_per_class, overwrite) -> None:
    for name, v, lo in (("n_train", n_train, 1), ("n_test", n_test, 1), ("size", size, MIN_SIZE),
                        ("min_per_class", min_per_class, 0)):
        if int(v) != v or v < lo:
            raise HPAError(f"{name}: must be an integer >= {lo}, got {v}")
    if out.exists() and not out.is_dir():
        raise HPAError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise HPAError(f"{out}: folder exists and is not empty (use --overwrite to replace it)")
        if not (out / "train.csv").is_file():  # --overwrite deletes the folder: only a dataset's
            raise HPAError(f"{out}: refusing to overwrite a folder without train.csv (not a dataset)")


def make_demo_dataset(out, n_train: int = 800, n_test: int = 200, size: int = 128, seed: int = 0,
                      min_per_class: int = 10, contact_sheet: bool = True,
                      overwrite: bool = False, progress: bool = True) -> dict:
    """Write the demo dataset to ``out`` (Kaggle layout) and return a summary dict.

    The dataset is built in a temporary folder beside ``out`` and renamed into place at the end;
    an existing non-empty ``out`` is refused unless ``overwrite``. Summary keys: ``out``,
    ``n_train``, ``n_test`` (actual counts; train may exceed the request to meet the floor),
    ``size``, ``seed``, ``train_class_counts``, ``test_class_counts``, ``multi_label_train``,
    ``seconds``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    _check_args(out, n_train, n_test, size, min_per_class, overwrite)
    ss = np.random.default_rng([seed, _LABELS])
    train_sets = sample_label_sets(n_train, ss, min_per_class, grow=True)
    test_sets = sample_label_sets(n_test, ss, max(1, min_per_class // 4) if min_per_class else 0, grow=False)
    ids = make_ids(len(train_sets) + len(test_sets), np.random.default_rng([seed, _IDS]))
    train_ids, test_ids = ids[: len(train_sets)], ids[len(train_sets):]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with tqdm(total=len(ids), desc="demo images", unit="img", disable=not progress) as bar:
            write_split(tmp / "train", train_ids, train_sets, size, seed, 0, bar)
            write_split(tmp / "test", test_ids, test_sets, size, seed, 1, bar)
        targets = [format_target(s) for s in train_sets]
        write_csv(tmp / "train.csv", pd.DataFrame({"Id": train_ids, "Target": targets}))
        write_csv(tmp / "test_labels.csv",
                  pd.DataFrame({"Id": test_ids, "Target": [format_target(s) for s in test_sets]}))
        write_csv(tmp / "sample_submission.csv", pd.DataFrame({"Id": test_ids, "Predicted": "0"}))
        if contact_sheet:
            write_contact_sheet(tmp / "contact_sheet.png", size, seed)
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    train_counts = to_multihot(train_sets).sum(0)
    return {"out": str(out), "n_train": len(train_sets), "n_test": len(test_sets), "size": size,
            "seed": seed, "train_class_counts": [int(x) for x in train_counts],
            "test_class_counts": [int(x) for x in to_multihot(test_sets).sum(0)],
            "multi_label_train": int(sum(len(s) > 1 for s in train_sets)),
            "seconds": round(time.perf_counter() - t0, 2)}

