"""``hpa synth generate``, the stage runner: check the call, plan the jobs, run batches, write images +
manifest. Works with any ``hpa.synthetic.protocol.Generator``; it never asks which one.

Image ``i`` of a run with ``--seed s`` has seed ``s + i``; its Id, source image, target labels and
noise all derive from that seed alone, so ``--seed s+i --n 1`` regenerates it byte for byte (a
generator may plan otherwise: the stand-in copies every training image in turn, see its ``plan``).
Images already listed in the output manifest are skipped (resume). With a ``Quota``
(``--balance-to`` / ``--per-class``, ``hpa.synthetic.quota``) the plan sets the number of images, the
manifest's ``planned_for`` column names the class each image was planned for, and ``plan.json``
records the counts.
"""
from __future__ import annotations

import time
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
from hpa.io import write_json
from hpa.runlock import run_lock
from hpa.synthetic.config import SynthConfig
from hpa.synthetic.data import load_images
from hpa.synthetic.manifest import append_rows, format_label_weights, load_existing
from hpa.synthetic.modes import MODES, Job, ModeOptions
from hpa.synthetic.protocol import Generator
from hpa.synthetic.quota import Quota, plan_quota


def fold_tag(fold: str) -> str:
    """Id tag of a generator's held-out fold: ``f<k>``, or ``all`` for one trained on every image."""
    return "all" if str(fold) == "all" else f"f{fold}"


def output_size(cfg: SynthConfig) -> int:
    """Size generated images are upsampled to: ``data.output_size`` or the real images' size."""
    if cfg.data.output_size:
        return cfg.data.output_size
    first = pd.read_csv(Path(cfg.data.root) / cfg.data.train_csv, dtype=str, nrows=1)["Id"].iat[0]
    return read_kaggle_rgby(Path(cfg.data.root) / cfg.data.train_dir, first).shape[0]


def generate(cfg: SynthConfig, gen: Generator, opts: ModeOptions, n: int, seed: int, out_dir: str | Path,
             batch_size: int = 16, relabel: bool = False, quota: Quota | None = None) -> pd.DataFrame:
    """Make ``n`` images with the loaded generator ``gen`` into ``out_dir`` (Kaggle layout + manifest);
    with ``quota``, as many as it plans (``n`` is ignored).

    Returns the manifest rows written by this call (already-present Ids are skipped). Settings the
    generator cannot run are refused before the folder is touched. Two generations into one folder
    would race on the manifest, so the folder is locked meanwhile.
    """
    gen.check_inputs(opts)
    if opts.sampler == "lcm" and MODES[opts.mode].diffusion:
        if not cfg.model.lcm_weights:
            raise HPAError("--sampler lcm: set model.lcm_weights to an LCM-distilled UNet folder")
        gen.use_lcm(cfg.model.lcm_weights)
    with run_lock(out_dir):
        return _generate(cfg, gen, opts, n, seed, out_dir, batch_size, relabel, quota)


def _generate(cfg: SynthConfig, gen: Generator, opts: ModeOptions, n: int, seed: int, out_dir: str | Path,
              batch_size: int, relabel: bool, quota: Quota | None = None) -> pd.DataFrame:
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    rows = gen.train_rows()
    rows["labels"] = [parse_target(t, f"training row {i}") for i, t in enumerate(rows["Target"])]
    # the fold tag keeps Ids unique across the per-fold generators of one config (one pool mixes them)
    name = f"{cfg.name}-{fold_tag(gen.meta['fold'])}"
    planned_for: dict[str, int] = {}
    if quota is None:
        jobs = gen.plan(rows, opts, n, seed, name, relabel, cfg.generate.mix_gamma)
    else:
        jobs, planned_for, record = plan_quota(gen, rows, opts, quota, seed, name, relabel, cfg.generate.mix_gamma)
        n = len(jobs)
    done = set(load_existing(manifest)["Id"])
    jobs = [j for j in jobs if j.id not in done]
    size, t0, written = output_size(cfg), time.time(), []
    by_id = rows.set_index("Id")
    real_dir = Path(cfg.data.root) / cfg.data.train_dir
    read_source = lambda image_id: read_kaggle_rgby(real_dir, image_id, size)  # noqa: E731
    # several processes (accelerate launch): each makes its share of a chunk, the main one writes
    state = PartialState()
    if quota is not None and state.is_main_process:
        write_json(out_dir / "plan.json", record)
    world, chunk_size = state.num_processes, batch_size * state.num_processes
    by_job = {j.id: j for j in jobs}
    for b in tqdm(range(0, len(jobs), chunk_size), desc=f"synth generate {opts.mode}",
                  disable=not state.is_main_process):
        mine = jobs[b:b + chunk_size][state.process_index::world]
        imgs = gen(opts, mine, lambda ids: _load(cfg, by_id, ids, gen.size)) if mine else []
        pairs = list(zip([j.id for j in mine], imgs))
        if world > 1:
            pairs = gather_object(pairs)
        if not state.is_main_process:
            continue
        out_rows = []
        for job_id, img in pairs:
            job = by_job[job_id]
            write_kaggle_rgby(out_dir / "train", job.id, gen.finish(img, job, size, read_source))
            out_rows.append(_row(job, gen, opts) | ({"planned_for": str(planned_for[job.id])} if quota else {}))
        append_rows(manifest, out_rows)       # after the PNGs: the manifest never lists a missing image
        written += out_rows
    state.wait_for_everyone()
    how = f", {opts.sampler} {opts.steps} steps" if MODES[opts.mode].diffusion else ""
    print(f"synth generate: {len(written)} new images ({n - len(jobs)} already present), mode {opts.mode}"
          f"{how}, {time.time() - t0:.0f}s -> {out_dir}")
    return pd.DataFrame(written)


def _load(cfg: SynthConfig, by_id: pd.DataFrame, ids: list[str], size: int) -> np.ndarray:
    sub = by_id.loc[ids].reset_index()
    return load_images(cfg, sub, size, desc="sources")


def _row(job: Job, gen: Generator, opts: ModeOptions) -> dict:
    mode = MODES[opts.mode]
    # a copy mode (the stand-in) runs no sampler: strength 0, no steps, guidance off
    strength = (opts.strength if mode.uses_strength else 1.0) if mode.diffusion else 0.0
    steps, guidance, sampler = (opts.steps, opts.guidance, opts.sampler) if mode.diffusion else (0, 1.0, "")
    return {"Id": job.id, "Target": format_target(job.labels),
            "label_weights": format_label_weights(job.weights), "source_id": job.source_id,
            "generator": gen.kind, "generator_trained_on": gen.meta["generator_trained_on"],
            "mode": opts.mode, "strength": f"{strength:g}", "steps": str(steps),
            "guidance": f"{guidance:g}", "seed": str(job.seed), "filter_score": "", "sampler": sampler}


def job_arrays(jobs: list[Job]) -> tuple[np.ndarray, np.ndarray]:
    """(target, source) label matrices of a batch as float32 ``(B, 28)``."""
    return (to_multihot([j.labels for j in jobs]).astype(np.float32),
            to_multihot([j.source_labels or j.labels for j in jobs]).astype(np.float32))


def image_generators(jobs: list[Job], device: str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per job, seeded with the job's seed."""
    return [torch.Generator(device).manual_seed(j.seed) for j in jobs]
