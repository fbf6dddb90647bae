"""Near-duplicate images across Kaggle train, Kaggle test and HPAv18, grouped for leak-proof folds.

What counts as a duplicate: the same field of view with the same protein, i.e. the same sample
photographed once and published twice (the Kaggle images were cut from the HPA, so thousands of
HPAv18 images are Kaggle images at another resolution and JPEG quality). Two images are linked
when the perceptual hashes (``imagehash.phash``) of their green stain (the protein) AND of a
reference stain (default blue, the nuclei: it fixes the field of view) each differ in at most
``threshold`` bits. Green alone is not enough: the phash of a dim, nearly empty green stain is
dominated by the illumination and matches other dim images of unrelated cells (pudae's scripts
skipped the all-zero hash for that reason); the reference alone would match two proteins imaged
on the same cells. Groups are the connected components of the links (``scipy.sparse.csgraph``).

Every stain is shrunk to at most ``HASH_SIDE`` px before hashing, so a 2048 px JPEG and its 512 px
Kaggle PNG hash alike. Hashes are cached per image folder in ``<cache_dir>/phash_<kind>_<key>.csv``
and reused while a file's size and modification time are unchanged, so the 74k + 31k + 12k images
are hashed once; hashing runs in threads (PIL and OpenCV release the GIL while decoding).
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from hpa.data.images import check_id, hpav18_path, hpav18_plane, resize, whole_image_file
from hpa.errors import HPAError
from hpa.io import read_csv, write_csv

HASH_SIDE = 256                         # stains are shrunk to this before phash (which works at 32x32)
REFERENCE_STAINS = ("blue", "red", "yellow")
KINDS = ("kaggle", "hpav18")            # PNG Kaggle layout | colour JPEGs (either HPAv18 file name)
GROUP_COLUMNS = ["source", "Id", "group", "group_size"]
_BITS = 1 << np.arange(64, dtype=np.uint64)
_SMALL_BUCKET = 48                      # candidate buckets up to this size are paired vectorised


@dataclass
class ImageSource:
    """One set of images to compare: ``name`` (``train``, ``test``, ``external``), folder, Ids, kind."""
    name: str
    image_dir: Path
    ids: list[str]
    kind: str = "kaggle"

    def __post_init__(self):
        self.image_dir, self.ids = Path(self.image_dir), [str(i) for i in self.ids]
        if self.kind not in KINDS:
            raise HPAError(f"{self.name}: unknown image kind '{self.kind}' (valid: {', '.join(sorted(KINDS))})")


# ----------------------------------------------------------------------------- hashing
def stain_path(image_dir: Path, image_id: str, stain: str, kind: str) -> Path:
    """The file of one stain: ``{Id}_{stain}.png`` (kaggle) or the HPAv18 JPEG in either name form."""
    check_id(image_id)
    if kind == "kaggle":
        return image_dir / f"{image_id}_{stain}.png"
    return hpav18_path(image_dir, image_id, stain)


def read_stain(image_dir: Path, image_id: str, stain: str, kind: str, side: int = HASH_SIDE) -> np.ndarray:
    """Read one stain as an ``HxW`` uint8 plane shrunk to at most ``side`` px; HPAError naming a bad file."""
    path = stain_path(image_dir, image_id, stain, kind)
    if not path.is_file():
        raise HPAError(f"{path}: missing channel file")
    if kind == "kaggle":
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise HPAError(f"{path}: unreadable or truncated image")
        img = img if img.ndim == 2 else img[..., 0]
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img
    else:
        if not whole_image_file(path):     # a JPEG decoded at 1/8 scale may never reach its cut-off end
            raise HPAError(f"{path}: unreadable or truncated image")
        try:
            with Image.open(path) as im:
                im.draft("RGB", (side, side))   # JPEG decoded at 1/2, 1/4 or 1/8 scale: much faster
                img = hpav18_plane(np.asarray(im.convert("RGB")), stain, order="rgb")
        except OSError:
            raise HPAError(f"{path}: unreadable or truncated image") from None
    return resize(img, side) if max(img.shape) > side else img


def phash64(plane: np.ndarray) -> np.uint64:
    """``imagehash.phash`` of a uint8 plane as one uint64 (bit k = k-th hash bit, row-major)."""
    bits = imagehash.phash(Image.fromarray(plane)).hash.ravel()
    return np.uint64(np.bitwise_or.reduce(_BITS[bits]))


def _stamp(image_dir: Path, image_id: str, stains: Sequence[str], kind: str) -> str:
    """``size-mtime_ns`` of each hashed file: a changed file gets hashed again."""
    out = []
    for s in stains:
        try:
            st = os.stat(stain_path(image_dir, image_id, s, kind))
            out.append(f"{st.st_size}-{st.st_mtime_ns}")
        except OSError:
            out.append("missing")
    return "/".join(out)


def hash_cache_path(cache_dir: str | Path, image_dir: str | Path, kind: str, stains: Sequence[str]) -> Path:
    """Where the hashes of one folder live: ``<cache_dir>/phash_<kind>_<16 hex of the folder and stains>.csv``."""
    blob = json.dumps([str(Path(image_dir).resolve()), kind, list(stains), HASH_SIDE, "phash8"])
    return Path(cache_dir) / f"phash_{kind}_{hashlib.sha1(blob.encode()).hexdigest()[:16]}.csv"


def _load_cache(path: Path | None, stains: Sequence[str]) -> dict[str, tuple[str, list[int]]]:
    if path is None or not path.is_file():
        return {}
    try:
        df = read_csv(path, ["Id", "stamp", *stains])
        return {i: (st, [int(h, 16) for h in hs]) for i, st, *hs in
                zip(df["Id"], df["stamp"], *(df[s] for s in stains))}
    except (HPAError, ValueError):
        return {}                        # a damaged cache is only a cache: hash again


def _save_cache(path: Path | None, cache: dict, stains: Sequence[str]) -> None:
    if path is None:
        return
    rows = {"Id": list(cache), "stamp": [v[0] for v in cache.values()]}
    for k, s in enumerate(stains):
        rows[s] = [f"{v[1][k]:016x}" for v in cache.values()]
    write_csv(path, pd.DataFrame(rows))


def hash_images(source: ImageSource, stains: Sequence[str] = ("green", "blue"),
                cache_dir: str | Path | None = None, workers: int = 2, progress: bool = True,
                checkpoint: int = 8192) -> np.ndarray:
    """Return the ``(N, len(stains))`` uint64 phashes of a source's images, in Id order.

    With ``cache_dir`` the hashes are read from / added to the folder's hash cache (saved every
    ``checkpoint`` new images, so an interrupted run keeps most of its work).
    """
    stains = list(stains)
    path = hash_cache_path(cache_dir, source.image_dir, source.kind, stains) if cache_dir else None
    cache = _load_cache(path, stains)
    stamps = [_stamp(source.image_dir, i, stains, source.kind) for i in source.ids]
    todo = [k for k, (i, st) in enumerate(zip(source.ids, stamps)) if cache.get(i, ("",))[0] != st]

    def one(k: int) -> list[int]:
        return [int(phash64(read_stain(source.image_dir, source.ids[k], s, source.kind))) for s in stains]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(todo), desc=f"phash {source.name}", unit="img", disable=not progress or not todo) as bar:
        try:
            for start in range(0, len(todo), checkpoint):
                part = todo[start:start + checkpoint]
                for k, h in zip(part, pool.map(one, part)):
                    cache[source.ids[k]] = (stamps[k], h)
                    bar.update(1)
                _save_cache(path, cache, stains)
        except BaseException:            # a bad image or Ctrl-C: keep what was hashed for the rerun
            if todo:
                _save_cache(path, cache, stains)
            raise
    out = np.array([cache[i][1] for i in source.ids], dtype=np.uint64).reshape(len(source.ids), len(stains))
    return out


# ----------------------------------------------------------------------------- pairs
def near_pairs(hashes: np.ndarray, threshold: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` whose hashes differ in at most ``threshold`` bits in EVERY column.

    ``hashes`` is ``(N,)`` or ``(N, S)`` uint64. Returns ``(pairs (P, 2) int64, bits (P, S) int64)``
    sorted by ``(i, j)``. Multi-index hashing instead of all N^2 comparisons: split the last column
    into ``threshold + 1`` bit ranges; two hashes within ``threshold`` bits agree exactly on at least
    one range (pigeonhole), so only images sharing a range value are compared (about a second for
    117k images, where the blocked all-pairs scan took half a minute).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    h = h[:, None] if h.ndim == 1 else h
    found = [np.zeros((0, 2), np.int64)]
    edges = np.linspace(0, 64, threshold + 2).astype(int)
    for lo, hi in zip(edges[:-1], edges[1:]):
        key = (h[:, -1] >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        found += _same_key_pairs(key, h, threshold)
    pairs = np.concatenate(found).astype(np.int64)
    if len(pairs):
        pairs = np.unique(np.sort(pairs, axis=1), axis=0)
    bits = np.bitwise_count(h[pairs[:, 0]] ^ h[pairs[:, 1]]).astype(np.int64)
    keep = (bits <= threshold).all(axis=1)
    return pairs[keep].reshape(-1, 2), bits[keep].reshape(-1, h.shape[1])


def _within(h: np.ndarray, i: np.ndarray, j: np.ndarray, threshold: int) -> np.ndarray:
    """Mask of the index pairs (i, j) within ``threshold`` bits in every column."""
    return (np.bitwise_count(h[i] ^ h[j]) <= threshold).all(axis=-1)


def _same_key_pairs(key: np.ndarray, h: np.ndarray, threshold: int) -> list[np.ndarray]:
    """The near pairs among images with an equal ``key``: small buckets vectorised by offset, big ones
    (many similar hashes, e.g. blank stains) compared block by block, never all at once."""
    order = np.argsort(key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(k)])
    bucket = np.repeat(np.arange(len(starts)), sizes)
    small = np.repeat(sizes <= _SMALL_BUCKET, sizes)
    out = []
    for off in range(1, min(_SMALL_BUCKET, int(sizes.max(initial=1)))):
        m = (bucket[:-off] == bucket[off:]) & small[:-off]
        i, j = order[:-off][m], order[off:][m]
        ok = _within(h, i, j, threshold)
        out.append(np.stack([i[ok], j[ok]], axis=1))
    for b in np.flatnonzero(sizes > _SMALL_BUCKET):
        members = order[starts[b]:starts[b] + sizes[b]]
        step = max(1, (1 << 22) // (len(members) * h.shape[1]))
        for r in range(0, len(members), step):
            rows = members[r:r + step]
            ok = _within(h, rows[:, None], members[None, :], threshold)
            ok &= np.arange(r, r + len(rows))[:, None] < np.arange(len(members))[None, :]
            a, c = np.nonzero(ok)
            out.append(np.stack([rows[a], members[c]], axis=1))
    return out


def hash_pairs(hashes: np.ndarray, threshold: int = 4, block: int | None = None) -> np.ndarray:
    """The ``(P, 2)`` pairs ``i < j`` of a 1-D hash array within ``threshold`` bits (see :func:`near_pairs`).

    ``block`` is accepted for compatibility with the former all-pairs scan and ignored.
    """
    return near_pairs(np.asarray(hashes, dtype=np.uint64), threshold)[0]


# ----------------------------------------------------------------------------- groups
def find_duplicates(sources: Sequence[ImageSource], threshold: int = 4, reference: str = "blue",
                    cache_dir: str | Path | None = None, workers: int = 2,
                    progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hash every image of ``sources`` and link near-duplicates within and across them.

    Returns ``(groups, pairs)``: ``groups`` has one row per image (:data:`GROUP_COLUMNS`: source,
    Id, group (connected component over all sources), group_size), in source then Id order;
    ``pairs`` has one row per link: ``source_a, id_a, source_b, id_b, green_bits, <reference>_bits``.
    """
    if reference not in REFERENCE_STAINS:
        raise HPAError(f"reference stain '{reference}' (valid: {', '.join(REFERENCE_STAINS)})")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise HPAError(f"duplicate source names: {names}")
    stains = ("green", reference)
    hashes = [hash_images(s, stains, cache_dir, workers, progress) for s in sources]
    h = np.concatenate(hashes) if hashes else np.zeros((0, 2), np.uint64)
    src = np.concatenate([[s.name] * len(s.ids) for s in sources]) if sources else np.zeros(0, str)
    ids = np.concatenate([s.ids for s in sources]) if sources else np.zeros(0, str)
    pairs, bits = near_pairs(h, threshold)
    n = len(h)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    size = np.bincount(comp, minlength=comp.max(initial=0) + 1)[comp] if n else np.zeros(0, int)
    groups = pd.DataFrame({"source": src, "Id": ids, "group": comp.astype(np.int64), "group_size": size})
    links = pd.DataFrame({"source_a": src[pairs[:, 0]], "id_a": ids[pairs[:, 0]],
                          "source_b": src[pairs[:, 1]], "id_b": ids[pairs[:, 1]],
                          "green_bits": bits[:, 0], f"{reference}_bits": bits[:, 1]})
    return groups, links


def write_groups(path: str | Path, groups: pd.DataFrame) -> Path:
    """Write a groups table (:data:`GROUP_COLUMNS`) as CSV, atomically."""
    return write_csv(path, groups[GROUP_COLUMNS])


def read_groups(path: str | Path) -> pd.DataFrame:
    """Read a groups file written by :func:`write_groups` (int ``group``/``group_size``); HPAError if bad."""
    df = read_csv(path, GROUP_COLUMNS)
    for c in ("group", "group_size"):
        v = pd.to_numeric(df[c], errors="coerce")
        if v.isna().any():
            i = int(np.flatnonzero(v.isna().to_numpy())[0])
            raise HPAError(f"{path}: row {i + 2}: {c} '{df[c].iat[i]}' is not an integer")
        df[c] = v.astype(np.int64)
    if df.duplicated(["source", "Id"]).any():
        i = int(np.flatnonzero(df.duplicated(["source", "Id"]).to_numpy())[0])
        raise HPAError(f"{path}: row {i + 2}: {df['source'].iat[i]} Id '{df['Id'].iat[i]}' listed twice")
    return df


def group_ids(groups: pd.DataFrame, source: str, ids: Sequence[str]) -> np.ndarray:
    """The group of each of ``ids`` of ``source`` (HPAError naming the first Id the table lacks)."""
    table = groups[groups["source"] == source].set_index("Id")["group"]
    missing = pd.Index(ids).difference(table.index)
    if len(missing):
        raise HPAError(f"duplicate groups: no {source} Id '{missing[0]}' ({len(missing)} missing); "
                       "rebuild the groups file")
    return table.reindex(list(ids)).to_numpy(np.int64)


# ----------------------------------------------------------------------------- folds over the union
def leaking_external(groups: pd.DataFrame, folds: pd.Series, fold: int) -> set[str]:
    """External Ids that must not train fold ``fold`` (``data.external_in: train``): those in a
    duplicate group with a Kaggle image validated in that fold."""
    train = groups[groups["source"] == "train"]
    val_groups = set(train["group"][folds.reindex(train["Id"]).to_numpy() == fold])
    ext = groups[groups["source"] == "external"]
    return set(ext["Id"][ext["group"].isin(val_groups)])
