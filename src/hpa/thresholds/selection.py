"""Honest estimates and the ``auto`` choice between threshold strategies (arrays in, numbers out).

Two figures, named the same everywhere (docs/formats.md "Figures"):

* **pooled**: macro F1 over all OOF rows at once (what ``oof_f1_at_0.5`` is; the test score is a
  pooled figure too);
* **mean of folds**: the mean of each fold's own macro F1 (smaller sets: rare classes score 0 more
  often, so it runs below the pooled figure); its fold-to-fold spread is what ``auto`` weighs gains
  against.

``nested``: thresholds tuned on the other folds, applied to each held-out fold. ``auto`` runs the whole
choice (every candidate's nested estimate on the other folds, the simplest within the spread of the
best) inside an outer loop, so its own estimate carries the optimism of choosing, not the maximum of
the candidates' figures.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from hpa.config import ThresholdConfig
from hpa.errors import HPAError
from hpa.metrics import macro_f1
from hpa.thresholds.search import apply_thresholds
from hpa.thresholds.strategies import THRESHOLD_STRATEGIES
from hpa.thresholds.tuner import AUTO, FIXED, ThresholdTuner, check_strategy


def thresholds_on(tuner: ThresholdTuner, p_fit: np.ndarray, y_fit: np.ndarray, p_apply: np.ndarray) -> np.ndarray:
    """Thresholds tuned on ``(p_fit, y_fit)`` for ``p_apply``: a ``refit_on_test`` strategy is fitted on
    ``p_apply``'s scores (never its labels) with the prior of ``y_fit``, as on the test set."""
    if THRESHOLD_STRATEGIES.get(tuner.strategy).refit_on_test:
        prior = y_fit.mean(0) if tuner.prior is None else tuner.prior
        return tuner.clone(prior=prior).fit(p_apply).thresholds_
    return tuner.clone().fit(p_fit, y_fit).thresholds_


def _summary(labels: np.ndarray, pred: np.ndarray, folds: np.ndarray, per_fold: list[float]) -> dict[str, Any]:
    """``{"per_fold", "mean" (of folds), "pooled", "labels_per_row"}`` of held-out predictions."""
    return {"per_fold": per_fold, "mean": float(np.mean(per_fold)), "pooled": macro_f1(labels, pred),
            "labels_per_row": float(pred.sum(1).mean())}


def _no_estimate() -> dict[str, Any]:
    return {"per_fold": [], "mean": float("nan"), "pooled": float("nan"), "labels_per_row": float("nan")}


def nested_estimate(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                    tuner: ThresholdTuner, ensure_one: bool = False) -> dict[str, Any]:
    """Honest estimate of one strategy: tune on the other folds, predict each held-out fold.

    Returns ``{"per_fold": [macro F1 of each fold, ascending fold order], "mean": mean of folds,
    "pooled": macro F1 of all held-out predictions at once, "labels_per_row": their mean label
    count}``. ``ensure_one``: a row with no class over its threshold gets its argmax, as ``infer.py``
    predicts by default (``infer.ensure_one``). Fewer than two folds: no estimate (empty, NaN).
    """
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        return _no_estimate()
    pred, per_fold = np.zeros(labels.shape, np.uint8), []
    for f in np.unique(folds):
        held = folds == f
        pred[held] = apply_thresholds(probs[held], thresholds_on(tuner, probs[~held], labels[~held], probs[held]),
                                      ensure_one)
        per_fold.append(macro_f1(labels[held], pred[held]))
    return _summary(labels, pred, folds, per_fold)


def pick_strategy(per_fold: dict[str, Sequence[float]]) -> tuple[str, str]:
    """``auto``'s rule on candidates' per-fold nested F1s (candidate order = preference among equals):
    the best mean, unless a simpler candidate (lower declared ``complexity``) trails it by no more than
    the fold-to-fold spread of the difference (sample sd of the per-fold gaps); then the simplest such.
    Returns ``(name, reason)``; no estimate (fewer than two folds): the first candidate."""
    names = list(per_fold)
    if not names:
        raise HPAError("thresholds.candidates: no strategy to choose from")
    if any(len(v) == 0 or np.isnan(v).any() for v in per_fold.values()):
        return names[0], f"no nested estimate (fewer than 2 folds) -> {names[0]}"
    means = {n: float(np.mean(per_fold[n])) for n in names}
    best = max(names, key=lambda n: means[n])          # first maximum: the earlier candidate
    close = {}
    for n in names:
        gap = np.asarray(per_fold[best]) - np.asarray(per_fold[n])
        spread = float(np.std(gap, ddof=1)) if len(gap) > 1 else 0.0
        if gap.mean() <= spread:
            close[n] = (float(gap.mean()), spread)
    chosen = min(close, key=lambda n: (THRESHOLD_STRATEGIES.get(n).complexity, names.index(n)))
    if chosen == best:
        return best, f"{best} best (mean of folds {means[best]:.4f})"
    gap, spread = close[chosen]
    return chosen, (f"{best} best (mean of folds {means[best]:.4f}) but {chosen} is simpler and "
                    f"within the fold spread ({gap:+.4f} <= sd {spread:.4f})")


def auto_estimate(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                  tuners: dict[str, ThresholdTuner], ensure_one: bool = False) -> dict[str, Any]:
    """Honest estimate of ``auto`` itself: for each held-out fold, the whole choice (each candidate's
    nested estimate over the remaining folds, :func:`pick_strategy`) is made without it, and the chosen
    strategy, tuned on the remaining folds, predicts it. Returns :func:`nested_estimate`'s keys plus
    ``"choices"`` (the strategy chosen for each fold)."""
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        return {**_no_estimate(), "choices": []}
    pred, per_fold, choices = np.zeros(labels.shape, np.uint8), [], []
    for f in np.unique(folds):
        held = folds == f
        p_in, y_in, f_in = probs[~held], labels[~held], folds[~held]
        inner = {n: nested_estimate(p_in, y_in, f_in, t, ensure_one)["per_fold"] for n, t in tuners.items()}
        name = pick_strategy(inner)[0]
        choices.append(name)
        pred[held] = apply_thresholds(probs[held], thresholds_on(tuners[name], p_in, y_in, probs[held]), ensure_one)
        per_fold.append(macro_f1(labels[held], pred[held]))
    return {**_summary(labels, pred, folds, per_fold), "choices": choices}


def choose_strategy(nested: dict[str, Any], requested: str = AUTO, default: float = 0.5) -> dict[str, Any]:
    """Pick the thresholds to apply from each candidate's nested estimate (``{strategy: per-fold F1s}``,
    or one mean per strategy, which counts as a single fold).

    ``auto``: :func:`pick_strategy`. A named strategy is applied as asked, with a ``warning`` when its
    estimate (mean of folds) is below ``fixed``'s. Returns ``{"requested", "strategy" (chosen),
    "reason" (one line), "warning" (or None), "nested_f1" ({strategy: mean of folds})}``.
    """
    check_strategy(requested)
    per_fold = {k: [float(x) for x in np.atleast_1d(np.asarray(v, dtype=np.float64))] for k, v in nested.items()}
    means = {k: float(np.mean(v)) if len(v) else float("nan") for k, v in per_fold.items()}
    base, fixed = means.get(FIXED, float("nan")), f"fixed {default:g}"
    out: dict[str, Any] = {"requested": requested, "nested_f1": means, "warning": None}
    if requested == AUTO:
        out["strategy"], why = pick_strategy(per_fold)
        out["reason"] = f"auto: {why} -> {out['strategy']}"
        return out
    out["strategy"] = requested
    mine = means.get(requested, float("nan"))
    out["reason"] = f"{requested} (asked for by name): nested {mine:.4f} vs {fixed} {base:.4f}"
    if requested != FIXED and mine < base:
        out["warning"] = (f"{requested}'s nested estimate {mine:.4f} is below {fixed}'s {base:.4f}: tuned "
                          f"thresholds that lose on held-out folds; applied because asked for by name")
    return out


def tuners_from_config(cfg: ThresholdConfig) -> dict[str, ThresholdTuner]:
    """The tuners ``hpa thresholds`` evaluates: ``fixed`` (the reference), every name in
    ``cfg.candidates`` (what ``auto`` chooses among) and ``cfg.strategy`` when it names one; each with
    its ``cfg.params[name]``. HPAError for an unknown name or parameter, before any work."""
    check_strategy(cfg.strategy)
    for name in cfg.params:
        THRESHOLD_STRATEGIES.get(name)           # params for an unknown strategy: a typo
    names = [FIXED, *cfg.candidates] + ([cfg.strategy] if cfg.strategy != AUTO else [])
    tuners = {}
    for name in dict.fromkeys(names):
        tuners[name] = ThresholdTuner(check_strategy(name), cfg.params.get(name) or {}, cfg.default, cfg.rate_ratio)
        tuners[name].build()                     # params checked now, not in the middle of tuning
    return tuners


def tuner_from_config(cfg: ThresholdConfig, strategy: str | None = None) -> ThresholdTuner:
    """One :class:`ThresholdTuner` for ``strategy`` (default ``cfg.strategy``, which may not be ``auto``)."""
    strategy = strategy or cfg.strategy
    if strategy == AUTO:
        raise HPAError("thresholds.strategy 'auto' chooses between strategies: build them with "
                       "tuners_from_config and pick with choose_strategy")
    return tuners_from_config(ThresholdConfig(**{**vars(cfg), "strategy": strategy, "candidates": []}))[strategy]
