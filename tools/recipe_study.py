"""Recipe study (issue 18): which training settings let the demo CNN learn what the data allows.

Each cell is (dataset, variant, seed): the base config (``configs/demo.yaml`` by default) plus the
variant's ``--set`` overrides, trained on the folds ``--train-folds`` of a ``--k``-fold split of the
dataset (default: fold 0 of 3, to spare the CPU). A cell records

* ``val_f1_best``: validation macro F1 at 0.5 of the best epoch (the epoch is chosen on these same
  images, so it is optimistic), ``val_f1_last`` the last epoch's (honest), ``best_epoch``,
  ``minloss_epoch`` (epoch of the lowest validation loss);
* ``test_f1_best`` / ``test_f1_last``: macro F1 at 0.5 of the fold models' mean on the held-out test
  set with the best / last checkpoint (1 TTA view), ``test_f1_tuned``: per-class thresholds tuned on
  the validation images applied to the best checkpoint's test probabilities;
* ``val_lpi`` / ``test_lpi``: predicted labels per image at 0.5 (``true_lpi``: the truth);
* ``seconds``.

The variant ``baseline`` is ``hpa baseline`` (logistic regression on pooled stain features) on the
same folds. Datasets: ``demo`` is ``input/demo`` (``hpa demo-data`` defaults); ``s<seed>n<train>p<px>``
is generated into ``input/recipe/<name>`` with that seed, train size and image size (a quarter of it
as test images). Rows append to ``--out`` (a CSV) as cells finish; a cell already there is skipped,
so the study resumes. ``--plot`` draws the PNG from the CSV.

    PYTHONPATH=src OMP_NUM_THREADS=1 python tools/recipe_study.py --datasets demo s1n600p96 \
        --variants old bce bce_pw bce_sf1 --seeds 0 --out benchmarks/recipe_study.csv --plot
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import PROB_COLUMNS
from hpa.config import load_config
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import label_matrix, read_labels
from hpa.io import write_csv
from hpa.metrics import macro_f1
from hpa.rundir import RunDir

LOSS_BCE = "loss=[{name: bce, weight: 1.0}]"
#: the demo recipe before the study (configs/demo.yaml until issue 18), applied before every variant so
#: that the variants stay relative to it whatever configs/demo.yaml now says
OLD_RECIPE = ["model.name=resnet18", "train.epochs=12",
              "loss=[{name: bce, weight: 1.0, params: {pos_weight: auto}}, {name: soft_f1, weight: 1.0}]"]
#: variant name -> ``--set`` overrides on the base config (the old demo recipe)
VARIANTS: dict[str, list[str]] = {
    "old": [],
    "bce": [LOSS_BCE],                                              # no pos_weight, no soft-F1
    "bce_pw": ["loss=[{name: bce, weight: 1.0, params: {pos_weight: auto}}]"],
    "bce_sf1": ["loss=[{name: bce, weight: 1.0}, {name: soft_f1, weight: 1.0}]"],
    "lr1e-3": ["optim.lr=0.001"],
    "lr3e-4": ["optim.lr=0.0003"],
    "wd0.05": ["optim.weight_decay=0.05"],
    "ep24": ["train.epochs=24"],
    "ep18": ["train.epochs=18"],
    "px64": ["data.image_size=64"],
    "noaug": ["train.augment=[]"],
    "bs16": ["train.batch_size=16"],
    "drop0.3": ["model.drop_rate=0.3"],
    "resnet10t": ["model.name=resnet10t"],
    "es3": ["train.early_stopping=3"],
    "ema": ["train.ema=true", "train.ema_decay=0.99"],
    "resnet14t": ["model.name=resnet14t"],
    "resnet18d": ["model.name=resnet18d"],                          # resnet18 with the deep stem of 10t
    "norm": ["model.mean=[0.093, 0.082, 0.094, 0.057]",             # the demo images' own statistics
             "model.std=[0.12, 0.14, 0.175, 0.06]"],
    "augplus": ["train.augment=[{name: hflip, params: {p: 0.5}}, {name: vflip, params: {p: 0.5}}, "
                "{name: rotate90, params: {p: 0.5}}, {name: shift_scale_rotate, params: {p: 0.5}}, "
                "{name: brightness_contrast, params: {p: 0.5}}]"],
    "last": ["train.select=last"],                                   # (recorded anyway: test_f1_last)
}
#: the recipe the study chose for configs/demo.yaml, as overrides of the old one
VARIANTS["new"] = ["model.name=resnet10t", "train.epochs=24",        # step 1 (48 px, 24 epochs)
                   "loss=[{name: bce, weight: 1.0}, {name: soft_f1, weight: 1.0}]"]


def combo(*names: str) -> list[str]:
    """The overrides of several variants together (later ones win)."""
    return [s for n in names for s in VARIANTS[n]]


VARIANTS["final"] = combo("new", "px64", "ep18")     # = configs/demo.yaml now (rows: new+px64+ep18)


def dataset_root(name: str) -> Path:
    """``input/demo`` or ``input/recipe/<name>`` (generated on first use from ``s<seed>n<n>p<px>``)."""
    if name == "demo":
        return Path("input/demo")
    m = re.fullmatch(r"s(\d+)n(\d+)p(\d+)", name)
    if not m:
        sys.exit(f"error: dataset '{name}': use demo or s<seed>n<train>p<px>")
    root = Path("input/recipe") / name
    if not (root / "train.csv").is_file():
        from hpa.demo.dataset import make_demo_dataset
        seed, n, px = map(int, m.groups())
        make_demo_dataset(root, n_train=n, n_test=max(n // 4, 40), size=px, seed=seed,
                          contact_sheet=False, overwrite=True)
    return root


def folds_file(root: Path, k: int) -> Path:
    """A ``k``-fold split of the dataset kept apart from its ``folds.csv`` (seed 42)."""
    path = root / f"folds_k{k}.csv"
    if not path.is_file():
        write_folds(path, make_folds(read_labels(root / "train.csv"), n_splits=k, seed=42))
    return path


def cell_config(base: str, root: Path, fpath: Path, k: int, variant: list[str], seed: int, name: str):
    """The experiment config of one cell (its own run folder under ``runs/recipe_study``)."""
    sets = [f"data.root={root}", f"folds.file={fpath}", f"folds.n_splits={k}", f"seed={seed}",
            f"name={name}", "runs_dir=runs/recipe_study", "train.threads=1", "train.num_workers=0",
            "infer.tta=1", *OLD_RECIPE, *variant]
    return load_config(base, sets)


def test_probs(cfg, folds: list[int], which: str) -> tuple[list[str], np.ndarray]:
    """Mean of the fold models' test probabilities (1 TTA view) with checkpoint ``which``."""
    from hpa.inference.predict import open_test_images, predict_run

    ids = read_labels(Path(cfg.data.root) / "test_labels.csv")["Id"].tolist()
    df = predict_run(cfg, RunDir.of(cfg).path, ids, open_test_images(cfg, ids), folds, 1, "mean", which)
    return ids, df[PROB_COLUMNS].to_numpy()


def tuned_test_f1(val_p: np.ndarray, val_y: np.ndarray, test_p: np.ndarray, test_y: np.ndarray) -> float:
    """Per-class thresholds tuned on validation probabilities, applied to the test probabilities."""
    from hpa.thresholds.tuner import ThresholdTuner, apply_thresholds

    thr = ThresholdTuner("per_class").fit(val_p, val_y).thresholds_
    return macro_f1(test_y, apply_thresholds(test_p, thr, ensure_one=True))


def run_cell(base: str, dataset: str, variant: str, seed: int, k: int, train_folds: list[int]) -> dict:
    """Train (or fit the baseline of) one cell and return its row."""
    root = dataset_root(dataset)
    fpath = folds_file(root, k)
    name = f"{dataset}__{variant}__s{seed}"
    overrides = VARIANTS[variant] if variant != "baseline" else []
    cfg = cell_config(base, root, fpath, k, overrides, seed, name)
    rd = RunDir.of(cfg)
    if rd.path.exists():
        shutil.rmtree(rd.path)
    labels = read_labels(root / "train.csv")
    y_all = pd.DataFrame(label_matrix(labels), index=labels["Id"])
    test = read_labels(root / "test_labels.csv")
    test_y = label_matrix(test)
    t0 = time.perf_counter()
    row = dict(dataset=dataset, variant=variant, seed=seed, k=k, folds=" ".join(map(str, train_folds)),
               true_lpi=float(test_y.sum(1).mean()))
    if variant == "baseline":
        from hpa.baseline import run_baseline
        run_baseline(cfg, folds=train_folds)
        ids, _, val_p = rd.read_oof()
        val_y = y_all.loc[ids].to_numpy()
        tp = rd.read_test_probs().set_index("Id").loc[test["Id"]][PROB_COLUMNS].to_numpy()
        row.update(val_f1_best=macro_f1(val_y, val_p > 0.5), val_f1_last=macro_f1(val_y, val_p > 0.5),
                   best_epoch=0, minloss_epoch=0, test_f1_best=macro_f1(test_y, tp > 0.5),
                   test_f1_last=macro_f1(test_y, tp > 0.5), test_f1_tuned=tuned_test_f1(val_p, val_y, tp, test_y),
                   val_lpi=float((val_p > 0.5).sum(1).mean()), test_lpi=float((tp > 0.5).sum(1).mean()))
    else:
        from hpa.training import run
        run(cfg, folds=train_folds)
        ids, _, val_p = rd.read_oof()
        val_y = y_all.loc[ids].to_numpy()
        hist = [rd.fold(f).read_history() for f in train_folds]
        last = float(np.mean([h["val_f1"].iat[-1] for h in hist]))
        _, tp_best = test_probs(cfg, train_folds, "best")
        _, tp_last = test_probs(cfg, train_folds, "last")
        row.update(val_f1_best=macro_f1(val_y, val_p > 0.5), val_f1_last=last,
                   best_epoch=float(np.mean([rd.fold(f).read_summary()["best_epoch"] for f in train_folds])),
                   minloss_epoch=float(np.mean([h["epoch"].iat[int(h["val_loss"].argmin())] for h in hist])),
                   test_f1_best=macro_f1(test_y, tp_best > 0.5), test_f1_last=macro_f1(test_y, tp_last > 0.5),
                   test_f1_tuned=tuned_test_f1(val_p, val_y, tp_best, test_y),
                   val_lpi=float((val_p > 0.5).sum(1).mean()), test_lpi=float((tp_best > 0.5).sum(1).mean()))
    row["seconds"] = time.perf_counter() - t0
    return row


def plot(csv: Path, png: Path) -> None:
    """Test macro F1 (best checkpoint, threshold 0.5) by variant, one marker per dataset (mean of seeds)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(csv)
    g = df.groupby(["variant", "dataset"])[["test_f1_best", "test_lpi"]].mean().reset_index()
    order = g.groupby("variant")["test_f1_best"].mean().sort_values().index.tolist()
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(order) + 2), sharey=True)
    for ds, part in g.groupby("dataset"):
        yy = [order.index(v) for v in part["variant"]]
        axes[0].scatter(part["test_f1_best"], yy, label=ds)
        axes[1].scatter(part["test_lpi"], yy, label=ds)
    axes[0].set_yticks(range(len(order)), order)
    axes[0].set_xlabel("test macro F1 at 0.5 (best checkpoint)")
    axes[1].set_xlabel("predicted labels per test image at 0.5")
    truth = df.groupby("dataset")["true_lpi"].first().mean()
    axes[1].axvline(truth, color="k", ls="--", lw=1, label=f"true ({truth:.2f})")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"recipe study ({csv.name}; mean over seeds)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def summary_table(csv: Path) -> str:
    """A markdown table: per dataset and variant, mean +- std over seeds of the recorded numbers."""
    df = pd.read_csv(csv)
    cols = ["val_f1_best", "val_f1_last", "test_f1_best", "test_f1_last", "test_f1_tuned", "test_lpi",
            "best_epoch", "seconds"]
    lines = ["| dataset | variant | seeds | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for (ds, v), part in df.groupby(["dataset", "variant"], sort=False):
        cells = []
        for c in cols:
            m, sd = part[c].mean(), part[c].std(ddof=1) if len(part) > 1 else 0.0
            fmt = "{:.0f}" if c == "seconds" else "{:.1f}" if c in ("best_epoch", "test_lpi") else "{:.3f}"
            cells.append(fmt.format(m) + (f" ± {fmt.format(sd)}" if len(part) > 1 else ""))
        lines.append(f"| {ds} | {v} | {len(part)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml", help="base experiment config")
    p.add_argument("--datasets", nargs="+", default=["demo"])
    p.add_argument("--variants", nargs="+", default=["old"], help=f"of {', '.join(VARIANTS)}, baseline, a+b")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--k", type=int, default=3, help="folds in the split (default 3)")
    p.add_argument("--train-folds", type=int, nargs="+", default=[0], help="folds to train (default 0)")
    p.add_argument("--out", default="benchmarks/recipe_study.csv")
    p.add_argument("--plot", action="store_true", help="draw <out>.png and the table <out>.md from the CSV at the end")
    args = p.parse_args(argv)
    out = Path(args.out)
    for v in args.variants:               # a+b: both variants' overrides
        if "+" in v and v not in VARIANTS:
            VARIANTS[v] = combo(*v.split("+"))
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame()
    fold_key = " ".join(map(str, args.train_folds))
    for ds in args.datasets:
        for v in args.variants:
            for s in args.seeds:
                if len(done) and ((done["dataset"] == ds) & (done["variant"] == v) & (done["seed"] == s)
                                  & (done["k"] == args.k) & (done["folds"].astype(str) == fold_key)).any():
                    continue
                row = run_cell(args.config, ds, v, s, args.k, args.train_folds)
                print("CELL", row, flush=True)
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                write_csv(out, done)
    if args.plot and out.is_file():
        plot(out, out.with_suffix(".png"))
        out.with_suffix(".md").write_text(summary_table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
