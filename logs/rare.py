"""Scratch: effect of the rate bounds + shrinkage on per_class for the rarest classes (OOF and test)."""
import sys
import numpy as np
from hpa.classes import CLASS_NAMES, PROB_COLUMNS
from hpa.data.labels import read_labels, to_multihot
from hpa.rundir import read_oof, read_probs
from hpa.thresholds import ThresholdTuner, apply_thresholds
run, lab, tlab, SEL = sys.argv[1:5]
labels = read_labels(lab)
ids, folds, probs = read_oof(f"{run}/oof_{SEL}.csv", labels["Id"].tolist())
y = to_multihot(labels.set_index("Id").loc[ids, "labels"])
tp = read_probs(f"{run}/test_probs_{SEL}.csv").set_index("Id")
yt = to_multihot(read_labels(tlab).set_index("Id").loc[tp.index, "labels"]); pt = tp[PROB_COLUMNS].to_numpy()
raw = ThresholdTuner("per_class", {"shrink": 0}, rate_ratio=0).fit(probs, y)
safe = ThresholdTuner("per_class").fit(probs, y)
for j in np.argsort(y.sum(0))[:4]:
    r = [f"{n}: thr {t.thresholds_[j]:.3f}, OOF predicted {int(t.predict(probs)[:, j].sum())}, test predicted "
         f"{int(apply_thresholds(pt, t.thresholds_)[:, j].sum())}" for n, t in (("raw", raw), ("bounded+shrunk", safe))]
    print(f"class {j} {CLASS_NAMES[j]}: {int(y[:, j].sum())}/{len(y)} OOF positives, {int(yt[:, j].sum())}/{len(yt)} test | " + " | ".join(r))
ratio = raw.predict(probs).sum(0) / np.maximum(y.sum(0), 1)
for j in np.argsort(-ratio)[:2]:
    r = [f"{n}: thr {t.thresholds_[j]:.3f}, OOF predicted {int(t.predict(probs)[:, j].sum())}, test predicted "
         f"{int(apply_thresholds(pt, t.thresholds_)[:, j].sum())}" for n, t in (("raw", raw), ("bounded+shrunk", safe))]
    print(f"most flooded: class {j} {CLASS_NAMES[j]}: {int(y[:, j].sum())}/{len(y)} OOF positives, {int(yt[:, j].sum())}/{len(yt)} test | " + " | ".join(r))
