"""The parts of ``hpa bench --rows gpu`` (``tools/gpu_check.sh``), each run in its own process.

    python -m hpa.bench.gpu_parts PART SETTINGS.json RESULT.json

Every measurement is written to ``RESULT.json`` the moment it is known (``Recorder``), so a part
stopped at its time budget still reports what it finished. Parts: ``peak`` (bf16 matmul rate),
``loader`` (the training DataLoader alone, by worker count; with and without GPU augmentation),
``train`` (``FoldTrainer.train_epoch`` with the real loader vs a bare loop on device tensors),
``compile`` (``torch.compile`` on and off), ``generate`` (a Stable-Diffusion-sized UNet with
DPM-Solver++ and the pixel ``ddpm``).
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hpa.bench.core import interleaved
from hpa.bench.model_rows import bare_trainer, synthetic_images, train_config
from hpa.bench.projection import SD15_UNET, SD15_VAE, classifier_flops
from hpa.bench.synth_rows import generate, real_label_sets, stand_in_generator
from hpa.config import AugOp
from hpa.gpu_augment import gpu_augment
from hpa.registry import Registry
from hpa.training.loop import FoldInput, FoldTrainer, make_loaders
from hpa.training.run import make_accelerator

#: the parts of the GPU check, in their run ``order``; ``share`` is the part's share of the time budget
GPU_PARTS: Registry = Registry("GPU check part", fixed=("s", "rec", "work"))

#: the 3rd-place augmentations (configs/pudae_resnet34.yaml): what the loader runs per image
PUDAE_AUGMENT = [{"name": "hflip"}, {"name": "vflip"}, {"name": "rotate90"}, {"name": "transpose"},
                 {"name": "shift_scale_rotate", "params": {"shift_limit": 0.1, "scale_limit": 0.1,
                                                           "rotate_limit": 45, "p": 0.5}},
                 {"name": "brightness_contrast", "params": {"brightness_limit": 0.2, "contrast_limit": 0.2,
                                                            "p": 0.5}}]
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, cross_attention_dim=32,
                 block_out_channels=(32, 64), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=32,
                block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8)


@dataclass
class GpuSettings:
    """Sizes of every part: the real ones on CUDA, tiny ones for the CPU test (``quick``)."""
    device: str = "cuda"
    quick: bool = False
    size: int = 512
    batch: int = 64
    steps: int = 12                     # training steps per timed epoch
    repeats: int = 3
    models: tuple = ("resnet34", "densenet121")
    train_workers: int = 12             # loader workers of the training part (16-core host)
    workers: tuple = (1, 4, 8, 16)      # loader part
    loader_seconds: float = 6.0
    loader_images: int = 512            # images in the loader part's memory-mapped cache
    augment: list = field(default_factory=lambda: list(PUDAE_AUGMENT))
    matmul_n: int = 8192
    sd_unet: dict = field(default_factory=dict)    # empty = SD 1.5's (hpa.bench.projection.SD15_UNET)
    sd_vae: dict = field(default_factory=dict)
    sd_latent: int = 64
    sd_batch: int = 8
    sd_steps: int = 20
    ddpm_size: int = 128
    ddpm_batch: int = 32
    peak_tflops: float = 0.0            # filled in by the parent from the peak part

    @classmethod
    def for_device(cls, device: str, quick: bool) -> "GpuSettings":
        if not quick:
            return cls(device=device)
        # one model and in-process loading keep the CPU test short; workers=1 still starts a worker
        return cls(device=device, quick=True, size=32, batch=4, steps=2, repeats=1, models=("resnet34",),
                   train_workers=0, workers=(0, 1), loader_seconds=0.3, loader_images=24, matmul_n=256,
                   sd_unet=TINY_UNET,
                   sd_vae=TINY_VAE, sd_latent=8, sd_batch=1, sd_steps=2, ddpm_size=16, ddpm_batch=2)


class Recorder:
    """``figures`` / ``notes`` of one part, rewritten to the result file at every change."""

    def __init__(self, path: Path, part: str):
        self.path, self.data = path, {"part": part, "figures": {}, "notes": []}
        self.save()

    def __call__(self, key: str, value: float) -> float:
        self.data["figures"][key] = float(f"{float(value):.4g}")
        self.save()
        return value

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


def sync(s: GpuSettings) -> None:
    if s.device == "cuda":
        torch.cuda.synchronize()


def timed(fn, s: GpuSettings, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    sync(s)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(s)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- peak
@GPU_PARTS.register("peak", order=1, share=0.03)
def part_peak(s: GpuSettings, rec: Recorder, work: Path) -> None:
    """The matrix-multiply rate the other parts are compared with: bf16 on CUDA (fp32 on the CPU)."""
    dtype = torch.bfloat16 if s.device == "cuda" else torch.float32
    g = torch.Generator(device=s.device).manual_seed(0)
    a = torch.randn(s.matmul_n, s.matmul_n, device=s.device, dtype=dtype, generator=g)
    b = torch.randn(s.matmul_n, s.matmul_n, device=s.device, dtype=dtype, generator=g)
    sec = timed(lambda: [a @ b for _ in range(10)], s, 3) / 10
    rec("matmul TFLOP/s", 2 * s.matmul_n ** 3 / sec / 1e12)
    rec.note(f"{s.matmul_n}^3 {str(dtype).replace('torch.', '')} matmul on random data, median of 3 x 10")


# ----------------------------------------------------------------------------- shared by loader / train
def cached_images(work: Path, n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A memory-mapped uint8 cache ``(n, size, size, 4)`` as ``hpa cache`` writes it, and labels."""
    path = work / f"cache_{n}_{size}.npy"
    if not path.is_file():
        block, y = synthetic_images(min(n, 64), size, seed)
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 4))
        for i in range(0, n, len(block)):
            arr[i:i + len(block)] = block[:n - i]
        arr.flush()
        del arr
    _, y = synthetic_images(n, 8, seed)
    return np.load(path, mmap_mode="r"), y


def experiment(s: GpuSettings, model: str, workers: int, augment: list, gpu_augment: list, compile_: bool = False):
    """The ``ExperimentConfig`` of one measured variant (bf16 + channels-last on CUDA, as real configs)."""
    cfg = train_config(model, s.size, s.batch, s.device == "cuda", compile_)
    cfg.train.num_workers, cfg.train.pin_memory, cfg.train.persistent_workers = workers, True, True
    cfg.train.augment = [AugOp(a["name"], a.get("params", {})) for a in augment]
    cfg.train.gpu_augment = [AugOp(a["name"], a.get("params", {})) for a in gpu_augment]
    return cfg


def fold_input(images, y: np.ndarray, val: int):
    n = len(images)
    return FoldInput(images, y, np.array([f"i{i}" for i in range(n)]), np.arange(n - val), np.arange(n - val, n))


# ----------------------------------------------------------------------------- loader
def loader_rate(s: GpuSettings, cfg, images, y, seconds: float, gpu_ops: list | None = None) -> float:
    """Images/s of the training DataLoader of ``make_loaders`` (workers, pinned memory), each batch
    copied to the device (and augmented there with ``gpu_ops``); steady state after two batches."""
    loader, _, sampler = make_loaders(cfg.train, cfg.data.image_size, fold_input(images, y, s.batch), 0,
                                      s.device == "cuda")
    n, t0, epoch, started = 0, None, 0, 0
    while True:
        sampler.set_epoch(epoch)
        for x, _ in ((b[0], b[1]) for b in loader):
            x = x.to(s.device, non_blocking=True)
            if gpu_ops:
                x = gpu_augment(x, gpu_ops, started)
            started += 1
            if started == 2:
                sync(s)
                t0 = time.perf_counter()
            elif started > 2:
                n += len(x)
                if time.perf_counter() - t0 >= seconds:
                    sync(s)
                    return n / (time.perf_counter() - t0)
        epoch += 1


@GPU_PARTS.register("loader", order=2, share=0.2)
def part_loader(s: GpuSettings, rec: Recorder, work: Path) -> None:
    """The loader alone at ``size`` px: by worker count with the CPU augmentations, then with none
    on the CPU and the same ops on the device (``train.gpu_augment``), then the device ops alone."""
    images, y = cached_images(work, s.loader_images, s.size)
    ops = [AugOp(a["name"], a.get("params", {})) for a in s.augment]
    for w in s.workers:
        rec(f"cpu augment, {w} workers images/s",
            loader_rate(s, experiment(s, "resnet34", w, s.augment, []), images, y, s.loader_seconds))
    for w in s.workers[-2:]:
        rec(f"gpu augment, {w} workers images/s",
            loader_rate(s, experiment(s, "resnet34", w, [], []), images, y, s.loader_seconds, ops))
    x = torch.from_numpy(np.ascontiguousarray(images[:s.batch])).permute(0, 3, 1, 2).contiguous().to(s.device)
    sec = timed(lambda: gpu_augment(x, ops, 1), s, 5)
    rec("gpu augment alone images/s", s.batch / sec)
    rec.note(f"{s.size} px uint8 from a memory-mapped cache, batch {s.batch}, pinned memory, the "
             f"3rd-place augmentations ({', '.join(a['name'] for a in s.augment)}); each batch copied to "
             f"{s.device}; {s.loader_seconds:.0f} s per setting after two batches")


# ----------------------------------------------------------------------------- train
def pipeline_epoch(s: GpuSettings, cfg, images, y, work: Path):
    """``FoldTrainer.train_epoch`` (``train.py``'s loop) over the memory-mapped cache: ``epoch() -> images``."""
    trainer = FoldTrainer(cfg, 0, fold_input(images, y, s.batch), make_accelerator(cfg),
                          Path(tempfile.mkdtemp(dir=work)))

    def epoch() -> int:
        trainer.train_epoch()
        trainer.epoch += 1
        return len(trainer.train_loader) * cfg.train.batch_size

    return epoch


@GPU_PARTS.register("train", order=3, share=0.32)
def part_train(s: GpuSettings, rec: Recorder, work: Path) -> None:
    """Per model: the pipeline with CPU augmentations, with GPU augmentations, and the bare loop."""
    images, y = cached_images(work, s.batch * (s.steps + 1), s.size)
    for model in s.models:
        flops = classifier_flops(model, s.size)["train"]
        rec(f"{model} GFLOP/image", flops / 1e9)
        fns = {"loop": pipeline_epoch(s, experiment(s, model, s.train_workers, s.augment, []), images, y, work),
               "loop gpu-aug": pipeline_epoch(s, experiment(s, model, s.train_workers, [], s.augment), images, y, work)}
        bare, _, _ = bare_trainer(experiment(s, model, 0, [], []), np.asarray(images[:s.batch * s.steps]),
                                  y[:s.batch * s.steps], s.device)
        fns["bare"] = bare
        rates = interleaved(fns, s.repeats, lambda: sync(s))
        for name, rate in rates.items():
            rec(f"{model} {name}", rate)
            if s.peak_tflops:
                rec(f"{model} {name} % of peak", 100 * rate * flops / 1e12 / s.peak_tflops)
        rec(f"{model} loop / bare", rates["loop"] / rates["bare"])
        rec(f"{model} loop gpu-aug / bare", rates["loop gpu-aug"] / rates["bare"])
        del fns
        if s.device == "cuda":
            torch.cuda.empty_cache()
    rec.note(f"{s.size} px, batch {s.batch}, {s.steps} steps per timed epoch, median of {s.repeats} after a "
             f"warm-up epoch; loop = FoldTrainer.train_epoch over the memory-mapped cache with "
             f"{s.train_workers} workers and pinned memory (CPU augmentations; gpu-aug: the same ops on the "
             f"device); bare = timm on ready device tensors; "
             f"{'bf16 autocast + channels-last' if s.device == 'cuda' else 'fp32'}")


# ----------------------------------------------------------------------------- compile
@GPU_PARTS.register("compile", order=4, share=0.27)
def part_compile(s: GpuSettings, rec: Recorder, work: Path) -> None:
    """ResNet34 through the pipeline (GPU augmentations), ``train.compile`` off and on; compile time apart."""
    images, y = cached_images(work, s.batch * (s.steps + 1), s.size)
    model = s.models[0]
    for on in (False, True):
        epoch = pipeline_epoch(s, experiment(s, model, s.train_workers, [], s.augment, on), images, y, work)
        t0 = time.perf_counter()
        epoch()                                     # the first epoch compiles
        sync(s)
        rec(f"{model} compile={'on' if on else 'off'} first epoch s", time.perf_counter() - t0)
        sec = timed(epoch, s, min(s.repeats, 2))    # timed() warms up once more (recompiles, if any)
        rec(f"{model} compile={'on' if on else 'off'} images/s", s.batch * s.steps / sec)
    rec.note("the pipeline with gpu_augment (the loader only copies), first epoch = compilation + one epoch"
             + ("; quick run: TORCH_COMPILE_DISABLE=1 (inductor takes minutes on a CPU), so 'on' runs eagerly"
                if s.quick else ""))


# ----------------------------------------------------------------------------- generate
@GPU_PARTS.register("generate", order=5, share=0.18)
def part_generate(s: GpuSettings, rec: Recorder, work: Path) -> None:
    """SD-sized UNet + DPM-Solver++ with guidance, its VAE decode, and the pixel ``ddpm`` through
    ``hpa.synthetic.modes.run_pixel_mode``: images/s each."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

    dtype = torch.bfloat16 if s.device == "cuda" else torch.float32
    torch.manual_seed(0)
    unet_cfg = s.sd_unet or SD15_UNET
    with torch.device(s.device):                # 860M parameters: initialised on the GPU, in seconds
        unet = UNet2DConditionModel(**unet_cfg).to(dtype).eval()
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                                        algorithm_type="dpmsolver++")
    b, ctx_dim = s.sd_batch, unet_cfg["cross_attention_dim"]
    text = torch.randn(2 * b, 77, ctx_dim, device=s.device, dtype=dtype)

    @torch.no_grad()
    def sample() -> None:
        sched.set_timesteps(s.sd_steps)
        z = torch.randn(b, 4, s.sd_latent, s.sd_latent, device=s.device, dtype=dtype)
        for t in sched.timesteps:
            noise = unet(torch.cat([z, z]), t, text).sample
            uncond, cond = noise.chunk(2)
            z = sched.step(uncond + 7.5 * (cond - uncond), t, z).prev_sample

    rec(f"sd unet dpmpp{s.sd_steps} latents/s", b / timed(sample, s, 2))
    unet = None                                 # free the GPU memory before the VAE
    with torch.device(s.device):
        vae = AutoencoderKL(**(s.sd_vae or SD15_VAE)).to(dtype).eval()
    z = torch.randn(b, 4, s.sd_latent, s.sd_latent, device=s.device, dtype=dtype)
    with torch.no_grad():
        rec("sd vae decode images/s", b / timed(lambda: vae.decode(z).sample, s, 2))
    vae = None
    f = rec.data["figures"]
    # one RGBY image = two SD views (hpa.synthetic.sd_lora): two 20-step samples and two decodes
    sample_s = 20 / s.sd_steps / f[f"sd unet dpmpp{s.sd_steps} latents/s"]
    rec("sd15 unet dpmpp20 images/s", 1 / (2 * sample_s + 2 / f["sd vae decode images/s"]))

    gen = stand_in_generator(work / "ddpm", s.ddpm_size, (32, 64, 64), True, s.device)
    labels = real_label_sets(s.ddpm_batch, 0)
    rec(f"ddpm{s.ddpm_size} dpmpp20 images/s",
        s.ddpm_batch / timed(lambda: generate(gen, labels, "dpmpp", 20, 0), s, 2))
    rec.note(f"SD UNet {'1.5-sized (860M parameters)' if not s.sd_unet else 'tiny'}, random weights, "
             f"{str(dtype).replace('torch.', '')}, batch {b} latents of {s.sd_latent}x{s.sd_latent}, "
             f"{s.sd_steps} DPM-Solver++ steps with guidance (2 UNet passes each); pixel ddpm "
             f"(configs/synth/ddpm_demo.yaml's UNet) at {s.ddpm_size} px, batch {s.ddpm_batch}, "
             "through run_pixel_mode")


def main(argv: list[str]) -> int:
    part, settings_path, result_path = argv
    data = json.loads(Path(settings_path).read_text())
    s = GpuSettings(**{**data, "models": tuple(data["models"]), "workers": tuple(data["workers"])})
    torch.manual_seed(0)
    rec = Recorder(Path(result_path), part)
    with tempfile.TemporaryDirectory(prefix=f"hpa-gpu-{part}-") as tmp:
        GPU_PARTS.get(part)(s, rec, Path(tmp))
    rec.data["status"] = "ok"
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
