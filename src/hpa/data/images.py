"""Reading and writing RGBY samples as ``HxWx4`` uint8 arrays (channel order red, green, blue, yellow).

Two on-disk layouts are read:

* Kaggle: ``{dir}/{Id}_{red,green,blue,yellow}.png``, 8-bit single-channel. A 16-bit PNG is accepted
  and scaled to 8 bits (``>> 8``; one whose values are all below 256 is read as 8-bit values, with a
  warning, see :func:`sixteen_to_eight_bits`); an image of another size is resized to the working size
  (area interpolation when shrinking, bicubic when growing).
* HPAv18 external data: ``{dir}/{Id}_{stain}.jpg``, one colour JPEG per stain, the signal in the
  matching colour plane (red -> R, green -> G, blue -> B, yellow -> mean of R and G). Both file names
  found in the wild are read: with the full label-file Id (``10580_1610_C1_1_red.jpg``) and the image
  server's own name without the antibody prefix (``1610_C1_1_red.jpg``, see :func:`hpav18_path`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from hpa.errors import HPAError
from hpa.io import atomic_path

CHANNELS = ("red", "green", "blue", "yellow")
# OpenCV decodes colour images as BGR: plane index of each stain's signal in an HPAv18 JPEG.
_HPAV18_PLANES = {"red": (2,), "green": (1,), "blue": (0,), "yellow": (2, 1)}

cv2.setNumThreads(1)  # DataLoader workers parallelise; OpenCV's own threads would oversubscribe


def check_id(image_id: str, where: str = "Id") -> str:
    """Refuse an Id that could make a path escape its dataset folder (separators, '..', empty)."""
    s = str(image_id)
    if not s or "/" in s or "\\" in s or s.startswith(".") or os.sep in s or any(ord(c) < 32 for c in s):
        raise HPAError(f"{where}: Id '{s}' is not a plain file-name stem")
    return s


_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def whole_image_file(path: str | Path) -> bool:
    """Cheaply, whether an image file is whole: not empty, and a JPEG starts with its start-of-image
    marker and ends with its end-of-image one (trailing padding allowed), a PNG with its signature and
    its ``IEND`` chunk. Other files: not empty. Reads the first and last bytes only."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return False
        suffix = path.suffix.lower()
        if suffix not in (".jpg", ".jpeg", ".png"):
            return True
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError:
        return False
    if suffix == ".png":
        return head == _PNG_START and tail.endswith(_PNG_END)
    return head[:2] == b"\xff\xd8" and tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def resize(img: np.ndarray, size: int | None) -> np.ndarray:
    """Resize a ``HxW`` or ``HxWxC`` image to ``size x size`` (no-op when size is None or equal)."""
    if size is None or (img.shape[0] == size and img.shape[1] == size):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    out = cv2.resize(img, (size, size), interpolation=interp)
    return out if out.ndim == img.ndim else out[..., None]


_warned_8_in_16: list[Path] = []   # the first 16-bit PNG read as 8-bit values (warned once per process)


def sixteen_to_eight_bits(img: np.ndarray, path: str | Path) -> np.ndarray:
    """Scale a 16-bit plane to 8 bits (``>> 8``), except when every value is below 256.

    Such a file holds 8-bit values in a 16-bit container (e.g. ``astype(np.uint16)`` before saving):
    ``>> 8`` would turn it all black, so its values are kept as they are, with a warning naming the
    first such file (once per process). An all-zero plane is black either way and is not warned about.
    """
    peak = int(img.max()) if img.size else 0
    if peak >= 256:
        return (img >> 8).astype(np.uint8)
    if peak > 0 and not _warned_8_in_16:
        _warned_8_in_16.append(Path(path))
        warnings.warn(f"{path}: 16-bit PNG whose values are all below 256 (max {peak}); read as 8-bit "
                      "values, not scaled by >> 8 (which would make it black). Other such files are "
                      "read the same way without another warning", stacklevel=3)
    return img.astype(np.uint8)


def _read_gray_png(path: Path) -> np.ndarray:
    if not path.is_file():
        raise HPAError(f"{path}: missing channel file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise HPAError(f"{path}: unreadable or truncated image")
    if img.ndim == 3 and img.shape[2] != 1:
        raise HPAError(f"{path}: expected a single-channel (grayscale) PNG, found {img.shape[2]} channels")
    if img.ndim == 3:
        img = img[..., 0]
    if img.dtype == np.uint16:
        img = sixteen_to_eight_bits(img, path)
    elif img.dtype != np.uint8:
        raise HPAError(f"{path}: unsupported pixel type {img.dtype}")
    return img


def read_kaggle_rgby(image_dir: str | Path, image_id: str, size: int | None = None) -> np.ndarray:
    """Read ``{image_dir}/{image_id}_{stain}.png`` for the four stains into an ``HxWx4`` uint8 array.

    The four channels are each resized to ``size`` (or to the red channel's size when None).
    Raises HPAError naming the file for a missing, unreadable, truncated or multi-channel PNG.
    """
    image_dir = Path(image_dir)
    check_id(image_id)
    planes = [_read_gray_png(image_dir / f"{image_id}_{c}.png") for c in CHANNELS]
    target = size or planes[0].shape[0]
    return np.stack([resize(p, target) for p in planes], axis=-1)


def hpav18_short_id(image_id: str) -> str | None:
    """The image server's name of an HPAv18 Id: ``10580_1610_C1_1`` -> ``1610_C1_1`` (None if no prefix).

    The label file's Id is ``<antibody>_<plate>_<well>_<field>``; the server keeps each antibody's
    images in its own folder and names them without the antibody (``<base>/10580/1610_C1_1_red.jpg``).
    The 74,606 image names of HPAv18RBGY_wodpl.csv are unique without the prefix, so both name one image.
    """
    antibody, sep, rest = str(image_id).partition("_")
    return rest if sep and rest and antibody.isdigit() else None


def hpav18_path(image_dir: str | Path, image_id: str, stain: str, ext: str = "jpg") -> Path:
    """Return the file of one stain of an HPAv18 Id: ``{Id}_{stain}.{ext}`` or, if only that exists, the
    server's ``{short Id}_{stain}.{ext}``. When neither exists the full-Id path is returned (for errors)."""
    image_dir = Path(image_dir)
    full = image_dir / f"{image_id}_{stain}.{ext}"
    if full.is_file():
        return full
    short = hpav18_short_id(image_id)
    if short is not None and (image_dir / f"{short}_{stain}.{ext}").is_file():
        return image_dir / f"{short}_{stain}.{ext}"
    return full


def hpav18_names(image_id: str, stain: str, ext: str = "jpg") -> tuple[str, ...]:
    """The file names one stain of an HPAv18 Id may have, full-Id form first."""
    short = hpav18_short_id(image_id)
    full = f"{image_id}_{stain}.{ext}"
    return (full,) if short is None else (full, f"{short}_{stain}.{ext}")


def hpav18_plane(img: np.ndarray, stain: str, order: str = "bgr") -> np.ndarray:
    """Extract one stain's ``HxW`` uint8 signal from a decoded HPAv18 colour JPEG (``HxWx3``).

    ``order`` is the plane order of ``img``: ``"bgr"`` (OpenCV) or ``"rgb"`` (PIL). Yellow is the
    rounded mean of the red and green planes (yellow = red + green light in the HPA images).
    """
    planes = _HPAV18_PLANES[stain] if order == "bgr" else tuple(2 - k for k in _HPAV18_PLANES[stain])
    if len(planes) == 1:
        return np.ascontiguousarray(img[..., planes[0]])
    sig = img[..., list(planes)].astype(np.float32).mean(axis=-1)
    return np.clip(sig + 0.5, 0, 255).astype(np.uint8)


def read_hpav18_rgby(image_dir: str | Path, image_id: str, size: int | None = None,
                     ext: str = "jpg") -> np.ndarray:
    """Read an HPAv18 sample (one colour JPEG per stain) into an ``HxWx4`` uint8 RGBY array.

    Each stain is read from ``{Id}_{stain}.{ext}`` or the server's name without the antibody prefix
    (:func:`hpav18_path`) and resized to ``size`` (or to the red stain's size when None).
    Raises HPAError naming the file for a missing, unreadable or truncated JPEG.
    """
    image_dir = Path(image_dir)
    check_id(image_id)
    planes = []
    for c in CHANNELS:
        path = hpav18_path(image_dir, image_id, c, ext)
        if not path.is_file():
            raise HPAError(f"{path}: missing channel file")
        # OpenCV decodes a truncated JPEG with a warning only: check the end marker first
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if whole_image_file(path) else None
        if img is None:
            raise HPAError(f"{path}: unreadable or truncated image")
        planes.append(hpav18_plane(img, c))
    target = size or planes[0].shape[0]
    return np.stack([resize(p, target) for p in planes], axis=-1)


def write_kaggle_rgby(image_dir: str | Path, image_id: str, img: np.ndarray) -> None:
    """Write an ``HxWx4`` uint8 array as the four Kaggle single-channel PNGs (each file atomically)."""
    image_dir = Path(image_dir)
    check_id(image_id)
    if img.ndim != 3 or img.shape[2] != 4 or img.dtype != np.uint8:
        raise HPAError(f"{image_id}: expected an HxWx4 uint8 image, got {img.shape} {img.dtype}")
    for k, c in enumerate(CHANNELS):
        path = image_dir / f"{image_id}_{c}.png"
        ok, png = cv2.imencode(".png", np.ascontiguousarray(img[..., k]))
        if not ok:
            raise HPAError(f"{path}: could not encode image")
        # not fsynced: thousands of images at ~8 ms each would dominate generation, and a PNG cut by a
        # power cut is reported as truncated when read, never silently used
        with atomic_path(path, durable=False) as tmp:
            tmp.write_bytes(png.tobytes())


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Composite an RGBY image for display: yellow adds to red and green, as the HPA viewer does."""
    x = img.astype(np.float32)
    r = x[..., 0] + 0.5 * x[..., 3]
    g = x[..., 1] + 0.5 * x[..., 3]
    b = x[..., 2]
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)
