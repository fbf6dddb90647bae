"""Backbones pretrained on Human Protein Atlas images (Cell-DINO, SubCell, DINO4Cells), loaded into timm.

``model.name: foundation/<name>`` in an experiment config (train.py) or ``embed.source`` (``hpa
embed``) picks an entry of ``FOUNDATION`` (:mod:`.specs`); :func:`build_foundation` builds it and
loads its weights (:mod:`.weights`: cache, resumable download, sha256; :mod:`.remap`: published key
layouts). docs/foundation.md has the table and what each score does and does not measure.
"""
from hpa.models.foundation.backbone import (POOLS, FoundationBackbone, GatedAttentionPool, build_foundation,
                                            check_params, foundation_name, load_published, read_checkpoint)
from hpa.models.foundation.specs import FOUNDATION, FoundationSpec
from hpa.models.foundation.weights import DEFAULT_CACHE, resolve_weights, sha256_of

__all__ = ["FOUNDATION", "FoundationSpec", "FoundationBackbone", "GatedAttentionPool", "POOLS", "build_foundation", "check_params",
           "foundation_name", "load_published", "read_checkpoint", "resolve_weights", "sha256_of", "DEFAULT_CACHE"]
