"""A tiny random Stable Diffusion pipeline in the diffusers layout, standing in for real weights offline.

Same architecture family as the real model (2-block ``UNet2DConditionModel`` with cross-attention,
2-block ``AutoencoderKL``, 5-layer ``CLIPTextModel``, CLIP BPE tokenizer over a minimal byte-level
vocabulary), a few MB, random weights: it exercises every code path of ``sd_lora`` without a download.
``hpa synth tiny-sd --out models/tiny-sd`` writes one; pass the folder as ``model.pretrained``.
"""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_tokenizer():
    """A ``CLIPTokenizer`` whose vocabulary is every byte character (plus ``</w>`` forms) and a few merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    chars = list(bytes_to_unicode().values())
    vocab = (["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
             + ["pr", "pro", "prot", "ei", "ein</w>"])
    merges = [("p", "r"), ("pr", "o"), ("pro", "t"), ("e", "i"), ("ei", "n</w>")]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, model_max_length=77)


def make_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Save a random tiny ``StableDiffusionPipeline`` to ``folder`` (``save_pretrained``); return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                                in_channels=4, out_channels=4, cross_attention_dim=32, norm_num_groups=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    te = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                                      intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                                      vocab_size=1000, projection_dim=32))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tiny_tokenizer(), unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return Path(folder)
