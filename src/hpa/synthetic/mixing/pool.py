"""``SyntheticPool``: the synthetic images one fold may train on, leak-proof by construction.

For fold k a manifest row is kept only when
- its generator did not see fold k (``generator_trained_on`` is not ``all`` and does not list k),
- its ``source_id`` (when set) is one of fold k's *training* Ids, so it is never a validation Id
  (nor an image left out by ``data.fraction``),
- its ``filter_score`` reaches ``min_filter_score`` (when that is > 0).
Every exclusion is counted by reason; :meth:`SyntheticPool.counts` goes into ``fold<k>/synthetic.json``.
A manifest without provenance columns (``source_id``, ``generator_trained_on``) is refused unless
``allow_no_provenance`` is set, in which case its rows count as trained on no fold and sourced from
nothing (the user vouches for them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES
from hpa.data.images import read_kaggle_rgby
from hpa.data.labels import parse_target
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.synthetic.manifest import parse_label_weights, read_manifest, trained_on_folds

PROVENANCE = ("source_id", "generator_trained_on")
REASONS = ("generator_saw_fold", "source_in_validation", "source_not_in_train", "filter_score")


def read_pool_manifest(path: str | Path, allow_no_provenance: bool = False) -> pd.DataFrame:
    """Read one manifest for pooling; return rows with ``Id, labels, label_weights, source_id,
    trained_on`` (set of folds, or None = all) and ``image_dir``.

    A manifest lacking a provenance column (or with an empty ``generator_trained_on``) raises
    HPAError unless ``allow_no_provenance``.
    """
    path = Path(path)
    head = read_csv(path, ["Id", "Target"])
    lacking = [c for c in PROVENANCE if c not in head.columns]
    if not lacking and (head["generator_trained_on"].astype(str).str.strip() == "").any():
        lacking = ["generator_trained_on (empty values)"]
    if lacking and not allow_no_provenance:
        raise HPAError(f"{path}: manifest without provenance ({', '.join(lacking)}); refusing it because "
                       f"leaks cannot be ruled out (set synthetic.allow_no_provenance=true to accept)")
    if not lacking:
        df = read_manifest(path)
        trained = [trained_on_folds(v) for v in df["generator_trained_on"]]
    else:
        df = head.fillna("")
        df["labels"] = [parse_target(t, f"{path}: row {i + 2}") for i, t in enumerate(df["Target"])]
        for col in ("source_id", "label_weights"):
            df[col] = df[col] if col in df.columns else ""
        df["filter_score"] = pd.to_numeric(df.get("filter_score", np.nan), errors="coerce")
        trained = [set() for _ in range(len(df))]
    out = df[["Id", "labels", "label_weights", "source_id", "filter_score"]].copy()
    out["source_id"] = out["source_id"].fillna("").astype(str)
    out["trained_on"] = trained
    out["image_dir"] = str(path.parent / "train")
    return out


def load_manifests(paths: list[str], allow_no_provenance: bool = False) -> pd.DataFrame:
    """Concatenate :func:`read_pool_manifest` of every path; HPAError on an Id listed twice."""
    if not paths:
        raise HPAError("synthetic.manifests: empty; a synthetic strategy needs at least one manifest")
    df = pd.concat([read_pool_manifest(p, allow_no_provenance) for p in paths], ignore_index=True)
    dup = df["Id"].duplicated()
    if dup.any():
        raise HPAError(f"synthetic.manifests: Id '{df['Id'][dup].iat[0]}' appears in two manifests")
    return df


def targets(rows: pd.DataFrame, soft_labels: bool) -> np.ndarray:
    """``(N, 28)`` float32 targets of manifest rows: soft ``label_weights`` when asked and present."""
    y = np.zeros((len(rows), NUM_CLASSES), dtype=np.float32)
    for i, (labels, weights) in enumerate(zip(rows["labels"], rows["label_weights"])):
        soft = parse_label_weights(weights) if soft_labels and str(weights).strip() else None
        for c in labels:
            y[i, c] = soft.get(c, 0.0) if soft else 1.0
    return y


def exclusion_reason(row, fold: int, train_ids: set, val_ids: set, min_score: float) -> str:
    """Why a manifest row may not be used by fold ``fold`` ("" when it may)."""
    if row.trained_on is None or fold in row.trained_on:
        return "generator_saw_fold"
    if row.source_id and row.source_id in val_ids:
        return "source_in_validation"
    if row.source_id and row.source_id not in train_ids:
        return "source_not_in_train"
    if min_score > 0 and not (row.filter_score >= min_score):     # NaN (unfiltered) fails too
        return "filter_score"
    return ""


@dataclass
class SyntheticPool:
    """The synthetic images fold ``fold`` may use: Ids, source Ids, targets and loaded images."""
    fold: int
    ids: np.ndarray                        # (M,) str
    source_ids: np.ndarray                 # (M,) str ("" = from noise)
    y: np.ndarray                          # (M, 28) float32
    images: np.ndarray                     # (M, H, W, 4) uint8
    excluded: dict = field(default_factory=dict)
    n_manifest: int = 0

    @classmethod
    def for_fold(cls, manifest: pd.DataFrame, fold: int, train_ids, val_ids, size: int,
                 min_filter_score: float = 0.0, soft_labels: bool = False) -> "SyntheticPool":
        """Filter ``manifest`` (from :func:`load_manifests`) for ``fold`` and load the kept images."""
        tr, va = set(map(str, train_ids)), set(map(str, val_ids))
        if tr & va:
            raise HPAError(f"fold {fold}: Id '{sorted(tr & va)[0]}' is in both training and validation")
        reasons = [exclusion_reason(r, fold, tr, va, min_filter_score) for r in manifest.itertuples()]
        kept = manifest[[r == "" for r in reasons]].reset_index(drop=True)
        excluded = {k: sum(r == k for r in reasons) for k in REASONS}
        imgs = np.zeros((len(kept), size, size, 4), dtype=np.uint8)
        for i, (sid, d) in enumerate(zip(kept["Id"], kept["image_dir"])):
            imgs[i] = read_kaggle_rgby(d, sid, size)
        return cls(fold, kept["Id"].to_numpy().astype(str), kept["source_id"].to_numpy().astype(str),
                   targets(kept, soft_labels), imgs, excluded, len(manifest))

    def __len__(self) -> int:
        return len(self.ids)

    def variants(self) -> dict[str, np.ndarray]:
        """``source_id`` -> indices of this pool's images made from that real image."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.source_ids):
            if s:
                out.setdefault(s, []).append(i)
        return {k: np.array(v) for k, v in out.items()}

    def counts(self) -> dict:
        """``{fold, manifest_rows, used, excluded, excluded_by}``: what the run report states."""
        return {"fold": self.fold, "manifest_rows": self.n_manifest, "used": len(self),
                "excluded": int(sum(self.excluded.values())), "excluded_by": dict(self.excluded)}
