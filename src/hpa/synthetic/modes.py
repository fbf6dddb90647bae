"""Generation modes: the one list (``MODES``), the per-call options, and how a job is planned.

``MODES`` is the only place a mode is named: the CLI's ``--mode`` choices, the planner, the shared
diffusion loop (``hpa.synthetic.sampling.run_mode``), the generators' ``modes`` and the table in
docs/synth.md (checked by a test) all come from it. A mode is described by what it starts from and
which labels it draws; a generator says which modes it supports (``Generator.modes``).

Light on purpose (no torch): the CLI imports it to build ``--mode``'s choices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpa.synthetic.manifest import ID_PREFIX


@dataclass(frozen=True)
class Mode:
    """One generation mode.

    ``start``: where the sampler starts: ``noise`` (pure noise), ``edit`` (a real image noised to
    ``--strength``, SDEdit), ``inversion`` (a real image DDIM-inverted to its noise) or ``copy``
    (no diffusion: the stand-in's perturbed copies). ``new_labels``: the target is a different label
    set than the source's (soft labels recorded). ``relabel_flag``: ``--relabel`` draws a different
    label set. ``partner``: a second real image of the same label set is used. ``needs_text``: only
    for generators conditioned on text prompts.
    """
    start: str
    help: str
    papers: str = ""
    new_labels: bool = False
    relabel_flag: bool = False
    partner: bool = False
    needs_text: bool = False

    @property
    def uses_sampler(self) -> bool:
        """True when ``--sampler``/``--steps`` choose the scheduler that runs the mode."""
        return self.start in ("noise", "edit")

    @property
    def uses_strength(self) -> bool:
        """True when ``--strength`` applies (SDEdit-like modes)."""
        return self.start == "edit"

    @property
    def diffusion(self) -> bool:
        """True when a diffusion model makes the image (every mode but ``copy`` ones)."""
        return self.start != "copy"


MODES: dict[str, Mode] = {
    "noise": Mode("noise", "class-conditional / text-to-image from pure noise (morph: real R/B/Y, new labels)",
                  "Lin & Cao, DA-Fusion"),
    "sdedit": Mode("edit", "noise a real image to `strength`, denoise under its labels",
                   "Real Guidance, Diff-Aug"),
    "mix": Mode("edit", "SDEdit toward a different label set; soft labels `w_target = strength**mix_gamma` "
                "in `label_weights`", "Diff-Mix", new_labels=True),
    "invert": Mode("inversion", "DDIM inversion (`DDIMInverseScheduler`, eta 0) under the source labels, "
                   "regeneration with DDIM under the same labels (or another with `--relabel`)",
                   "Diff-II, Phen-LDiff", relabel_flag=True),
    "interp": Mode("inversion", "invert two images of one label set, slerp their noises at `--alpha`, regenerate",
                   "Diff-II, Phen-LDiff", partner=True),
    "prompt_mix": Mode("noise", "convex mix, per image, of the text embeddings of two prompt templates of "
                       "the same label set (text-conditioned generators: `sd_lora`)", "MVC", needs_text=True),
    "perturb": Mode("copy", "a perturbed copy of a real training image (dihedral flip, per-stain intensity "
                    "jitter, blur, pixel noise; `standin` only): a cheap stand-in, not a generative model",
                    "none (a control)"),
}
#: modes a diffusion generator runs, and those of one conditioned on labels only (no text)
DIFFUSION_MODES = tuple(n for n, m in MODES.items() if m.diffusion)
LABEL_DIFFUSION_MODES = tuple(n for n in DIFFUSION_MODES if not MODES[n].needs_text)


@dataclass
class ModeOptions:
    """Per-call settings of a generation run."""
    mode: str = "noise"
    sampler: str = "ddim"
    steps: int = 25
    guidance: float = 2.0
    strength: float = 0.6
    interp_alpha: float = 0.5


@dataclass
class Job:
    """One image to make: its seed and Id, the real image it starts from, and its labels.

    ``key`` is extra seed material for a generator whose randomness is not the seed alone (the
    stand-in: ``[seed, fold, source index, copy]``); empty for the diffusion generators."""
    seed: int
    id: str
    labels: list[int]
    source_id: str = ""
    source_labels: list[int] = field(default_factory=list)
    partner_id: str = ""
    weights: dict[int, float] = field(default_factory=dict)
    key: list[int] = field(default_factory=list)


def mix_weights(src: list[int], tgt: list[int], strength: float, gamma: float) -> dict[int, float]:
    """Diff-Mix soft label: target labels weigh ``strength**gamma``, source labels the rest."""
    w_t = float(strength) ** float(gamma)
    out: dict[int, float] = {}
    for k in src:
        out[k] = out.get(k, 0.0) + (1.0 - w_t)
    for k in tgt:
        out[k] = out.get(k, 0.0) + w_t
    return out


def plan_job(rows: pd.DataFrame, mode: str, seed: int, name: str, keeps_source: bool, relabel: bool,
             strength: float, gamma: float) -> Job:
    """Draw one job's source and labels from ``rows`` (the generator's training images) with ``seed``.

    ``keeps_source``: the generator keeps stains of a real image (``Generator.source_stains``), so it
    needs a source even from noise, and its from-noise images take a different label set.
    """
    m = MODES[mode]
    rng = np.random.default_rng(seed)
    src = rows.iloc[int(rng.integers(len(rows)))]
    other = rows.iloc[int(rng.integers(len(rows)))]
    job = Job(seed=seed, id=f"{ID_PREFIX}{name}-{mode}-{seed:06d}", labels=list(src["labels"]))
    from_noise = m.start == "noise"
    if from_noise and not keeps_source:
        return job
    job.source_id, job.source_labels = src["Id"], list(src["labels"])
    if m.new_labels or (from_noise and keeps_source) or (m.relabel_flag and relabel):
        # a different label set: redraw a few times, then accept what we have (tiny datasets)
        for _ in range(20):
            if other["Target"] != src["Target"]:
                break
            other = rows.iloc[int(rng.integers(len(rows)))]
        job.labels = list(other["labels"])
    if m.new_labels:
        job.weights = mix_weights(job.source_labels, job.labels, strength, gamma)
        job.labels = sorted(job.weights)
    if m.partner:
        same = rows[(rows["Target"] == src["Target"]) & (rows["Id"] != src["Id"])]
        if len(same) == 0:
            same = rows[rows["Id"] == src["Id"]]     # a singleton label set interpolates with itself
        job.partner_id = same.iloc[int(rng.integers(len(same)))]["Id"]
    return job
