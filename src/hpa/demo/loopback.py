"""A local stand-in for the HPAv18 image server, on 127.0.0.1, for tests and throughput measurements.

``HPAv18Server(files, latency, faults)`` serves ``{url path: bytes}`` (as built by :func:`serve_map`
from a folder of HPAv18 JPEGs in either file-name form) over HTTP/1.1 with keep-alive, in a thread.
``latency`` seconds pass before each answer, to mimic a remote server. ``faults`` maps a URL path to
what goes wrong there: ``404``, ``500-once`` (a 500, then the file), ``truncate`` (half the body,
then the connection closes), ``stall`` (headers, then silence), ``garbage`` (200 with bytes that are
not a JPEG). ``requests_to[path]`` counts the requests each path received.

``python -m hpa.demo.loopback --samples DIR --ids 200 --latency 0.05`` measures
``hpa download --hpav18`` throughput with 1 and 16 workers against it (the figure in the README).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from hpa.data.images import CHANNELS, hpav18_path
from hpa.external.download import DownloadSettings, download_hpav18
from hpa.external.hpav18 import image_url


def serve_map(folder: str | Path, ids: Sequence[str], source_ids: Sequence[str] | None = None) -> dict[str, bytes]:
    """``{url path: JPEG bytes}`` serving Id ``ids[k]`` with the files of ``source_ids[k]`` in ``folder``
    (read in either file-name form); ``source_ids`` defaults to ``ids`` and is cycled when shorter."""
    src = list(source_ids or ids)
    files = {}
    for k, image_id in enumerate(ids):
        for c in CHANNELS:
            data = hpav18_path(folder, src[k % len(src)], c).read_bytes()
            files[image_url("", image_id, c)] = data
    return files


class HPAv18Server:
    """Context manager running the loopback server; ``.url`` is its base URL (``http://127.0.0.1:P/``)."""

    def __init__(self, files: dict[str, bytes], latency: float = 0.0, faults: dict[str, str] | None = None,
                 on_request: Callable[[int], None] | None = None):
        self.files, self.latency, self.faults = files, latency, dict(faults or {})
        self.on_request = on_request             # called with the running request count (tests: Ctrl-C)
        self.requests_to: Counter[str] = Counter()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"           # keep-alive, as a real server

            def log_message(self, *args):          # quiet
                pass

            def setup(self):
                super().setup()
                # headers and body go out in two writes: without TCP_NODELAY, Nagle + delayed ACK
                # add ~40 ms per response on loopback, which would swamp the latency being modelled
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):
                path = self.path
                with server._lock:
                    server.requests_to[path] += 1
                    n = server.requests_to[path]
                    total = sum(server.requests_to.values())
                if server.on_request is not None:
                    server.on_request(total)
                if server.latency:
                    time.sleep(server.latency)
                fault = server.faults.get(path)
                data = server.files.get(path)
                if data is None or fault == "404":
                    return self._send(404, b"not found")
                if fault == "500-once" and n == 1:
                    return self._send(500, b"server error")
                if fault == "garbage":
                    return self._send(200, b"<html>maintenance</html>" * 10)
                if fault == "stall":
                    self._headers(200, len(data))
                    server.closing.wait(60)        # never sends the body (until the server closes)
                    self.close_connection = True
                    return
                if fault == "truncate":
                    self._headers(200, len(data))
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self._send(200, data)

            def _headers(self, status: int, length: int):
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def _send(self, status: int, body: bytes):
                self._headers(status, len(body))
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> "HPAv18Server":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _serve(files: dict[str, bytes], latency: float, port, stop) -> None:
    """Child process body: serve until ``stop`` is set, after putting the port in ``port``."""
    with HPAv18Server(files, latency) as srv:
        port.put(srv.url)
        stop.wait()


def measure_throughput(samples: str | Path, n_ids: int = 200, latency: float = 0.05,
                       workers: Sequence[int] = (1, 16)) -> list[dict]:
    """Download ``n_ids`` Ids (the real sample JPEGs of ``samples``, cycled) from a loopback server with
    ``latency`` s per request, once per worker count; return ``[{workers, seconds, ids_per_s, mb_per_s}]``.

    The server runs in its own process, as a remote server would: in the same process its threads
    would compete with the downloader for the GIL and understate the parallel speed-up.
    """
    import multiprocessing as mp

    samples = Path(samples)
    sources = sorted({p.name.rsplit("_", 1)[0] for p in samples.glob("*_red.jpg")})
    ids = [f"{90000 + k}_{k}_A1_1" for k in range(n_ids)]
    rows = []
    work = Path(tempfile.mkdtemp(prefix="hpav18-bench-"))
    ctx = mp.get_context("fork")
    port, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(serve_map(samples, ids, sources), latency, port, stop), daemon=True)
    server.start()
    try:
        url = port.get(timeout=30)
        pd.DataFrame({"Id": ids, "Target": "0"}).to_csv(work / "labels.csv", index=False)
        for w in workers:
            out = work / f"w{w}"
            r = download_hpav18(work / "labels.csv", out, DownloadSettings(
                base_url=url, workers=w, progress=False, timeout=10))
            rows.append({"workers": w, "seconds": r.seconds, "ids_per_s": r.done / r.seconds,
                         "mb_per_s": r.bytes / 2**20 / r.seconds, "failed": r.failed})
            shutil.rmtree(out)
    finally:
        stop.set()
        server.join(10)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Print the throughput of ``--workers`` counts against the loopback server."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", default="../shared/hpa/real-samples/hpav18", help="folder of HPAv18 JPEGs")
    p.add_argument("--ids", type=int, default=200, help="Ids to download (sample files cycled)")
    p.add_argument("--latency", type=float, default=0.05, help="seconds the server waits per request")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 16])
    a = p.parse_args(argv)
    rows = measure_throughput(a.samples, a.ids, a.latency, a.workers)
    for r in rows:
        print(f"{r['workers']:>3} workers: {a.ids} Ids in {r['seconds']:.1f}s = {r['ids_per_s']:.1f} Ids/s, "
              f"{r['mb_per_s']:.1f} MB/s ({r['failed']} failed; {a.latency * 1000:g} ms per request)")
    if len(rows) > 1:
        print(f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} workers: "
              f"{rows[-1]['ids_per_s'] / rows[0]['ids_per_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
