"""Predict the test set of a trained run (or blend runs) and write a validated submission.

    python infer.py --config configs/demo.yaml [--tta 8] [--out submissions/demo.csv]
    python infer.py --ensemble configs/ensemble_demo.yaml
"""
import sys

from hpa.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("infer", sys.argv[1:]))
