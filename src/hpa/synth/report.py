"""``hpa synth report``: is the synthetic data label-consistent, and is it copied from training images?

* label agreement: macro F1 (over the classes the manifest intends) of a real-data classifier on the
  synthetic images against their intended labels, next to a shuffled-label control (the same
  predictions against a random permutation of the intended labels) and, as the reference, the same
  score on the real images of the classifier's held-out fold (when the run's folds file exists);
* memorisation (Phen-LDiff's test): for each synthetic image, the cosine similarity of its classifier
  features to its nearest real training image, as a histogram;
* per-class agreement (F1 per intended class, next to the real held-out images' per-class F1);
* a PNG grid of real vs synthetic images for every class the manifest carries.
Writes ``report.json``, ``memorization.png``, ``per_class_agreement.png`` and ``grid.png`` into the
report folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.rundir import RunDir
from hpa.data.images import read_kaggle_rgby, to_rgb
from hpa.data.labels import label_matrix, read_labels
from hpa.io import write_json
from hpa.synth.filter import load_classifier, predict_folder
from hpa.synth.manifest import read_manifest
from hpa.reports import class_ticks, new_figure, save_figure


def label_agreement(probs: np.ndarray, labels: list[list[int]], seed: int = 0) -> dict:
    """Macro F1 of thresholded ``probs`` (0.5, argmax when none passes) vs ``labels``, and a control."""
    from sklearn.metrics import f1_score
    pred = (probs >= 0.5).astype(np.uint8)
    pred[np.arange(len(pred)), probs.argmax(1)] = 1
    y = np.zeros_like(pred)
    for i, ls in enumerate(labels):
        y[i, ls] = 1
    classes = np.flatnonzero(y.sum(0))
    shuffled = y[np.random.default_rng(seed).permutation(len(y))]
    per_class = f1_score(y[:, classes], pred[:, classes], average=None, zero_division=0)
    ctrl = f1_score(shuffled[:, classes], pred[:, classes], average="macro", zero_division=0)
    f1_of = dict(zip(classes.tolist(), per_class.tolist()))
    return {"macro_f1": float(per_class.mean()), "shuffled_control_f1": float(ctrl),
            "n_classes": int(len(classes)),
            # None where no image carries the class (it is left out of the macro average)
            "per_class_f1": [f1_of.get(k) for k in range(NUM_CLASSES)]}


def nearest_cosine(syn_feats: np.ndarray, real_feats: np.ndarray) -> np.ndarray:
    """For each synthetic feature vector, the cosine similarity to its nearest real one."""
    a = syn_feats / np.linalg.norm(syn_feats, axis=1, keepdims=True).clip(1e-8)
    b = real_feats / np.linalg.norm(real_feats, axis=1, keepdims=True).clip(1e-8)
    return (a @ b.T).max(1)


def _plot_hist(sims: np.ndarray, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(sims, bins=30, range=(min(0.0, float(sims.min())), 1.0), color="tab:green")
    ax.set(title="Memorisation check: nearest real image per synthetic image",
           xlabel="cosine similarity of classifier features", ylabel="synthetic images")
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def heldout_reference(model, size: int, run_cfg, real: pd.DataFrame, real_dir: Path, fold: int) -> dict:
    """Label agreement of the classifier on the real images of its own held-out ``fold`` (the
    reference a synthetic set is compared with); {} when the run's folds file does not exist."""
    from hpa.data.folds import folds_path, read_folds
    path = folds_path(run_cfg)
    if not path.is_file():
        return {}
    held = real[real["Id"].map(read_folds(path)).eq(fold)]
    if held.empty:
        return {}
    res = label_agreement(predict_folder(model, real_dir, list(held["Id"]), size), list(held["labels"]))
    return {"real_heldout_f1": res["macro_f1"], "real_heldout_control_f1": res["shuffled_control_f1"],
            "n_real_heldout": len(held), "real_heldout_per_class_f1": res["per_class_f1"]}


def _plot_per_class(result: dict, path: Path) -> None:
    """Per-class label agreement of the synthetic images, next to the real held-out images' F1."""
    x = np.arange(NUM_CLASSES)
    fig, ax = new_figure(12, 4)
    syn = [np.nan if v is None else v for v in result["per_class_f1"]]
    ax.bar(x - 0.2, syn, 0.4, label=f"synthetic (macro {result['macro_f1']:.3f})", color="tab:green")
    if "real_heldout_per_class_f1" in result:
        real = [np.nan if v is None else v for v in result["real_heldout_per_class_f1"]]
        ax.bar(x + 0.2, real, 0.4, label=f"real held-out (macro {result['real_heldout_f1']:.3f})",
               color="tab:gray")
    ax.axhline(result["shuffled_control_f1"], color="tab:red", ls="--", lw=1,
               label=f"synthetic, shuffled-label control {result['shuffled_control_f1']:.3f}")
    class_ticks(ax)
    ax.set(ylabel="F1 of the real-data classifier", ylim=(0, 1), title="Label agreement per class")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=100)


def _plot_grid(man: pd.DataFrame, syn_dir: Path, real: pd.DataFrame, real_dir: Path, path: Path,
               per_class: int = 3, blocks: int = 2) -> None:
    """Every class the manifest carries: ``per_class`` real then ``per_class`` synthetic images,
    the classes laid out in ``blocks`` side-by-side blocks so 28 rows fit on one page."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes = [k for k in range(NUM_CLASSES) if any(k in ls for ls in man["labels"])]
    rows, width = -(-len(classes) // blocks), 2 * per_class + 1      # each block: a name column + images
    ratios = ([1.9] + [1.0] * (width - 1)) * blocks
    fig, axes = plt.subplots(rows, blocks * width, figsize=(sum(ratios) * 1.1, rows * 1.15), squeeze=False,
                             gridspec_kw={"width_ratios": ratios})
    for ax in axes.flat:
        ax.axis("off")
    for n, k in enumerate(classes):
        r, c0 = n % rows, (n // rows) * width
        reals = real["Id"][[k in ls for ls in real["labels"]]].tolist()[:per_class]
        syns = man["Id"][[k in ls for ls in man["labels"]]].tolist()[:per_class]
        cells = [(real_dir, i) for i in reals] + [None] * (per_class - len(reals))
        cells += [(syn_dir, i) for i in syns] + [None] * (per_class - len(syns))
        for c, cell in enumerate(cells, start=1):
            if cell:
                axes[r, c0 + c].imshow(to_rgb(read_kaggle_rgby(cell[0], cell[1], 64)))
            if r == 0:
                axes[r, c0 + c].set_title("real" if c <= per_class else "synthetic", fontsize=7)
        axes[r, c0].text(0.95, 0.5, f"{k} {CLASS_NAMES[k]}", fontsize=6, ha="right", va="center",
                         transform=axes[r, c0].transAxes)
    fig.suptitle("Real (left) vs synthetic (right) per class")
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def synth_report(manifest: str | Path, run_dir: str | Path, fold: int = 0, real_root: str | Path | None = None,
                 out: str | Path | None = None) -> dict:
    """Score a manifest's images with the run's classifier and write the report folder; return the numbers."""
    manifest = Path(manifest)
    man = read_manifest(manifest)
    run_cfg = RunDir(run_dir).load_config()
    real_root = Path(real_root or run_cfg.data.root)
    real = read_labels(real_root / run_cfg.data.train_csv)
    out = Path(out) if out else manifest.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    model, size = load_classifier(run_dir, fold)
    syn_dir, real_dir = manifest.parent / "train", real_root / run_cfg.data.train_dir
    probs = predict_folder(model, syn_dir, list(man["Id"]), size)
    result = label_agreement(probs, list(man["labels"]))
    sims = nearest_cosine(predict_folder(model, syn_dir, list(man["Id"]), size, features=True),
                          predict_folder(model, real_dir, list(real["Id"]), size, features=True))
    result.update(heldout_reference(model, size, run_cfg, real, real_dir, fold))
    result.update({"n_images": len(man), "memorization_cosine_mean": float(sims.mean()),
                   "memorization_cosine_max": float(sims.max()),
                   "share_above_0.95": float((sims > 0.95).mean()), "real_positives": label_matrix(real).sum(0).tolist()})
    _plot_hist(sims, out / "memorization.png")
    _plot_grid(man, syn_dir, real, real_dir, out / "grid.png")
    _plot_per_class(result, out / "per_class_agreement.png")
    write_json(out / "report.json", result)
    ref = (f", real held-out fold {fold}: {result['real_heldout_f1']:.3f}" if "real_heldout_f1" in result
           else ", no folds file: no real reference")
    print(f"synth report: {len(man)} images, label agreement macro F1 {result['macro_f1']:.3f} "
          f"(shuffled-label control {result['shuffled_control_f1']:.3f}{ref}), nearest-real cosine mean "
          f"{sims.mean():.3f} max {sims.max():.3f} -> {out}")
    return result
