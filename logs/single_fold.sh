export PYTHONPATH=/work/wt/thr/src OMP_NUM_THREADS=1; PY=/work/main/.venv/bin/python
cd /work/wt/thr
S="--set data.root=input/d11 --set folds.n_splits=3 --set name=d11 --set train.keep_checkpoints=-1 --set train.select=best"
for f in 0 1 2; do for t in 1 8; do
  $PY infer.py --config configs/demo.yaml $S --folds $f --tta $t --thresholds fixed --out submissions/d11_f${f}_t$t.csv > /dev/null 2>&1
  cp runs/d11/test_probs.csv runs/d11/test_probs_f${f}_t$t.csv
  echo "fold $f tta $t: $($PY -m hpa score --submission submissions/d11_f${f}_t$t.csv --labels input/d11/test_labels.csv)"
done; done
$PY infer.py --config configs/demo.yaml $S --tta 1 --thresholds fixed --out submissions/d11_all_t1.csv > /dev/null 2>&1
cp runs/d11/test_probs.csv runs/d11/test_probs_all_t1.csv
echo "all folds tta 1: $($PY -m hpa score --submission submissions/d11_all_t1.csv --labels input/d11/test_labels.csv)"
cp runs/d11/test_probs_best.csv runs/d11/test_probs.csv
