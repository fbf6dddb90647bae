"""``hpa thresholds``: tune per-class thresholds on a run's OOF predictions (thin: see ``stage``)."""
from __future__ import annotations

import argparse
import sys

from hpa.cli_args import add_run
from hpa.reports.cv import epoch_choice, epoch_choice_line
from hpa.rundir import RunDir, experiment
from hpa.thresholds.stage import run_thresholds
from hpa.thresholds.strategies import THRESHOLD_STRATEGIES
from hpa.thresholds.tuner import AUTO, check_strategy


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa thresholds``."""
    add_run(p, config_help="experiment YAML (reads runs/<exp>/oof.csv)")
    p.add_argument("--strategy", help=f"override thresholds.strategy: {AUTO} (chosen among thresholds.candidates "
                   f"by nested estimates) or a name ({', '.join(THRESHOLD_STRATEGIES.names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """Tune every strategy for a run, choose one; print the choice, its numbers and the epoch figures."""
    cfg = experiment(args.run, args.config, args.set)
    if args.strategy:
        cfg.thresholds.strategy = check_strategy(args.strategy)
    r, report = run_thresholds(cfg)
    rd, sel = RunDir.of(cfg), r["selection"]
    if sel["warning"]:
        print(f"warning: {sel['warning']}", file=sys.stderr)
    print(estimates_line(sel))
    print(f"{sel['reason']}; thresholds ({r['strategy']}): pooled OOF macro F1 {r['oof_f1_at_0.5']:.4f} at 0.5 -> "
          f"{r['oof_f1_tuned']:.4f} tuned in-sample; nested {r['nested_f1_pooled']:.4f} pooled, "
          f"{r['nested_f1_mean']:.4f} mean of folds [{', '.join(f'{v:.4f}' for v in r['nested_f1_per_fold'])}]; "
          f"labels per row {r['nested_labels_per_row']:.2f} nested vs {r['train_labels_per_row']:.2f} in the "
          f"labels{' (ensure_one, as infer.py predicts)' if r.get('ensure_one') else ''}; {r['n_oof']} rows -> "
          f"{rd.thresholds()} (= {sel['file']})")
    print("per-class: " + " ".join(f"{i}:{v:.3f}" for i, v in enumerate(r["thresholds"])))
    metrics = rd.read_metrics() or {}
    print(f"oof.csv holds train.select {metrics.get('select', 'best')}; "
          + epoch_choice_line(epoch_choice(rd.histories()), metrics.get("select_pooled")))
    if report is not None:
        print(f"report: {report}")
    return 0


def estimates_line(sel: dict) -> str:
    """One line: each strategy's nested macro F1 (pooled / mean of folds) and, for ``auto``, the honest
    estimate of the choice itself with the strategy it chose in each outer fold."""
    pooled = sel.get("nested_f1_pooled", {})
    parts = [f"{n} {pooled.get(n, float('nan')):.4f}/{v:.4f}" for n, v in sel["nested_f1"].items()]
    line = "nested macro F1 per strategy (pooled/mean of folds): " + ", ".join(parts)
    auto = sel.get("auto")
    if auto:
        line += (f"; auto itself (chosen inside the loop): {auto['nested_f1_pooled']:.4f}/"
                 f"{auto['nested_f1_mean']:.4f} (per fold: {', '.join(auto['choices'])})")
    return line
