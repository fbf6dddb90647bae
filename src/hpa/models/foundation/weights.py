"""Weight files of the foundation backbones: a cache folder, resumable downloads, sha256 checks, licences.

``resolve_weights(spec, weights, sha256, cache_dir)`` returns a local file: ``weights`` itself when it
is a path, else the download of ``weights`` (a URL) or of the entry's published URL into
``<cache_dir>/<name>/``. A download goes to ``<file>.part`` with HTTP ``Range`` requests, so an
interrupted one continues where it stopped; the finished file is checked against the expected sha256
(the ``sha256`` argument, else the one recorded in the registry) before it is renamed into place. No
published model records a sha256 (see docs/foundation.md), so the first download records the digest
it computed in ``<file>.sha256`` and every later use checks the file against it.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import requests
from tqdm.auto import tqdm

from hpa.errors import HPAError

DEFAULT_CACHE = os.environ.get("HPA_FOUNDATION_CACHE", "models/foundation")
CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, path: Path, timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``url`` into ``path`` through ``path.part``, resuming a partial ``.part`` with a ``Range``
    request (a server that ignores it sends the whole file, which then replaces the part). HPAError on
    an HTTP error, a lost connection or a short body; the part stays for the next try."""
    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
            if r.status_code == 416 and have:            # the part is already whole
                part.replace(path)
                return path
            if r.status_code not in (200, 206):
                raise HPAError(f"{url}: HTTP {r.status_code} downloading weights")
            if r.status_code == 200:
                have = 0                                 # no resume: start again
            total = int(r.headers.get("Content-Length", 0)) + have if r.headers.get("Content-Length") else None
            with open(part, "ab" if have else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=path.name,
                    disable=not progress, leave=False) as bar:
                for block in r.iter_content(1 << 16):     # small blocks: a cut keeps most of what came
                    f.write(block)
                    bar.update(len(block))
    except requests.RequestException as e:
        raise HPAError(f"{url}: download interrupted ({str(e).splitlines()[0][:120]}); "
                       f"{part} keeps what came, rerun to resume") from None
    got = part.stat().st_size
    if total is not None and got != total:
        raise HPAError(f"{url}: download ended at {got} of {total} bytes; {part} keeps them, rerun to resume")
    part.replace(path)
    return path


def check_sha256(path: Path, expected: str | None, pin: bool = True) -> str:
    """Return the file's sha256; HPAError naming the file when it differs from ``expected`` or from the
    digest recorded beside it on first use (``<file>.sha256``); record it there when neither exists and
    ``pin`` (cached downloads; a user's own weights folder is left alone)."""
    digest = sha256_of(path)
    pinned = path.with_name(path.name + ".sha256")
    recorded = pinned.read_text().strip() if pinned.exists() else None
    want = (expected or recorded or "").lower()
    if want and digest != want:
        where = "expected" if expected else f"recorded in {pinned.name} at first use"
        raise HPAError(f"{path}: sha256 {digest[:16]}... differs from the {where} {want[:16]}... "
                       "(corrupt or a different file; delete it to download again)")
    if pin and not recorded and path.parent.exists():
        try:
            pinned.write_text(digest + "\n")
        except OSError:                                  # a read-only weights folder: nothing to pin
            pass
    return digest


def resolve_weights(spec, weights: str = "", sha256: str = "", cache_dir: str | Path = DEFAULT_CACHE,
                    progress: bool = True) -> Path:
    """The local weights file of ``spec`` (see the module docstring); checked against ``sha256``."""
    expected = sha256 or None
    if weights and not weights.startswith(("http://", "https://")):
        path = Path(weights)
        if not path.is_file():
            raise HPAError(f"model.weights: file not found: {path}")
        if expected:
            check_sha256(path, expected, pin=False)
        return path
    url = weights or spec.url
    if not url:
        raise HPAError(f"foundation/{spec.name}: no published download URL is confirmed ({spec.notes.split('.')[0]}); "
                       "give model.weights: a local file or a URL")
    if url == spec.url and not expected:
        expected = spec.sha256
    path = Path(cache_dir) / spec.name / (Path(urlparse(url).path).name or "weights.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        download(url, path, progress=progress)
        try:
            digest = check_sha256(path, expected)
        except HPAError:
            path.unlink()                                # never leave a wrong file where a right one goes
            raise
        if not expected:
            print(f"foundation/{spec.name}: no published sha256; recorded {digest} in {path.name}.sha256 "
                  "(pin it with model.kwargs.sha256)", file=sys.stderr)
    else:
        check_sha256(path, expected)
    return path


def show_licence_once(spec, cache_dir: str | Path = DEFAULT_CACHE) -> bool:
    """Print the entry's licence the first time it is used with this cache folder; True if printed."""
    marker = Path(cache_dir) / spec.name / ".licence-shown"
    if marker.exists():
        return False
    nc = " (NON-COMMERCIAL: research use only)" if spec.non_commercial else ""
    print(f"licence: {spec.title}: {spec.licence}{nc}", file=sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
    return True
