#!/bin/bash
# background: 3-fold training of the two extra demo datasets with this branch, then thresholds/infer/score
export PYTHONPATH=/work/wt/thr/src OMP_NUM_THREADS=1; PY=/work/main/.venv/bin/python
cd /work/wt/thr
for s in 11 12; do
  S="--set data.root=input/d$s --set folds.n_splits=3 --set name=d${s} --set train.keep_checkpoints=-1"
  $PY -m hpa folds --config configs/demo.yaml $S
  $PY train.py --config configs/demo.yaml $S --resume
  for sel in last nested best; do
    $PY train.py --config configs/demo.yaml $S --set train.select=$sel --resume 2>&1 | grep -a "^trained\|^epochs"
    $PY -m hpa thresholds --config configs/demo.yaml $S --set train.select=$sel
    $PY infer.py --config configs/demo.yaml $S --set train.select=$sel --out submissions/d${s}_$sel.csv
    cp runs/d$s/test_probs.csv runs/d$s/test_probs_$sel.csv; cp runs/d$s/oof.csv runs/d$s/oof_$sel.csv
    $PY -m hpa validate submissions/d${s}_$sel.csv --sample input/d$s/sample_submission.csv
    $PY -m hpa score --submission submissions/d${s}_$sel.csv --labels input/d$s/test_labels.csv
  done
done
echo ALLDONE
