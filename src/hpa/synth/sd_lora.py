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
``history.csv``, ``train_ids.csv``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm import tqdm

from hpa.classes import CLASS_NAMES
from hpa.errors import HPAError
from hpa.io import write_csv, write_json
from hpa.synth.config import SynthConfig, as_dict
from hpa.synth.data import load_images, to_model, training_rows
from hpa.synth.manifest import format_folds

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


def load_pipeline(pretrained: str, device: str = "cpu"):
    """``StableDiffusionPipeline.from_pretrained`` (hub id or local folder), safety checker off."""
    from diffusers import StableDiffusionPipeline
    if not pretrained:
        raise HPAError("model.pretrained: sd_lora needs a Stable Diffusion hub id or local folder")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None,
                                                       requires_safety_checker=False)
    except (OSError, ValueError) as e:
        raise HPAError(f"model.pretrained: cannot load '{pretrained}' ({str(e).splitlines()[0]})") from None
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
    images = to_model(load_images(cfg, rows))
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
            lat = vae.encode(_views(images[idx]).to(acc.device)).latent_dist.sample(g)
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
