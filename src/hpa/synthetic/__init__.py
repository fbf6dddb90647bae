"""Synthetic images in k-fold classifier training: the leak-proof per-fold ``SyntheticPool`` and the
``STRATEGIES`` registry (concat, replace, local/global replacement, mixup, mix representation, mix loss,
two-phase fine-tuning)."""
from hpa.synthetic.pool import SyntheticPool, load_manifests, read_pool_manifest
from hpa.synthetic.strategies import STRATEGIES, Strategy, build_strategy, write_counts

__all__ = ["STRATEGIES", "Strategy", "SyntheticPool", "build_strategy", "load_manifests",
           "read_pool_manifest", "write_counts"]
