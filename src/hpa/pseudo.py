"""Pseudo-labelling: a second round of training that adds confidently predicted test images.

The first round is a finished run with ``test_probs.csv`` (``hpa infer``) and ``thresholds.json``
(``hpa thresholds``). An image's pseudo label is its classes at or above their thresholds (the same
rule as the submission, :func:`hpa.thresholds.tuner.apply_thresholds`; ``proportion`` thresholds are
re-fitted on the test probabilities as inference does); its confidence is the probability of its
weakest predicted class. Images with no class over its threshold, or a confidence below
``pseudo.min_confidence``, are left out; of the rest at most ``pseudo.max_fraction`` of the test images
are kept, the most confident first. The result is ``pseudo_labels.csv`` (``Id,Target,source_run,
confidence``, docs/formats.md) in the second run's folder: its provenance, like the synthetic-image
manifest's. Pseudo-labelled images join the training rows of every fold and never a validation fold,
so OOF scores stay on real labels only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpa.classes import PROB_COLUMNS
from hpa.cli_args import add_run
from hpa.data.labels import format_target, parse_target, to_multihot
from hpa.errors import HPAError
from hpa.io import check_output_file, read_csv, write_csv
from hpa.rundir import RunDir, run_folder
from hpa.thresholds.tuner import apply_thresholds, thresholds_for_test

PSEUDO_COLUMNS = ["Id", "Target", "source_run", "confidence"]


def select_pseudo(probs: pd.DataFrame, thresholds: np.ndarray, min_confidence: float = 0.0,
                  max_fraction: float = 1.0, source_run: str = "") -> pd.DataFrame:
    """The pseudo labels of ``Id,p0..p27`` test probabilities (``PSEUDO_COLUMNS``), in the order of
    ``probs``; see the module docstring for the rule."""
    p = probs[PROB_COLUMNS].to_numpy(np.float64)
    pred = apply_thresholds(p, thresholds).astype(bool)
    conf = np.where(pred, p, np.inf).min(1)
    ok = pred.any(1) & (conf >= min_confidence)
    cap = int(np.floor(max_fraction * len(p)))
    ranked = np.flatnonzero(ok)[np.argsort(-conf[ok], kind="stable")][:cap]
    keep = np.sort(ranked)
    return pd.DataFrame({"Id": probs["Id"].astype(str).to_numpy()[keep],
                         "Target": [format_target(np.flatnonzero(pred[i])) for i in keep],
                         "source_run": str(source_run), "confidence": conf[keep]}, columns=PSEUDO_COLUMNS)


def pseudo_from_run(run: str | Path, min_confidence: float = 0.0, max_fraction: float = 1.0) -> pd.DataFrame:
    """:func:`select_pseudo` over a finished run folder's ``test_probs.csv`` and ``thresholds.json``."""
    rd = RunDir(run)
    if not rd.test_probs.is_file():
        raise HPAError(f"{rd.test_probs}: not found (pseudo.from_run needs the first round's test "
                       "probabilities: run 'hpa infer' on it first)")
    thr = rd.read_thresholds()
    if thr is None:
        raise HPAError(f"{rd.thresholds()}: not found (pseudo.from_run needs the first round's thresholds: "
                       "run 'hpa thresholds' on it first)")
    probs = rd.read_test_probs()
    return select_pseudo(probs, thresholds_for_test(thr, probs[PROB_COLUMNS].to_numpy(np.float64)),
                         min_confidence, max_fraction, str(rd.path))


def write_pseudo(path: str | Path, df: pd.DataFrame) -> Path:
    """Write a pseudo-label CSV (atomically)."""
    return write_csv(path, df[PSEUDO_COLUMNS])


def read_pseudo(path: str | Path) -> pd.DataFrame:
    """Read and check a pseudo-label CSV: columns, unique Ids, Targets, confidences in [0, 1]."""
    path = Path(path)
    df = read_csv(path, PSEUDO_COLUMNS)
    dup = df["Id"].duplicated()
    if dup.any():
        raise HPAError(f"{path}: duplicate Id '{df['Id'][dup].iat[0]}'")
    for i, t in enumerate(df["Target"]):
        parse_target(t, f"{path}: row {i + 2}")
    conf = pd.to_numeric(df["confidence"], errors="coerce")
    bad = ~((conf >= 0) & (conf <= 1))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise HPAError(f"{path}: row {r + 2}, column confidence: {df['confidence'].iat[r]!r} is not in [0, 1]")
    df["confidence"] = conf.astype(float)
    return df


def pseudo_matrix(df: pd.DataFrame) -> np.ndarray:
    """The ``(N, 28)`` uint8 multi-hot labels of a pseudo-label table."""
    return to_multihot(parse_target(t) for t in df["Target"])


def pseudo_stats(df: pd.DataFrame) -> str:
    """One line: how many test images are pseudo-labelled, their confidence range and label count."""
    if df.empty:
        return "pseudo labels: no test image qualified (pseudo.min_confidence, thresholds)"
    n_labels = df["Target"].str.count(" ") + 1
    return (f"pseudo labels: {len(df)} test images from {df['source_run'].iat[0]} (confidence "
            f"{df['confidence'].min():.3f}-{df['confidence'].max():.3f}, {n_labels.mean():.2f} labels per image), "
            "training rows only")


# ----------------------------------------------------------------------------- command line
def add_arguments(p) -> None:
    """``hpa pseudo-label`` options."""
    add_run(p, config_help="the first round's experiment YAML (its run folder: test_probs.csv, thresholds.json)")
    p.add_argument("--out", required=True, help="pseudo-label CSV to write (Id,Target,source_run,confidence)")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="every predicted class of an image needs p >= this (pseudo.min_confidence)")
    p.add_argument("--max-fraction", type=float, default=1.0,
                   help="keep at most this share of the test images, most confident first (pseudo.max_fraction)")


def main(args) -> int:
    """Write the pseudo labels a second round with ``pseudo.from_run: <run>`` would train on."""
    for name, v, ok in (("--min-confidence", args.min_confidence, 0 <= args.min_confidence <= 1),
                        ("--max-fraction", args.max_fraction, 0 < args.max_fraction <= 1)):
        if not ok:
            raise HPAError(f"{name}: {v} outside {'[0, 1]' if name == '--min-confidence' else '(0, 1]'}")
    check_output_file(args.out, "--out")
    df = pseudo_from_run(run_folder(args.run, args.config), args.min_confidence, args.max_fraction)
    write_pseudo(args.out, df)
    print(f"{pseudo_stats(df)} -> {args.out}")
    return 0


# ----------------------------------------------------------------------------- the second round's training
def load_pseudo(cfg, rd, resume: bool, train_ids) -> pd.DataFrame | None:
    """The pseudo labels a run trains with (None when ``pseudo.from_run`` is empty): with ``resume``
    the run's saved ``pseudo_labels.csv``, else selected afresh from the first round. HPAError when
    the first round is this run, or a pseudo Id is also a training Id."""
    p = cfg.pseudo
    if not p.from_run:
        return None
    if Path(p.from_run).resolve() == rd.path.resolve():
        raise HPAError(f"pseudo.from_run: {p.from_run} is this run's own folder; name the first round's run")
    if resume and rd.pseudo_labels.is_file():
        df = read_pseudo(rd.pseudo_labels)
    else:
        df = pseudo_from_run(p.from_run, p.min_confidence, p.max_fraction)
    both = df["Id"].isin(set(map(str, train_ids)))
    if both.any():
        raise HPAError(f"pseudo.from_run {p.from_run}: test Id '{df['Id'][both].iat[0]}' is also a training Id")
    return df


def pseudo_record(df: pd.DataFrame, path: Path) -> dict:
    """The ``inputs.json`` entry of a run's pseudo labels: where, from which run, how many, a content hash."""
    import hashlib

    digest = hashlib.sha256(df[PSEUDO_COLUMNS].to_csv(index=False).encode()).hexdigest()
    source = str(df["source_run"].iat[0]) if len(df) else ""
    return {"path": str(Path(path).resolve()), "from_run": source, "n_images": int(len(df)), "sha256": digest}
