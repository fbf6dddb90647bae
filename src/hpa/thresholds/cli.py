"""``hpa thresholds``: tune per-class thresholds on a run's OOF predictions (thin: see ``stage``)."""
from __future__ import annotations

import argparse
import sys

from hpa.cli_args import add_run
from hpa.rundir import RunDir, experiment
from hpa.thresholds.stage import run_thresholds
from hpa.thresholds.tuner import AUTO, THRESHOLD_STRATEGIES, check_strategy


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa thresholds``."""
    add_run(p, config_help="experiment YAML (reads runs/<exp>/oof.csv)")
    p.add_argument("--strategy", help=f"override thresholds.strategy: {AUTO} (the best nested estimate, fixed "
                   f"0.5 included) or a name ({', '.join(THRESHOLD_STRATEGIES.names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """Tune every strategy for a run, choose one; print the choice, its numbers and the epoch figures."""
    from hpa.reports.cv import epoch_choice, epoch_choice_line

    cfg = experiment(args.run, args.config, args.set)
    if args.strategy:
        cfg.thresholds.strategy = check_strategy(args.strategy)
    r, report = run_thresholds(cfg)
    rd, sel = RunDir.of(cfg), r["selection"]
    if sel["warning"]:
        print(f"warning: {sel['warning']}", file=sys.stderr)
    print("nested (honest) macro F1 per strategy: "
          + ", ".join(f"{n} {v:.4f}" for n, v in sel["nested_f1"].items()))
    print(f"{sel['reason']}; thresholds ({r['strategy']}): OOF macro F1 {r['oof_f1_at_0.5']:.4f} at 0.5 -> "
          f"{r['oof_f1_tuned']:.4f} tuned; nested (honest) {r['nested_f1_mean']:.4f} "
          f"[{', '.join(f'{v:.4f}' for v in r['nested_f1_per_fold'])}]; "
          f"{r['n_oof']} rows -> {rd.thresholds()} (= {sel['file']})")
    print("per-class: " + " ".join(f"{i}:{v:.3f}" for i, v in enumerate(r["thresholds"])))
    print(epoch_choice_line(epoch_choice(rd.histories())))
    if report is not None:
        print(f"report: {report}")
    return 0
