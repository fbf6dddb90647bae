"""Progress bars in a log file: lines, not carriage-return frames.

Every long stage shows a tqdm bar on stderr. At a terminal tqdm redraws one line with ``\\r``; written
to a file (``nohup ... > log 2>&1``, a CI log, a pipe) those redraws pile up as thousands of frames on
one "line". :func:`line_progress` is the one policy for all of them, applied by ``hpa.cli`` around
every command when stderr is not a terminal: each bar's state becomes a plain line at most every
``HPA_PROGRESS_SECONDS`` seconds (default 30; 0: every redraw), plus its final state when a bar that
stays on screen finishes (one line per epoch, fold, ...). Other text (warnings, errors) passes as is.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from typing import Iterator, TextIO

#: cursor movements tqdm uses to place nested bars (meaningless in a file)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineProgress:
    """A text stream over ``out`` that turns tqdm's ``\\r`` frames into throttled, whole lines."""

    def __init__(self, out: TextIO, seconds: float):
        self.out, self.seconds = out, seconds
        self.pending: str | None = None     # the latest frame not yet written as a line
        self.last_line: str | None = None   # the last frame written as a line
        self.last_time = float("-inf")
        self.framed = False                 # the last text written was a frame
        self.at_line_start = True

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.last_line, self.last_time, self.at_line_start = text, time.monotonic(), True

    def write(self, s: str) -> int:
        in_frame = False                            # text after a \r in this write: a bar's redraw
        for token in re.split(r"(\r|\n)", _ANSI.sub("", s)):
            if token == "\r":
                in_frame = True
            elif token == "\n":
                in_frame = False
                if self.framed and self.pending is not None and self.pending != self.last_line:
                    self._line(self.pending)            # a bar that stays on screen: its final state
                elif not self.at_line_start:            # (the blank lines of nested bars are dropped)
                    self.out.write("\n")
                    self.at_line_start = True
                self.pending, self.framed = None, False
            elif token and in_frame:
                self.pending, self.framed = token.rstrip() or None, True
                if self.pending and time.monotonic() - self.last_time >= self.seconds:
                    self._line(self.pending)
            elif token:
                self.out.write(token)
                self.framed, self.at_line_start = False, False
        return len(s)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):          # fileno, encoding, errors...: the real stream's
        return getattr(self.out, name)


@contextlib.contextmanager
def line_progress() -> Iterator[None]:
    """While the block runs, progress written to a stderr that is not a terminal becomes lines
    (:class:`LineProgress`); at a terminal nothing changes."""
    stream = sys.stderr
    if stream is None or isinstance(stream, LineProgress) or _isatty(stream):
        yield
        return
    sys.stderr = LineProgress(stream, float(os.environ.get("HPA_PROGRESS_SECONDS", "30")))
    try:
        yield
    finally:
        sys.stderr = stream


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
