"""``hpa probe``: per-fold linear and small-MLP heads on cached embeddings, written like a trained run.

For every fold of the experiment's split, each head of ``probe.heads`` is fitted on the other folds'
embeddings (``hpa embed``'s cache; computed first when missing) and predicts its held-out fold (OOF)
and the test images (averaged over folds, like a run's fold checkpoints). With a run as the source,
fold k's probe sees only fold k's backbone's embeddings, so no held-out image was seen by the
backbone or the head. Each head writes the files of a trained run into ``runs/<name>_<head>/``
(``config.yaml``, ``inputs.json``, ``fold<k>/oof.csv`` + ``summary.json``, ``oof.csv``, ``metrics.json``,
``test_probs.csv``), so ``hpa thresholds``, ``infer.py --ensemble`` and ``hpa report`` work unchanged.

Heads (scikit-learn): ``linear`` = standardise + one logistic regression per class (``probe.C``,
``probe.class_weight``; :func:`hpa.baseline.fit_predict`); ``mlp`` = standardise + ``MLPClassifier``
with one hidden layer (``probe.hidden``, ``probe.alpha``, ``probe.max_iter``), multi-label sigmoid output.
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hpa.baseline import fit_predict
from hpa.classes import NUM_CLASSES, PROB_COLUMNS
from hpa.config import ExperimentConfig, ProbeConfig, load_config
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds, select_folds
from hpa.errors import HPAError
from hpa.inference.stage import stage_submission
from hpa.io import write_csv, write_json
from hpa.probe.embed import load_embeddings, run_embed
from hpa.rundir import OutputGroup, RunDir, data_inputs
from hpa.runlock import locked_run
from hpa.thresholds.stage import tune_run
from hpa.training.run import merge_oof, oof_metrics, record_run, write_fold_predictions

HEAD_NAMES = ("linear", "mlp")


def fit_mlp(x_train: np.ndarray, y_train: np.ndarray, x_eval: list[np.ndarray], p: ProbeConfig,
            seed: int = 0) -> list[np.ndarray]:
    """Standardise + scikit-learn ``MLPClassifier`` (one hidden layer, multi-label); ``(n, 28)`` each."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(p.hidden,), alpha=p.alpha,
                                                          max_iter=p.max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)     # max_iter is the budget, by design
        model.fit(x_train, y_train)
    return [np.clip(model.predict_proba(x), 0.0, 1.0) for x in x_eval]


def fit_head(head: str, x_tr, y_tr, x_eval, p: ProbeConfig, seed: int) -> list[np.ndarray]:
    """Fit head ``head`` (``HEAD_NAMES``) and return its probabilities on each matrix of ``x_eval``."""
    if head == "linear":
        return fit_predict(x_tr, y_tr, x_eval, p.C, None if p.class_weight == "none" else p.class_weight, seed)
    return fit_mlp(x_tr, y_tr, x_eval, p, seed)


def _rows(emb: np.ndarray, emb_ids: list[str], ids: Sequence[str], where: Path) -> np.ndarray:
    pos = {i: k for k, i in enumerate(emb_ids)}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise HPAError(f"{where}: no embedding for {len(missing)} Ids (e.g. {missing[0]}); rerun hpa embed")
    return emb[[pos[i] for i in ids]]


@locked_run
def _write_head(cfg: ExperimentConfig, head: str, ids: np.ndarray, y: np.ndarray, fv: np.ndarray,
                folds: list[int], feats: dict, test_ids: list[str], inputs: dict, labels_ids: pd.Series) -> dict:
    """Fit ``head`` per fold and write the run folder ``cfg.run_dir``; return its metrics."""
    rd = RunDir.of(cfg)
    record_run(rd, cfg, inputs)
    test_sum = np.zeros((len(test_ids), NUM_CLASSES))
    for f in tqdm(folds, desc=f"probe {head}", leave=False):
        x, x_test = feats[f]
        tr, va = np.flatnonzero(fv != f), np.flatnonzero(fv == f)
        p_val, p_test = fit_head(head, x[tr], y[tr], [x[va], x_test], cfg.probe, cfg.seed + f)
        test_sum += p_test
        write_fold_predictions(rd.fold(f), f, ids[va], p_val, y[va], f"probe {head}")
    test = pd.DataFrame(test_sum / len(folds), columns=PROB_COLUMNS)
    test.insert(0, "Id", test_ids)
    done = [f for f in rd.finished_folds() if f in folds]
    oof = merge_oof(rd, labels_ids, done)
    metrics = oof_metrics(oof, pd.DataFrame(y, index=ids), rd.summaries(done))
    metrics["probe"] = {"head": head, "source": cfg.embed.source, "dim": int(feats[folds[0]][0].shape[1])}
    with OutputGroup() as group:
        write_csv(group.path(rd.oof), oof)
        write_json(group.path(rd.metrics), metrics)
        write_csv(group.path(rd.test_probs), test)
    return metrics


def run_probe(cfg: ExperimentConfig, folds: Sequence[int] | None = None, device: str | None = None,
              progress: bool = True) -> dict:
    """Embed what is not cached, fit every head of ``cfg.probe.heads`` per fold, write one run folder
    per head (``<cfg.name>_<head>``); return ``{head: metrics}`` plus ``_embed`` (the embed summary)."""
    bad = [h for h in cfg.probe.heads if h not in HEAD_NAMES]
    if bad or not cfg.probe.heads:
        raise HPAError(f"probe.heads: '{bad[0] if bad else ''}' not one of {', '.join(HEAD_NAMES)}")
    labels, y, fold_of = load_split(cfg)
    _, folds = select_folds(fold_of, folds, cfg.folds.n_splits)
    ids = labels["Id"].astype(str).to_numpy()
    emb = run_embed(cfg, folds, ("train", "test"), device, progress)
    feats, test_ids = {}, None
    for f in folds:
        d = emb["dirs"].get(f, emb["dirs"].get(None))
        x, x_ids = load_embeddings(d, "train")
        t, t_ids = load_embeddings(d, "test")
        feats[f] = (_rows(x, x_ids, ids, d), t)
        test_ids = t_ids
    inputs = data_inputs(Path(cfg.data.root) / cfg.data.train_csv, folds_path(cfg), read_folds(folds_path(cfg)),
                         cfg.data.fraction, len(labels))
    out = {"_embed": emb}
    for head in cfg.probe.heads:
        c = copy.deepcopy(cfg)
        c.name = f"{cfg.name}_{head}"
        t0 = time.perf_counter()
        out[head] = _write_head(c, head, ids, y, fold_of.to_numpy(), list(folds), feats, test_ids, inputs,
                                labels["Id"])
        out[head]["seconds"] = time.perf_counter() - t0
        out[head]["run_dir"] = str(c.run_dir)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa probe``."""
    p.add_argument("--config", required=True, help="experiment YAML with embed: and probe: sections")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--folds", type=int, nargs="+", help="folds to fit (default all)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="embedding device (default: cuda when available)")
    p.add_argument("--out", help="also tune thresholds on each head's OOF and write <out stem>_<head>.csv submissions")


def main(args: argparse.Namespace) -> int:
    """Run ``hpa probe``; print one line per head."""
    cfg = load_config(args.config, args.set)
    r = run_probe(cfg, args.folds, args.device)
    e = r["_embed"]
    for head in cfg.probe.heads:
        m = r[head]
        line = (f"probe {head} on {cfg.embed.source} ({e['dim']}-d, {e['computed']} images embedded now): "
                f"OOF macro F1 {m['oof_macro_f1']:.4f} at 0.5 on {m['n_images']} images (constant "
                f"{m['constant_macro_f1']:.4f}) in {m['seconds']:.1f}s -> {m['run_dir']}")
        if args.out:
            line += "; " + _submission(cfg, head, Path(args.out))
        print(line)
    return 0


def _submission(cfg: ExperimentConfig, head: str, out: Path) -> str:
    """Tune thresholds on the head's OOF (``thresholds.strategy``) and write its submission."""
    rd = RunDir(Path(cfg.runs_dir) / f"{cfg.name}_{head}")
    path = out.with_name(f"{out.stem}_{head}{out.suffix or '.csv'}")
    thr = tune_run(rd, Path(cfg.data.root) / cfg.data.train_csv, cfg.thresholds)
    with OutputGroup() as group:
        v = stage_submission(rd.read_test_probs(), thr, Path(cfg.data.root) / cfg.data.sample_submission,
                             str(path), group, cfg.infer.ensure_one)
    return f"thresholds '{thr['strategy']}' (OOF {thr['oof_f1_tuned']:.4f}) -> {path} ({v['rows']} rows)"
