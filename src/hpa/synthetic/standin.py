"""``standin``: a cheap, explicitly labelled STAND-IN for diffusion-generated images (mode ``perturb``).

Each image is a perturbed copy of one real training image (random dihedral flip, per-stain intensity
jitter, a light blur and pixel noise), carrying the source's labels. It needs no training ("training"
records which images it may copy), so it runs in seconds on a CPU; it is *not* a generative model, and
results obtained with it say nothing about diffusion images. A stand-in for fold k copies only images
outside fold k and its manifest rows record ``generator_trained_on`` = the other folds, so the pool's
leak rules apply unchanged.

    hpa synth train --config configs/synth/standin.yaml --fold 0
    hpa synth generate --config configs/synth/standin.yaml --fold 0 --mode perturb --n 640

Image ``i`` of a run copies training image ``i mod N`` (copy ``i div N``): every real image gets a
variant before any gets two. Its Id is ``syn-<name>-f<k>-<source index>-<copy>`` and its randomness
comes from ``[seed, k, source index, copy]``, so an Id always holds the same pixels.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa.io import write_csv, write_json
from hpa.synthetic.config import SynthConfig, SynthData, as_dict
from hpa.synthetic.data import training_rows
from hpa.synthetic.generate import generate, output_size
from hpa.synthetic.manifest import ID_PREFIX, format_folds
from hpa.synthetic.modes import Job, ModeOptions
from hpa.synthetic.protocol import Generator


def perturb(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a label-preserving perturbed copy of an ``HxWx4`` uint8 image."""
    out = np.rot90(img, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = cv2.GaussianBlur(np.ascontiguousarray(out).astype(np.float32), (3, 3), float(rng.uniform(0.3, 1.0)))
    out = out * rng.uniform(0.8, 1.2, size=4) + rng.normal(0, 4.0, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


class StandinGenerator(Generator):
    """Perturbed copies of the real training images; works at the output size (nothing to upsample)."""

    kind = "standin"
    modes = ("perturb",)
    required_files = ("train_ids.csv",)

    def __init__(self, model_dir: str | Path | None, meta: dict, device: str = "cpu",
                 rows: pd.DataFrame | None = None):
        super().__init__(model_dir, meta, device)
        self.size = int(meta["image_size"])
        self._rows = rows

    @classmethod
    def train(cls, cfg: SynthConfig, fold: str, out_dir: Path) -> Path:
        """Record the images outside ``fold`` (nothing is learnt) and the size the copies are made at."""
        rows, trained_on = training_rows(cfg, fold)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(out_dir / "train_ids.csv", rows[["Id", "Target"]])
        # generator.json last: a folder without it is not a generator
        write_json(out_dir / "generator.json", {
            "generator": cls.kind, "fold": fold, "generator_trained_on": format_folds(trained_on),
            "image_size": output_size(cfg), "n_images": len(rows), "config": as_dict(cfg)})
        print(f"synth train: standin on {len(rows)} images (folds {format_folds(trained_on)}): "
              f"nothing to learn -> {out_dir}")
        return out_dir

    def train_rows(self) -> pd.DataFrame:
        """The rows given at construction (``make_standin``), else the folder's ``train_ids.csv``."""
        return self._rows[["Id", "Target"]].copy() if self._rows is not None else super().train_rows()

    def plan(self, rows: pd.DataFrame, opts: ModeOptions, n: int, seed: int, name: str, relabel: bool,
             gamma: float) -> list[Job]:
        """Image ``i`` copies training image ``i mod N`` (copy ``i div N``) under its own labels."""
        fold = str(self.meta["fold"])
        head = [seed] if fold == "all" else [seed, int(fold)]
        jobs = []
        for i in range(n):
            k, j = i % len(rows), i // len(rows)
            src = rows.iloc[k]
            jobs.append(Job(seed=seed, id=f"{ID_PREFIX}{name}-{k:05d}-{j}", labels=list(src["labels"]),
                            source_id=src["Id"], source_labels=list(src["labels"]), key=head + [k, j]))
        return jobs

    def __call__(self, opts: ModeOptions, jobs: list[Job], load_sources) -> np.ndarray:
        """The perturbed copies of the jobs' sources, each from its own ``key``."""
        sources = load_sources([j.source_id for j in jobs])
        return np.stack([perturb(img, np.random.default_rng(j.key)) for img, j in zip(sources, jobs)])


def make_standin(data_root: str | Path, folds: pd.Series, out_dir: str | Path, held_out: int,
                 per_image: int = 1, size: int = 0, seed: int = 0, train_dir: str = "train") -> Path:
    """Write ``per_image`` stand-in images per real image outside fold ``held_out`` into
    ``out_dir/train`` with ``out_dir/manifest.csv``; return the manifest path (rerun: skips done Ids).

    A thin wrapper for ``hpa ablate``: the ``standin`` generator of fold ``held_out``, built in memory
    from ``folds`` (``Id -> fold``; Ids without a fold count as training images), run through
    ``hpa.synthetic.generate.generate`` like any generator.
    """
    labels = pd.read_csv(Path(data_root) / "train.csv", dtype=str, keep_default_na=False)
    rows = labels[labels["Id"].map(folds) != held_out].reset_index(drop=True)
    trained_on = format_folds(set(int(f) for f in folds.unique()) - {held_out})
    cfg = SynthConfig(name="standin", generator="standin",
                      data=SynthData(root=str(data_root), train_dir=train_dir, output_size=size))
    meta = {"generator": "standin", "fold": str(held_out), "generator_trained_on": trained_on,
            "image_size": output_size(cfg)}
    gen = StandinGenerator(None, meta, rows=rows)
    generate(cfg, gen, ModeOptions(mode="perturb"), per_image * len(rows), seed, out_dir, batch_size=64)
    return Path(out_dir) / "manifest.csv"
