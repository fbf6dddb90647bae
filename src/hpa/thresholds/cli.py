"""``hpa thresholds``: tune per-class thresholds on a run's OOF predictions (thin: see ``stage``)."""
from __future__ import annotations

import argparse

from hpa.config import load_config
from hpa.rundir import RunDir
from hpa.thresholds.stage import run_thresholds
from hpa.thresholds.tuner import THRESHOLD_STRATEGIES


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa thresholds``."""
    p.add_argument("--config", required=True, help="experiment YAML (reads runs/<exp>/oof.csv)")
    p.add_argument("--strategy", help=f"override thresholds.strategy ({', '.join(THRESHOLD_STRATEGIES.names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """Tune thresholds for a run, print the summary line and the numbers."""
    cfg = load_config(args.config, args.set)
    if args.strategy:
        cfg.thresholds.strategy = args.strategy
    r, report = run_thresholds(cfg)
    print(f"thresholds ({r['strategy']}): OOF macro F1 {r['oof_f1_at_0.5']:.4f} at 0.5 -> "
          f"{r['oof_f1_tuned']:.4f} tuned; nested (honest) {r['nested_f1_mean']:.4f} "
          f"[{', '.join(f'{v:.4f}' for v in r['nested_f1_per_fold'])}]; "
          f"{r['n_oof']} rows tuned in {r['tune_seconds']:.3f}s -> {RunDir.of(cfg).thresholds()}")
    print("per-class: " + " ".join(f"{i}:{v:.3f}" for i, v in enumerate(r["thresholds"])))
    if report is not None:
        print(f"report: {report}")
    return 0
