#!/bin/bash
# the lead's unchanged-code demo run, given its last epoch's OOF, then this branch's defaults
export PYTHONPATH=/work/wt/thr/src OMP_NUM_THREADS=1; PY=/work/main/.venv/bin/python
cd /work/wt/thr
[ -e input/demo ] || ln -s /work/wt/base/input/demo input/demo
[ -d runs/demo ] || cp -r /work/wt/base/runs/demo runs/demo
rm -f runs/demo/.lock
$PY logs/demo_last_oof.py runs/demo
for sel in last best; do
  $PY train.py --config configs/demo.yaml --set train.select=$sel --resume 2>&1 | grep -a "^trained\|^epochs\|rror"
  $PY -m hpa thresholds --config configs/demo.yaml --set train.select=$sel
  $PY infer.py --config configs/demo.yaml --set train.select=$sel --out submissions/demo_$sel.csv
  cp runs/demo/test_probs.csv runs/demo/test_probs_$sel.csv; cp runs/demo/oof.csv runs/demo/oof_$sel.csv
  $PY -m hpa validate submissions/demo_$sel.csv --sample input/demo/sample_submission.csv
  $PY -m hpa score --submission submissions/demo_$sel.csv --labels input/demo/test_labels.csv | tail -1
done
echo ALLDONE
