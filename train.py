#!/usr/bin/env python
"""Train the k folds of an experiment: ``python train.py --config configs/demo.yaml [--folds 0 2]
[--set key=value ...] [--resume]``; ``accelerate launch train.py ...`` for several GPUs/processes."""
import sys

from hpa.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:]))
