"""``python -m hpa <command>`` / ``hpa <command>``: a thin dispatcher over importable functions.

Each command lives in a module exposing ``add_arguments(parser)`` and ``main(args) -> int | None``.
Modules are imported only when their command runs, so ``hpa --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hpa.errors import HPAError

#: command name -> (module, one-line help). The one explicit table of commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("hpa.data.demo", "write the synthetic demo dataset in the Kaggle layout"),
    "folds": ("hpa.data.folds", "split train.csv into multilabel-stratified k folds (Id,fold CSV)"),
    "cache": ("hpa.data.cache", "build the pre-resized uint8 image cache for a dataset"),
    "train": ("hpa.training.cli", "train k folds of an experiment (same as train.py)"),
    "swa": ("hpa.training.swa", "average a run's kept epoch weights per fold (SWA): swa.pt + its own OOF"),
    "lr-find": ("hpa.training.lr_find", "learning-rate range test: loss against lr, a plot and a suggested lr"),
    "infer": ("hpa.inference.cli", "predict the test set and write a submission (same as infer.py)"),
    "thresholds": ("hpa.thresholds", "tune per-class thresholds on a run's OOF predictions"),
    "score": ("hpa.metrics", "score a submission against a labels CSV (macro F1)"),
    "validate": ("hpa.submission", "check a submission file against the sample submission"),
    "synth": ("hpa.synth.cli", "train diffusion generators, generate, filter and report synthetic images"),
    "download": ("hpa.kaggle", "download and unpack the competition data with the kaggle package"),
    "submit": ("hpa.kaggle", "validate a submission, then submit it to Kaggle"),
    "bench": ("hpa.bench", "benchmark the hot paths against their baselines"),
    "report": ("hpa.reports.run_report", "write runs/<exp>/report.md with the run's plots"),
    "ablate": ("hpa.ablate", "run the synthetic-data ablation grid and write its report"),
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


def run_command(command: str, argv: list[str]) -> int:
    """Parse ``argv`` for ``command`` and run it; HPAError becomes a one-line error and exit 2."""
    try:
        parser, module = build_parser(command)
        args = parser.parse_args(argv)
        fn = getattr(module, f"main_{command.replace('-', '_')}", None) or module.main
        return int(fn(args) or 0)
    except HPAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


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
