"""``hpa embed``: embeddings of the train, test (and HPAv18) images by a frozen backbone, cached.

The backbone (``embed.source``) is a registered foundation model (``foundation/<name>``, one for all
folds) or a trained run (``run:<run folder>``: fold k's checkpoint embeds everything for fold k's
probe, so no probe is ever validated on images its backbone trained on). Each image is read at
``embed.size``, cut into ``embed.tiles`` x ``embed.tiles`` crops, each seen in ``embed.flips``
dihedral views; the views' embeddings are averaged. Batched; on a GPU in bf16 autocast and
channels-last.

Cache: ``<embed.cache_dir>/<key>/<split>.npy`` (float32 ``(N, F)``) + ``<split>_ids.txt``, ``key``
naming the source, size, crop policy and fold (:func:`cache_key`). Work is saved in shards of
``SHARD`` images under ``<split>.parts/``: an interrupted run continues with the next shard.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hpa.config import EmbedConfig, ExperimentConfig, load_config
from hpa.data.cache import open_images
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.external.hpav18 import FORMATS, folder_format, read_hpav18_labels
from hpa.inference.stage import sample_ids
from hpa.io import atomic_path, write_json
from hpa.models.foundation import build_foundation, check_params
from hpa.rundir import RunDir
from hpa.transforms import dihedral

SHARD = 1024
SPLITS = ("train", "test", "external")


def cache_key(e: EmbedConfig, size: int, fold: int | None = None) -> str:
    """Folder name of one embedding set: source, weights file, size, crop policy, fold."""
    src = re.sub(r"[^A-Za-z0-9_.-]+", "_", e.source.replace("foundation/", "").replace("run:", "run_")).strip("_")
    w = f"-w{Path(e.weights).stem}" if e.weights else ""
    pool = f"-{e.params['pool'].replace('+', '')}" if e.params.get("pool") else ""
    return f"{src}{w}{pool}-s{size}-t{e.tiles}-f{e.flips}" + ("" if fold is None else f"-fold{fold}")


def views(x: torch.Tensor, tiles: int, flips: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(V, B, C, h, w)``: a tiles x tiles grid of crops, each in ``flips`` views."""
    if tiles == 1 and flips == 1:
        return x.unsqueeze(0)                   # the whole image: no copy
    h, w = x.shape[-2] // tiles, x.shape[-1] // tiles
    crops = [x[..., i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(tiles) for j in range(tiles)]
    return torch.stack([dihedral(c, k) for c in crops for k in range(flips)])


@torch.no_grad()
def embed_batch(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, e: EmbedConfig,
                device: torch.device) -> np.ndarray:
    """Embeddings ``(B, F)`` of a ``(B, H, W, 4)`` uint8 batch: views averaged (float32)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    v = views(x, e.tiles, e.flips)
    flat = v.reshape(-1, *v.shape[2:])
    cuda = device.type == "cuda"
    if cuda:
        flat = flat.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        f = fn(flat).float()
    return f.reshape(v.shape[0], v.shape[1], -1).mean(0).cpu().numpy()


def embed_images(fn: Callable[[torch.Tensor], torch.Tensor], images: Sequence[np.ndarray], ids: Sequence[str],
                 e: EmbedConfig, out: Path, split: str, device: torch.device, progress: bool = True) -> np.ndarray:
    """Embed ``images`` (cached in ``out/<split>.npy``, resumable by shard); return ``(N, F)``."""
    final, id_file = out / f"{split}.npy", out / f"{split}_ids.txt"
    ids = [str(i) for i in ids]
    if final.is_file() and id_file.is_file():
        if id_file.read_text().split() == ids:
            return np.load(final)
        raise HPAError(f"{out}: cached {split} embeddings are of other Ids (another dataset?); delete the folder")
    parts = out / f"{split}.parts"
    if parts.is_dir() and (parts / "ids.txt").read_text().split() != ids:
        shutil.rmtree(parts)                     # shards of another Id list: start again
    parts.mkdir(parents=True, exist_ok=True)
    (parts / "ids.txt").write_text("\n".join(ids) + "\n")
    n_shards = (len(ids) + SHARD - 1) // SHARD
    bar = tqdm(total=len(ids), desc=f"embed {split}", unit="img", disable=not progress, leave=False)
    for s in range(n_shards):
        shard = parts / f"{s:05d}.npy"
        lo, hi = s * SHARD, min(len(ids), (s + 1) * SHARD)
        if not shard.is_file():
            rows = [embed_batch(fn, np.stack([np.asarray(images[i]) for i in range(b, min(hi, b + e.batch_size))]),
                                e, device) for b in range(lo, hi, e.batch_size)]
            with atomic_path(shard) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, np.concatenate(rows).astype(np.float32))
        bar.update(hi - lo)
    bar.close()
    emb = np.concatenate([np.load(parts / f"{s:05d}.npy") for s in range(n_shards)]) if n_shards else np.zeros((0, 0))
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, emb)
    with atomic_path(id_file) as tmp:
        tmp.write_text("\n".join(ids) + "\n")
    shutil.rmtree(parts)
    return emb


# ----------------------------------------------------------------------------- sources
def backbones(cfg: ExperimentConfig, folds: Sequence[int], device: torch.device) -> dict:
    """``{fold or None: (features fn, image size, checkpoint stamp)}`` for ``cfg.embed.source``: one
    foundation backbone (key None) or a run's fold models (keys its folds)."""
    e = cfg.embed
    if e.source.startswith("foundation/"):
        model = build_foundation(e.source.split("/", 1)[1], weights=e.weights,
                                 **check_params(e.params, "embed.params")).eval().to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return {None: (model, e.size or cfg.data.image_size, "")}
    if e.source.startswith("run:"):
        rd = RunDir(Path(e.source[4:]))
        if not rd.config.is_file():
            raise HPAError(f"embed.source: {rd.path} is not a run folder (no {rd.config.name})")
        run_cfg = rd.load_config()
        out = {}
        for f in folds:
            path = rd.checkpoint_paths([f])[0]
            model, _ = rd.load_model(f, "best", run_cfg)
            model = model.to(device)
            st = path.stat()        # a retrained fold invalidates its cached embeddings
            out[f] = (model.features, e.size or run_cfg.data.image_size, f"{st.st_size}-{st.st_mtime_ns}")
        return out
    raise HPAError(f"embed.source: '{e.source}' is neither foundation/<name> nor run:<run folder>")


def split_ids(cfg: ExperimentConfig, split: str) -> tuple[Path, list[str], str]:
    """(image folder, Ids, reader kind) of ``split``: train (train.csv), test (sample submission), external."""
    d, root = cfg.data, Path(cfg.data.root)
    if split == "train":
        return root / d.train_dir, read_labels(root / d.train_csv)["Id"].astype(str).tolist(), "kaggle"
    if split == "test":
        return root / d.test_dir, sample_ids(root / d.sample_submission), "kaggle"

    if not d.external_csv:
        raise HPAError("embed.external: set data.external_csv and data.external_dir (HPAv18)")
    fmt = folder_format(d.external_dir) or "jpg"
    return Path(d.external_dir), read_hpav18_labels(d.external_csv)["Id"].tolist(), FORMATS[fmt]


def run_embed(cfg: ExperimentConfig, folds: Sequence[int] | None = None, splits: Sequence[str] = ("train", "test"),
              device: str | None = None, progress: bool = True) -> dict:
    """Embed ``splits`` with ``cfg.embed.source`` into the cache (computing only what is missing);
    return ``{"dirs": {fold or None: folder}, "dim", "images", "seconds", "computed"}``."""
    e = cfg.embed
    if not e.source:
        raise HPAError("embed.source is empty: set foundation/<name> or run:<run folder>")
    folds = list(range(cfg.folds.n_splits)) if folds is None else list(folds)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    dirs, dim, n, computed = {}, 0, 0, 0
    models = backbones(cfg, folds, dev)
    for fold, (fn, size, stamp) in models.items():
        out = Path(e.cache_dir) / cache_key(e, size, fold)
        dirs[fold] = out
        meta = out / "meta.json"
        if meta.is_file() and json.loads(meta.read_text()).get("checkpoint", "") != stamp:
            warnings.warn(f"{out}: the backbone's checkpoint changed since these embeddings; embedding again")
            shutil.rmtree(out)
        for split in splits:
            image_dir, ids, kind = split_ids(cfg, split)
            if not (out / f"{split}.npy").is_file():
                computed += len(ids)
            images = open_images(image_dir, ids, size, kind, cfg.data.cache, cfg.data.cache_dir)
            emb = embed_images(fn, images, ids, e, out, split, dev, progress)
            dim, n = emb.shape[1], n + len(ids)
        write_json(meta, {"source": e.source, "weights": e.weights, "params": e.params, "size": size,
                          "tiles": e.tiles, "flips": e.flips, "fold": fold, "dim": dim, "checkpoint": stamp})
    return {"dirs": dirs, "dim": dim, "images": n, "computed": computed, "seconds": time.perf_counter() - t0,
            "device": dev.type}


def load_embeddings(out: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """The cached ``(N, F)`` embeddings of ``split`` in ``out`` and their Ids."""
    return np.load(out / f"{split}.npy"), (out / f"{split}_ids.txt").read_text().split()


# ----------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa embed``."""
    p.add_argument("--config", required=True, help="experiment YAML with an embed: section")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--folds", type=int, nargs="+", help="folds whose backbone embeds (run sources; default all)")
    p.add_argument("--external", action="store_true", help="also embed the HPAv18 images (data.external_*)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")


def main(args: argparse.Namespace) -> int:
    """Run ``hpa embed``; print a one-line summary."""
    cfg = load_config(args.config, args.set)
    splits = ("train", "test") + (("external",) if args.external or cfg.embed.external else ())
    r = run_embed(cfg, args.folds, splits, args.device)
    where = ", ".join(str(d) for d in r["dirs"].values())
    rate = r["computed"] / r["seconds"] if r["seconds"] and r["computed"] else 0.0
    print(f"embed {cfg.embed.source}: {r['images']} image embeddings of dim {r['dim']} ({r['computed']} computed "
          f"now, {rate:.0f} images/s on {r['device']}; the rest cached) in {r['seconds']:.1f}s -> {where}")
    return 0
