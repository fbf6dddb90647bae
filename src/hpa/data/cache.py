"""A pre-resized uint8 image cache: decode and resize every image once, then memory-map it.

``open_images(dir, ids, size)`` returns a sequence of ``HxWx4`` uint8 images. With ``cache=True`` it
is an ``np.memmap`` of shape ``(N, size, size, 4)`` read from ``<cache_dir>/<kind>_<size>_<key>.npy``,
where ``key`` hashes the resolved folder, kind, size and the ordered Id list, so a different Id list
or size never reuses a wrong cache. Next to it, ``<same>.json`` records ids, size, kind, creation
time and the size and modification time of every source file. The cache is built into a temporary
file (its disk space checked and reserved first) and renamed, so a crash or a full disk never leaves a
bad one; a cache whose sidecar or file size does not match, or whose source files changed since, is
rebuilt with a warning.
"""
from __future__ import annotations

import argparse
import errno
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

from hpa.config import load_config
from hpa.data.images import CHANNELS, check_id, hpav18_names, read_hpav18_rgby, read_kaggle_rgby
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.external.hpav18 import external_labels
from hpa.io import atomic_path, check_free_space, remove_stale_temporaries, write_json
from hpa.registry import Registry
from hpa.submission import read_sample_ids

#: image layout name -> reader(image_dir, image_id, size) -> HxWx4 uint8; ``ext`` is its files' extension,
#: ``names(image_id, channel, ext)`` the file names one channel may have (default ``<Id>_<channel>.<ext>``)
IMAGE_READERS: Registry[Callable[..., np.ndarray]] = Registry("image kind", fixed=("image_dir", "image_id", "size"))
IMAGE_READERS.register("kaggle", ext="png")(read_kaggle_rgby)
IMAGE_READERS.register("hpav18", ext="jpg", names=hpav18_names)(read_hpav18_rgby)


class LazyImages:
    """Images decoded on each access (``cache=False``): ``len()`` and ``[i]`` -> HxWx4 uint8."""

    def __init__(self, image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle"):
        self.image_dir, self.ids, self.size, self.kind = Path(image_dir), list(ids), size, kind
        self._read = IMAGE_READERS.get(kind)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._read(self.image_dir, self.ids[i], self.size)


def missing_files_error(folder: Path, names: Sequence[str], one: str, many: str) -> HPAError:
    """One HPAError for every missing file at once: ``<folder>/<name>: <one>`` for a single file, else
    ``<folder>: N <many>: a, b, c, d, e and N-5 more`` (so one rerun after fixing them is enough)."""
    if len(names) == 1:
        return HPAError(f"{folder / names[0]}: {one}")
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return HPAError(f"{folder}: {len(names)} {many}: {shown}")


def channel_names(image_id: str, kind: str = "kaggle", present: set[str] | dict | None = None) -> list[str]:
    """The four channel file names of one image (red, green, blue, yellow).

    HPAv18 files may also carry the image server's name, without the antibody prefix: given
    ``present`` (the folder's file names), the form that exists is returned, else the full-Id form.
    """
    info = IMAGE_READERS.info(kind)
    ext, names_of = info["ext"], info.get("names")
    if names_of is None:
        return [f"{image_id}_{c}.{ext}" for c in CHANNELS]
    forms = [names_of(image_id, c, ext) for c in CHANNELS]
    return [next((n for n in names if present is not None and n in present), names[0]) for names in forms]


def check_images(image_dir: str | Path, ids: Sequence[str], kind: str = "kaggle") -> int:
    """Check that all four channel files exist for every Id; return the number of Ids checked.

    Raises one HPAError counting every missing file and naming the first five (in Id order, then
    red/green/blue/yellow); a single missing file is named alone (``<file>: missing channel file``).
    """
    image_dir = Path(image_dir)
    IMAGE_READERS.get(kind)                 # unknown kind: HPAError listing the valid ones
    if not image_dir.is_dir():
        raise HPAError(f"{image_dir}: image folder not found")
    present = set(os.listdir(image_dir))    # one directory listing instead of 4N stat calls
    missing = [name for image_id in ids for name in channel_names(check_id(image_id), kind, present)
               if name not in present]
    if missing:
        raise missing_files_error(image_dir, missing, "missing channel file", "missing channel files")
    return len(ids)


def source_stats(image_dir: str | Path, ids: Sequence[str], kind: str = "kaggle") -> dict[str, list[int]]:
    """Size and modification time (ns) of every channel file, in Id then channel order.

    What a cache was built from: a source whose size or time differs later makes the cache stale.
    One directory scan (``os.scandir``) instead of a path lookup per file.
    """
    stats = {e.name: e.stat() for e in os.scandir(image_dir)}
    names = [name for image_id in ids for name in channel_names(image_id, kind, stats)]
    missing = [n for n in names if n not in stats]
    if missing:
        raise missing_files_error(Path(image_dir), missing, "missing channel file", "missing channel files")
    return {"size": [stats[n].st_size for n in names], "mtime_ns": [stats[n].st_mtime_ns for n in names]}


def _changed_sources(image_dir: Path, ids: list[str], kind: str, recorded: dict) -> str | None:
    """Why the sources of a cache differ from ``recorded`` (None when they match)."""
    now = source_stats(image_dir, ids, kind)
    if (not isinstance(recorded, dict) or len(recorded.get("size", ())) != len(now["size"])
            or len(recorded.get("mtime_ns", ())) != len(now["mtime_ns"])):
        return "built without the sizes and times of its source files (an older hpa)"
    differ = np.flatnonzero((np.asarray(recorded["size"]) != np.asarray(now["size"]))
                            | (np.asarray(recorded["mtime_ns"]) != np.asarray(now["mtime_ns"])))
    if len(differ) == 0:
        return None
    first = channel_names(ids[differ[0] // 4], kind)[differ[0] % 4]
    return (f"{len(differ)} source file(s) changed since it was built (size or modification time), "
            f"first {image_dir / first}")


def cache_key(image_dir: str | Path, ids: Sequence[str], size: int, kind: str) -> str:
    """Return the 16-hex-digit hash naming the cache of (resolved folder, kind, size, ordered Ids)."""
    blob = json.dumps([str(Path(image_dir).resolve()), kind, int(size), [str(i) for i in ids]])
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def cache_path(image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle",
               cache_dir: str | Path = "input/cache") -> Path:
    """Return where the cache of these images lives (``<cache_dir>/<kind>_<size>_<key>.npy``)."""
    return Path(cache_dir) / f"{kind}_{size}_{cache_key(image_dir, ids, size, kind)}.npy"


def _cache_problem(path: Path, image_dir: Path, ids: list[str], size: int, kind: str) -> str | None:
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
    return _changed_sources(image_dir, ids, kind, meta.get("sources"))


def cache_bytes(n_images: int, size: int) -> int:
    """Bytes of the ``.npy`` cache of ``n_images`` images at ``size`` px (array and a header)."""
    return n_images * size * size * 4 + 4096


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate the disk blocks of ``path`` now: a full disk is then an OSError here, never a SIGBUS
    when a page of the memory map is written later (the mapped file is otherwise sparse)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):    # no fallocate here: rely on the check
            raise                                               # of free space made before
    finally:
        os.close(fd)


def build_cache(image_dir: str | Path, ids: Sequence[str], size: int, path: str | Path,
                kind: str = "kaggle", workers: int = 2) -> Path:
    """Decode, validate and resize every image into the ``.npy`` cache at ``path``; return the path.

    Checks the free space first (HPAError naming the path and the space needed), reserves the whole
    file, writes it to a temporary file and renames it on success; a read error is an HPAError naming
    the image. The sidecar records the size and modification time of every source file.
    """
    image_dir, ids, path = Path(image_dir), [str(i) for i in ids], Path(path)
    read = IMAGE_READERS.get(kind)
    check_free_space(path, cache_bytes(len(ids), size), "the image cache",
                     "free some space or set data.cache_dir to a larger disk")
    sources = source_stats(image_dir, ids, kind)     # before decoding: a change during the build shows
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ids), size, size, 4))
        _reserve(tmp, os.path.getsize(tmp))

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
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sources": sources})
    return path


def open_images(image_dir: str | Path, ids: Sequence[str], size: int, kind: str = "kaggle",
                cache: bool = True, cache_dir: str | Path = "input/cache",
                workers: int = 2) -> Sequence[np.ndarray]:
    """Return the images of ``ids`` as a sequence of ``size x size x 4`` uint8 arrays.

    Every channel file is checked first (one error listing the missing ones). ``cache=True``: a
    read-only ``np.memmap`` ``(N, size, size, 4)``, built on first use and rebuilt, with a warning,
    when the existing one is bad or a source file changed since (size or modification time); stale
    temporaries of a killed build are removed first. ``cache=False``: a :class:`LazyImages` reader.
    """
    IMAGE_READERS.get(kind)
    if size <= 0:
        raise HPAError(f"image size must be positive, got {size}")
    ids = [str(i) for i in ids]
    check_images(image_dir, ids, kind)       # fail fast, before decoding thousands of images
    if not cache:
        return LazyImages(image_dir, ids, size, kind)
    remove_stale_temporaries(cache_dir, recursive=False)
    path = cache_path(image_dir, ids, size, kind, cache_dir)
    problem = _cache_problem(path, Path(image_dir), ids, size, kind)
    if problem is not None:
        if problem != "missing":
            warnings.warn(f"{path}: stale or bad image cache ({problem}); rebuilding", stacklevel=2)
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
    cfg = load_config(args.config, args.set)
    d, root = cfg.data, Path(cfg.data.root)
    jobs = [(root / d.train_dir, read_labels(root / d.train_csv)["Id"], "kaggle"),
            (root / d.test_dir, read_sample_ids(root / d.sample_submission), "kaggle")]
    if d.external_csv:                  # the Ids and reader training uses
        ext, kind, _ = external_labels(cfg)
        jobs.append((Path(d.external_dir), ext["Id"], kind))
    for image_dir, ids, kind in jobs:
        t0 = time.perf_counter()
        arr = open_images(image_dir, list(ids), d.image_size, kind, True, d.cache_dir, args.workers)
        print(f"{image_dir}: {arr.shape[0]} images at {d.image_size}px -> {arr.filename} "
              f"({arr.nbytes / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f}s)")
    return 0
