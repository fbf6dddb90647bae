"""``hpa synth report``: is the synthetic data label-consistent, and is it copied from training images?

* label agreement: macro F1 (over the classes the manifest intends) of a real-data classifier on the
  synthetic images against their intended labels, next to a shuffled-label control (the same
  predictions against a random permutation of the intended labels) and, as the reference, the same
  score on the real images of the classifier's held-out fold (when the run's folds file exists);
* memorisation (Phen-LDiff's test): for each synthetic image, the cosine similarity of its classifier
  features to its nearest real training image, as a histogram;
* a PNG grid of real vs synthetic images per class.
Writes ``report.json``, ``memorization.png`` and ``grid.png`` into the report folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.config import load_config
from hpa.data.images import read_kaggle_rgby, to_rgb
from hpa.data.labels import label_matrix, read_labels
from hpa.io import write_json
from hpa.synth.filter import load_classifier, predict_folder
from hpa.synth.manifest import read_manifest
from hpa.reports import save_figure


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
    f1 = f1_score(y[:, classes], pred[:, classes], average="macro", zero_division=0)
    ctrl = f1_score(shuffled[:, classes], pred[:, classes], average="macro", zero_division=0)
    return {"macro_f1": float(f1), "shuffled_control_f1": float(ctrl), "n_classes": int(len(classes))}


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
            "n_real_heldout": len(held)}


def _plot_grid(man: pd.DataFrame, syn_dir: Path, real: pd.DataFrame, real_dir: Path, path: Path,
               per_class: int = 3, max_classes: int = 12) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes = [k for k in range(NUM_CLASSES) if any(k in ls for ls in man["labels"])][:max_classes]
    fig, axes = plt.subplots(len(classes), 2 * per_class, figsize=(2 * per_class * 1.3, len(classes) * 1.4),
                             squeeze=False)
    for r, k in enumerate(classes):
        reals = real["Id"][[k in ls for ls in real["labels"]]].tolist()[:per_class]
        syns = man["Id"][[k in ls for ls in man["labels"]]].tolist()[:per_class]
        cells = [(real_dir, i, "real") for i in reals] + [None] * (per_class - len(reals))
        cells += [(syn_dir, i, "synthetic") for i in syns] + [None] * (per_class - len(syns))
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            if cell:
                ax.imshow(to_rgb(read_kaggle_rgby(cell[0], cell[1], 64)))
                if r == 0:
                    ax.set_title(cell[2], fontsize=7)
        axes[r, 0].text(-5, 32, f"{k} {CLASS_NAMES[k]}", fontsize=6, ha="right", va="center")
    fig.suptitle("Real (left) vs synthetic (right) per class")
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def synth_report(manifest: str | Path, run_dir: str | Path, fold: int = 0, real_root: str | Path | None = None,
                 out: str | Path | None = None) -> dict:
    """Score a manifest's images with the run's classifier and write the report folder; return the numbers."""
    manifest = Path(manifest)
    man = read_manifest(manifest)
    run_cfg = load_config(Path(run_dir) / "config.yaml")
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
    write_json(out / "report.json", result)
    ref = (f", real held-out fold {fold}: {result['real_heldout_f1']:.3f}" if "real_heldout_f1" in result
           else ", no folds file: no real reference")
    print(f"synth report: {len(man)} images, label agreement macro F1 {result['macro_f1']:.3f} "
          f"(shuffled-label control {result['shuffled_control_f1']:.3f}{ref}), nearest-real cosine mean "
          f"{sims.mean():.3f} max {sims.max():.3f} -> {out}")
    return result
