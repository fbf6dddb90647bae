"""Which weights of each fold stand for the run (``train.select``), and the OOF that goes with them.

* ``last``: each fold's last epoch; no choice is made on the held-out fold, so its OOF estimates
  unseen data honestly (the default);
* ``nested``: each fold at the epoch that is best on the mean validation curve of the *other* folds
  (:func:`hpa.reports.cv.epoch_choice`): a choice made without the scored fold, served from the kept
  ``epoch<e>.pt`` (needs ``train.keep_checkpoints: -1``);
* ``swa``: ``hpa swa``'s average (``swa.pt``, ``swa_oof.csv``); until it has run, ``last`` stands in;
* ``best``: each fold's best epoch on its own validation fold (``best.pt``): optimistic, as the epoch
  is chosen on the rows it is scored on.

The run's ``oof.csv`` (what thresholds are tuned on), the checkpoint ``infer.py`` serves and the printed
estimate all follow the same choice; ``metrics.json`` records it (``select``, ``selected_epochs``).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from hpa.classes import PROB_COLUMNS
from hpa.errors import HPAError
from hpa.io import read_csv
from hpa.metrics import macro_f1
from hpa.reports.cv import epoch_choice
from hpa.rundir import RunDir


def order_oof(rd: RunDir, oof: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """``oof`` rows in train.csv order (``ids``); HPAError for an Id held out by two folds or unknown
    to the labels (folds trained on different splits)."""
    oof = oof.reset_index(drop=True)
    oof["Id"] = oof["Id"].astype(str)
    dup = oof["Id"].duplicated(keep=False)
    if dup.any():
        first = oof["Id"][dup].iat[0]
        raise HPAError(f"{rd.path}: Id '{first}' is held out by folds "
                       f"{sorted(oof.loc[oof['Id'] == first, 'fold'].tolist())} ({int(dup.sum())} such rows): "
                       "the folds were trained on different splits")
    order = pd.Series(np.arange(len(ids)), index=ids.astype(str).to_numpy())
    pos = order.reindex(oof["Id"]).to_numpy()
    if np.isnan(pos).any():
        raise HPAError(f"{rd.path}: fold OOF Id '{oof['Id'][np.isnan(pos)].iat[0]}' is not "
                       "in the training labels")
    return oof.iloc[np.argsort(pos, kind="stable")].reset_index(drop=True)


def merge_oof(rd: RunDir, ids: pd.Series, folds: list[int], which: str = "oof") -> pd.DataFrame:
    """Concatenate ``fold<k>/oof.csv`` (the best epoch; ``which="swa_oof"``: ``swa_oof.csv``) of
    ``folds`` in train.csv order (``ids``)."""
    parts = [read_csv(getattr(rd.fold(k), which), ["Id", "fold"] + PROB_COLUMNS, dtype=None) for k in folds]
    return order_oof(rd, pd.concat(parts, ignore_index=True), ids)


def epochs_for(rd: RunDir, folds: Sequence[int], select: str) -> dict[int, int]:
    """The epoch of each fold that ``select`` (best, last or nested) stands for, from the histories."""
    ec = epoch_choice({k: h for k, h in rd.histories().items() if k in folds})
    if select == "nested" and ec["nested"] is None:
        raise HPAError("train.select nested: needs at least 2 trained folds (each fold's epoch is chosen "
                       "on the others)")
    return {int(k): int(row[f"{select}_epoch"]) for k, row in ec["per_fold"].items()}


def epoch_oof(rd: RunDir, ids: pd.Series, epochs: dict[int, int]) -> pd.DataFrame:
    """The held-out predictions of each fold at its epoch in ``epochs`` (from ``epochs_oof.csv``)."""
    parts = []
    for k, e in epochs.items():
        df = rd.fold(k).read_epochs_oof()
        if df is None:
            raise HPAError(f"{rd.fold(k).epochs_oof}: not found (a run trained before train.select keeps "
                           "only its best epoch's OOF): set train.select=best, or train it afresh")
        rows = df[df["epoch"] == e]
        if rows.empty:
            raise HPAError(f"{rd.fold(k).epochs_oof}: no rows of epoch {e}")
        parts.append(rows.drop(columns="epoch"))
    return order_oof(rd, pd.concat(parts, ignore_index=True), ids)


def selected_oof(rd: RunDir, ids: pd.Series, folds: list[int], select: str
                 ) -> tuple[pd.DataFrame, str, dict[int, int] | None]:
    """``(oof, select actually used, {fold: epoch} or None for swa)`` for ``train.select``; ``swa``
    before ``hpa swa`` has run falls back to ``last`` with a warning."""
    if select == "swa":
        if all(rd.fold(k).swa_oof.is_file() and rd.fold(k).swa.is_file() for k in folds):
            return merge_oof(rd, ids, folds, "swa_oof"), "swa", None
        warnings.warn("train.select swa: no hpa swa average yet; oof.csv holds the last epoch until "
                      "'hpa swa' replaces it", stacklevel=2)
        select = "last"
    epochs = epochs_for(rd, folds, select)
    if select == "best":
        return merge_oof(rd, ids, folds), select, epochs
    return epoch_oof(rd, ids, epochs), select, epochs


def selection_figures(rd: RunDir, ids: pd.Series, folds: list[int], y_by_id: pd.DataFrame) -> dict:
    """Pooled OOF macro F1 at 0.5 of every choice the run's files allow (best, last, nested, swa),
    to show beside the mean-of-folds figures of :func:`~hpa.reports.cv.epoch_choice`."""
    out = {}
    for select in ("best", "last", "nested", "swa"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                oof, used, _ = selected_oof(rd, ids, folds, select)
        except HPAError:
            continue
        if used == select:
            y = y_by_id.loc[oof["Id"]].to_numpy()
            out[select] = macro_f1(y, oof[PROB_COLUMNS].to_numpy() > 0.5)
    return out


def check_served_size(rd: RunDir, epochs: dict[int, int] | None, image_size: int) -> list[str]:
    """Warnings for folds whose selected epoch trained at another size than ``image_size`` (with
    ``train.resize_schedule`` the chosen epoch may come from a smaller stage; inference predicts at
    ``data.image_size``)."""
    out = []
    for k, e in (epochs or {}).items():
        h = rd.fold(k).read_history() if rd.fold(k).history.is_file() else None
        if h is None or "image_size" not in h:
            continue
        size = h.loc[h["epoch"] == e, "image_size"]
        if len(size) and int(size.iat[0]) != int(image_size):
            out.append(f"fold {k}: the selected epoch {e} trained at {int(size.iat[0])} px but the test set is "
                       f"predicted at data.image_size {image_size} px")
    return out
