"""``hpa synth generate``: plan one job per image from its own seed, run batches, write images + manifest.

Image ``i`` of a run with ``--seed s`` has seed ``s + i``; its Id, source image, target labels and
noise all derive from that seed alone, so ``--seed s+i --n 1`` regenerates it byte for byte.
Images already listed in the output manifest are skipped (resume).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm import tqdm

from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import format_target, parse_target, to_multihot
from hpa.errors import HPAError
from hpa.runlock import run_lock
from hpa.synth.config import SynthConfig
from hpa.synth.data import load_images
from hpa.synth.manifest import ID_PREFIX, append_rows, format_label_weights, load_existing
from hpa.synth.modes import ModeOptions

MODES = ("noise", "sdedit", "mix", "invert", "interp", "prompt_mix")


@dataclass
class Job:
    """One image to make: its seed and Id, the real image it starts from, and its labels."""
    seed: int
    id: str
    labels: list[int]
    source_id: str = ""
    source_labels: list[int] = field(default_factory=list)
    partner_id: str = ""
    weights: dict[int, float] = field(default_factory=dict)


def mix_weights(src: list[int], tgt: list[int], strength: float, gamma: float) -> dict[int, float]:
    """Diff-Mix soft label: target labels weigh ``strength**gamma``, source labels the rest."""
    w_t = float(strength) ** float(gamma)
    out: dict[int, float] = {}
    for k in src:
        out[k] = out.get(k, 0.0) + (1.0 - w_t)
    for k in tgt:
        out[k] = out.get(k, 0.0) + w_t
    return out


def fold_tag(fold: str) -> str:
    """Id tag of a generator's held-out fold: ``f<k>``, or ``all`` for one trained on every image."""
    return "all" if str(fold) == "all" else f"f{fold}"


def plan_job(rows: pd.DataFrame, mode: str, seed: int, name: str, kind: str, relabel: bool,
             strength: float, gamma: float) -> Job:
    """Draw one job's source and labels from ``rows`` (the generator's training images) with ``seed``."""
    rng = np.random.default_rng(seed)
    src = rows.iloc[int(rng.integers(len(rows)))]
    other = rows.iloc[int(rng.integers(len(rows)))]
    job = Job(seed=seed, id=f"{ID_PREFIX}{name}-{mode}-{seed:06d}", labels=list(src["labels"]))
    if mode in ("noise", "prompt_mix") and kind != "morph":
        return job
    job.source_id, job.source_labels = src["Id"], list(src["labels"])
    if mode == "mix" or (kind == "morph" and mode == "noise") or (mode == "invert" and relabel):
        # a different label set: redraw a few times, then accept what we have (tiny datasets)
        for _ in range(20):
            if other["Target"] != src["Target"]:
                break
            other = rows.iloc[int(rng.integers(len(rows)))]
        job.labels = list(other["labels"])
    if mode == "mix":
        job.weights = mix_weights(job.source_labels, job.labels, strength, gamma)
        job.labels = sorted(job.weights)
    if mode == "interp":
        same = rows[(rows["Target"] == src["Target"]) & (rows["Id"] != src["Id"])]
        if len(same) == 0:
            same = rows[rows["Id"] == src["Id"]]     # a singleton label set interpolates with itself
        job.partner_id = same.iloc[int(rng.integers(len(same)))]["Id"]
    return job


def output_size(cfg: SynthConfig) -> int:
    """Size generated images are upsampled to: ``data.output_size`` or the real images' size."""
    if cfg.data.output_size:
        return cfg.data.output_size
    first = pd.read_csv(Path(cfg.data.root) / cfg.data.train_csv, dtype=str, nrows=1)["Id"].iat[0]
    return read_kaggle_rgby(Path(cfg.data.root) / cfg.data.train_dir, first).shape[0]


def _finish(img: np.ndarray, job: Job, kind: str, cfg: SynthConfig, size: int) -> np.ndarray:
    """Upsample (bicubic) to the training size; morph keeps the real stains at full resolution."""
    import cv2
    if kind == "morph":
        real = read_kaggle_rgby(Path(cfg.data.root) / cfg.data.train_dir, job.source_id, size).copy()
        real[..., 1] = cv2.resize(img[..., 1], (size, size), interpolation=cv2.INTER_CUBIC)
        return real
    if img.shape[0] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


def generate(cfg: SynthConfig, gen, opts: ModeOptions, n: int, seed: int, out_dir: str | Path,
             batch_size: int = 16, relabel: bool = False) -> pd.DataFrame:
    """Make ``n`` images with the loaded generator ``gen`` into ``out_dir`` (Kaggle layout + manifest).

    Returns the manifest rows written by this call (already-present Ids are skipped). Two
    generations into one folder would race on the manifest, so the folder is locked meanwhile.
    """
    with run_lock(out_dir):
        return _generate(cfg, gen, opts, n, seed, out_dir, batch_size, relabel)


def _generate(cfg: SynthConfig, gen, opts: ModeOptions, n: int, seed: int, out_dir: str | Path,
              batch_size: int, relabel: bool) -> pd.DataFrame:
    if opts.mode not in MODES:
        raise HPAError(f"--mode: unknown mode '{opts.mode}' (valid: {', '.join(MODES)})")
    if opts.mode not in gen.modes:
        raise HPAError(f"mode '{opts.mode}' is not available for {gen.kind} (valid: {', '.join(gen.modes)})")
    if opts.sampler == "lcm":
        if not cfg.model.lcm_weights:
            raise HPAError("--sampler lcm: set model.lcm_weights to an LCM-distilled UNet folder")
        if not hasattr(gen, "use_lcm"):
            raise HPAError(f"--sampler lcm: not available for {gen.kind} (no LCM-distilled model; sd_lora only)")
        gen.use_lcm(cfg.model.lcm_weights)
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    rows = gen.train_rows()
    rows["labels"] = [parse_target(t, f"training row {i}") for i, t in enumerate(rows["Target"])]
    # the fold tag keeps Ids unique across the per-fold generators of one config (one pool mixes them)
    name = f"{cfg.name}-{fold_tag(gen.meta['fold'])}"
    jobs = [plan_job(rows, opts.mode, seed + i, name, gen.kind, relabel, opts.strength,
                     cfg.generate.mix_gamma) for i in range(n)]
    done = set(load_existing(manifest)["Id"])
    jobs = [j for j in jobs if j.id not in done]
    size, t0, written = output_size(cfg), time.time(), []
    by_id = rows.set_index("Id")
    # several processes (accelerate launch): each makes its share of a chunk, the main one writes
    state = PartialState()
    world, chunk_size = state.num_processes, batch_size * state.num_processes
    by_job = {j.id: j for j in jobs}
    for b in tqdm(range(0, len(jobs), chunk_size), desc=f"synth generate {opts.mode}",
                  disable=not state.is_main_process):
        mine = jobs[b:b + chunk_size][state.process_index::world]
        imgs = gen.generate_batch(opts, mine, lambda ids: _load(cfg, by_id, ids, gen.size)) if mine else []
        pairs = list(zip([j.id for j in mine], imgs))
        if world > 1:
            pairs = gather_object(pairs)
        if not state.is_main_process:
            continue
        out_rows = []
        for job_id, img in pairs:
            job = by_job[job_id]
            write_kaggle_rgby(out_dir / "train", job.id, _finish(img, job, gen.kind, cfg, size))
            out_rows.append(_row(job, gen, opts))
        append_rows(manifest, out_rows)       # after the PNGs: the manifest never lists a missing image
        written += out_rows
    state.wait_for_everyone()
    print(f"synth generate: {len(written)} new images ({n - len(jobs)} already present), mode {opts.mode}, "
          f"{opts.sampler} {opts.steps} steps, {time.time() - t0:.0f}s -> {out_dir}")
    return pd.DataFrame(written)


def _load(cfg: SynthConfig, by_id: pd.DataFrame, ids: list[str], size: int) -> np.ndarray:
    sub = by_id.loc[ids].reset_index()
    return load_images(cfg, sub, size, desc="sources")


def _row(job: Job, gen, opts: ModeOptions) -> dict:
    uses_strength = opts.mode in ("sdedit", "mix")
    return {"Id": job.id, "Target": format_target(job.labels),
            "label_weights": format_label_weights(job.weights), "source_id": job.source_id,
            "generator": gen.kind, "generator_trained_on": gen.meta["generator_trained_on"],
            "mode": opts.mode, "strength": f"{opts.strength if uses_strength else 1.0:g}",
            "steps": str(opts.steps), "guidance": f"{opts.guidance:g}", "seed": str(job.seed),
            "filter_score": "", "sampler": opts.sampler}


def job_arrays(jobs: list[Job]) -> tuple[np.ndarray, np.ndarray]:
    """(target, source) label matrices of a batch as float32 ``(B, 28)``."""
    return (to_multihot([j.labels for j in jobs]).astype(np.float32),
            to_multihot([j.source_labels or j.labels for j in jobs]).astype(np.float32))


def image_generators(jobs: list[Job], device: str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per job, seeded with the job's seed."""
    return [torch.Generator(device).manual_seed(j.seed) for j in jobs]


def read_meta(model_dir: str | Path) -> dict:
    """The ``generator.json`` of a trained generator folder (HPAError when absent)."""
    path = Path(model_dir) / "generator.json"
    if not path.is_file():
        raise HPAError(f"{path}: not a trained generator (run 'hpa synth train' first)")
    return json.loads(path.read_text())
