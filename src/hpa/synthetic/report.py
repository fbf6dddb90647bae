"""``hpa synth report``: is the synthetic data label-consistent, and is it copied from training images?

* label agreement: macro F1 (over the classes the manifest intends) of a real-data classifier on the
  synthetic images against their intended labels, next to a shuffled-label control (the same
  predictions against a random permutation of the intended labels) and, as the reference, the same
  score on the real images of the classifier's held-out fold (when the run's folds file exists);
* memorisation (Phen-LDiff's test): for each synthetic image, the cosine similarity of its classifier
  features to its nearest real training image, as a histogram;
* per-class agreement (F1 per intended class, next to the real held-out images' per-class F1);
* a PNG grid of real vs synthetic images for every class the manifest carries;
* distribution quality (``hpa.synthetic.quality``) on the judge's features: FID, KID, precision and recall
  against the real held-out images, overall and per class, each beside the real-vs-real floor (two
  disjoint halves of the real held-out images) and, per class, a shuffled-label control (the synthetic
  images of class k after shuffling the synthetic label sets); optionally the classic RGB FID on
  Inception features (``--inception FILE``, local weights only).
Writes ``report.json``, ``report.md`` (the verdict table), ``memorization.png``,
``per_class_agreement.png``, ``per_class_quality.png`` and ``grid.png`` into the report folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.classes import CLASS_NAMES, NUM_CLASSES
from hpa.data.folds import folds_path, read_folds
from hpa.rundir import RunDir
from hpa.data.images import read_kaggle_rgby, to_rgb
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.io import check_output_dir, write_json, write_text
from hpa.synthetic import quality
from hpa.synthetic.filter import load_classifier, predict_folder
from hpa.synthetic.manifest import read_manifest
from hpa.synthetic.verdict import markdown
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


def heldout_mask(run_cfg, real: pd.DataFrame, fold: int) -> np.ndarray | None:
    """Which real images are in the judge's held-out ``fold`` (None when the run has no folds file)."""
    path = folds_path(run_cfg)
    if not path.is_file():
        return None
    return real["Id"].map(read_folds(path)).eq(fold).to_numpy()


def heldout_reference(model, size: int, run_cfg, real: pd.DataFrame, real_dir: Path, fold: int) -> dict:
    """Label agreement of the classifier on the real images of its own held-out ``fold`` (the
    reference a synthetic set is compared with); {} when the run's folds file does not exist."""
    mask = heldout_mask(run_cfg, real, fold)
    if mask is None or not mask.any():
        return {}
    held = real[mask]
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


@torch.no_grad()
def inception_features(image_dir: Path, ids: list[str], weights: str | Path, size: int = 299,
                       batch_size: int = 32) -> np.ndarray:
    """Pooled 2048-d features of torchvision's ``inception_v3`` on the RGB composite of RGBY images.

    ``weights``: a local torchvision state dict (e.g. ``inception_v3_google-0cc3c7bd.pth``); nothing is
    downloaded. Its FID is the classic RGB kind, comparable across projects only with the same weights.
    """
    import torchvision
    path = Path(weights)
    if not path.is_file():
        raise HPAError(f"--inception: {path}: file not found (a torchvision inception_v3 state dict)")
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as e:
        raise HPAError(f"--inception: {path}: not a torchvision inception_v3 state dict ({str(e)[:120]})") from None
    net.fc = torch.nn.Identity()
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    for b in range(0, len(ids), batch_size):
        x = np.stack([to_rgb(read_kaggle_rgby(image_dir, i, size)) for i in ids[b:b + batch_size]])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
        out.append(net((x - mean) / std))
    return torch.cat(out).numpy()


def _plot_per_class_quality(per: list[dict | None], path: Path) -> None:
    """FID, KID and recall per scored class: synthetic, real-vs-real floor, shuffled-label control."""
    classes = [c for c, p in enumerate(per) if p]
    fig, axes = new_figure(max(6, 0.6 * len(classes) + 3), 9, nrows=3)
    x = np.arange(len(classes))
    for ax, m in zip(axes[:, 0], ("fid", "kid", "recall")):
        for j, (name, color) in enumerate((("synthetic", "tab:green"), ("floor", "tab:gray"),
                                           ("control", "tab:red"))):
            vals = [per[c][name][m] for c in classes]
            ax.bar(x + (j - 1) * 0.27, [v[0] for v in vals], 0.27, yerr=[v[1] for v in vals], capsize=2,
                   color=color, label={"floor": "real vs real (floor)", "control": "shuffled-label control"}.get(name, name))
        ax.set(ylabel=m.upper() if m != "recall" else "recall")
        class_ticks(ax, classes=classes)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_title("Per-class quality on the judge's features")
    save_figure(fig, path, dpi=100)


def quality_section(real_feats: np.ndarray, real_labels: list[list[int]], syn_feats: np.ndarray,
                    syn_labels: list[list[int]], min_images: int, repeats: int, k: int) -> dict:
    """``quality`` (overall, with the floor), ``per_class_quality`` and ``per_class_summary``."""
    out: dict = {}
    if len(real_feats) // 2 >= 2 and len(syn_feats) >= 2:
        out["quality"] = quality.matched(real_feats, syn_feats, None, repeats, k)
    out["per_class_quality"] = quality.per_class_quality(real_feats, real_labels, syn_feats, syn_labels, min_images,
                                                 repeats, k)
    out["per_class_summary"] = quality.class_summary(out["per_class_quality"])
    out["min_class_images"] = int(min_images)
    return out


def synth_report(manifest: str | Path, run_dir: str | Path, fold: int = 0, real_root: str | Path | None = None,
                 out: str | Path | None = None, min_class_images: int = 10, repeats: int = 5, k: int = 3,
                 inception: str | Path | None = None) -> dict:
    """Score a manifest's images with the run's classifier and write the report folder; return the numbers.

    ``min_class_images``: per-class metrics need this many images in each half of a class's real
    reference images and in its synthetic set; ``repeats``: random halves averaged; ``k``: the
    neighbourhood of precision/recall; ``inception``: a local torchvision inception_v3 state dict for
    the classic RGB FID (synthetic against the real reference images).
    """
    manifest = Path(manifest)
    man = read_manifest(manifest)
    if man.empty:
        raise HPAError(f"{manifest}: no images (only a header); nothing to report")
    run_cfg = RunDir(run_dir).load_config()
    real_root = Path(real_root or run_cfg.data.root)
    real = read_labels(real_root / run_cfg.data.train_csv)
    out = check_output_dir(Path(out) if out else manifest.parent / "report", "--out")
    model, size = load_classifier(run_dir, fold)
    syn_dir, real_dir = manifest.parent / "train", real_root / run_cfg.data.train_dir
    probs = predict_folder(model, syn_dir, list(man["Id"]), size)
    result = label_agreement(probs, list(man["labels"]))
    syn_feats = predict_folder(model, syn_dir, list(man["Id"]), size, features=True)
    real_feats = predict_folder(model, real_dir, list(real["Id"]), size, features=True)
    held = heldout_mask(run_cfg, real, fold)
    held = held if held is not None and held.any() else None
    # memorisation is measured against the images the judge (and a fold-k generator) trained on
    train_feats = real_feats if held is None else real_feats[~held]
    sims = nearest_cosine(syn_feats, train_feats)
    result.update(heldout_reference(model, size, run_cfg, real, real_dir, fold))
    ref_feats, ref_labels = (real_feats, list(real["labels"])) if held is None else \
        (real_feats[held], list(real["labels"][held]))
    result["judge"] = f"{run_dir} fold {fold} ({run_cfg.model.name} at {size} px, features of dim {syn_feats.shape[1]})"
    result["quality_reference"] = (f"the {int(held.sum())} real images of the judge's held-out fold {fold}"
                                   if held is not None else
                                   f"all {len(real)} real images (no folds file: the judge trained on some)")
    result.update(quality_section(ref_feats, ref_labels, syn_feats, list(man["labels"]), min_class_images,
                                  repeats, k))
    if held is not None:
        ref_sims = nearest_cosine(real_feats[held], train_feats)
        result["real_heldout_memorization"] = {"mean": float(ref_sims.mean()), "max": float(ref_sims.max()),
                                               "share_above_0.95": float((ref_sims > 0.95).mean())}
    if inception:
        ref_ids = list(real["Id"] if held is None else real["Id"][held])
        result["inception_fid"] = quality.fid(inception_features(real_dir, ref_ids, inception),
                                              inception_features(syn_dir, list(man["Id"]), inception))
    result.update({"n_images": len(man), "generators": sorted(set(man["generator"])),
                   "modes": sorted(set(man["mode"])), "memorization_cosine_mean": float(sims.mean()),
                   "memorization_cosine_max": float(sims.max()),
                   "share_above_0.95": float((sims > 0.95).mean()), "real_positives": label_matrix(real).sum(0).tolist()})
    out.mkdir(parents=True, exist_ok=True)         # only now: a failed report leaves no empty folder
    _plot_hist(sims, out / "memorization.png")
    _plot_grid(man, syn_dir, real, real_dir, out / "grid.png")
    _plot_per_class(result, out / "per_class_agreement.png")
    if any(result["per_class_quality"]):
        _plot_per_class_quality(result["per_class_quality"], out / "per_class_quality.png")
    write_json(out / "report.json", result)
    title = f"Synthetic images: {', '.join(result['generators'])} ({', '.join(result['modes'])}), {len(man)} images"
    write_text(out / "report.md", markdown(result, title))
    ref = (f", real held-out fold {fold}: {result['real_heldout_f1']:.3f}" if "real_heldout_f1" in result
           else ", no folds file: no real reference")
    q = result.get("quality")
    fid_s = f", FID {q['synthetic']['fid'][0]:.2f} (floor {q['floor']['fid'][0]:.2f})" if q else ""
    print(f"synth report: {len(man)} images, label agreement macro F1 {result['macro_f1']:.3f} "
          f"(shuffled-label control {result['shuffled_control_f1']:.3f}{ref}){fid_s}, nearest-real cosine mean "
          f"{sims.mean():.3f} max {sims.max():.3f} -> {out}/report.md")
    return result
