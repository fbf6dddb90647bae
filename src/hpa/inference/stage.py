"""The inference stage: a run's test probabilities and submission, or a blend of runs (``infer.py``).

Every input is checked before any model runs. The outputs of one command appear together at the end
or not at all: ``test_probs.csv``, the submission and its PNG (an ensemble adds the blended
``oof.csv`` and its thresholds files), each staged in a temporary file and renamed as a group.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpa.classes import NUM_CLASSES, PROB_COLUMNS, train_frequencies
from hpa.config import ExperimentConfig
from hpa.data.labels import read_labels, to_multihot
from hpa.errors import HPAError
from hpa.inference.ensemble import EnsembleConfig, blend
from hpa.inference.predict import check_test_images, open_test_images, predict_run, tta_boxes
from hpa.io import number, write_csv, write_json
from hpa.rundir import OutputGroup, RunDir, load_model
from hpa.runlock import locked_run
from hpa.thresholds.stage import tune_all, write_thresholds
from hpa.training.select import check_served_size
from hpa.submission import (label_warnings, make_submission, plot_label_rates, read_sample_ids, submission_record_path,
                            write_submission)
from hpa.thresholds.search import apply_thresholds
from hpa.thresholds.selection import choose_strategy, tuners_from_config
from hpa.thresholds.tuner import FIXED, thresholds_for_test


def resolve_thresholds(rd: RunDir, default: float, strategy: str | None = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The thresholds to apply and what the submission record says about them.

    ``strategy`` given: ``thresholds_<strategy>.json``, which must exist (a warning line when its
    nested estimate is below ``fixed``'s); else ``thresholds.json`` (the strategy ``hpa thresholds``
    chose), or ``default`` for every class with a warning line when it is absent. Returns ``(record,
    used)``: the thresholds record and the submission record's ``thresholds`` entry (strategy, file,
    requested, reason, its nested estimate and fixed's)."""
    if strategy is not None:
        path, thr = rd.thresholds(strategy), rd.read_thresholds(strategy)
        if thr is None:
            raise HPAError(f"{path}: not found (run 'hpa thresholds' first: it writes every strategy's file)")
        fixed = rd.read_thresholds(FIXED)
        base = None if fixed is None else fixed.get("nested_f1_mean")
        sel = choose_strategy({FIXED: number(base), strategy: number(thr.get("nested_f1_mean"))},
                              strategy, default)
        if sel["warning"]:
            print(f"warning: {sel['warning']}", file=sys.stderr)
        sel["file"] = path.name
    else:
        path, thr = rd.thresholds(), rd.read_thresholds()
        if thr is None:
            print(f"warning: {path} not found; using thresholds.default={default} for every class "
                  "(run 'hpa thresholds' first)", file=sys.stderr)
            thr = {"strategy": "default", "thresholds": [float(default)] * NUM_CLASSES, "params": {}}
            return thr, {"strategy": "default", "file": None, "requested": None,
                         "reason": f"{path.name} not found: thresholds.default {default:g} for every class"}
        sel = thr.get("selection") or {"requested": None, "file": path.name, "nested_f1": {},
                                       "reason": f"{path.name} predates strategy selection (rerun 'hpa thresholds')"}
    return thr, thresholds_used(thr, path, sel)


def thresholds_used(thr: dict[str, Any], path: Path, sel: dict[str, Any]) -> dict[str, Any]:
    """The submission record's ``thresholds`` entry: the strategy applied, the file read, the file it
    was chosen from, what was asked for and why this one, its nested estimate and ``fixed``'s."""
    return {"strategy": thr["strategy"], "file": str(path), "chosen_from": sel.get("file"),
            "requested": sel.get("requested"), "reason": sel.get("reason"),
            "nested_f1_mean": thr.get("nested_f1_mean"),
            "fixed_nested_f1": (sel.get("nested_f1") or {}).get(FIXED),
            "oof_f1_at_0.5": thr.get("oof_f1_at_0.5"), "oof_f1_tuned": thr.get("oof_f1_tuned")}


def stage_submission(test: pd.DataFrame, thr: dict[str, Any], sample: str | Path, out: str | Path,
                     group: OutputGroup, ensure_one: bool = True, record: dict[str, Any] | None = None
                     ) -> dict[str, float]:
    """Apply thresholds to ``Id,p0..p27`` test probabilities; stage the checked submission ``out``, its
    label-rate PNG and its record ``<out stem>.json`` (``record`` plus the validation summary) in
    ``group``. Returns the validation summary (HPAError if it does not validate)."""
    out = Path(out)
    probs = test[PROB_COLUMNS].to_numpy(dtype=np.float64)
    preds = apply_thresholds(probs, thresholds_for_test(thr, probs), ensure_one)
    summary = write_submission(group.path(out), make_submission(test["Id"].tolist(), preds), sample)
    plot_label_rates(preds, group.path(out.with_suffix(".png")), f"{out.name}: predicted label rates")
    write_json(group.path(submission_record_path(out)),
               {"submission": out.name, **(record or {}), "ensure_one": bool(ensure_one), **summary})
    prior = thr.get("prior")        # the training label rates the thresholds were tuned with
    for w in label_warnings(summary, prior if prior else train_frequencies(), "training" if prior else
                            "competition's training"):
        print(f"warning: {out}: {w}", file=sys.stderr)
    return summary


def sample_ids(sample: Path) -> list[str]:
    """The sample submission's Ids; HPAError when it has none (a header-only file predicts nothing)."""
    ids = read_sample_ids(sample)
    if not ids:
        raise HPAError(f"{sample}: no Ids (only a header); nothing to predict")
    return ids


def check_selection(rd: RunDir, cfg: ExperimentConfig) -> str:
    """``cfg.train.select`` when the run's ``oof.csv`` (and so its thresholds) was made with it (recorded
    in ``metrics.json``); HPAError otherwise, as the test set would be predicted by other weights than
    the thresholds were tuned for. A run without the record (older) held the best epochs: ``best``,
    with a warning when another choice was asked for. Prints a warning for a
    selected epoch trained at another image size (train.resize_schedule)."""
    metrics = rd.read_metrics() or {}
    made = metrics.get("select")
    if made is None:                # a run from before train.select: its oof.csv holds the best epochs
        if cfg.train.select != "best":
            print(f"warning: {rd.path} predates train.select: its oof.csv (and so its thresholds) holds each "
                  "fold's best epoch, so best.pt serves the test set (set train.select=best to say so)",
                  file=sys.stderr)
        return "best"
    if cfg.train.select != made:
        hint = ("run 'hpa swa' first" if cfg.train.select == "swa" else
                f"rebuild it with 'train.py --resume --set train.select={cfg.train.select}'")
        raise HPAError(f"{rd.metrics}: oof.csv and the thresholds were made with train.select={made}, not "
                       f"{cfg.train.select}: set train.select={made}, or {hint} and rerun 'hpa thresholds'")
    epochs = {int(k): int(e) for k, e in (metrics.get("selected_epochs") or {}).items()}
    for w in check_served_size(rd, epochs, cfg.data.image_size):
        print(f"warning: {w}", file=sys.stderr)
    return made


@locked_run     # test_probs.csv lives in the run folder: not while that run trains
def infer_experiment(cfg: ExperimentConfig, out: str | Path, folds: list[int] | None = None,
                     thresholds: str | None = None) -> dict[str, Any]:
    """Predict the test set of ``cfg``'s run; write ``test_probs.csv`` and the submission ``out`` together.

    The model is rebuilt from the run's saved ``config.yaml``; TTA, batch size and thresholds come
    from ``cfg`` (``thresholds``: a strategy whose ``thresholds_<strategy>.json`` to apply instead of
    ``thresholds.json``). All inputs are checked first. Returns the validation summary plus counts.
    """
    rd = RunDir.of(cfg)
    run_cfg = rd.load_config()
    ignored = [k for k, a, b in (("model", cfg.model, run_cfg.model),
                                 ("data.image_size", cfg.data.image_size, run_cfg.data.image_size),
                                 ("train.crop_from", cfg.train.crop_from, run_cfg.train.crop_from)) if a != b]
    if ignored:     # the config was edited since the run trained: say which of its settings do not apply
        verb = "differs" if len(ignored) == 1 else "differ"
        print(f"warning: {', '.join(ignored)} of this config {verb} from the run's; inference uses the run's "
              f"({rd.config})", file=sys.stderr)
    cfg.model, cfg.data.image_size = run_cfg.model, run_cfg.data.image_size
    cfg.train.crop_from = run_cfg.train.crop_from            # test images at the load size validation used
    folds = rd.oof_folds(run_cfg.folds.n_splits) if folds is None else folds
    sample = Path(cfg.data.root) / cfg.data.sample_submission
    ids = sample_ids(sample)
    select = check_selection(rd, cfg)
    for path in rd.checkpoint_paths(folds, select):
        load_model(cfg, path)       # every fold loads (safely, into this model) before any predicts
    tta_boxes(cfg)                  # a bad infer.crops fails before any work
    check_test_images(Path(cfg.data.root) / cfg.data.test_dir, ids)
    thr, used = resolve_thresholds(rd, cfg.thresholds.default, thresholds)
    images = open_test_images(cfg, ids)
    test = predict_run(cfg, rd.path, ids, images, folds, cfg.infer.tta, cfg.infer.tta_merge, select)
    record = {"run": str(rd.path), "folds": [int(f) for f in folds], "checkpoint": select,
              "tta": cfg.infer.tta, "tta_merge": cfg.infer.tta_merge, "crops": cfg.infer.crops, "thresholds": used}
    with OutputGroup() as group:
        write_csv(group.path(rd.test_probs), test)
        summary = stage_submission(test, thr, sample, out, group, cfg.infer.ensure_one, record)
    return {**summary, "folds": len(folds), "tta": cfg.infer.tta, "crops": cfg.infer.crops,
            "strategy": thr["strategy"], "thresholds": used}


# ----------------------------------------------------------------------------- ensembles
def load_members(cfg: EnsembleConfig) -> dict[str, Any]:
    """Read and cross-check every member's OOF and test probabilities; return the aligned matrices.

    Returns ``{"ids", "folds", "oof": [..], "test_ids", "test": [..], "first_cfg"}``; HPAError
    names the run and the file whose Ids/folds differ from the first run's, or that is missing.
    """
    runs = [RunDir(r.dir) for r in cfg.runs]
    for rd in runs:                                     # every file checked before any is read
        need = (rd.config, rd.oof, rd.test_probs)
        for f in need:
            if not f.is_file():
                raise HPAError(f"{rd.path}: missing {f.name} (ensemble members need "
                               f"{', '.join(p.name for p in need)})")
    ids = folds = test_ids = None
    oof, test = [], []
    for rd in runs:
        o_ids, o_folds, o_probs = rd.read_oof()
        if ids is None:
            ids, folds = o_ids, o_folds
        else:
            other = pd.Series(o_folds, index=o_ids).reindex(ids)
            if len(o_ids) != len(ids) or other.isna().any() or not np.array_equal(other.to_numpy(), folds):
                raise HPAError(f"{rd.oof}: Id/fold assignment differs from {runs[0].oof} "
                               "(ensemble members must share folds)")
        oof.append(pd.DataFrame(o_probs, index=o_ids).loc[ids].to_numpy())
        t = rd.read_test_probs().set_index("Id")
        if test_ids is None:
            test_ids = t.index.tolist()
        elif set(t.index) != set(test_ids):
            raise HPAError(f"{rd.test_probs}: test Ids differ from {runs[0].test_probs}")
        test.append(t.loc[test_ids, PROB_COLUMNS].to_numpy())
    return {"ids": ids, "folds": folds, "oof": oof, "test_ids": test_ids, "test": test,
            "first_cfg": runs[0].load_config()}


def _labels_for(m: dict[str, Any], labels: str, sample: str) -> np.ndarray:
    """The members' OOF labels (multi-hot, OOF order). Refuses, before anything is written, OOF Ids
    unknown to the labels and test Ids unlike the sample submission's."""
    df = read_labels(labels)
    known = set(df["Id"])
    unknown = [i for i in m["ids"] if i not in known]
    if unknown:
        raise HPAError(f"oof.csv: Id '{unknown[0]}' is not in the training labels {labels}")
    if set(sample_ids(Path(sample))) != set(m["test_ids"]):
        raise HPAError(f"test_probs.csv: the members' test Ids differ from the Ids of {sample}")
    return to_multihot(df.set_index("Id").loc[m["ids"], "labels"])


@locked_run     # the blended files go to the ensemble's own run folder
def run_ensemble(cfg: EnsembleConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Blend the members, re-tune thresholds on the blended OOF, write the files and the submission.

    Writes ``runs/<name>/{oof.csv,test_probs.csv,thresholds.json,...}`` and the submission together;
    returns the thresholds record plus ``"submission"`` (path) and ``"validation"`` (summary).
    """
    tuners_from_config(cfg.thresholds)      # an unknown strategy or a bad rates file fails before any work
    m = load_members(cfg)
    first: ExperimentConfig = m["first_cfg"]
    labels = cfg.labels or str(Path(first.data.root) / first.data.train_csv)
    sample = cfg.sample or str(Path(first.data.root) / first.data.sample_submission)
    out = Path(out or cfg.out or f"submissions/{cfg.name}.csv")
    y = _labels_for(m, labels, sample)
    weights = [r.weight for r in cfg.runs]
    oof = pd.DataFrame(blend(m["oof"], weights, cfg.blend), columns=PROB_COLUMNS)
    oof.insert(0, "fold", m["folds"])
    oof.insert(0, "Id", m["ids"])
    test = pd.DataFrame(blend(m["test"], weights, cfg.blend), columns=PROB_COLUMNS)
    test.insert(0, "Id", m["test_ids"])
    results, selection = tune_all(cfg.thresholds, oof[PROB_COLUMNS].to_numpy(), y, oof["fold"].to_numpy(),
                                  cfg.ensure_one)
    rd = RunDir(cfg.run_dir)
    with OutputGroup() as group:
        write_csv(group.path(rd.oof), oof)
        write_csv(group.path(rd.test_probs), test)
        record = write_thresholds(rd, results, selection, group)
        info = {"run": str(rd.path), "ensemble": [r.dir for r in cfg.runs], "weights": weights,
                "blend": cfg.blend, "thresholds": thresholds_used(record, rd.thresholds(), record["selection"])}
        validation = stage_submission(test, record, sample, out, group, cfg.ensure_one, info)
    return {**record, "validation": validation, "submission": str(out)}
