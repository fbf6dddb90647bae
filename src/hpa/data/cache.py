"""A pre-resized uint8 image cache: decode and resize every image once, then memory-map it.

``open_images(dir, ids, size)`` returns a sequence of ``HxWx4`` uint8 images. With ``cache=True`` it
is an ``np.memmap`` of shape ``(N, size, size, 4)`` read from ``<cache_dir>/<kind>_<size>_<key>.npy``,
where ``key`` hashes the resolved folder, kind, size and the ordered Id list, so a different Id list
or size never reuses a wrong cache. Next to it, ``<same>.json`` records ids, size, kind and creation
time. The cache is built into a temporary file and renamed, so a crash never leaves a bad one; a cache
whose sidecar or file size does not match is rebuilt with a warning.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from hpa.data.images import CHANNELS, check_id, hpav18_names, read_hpav18_rgby, read_kaggle_rgby
from hpa.errors import HPAError
from hpa.io import atomic_path, write_json
from hpa.registry import Registry

#: image layout name -> reader(image_dir, image_id, size) -> HxWx4 uint8
IMAGE_READERS: Registry[Callable[..., np.ndarray]] = Registry("image kind")
IMAGE_READERS.register("kaggle")(read_kaggle_rgby)
IMAGE_READERS.register("hpav18")(read_hpav18_rgby)
_EXT = {"kaggle": "png", "hpav18": "jpg"}


class LazyImages:
    """Images decoded on each access (``cache=False``): ``len()`` and ``[i]`` -> HxWx4 uint8."""

    def __init__(self, image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle"):
        self.image_dir, self.ids, self.size, self.kind = Path(image_dir), list(ids), size, kind
        self._read = IMAGE_READERS.get(kind)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._read(self.image_dir, self.ids[i], self.size)


def check_images(image_dir: str | Path, ids: Sequence[str], kind: str = "kaggle") -> int:
    """Check that all four channel files exist for every Id; return the number of Ids checked.

    Raises one HPAError naming the first missing file (in Id order, then red/green/blue/yellow).
    """
    image_dir = Path(image_dir)
    IMAGE_READERS.get(kind)                 # unknown kind: HPAError listing the valid ones
    ext = _EXT[kind]
    if not image_dir.is_dir():
        raise HPAError(f"{image_dir}: image folder not found")
    present = set(os.listdir(image_dir))    # one directory listing instead of 4N stat calls
    for image_id in ids:
        check_id(image_id)
        for c in CHANNELS:
            # HPAv18 files may also carry the image server's name, without the antibody prefix
            names = hpav18_names(image_id, c, ext) if kind == "hpav18" else (f"{image_id}_{c}.{ext}",)
            if not any(n in present for n in names):
                raise HPAError(f"{image_dir / names[0]}: missing channel file")
    return len(ids)


def cache_key(image_dir: str | Path, ids: Sequence[str], size: int, kind: str) -> str:
    """Return the 16-hex-digit hash naming the cache of (resolved folder, kind, size, ordered Ids)."""
    blob = json.dumps([str(Path(image_dir).resolve()), kind, int(size), [str(i) for i in ids]])
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def cache_path(image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle",
               cache_dir: str | Path = "input/cache") -> Path:
    """Return where the cache of these images lives (``<cache_dir>/<kind>_<size>_<key>.npy``)."""
    return Path(cache_dir) / f"{kind}_{size}_{cache_key(image_dir, ids, size, kind)}.npy"


def _cache_problem(path: Path, ids: list[str], size: int, kind: str) -> str | None:
    """Why the cache at ``path`` cannot be used (None when it can)."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        return f"unreadable ({e})"
    if meta.get("ids") != ids or meta.get("size") != size or meta.get("kind") != kind:
        return "sidecar does not match the requested ids/size/kind"
    if arr.shape != (len(ids), size, size, 4) or arr.dtype != np.uint8:
        return f"array is {arr.shape} {arr.dtype}, expected {(len(ids), size, size, 4)} uint8"
    return None


def build_cache(image_dir: str | Path, ids: Sequence[str], size: int, path: str | Path,
                kind: str = "kaggle", workers: int = 2) -> Path:
    """Decode, validate and resize every image into the ``.npy`` cache at ``path``; return the path.

    Written to a temporary file and renamed on success; a read error is an HPAError naming the file.
    """
    image_dir, ids, path = Path(image_dir), [str(i) for i in ids], Path(path)
    read = IMAGE_READERS.get(kind)
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ids), size, size, 4))

        def fill(i: int) -> None:
            arr[i] = read(image_dir, ids[i], size)

        # cv2 releases the GIL while decoding, so threads give a real speed-up without pickling.
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in tqdm(pool.map(fill, range(len(ids))), total=len(ids), unit="img",
                          desc=f"cache {image_dir.name} {size}px"):
                pass
        arr.flush()
        del arr
    write_json(path.with_suffix(".json"), {
        "ids": ids, "size": size, "kind": kind, "image_dir": str(image_dir.resolve()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return path


def open_images(image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle",
                cache: bool = True, cache_dir: str | Path = "input/cache",
                workers: int = 2) -> Sequence[np.ndarray]:
    """Return the images of ``ids`` as a sequence of ``size x size x 4`` uint8 arrays.

    ``cache=True``: a read-only ``np.memmap`` ``(N, size, size, 4)``, built on first use (and rebuilt
    with a warning when the existing one is bad). ``cache=False``: a :class:`LazyImages` reader.
    """
    IMAGE_READERS.get(kind)
    if size <= 0:
        raise HPAError(f"image size must be positive, got {size}")
    ids = [str(i) for i in ids]
    if not cache:
        return LazyImages(image_dir, ids, size, kind)
    path = cache_path(image_dir, ids, size, kind, cache_dir)
    problem = _cache_problem(path, ids, size, kind)
    if problem is not None:
        if problem != "missing":
            warnings.warn(f"{path}: bad image cache ({problem}); rebuilding", stacklevel=2)
        check_images(image_dir, ids, kind)   # fail fast, before decoding thousands of images
        build_cache(image_dir, ids, size, path, kind, workers)
    return np.load(path, mmap_mode="r")


# ----------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa cache``."""
    p.add_argument("--config", required=True, help="experiment YAML (data.* keys)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")


def main(args: argparse.Namespace) -> int:
    """``hpa cache``: build the train, test (and external, if configured) caches of a config."""
    from hpa.config import load_config
    from hpa.data.labels import read_labels
    from hpa.io import read_csv

    cfg = load_config(args.config, args.set)
    d, root = cfg.data, Path(cfg.data.root)
    jobs = [(root / d.train_dir, read_labels(root / d.train_csv)["Id"], "kaggle"),
            (root / d.test_dir, read_csv(root / d.sample_submission, ["Id"])["Id"], "kaggle")]
    if d.external_csv:
        jobs.append((Path(d.external_dir), read_labels(d.external_csv)["Id"], "hpav18"))
    for image_dir, ids, kind in jobs:
        t0 = time.perf_counter()
        arr = open_images(image_dir, list(ids), d.image_size, kind, True, d.cache_dir, args.workers)
        print(f"{image_dir}: {arr.shape[0]} images at {d.image_size}px -> {arr.filename} "
              f"({arr.nbytes / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f}s)")
    return 0
