"""Run one ``hpa`` command line in this process and record its time and memory (a scale-run stage).

    python -m hpa.bench.stage RESULT.json COMMAND [ARGS ...]

Imports torch and the command's module first (start-up is reported apart as ``import_s``), then runs
the command through ``hpa.cli.run_command`` while a thread samples ``/proc/self/status`` every 2 ms:
``VmRSS``, ``RssAnon`` (heap: what the process itself holds) and ``RssFile`` (file pages mapped in,
such as the memory-mapped image cache, which the kernel can drop and re-read). Writes ``RESULT.json``
with ``rc``, ``import_s``, ``run_s`` (wall), ``cpu_s`` (CPU time of the work, the sampler's own
apart), ``base_*_mb`` (after imports) and ``peak_*_mb``; the parent adds the peak RSS of the whole
process tree from ``wait4``. Exit status: the command's.
"""
from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}


def read_status() -> dict[str, float]:
    """Current ``rss``, ``anon`` and ``file`` resident memory of this process, MiB (Linux; {} elsewhere)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in FIELDS:
                out[FIELDS[key]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class MemorySampler(threading.Thread):
    """Samples :func:`read_status` until stopped; ``peak`` holds the maximum of each field."""

    def __init__(self, every: float = 0.002):
        super().__init__(daemon=True)
        self.every, self.peak, self._halt, self.cpu_s = every, read_status(), threading.Event(), 0.0

    def run(self) -> None:
        while not self._halt.wait(self.every):
            for k, v in read_status().items():
                self.peak[k] = max(self.peak.get(k, 0.0), v)
        self.cpu_s = time.thread_time()         # this thread's own CPU, taken off the stage's

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        for k, v in read_status().items():
            self.peak[k] = max(self.peak.get(k, 0.0), v)
        return self.peak


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (load on a shared machine
    stretches wall time, not this)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str]) -> int:
    result_path, command, args = Path(argv[0]), argv[1], argv[2:]
    t0 = time.perf_counter()
    import torch  # noqa: F401  (start-up cost measured apart from the stage's work)

    from hpa.cli import build_parser, run_command

    build_parser(command)                       # imports the command's module
    import_s = time.perf_counter() - t0
    base = read_status()
    sampler = MemorySampler()
    sampler.start()
    t1, c1 = time.perf_counter(), cpu_seconds()
    rc = run_command(command, args)
    run_s, cpu_s = time.perf_counter() - t1, cpu_seconds() - c1
    peak = sampler.stop()
    cpu_s -= sampler.cpu_s
    result = {"rc": rc, "import_s": round(import_s, 3), "run_s": round(run_s, 3), "cpu_s": round(cpu_s, 3),
              **{f"base_{k}_mb": round(v, 1) for k, v in base.items()},
              **{f"peak_{k}_mb": round(v, 1) for k, v in peak.items()}}
    result_path.write_text(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
