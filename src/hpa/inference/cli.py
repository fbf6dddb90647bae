"""``python infer.py`` / ``hpa infer``: predict the test set of a run (or blend runs) and write a submission.

``--config configs/<exp>.yaml`` (or ``--run runs/<exp>``): each fold's checkpoint x dihedral TTA ->
``runs/<exp>/test_probs.csv``, then the run's ``thresholds.json`` (the strategy ``hpa thresholds``
chose) -> a validated submission in sample-submission order, with ``<out>.json`` recording the run, folds, TTA and which thresholds and why.
``--ensemble configs/ensemble_<name>.yaml``: blend runs' OOF and test probabilities, re-tune
thresholds on the blended OOF, one submission. The work is done in ``hpa.inference.stage``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpa.cli_args import add_run
from hpa.config import dotted_items, load_config, to_dict
from hpa.errors import HPAError
from hpa.inference.ensemble import load_ensemble_config
from hpa.inference.predict import TTA_MERGES
from hpa.inference.stage import infer_experiment, run_ensemble
from hpa.io import check_output_file
from hpa.rundir import RunDir, experiment
from hpa.submission import submission_record_path
from hpa.threads import set_threads


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``infer.py`` / ``hpa infer``."""
    src = p.add_mutually_exclusive_group(required=True)
    add_run(src, config_help="experiment YAML of a trained run")
    src.add_argument("--ensemble", help="ensemble YAML (runs, weights, blend, thresholds)")
    p.add_argument("--tta", type=int, help="dihedral TTA views 1-8 (default: infer.tta)")
    p.add_argument("--tta-merge", choices=TTA_MERGES.names(), help="merge of TTA views (default: infer.tta_merge)")
    p.add_argument("--folds", type=int, nargs="+", help="fold indices to use (default: the folds in the run's oof.csv, else all)")
    p.add_argument("--thresholds", metavar="STRATEGY",
                   help="apply runs/<exp>/thresholds_<STRATEGY>.json instead of thresholds.json (the chosen "
                   "one); a warning when its nested estimate is below fixed 0.5's")
    p.add_argument("--no-ensure-one", action="store_true", help="allow rows with no label")
    p.add_argument("--out", help="submission CSV (default: submissions/<name>.csv)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


#: settings inference takes from the run's saved config.yaml, whatever the config or --set says
FROM_RUN = ("model.", "data.image_size", "train.crop_from")


def refuse_run_overrides(overrides: list[str], saved: Path, cfg=None) -> None:
    """HPAError for a ``--set`` of a setting the saved run decides (:data:`FROM_RUN`) to another value
    than the run's (``cfg``: the config with the overrides): it would be ignored, and a different model
    cannot load the run's checkpoints anyway. Restating the run's own value is accepted."""
    run_items = dotted_items(to_dict(load_config(saved))) if cfg is not None and saved.is_file() else None
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if any(key == k or key.startswith(k) for k in FROM_RUN) or f"{key}." in FROM_RUN:
            if run_items is not None and all(v == run_items.get(k) for k, v in dotted_items(to_dict(cfg)).items()
                                             if k == key or k.startswith(f"{key}.")):
                continue
            raise HPAError(f"--set {item}: infer.py predicts with the run's own {key} (from {saved}); "
                           "train another run to change it")


def main(args: argparse.Namespace) -> int:
    """Run inference or an ensemble; print a one-line summary."""
    if args.out:
        check_output_file(args.out, "--out")      # before any model runs (and before test_probs.csv changes)
    if args.ensemble:
        ecfg = load_ensemble_config(args.ensemble, args.set)
        if args.no_ensure_one:
            ecfg.ensure_one = False
        r = run_ensemble(ecfg, args.out)
        v, sel = r["validation"], r["selection"]
        if sel["warning"]:
            print(f"warning: {sel['warning']}", file=sys.stderr)
        print(f"ensemble of {len(ecfg.runs)} runs ({ecfg.blend}): {sel['reason']}; blended OOF macro F1 "
              f"{r['oof_f1_tuned']:.4f} tuned, {r['nested_f1_mean']:.4f} nested; {v['rows']} rows, "
              f"{v['labels_per_row']:.2f} labels/row -> {r['submission']} (valid)")
        return 0
    cfg = experiment(args.run, args.config, args.set)
    refuse_run_overrides(args.set, RunDir.of(cfg).config, cfg)
    print(set_threads(cfg.train.threads, 0, f"infer {cfg.name}"))
    if args.tta is not None:
        cfg.infer.tta = args.tta
    if args.tta_merge:
        cfg.infer.tta_merge = args.tta_merge
    if args.no_ensure_one:
        cfg.infer.ensure_one = False
    out = check_output_file(args.out or f"submissions/{cfg.name}.csv", "--out")
    s = infer_experiment(cfg, out, args.folds, args.thresholds)
    crops = f" x {s['crops']} crops" if s["crops"] else ""
    print(f"infer {cfg.name}: {s['folds']} fold(s) x {s['tta']} TTA views{crops}, thresholds '{s['strategy']}' "
          f"({s['thresholds']['reason']}); {s['rows']} rows, {s['labels_per_row']:.2f} labels/row, {s['empty']} "
          f"empty -> {out} (valid, record {submission_record_path(out)}); probabilities -> {RunDir.of(cfg).test_probs}")
    return 0
