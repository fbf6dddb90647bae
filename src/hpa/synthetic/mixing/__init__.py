"""Feeding synthetic images to classifier training (the images themselves come from ``hpa.synthetic``):
the leak-proof per-fold ``SyntheticPool`` and the ``MIXING_STRATEGIES`` registry (concat, replace,
local/global replacement, mixup, mix representation, mix loss, two-phase fine-tuning)."""
from hpa.synthetic.mixing.pool import SyntheticPool, load_manifests, read_pool_manifest
from hpa.synthetic.mixing.strategies import MIXING_STRATEGIES, Strategy, build_strategy

__all__ = ["MIXING_STRATEGIES", "Strategy", "SyntheticPool", "build_strategy", "load_manifests",
           "read_pool_manifest"]
