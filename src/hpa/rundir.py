"""The run folder ``runs/<exp>/``: every path in it, and every read and write of its files.

Stages never spell a run-file name; they ask a :class:`RunDir` (and its :class:`FoldDir` per fold).
Formats are in docs/formats.md ("Run folder"). Layout::

    config.yaml   inputs.json   oof.csv   metrics.json   test_probs.csv   .lock
    thresholds.json   thresholds_<strategy>.json   thresholds.png   report.md   report/*.png
    pseudo_labels.csv   tensorboard/fold<k>/  (train.log_with; mlflow: mlruns/, wandb: wandb/)
    fold<k>/  best.pt  last.pt  history.csv  summary.json  oof.csv  epochs_oof.csv  synthetic.json

Readers check what they read and raise HPAError naming the file (and the row and column of a bad
value). Writers are atomic; :class:`OutputGroup` publishes several outputs of one command together.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.config import ExperimentConfig, load_config, save_config
from hpa.errors import HPAError
from hpa.io import atomic_path, check_output_file, read_csv, write_csv, write_json
from hpa.models import build_model
from hpa.runlock import LOCK_NAME

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_f1", "lr", "time_s", "image_size"]
# written after HISTORY_COLUMNS when present: validation macro F1 of the external images (data.external_in: folds)
SOURCE_HISTORY_COLUMNS = ["val_f1_external"]
CHECKPOINTS = ("best", "last", "swa", "nested")     # train.select: nested = epoch<e>.pt of metrics.json's epochs
# the tuner's "never predict" cut for a class whose top score is exactly 1 (hpa.thresholds.tuner)
THRESHOLD_MAX = float(np.nextafter(1.0, 2.0))


# ----------------------------------------------------------------------------- readers
def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically and durably (temporary file, fsync, rename); return the path.

    A full disk is one HPAError naming ``path`` and the free space, with the temporary file removed.
    """
    import torch

    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:
            # torch's zip writer reports a failed write (full disk, file-size limit) as a RuntimeError
            # ("[enforce fail at inline_container.cc] . unexpected pos 576 vs 534") without the OS
            # error; hand it to atomic_path as the OSError it is, which names the file and the space
            if "unexpected pos" not in str(e) and "write failed" not in str(e):
                raise
            full = shutil.disk_usage(Path(tmp).parent).free < (16 << 20)   # a failed write fills it
            raise OSError(errno.ENOSPC if full else errno.EIO, str(e).splitlines()[0]) from None
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True`` (the project's one checkpoint loader).

    HPAError when it is missing, unreadable (truncated, foreign), carries pickled code (refused,
    never run) or has no ``model`` entry.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        msg = str(e)
        if "Weights only load failed" in msg:   # torch's text advises weights_only=False: never repeat it
            found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", msg)
            what = f" ({found.group(1)})" if found else ""
            raise HPAError(f"{path}: not a plain checkpoint: it carries pickled code{what}; "
                           "it will not be loaded") from None
        raise HPAError(f"{path}: unreadable checkpoint ({type(e).__name__}: {msg.splitlines()[0] if msg else ''})"
                       ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise HPAError(f"{path}: not an hpa checkpoint (no 'model' entry)")
    return state


def _probabilities(df: pd.DataFrame, path: Path) -> np.ndarray:
    """``df[p0..p27]`` as float64; HPAError naming the first cell (file row, column) not in [0, 1]."""
    vals = df[PROB_COLUMNS].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~((vals >= 0) & (vals <= 1))            # NaN and non-numeric cells are bad too
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raw = df[PROB_COLUMNS[c]].iat[r]
        raise HPAError(f"{path}: row {r + 2}, column {PROB_COLUMNS[c]}: {str(raw)!r} is not a probability "
                       f"in [0, 1] ({int(bad.sum())} such value(s))")
    return vals


def _no_duplicate_ids(df: pd.DataFrame, path: Path) -> None:
    dup = df["Id"].duplicated()
    if dup.any():
        raise HPAError(f"{path}: duplicate Id '{df['Id'][dup].iat[0]}'")


def read_oof(path: str | Path, label_ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read ``oof.csv`` (``Id,fold,p0..p27``) into ``(ids, folds, probs)``; check it thoroughly.

    With ``label_ids``, every OOF Id must be a training Id (HPAError names the first one that is not).
    """
    path = Path(path)
    df = read_csv(path, ["Id", "fold"] + PROB_COLUMNS)
    extra = [c for c in df.columns if c.startswith("p") and c[1:].isdigit() and c not in PROB_COLUMNS]
    if extra:
        raise HPAError(f"{path}: {NUM_CLASSES + len(extra)} probability columns, expected {NUM_CLASSES}")
    _no_duplicate_ids(df, path)
    if label_ids is not None:
        unknown = ~df["Id"].isin(set(label_ids))
        if unknown.any():
            raise HPAError(f"{path}: Id '{df['Id'][unknown].iat[0]}' is not in the training labels "
                           f"({int(unknown.sum())} unknown Id(s))")
    folds = pd.to_numeric(df["fold"], errors="coerce")
    if folds.isna().any() or (folds != folds.round()).any():
        r = int(np.flatnonzero(folds.isna() | (folds != folds.round()))[0])
        raise HPAError(f"{path}: row {r + 2}, column fold: {df['fold'].iat[r]!r} is not an integer fold")
    return df["Id"].tolist(), folds.astype(int).to_numpy(), _probabilities(df, path)


def read_probs(path: str | Path) -> pd.DataFrame:
    """Read an ``Id,p0..p27`` file (``test_probs.csv``): columns, duplicates, every value in [0, 1]."""
    path = Path(path)
    df = read_csv(path, ["Id"] + PROB_COLUMNS)
    _no_duplicate_ids(df, path)
    return pd.concat([df[["Id"]], pd.DataFrame(_probabilities(df, path), columns=PROB_COLUMNS)], axis=1)


def load_thresholds(path: str | Path, num_classes: int = NUM_CLASSES) -> dict[str, Any]:
    """Read a ``thresholds.json``: ``num_classes`` numbers in [0, 1] (booleans refused); return the dict."""
    path = Path(path)
    if not path.is_file():
        raise HPAError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HPAError(f"{path}: invalid JSON ({e.msg})") from None
    values = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(values, list):
        raise HPAError(f"{path}: missing key 'thresholds' (a list of {num_classes} floats)")
    if len(values) != num_classes:
        raise HPAError(f"{path}: expected {num_classes} thresholds, found {len(values)}")
    for i, v in enumerate(values):
        # bool is an int in Python: `true` would silently mean 1.0 (predict only p == 1)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= THRESHOLD_MAX:
            raise HPAError(f"{path}: threshold of class {i} is {json.dumps(v)}; thresholds must be numbers "
                           "in [0, 1]")
    return data


def read_history(path: str | Path) -> pd.DataFrame:
    """Read a fold's ``history.csv`` (numeric ``epoch,train_loss,val_loss,val_f1,...``)."""
    path = Path(path)
    h = read_csv(path, HISTORY_COLUMNS[:4], dtype=None)
    try:
        return h.astype({c: float for c in HISTORY_COLUMNS + SOURCE_HISTORY_COLUMNS if c in h}).astype({"epoch": int})
    except (ValueError, TypeError):
        raise HPAError(f"{path}: non-numeric values") from None


def _read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when absent; HPAError when it is not valid JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HPAError(f"{path}: invalid JSON ({e.msg})") from None


# ----------------------------------------------------------------------------- folders
class FoldDir:
    """``fold<k>/`` of a run: checkpoints, history, summary, the fold's OOF and synthetic counts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.best, self.last = self.path / "best.pt", self.path / "last.pt"
        self.history, self.summary = self.path / "history.csv", self.path / "summary.json"
        self.oof, self.synthetic = self.path / "oof.csv", self.path / "synthetic.json"
        self.swa, self.swa_oof = self.path / "swa.pt", self.path / "swa_oof.csv"       # hpa swa
        self.epochs_oof = self.path / "epochs_oof.csv"      # every epoch's held-out probabilities

    def checkpoint(self, which: str = "best", epoch: int | None = None) -> Path:
        """``best.pt``, ``last.pt``, ``swa.pt`` (``hpa swa``'s average) or, for ``nested``, the kept
        ``epoch<epoch>.pt``; HPAError for another name."""
        if which not in CHECKPOINTS:
            raise HPAError(f"train.select: must be one of {', '.join(CHECKPOINTS)}, got '{which}'")
        if which == "nested":
            if epoch is None:
                raise HPAError(f"{self.path}: no selected epoch for train.select nested (metrics.json)")
            return self.epoch_weights(epoch)
        return self.path / f"{which}.pt"

    def finished(self) -> bool:
        """True when training wrote the fold's ``summary.json`` and ``oof.csv``."""
        return self.summary.is_file() and self.oof.is_file()

    def outputs(self) -> list[Path]:
        """The fold's files that exist (what a fresh start of the fold removes)."""
        files = (self.best, self.last, self.history, self.summary, self.oof, self.synthetic, self.swa,
                 self.swa_oof, self.epochs_oof)
        return [p for p in files if p.exists()] + [p for p, _ in self.epoch_files()]

    def epoch_weights(self, epoch: int) -> Path:
        """``epoch<e>.pt``: one epoch's weights kept for ``hpa swa`` (``train.keep_checkpoints``)."""
        return self.path / f"epoch{int(epoch)}.pt"

    def epoch_files(self) -> list[tuple[Path, int]]:
        """``(path, epoch)`` of the kept ``epoch<e>.pt`` files, by epoch."""
        found = [(p, int(p.stem[5:])) for p in self.path.glob("epoch*.pt") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda pe: pe[1])

    def keep_epoch_weights(self, state: dict, keep: int) -> Path | None:
        """Save the weights of ``state`` (model, epoch, score, fold; no optimiser) as ``epoch<e>.pt`` and
        delete those older than the last ``keep`` epochs (``keep`` -1: keep all, 0: save nothing).
        Returns the path written, or None."""
        if keep < -1:
            raise HPAError(f"train.keep_checkpoints: must be -1 (all), 0 (none) or a count, got {keep}")
        if keep == 0:
            return None
        epoch = int(state["epoch"])
        path = save_checkpoint(self.epoch_weights(epoch), {k: state[k] for k in ("model", "epoch", "score", "fold")})
        if keep > 0:
            for old, e in self.epoch_files():
                if e <= epoch - keep:
                    old.unlink()
        return path

    def read_history(self) -> pd.DataFrame:
        """The fold's ``history.csv`` (checked, numeric)."""
        return read_history(self.history)

    def write_history(self, rows: list[dict]) -> Path:
        """Write one row per finished epoch (``HISTORY_COLUMNS``, then ``SOURCE_HISTORY_COLUMNS`` when given)."""
        extra = [c for c in SOURCE_HISTORY_COLUMNS if any(c in r for r in rows)]
        return write_csv(self.history, pd.DataFrame(rows, columns=HISTORY_COLUMNS + extra))

    def read_summary(self) -> dict:
        """The fold's ``summary.json`` (HPAError when absent or not JSON)."""
        s = _read_json(self.summary)
        if s is None:
            raise HPAError(f"{self.summary}: file not found")
        return s

    def write_summary(self, summary: dict) -> Path:
        """Write ``summary.json``: the fold finished."""
        return write_json(self.summary, summary)

    def write_oof(self, df: pd.DataFrame) -> Path:
        """Write the fold's held-out predictions (``Id,fold,p0..p27``)."""
        return write_csv(self.oof, df)

    def write_epochs_oof(self, df: pd.DataFrame) -> Path:
        """Write every epoch's held-out predictions so far (``Id,fold,epoch,p0..p27``)."""
        return write_csv(self.epochs_oof, df)

    def read_epochs_oof(self) -> pd.DataFrame | None:
        """``epochs_oof.csv`` (None when absent: a run trained before ``train.select``)."""
        if not self.epochs_oof.is_file():
            return None
        df = read_csv(self.epochs_oof, ["Id", "fold", "epoch"] + PROB_COLUMNS, dtype=None)
        df["Id"] = df["Id"].astype(str)
        return df

    def write_synthetic(self, counts: dict) -> Path:
        """Write the fold's synthetic-image counts (``synthetic.json``)."""
        return write_json(self.synthetic, counts)


class RunDir:
    """``runs/<exp>/``: the paths of a run and the readers and writers of its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        p = self.path
        self.config, self.inputs, self.lock = p / "config.yaml", p / "inputs.json", p / LOCK_NAME
        self.oof, self.metrics, self.test_probs = p / "oof.csv", p / "metrics.json", p / "test_probs.csv"
        self.report, self.report_dir = p / "report.md", p / "report"
        self.swa_oof, self.swa_metrics = p / "swa_oof.csv", p / "swa_metrics.json"    # hpa swa
        self.pseudo_labels = p / "pseudo_labels.csv"          # pseudo.from_run (hpa.pseudo)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def of(cls, cfg: Any) -> "RunDir":
        """The run folder of an experiment config (``<runs_dir>/<name>``)."""
        return cls(cfg.run_dir)

    # ------------------------------------------------------------------ paths
    def thresholds(self, strategy: str | None = None) -> Path:
        """``thresholds.json`` (the ones inference applies), or ``thresholds_<strategy>.json``."""
        return self.path / ("thresholds.json" if strategy is None else f"thresholds_{strategy}.json")

    def tracking(self, tracker: str) -> Path:
        """The folder a ``train.log_with`` tracker writes into: ``tensorboard/`` (one ``fold<k>/`` per
        fold), ``mlruns/`` or ``wandb/``."""
        return self.path / {"mlflow": "mlruns"}.get(tracker, tracker)

    def fold(self, k: int) -> FoldDir:
        """``fold<k>/``."""
        return FoldDir(self.path / f"fold{int(k)}")

    def fold_numbers(self) -> list[int]:
        """Every ``fold<k>`` folder present, ascending."""
        return sorted(int(d.name[4:]) for d in self.path.glob("fold*") if d.is_dir() and d.name[4:].isdigit())

    def finished_folds(self) -> list[int]:
        """Folds whose training finished (``summary.json`` and ``oof.csv`` present)."""
        return [k for k in self.fold_numbers() if self.fold(k).finished()]

    def trained_folds(self) -> list[int]:
        """Folds with any training output (finished or interrupted)."""
        return [k for k in self.fold_numbers() if self.fold(k).outputs()]

    # ------------------------------------------------------------------ config and models
    def load_config(self) -> ExperimentConfig:
        """The run's saved ``config.yaml`` (HPAError when the run has none)."""
        if not self.config.is_file():
            raise HPAError(f"{self.config}: missing (train the run first)")
        return load_config(self.config)

    def save_config(self, cfg: ExperimentConfig) -> Path:
        """Write the resolved ``config.yaml``."""
        return save_config(cfg, self.config)

    def checkpoint_paths(self, folds: Sequence[int], which: str = "best") -> list[Path]:
        """``fold<k>/<which>.pt`` of each fold; HPAError names the first missing one."""
        epochs = (self.read_metrics() or {}).get("selected_epochs") or {} if which == "nested" else {}
        paths = [self.fold(k).checkpoint(which, epochs.get(str(k))) for k in folds]
        for p in paths:
            if not p.is_file():
                hint = {"swa": " (run 'hpa swa' first)",
                        "nested": " (train.select nested keeps every epoch: train.keep_checkpoints -1)"}.get(which, "")
                raise HPAError(f"{p}: missing checkpoint{hint}")
        return paths

    def load_model(self, fold: int, which: str = "best", cfg: Any = None):
        """Rebuild fold ``fold``'s model from the run's config (or ``cfg``) and load its checkpoint;
        return ``(model in eval mode, config)``."""
        cfg = cfg if cfg is not None else self.load_config()
        return load_model(cfg, self.checkpoint_paths([fold], which)[0]), cfg

    def oof_folds(self, n_splits: int) -> list[int]:
        """Folds to predict with: those in the run's ``oof.csv`` (the folds that finished training),
        else all ``0..n_splits-1``; a listed fold without its checkpoint is an error later."""
        if not self.oof.is_file():
            return list(range(n_splits))
        folds = read_csv(self.oof, ["fold"], dtype=None)["fold"]
        if not pd.api.types.is_integer_dtype(folds):
            raise HPAError(f"{self.oof}: non-integer fold values")
        return sorted(int(f) for f in folds.unique())

    # ------------------------------------------------------------------ files
    def read_oof(self, label_ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(ids, folds, probs)`` of ``oof.csv`` (see :func:`read_oof`)."""
        return read_oof(self.oof, label_ids)

    def read_test_probs(self) -> pd.DataFrame:
        """``test_probs.csv`` as ``Id,p0..p27`` (see :func:`read_probs`)."""
        return read_probs(self.test_probs)

    def read_thresholds(self, strategy: str | None = None) -> dict | None:
        """The checked thresholds file (None when absent)."""
        path = self.thresholds(strategy)
        return load_thresholds(path) if path.is_file() else None

    def read_metrics(self) -> dict | None:
        """``metrics.json`` (None when absent)."""
        return _read_json(self.metrics)

    def histories(self) -> dict[int, pd.DataFrame]:
        """``{k: history}`` of every fold with a ``history.csv``."""
        return {k: self.fold(k).read_history() for k in self.fold_numbers() if self.fold(k).history.is_file()}

    def summaries(self, folds: Sequence[int]) -> dict[str, dict]:
        """``{"k": summary.json}`` of ``folds``."""
        return {str(k): self.fold(k).read_summary() for k in folds}

    def read_inputs(self) -> dict | None:
        """``inputs.json``, what the run trains on (None for a run from before it was recorded)."""
        return _read_json(self.inputs)


def load_model(cfg: Any, path: str | Path):
    """Build ``cfg.model`` and load the checkpoint at ``path`` into it; return it in eval mode."""
    import dataclasses

    # the checkpoint holds every weight: no pretrained download or weights file is needed to rebuild
    model = build_model(dataclasses.replace(cfg.model, pretrained=False, weights=""))
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise HPAError(f"{path}: not a checkpoint of this run's model ({str(e).splitlines()[0]})") from None
    return model.eval()


# ----------------------------------------------------------------------------- what a run trained on
def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folds_digest(fold_of: pd.Series) -> str:
    """SHA-256 of a folds assignment (Id -> fold), whatever the row order of its file."""
    pairs = sorted(zip(fold_of.index.astype(str), fold_of.astype(int)))
    return hashlib.sha256("".join(f"{i},{f}\n" for i, f in pairs).encode()).hexdigest()


def ids_digest(ids) -> str:
    """SHA-256 of an ordered Id list."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()


def data_inputs(labels_path: str | Path, folds_path: str | Path, fold_of: pd.Series, fraction: float,
                n_images: int, external: dict | None = None) -> dict:
    """The ``inputs.json`` record of what a run trains on: the labels file's content hash, the folds
    assignment's hash (paths kept so ``hpa folds`` can find the runs using a file), fraction, size,
    and with external images ``external`` (``labels`` path and hash, ``n_images``, ``ids_sha256``...)."""
    out = {"labels": {"path": str(Path(labels_path).resolve()), "sha256": file_digest(labels_path)},
           "folds": {"path": str(Path(folds_path).resolve()), "sha256": folds_digest(fold_of)},
           "fraction": float(fraction), "n_images": int(n_images)}
    if external:
        out["external"] = external
    return out


def inputs_changes(old: dict, new: dict) -> list[str]:
    """What differs between two ``inputs.json`` records, in words (empty when the same data)."""
    out = []
    if old.get("labels", {}).get("sha256") != new["labels"]["sha256"]:
        out.append(f"the labels file {new['labels']['path']} has other content")
    if old.get("folds", {}).get("sha256") != new["folds"]["sha256"]:
        out.append(f"the folds file {new['folds']['path']} assigns other folds")
    if old.get("n_images") != new["n_images"]:
        out.append(f"{old.get('n_images')} -> {new['n_images']} training images")
    if old.get("pseudo", {}).get("sha256") != new.get("pseudo", {}).get("sha256"):
        out.append(f"the pseudo labels (from {new.get('pseudo', {}).get('from_run') or 'no run'}) differ")
    a, b = old.get("external") or {}, new.get("external") or {}
    if a.get("labels", {}).get("sha256") != b.get("labels", {}).get("sha256"):
        out.append("the external label file has other content" if a and b else
                   f"external images {'added' if b else 'removed'}")
    elif a.get("ids_sha256") != b.get("ids_sha256"):
        out.append(f"other external images ({a.get('n_images')} -> {b.get('n_images')})")
    return out


def runs_using_folds(runs_dir: str | Path, folds_path: str | Path) -> list[tuple[RunDir, str]]:
    """``(run, folds digest)`` of every run under ``runs_dir`` (two levels deep, for grids such as
    ``runs/ablation/<cell>``) whose ``inputs.json`` names ``folds_path``."""
    target, runs_dir = str(Path(folds_path).resolve()), Path(runs_dir)
    found = []
    for rec in sorted(list(runs_dir.glob("*/inputs.json")) + list(runs_dir.glob("*/*/inputs.json"))):
        try:
            data = json.loads(rec.read_text())
        except (OSError, json.JSONDecodeError):
            continue                # not ours to judge here; training reports it when it reads it
        folds = data.get("folds", {}) if isinstance(data, dict) else {}
        if folds.get("path") == target:
            found.append((RunDir(rec.parent), str(folds.get("sha256"))))
    return found


def refuse_folds_overwrite(folds_path: str | Path, new_folds: pd.Series, runs_dir: str | Path) -> None:
    """HPAError naming a run under ``runs_dir`` that trained on the folds now in ``folds_path`` when
    ``new_folds`` would assign other folds (an identical split may be rewritten freely)."""
    new = folds_digest(new_folds)
    users = [rd for rd, digest in runs_using_folds(runs_dir, folds_path) if digest != new]
    if users:
        more = f" (and {len(users) - 1} more)" if len(users) > 1 else ""
        raise HPAError(f"{folds_path}: run {users[0].path}{more} trained on the folds in this file; another "
                       "split would break its --resume and ensembles: write elsewhere (--out, and folds.file "
                       "in the config) or pass --force")


# ----------------------------------------------------------------------------- grouped outputs
class OutputGroup:
    """Outputs of one command that appear together or not at all.

    ``group.path(final)`` returns a temporary file beside ``final`` to write instead (the same hidden
    ``.<name>.XXXX.tmp`` naming as ``hpa.io.atomic_path``); when the ``with`` block ends without an
    error every temporary is renamed onto its final name, else all are removed and nothing changes.
    A folder that cannot be written fails when its temporary is made, before any rename.
    """

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        """A temporary file to write instead of ``final``; HPAError at once when ``final`` is a folder
        or a file stands where its folder must be (so no output of the group is renamed)."""
        final = check_output_file(final, "")
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.staged.append((Path(tmp), final))
        return Path(tmp)

    def __enter__(self) -> "OutputGroup":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for tmp, final in self.staged:
                    os.chmod(tmp, 0o666 & ~_umask())
                    os.replace(tmp, final)
        finally:
            for tmp, _ in self.staged:
                if tmp.exists():
                    tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def experiment(run: str | Path | None, config: str | Path | None,
               overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment a command addresses (:func:`hpa.cli_args.add_run`): the saved ``config.yaml`` of
    the ``run`` folder, pointed at that folder (wherever it lives now), or the ``config`` YAML; both
    with the ``--set`` ``overrides``. HPAError when the folder holds no config or neither is given."""
    if run:
        rd = RunDir(run)
        if not rd.config.is_file():
            raise HPAError(f"--run {run}: no {rd.config.name} (not a run folder; train it first)")
        cfg = load_config(rd.config, overrides)
        cfg.runs_dir, cfg.name = str(Path(run).parent), Path(run).name
        return cfg
    if not config:
        raise HPAError("give --run (a run folder) or --config (an experiment YAML)")
    return load_config(config, overrides)


def run_folder(run: str | Path | None, config: str | Path | None, overrides: list[str] | None = None) -> Path:
    """The run folder a command addresses: ``run``, or the folder of the experiment ``config`` names."""
    return Path(run) if run else experiment(None, config, overrides).run_dir
