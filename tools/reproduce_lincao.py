"""Lin & Cao end to end: simplified DDPM -> 384 images per class -> ResNet18 baseline, Mix Loss and Mix
Representation, on their 90/10 split and on our 5-fold split; prints their table with our figures beside.

    python tools/reproduce_lincao.py --scale demo     # `make reproduce-lincao`: demo data, CPU
    python tools/reproduce_lincao.py --scale real     # `make reproduce-lincao LINCAO_SCALE=real`: GPU

``demo``: ``input/demo`` (``hpa demo-data``), generator at 32 px for 30 epochs (their epochs, on the demo's
~720 / ~640 images), 24 images per class, sampled with DDIM 25; classifiers at 32 px for 8 epochs
(MixModels: at most 8, plateau + early stopping as theirs). ``real``: ``input/hpa`` (``hpa download``), the
real configs unchanged: ``configs/synth/ddpm_simple_lincao.yaml`` (384 per class, DDPM 1000 steps) and
``configs/lincao_resnet18_{bce,mix_loss,mix_representation}.yaml``.

Splits: ``90/10`` is fold 0 of a 10-fold file (``<root>/folds10.csv``: its 10% is the validation, as in
the paper); ``5-fold`` is every fold of ``<root>/folds.csv``. Each held-out fold gets its own generator,
trained without it, so no synthetic image carries information from the images it is scored on
(``hpa.synthetic.mixing`` refuses the others). Everything resumes: trained generators, generated images and
finished folds are reused. Results: ``runs/lincao[_real]/table.md`` and ``table.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# paper Tables 1 and 4 (ResNet18): validation (their 90/10), Kaggle public, Kaggle private
PAPER = {"none": ("BCE baseline", 0.6383, 0.45702, 0.43363),
         "mix_loss": ("Mix Loss", 0.2451, 0.01924, 0.01955),
         "mix_representation": ("Mix Representation", 0.3250, 0.01924, 0.01955)}
CLASSIFIERS = {"none": "configs/lincao_resnet18_bce.yaml",
               "mix_loss": "configs/lincao_resnet18_mix_loss.yaml",
               "mix_representation": "configs/lincao_resnet18_mix_representation.yaml"}
GENERATOR = "configs/synth/ddpm_simple_lincao.yaml"
SCALES = {
    "demo": {"root": "input/demo", "out": "runs/lincao", "per_class": 24,
             "gen_sets": ["data.image_size=32", "train.log_every=50"], "gen_opts": {"sampler": "ddim", "steps": 25},
             "cls_sets": ["data.image_size=32", "model.pretrained=false", "train.epochs=8", "train.amp='no'",
                          "train.channels_last=false", "train.num_workers=0", "train.batch_size=64"],
             "test_labels": "test_labels.csv"},
    "real": {"root": "input/hpa", "out": "runs/lincao_real", "per_class": 384, "gen_sets": [], "gen_opts": {},
             "cls_sets": [], "test_labels": ""},
}
SPLITS = {"90/10": ("folds10.csv", 10, [0]), "5-fold": ("folds.csv", 5, [0, 1, 2, 3, 4])}


def ensure_folds(root: Path, name: str, k: int) -> Path:
    """``root/name``: a k-fold multilabel-stratified split of ``root/train.csv`` (made once, seed 42)."""
    from hpa.data.folds import make_folds, write_folds
    from hpa.data.labels import read_labels
    path = root / name
    if not path.is_file():
        write_folds(path, make_folds(read_labels(root / "train.csv"), k, 42))
    return path


def synthetic_images(sc: dict, split: str, folds_file: Path, fold: int) -> Path:
    """Train (or reuse) the held-out-``fold`` generator of ``split`` and make its per-class images."""
    from hpa.synthetic.config import load_synth_config
    from hpa.synthetic.generate import generate
    from hpa.synthetic.modes import ModeOptions
    from hpa.synthetic.protocol import load_generator, train_generator
    from hpa.synthetic.quota import Quota
    tag = "9010" if split == "90/10" else "kfold"
    cfg = load_synth_config(ROOT / GENERATOR, [f"name=lincao_{tag}", f"data.root={sc['root']}",
                                               f"data.folds={folds_file}", f"models_dir={sc['out']}/generators"]
                            + sc["gen_sets"])
    if sc["root"] == "input/demo":
        # their 30 epochs at batch 64, on the demo's training images
        from hpa.data.folds import read_folds
        n_train = int((read_folds(folds_file) != fold).sum())
        cfg.train.steps = round(30 * n_train / cfg.train.batch_size)
    model_dir = cfg.model_dir(str(fold))
    if not (model_dir / "generator.json").is_file():
        train_generator(cfg, str(fold))
    gen = load_generator(model_dir)
    d = cfg.generate
    opts = ModeOptions(mode="noise", sampler=sc["gen_opts"].get("sampler", d.sampler),
                       steps=sc["gen_opts"].get("steps", d.steps), guidance=d.guidance)
    out = Path(f"input/synth/lincao_{tag}{'_real' if sc['root'] != 'input/demo' else ''}_fold{fold}")
    generate(cfg, gen, opts, 0, d.seed, out, d.batch_size, quota=Quota("per_class", sc["per_class"]))
    return out / "manifest.csv"


def classifier(sc: dict, method: str, split: str, folds_file: Path, k: int, folds: list[int],
               manifests: list[str]) -> dict:
    """Train (resuming) one classifier run; return its OOF macro F1 and, with test labels, test F1."""
    from hpa.ablation.grid import test_score
    from hpa.config import load_config
    from hpa.training.run import run
    tag = "9010" if split == "90/10" else "kfold"
    sets = [f"name=lincao_{tag}_{method}", f"runs_dir={sc['out']}", f"data.root={sc['root']}",
            f"folds.file={folds_file}", f"folds.n_splits={k}"]
    sets += sc["cls_sets"] + ([f"synthetic.manifests=[{','.join(manifests)}]"] if method != "none" else [])
    cfg = load_config(ROOT / CLASSIFIERS[method], sets)
    metrics = run(cfg, folds, resume=True)
    labels = Path(sc["root"]) / sc["test_labels"] if sc["test_labels"] else None
    test = test_score(cfg, labels, folds) if labels and labels.is_file() else None
    return {"oof_macro_f1": metrics["oof_macro_f1"], "test_macro_f1": test, "run": str(cfg.run_dir),
            "epochs": {f: (s["epochs"], s["stopped"]) for f, s in metrics["folds"].items()}}


def table(results: dict, scale: str) -> str:
    """Their Table 1/4 layout (ResNet18 rows), the paper's figures beside ours."""
    test = "demo test" if scale == "demo" else "Kaggle (submit)"
    lines = [f"| Model | Mix Method | paper: Validation | paper: Public | paper: Private | ours: 90/10 validation "
             f"| ours: 5-fold OOF | ours: {test}, 90/10 model | ours: {test}, 5-fold models |", "|" + "---|" * 9]
    for m, (name, val, pub, priv) in PAPER.items():
        a, b = results["90/10"][m], results["5-fold"][m]
        f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| ResNet18 | {name} | {val:.4f} | {pub:.5f} | {priv:.5f} | {f(a['oof_macro_f1'])} | "
                     f"{f(b['oof_macro_f1'])} | {f(a['test_macro_f1'])} | {f(b['test_macro_f1'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from hpa.errors import HPAError
    from hpa.io import write_json, write_text
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=list(SCALES), default="demo")
    a = p.parse_args(argv)
    sc, t0 = SCALES[a.scale], time.time()
    try:
        root = Path(sc["root"])
        if not (root / "train.csv").is_file():
            raise HPAError(f"{root / 'train.csv'}: missing ({'hpa demo-data --out input/demo' if a.scale == 'demo' else 'hpa download'} first)")
        results: dict = {}
        for split, (name, k, folds) in SPLITS.items():
            folds_file = ensure_folds(root, name, k)
            manifests = [str(synthetic_images(sc, split, folds_file, f)) for f in folds]
            results[split] = {m: classifier(sc, m, split, folds_file, k, folds, manifests) for m in PAPER}
    except HPAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = table(results, a.scale)
    secs = time.time() - t0
    note = (f"Lin & Cao reproduction, {a.scale} scale, {secs:.0f} s. Macro F1 at 0.5. Paper: ResNet18, real "
            "data, their 90/10 split, Kaggle public/private leaderboard.\n\n")
    write_text(Path(sc["out"]) / "table.md", note + md)
    write_json(Path(sc["out"]) / "table.json", {"scale": a.scale, "seconds": round(secs), "results": results})
    print(note + md, end="")
    if a.scale == "real":
        print("Kaggle scores: python infer.py --config runs/lincao_real/<run>/config.yaml --out "
              "submissions/<run>.csv, then hpa submit submissions/<run>.csv -m lincao")
    print(f"reproduce-lincao ({a.scale}): {secs:.0f}s -> {sc['out']}/table.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
