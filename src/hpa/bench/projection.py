"""Projected 512 px figures for the full real runs, from what was measured and what was counted.

Measured here (any machine): the per-image decode (+ resize) time of the real 512 px PNGs
(``../shared/hpa/real-samples/kaggle``) and the data loader's images/s per CPU core at 512 px with a
recipe's augmentations. Counted exactly: FLOPs per image of each model (``FlopCounterMode`` on the meta
device, no weights, no memory). Measured on a GPU, when a ``benchmarks/gpu-*.json`` exists
(``tools/gpu_check.sh``): images/s of training and generation. Until then the GPU rates are
*estimates* = an assumed share of the bf16 matrix-multiply rate measured on an H200 of this
workplace, and every such figure says so (``basis``).
"""
from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hpa.bench.core import DEFAULT_SHARED
from hpa.classes import NUM_CLASSES, TRAIN_ROWS
from hpa.config import load_config
from hpa.data.cache import open_images
from hpa.data.dataset import HPADataset
from hpa.data.images import CHANNELS, read_kaggle_rgby
from hpa.transforms import build_train_transform

#: bf16 8192^3 matmul on an H200 of this workplace (device KINDS.md: 769-798 TFLOP/s on random data)
H200_BF16_TFLOPS = 790.0
#: assumed share of that rate a model reaches (used only until tools/gpu_check.sh measures it).
#: Basis: timm's ResNet-50 AMP channels-last training at 2,600 img/s on an A100 (timm issue #1491)
#: is 64 TFLOP/s = 21% of the A100's 312 peak; Hopper triples the peak but not memory bandwidth, so
#: convolution nets reach less of it: 15% assumed for ResNet34, half that for DenseNet121 (its
#: concatenations and thin layers are memory-bound), 35% for the SD UNet (wide convolutions and
#: attention at batch 16+), 15% for the small pixel UNet.
ASSUMED_SHARE = {"resnet34": 0.15, "densenet121": 0.075, "sd_unet": 0.35, "pixel_unet": 0.15}
GPU_HOST_CORES = 16         # the H200 machine lent here; one core stays with the training process
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
#: the full runs the README projects: (model, train px, eval px, epochs, folds, TTA views, config)
RECIPES = {"5-fold ResNet34, 512 px, 40 epochs": ("resnet34", 512, 512, 40, 5, 8, "configs/pudae_resnet34.yaml"),
           "bestfitting DenseNet121: 512 crops of 768, 55 epochs, 5 folds":
               ("densenet121", 512, 768, 55, 5, 8, "configs/bestfitting_densenet121.yaml")}
SD_LORA_STEPS, SD_LORA_BATCH, SD_GUIDANCE_STEPS, GEN_IMAGES = 5000, 8, 20, 10_000


# ----------------------------------------------------------------------------- counted
@lru_cache(maxsize=None)
def classifier_flops(name: str, size: int) -> dict[str, float]:
    """FLOPs per image of a 4-channel timm model at ``size`` px: ``forward`` and ``train`` (fwd + bwd)."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        # eval mode: BatchNorm's statistics cost no matmul FLOPs, and a 1-image batch at a small size
        # would leave it one value per channel (an error in training mode)
        model = timm.create_model(name, in_chans=4, num_classes=NUM_CLASSES).eval()
        x = torch.empty(1, 4, size, size)
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as train:
        model(x).sum().backward()
    return {"forward": float(fwd.get_total_flops()), "train": float(train.get_total_flops())}


@lru_cache(maxsize=None)
def sd_flops() -> dict[str, float]:
    """FLOPs of Stable Diffusion 1.5's UNet (one 64x64 latent: forward; forward + backward with frozen
    weights, as LoRA trains) and of its VAE (encode / decode one 512 px image), on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE)
        z, text, t = torch.empty(1, 4, 64, 64), torch.empty(1, 77, 768), torch.tensor([10])
        img, latent = torch.empty(1, 3, 512, 512), torch.empty(1, 4, 64, 64)
    out = {}
    with FlopCounterMode(display=False) as c:
        unet(z, t, text)
    out["unet_forward"] = float(c.get_total_flops())
    unet.requires_grad_(False)
    z.requires_grad_(True)
    with FlopCounterMode(display=False) as c:
        unet(z, t, text).sample.sum().backward()
    out["unet_lora_train"] = float(c.get_total_flops())
    with FlopCounterMode(display=False) as c:
        vae.encode(img)
    out["vae_encode"] = float(c.get_total_flops())
    with FlopCounterMode(display=False) as c:
        vae.decode(latent)
    out["vae_decode"] = float(c.get_total_flops())
    return out


def pixel_unet_flops(size: int = 128) -> float:
    """FLOPs of one forward of the pixel ``ddpm`` denoiser (configs/synth/ddpm_demo.yaml's shape) at ``size``."""
    from torch.utils.flop_counter import FlopCounterMode

    from hpa.synthetic.denoisers import LabelUNet

    with torch.device("meta"):
        net = LabelUNet(size, 4, 4, (32, 64, 64), 1, True)
        x, t, y = torch.empty(1, 4, size, size), torch.tensor([10]), torch.empty(1, NUM_CLASSES)
    with FlopCounterMode(display=False) as c:
        net(x, t, y)
    return float(c.get_total_flops())


# ----------------------------------------------------------------------------- measured on this machine
def decode_seconds(sample_dir: Path, sizes=(512, 768), limit: int = 40) -> dict | None:
    """Median seconds to read one real sample (four 512 px PNGs) and resize it to each of ``sizes``
    (keys: the sizes, and ``n``: samples timed), one thread, as each cache-building thread does;
    None without the real samples."""
    import pandas as pd

    csv = sample_dir / "train.csv"
    if not csv.is_file():
        return None
    ids = pd.read_csv(csv)["Id"].head(limit).tolist()
    out: dict = {"n": len(ids), "png_bytes": float(np.mean([
        (sample_dir / "train" / f"{i}_{c}.png").stat().st_size for i in ids for c in CHANNELS]))}
    for size in sizes:
        read_kaggle_rgby(sample_dir / "train", ids[0], size)          # warm the page cache and imports
        times = []
        for i in ids:           # CPU time of this thread: a busy shared machine stretches wall time
            t0 = time.thread_time()
            read_kaggle_rgby(sample_dir / "train", i, size)
            times.append(time.thread_time() - t0)
        out[size] = float(np.median(times))
    return out


def loader_rate(sample_dir: Path, config: str, seconds: float = 3.0) -> float | None:
    """Images per CPU-second of one loader process at 512 px with ``config``'s training augmentations
    (uint8 item from a memory-mapped 512 px cache of the real samples, as a DataLoader worker makes it)."""
    import tempfile

    import pandas as pd

    if not (sample_dir / "train.csv").is_file():
        return None
    cfg = load_config(config)
    ids = pd.read_csv(sample_dir / "train.csv")["Id"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        images = open_images(sample_dir / "train", ids, 512, cache_dir=tmp)
        # crop_from 0: the real samples are 512 px: time the ops, not a 768 upscale
        ds = HPADataset(images, None, build_train_transform(cfg.train.augment, cfg.data.image_size, 0, 0))
        for i in range(min(8, len(ds))):
            ds[i]
        n, t0 = 0, time.thread_time()            # CPU time: robust to other processes' load
        while time.thread_time() - t0 < seconds:
            ds[n % len(ds)]
            n += 1
        return n / (time.thread_time() - t0)


def measured_gpu(folder: Path) -> dict | None:
    """The newest full (not quick) ``gpu-*.json`` in ``folder``, or None."""
    files = sorted(p for p in folder.glob("gpu-*.json") if "quick" not in p.name)
    return json.loads(files[-1].read_text()) if files else None


# ----------------------------------------------------------------------------- projections
def _gpu_rate(gpu: dict | None, key: str | tuple, flops: float, share_key: str) -> tuple[float, str]:
    """(images/s, basis): the first measured figure of ``key`` (a name or names in order of preference)
    in the GPU report when there, else the estimate."""
    for k in (key,) if isinstance(key, str) else key:
        for part in (gpu or {}).get("parts", []):
            if part.get("figures", {}).get(k):
                return part["figures"][k], f"measured ({gpu['environment'].get('gpu', 'GPU')}, {gpu['date']})"
    share = ASSUMED_SHARE[share_key]
    rate = share * H200_BF16_TFLOPS * 1e12 / flops
    return rate, f"estimate: {share:.1%} of {H200_BF16_TFLOPS:.0f} TFLOP/s over {flops / 1e9:.0f} GFLOP"


def project_recipe(name: str, n_train: int, n_test: int, gpu: dict | None, loader: float | None) -> dict:
    """Wall-clock of one training recipe on one H200: per epoch, whole run, test inference.

    The epoch runs at the slower of the GPU and the loader: the pipeline's default workers
    (``train.num_workers: -1`` = 4) or all but one of the host's cores (``--set train.num_workers=15``).
    The GPU rate is the measured loop with GPU augmentations (the loader only copies) when a GPU check
    exists, and the loader its measured rate with 4 and 16 workers; else estimates, and ``loader``
    images/s per worker (this machine) times the workers.
    """
    model, size, eval_size, epochs, folds, tta, _ = RECIPES[name]
    f_train, f_eval = classifier_flops(model, size), classifier_flops(model, eval_size)
    rate, basis = _gpu_rate(gpu, (f"{model} loop gpu-aug", f"{model} loop"), f_train["train"], model)
    measured = {k: v for p in (gpu or {}).get("parts", []) for k, v in p.get("figures", {}).items()}
    # forward-only images/s: the training rate scaled by the FLOP ratio (the same kernels, no backward)
    eval_rate = rate * f_train["train"] / f_eval["forward"]
    n_fit, n_val = n_train * (folds - 1) / folds, n_train / folds
    out = {"model": model, "train_px": size, "eval_px": eval_size, "epochs": epochs, "folds": folds,
           "train_gflop_per_image": round(f_train["train"] / 1e9, 1),
           "gpu_train_images_per_s": round(rate), "basis": basis,
           "test_inference_minutes": round(n_test * tta * folds / eval_rate / 60, 1)}
    for key, workers, probe in (("default_workers", min(4, GPU_HOST_CORES), 4),
                                ("all_workers", GPU_HOST_CORES - 1, 16)):
        cap = measured.get(f"cpu augment, {probe} workers images/s") or (loader * workers if loader else None)
        cap = cap or float("inf")
        epoch_s = n_fit / min(rate, cap) + n_val / eval_rate
        out[key] = {"workers": workers, "loader_images_per_s": round(cap) if cap != float("inf") else None,
                    "bound": "loader" if cap < rate else "GPU", "epoch_minutes": round(epoch_s / 60, 1),
                    "run_hours": round(epoch_s * epochs * folds / 3600, 1)}
    return out


def project_generation(gpu: dict | None) -> dict:
    """SD-LoRA fine-tuning and 10,000 generated images (SD two-view scheme, pixel ddpm at 128 px)."""
    f = sd_flops()
    # one RGBY sample = two SD views (hpa.synthetic.sd_lora): LoRA step = 2 x (VAE encode + UNet fwd/bwd)
    step = SD_LORA_BATCH * 2 * (f["vae_encode"] + f["unet_lora_train"])
    train_rate, train_basis = _gpu_rate(None, "", step, "sd_unet")
    m = {k: v for p in (gpu or {}).get("parts", []) for k, v in p.get("figures", {}).items()}
    if m.get("sd unet dpmpp20 latents/s") and m.get("sd vae decode images/s"):
        # no LoRA step was timed: the measured UNet forwards (20 steps x 2 per latent) and VAE decodes,
        # scaled by the counted FLOPs of a frozen-weight backward and of an encode
        fwd_s = 1 / (m["sd unet dpmpp20 latents/s"] * 2 * SD_GUIDANCE_STEPS)
        enc_s = f["vae_encode"] / f["vae_decode"] / m["sd vae decode images/s"]
        train_rate = 1 / (SD_LORA_BATCH * 2 * (f["unet_lora_train"] / f["unet_forward"] * fwd_s + enc_s))
        train_basis = f"from the measured UNet and VAE rates ({gpu['date']}), scaled by counted FLOPs"
    # one generated RGBY image: 2 views x 20 steps x 2 (guidance) UNet calls + 2 VAE decodes
    per_image = 2 * (SD_GUIDANCE_STEPS * 2 * f["unet_forward"] + f["vae_decode"])
    sd_rate, sd_basis = _gpu_rate(gpu, "sd15 unet dpmpp20 images/s", per_image, "sd_unet")
    pixel = SD_GUIDANCE_STEPS * 2 * pixel_unet_flops(128)
    px_rate, px_basis = _gpu_rate(gpu, "ddpm128 dpmpp20 images/s", pixel, "pixel_unet")
    return {"sd_lora_finetune": {"steps": SD_LORA_STEPS, "batch": SD_LORA_BATCH,
                                 "tflop_per_step": round(step / 1e12, 1),
                                 "hours": round(SD_LORA_STEPS / train_rate / 3600, 2), "basis": train_basis},
            "sd_generate_10k": {"tflop_per_image": round(per_image / 1e12, 1), "images_per_s": round(sd_rate, 2),
                                "minutes": round(GEN_IMAGES / sd_rate / 60, 1), "basis": sd_basis},
            "ddpm128_generate_10k": {"gflop_per_image": round(pixel / 1e9, 1), "images_per_s": round(px_rate, 1),
                                     "minutes": round(GEN_IMAGES / px_rate / 60, 2), "basis": px_basis}}


def projections(shared: Path, n_train: int, n_test: int, benchmarks: Path | None = None) -> dict:
    """Every 512 px projection (cache, cache build, recipes, generation) as one JSON-ready dict."""
    root = Path(__file__).resolve().parents[3]
    gpu = measured_gpu(benchmarks or root / "benchmarks")
    samples = shared / "real-samples" / "kaggle"
    decode = decode_seconds(samples)
    loader = {name: loader_rate(samples, str(root / r[6])) for name, r in RECIPES.items()}
    cache = {"train_512_gb": n_train * 512 * 512 * 4 / 1e9, "test_512_gb": n_test * 512 * 512 * 4 / 1e9,
             "train_768_gb": n_train * 768 * 768 * 4 / 1e9}
    build = None
    if decode:
        n = n_train + n_test
        build = {"decode_ms_512": round(decode[512] * 1e3, 1), "decode_resize_ms_768": round(decode[768] * 1e3, 1),
                 "minutes_by_cores": {str(c): round(n * decode[512] / c / 60, 1) for c in (1, 2, 8, 16, 32)},
                 "basis": f"{decode['n']} real samples, one thread, x {n:,} Ids / cores "
                          f"(ideal scaling); the PNGs to read: {decode['png_bytes'] / 1e3:.0f} KB each on average, "
                          f"{n * 4 * decode['png_bytes'] / 1e9:.1f} GB in all"}
    return {"n_train": n_train, "n_test": n_test, "cache": {k: round(v, 2) for k, v in cache.items()},
            "cache_build": build,
            "loader_images_per_s_per_core": {k: (round(v) if v else None) for k, v in loader.items()},
            "recipes": {name: project_recipe(name, n_train, n_test, gpu, loader[name]) for name in RECIPES},
            "generation": project_generation(gpu), "gpu_measured": bool(gpu), "cpu_count": os.cpu_count()}


def projection_markdown(p: dict) -> str:
    """The projections as markdown: cache facts, then a table per kind of job."""
    c = p["cache"]
    lines = [f"Projected at 512 px for {p['n_train']:,} train + {p['n_test']:,} test images on one H200 host "
             f"({GPU_HOST_CORES} cores; "
             f"{'GPU rates measured' if p['gpu_measured'] else 'GPU rates are estimates: no GPU run yet'}).", "",
             f"- image cache on disk: train {c['train_512_gb']:.1f} GB + test {c['test_512_gb']:.1f} GB at 512 px "
             f"(uint8, 4 stains); train {c['train_768_gb']:.1f} GB at 768 px (bestfitting's crops)."]
    b = p["cache_build"]
    if b:
        cores = ", ".join(f"{k}: {v:.1f} min" for k, v in b["minutes_by_cores"].items())
        lines.append(f"- cache build, by cores (decode the four 512 px PNGs of an image: {b['decode_ms_512']:.1f} ms; "
                     f"with a resize to 768: {b['decode_resize_ms_768']:.1f} ms): {cores}. Basis: {b['basis']}.")
    lr = "; ".join(f"{k.split(',')[0]}: {v} images/s" for k, v in p["loader_images_per_s_per_core"].items())
    lines += [f"- data loader at 512 px with each recipe's augmentations, per worker (CPU core) of this "
              f"{p['cpu_count']}-core machine: {lr}.", "",
              "| run | GPU train images/s | loader images/s, 4 workers (default) / 15 | bound | per epoch | "
              "whole run, 4 workers / 15 | test inference (8 TTA x folds) | basis |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in p["recipes"].items():
        d, a = r["default_workers"], r["all_workers"]
        lines.append(f"| {name} | {r['gpu_train_images_per_s']:,} | {d['loader_images_per_s']} / "
                     f"{a['loader_images_per_s']} | {d['bound']} / {a['bound']} | {d['epoch_minutes']} / "
                     f"{a['epoch_minutes']} min | {d['run_hours']} / {a['run_hours']} h | "
                     f"{r['test_inference_minutes']} min | {r['basis']} |")
    g = p["generation"]
    s, sd, px = g["sd_lora_finetune"], g["sd_generate_10k"], g["ddpm128_generate_10k"]
    lines += ["", "| generation job | work | rate | wall-clock | basis |", "|---|---|---|---|---|",
              f"| SD-LoRA fine-tuning, {s['steps']:,} steps of {s['batch']} RGBY images at 512 px "
              f"(two SD views each) | {s['tflop_per_step']} TFLOP per step | - | {s['hours']} h | {s['basis']} |",
              f"| 10,000 images, SD 1.5-sized UNet, DPM-Solver++ 20 steps with guidance, two views + VAE decode | "
              f"{sd['tflop_per_image']} TFLOP per image | {sd['images_per_s']} images/s | {sd['minutes']} min | "
              f"{sd['basis']} |",
              f"| 10,000 images, pixel ddpm at 128 px, DPM-Solver++ 20 steps with guidance | "
              f"{px['gflop_per_image']} GFLOP per image | {px['images_per_s']} images/s | {px['minutes']} min | "
              f"{px['basis']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m hpa.bench.projection [--shared DIR] [--benchmarks DIR]``: print the projections
    (after a GPU check, with its measured rates) without repeating the scale run."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("--shared", default=DEFAULT_SHARED, help="folder with real-samples/kaggle (../shared/hpa)")
    p.add_argument("--benchmarks", default="", help="folder with gpu-<date>.json (default: the repository's)")
    args = p.parse_args(argv)
    # the real competition's sizes (hpa.classes.TRAIN_ROWS; sample_submission.csv has 11,702 Ids)
    print(projection_markdown(projections(Path(args.shared), TRAIN_ROWS, 11702,
                                          Path(args.benchmarks) if args.benchmarks else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
