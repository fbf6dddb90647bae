#!/bin/bash
# background: folds + 3-fold training of the two extra demo datasets (keep all epoch weights)
export PYTHONPATH=/work/wt/thr/src OMP_NUM_THREADS=1; PY=/work/main/.venv/bin/python
cd /work/wt/thr
for s in 11 12; do
  S="--set data.root=input/d$s --set folds.n_splits=3 --set name=d${s}_v0 --set train.keep_checkpoints=-1"
  $PY -m hpa folds --config configs/demo.yaml $S
  $PY train.py --config configs/demo.yaml $S --resume
  $PY infer.py --config configs/demo.yaml $S --tta 1 --out submissions/d${s}_v0.csv
done
echo ALLDONE
