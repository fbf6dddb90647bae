"""Estimate the GPU time of generator configs (training and generation) from counted FLOPs.

No GPU run of the real-scale recipes exists yet, so their headers carry this estimate:

1. the FLOPs of one sample's training step and of one denoiser call are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on the config's own network built on the ``meta``
   device (shapes only: nothing is computed or allocated, so it runs on a laptop in seconds);
   Stable Diffusion 1.5 is rebuilt from its published architecture (UNet 320/640/1280/1280, cross-attention
   768, VAE 128/256/512/512) since its weights are not here. A LoRA step costs the UNet's forward plus
   the activation half of its backward (frozen weights get no gradient); the frozen VAE encoder and
   text encoder run forward only;
2. time = FLOPs / (peak x utilisation), with the H100/H200 SXM dense bf16 peak of 989 TFLOP/s and an
   assumed 30 % utilisation (small UNets and attention at batch 8-64 rarely do better; treat the
   result as good to a factor of two).

    python tools/estimate_gpu_time.py configs/synth/ddpm_real.yaml [...] [--images 10752]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hpa.synthetic.config import load_synth_config  # noqa: E402
from hpa.synthetic.protocol import generator_class  # noqa: E402

PEAK_TFLOPS = 989.0            # H100 / H200 SXM, dense bf16
UTILISATION = 0.30


def _flops(fn) -> int:
    fc = FlopCounterMode(display=False)
    with fc:
        fn()
    return fc.get_total_flops()


def _pixel(cfg) -> dict:
    """Per-sample training FLOPs and per-call denoiser FLOPs of a pixel-space generator."""
    with torch.device("meta"):
        net = generator_class(cfg.generator).build_denoiser(cfg)
        s = cfg.data.image_size
        c_in = net.config.in_channels
        x, t, y = torch.randn(1, c_in, s, s), torch.zeros(1, dtype=torch.long), torch.zeros(1, 28)
        fwd = _flops(lambda: net(x, t, y))
        train = _flops(lambda: net(x, t, y).float().pow(2).mean().backward())
        params = sum(p.numel() for p in net.parameters())
    return {"params_m": params / 1e6, "train_gflop": train / 1e9, "call_gflop": fwd / 1e9}


def _stable_diffusion(cfg) -> dict:
    """The same for sd_lora on SD 1.5 (two RGB views per sample, see hpa.synthetic.sd_lora)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    s, views = cfg.data.image_size, 2
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=s // 8, cross_attention_dim=768)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        lat, t, text = torch.randn(1, 4, s // 8, s // 8), torch.zeros(1, dtype=torch.long), torch.randn(1, 77, 768)
        fwd = _flops(lambda: unet(lat, t, text).sample)
        enc = _flops(lambda: vae.encode(torch.randn(1, 3, s, s)).latent_dist.mean)
        dec = _flops(lambda: vae.decode(lat).sample)
        params = sum(p.numel() for p in unet.parameters())
    text_fwd = 2 * 123e6 * 77                   # CLIP ViT-L/14 text encoder, 77 tokens
    # LoRA: forward + activation gradients (about one more forward); textual inversion: text backward
    train = views * (2 * fwd + enc + 3 * text_fwd)
    return {"params_m": params / 1e6, "train_gflop": train / 1e9, "call_gflop": views * fwd / 1e9,
            "decode_gflop": views * dec / 1e9}


def estimate(path: str, images: int, peak: float = PEAK_TFLOPS, util: float = UTILISATION) -> dict:
    """GPU hours of training ``path``'s generator and of generating ``images`` images with its defaults."""
    cfg = load_synth_config(path)
    f = _stable_diffusion(cfg) if cfg.model.pretrained else _pixel(cfg)
    rate = peak * 1e12 * util
    samples = cfg.train.steps * cfg.train.batch_size * cfg.train.accum_steps
    calls = cfg.generate.steps * (2 if cfg.generate.guidance != 1 else 1)   # CFG: a second, unconditional call
    gen = images * (calls * f["call_gflop"] + f.get("decode_gflop", 0.0)) * 1e9
    return {"config": path, **{k: round(v, 1) for k, v in f.items()}, "train_samples": samples,
            "train_hours": samples * f["train_gflop"] * 1e9 / rate / 3600,
            "generate_images": images, "generate_hours": gen / rate / 3600}


def _t(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+")
    p.add_argument("--images", type=int, default=10_752, help="images to generate (default Lin & Cao's 10,752)")
    p.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS)
    p.add_argument("--utilisation", type=float, default=UTILISATION)
    a = p.parse_args(argv)
    for c in a.configs:
        e = estimate(c, a.images, a.peak_tflops, a.utilisation)
        print(f"{c}: {e['params_m']:.1f} M params, {e['train_gflop']:.1f} GFLOP per training sample x "
              f"{e['train_samples']:,} samples = {_t(e['train_hours'])}; {e['call_gflop']:.1f} GFLOP per "
              f"denoiser call, {e['generate_images']:,} images = {_t(e['generate_hours'])} "
              f"(at {a.peak_tflops:g} TFLOP/s x {a.utilisation:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
