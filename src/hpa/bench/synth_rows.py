"""Row 6: batched generation with the same denoiser under DDPM 1000, DDIM 50 and DPM-Solver++ 20 / 10.

Images go through the generator's real path (``hpa.synthetic.ddpm.run_pixel_mode``, classifier-free
guidance, one batch). Without ``--generator`` a randomly initialised ``LabelUNet`` of the shipped
default shape stands in: speed does not depend on the weights, but label agreement does, so it is
measured only when both a trained generator and a trained classifier run are given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hpa.bench.core import ROWS, BenchContext, interleaved, make_row
from hpa.classes import NUM_CLASSES, label_set_table
from hpa.data.images import resize
from hpa.synthetic.data import to_uint8
from hpa.synthetic.filter import load_classifier
from hpa.synthetic.modes import ModeOptions
from hpa.synthetic.protocol import load_generator
from hpa.synthetic.report import label_agreement

#: (name, scheduler in hpa.synthetic.sampling.DIFFUSION_SAMPLERS, steps); the first is the baseline
SAMPLER_RUNS = (("ddpm1000", "ddpm", 1000), ("ddim50", "ddim", 50), ("dpmpp20", "dpmpp", 20),
                ("dpmpp10", "dpmpp", 10))
GOAL = "dpmpp20 >= 40x ddpm1000; agreement within 0.05"


def stand_in_generator(folder: Path, size: int, channels: tuple[int, ...], attention: bool,
                       device: str):
    """Save a random-weight ``LabelUNet`` + the default DDPM schedule as a generator folder; load it."""
    from diffusers import DDPMScheduler

    from hpa.synthetic.denoisers import LabelUNet
    from hpa.synthetic.ddpm import DDPMGenerator

    torch.manual_seed(0)
    LabelUNet(size, 4, 4, channels, 1, attention).save_pretrained(folder / "denoiser")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                  clip_sample=True).save_pretrained(folder / "scheduler")
    return DDPMGenerator(folder, {"generator": "ddpm"}, device)


def real_label_sets(n: int, seed: int) -> np.ndarray:
    """``(n, 28)`` multi-hot label vectors drawn from the real label sets by their train counts."""
    sets, counts = zip(*label_set_table())
    p = np.asarray(counts, dtype=np.float64) / sum(counts)
    pick = np.random.default_rng(seed).choice(len(sets), size=n, p=p)
    y = np.zeros((n, NUM_CLASSES), np.float32)
    for i, k in enumerate(pick):
        y[i, list(sets[k])] = 1
    return y


def generate(gen, labels: np.ndarray, sampler: str, steps: int, seed: int) -> torch.Tensor:
    """One batch from pure noise with ``sampler``/``steps`` (guidance 2); RGBY in [-1, 1]."""
    from hpa.synthetic.ddpm import run_pixel_mode

    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(labels))]
    opts = ModeOptions(mode="noise", sampler=sampler, steps=steps, guidance=2.0)
    return run_pixel_mode(gen, opts, labels, None, None, None, gens)


def agreement(gen, n: int, sampler: str, steps: int, classifier: str, seed: int) -> dict:
    """Label agreement of ``n`` images from ``sampler``: ``{macro_f1, shuffled_control_f1}``.

    Label sets are drawn from the real train distribution; the judge is the classifier run's model of
    the fold the generator held out (fold 0 for a generator trained on all folds), so it never saw the
    generator's training images either. Generated in batches of 32 with one seed per image.
    """
    fold = gen.meta.get("fold")
    model, size = load_classifier(classifier, int(fold) if str(fold).isdigit() else 0)
    labels = real_label_sets(n, seed + 1)
    probs = []
    for b in range(0, n, 32):
        x = generate(gen, labels[b:b + 32], sampler, steps, seed + 1 + b)
        imgs = np.stack([resize(im, size) for im in to_uint8(x)])
        with torch.no_grad():
            probs.append(torch.sigmoid(model(torch.from_numpy(imgs).permute(0, 3, 1, 2).float())).numpy())
    return label_agreement(np.concatenate(probs), [list(np.flatnonzero(r)) for r in labels])


@ROWS.register("generate", order=6)
def row_generate(ctx: BenchContext) -> dict:
    """Row 6: images/s of each sampler (DDPM 1000 timed, or extrapolated in quick mode) and agreement."""
    if ctx.generator:
        gen = load_generator(ctx.generator, ctx.device)
    elif ctx.quick:
        gen = stand_in_generator(ctx.work / "gen", 16, (16, 32), False, ctx.device)
    else:
        gen = stand_in_generator(ctx.work / "gen", 32, (32, 64, 64), True, ctx.device)
    n = ctx.gen_images
    labels = real_label_sets(n, ctx.seed)
    # DDPM runs a ddpm_steps chain in every round, scaled linearly to 1000 steps: each step is one
    # identical UNet call plus a scheduler update (flat cost per step), and the full chain would
    # take minutes per round on a CPU. Interleaving it with the others keeps machine load fair.
    ddpm_steps = ctx.ddpm_steps or 1000
    runs = {name: (s, k) for name, s, k in SAMPLER_RUNS[1:]}
    runs["ddpm"] = ("ddpm", ddpm_steps)
    fns = {name: (lambda s=s, k=k: generate(gen, labels, s, k, ctx.seed).shape[0])
           for name, (s, k) in runs.items()}
    generate(gen, labels, "ddim", 2, ctx.seed)      # warm-up (allocator, lazy imports) of the same path
    rates = interleaved(fns, ctx.repeats, ctx.sync, warmup=0)
    rates["ddpm1000"] = rates.pop("ddpm") * ddpm_steps / 1000
    figures = {name: rates[name] for name, _, _ in SAMPLER_RUNS}
    ratios = {f"{name} / ddpm1000": rates[name] / rates["ddpm1000"] for name, _, _ in SAMPLER_RUNS[1:]}
    speed_ok = ratios["dpmpp20 / ddpm1000"] >= 40
    how = (f"timed as a {ddpm_steps}-step chain per round, scaled to 1000 steps" if ddpm_steps != 1000
           else "timed over all 1000 steps")
    note = f"{n} images of {gen.size}px per batch, guidance 2 (2 UNet passes/step); DDPM {how}; "
    if ctx.generator and ctx.classifier:
        m = ctx.agreement_images
        a_ddpm = agreement(gen, m, "ddpm", 1000, ctx.classifier, ctx.seed)
        a_fast = agreement(gen, m, "dpmpp", 20, ctx.classifier, ctx.seed)
        figures.update({"agreement ddpm1000": a_ddpm["macro_f1"], "agreement dpmpp20": a_fast["macro_f1"],
                        "shuffled control ddpm1000": a_ddpm["shuffled_control_f1"],
                        "shuffled control dpmpp20": a_fast["shuffled_control_f1"]})
        met = bool(speed_ok and abs(a_fast["macro_f1"] - a_ddpm["macro_f1"]) <= 0.05)
        note += (f"label agreement = macro F1 of the classifier run on {m} images per sampler, "
                 "next to its shuffled-label control")
    else:
        # half the goal cannot be checked, so the row claims neither "met" nor "missed"
        met = None
        note += (f"speed part {'met' if speed_ok else 'missed'}; label agreement n/a: random stand-in "
                 "UNet (needs a trained generator and classifier: --generator DIR --classifier RUN)")
    return make_row("generation", "images/s", figures, ratios, GOAL, met, note)
