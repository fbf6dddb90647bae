"""``python -m hpa <command>`` / ``hpa <command>``: a thin dispatcher over importable functions.

Each command lives in a module exposing ``add_arguments(parser)`` and ``main(args) -> int | None``.
Modules are imported only when their command runs, so ``hpa --help`` answers at once.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from typing import Iterator

from hpa.cli_args import finish
from hpa.errors import ENVIRONMENT_ERRNOS, HPAError
from hpa.progress import line_progress

#: command name -> (module, one-line help). The one explicit table of commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("hpa.demo.cli", "write the synthetic demo dataset in the Kaggle layout"),
    "folds": ("hpa.data.folds", "split train.csv into multilabel-stratified k folds (Id,fold CSV)"),
    "cache": ("hpa.data.cache", "build the pre-resized uint8 image cache for a dataset"),
    "train": ("hpa.training.cli", "train k folds of an experiment (same as train.py)"),
    "swa": ("hpa.training.swa", "average a run's kept epoch weights per fold (SWA): swa.pt + its own OOF"),
    "pseudo-label": ("hpa.pseudo", "pseudo-label a run's confident test predictions (the CSV pseudo.from_run trains on)"),
    "lr-find": ("hpa.training.lr_find", "learning-rate range test: loss against lr, a plot and a suggested lr"),
    "infer": ("hpa.inference.cli", "predict the test set and write a submission (same as infer.py)"),
    "thresholds": ("hpa.thresholds.cli", "tune per-class thresholds on a run's OOF predictions"),
    "score": ("hpa.metrics", "score a submission against a labels CSV (macro F1)"),
    "validate": ("hpa.submission", "check a submission file against the sample submission"),
    "synth": ("hpa.synthetic.cli", "train diffusion generators, generate, filter and report synthetic images"),
    "download": ("hpa.kaggle.download", "download the competition data (kaggle package) or, with --hpav18, HPAv18"),
    "leak-report": ("hpa.external.leak", "HPAv18 images that duplicate Kaggle train/test images (CSV + PNG)"),
    "submit": ("hpa.kaggle.submit", "validate a submission, then submit it to Kaggle"),
    "bench": ("hpa.bench", "benchmark the hot paths against their baselines"),
    "report": ("hpa.reports.run_report", "write runs/<exp>/report.md with the run's plots"),
    "ablate": ("hpa.ablation.grid", "run the synthetic-data ablation grid and write its report"),
    "list": ("hpa.catalog", "every kind of pluggable part: its registered names and their params (hpa list loss)"),
    "baseline": ("hpa.baseline", "logistic regression on pooled stain features: OOF + test probabilities like a run"),
    "embed": ("hpa.probe.embed", "embeddings of train/test images by a frozen backbone (foundation model or run), cached"),
    "probe": ("hpa.probe.stage", "linear / MLP heads per fold on cached embeddings: OOF + test probabilities like a run"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="hpa", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Human Protein Atlas image classification toolkit.",
        epilog=f"commands:\n{lines}\n\nRun 'hpa <command> --help' for a command's options.")
    p.add_argument("command", nargs="?", help="one of the commands below")
    return p


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    """Return the argument parser of ``command`` and its module (imported now)."""
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    p = argparse.ArgumentParser(prog=f"hpa {command}", description=help_)
    add = getattr(module, f"add_{command.replace('-', '_')}_arguments", None) or module.add_arguments
    add(p)
    return p, module


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C's KeyboardInterrupt so every ``finally`` runs (the
    temporaries of unfinished writes are removed)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: signals that end a command like Ctrl-C does, and the word printed for each
_ENDING_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGHUP: "terminated (hang-up)"}


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` in this process.

    Only in the main thread, and only for a signal still at its default action (``nohup`` keeps
    SIGHUP ignored). A process forked inside the block (a DataLoader worker) inherits the handler;
    there the signal keeps its default meaning, since the worker's parent decides how it ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)
    previous = {s: signal.getsignal(s) for s in _ENDING_SIGNALS}
    for s, old in previous.items():
        if old is signal.SIG_DFL:
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            if old is signal.SIG_DFL:
                signal.signal(s, old)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_command(command: str, argv: list[str]) -> int:
    """Parse ``argv`` for ``command`` and run it; HPAError becomes a one-line error and exit 2.

    A write refused by the system (disk full, read-only folder, no permission: the errno values of
    ``hpa.io.ENVIRONMENT_ERRNOS``) is also one line and exit 2; other exceptions keep their traceback.
    Ctrl-C prints ``error: interrupted`` (exit 130), SIGTERM ``error: terminated`` (exit 143; SIGHUP
    129), both after the temporaries of unfinished writes are removed; a closed output pipe (``| head``)
    ends quietly with 141. Warnings print as one line, ``warning: <message>``.
    """
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        with _terminate_like_ctrl_c(), line_progress():      # progress to a log file: lines, not \r frames
            parser, module = build_parser(command)
            args = finish(parser, parser.parse_args(argv))
            fn = getattr(module, f"main_{command.replace('-', '_')}", None) or module.main
            return int(fn(args) or 0)
    except HPAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:             # `hpa score ... | head`: the reader left; nothing to say
        with contextlib.suppress(AttributeError, OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 128 + signal.SIGPIPE
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Terminated as e:
        print(f"error: {_ENDING_SIGNALS[e.signum]}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hpa`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] not in COMMANDS:
        top.error(f"unknown command '{argv[0]}' (valid: {', '.join(COMMANDS)})")
    return run_command(argv[0], argv[1:])
