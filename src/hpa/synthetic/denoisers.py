"""Label-conditioned denoisers for the pixel-space generators, saved in the diffusers layout.

* :class:`LabelUNet` wraps diffusers' ``UNet2DModel`` with ``class_embed_type="identity"``: the 28-dim
  multi-hot label vector is projected by a small Linear to the time-embedding width and added to it.
  The all-zero vector is the "null" label (no real image has zero labels), used for label dropout and
  classifier-free guidance.
* :class:`SimpleDenoiser` is Lin & Cao's reduced denoiser: three conv layers, the label embedding
  broadcast to maps and concatenated at the input, no timestep input.

Both are ``ModelMixin`` + ``ConfigMixin`` so ``save_pretrained`` / ``from_pretrained`` work.
"""
from __future__ import annotations

import torch
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from hpa.classes import NUM_CLASSES


class LabelUNet(ModelMixin, ConfigMixin):
    """``UNet2DModel`` conditioned on a multi-hot label vector through its identity class embedding."""

    @register_to_config
    def __init__(self, sample_size: int = 32, in_channels: int = 4, out_channels: int = 4,
                 block_out_channels: tuple = (32, 64), layers_per_block: int = 1,
                 attention: bool = True, num_labels: int = NUM_CLASSES):
        super().__init__()
        n = len(block_out_channels)
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), class_embed_type="identity",
            norm_num_groups=min(32, block_out_channels[0]), attention_head_dim=8)
        # identity class embedding expects the time-embedding width (4 x first block width)
        self.label_proj = nn.Linear(num_labels, block_out_channels[0] * 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x`` (B,C,H,W) at timesteps ``t`` for label vectors ``labels`` (B,28)."""
        emb = self.label_proj(labels.to(self.label_proj.weight.dtype))
        return self.unet(x, t, class_labels=emb).sample


class SimpleDenoiser(ModelMixin, ConfigMixin):
    """Three conv layers; labels embedded, broadcast and concatenated at the input; no timestep."""

    @register_to_config
    def __init__(self, in_channels: int = 4, out_channels: int = 4, channels: int = 64,
                 label_dim: int = 16, num_labels: int = NUM_CLASSES, sample_size: int = 32):
        super().__init__()
        self.label_emb = nn.Linear(num_labels, label_dim)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + label_dim, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x``; ``t`` is accepted for a common signature and ignored (by design)."""
        e = self.label_emb(labels.to(x.dtype))[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, e], dim=1))
