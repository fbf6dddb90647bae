"""Write notebooks/0*.ipynb (no outputs) from the cell lists below: `python tools/make_notebooks.py`.

The notebooks are generated so their cells stay thin and reviewable here; edit this file, rerun it,
and commit both."""
import nbformat as nbf
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = '''# Paths and parameters: edit here, or override without editing through the environment variable
# HPA_NB_PATHS='{{"key": "value", ...}}' (JSON; the tests point the notebooks at a tiny demo run this way).
import json, os, warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm.auto without ipywidgets

_here = Path.cwd().resolve()
ROOT = next((p for p in [_here, *_here.parents] if (p / "Makefile").is_file()), _here)
os.chdir(ROOT)                      # every path below is relative to the repository root
P = {defaults}
P.update(json.loads(os.environ.get("HPA_NB_PATHS", "{{}}")))
%matplotlib inline
from IPython.display import display


def need(path, command):
    """True when ``path`` exists; otherwise print the command that creates it (the cell then skips)."""
    if Path(path).exists():
        return True
    print(f"skipped: {{path}} not found; create it with:\\n    {{command}}")
    return False

print("repository root:", ROOT)
print(json.dumps(P, indent=1))'''


def notebook(name, title, defaults, cells):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells.append(nbf.v4.new_markdown_cell(title))
    nb.cells.append(nbf.v4.new_code_cell(SETUP.format(defaults=defaults)))
    for kind, src in cells:
        nb.cells.append(nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src.strip("\n")))
    for c in nb.cells:      # stable ids keep diffs quiet when the notebooks are regenerated
        c["id"] = f"{name[:2]}-{nb.cells.index(c):02d}"
    nbf.validate(nb)
    nbf.write(nb, OUT / name)


notebook("01_eda.ipynb", """# 01 · Exploratory data analysis
Class frequencies, label co-occurrence, labels per image, example images per class (composite and the
four stains) and image intensity statistics. Defaults to the demo data (`make demo`); point `data` at
the real competition folder (`hpa download`) for the real thing. Logic lives in `hpa.reports.eda`.""",
"""{
    "data": "input/demo",          # Kaggle layout: train.csv, train/
    "example_classes": None,       # None = all 28 classes
    "examples_per_class": 1,
    "stats_images": 200,           # images sampled for the intensity statistics
}""", [
("code", """
import pandas as pd
from hpa.data.labels import read_labels
from hpa.reports import eda

DATA = Path(P["data"])
labels = read_labels(DATA / "train.csv") if need(DATA / "train.csv", "make demo   # or: hpa demo-data --out input/demo") else None
if labels is not None:
    print(f"{len(labels)} training images in {DATA}")
    display(eda.class_table(labels))
"""),
("md", "## Class frequencies (log scale) against the real train.csv"),
("code", """
if labels is not None:
    display(eda.plot_class_frequencies(labels, title=f"class frequencies: {DATA}"))
"""),
("md", "## Label co-occurrence: P(column label | row label)"),
("code", """
if labels is not None:
    display(eda.plot_cooccurrence(labels))
"""),
("md", "## Labels per image"),
("code", """
if labels is not None:
    display(eda.plot_labels_per_image(labels))
"""),
("md", "## Example images per class: RGBY composite and the four stains (single-label images first)"),
("code", """
if labels is not None:
    display(eda.plot_class_examples(DATA / "train", labels, P["example_classes"], P["examples_per_class"]))
"""),
("md", "## Image intensity statistics per stain"),
("code", """
if labels is not None:
    ids = labels["Id"].sample(min(P["stats_images"], len(labels)), random_state=0).tolist()
    stats = eda.intensity_stats(DATA / "train", ids)
    display(stats.groupby("channel")[["mean", "std", "p99", "zero_share"]].mean().round(2))
    display(eda.plot_intensity_stats(stats))
"""),
])

notebook("02_cv_and_thresholds.ipynb", """# 02 · Cross-validation and thresholds
Per-class OOF F1 of a run, its per-fold spread, precision-recall and F1-versus-threshold curves with the
chosen thresholds marked, the honest (nested) threshold estimate against the optimistic one, and the
worst classes. Needs a trained run (`python train.py --config configs/demo.yaml`) and, for the chosen
thresholds, `hpa thresholds --config configs/demo.yaml`. Logic lives in `hpa.reports.cv`.""",
"""{
    "run": "runs/demo",            # run folder with config.yaml and oof.csv
    "labels": "",                  # Id,Target CSV; empty = the run's <data.root>/train.csv
    "curve_classes": None,         # None = all 28 classes
    "strategies": ["global", "per_class", "proportion", "scaled"],
}""", [
("code", """
import numpy as np
from hpa.reports import cv
from hpa.rundir import RunDir

RUN = RunDir(P["run"])
oof = thresholds = None
if need(RUN.oof, "make demo && python train.py --config configs/demo.yaml"):
    oof = cv.load_oof(RUN.path, P["labels"] or None)
    print(f"{len(oof.ids)} OOF rows, folds {sorted(set(oof.folds.tolist()))}")
if oof is not None and need(RUN.thresholds(), "hpa thresholds --config configs/demo.yaml"):
    tj = RUN.read_thresholds()
    thresholds = np.asarray(tj["thresholds"])
    print(f"thresholds.json ({tj['strategy']}): {tj['oof_f1_at_0.5']:.4f} at 0.5 -> "
          f"{tj['oof_f1_tuned']:.4f} tuned (in-sample), {tj['nested_f1_mean']:.4f} nested")
"""),
("md", "## OOF F1 per class (at 0.5 and with the chosen thresholds)"),
("code", """
if oof is not None:
    table = cv.per_class_table(oof, thresholds)
    display(cv.plot_per_class_f1(table, title=f"{RUN.path.name}: OOF F1 per class"))
    display(table.round(3))
"""),
("md", "## Per-fold spread"),
("code", """
if oof is not None:
    folds = cv.fold_table(oof, thresholds)
    display(folds[["fold", "n", "macro_f1"]].round(4))
    display(cv.plot_fold_spread(folds, title=f"{RUN.path.name}: per-fold spread"))
"""),
("md", "## F1 / precision / recall against the threshold, and precision-recall curves (chosen thresholds in red)"),
("code", """
if oof is not None:
    display(cv.plot_f1_vs_threshold(oof, thresholds, P["curve_classes"]))
    display(cv.plot_pr_curves(oof, thresholds, P["curve_classes"]))
"""),
("md", """## Honest (nested) against optimistic (in-sample) threshold estimates
In-sample: tuned and scored on the same OOF. Nested: tuned on the other folds, scored on the held-out
fold. The gap is how much of the tuning gain will not survive on new data."""),
("code", """
if oof is not None:
    hv = cv.honest_vs_optimistic(oof, P["strategies"])
    display(hv.round(4))
    display(cv.plot_honest_vs_optimistic(hv))
"""),
("md", "## Worst classes"),
("code", """
if oof is not None:
    display(cv.worst_classes(table, 8).round(3))
"""),
])

notebook("03_synthetic.ipynb", """# 03 · Synthetic images
Real vs synthetic images per class, the memorisation histogram (is a generated image a copy of a
training image?), label agreement per class (does a real-data classifier see the intended labels?) and
the effect of the filter. Needs a generated folder (`hpa synth generate ...`); label agreement needs a
trained classifier run, the filter view `hpa synth filter`. Logic lives in `hpa.synthetic.figures`.""",
"""{
    "synth": "input/synth/ddpm_demo",  # folder with manifest.csv and train/
    "data": "input/demo",              # the real training data
    "run": "runs/demo",                # classifier run (fold<k>/best.pt) for label agreement
    "fold": 0,
    "grid_classes": None,              # None = every class the manifest intends
    "per_class": 3,
}""", [
("code", """
from hpa.data.labels import read_labels
from hpa.synthetic import figures as S
from hpa.rundir import RunDir

SYN, DATA, RUN = Path(P["synth"]), Path(P["data"]), RunDir(P["run"])
man = filtered = real = None
if need(SYN / "manifest.csv", "hpa synth train --config configs/synth/ddpm_demo.yaml --fold 0 && "
        "hpa synth generate --config configs/synth/ddpm_demo.yaml --fold 0 --mode noise --n 200") \\
        and need(DATA / "train.csv", "make demo"):
    man, filtered = S.load_synth(SYN)
    real = read_labels(DATA / "train.csv")
    print(f"{len(man)} synthetic images ({', '.join(sorted(set(man['mode'])))}); "
          f"{'no filter yet' if filtered is None else f'{len(filtered)} kept by the filter'}")
    display(man.drop(columns=["labels"]).head())
"""),
("md", "## Real vs synthetic per class"),
("code", """
if man is not None:
    display(S.plot_real_vs_synthetic(man, SYN / "train", real, DATA / "train", P["grid_classes"], P["per_class"]))
"""),
("md", """## Memorisation: similarity of each synthetic image to its nearest real image
Pixel Pearson correlation over the four stains at 32 px; values near 1 are copies. `hpa synth report`
does the same in the classifier's feature space (`report/memorization.png`)."""),
("code", """
if man is not None:
    near = S.nearest_real(man, SYN / "train", real, DATA / "train")
    display(S.plot_memorization(near["similarity"]))
    display(near.sort_values("similarity", ascending=False).head())
    if (SYN / "report" / "report.json").is_file():
        print("hpa synth report:", (SYN / "report" / "report.json").read_text())
"""),
("md", "## Label agreement per class (classifier trained on real images)"),
("code", """
if man is not None and need(RUN.fold(P["fold"]).best, "python train.py --config configs/demo.yaml"):
    probs = S.classifier_probs(RUN.path, SYN / "train", man["Id"].tolist(), P["fold"])
    agree = S.label_agreement_per_class(list(man["labels"]), probs)
    display(S.plot_label_agreement(agree, title=f"label agreement per class ({RUN.path.name} fold {P['fold']})"))
    display(agree[agree["n_images"] > 0].round(3))
"""),
("md", "## Effect of the filter"),
("code", """
if man is not None and need(SYN / "manifest_filtered.csv",
                            f"hpa synth filter --manifest {SYN}/manifest.csv --run {RUN.path} --drop 0.2"):
    display(S.plot_filter_effect(man, filtered))
    display(S.filter_effect(man, filtered).query("before > 0").round(3))
"""),
])

notebook("04_ensemble.ipynb", """# 04 · Ensemble
Correlation between the runs' OOF predictions (low correlation = more to gain from blending), blend
weight against OOF macro F1, and the predicted label distribution of a submission against the train
frequencies. Needs at least two runs with `oof.csv` (see `configs/ensemble_demo.yaml`) and a
submission (`python infer.py ...`). Logic lives in `hpa.reports.ensemble`.""",
"""{
    "ensemble": "configs/ensemble_demo.yaml",   # its runs: list is used
    "submissions": ["submissions/ensemble_demo.csv", "submissions/demo.csv"],  # first existing one is shown
    "data": "input/demo",                        # train.csv compared with the submission
    "weight_steps": 11,
}""", [
("code", """
from hpa.inference.ensemble import load_ensemble_config
from hpa.reports import ensemble as E
from hpa.rundir import RunDir

ens = load_ensemble_config(P["ensemble"])
runs = [r.dir for r in ens.runs if need(RunDir(r.dir).oof,
        f"python train.py --config configs/demo.yaml --set name={Path(r.dir).name}")]
print(f"{len(runs)} of {len(ens.runs)} runs have oof.csv: {runs}")
oofs = E.load_oofs(runs) if runs else {}
"""),
("md", "## Correlation between runs' OOF predictions"),
("code", """
if len(oofs) >= 2:
    corr = E.oof_correlation(oofs)
    display(corr.round(3))
    display(E.plot_correlation(corr))
else:
    print("skipped: needs two runs with oof.csv (see the commands above)")
"""),
("md", "## Blend weight against OOF macro F1 (nested = honest, tuned = in-sample)"),
("code", """
if len(oofs) >= 2:
    scan = E.blend_weight_scan(oofs, steps=P["weight_steps"], how=ens.blend, strategy=ens.thresholds.strategy)
    display(E.plot_blend_weights(scan))
    display(scan.loc[scan.groupby("run")["f1_nested"].idxmax()].round(4))
else:
    print("skipped: needs two runs with oof.csv")
"""),
("md", "## Predicted label distribution of a submission against train frequencies"),
("code", """
subs = [s for s in P["submissions"] if Path(s).is_file()]
if subs:
    train_csv = Path(P["data"]) / "train.csv"
    display(E.plot_submission_rates(subs[0], train_csv if train_csv.is_file() else None))
else:
    need(P["submissions"][0], "python infer.py --ensemble configs/ensemble_demo.yaml   "
         "# or: python infer.py --config configs/demo.yaml --out submissions/demo.csv")
"""),
])
print("written", sorted(p.name for p in OUT.glob("*.ipynb")))
