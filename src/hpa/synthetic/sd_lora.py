"""``sd_lora``: a pretrained Stable Diffusion (hub id or local diffusers folder) fine-tuned on HPA images
with a peft LoRA on the UNet, optionally with one textual-inversion token per class (DA-Fusion).

RGBY scheme ("two views"): Stable Diffusion sees 3-channel images, so each RGBY sample is shown as two
RGB views that share green and blue: view ``rgb`` = (R, G, B) and view ``ygb`` = (Y, G, B), each with
its stain named in the prompt. Generation runs both views from the same seed (same initial noise) and
recombines them: R from ``rgb``, Y from ``ygb``, G and B averaged. RGBY is never passed to a diffusers
pipeline as a 4-channel tensor (img2img would take it for latents): we encode each 3-channel view
with the VAE ourselves.

Saved folder: ``lora/pytorch_lora_weights.safetensors`` (diffusers format: ``pipe.load_lora_weights``
reads it), ``tokens.pt`` (textual-inversion embeddings, when used), ``generator.json``,
``history.csv``, ``train_ids.csv``. Generation (:class:`SDLoraGenerator`) rebuilds the pipeline from its
pretrained source, loads the LoRA and the class tokens, and runs every mode in latent space, both views
of an image from the same seed. ``prompt_mix`` (MVC) mixes the text embeddings of two prompt templates
of the same label set with a per-image random weight.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm import tqdm

from hpa.classes import CLASS_NAMES
from hpa.errors import HPAError
from hpa.io import write_csv, write_json
from hpa.synthetic import sampling
from hpa.synthetic.config import SynthConfig, as_dict
from hpa.synthetic.data import load_images, to_model, to_uint8, training_rows
from hpa.synthetic.generate import image_generators
from hpa.synthetic.manifest import format_folds
from hpa.synthetic.modes import DIFFUSION_MODES, MODES, ModeOptions
from hpa.synthetic.protocol import DiffusionGenerator

VIEWS = {"rgb": ([0, 1, 2], "microtubules"), "ygb": ([3, 1, 2], "endoplasmic reticulum")}
TEMPLATES = ("fluorescence microscopy of human cells, {stain} in red, protein in {labels}",
             "confocal image of cultured cells, {stain} reference stain, green protein at {labels}")


def class_token(k: int) -> str:
    """The textual-inversion token of class ``k``."""
    return f"<hpa-{k}>"


def prompt_for(labels: list[int], view: str, tokens: bool, template: int = 0) -> str:
    """Prompt for a label set and view: label names (plus class tokens when textual inversion is on)."""
    names = ", ".join(f"{class_token(k)} {CLASS_NAMES[k]}" if tokens else CLASS_NAMES[k] for k in labels)
    return TEMPLATES[template].format(stain=VIEWS[view][1], labels=names.lower())


def looks_local(name: str) -> bool:
    """True when ``name`` can only be a local path, not a hub id (``owner/name``): it exists, is
    absolute or relative (``./``, ``../``, ``~``), or has more than one ``/``."""
    return (Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~", "."))
            or name.count("/") > 1 or "\\" in name)


def check_local_model(name: str, key: str, marker: str, what: str) -> None:
    """Refuse a local path that does not hold a model, offline, naming the missing file: ``name`` must
    be a folder holding ``marker``. A hub id (``owner/name`` not present locally) passes."""
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if not path.is_dir():
        raise HPAError(f"{key}: {path}: missing (no such folder)")
    if not (path / marker).is_file():
        raise HPAError(f"{key}: {path / marker}: missing (not {what})")


def hub_advice(pretrained: str, e: BaseException) -> str:
    """The one-line error for a hub id that did not load: what to do, not diffusers' text (which points
    at a stack trace the user never sees)."""
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "stack" in reason.lower() or "not cached locally" in reason or "offline" in reason.lower():
        reason = "not in the local cache and the hub could not be reached"
    cache = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (f"model.pretrained: cannot load '{pretrained}' from the Hugging Face hub ({reason}); on a machine "
            f"with network, pre-download it with 'huggingface-cli download {pretrained}' into the cache "
            f"({cache}; set HF_HOME to use another), or point model.pretrained at a local diffusers folder")


def load_pipeline(pretrained: str, device: str = "cpu"):
    """``StableDiffusionPipeline.from_pretrained`` (hub id or local folder), safety checker off.

    A local folder is checked first (``model_index.json``), so a wrong path never reaches the hub."""
    from diffusers import StableDiffusionPipeline
    if not pretrained:
        raise HPAError("model.pretrained: sd_lora needs a Stable Diffusion hub id or local folder")
    check_local_model(pretrained, "model.pretrained", "model_index.json", "a diffusers pipeline folder")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None,
                                                       requires_safety_checker=False)
    except (OSError, ValueError) as e:
        if looks_local(pretrained):
            raise HPAError(f"model.pretrained: cannot load '{pretrained}' ({str(e).splitlines()[0]})") from None
        raise HPAError(hub_advice(pretrained, e)) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def add_class_tokens(pipe) -> list[int]:
    """Add ``<hpa-k>`` tokens (initialised from the word "protein"); return their ids."""
    tok, te = pipe.tokenizer, pipe.text_encoder
    tokens = [class_token(k) for k in range(len(CLASS_NAMES))]
    tok.add_tokens([t for t in tokens if t not in tok.get_vocab()])
    ids = tok.convert_tokens_to_ids(tokens)
    te.resize_token_embeddings(len(tok))
    init = tok.encode("protein", add_special_tokens=False)[0]
    with torch.no_grad():
        emb = te.get_input_embeddings().weight
        emb[ids] = emb[init].clone()
    return ids


def _views(x: torch.Tensor) -> torch.Tensor:
    """RGBY [-1,1] (B,4,H,W) -> (2B,3,H,W): the ``rgb`` views, then the ``ygb`` views."""
    return torch.cat([x[:, VIEWS["rgb"][0]], x[:, VIEWS["ygb"][0]]])


def _encode_text(pipe, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0]


def train_sd_lora(cfg: SynthConfig, fold: str, out_dir: str | Path) -> Path:
    """Fine-tune a LoRA (and class tokens) on the images outside ``fold``; return the saved folder."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    out_dir, t_start = Path(out_dir), time.time()
    rows, trained_on = training_rows(cfg, fold)
    images = load_images(cfg, rows)      # uint8 until the batch: 4x less RAM than float32
    acc = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.train.accum_steps)
    torch.manual_seed(cfg.seed)
    pipe = load_pipeline(cfg.model.pretrained, "cpu")
    unet, vae, te = pipe.unet, pipe.vae, pipe.text_encoder
    for m in (unet, vae, te):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha,
                                init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    token_ids = add_class_tokens(pipe) if cfg.model.textual_inversion else []
    if token_ids:
        te.get_input_embeddings().weight.requires_grad_(True)
        params.append(te.get_input_embeddings().weight)
        orig = te.get_input_embeddings().weight.detach().clone()
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=0.0)
    unet, te, opt = acc.prepare(unet, te, opt)
    vae.to(acc.device)
    sched = pipe.scheduler
    g = torch.Generator().manual_seed(cfg.seed + 1000 * acc.process_index)
    labels = list(rows["labels"])
    bs, history = min(cfg.train.batch_size, len(images)), []
    bar = tqdm(range(cfg.train.steps * cfg.train.accum_steps), desc=f"synth train sd_lora fold {fold}",
               disable=not acc.is_main_process)
    for it in bar:
        idx = torch.randint(0, len(images), (bs,), generator=g)
        prompts = [prompt_for(labels[i], v, bool(token_ids)) for v in VIEWS for i in idx.tolist()]
        with torch.no_grad():
            lat = vae.encode(_views(to_model(images[idx.numpy()])).to(acc.device)).latent_dist.sample(g)
            lat = lat * vae.config.scaling_factor
        noise = torch.randn(lat.shape, generator=g).to(acc.device)
        t = torch.randint(0, sched.config.num_train_timesteps, (lat.shape[0],), generator=g).to(acc.device)
        with acc.accumulate(unet):
            target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(lat, noise, t)
            pred = unet(sched.add_noise(lat, noise, t), t, _encode_text(pipe, prompts)).sample
            loss = F.mse_loss(pred.float(), target.float())
            acc.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if token_ids:   # only the class tokens learn; every other embedding row stays as it was
            with torch.no_grad():
                keep = torch.ones(orig.shape[0], dtype=torch.bool)
                keep[token_ids] = False
                acc.unwrap_model(te).get_input_embeddings().weight[keep] = orig[keep]
        history.append({"step": it + 1, "loss": loss.item()})
        bar.set_postfix(loss=f"{loss.item():.4f}")
    acc.wait_for_everyone()
    if acc.is_main_process:
        tmp = out_dir.parent / f".{out_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        lora = convert_state_dict_to_diffusers(get_peft_model_state_dict(acc.unwrap_model(unet)))
        type(pipe).save_lora_weights(tmp / "lora", unet_lora_layers=lora)
        if token_ids:
            emb = acc.unwrap_model(te).get_input_embeddings().weight.detach()
            torch.save({class_token(k): emb[i].clone() for k, i in enumerate(token_ids)}, tmp / "tokens.pt")
        write_csv(tmp / "history.csv", pd.DataFrame(history))
        write_csv(tmp / "train_ids.csv", rows[["Id", "Target"]])
        write_json(tmp / "generator.json", {
            "generator": "sd_lora", "fold": fold, "generator_trained_on": format_folds(trained_on),
            "pretrained": cfg.model.pretrained, "image_size": cfg.data.image_size, "rgby_scheme": "two_views",
            "textual_inversion": bool(token_ids), "n_images": len(rows), "config": as_dict(cfg)})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        print(f"synth train: sd_lora on {len(rows)} images (folds {format_folds(trained_on)}), "
              f"{cfg.train.steps} steps, final loss {history[-1]['loss']:.4f}, {time.time() - t_start:.0f}s -> {out_dir}")
    return out_dir


class SDLoraGenerator(DiffusionGenerator):
    """``sd_lora``: a Stable Diffusion pipeline with a trained HPA LoRA (every diffusion mode, in latents)."""

    kind = "sd_lora"
    modes = DIFFUSION_MODES
    required_files = ("lora", "lora/pytorch_lora_weights.safetensors", "train_ids.csv")

    @classmethod
    def train(cls, cfg: SynthConfig, fold: str, out_dir: Path) -> Path:
        """See ``Generator.train``; the loop is :func:`train_sd_lora`."""
        return train_sd_lora(cfg, fold, out_dir)

    @classmethod
    def missing_files(cls, model_dir: Path, meta: dict) -> list[Path]:
        """The LoRA files, and ``tokens.pt`` when trained with textual inversion (the pretrained
        pipeline is checked by :func:`load_pipeline`)."""
        missing = super().missing_files(model_dir, meta)
        if meta.get("textual_inversion") and not (model_dir / "tokens.pt").is_file():
            missing.append(model_dir / "tokens.pt")
        return missing

    def __init__(self, model_dir: str | Path, meta: dict, device: str = "cpu"):
        super().__init__(model_dir, meta, device)
        self.pipe = load_pipeline(meta["pretrained"], device)
        self.pipe.load_lora_weights(self.dir / "lora")
        self.tokens = bool(meta.get("textual_inversion"))
        if self.tokens:
            ids = add_class_tokens(self.pipe)
            saved = torch.load(self.dir / "tokens.pt", map_location="cpu", weights_only=True)
            with torch.no_grad():
                emb = self.pipe.text_encoder.get_input_embeddings().weight
                for i, (_, vec) in zip(ids, sorted(saved.items(), key=lambda kv: int(kv[0][5:-1]))):
                    emb[i] = vec.to(emb.device)
        self.size = int(meta["image_size"])
        self.sched_config = dict(self.pipe.scheduler.config)
        self.vae = self.pipe.vae

    def use_lcm(self, folder: str | Path) -> None:
        """Swap in an LCM-distilled UNet (diffusers folder) and re-apply this generator's LoRA."""
        from diffusers import UNet2DConditionModel
        check_local_model(str(folder), "model.lcm_weights", "config.json", "a diffusers UNet folder")
        try:
            unet = UNet2DConditionModel.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise HPAError(f"model.lcm_weights: cannot load '{folder}' ({str(e).splitlines()[0]})") from None
        self.pipe.unet = unet.to(self.device)
        self.pipe.load_lora_weights(self.dir / "lora")

    @torch.no_grad()
    def _text(self, labels: list[list[int]], view: str, mix_w: list[float] | None) -> torch.Tensor:
        emb = _encode_text(self.pipe, [prompt_for(l, view, self.tokens) for l in labels])
        if mix_w is not None:   # MVC: convex mix of two prompts' embeddings of the same label set
            alt = _encode_text(self.pipe, [prompt_for(l, view, self.tokens, template=1) for l in labels])
            w = torch.tensor(mix_w, device=emb.device).view(-1, 1, 1)
            emb = (1 - w) * emb + w * alt
        return emb

    def _eps_fn(self, text: torch.Tensor, guidance: float):
        null = _encode_text(self.pipe, [""] * len(text))

        @torch.no_grad()
        def fn(x, t):
            if abs(guidance - 1.0) < 1e-9:
                return self.pipe.unet(x, t, text).sample
            e_u, e_c = self.pipe.unet(torch.cat([x, x]), t, torch.cat([null, text])).sample.chunk(2)
            return e_u + guidance * (e_c - e_u)
        return fn

    @torch.no_grad()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        # the posterior mean, not a sample: editing and inversion stay deterministic
        return self.vae.encode(x.to(self.device)).latent_dist.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def prepare_latents(self, images: torch.Tensor, view: int) -> torch.Tensor:
        """VAE latents (posterior mean) of view ``view`` (0 = rgb, 1 = ygb) of RGBY [-1,1] ``images``."""
        b = len(images)
        return self._encode(_views(images)[view * b:(view + 1) * b])

    def __call__(self, opts: ModeOptions, jobs, load_sources) -> np.ndarray:
        """Make one batch of ``jobs``; returns uint8 ``(B,S,S,4)`` RGBY at the model size."""
        mode, b = MODES[opts.mode], len(jobs)
        src = to_model(load_sources([j.source_id for j in jobs])) if jobs[0].source_id else None
        part = to_model(load_sources([j.partner_id for j in jobs])) if mode.partner else None
        mix_w = ([float(np.random.default_rng(j.seed).uniform()) for j in jobs] if mode.needs_text else None)
        lat_size = self.size // self.pipe.vae_scale_factor
        shape = (b, self.pipe.unet.config.in_channels, lat_size, lat_size)
        views = []
        for v, view in enumerate(VIEWS):
            eps = self._eps_fn(self._text([j.labels for j in jobs], view, mix_w), opts.guidance)
            gens = image_generators(jobs)          # re-seeded per view: both views share the noise
            z0 = self.prepare_latents(src, v) if mode.start != "noise" else None
            src_eps = partner = None
            if mode.start == "inversion":
                src_eps = self._eps_fn(self._text([j.source_labels for j in jobs], view, None), 1.0)
                partner = (src_eps, self.prepare_latents(part, v)) if mode.partner else None
            z = sampling.run_mode(opts, eps, shape, self.sched_config, gens, self.device, z0, src_eps, partner)
            views.append(self._decode(z))
        a, y = views
        rgby = torch.stack([a[:, 0], (a[:, 1] + y[:, 1]) / 2, (a[:, 2] + y[:, 2]) / 2, y[:, 0]], 1)
        return to_uint8(rgby)
