"""Scratch: per run, each strategy's nested estimate, auto's own estimate, test score of auto's choice vs
fixed 0.5, labels per row (nested OOF, test) vs the training mean. Usage: eval_thr.py RUN LABELS TESTLABELS [k=v ...]"""
import sys
import numpy as np, pandas as pd
from hpa.config import ThresholdConfig
from hpa.data.labels import read_labels, to_multihot
from hpa.rundir import RunDir
from hpa.thresholds.stage import tune_all
from hpa.thresholds.tuner import thresholds_for_test
from hpa.thresholds.search import apply_thresholds
from hpa.metrics import macro_f1
from hpa.classes import PROB_COLUMNS

run, lab, test_lab, SEL = sys.argv[1:5]
kw = dict(a.split("=", 1) for a in sys.argv[5:])
tc = ThresholdConfig()
if "rate_ratio" in kw: tc.rate_ratio = float(kw["rate_ratio"])
if "shrink" in kw: tc.params = {n: {"shrink": float(kw["shrink"])} for n in ("per_class", "scaled")}
if "cands" in kw: tc.candidates = kw["cands"].split(",")
rd = RunDir(run)
labels = read_labels(lab)
from hpa.rundir import read_oof, read_probs
ids, folds, probs = read_oof(f"{run}/oof_{SEL}.csv", labels["Id"].tolist())
y = to_multihot(labels.set_index("Id").loc[ids, "labels"])
res, sel = tune_all(tc, probs, y, folds, kw.get('eo', '1') == '1')
tl = read_labels(test_lab).set_index("Id")
tp = read_probs(f"{run}/test_probs_{SEL}.csv").set_index("Id")
yt = to_multihot(tl.loc[tp.index, "labels"]); pt = tp[PROB_COLUMNS].to_numpy()
print(f"{run} select={SEL} {kw}: train labels/row {y.sum(1).mean():.2f}, test truth {yt.sum(1).mean():.2f}; pooled OOF@0.5 {res['fixed']['oof_f1_at_0.5']:.4f}")
for n, r in res.items():
    th = thresholds_for_test(r, pt)
    for eo in (False, True):
        pass
    pr = apply_thresholds(pt, th, True)
    print(f"  {n:10s} nested pooled {r['nested_f1_pooled']:.4f} mean {r['nested_f1_mean']:.4f} lpr {r['nested_labels_per_row']:.2f} | "
          f"test {macro_f1(yt, pr):.4f} (no ensure_one {macro_f1(yt, apply_thresholds(pt, th)):.4f}) test lpr {pr.sum(1).mean():.2f}")
a = sel["auto"]; ch = sel["strategy"]
pr = apply_thresholds(pt, thresholds_for_test(res[ch], pt), True)
f5 = apply_thresholds(pt, [0.5]*28, True)
print(f"  AUTO -> {ch} ({sel['reason']}); auto estimate pooled {a['nested_f1_pooled']:.4f} mean {a['nested_f1_mean']:.4f} "
      f"choices {a['choices']} lpr {a['labels_per_row']:.2f} | test {macro_f1(yt, pr):.4f} lpr {pr.sum(1).mean():.2f} vs fixed0.5 test {macro_f1(yt, f5):.4f}")
