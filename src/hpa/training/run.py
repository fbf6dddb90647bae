"""The training stage: train the folds of an experiment into its run folder (through ``RunDir``).

Every input is checked before anything is written: registry names, labels and folds, the images, and
the run folder's saved config and data (a run never mixes two experiments or two datasets).
``config.yaml`` and ``inputs.json`` are written once the first fold is built; each fold writes its
own folder as it trains; at the end the merged ``oof.csv`` and ``metrics.json`` appear together,
then ``report.md`` (with the training-curve and per-class figures) is refreshed.
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hpa.classes import CLASS_NAMES
from hpa.config import ExperimentConfig, dotted_items, load_config, save_config, to_dict
from hpa.config_names import check_names as check_config_names
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds, select_folds
from hpa.errors import HPAError
from hpa.io import read_csv, write_csv, write_json
from hpa.metrics import macro_f1, per_class_f1
from hpa.pseudo import load_pseudo, pseudo_record, pseudo_stats, write_pseudo
from hpa.reports.cv import epoch_choice, epoch_choice_line
from hpa.reports.run_report import write_run_report
from hpa.rundir import FoldDir, OutputGroup, RunDir, data_inputs, inputs_changes
from hpa.runlock import locked_run
from hpa.threads import set_threads
from hpa.training.data import TrainingSet
from hpa.training.loop import PROB_COLUMNS, FoldTrainer, num_workers
from hpa.training.resize import schedule_sizes
from hpa.training.select import check_served_size, merge_oof, selected_oof, selection_figures  # noqa: F401
from hpa.training.tracking import accelerator_kwargs



def write_fold_predictions(fd: FoldDir, fold: int, ids, p_val: np.ndarray, y_val: np.ndarray, stopped: str) -> None:
    """Write a fitted head's held-out predictions for ``fold`` (``oof.csv``) and its ``summary.json``
    together, in the layout a trained fold has (``hpa baseline``, ``hpa probe``: no epochs)."""
    oof = pd.DataFrame(p_val, columns=PROB_COLUMNS)
    oof.insert(0, "fold", fold)
    oof.insert(0, "Id", ids)
    with OutputGroup() as group:
        write_csv(group.path(fd.oof), oof)
        write_json(group.path(fd.summary), dict(fold=fold, best_epoch=0, best_score=macro_f1(y_val, p_val > 0.5),
                                                epochs=0, stopped=stopped, synthetic={}))

def make_accelerator(cfg: ExperimentConfig, tracking_dir: Path | None = None):
    """An ``Accelerator`` for ``cfg.train`` (amp only on CUDA; fresh state so runs can follow each other);
    with ``tracking_dir`` its ``train.log_with`` tracker writes there (``hpa.training.tracking``)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # A second run in one process (tests, notebooks) must not inherit the first run's settings;
    # the process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    amp = cfg.train.amp
    if amp not in ("no", "bf16", "fp16"):
        raise HPAError(f"train.amp: '{amp}' not one of no, bf16, fp16")
    if amp != "no" and not torch.cuda.is_available():
        warnings.warn(f"train.amp={amp} needs CUDA; training in fp32 on the CPU", stacklevel=2)
        amp = "no"
    return Accelerator(mixed_precision=amp, gradient_accumulation_steps=cfg.train.accum_steps,
                       **accelerator_kwargs(cfg.train.log_with, tracking_dir))


def check_names(cfg: ExperimentConfig) -> None:
    """Fail before anything is written when a registry name in ``cfg`` is unknown (lists valid names)
    or its params do not fit its factory; the keys checked are the table ``hpa.config_names.NAMES``."""
    check_config_names(cfg)


def constant_f1(y: np.ndarray) -> float:
    """Macro F1 of the best constant predictor: every class predicted for every image (2p / (1 + p))."""
    p = y.mean(0)
    return float(np.mean(2 * p / (1 + p)))


def oof_metrics(oof: pd.DataFrame, y_by_id: pd.DataFrame, summaries: dict) -> dict:
    """OOF macro F1 at 0.5, per class (by name), the constant baseline and per-fold best scores."""
    y = y_by_id.loc[oof["Id"]].to_numpy()
    pred = oof[PROB_COLUMNS].to_numpy() > 0.5
    per = per_class_f1(y, pred)
    return {"oof_macro_f1": macro_f1(y, pred), "threshold": 0.5, "n_images": int(len(oof)),
            "constant_macro_f1": constant_f1(y),
            "per_class_f1": {name: float(v) for name, v in zip(CLASS_NAMES, per)},
            "folds": summaries}


def prepare_fold_dir(fold: FoldDir, resume: bool) -> None:
    """A fresh (non-resumed) fold starts from an empty folder: stale files of an old run are removed."""
    if resume or not fold.outputs():
        return
    print(f"{fold.path}: starting fresh (use --resume to continue); removing old outputs")
    shutil.rmtree(fold.path)
    run = RunDir(fold.path.parent)      # hpa swa's merged files describe the fold's old swa.pt: gone too
    for p in (run.swa_oof, run.swa_metrics):
        p.unlink(missing_ok=True)


# settings that change how a run is loaded, evaluated or predicted, not what it trains: a run folder
# accepts a change of these; any other difference would mix two experiments in one run folder
RESUME_FREE = ("infer.", "thresholds.", "train.num_workers", "train.pin_memory",
               "train.persistent_workers", "train.val_batch_size", "data.cache", "train.threads",
               "train.keep_checkpoints", "data.external_skip_missing",   # inputs.json records the
                                                                            # external Ids actually used
               "train.select")      # which epoch stands for the fold: --resume rebuilds oof.csv for it


def config_changes(old: ExperimentConfig, new: ExperimentConfig) -> str:
    """``"key: old -> new; ..."`` for the settings (not RESUME_FREE) that differ; "" when none."""
    a, b = dotted_items(to_dict(old)), dotted_items(to_dict(new))
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and not k.startswith(RESUME_FREE)]
    shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:3])
    return shown + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")


def check_run_folder(rd: RunDir, cfg: ExperimentConfig, inputs: dict, resume: bool) -> None:
    """Refuse (HPAError) to train into a run folder whose folds were trained with another config or
    on other data: ``--resume`` must continue the same run, and a fresh start must not mix its folds
    with the old ones in one ``oof.csv``. A folder without fold outputs may be reused freely."""
    trained = rd.trained_folds()
    if rd.config.is_file():
        diff = config_changes(load_config(rd.config), cfg)
        if diff and resume:
            raise HPAError(f"{rd.config}: --resume with a different config ({diff}); resume with the saved "
                           "settings, drop --resume to start afresh, or use another name")
        if diff and trained:
            raise HPAError(f"{rd.config}: folds {trained} of this run were trained with another config "
                           f"({diff}); one run folder holds one experiment: use another name "
                           f"(--set name=...) or delete {rd.path} to start afresh")
    old = rd.read_inputs()
    if old is None:
        if trained:
            warnings.warn(f"{rd.path}: no {rd.inputs.name} (a run from an older version): the data its "
                          "trained folds used cannot be checked", stacklevel=2)
        return
    changes = inputs_changes(old, inputs)
    if changes and trained:
        raise HPAError(f"{rd.inputs}: folds {trained} of this run were trained on other data "
                       f"({'; '.join(changes)} since then); restore the original files, or train a new run "
                       "(--set name=...)")


def record_run(rd: RunDir, cfg: ExperimentConfig, inputs: dict, pseudo: pd.DataFrame | None = None) -> None:
    """Write ``config.yaml`` and ``inputs.json`` (what the run trains with and on) together, with the
    run's ``pseudo_labels.csv`` when it has pseudo labels."""
    with OutputGroup() as group:
        save_config(cfg, group.path(rd.config))
        write_json(group.path(rd.inputs), inputs)
        if pseudo is not None:
            write_pseudo(group.path(rd.pseudo_labels), pseudo)


@locked_run     # a second run with the same name refuses instead of writing the same files
def run(cfg: ExperimentConfig, folds: list[int] | None = None, resume: bool = False) -> dict:
    """Train ``folds`` (default all) of ``cfg``; write ``runs/<exp>/``; return the metrics dict.

    With ``resume`` finished folds are skipped and an interrupted fold continues from ``last.pt``.
    With ``data.external_csv`` the external images join training (:mod:`hpa.training.data`).
    """
    t0 = time.perf_counter()
    check_names(cfg)
    rd = RunDir.of(cfg)
    labels, y, fold_of = load_split(cfg)
    _, folds = select_folds(fold_of, folds, cfg.folds.n_splits)
    all_folds_file = read_folds(folds_path(cfg))
    pseudo = load_pseudo(cfg, rd, resume, labels["Id"])
    acc = make_accelerator(cfg, rd.tracking(cfg.train.log_with))
    with acc.main_process_first():              # only one process builds the image caches
        data = TrainingSet.load(cfg, labels, y, fold_of, all_folds_file, pseudo=pseudo)
    inputs = data_inputs(Path(cfg.data.root) / cfg.data.train_csv, folds_path(cfg), all_folds_file,
                         cfg.data.fraction, len(labels), data.inputs(cfg))
    if pseudo is not None:
        inputs["pseudo"] = pseudo_record(pseudo, rd.pseudo_labels)
    check_run_folder(rd, cfg, inputs, resume)
    acc.print(set_threads(cfg.train.threads, num_workers(cfg.train.num_workers), f"train {cfg.name}"))
    if data.external is not None:
        acc.print(data.describe(folds, cfg.data.external_in))
    if pseudo is not None:
        acc.print(pseudo_stats(pseudo))
    last = schedule_sizes(cfg.train.resize_schedule, cfg.data.image_size)[-1]
    if cfg.train.resize_schedule and last != cfg.data.image_size:
        warnings.warn(f"train.resize_schedule ends at {last} px but inference predicts at "
                      f"data.image_size {cfg.data.image_size} px", stacklevel=2)
    recorded = False
    for f in folds:
        fold = rd.fold(f)
        if resume and fold.finished():
            acc.print(f"fold {f}: already finished, skipped")
            continue
        trainer = FoldTrainer(cfg, f, data.fold_input(f), acc, fold.path)   # model, data and strategy: bad input stops here
        if acc.is_main_process:
            if not recorded:
                record_run(rd, cfg, inputs, pseudo)
            prepare_fold_dir(fold, resume)
        recorded = True
        acc.wait_for_everyone()
        trainer.fit(resume)
    if not recorded and acc.is_main_process:    # every fold already finished: keep the saved settings current
        record_run(rd, cfg, inputs, pseudo)
    return finish(cfg, acc, rd, labels, y, t0)


def write_selected(cfg: ExperimentConfig, rd: RunDir, labels: pd.DataFrame, y: np.ndarray, done: list[int]) -> dict:
    """Write ``oof.csv`` of ``cfg.train.select``'s weights and ``metrics.json`` (recording the choice,
    each fold's epoch, and every choice's figures) together, then the report; return the metrics."""
    oof, used, epochs = selected_oof(rd, labels["Id"], done, cfg.train.select)
    for w in check_served_size(rd, epochs, cfg.data.image_size):
        warnings.warn(w, stacklevel=2)
    y_by_id = pd.DataFrame(y, index=labels["Id"].astype(str).to_numpy())
    metrics = oof_metrics(oof, y_by_id, rd.summaries(done))
    metrics["select"] = used
    metrics["selected_epochs"] = None if epochs is None else {str(k): e for k, e in epochs.items()}
    # mean of per-fold validation F1 at the best, last and nested epochs, and each choice's pooled OOF F1
    metrics["epoch_choice"] = epoch_choice({k: h for k, h in rd.histories().items() if k in done})
    metrics["select_pooled"] = selection_figures(rd, labels["Id"], done, y_by_id)
    with OutputGroup() as group:
        write_csv(group.path(rd.oof), oof)
        write_json(group.path(rd.metrics), metrics)
    write_run_report(rd.path)
    return metrics


def finish(cfg: ExperimentConfig, acc, rd: RunDir, labels: pd.DataFrame, y: np.ndarray, t0: float) -> dict:
    """Merge finished folds' OOF; write oof.csv and metrics.json together, then the report; print the
    one-line summary."""
    done = rd.finished_folds()
    metrics = {}
    if acc.is_main_process:
        metrics = write_selected(cfg, rd, labels, y, done)
        print(f"trained {cfg.name}: folds {done} in {time.perf_counter() - t0:.0f}s; pooled OOF macro F1 "
              f"{metrics['oof_macro_f1']:.4f} at 0.5 on {metrics['n_images']} images, train.select "
              f"{metrics['select']} (constant predictor {metrics['constant_macro_f1']:.4f}) -> {rd.path}")
        print(epoch_choice_line(metrics["epoch_choice"], metrics["select_pooled"]))
    acc.wait_for_everyone()
    return metrics
