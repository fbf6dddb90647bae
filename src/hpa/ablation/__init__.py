"""Ablation studies of synthetic data: ``grid`` (``hpa ablate``: strategies x data regimes x seeds, resumable
cells, tables and figures) and ``rare`` (per-class and rare-group F1 of the grid's cells)."""
