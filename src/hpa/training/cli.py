"""``hpa train`` / ``python train.py``: train the k folds of an experiment config."""
from __future__ import annotations

import argparse

from hpa.config import load_config
from hpa.training.run import run


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa train``."""
    p.add_argument("--config", required=True, help="experiment YAML (configs/<exp>.yaml)")
    p.add_argument("--folds", type=int, nargs="+", help="folds to train (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished folds and continue an interrupted fold from last.pt")
    p.add_argument("--skip-missing", action="store_true",
                   help="train on the external Ids that have images (= --set data.external_skip_missing=true)")


def main(args: argparse.Namespace) -> int:
    """Load the config, train, and return 0 (errors surface as HPAError -> exit 2)."""
    cfg = load_config(args.config, args.set)
    if getattr(args, "skip_missing", False):
        cfg.data.external_skip_missing = True
    run(cfg, args.folds, args.resume)
    return 0
