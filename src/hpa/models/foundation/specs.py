"""What each published HPA-pretrained backbone is: the ``FOUNDATION`` registry of :class:`FoundationSpec`.

Every entry was read off the model's own public code (the file is named in ``source``); what could not
be confirmed there is ``None`` (a URL, a sha256) or says "unconfirmed" in ``notes``, and
docs/foundation.md repeats it. An entry declares everything a loader and an embedder need: the timm
architecture and its keyword arguments, how the published state dict's keys map onto timm's
(``remap``), the channel order and how Kaggle's RGBY maps onto it (``rgby_index``), the
normalisation, patch size and native resolution, the pooled feature, the licence, URL and sha256.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpa.models.foundation.remap import REMAPS
from hpa.registry import Registry


@dataclass(frozen=True)
class FoundationSpec:
    """One published backbone. ``rgby_index[k]`` is the Kaggle RGBY channel (0 red = microtubules,
    1 green = protein, 2 blue = nucleus, 3 yellow = ER) fed to the model's input channel ``k``."""
    name: str
    title: str
    arch: str                              # timm model name the weights load into
    arch_kwargs: dict[str, Any]            # its timm.create_model keyword arguments (the published widths)
    remap: str                             # a REMAPS name: published keys -> timm keys
    channels: str                          # the model's channel order, in stain letters (r, g, b, y)
    rgby_index: tuple[int, ...]
    normalise: str                         # self: per-image per-channel z-score; minmax: whole crop to [0, 1]
    patch_size: int
    native_size: int                       # the input side it was trained at
    pool: str                              # cls | avg | cls+avg | gated (SubCell's attention pooler)
    params_m: float                        # parameters, millions (backbone + published pooler)
    licence: str
    non_commercial: bool | None            # None: not confirmed
    source: str                            # repository and file the layout was read from
    url: str | None = None                 # published weights file; None: not confirmed
    sha256: str | None = None              # of the file at ``url``; None: not published, pinned on first use
    trained_on: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)   # pooler widths etc.

    def __post_init__(self):
        if self.remap not in REMAPS:
            raise ValueError(f"foundation '{self.name}': unknown remap '{self.remap}'")
        if len(self.channels) != len(self.rgby_index):
            raise ValueError(f"foundation '{self.name}': channels and rgby_index differ in length")

    @property
    def in_chans(self) -> int:
        """Input channels of the model."""
        return len(self.rgby_index)


FOUNDATION: Registry[FoundationSpec] = Registry("foundation backbone")

_CELL_DINO = dict(
    arch="vit_large_patch16_224", remap="dinov2_chunked",
    # cell_dino_hpa_vitl16: vit_large, patch 16, img_size 224, init_values 1.0 (LayerScale), block_chunks 4
    arch_kwargs=dict(init_values=1.0, img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    channels="rgby", rgby_index=(0, 1, 2, 3), normalise="self", patch_size=16, native_size=224, pool="cls",
    params_m=304.0,
    licence="weights: FAIR Noncommercial Research License; code: CC-BY-NC 4.0", non_commercial=True,
    source="facebookresearch/dinov2 dinov2/hub/cell_dino/backbones.py (cell_dino_hpa_vitl16), "
           "dinov2/data/cell_dino/transforms.py (SelfNormalize), docs/README_CELL_DINO.md",
    trained_on="HPA images (Atlas fields of view / single cells; the Kaggle 2018 images were cut from the Atlas)",
)

FOUNDATION.register("celldino_hpa_sc")(FoundationSpec(
    name="celldino_hpa_sc", title="Cell-DINO ViT-L/16, HPA single cells", **_CELL_DINO,
    url="https://dl.fbaipublicfiles.com/dinov2/celldino/HPA_single_cell.pth",
    notes="URL from README_CELL_DINO.md (linear-eval command); sha256 not published. Channel order: the "
          "code confirms 4 channels with the protein at index 1 (RandomRemoveChannelExceptProtein); the "
          "rest follows the RGBY PNG of the sample script (unconfirmed beyond that). Trained on masked "
          "single cells: whole Kaggle fields are out of its training distribution."))

FOUNDATION.register("celldino_hpa_fov")(FoundationSpec(
    name="celldino_hpa_fov", title="Cell-DINO ViT-L/16, HPA fields of view", **_CELL_DINO,
    notes="Download URL not confirmed: README_CELL_DINO.md points to the main README's 'DINO for "
          "Biology' section, which the stored copies do not show; give model.weights (a local file or "
          "a URL). The sample script reads 'HPA_FoV_00070df0-bbc3-11e8-b2bc-ac1f6b6435d0.png', a "
          "Kaggle-2018-style Id: see the leak audit."))

for _set, _index in (("rybg", (0, 3, 2, 1)), ("rbg", (0, 2, 1)), ("ybg", (3, 2, 1)), ("bg", (2, 1))):
    FOUNDATION.register(f"subcell_{_set}")(FoundationSpec(
        name=f"subcell_{_set}", title=f"SubCell ViT-B/16 ({_set}, mae_contrast_supcon_model)",
        arch="vit_base_patch16_224", remap="hf_vit_subcell",
        # model_config.yaml: hidden 768, 12 layers, 12 heads, mlp 3072, gelu, layer_norm_eps 1e-12,
        # image_size 448, patch 16, qkv_bias; pool_model dim 768, int_dim 512, num_heads 2
        arch_kwargs=dict(img_size=448, patch_size=16, embed_dim=768, depth=12, num_heads=12, norm_eps=1e-12),
        channels=_set, rgby_index=_index, normalise="minmax", patch_size=16, native_size=448, pool="gated",
        params_m=86.4, licence="wrapper code: MIT; weights: licence not stated (unconfirmed)",
        non_commercial=None,
        source="CellProfiling/SubCellPortable vit_model.py (ViTPoolClassifier, GatedAttentionPooler), "
               f"models/{_set}/mae_contrast_supcon_model/model_config.yaml, inference.py (min_max_standardize)",
        trained_on="HPA single cells (masked, 640 px crops at 0.08 um/px at inference)",
        extra=dict(pool_int_dim=512, pool_heads=2),
        notes="Download URL not confirmed: models_urls.yaml in the stored repository holds placeholders "
              "('https://'); give model.weights (encoder.pth, a local file or a URL). Embedding: the "
              "gated attention pool over all tokens, 2 x 768 = 1536-d (the published 'pool_op')."))

FOUNDATION.register("dino4cells_hpa_fov")(FoundationSpec(
    name="dino4cells_hpa_fov", title="DINO4Cells ViT-B/16, HPA fields of view",
    arch="vit_base_patch16_224", remap="dino_teacher",
    arch_kwargs=dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12),
    channels="rgby", rgby_index=(0, 1, 2, 3), normalise="self", patch_size=16, native_size=224, pool="cls",
    params_m=85.8, licence="not stated in the code repository (unconfirmed)", non_commercial=None,
    source="broadinstitute/DINO4Cells_code archs/vision_transformer.py (vit_base), "
           "utils/utils.py (load_pretrained_weights: 'teacher', 'module.', 'backbone.'), "
           "utils/augmentations.py (self_normalize), config.yaml (image_size 224)",
    trained_on="HPA fields of view (Kaggle-2018-era Atlas images)",
    notes="Weights: Zenodo record 8061392 (HPA FoV); file name and URL not confirmed, give "
          "model.weights. RGBY order assumed from the HPA 'normalized_4_channels' mode (unconfirmed)."))
