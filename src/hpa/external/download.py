"""``hpa download --hpav18``: fetch the four stains of every HPAv18 Id from the v18 image server.

Parallel (one thread per worker, each with its own keep-alive ``requests.Session``), with retries and
exponential back-off, resumable (an Id whose four files exist is skipped; a partly fetched Id only
fetches its missing stains), and safe to interrupt: every file is checked to decode, written to a
hidden temporary name and renamed, so the folder only ever holds whole images. ``--format png``
converts each stain to an 8-bit single-channel PNG of ``--size`` px in the Kaggle layout (the form
the top teams trained on), through the same plane extraction and resize as the JPEG reader.

Failures never stop the run: each is listed in ``<out>/failed.csv`` (``Id,stain,url,reason``) and a
rerun retries exactly those. The forum scripts this replaces (pudae's ``tools/download.py``) retried
whole Ids forever, had no time-outs and converted colour JPEGs with ``convert('L')``, which mixes
the planes; here the stain's own colour plane is kept.
"""
from __future__ import annotations

import argparse
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import requests
from tqdm import tqdm

from hpa.data.images import hpav18_plane, resize, whole_image_file
from hpa.errors import HPAError
from hpa.external.hpav18 import (DEFAULT_BASE_URL, folder_format, image_url, missing_stains,
                                 read_hpav18_labels)
from hpa.io import atomic_path, check_output_dir, make_output_dir, write_csv

#: HTTP statuses worth retrying (server busy or failing); anything else (404, 403...) is final
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
FAILED_COLUMNS = ["Id", "stain", "url", "reason"]


class FetchError(Exception):
    """One file could not be fetched; ``retry`` says whether another attempt may succeed."""

    def __init__(self, reason: str, retry: bool = True):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class _Stopped(Exception):
    """The run was interrupted (Ctrl-C): abandon the file being fetched."""


@dataclass
class DownloadSettings:
    """How ``download_hpav18`` fetches and stores images (the CLI flags of ``hpa download --hpav18``)."""
    base_url: str = DEFAULT_BASE_URL
    workers: int = 16
    fmt: str = "jpg"                  # jpg: keep the colour JPEGs; png: 8-bit single-channel Kaggle PNGs
    size: int = 512                   # PNG side (fmt png)
    retries: int = 3                  # further attempts after a failed one (not after a 404)
    timeout: float = 30.0             # seconds to connect and between bytes; a file gets 4x this in all
    backoff: float = 1.0              # first retry waits backoff s (x2 each time, +-25% jitter)
    progress: bool = True


@dataclass
class DownloadResult:
    """What a download did: Ids ``done`` now, ``skipped`` (already complete), ``failed``."""
    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    failed_csv: Path | None = None

    def summary(self, out: Path, fmt: str) -> str:
        """One line: counts, rates and where the failures are listed."""
        rate = self.done / self.seconds if self.seconds else 0.0
        line = (f"hpav18 download -> {out} ({fmt}): {self.total} Ids: {self.done} done, {self.skipped} "
                f"skipped (already there), {self.failed} failed in {self.seconds:.1f}s "
                f"({rate:.1f} Ids/s, {self.bytes / 2**20 / max(self.seconds, 1e-9):.1f} MB/s)")
        return line + (f"; reasons in {self.failed_csv}, rerun to retry them" if self.failed else "")


# ----------------------------------------------------------------------------- one file
_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per worker thread (a Session is not safe to share between threads)."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def fetch_bytes(url: str, timeout: float, stop: threading.Event | None = None) -> bytes:
    """GET ``url`` and return the whole body; FetchError on an HTTP error, time-out or short body.

    ``timeout`` bounds the connection and every wait for bytes; the whole file gets ``4 * timeout``,
    so a server that trickles bytes cannot hold a worker forever.
    """
    deadline = time.monotonic() + 4 * timeout
    try:
        with _session().get(url, timeout=(timeout, timeout), stream=True) as r:
            if r.status_code != 200:
                raise FetchError(f"HTTP {r.status_code}", retry=r.status_code in RETRY_STATUS)
            chunks = []
            for chunk in r.iter_content(1 << 16):
                if stop is not None and stop.is_set():
                    raise _Stopped()
                if time.monotonic() > deadline:
                    raise FetchError(f"timed out (slower than {4 * timeout:g}s for the file)")
                chunks.append(chunk)
            data = b"".join(chunks)
            # Content-Length counts encoded bytes: compare only when the body was sent as is
            plain = r.headers.get("Content-Encoding", "identity") == "identity"
            expected = r.headers.get("Content-Length") if plain else None
    except requests.Timeout:
        raise FetchError(f"timed out (no answer within {timeout:g}s)") from None
    except requests.RequestException as e:
        text = str(e)
        if "timed out" in text.lower():
            raise FetchError(f"timed out (no bytes within {timeout:g}s)") from None
        if "IncompleteRead" in text or "Connection broken" in text:
            raise FetchError("truncated body (connection closed early)") from None
        raise FetchError(f"connection error: {text.splitlines()[0][:160]}") from None
    if expected is not None and expected.isdigit() and len(data) != int(expected):
        raise FetchError(f"truncated body ({len(data)} of {expected} bytes)")
    return data


def decode_jpeg(data: bytes, full: bool) -> np.ndarray:
    """Decode a downloaded JPEG (BGR); FetchError if it is not a whole, decodable JPEG.

    The end-of-image marker is checked as well as the decode: some OpenCV builds only warn on a
    truncated JPEG and return a grey-filled image. ``full=False`` decodes at 1/4 scale (a check only).
    """
    if data[:2] != b"\xff\xd8" or not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise FetchError("not a whole JPEG (start or end marker missing)")
    flag = cv2.IMREAD_COLOR if full else cv2.IMREAD_REDUCED_COLOR_4
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise FetchError("not a decodable JPEG")
    return img


def save_stain(data: bytes, path: Path, stain: str, fmt: str, size: int) -> None:
    """Check ``data`` decodes, then write it to ``path`` (temporary name + rename) as the colour JPEG
    itself (``jpg``) or as the stain's plane resized to ``size`` in an 8-bit single-channel PNG."""
    img = decode_jpeg(data, full=fmt == "png")
    if fmt == "png":
        ok, buf = cv2.imencode(".png", resize(hpav18_plane(img, stain), size))
        if not ok:
            raise FetchError("PNG encoding failed", retry=False)
        data = buf.tobytes()
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:               # disk full, permissions: stop the whole run, one line
        raise HPAError(f"{path}: could not write ({e.strerror or e})") from None


# ----------------------------------------------------------------------------- one Id
def _fetch_id(image_id: str, stains: list[str], out: Path, s: DownloadSettings,
              stop: threading.Event) -> tuple[int, dict | None]:
    """Fetch the missing ``stains`` of one Id; return (bytes downloaded, failure row or None)."""
    got = 0
    for stain in stains:
        url = image_url(s.base_url, image_id, stain)
        for attempt in range(s.retries + 1):
            if stop.is_set():
                raise _Stopped()
            try:
                data = fetch_bytes(url, s.timeout, stop)
                save_stain(data, out / f"{image_id}_{stain}.{s.fmt}", stain, s.fmt, s.size)
                got += len(data)
                break
            except FetchError as e:
                if not e.retry or attempt == s.retries:
                    return got, {"Id": image_id, "stain": stain, "url": url,
                                 "reason": f"{e.reason} (after {attempt + 1} attempt(s))"}
                # exponential back-off with jitter, so 16 workers do not hammer a struggling server
                if stop.wait(s.backoff * 2 ** attempt * random.uniform(0.75, 1.25)):
                    raise _Stopped() from None
    return got, None


# ----------------------------------------------------------------------------- a label file
def check_folder(out: Path, fmt: str, size: int) -> None:
    """Refuse a download folder that already holds the other format, or PNGs of another size."""
    existing = folder_format(out)
    if existing is not None and existing != fmt:
        raise HPAError(f"{out}: already holds HPAv18 .{existing} files; --format {fmt} would mix two "
                       "formats in one folder (use another --out)")
    if fmt == "png" and existing == "png":
        first = next(p for p in sorted(out.glob("*_red.png")) + sorted(out.glob("*.png")))
        img = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
        if img is not None and img.shape[:2] != (size, size):
            raise HPAError(f"{out}: already holds {img.shape[1]}x{img.shape[0]} PNGs (e.g. {first.name}); "
                           f"--size {size} would mix sizes (use another --out)")


def _plan(out: Path, ids: list[str], fmt: str) -> dict[str, list[str]]:
    """Id -> stains still to fetch (only Ids with at least one missing stain). A file already there
    counts only when it is whole (:func:`hpa.data.images.whole_image_file`: not empty, its format's
    start and end markers): one this downloader did not write (copied half-way, zero bytes) is
    fetched again and replaced."""
    present = {n for n in os.listdir(out) if not n.startswith(".") and whole_image_file(out / n)}
    plan = {}
    for i in ids:
        todo = missing_stains(present, i, fmt)
        if todo:
            plan[i] = todo
    return plan


def download_hpav18(label_file: str | Path, out: str | Path, settings: DownloadSettings | None = None,
                    limit: int | None = None) -> DownloadResult:
    """Download every Id of an HPAv18 label file into ``out``; return the :class:`DownloadResult`.

    Writes ``out/failed.csv`` (header only when nothing failed). Ctrl-C stops the workers, removes
    their temporary files, writes ``failed.csv`` for what was tried and re-raises KeyboardInterrupt;
    the folder then holds only whole files and a rerun continues where it stopped.
    """
    s = settings or DownloadSettings()
    if s.fmt not in ("jpg", "png"):
        raise HPAError(f"--format: must be jpg or png, got '{s.fmt}'")
    if s.workers < 1 or s.retries < 0 or s.timeout <= 0 or (s.fmt == "png" and s.size < 1):
        raise HPAError("--workers, --timeout and --size must be positive and --retries >= 0")
    if limit is not None and limit < 1:
        raise HPAError(f"--limit: must be at least 1, got {limit}")
    out = check_output_dir(out, "--out")
    ids = read_hpav18_labels(label_file)["Id"].tolist()[:limit]
    make_output_dir(out, "--out")
    check_folder(out, s.fmt, s.size)
    for n in os.listdir(out):          # temporary files of a run that was killed hard (kill -9)
        if n.startswith(".") and n.endswith(".tmp") and f".{s.fmt}." in n:
            (out / n).unlink()
    plan = _plan(out, ids, s.fmt)
    result = DownloadResult(total=len(ids), skipped=len(ids) - len(plan))
    stop = threading.Event()
    t0 = time.perf_counter()
    bar = tqdm(total=len(ids), initial=result.skipped, unit="Id", desc="hpav18", disable=not s.progress,
               smoothing=0.1)
    pool = ThreadPoolExecutor(max_workers=s.workers)
    try:
        pending: set[Future] = {pool.submit(_fetch_id, i, st, out, s, stop) for i, st in plan.items()}
        while pending:
            # poll, so Ctrl-C is seen at once even while every worker waits on the network
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for f in finished:
                _account(result, *f.result())
                bar.update(1)
            elapsed = time.perf_counter() - t0
            bar.set_postfix_str(f"{result.bytes / 2**20 / max(elapsed, 1e-9):.1f} MB/s, {result.failed} failed",
                                refresh=False)
    except BaseException as e:
        stop.set()                       # workers abandon their file; atomic_path removes its temp file
        pool.shutdown(wait=True, cancel_futures=True)
        _finish(result, out, t0, bar)
        if isinstance(e, KeyboardInterrupt):
            tqdm.write(f"interrupted: {result.summary(out, s.fmt)}")
        raise
    pool.shutdown(wait=True)
    _finish(result, out, t0, bar)
    return result


def _account(result: DownloadResult, nbytes: int, failure: dict | None) -> None:
    result.bytes += nbytes
    if failure is None:
        result.done += 1
    else:
        result.failed += 1
        result.failures.append(failure)


def _finish(result: DownloadResult, out: Path, t0: float, bar: tqdm) -> None:
    bar.close()
    result.seconds = time.perf_counter() - t0
    rows = pd.DataFrame(sorted(result.failures, key=lambda r: (r["Id"], r["stain"])), columns=FAILED_COLUMNS)
    result.failed_csv = write_csv(out / "failed.csv", rows)


# ----------------------------------------------------------------------------- CLI (via hpa download)
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--hpav18`` options of ``hpa download`` (in their own group)."""
    g = p.add_argument_group("HPAv18 external data (--hpav18)")
    g.add_argument("--hpav18", action="store_true", help="download the HPAv18 images of --csv instead")
    g.add_argument("--csv", help="HPAv18 label file (Id,Target), e.g. HPAv18RBGY_wodpl.csv")
    g.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"image server (default {DEFAULT_BASE_URL})")
    g.add_argument("--workers", type=int, default=16, help="parallel downloads (default 16)")
    g.add_argument("--format", dest="fmt", choices=("jpg", "png"), default="jpg",
                   help="jpg: the colour JPEGs as served; png: 8-bit single-channel PNGs, Kaggle layout")
    g.add_argument("--size", type=int, default=512, help="PNG side for --format png (default 512)")
    g.add_argument("--retries", type=int, default=3, help="retries per file after a failure (default 3)")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request wait (default 30)")
    g.add_argument("--limit", type=int, help="only the first N Ids of --csv (a trial run)")


def main(args: argparse.Namespace) -> int:
    """``hpa download --hpav18``: download, print the one-line summary; exit 1 if some files failed."""
    if not args.csv:
        raise HPAError("hpa download --hpav18: give the label file with --csv (e.g. HPAv18RBGY_wodpl.csv)")
    out = Path(args.out or "input/hpav18")
    s = DownloadSettings(base_url=args.base_url, workers=args.workers, fmt=args.fmt, size=args.size,
                         retries=args.retries, timeout=args.timeout)
    r = download_hpav18(args.csv, out, s, limit=args.limit)
    print(r.summary(out, args.fmt))
    return 1 if r.failed else 0
