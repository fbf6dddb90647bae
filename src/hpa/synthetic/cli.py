"""``hpa synth train|generate|filter|report``: thin command line over ``hpa.synthetic``.

Examples (demo data)::

    hpa synth train --config configs/synth/ddpm_demo.yaml --fold 0
    hpa synth generate --config configs/synth/ddpm_demo.yaml --fold 0 --mode noise --n 200
    hpa synth filter --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo --drop 0.2
    hpa synth report --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo
    hpa synth tiny-sd --out models/tiny-sd     # offline stand-in for model.pretrained (sd_lora)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hpa.cli_args import add_run
from hpa.devices import resolve_device
from hpa.errors import HPAError
from hpa.rundir import run_folder
from hpa.synthetic.config import load_synth_config
from hpa.synthetic.filter import filter_manifest
from hpa.synthetic.generate import generate
from hpa.synthetic.modes import MODES, ModeOptions
from hpa.synthetic.protocol import load_generator, train_generator
from hpa.synthetic.quota import Quota
from hpa.synthetic.report import synth_report
from hpa.synthetic.tiny_sd import make_tiny_sd
from hpa.threads import set_threads


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the four sub-commands and their options."""
    sub = p.add_subparsers(dest="action", required=True, metavar="{train,generate,filter,report,tiny-sd}")
    t = sub.add_parser("train", help="train a generator on one fold's training images (or all)")
    _common(t)
    t.add_argument("--out", default="", help="model folder (default <models_dir>/<name>/fold<k>)")

    g = sub.add_parser("generate", help="generate synthetic images + manifest.csv")
    _common(g)
    g.add_argument("--model", default="", help="trained generator folder (default from --config/--fold)")
    g.add_argument("--mode", default=None, choices=list(MODES), metavar="MODE",
                   help=f"{' | '.join(MODES)} (default: the generator's first mode; docs/synth.md)")
    g.add_argument("--n", type=int, default=None, help="number of images (default 16)")
    g.add_argument("--balance-to", type=int, default=None, metavar="N",
                   help="instead of --n: images for the rarest classes first, from real label sets containing "
                        "them, until every class has N real-plus-synthetic training images (docs/synth.md)")
    g.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="instead of --n: N images per class, label sets from real ones containing it (Lin & Cao)")
    g.add_argument("--strength", type=float, default=None, help="sdedit/mix noise strength in (0, 1]")
    g.add_argument("--steps", type=int, default=None, help="sampler steps")
    g.add_argument("--sampler", default=None, help="ddpm | ddim | dpmpp | lcm")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--seed", type=int, default=None, help="seed of the first image (image i: seed+i)")
    g.add_argument("--alpha", type=float, default=None, help="interp: slerp position")
    g.add_argument("--relabel", action="store_true", help="invert: regenerate under another label set")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
    g.add_argument("--out", default="", help="output folder (default input/synth/<name>)")

    f = sub.add_parser("filter", help="score images with a real-data classifier; drop the lowest share")
    f.add_argument("--manifest", required=True)
    add_run(f, config_help="the classifier's experiment YAML (its run folder: config.yaml, fold<k>/best.pt)")
    f.add_argument("--fold", type=int, default=0, help="which fold's checkpoint scores the images")
    f.add_argument("--drop", type=float, default=0.2, help="share of lowest-scoring images to drop")

    r = sub.add_parser("report", help="label agreement, memorisation histogram, real-vs-synthetic grid")
    r.add_argument("--manifest", required=True)
    add_run(r, config_help="the classifier's experiment YAML")
    r.add_argument("--fold", type=int, default=0)
    r.add_argument("--real", default="", help="real dataset root (default: the run's data.root)")
    r.add_argument("--out", default="", help="report folder (default <manifest folder>/report)")
    r.add_argument("--min-class-images", type=int, default=10,
                   help="per-class FID/KID/precision/recall only for classes with this many images in each "
                        "half of their real reference images and in the synthetic set")
    r.add_argument("--repeats", type=int, default=5, help="random halves of the real reference averaged")
    r.add_argument("--k", type=int, default=3, help="neighbourhood size of precision/recall")
    r.add_argument("--inception", default="",
                   help="local torchvision inception_v3 state dict: adds the classic RGB FID (never downloaded)")

    s = sub.add_parser("tiny-sd", help="write a tiny random Stable Diffusion folder (offline stand-in)")
    s.add_argument("--out", required=True)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="generator config (configs/synth/*.yaml)")
    p.add_argument("--fold", default="all", help="fold held out from the generator's training, or 'all'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")


def main(args: argparse.Namespace) -> int:
    """Run the chosen sub-command; returns the exit status."""
    config = getattr(args, "config", None)
    print(set_threads(load_synth_config(config, args.set).train.threads if config else 0, 0,
                      f"synth {args.action}"))
    return {"train": _train, "generate": _generate, "filter": _filter, "report": _report,
            "tiny-sd": _tiny_sd}[args.action](args)


def _train(args) -> int:
    cfg = load_synth_config(args.config, args.set)
    train_generator(cfg, args.fold, args.out or None)
    return 0


def _generate(args) -> int:
    checked = resolve_device(args.device) if args.device else ""
    cfg = load_synth_config(args.config, args.set)
    d = cfg.generate
    quota = _quota(args)
    n = 16 if args.n is None else args.n
    if n < 1:
        raise HPAError(f"--n: {n} must be at least 1")
    from accelerate import PartialState
    device = checked or str(PartialState().device)     # cuda:<local rank> under accelerate launch
    model_dir = Path(args.model) if args.model else cfg.model_dir(str(args.fold))
    gen = load_generator(model_dir, device)
    opts = ModeOptions(mode=args.mode or gen.modes[0], sampler=args.sampler or d.sampler, steps=args.steps or d.steps,
                       guidance=d.guidance if args.guidance is None else args.guidance,
                       strength=d.strength if args.strength is None else args.strength,
                       interp_alpha=d.interp_alpha if args.alpha is None else args.alpha)
    out = Path(args.out) if args.out else Path("input/synth") / cfg.name
    generate(cfg, gen, opts, n, d.seed if args.seed is None else args.seed, out,
             args.batch_size or d.batch_size, relabel=args.relabel, quota=quota)
    return 0


def _quota(args):
    """The ``Quota`` of ``--balance-to`` / ``--per-class`` (None without either); HPAError on a clash."""
    given = [(r, v) for r, v in (("balance_to", args.balance_to), ("per_class", args.per_class)) if v is not None]
    if len(given) > 1 or (given and args.n is not None):
        raise HPAError("--n, --balance-to and --per-class: give at most one (a quota sets the number of images)")
    return Quota(*given[0]) if given else None


def _filter(args) -> int:
    filter_manifest(args.manifest, run_folder(args.run, args.config), args.fold, args.drop)
    return 0


def _report(args) -> int:
    if args.min_class_images < 2 or args.repeats < 1 or args.k < 1:
        raise HPAError("--min-class-images must be >= 2, --repeats and --k >= 1")
    synth_report(args.manifest, run_folder(args.run, args.config), args.fold, args.real or None,
                 args.out or None, args.min_class_images, args.repeats, args.k, args.inception or None)
    return 0


def _tiny_sd(args) -> int:
    print(f"wrote tiny Stable Diffusion to {make_tiny_sd(args.out)}")
    return 0
