"""Generation with a trained ``sd_lora`` folder: every mode in latent space, two RGB views per image.

The pipeline is rebuilt from its pretrained source, the LoRA loaded with ``pipe.load_lora_weights``
and the class tokens (if any) added back. Both views of an image start from the same noise (same
seed) and are recombined into RGBY (see ``hpa.synth.sd_lora``). ``prompt_mix`` (MVC) mixes the text
embeddings of two prompt templates of the same label set with a per-image random weight.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.synth import sampling
from hpa.synth.data import to_model, to_uint8
from hpa.synth.sd_lora import VIEWS, _encode_text, _views, add_class_tokens, load_pipeline, prompt_for


class SDLoraGenerator:
    """A Stable Diffusion pipeline with a trained HPA LoRA, usable by ``hpa.synth.generate``."""

    kind = "sd_lora"
    modes = ("noise", "sdedit", "mix", "invert", "interp", "prompt_mix")

    def __init__(self, model_dir: str | Path, meta: dict, device: str = "cpu"):
        self.dir, self.meta, self.device = Path(model_dir), meta, device
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
        try:
            unet = UNet2DConditionModel.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise HPAError(f"model.lcm_weights: cannot load '{folder}' ({str(e).splitlines()[0]})") from None
        self.pipe.unet = unet.to(self.device)
        self.pipe.load_lora_weights(self.dir / "lora")

    def train_rows(self) -> pd.DataFrame:
        """``Id,Target`` of the images the LoRA was trained on."""
        return read_csv(self.dir / "train_ids.csv", ["Id", "Target"])

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

    def generate_batch(self, opts, jobs, load_sources) -> np.ndarray:
        """Make one batch of ``jobs``; returns uint8 ``(B,S,S,4)`` RGBY at the model size."""
        from hpa.synth.generate import image_generators
        b = len(jobs)
        src = to_model(load_sources([j.source_id for j in jobs])) if jobs[0].source_id else None
        part = to_model(load_sources([j.partner_id for j in jobs])) if opts.mode == "interp" else None
        mix_w = ([float(np.random.default_rng(j.seed).uniform()) for j in jobs]
                 if opts.mode == "prompt_mix" else None)
        views = []
        for v, view in enumerate(VIEWS):
            text = self._text([j.labels for j in jobs], view, mix_w)
            eps = self._eps_fn(text, opts.guidance)
            gens = image_generators(jobs)          # re-seeded per view: both views share the noise
            if opts.mode in ("noise", "prompt_mix"):
                sched = sampling.make_scheduler(opts.sampler, self.sched_config)
                ch = self.pipe.unet.config.in_channels
                lat_size = self.size // self.pipe.vae_scale_factor
                z = sampling.sample(eps, sched, (b, ch, lat_size, lat_size), opts.steps, gens, self.device)
            else:
                z0 = self._encode(_views(src)[v * b:(v + 1) * b])
                if opts.mode in ("sdedit", "mix"):
                    sched = sampling.make_scheduler(opts.sampler, self.sched_config)
                    z = sampling.sdedit(eps, sched, z0, opts.strength, opts.steps, gens)
                else:
                    src_eps = self._eps_fn(self._text([j.source_labels for j in jobs], view, None), 1.0)
                    z_t = sampling.ddim_invert(src_eps, self.sched_config, z0, opts.steps)
                    if opts.mode == "interp":
                        p0 = self._encode(_views(part)[v * b:(v + 1) * b])
                        z_t = sampling.slerp(z_t, sampling.ddim_invert(src_eps, self.sched_config, p0, opts.steps),
                                             opts.interp_alpha)
                    z = sampling.regenerate(eps, self.sched_config, z_t, opts.steps)
            views.append(self._decode(z))
        a, y = views
        rgby = torch.stack([a[:, 0], (a[:, 1] + y[:, 1]) / 2, (a[:, 2] + y[:, 2]) / 2, y[:, 0]], 1)
        return to_uint8(rgby)
