"""``runs/<exp>/report.md``: one page per run with its plots (``hpa report --run runs/<exp>``).

Sections: summary (``config.yaml``, ``metrics.json``), training curves (``fold<k>/history.csv``),
synthetic images used/excluded per fold (``metrics.json``, when a synthetic strategy is set), external
images and validation F1 per source (when ``data.external_csv`` is set), OOF F1 per class and per fold
(``oof.csv`` + the training labels), thresholds (``thresholds.json``: the chosen strategy, why, and every
strategy's nested estimate). The curves section also compares the best epoch (chosen on the fold it is
scored on), the last epoch and a nested best epoch (chosen on the other folds).
``config.yaml`` is required; every other file is optional: a missing one leaves its section with a
note saying which command writes it, but a present file that cannot be read is an HPAError.
PNGs go to ``runs/<exp>/report/``; the markdown links them relatively.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpa.cli_args import add_run
from hpa.io import number, write_text
from hpa.reports import cv, new_figure, save_figure
from hpa.rundir import RunDir, run_folder


def plot_training_curves(histories: dict[int, pd.DataFrame], title: str = "training curves",
                         path: str | Path | None = None) -> Figure:
    """Left: train (solid) and validation (dashed) loss per epoch per fold. Right: validation macro F1."""
    fig, axes = new_figure(11, 4, 1, 2)
    loss, f1 = axes[0]
    for k, h in sorted(histories.items()):
        # markers: a one-epoch run is a single point, invisible as a bare line
        line, = loss.plot(h["epoch"], h["train_loss"], marker=".", label=f"fold {k} train")
        loss.plot(h["epoch"], h["val_loss"], "--", marker=".", color=line.get_color(), label=f"fold {k} val")
        f1.plot(h["epoch"], h["val_f1"], marker="o", color=line.get_color(), label=f"fold {k}")
    loss.set(xlabel="epoch", ylabel="loss (the config's loss terms)", title="loss")
    f1.set(xlabel="epoch", ylabel="validation macro F1 (threshold 0.5)", ylim=(0, 1), title="validation F1")
    loss.legend(fontsize=7)
    f1.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def _summary(cfg, metrics: dict | None, run_dir: Path) -> list[str]:
    lines = [f"# Run report: {cfg.name}", "",
             f"- model `{cfg.model.name}`, image size {cfg.data.image_size}, {cfg.train.epochs} epochs, "
             f"data `{cfg.data.root}`", ""]
    if metrics is None:
        lines += [f"_No metrics.json yet (written by `python train.py --config {run_dir}/config.yaml`)._", ""]
    elif "oof_macro_f1" in metrics:
        lines += [f"- OOF macro F1 at 0.5: **{metrics['oof_macro_f1']:.4f}** on {metrics.get('n_images', '?')} "
                  f"images (constant predictor {number(metrics.get('constant_macro_f1')):.4f})", ""]
    return lines


def _synthetic_section(cfg, metrics: dict | None) -> list[str]:
    """Per fold: the strategy, synthetic images used and excluded (by reason), from metrics.json."""
    if cfg.synthetic.strategy == "none":
        return []
    head = ["## Synthetic data", "", f"Strategy `{cfg.synthetic.strategy}`; manifests: "
            + ", ".join(f"`{m}`" for m in cfg.synthetic.manifests) + ". Validation images are real only.", ""]
    folds = {k: f.get("synthetic") for k, f in (metrics or {}).get("folds", {}).items() if f.get("synthetic")}
    if not folds:
        return head + ["_No fold has finished yet (counts come from `metrics.json`)._", ""]
    rows = ["| fold | manifest rows | used | excluded | excluded by |", "|---|---|---|---|---|"]
    for k, c in sorted(folds.items(), key=lambda kv: int(kv[0])):
        why = ", ".join(f"{r}: {n}" for r, n in c.get("excluded_by", {}).items() if n) or "-"
        rows.append(f"| {k} | {c.get('manifest_rows', '?')} | {c.get('used', '?')} | "
                    f"{c.get('excluded', '?')} | {why} |")
    return head + rows + [""]


def _external_section(cfg, metrics: dict | None) -> list[str]:
    """Per fold: external images trained and validated, and validation macro F1 per source."""
    if not cfg.data.external_csv:
        return []
    head = ["## External data", "", f"`{cfg.data.external_csv}` (`data.external_in: {cfg.data.external_in}`, "
            f"fraction {cfg.data.external_fraction:g}). Model selection, OOF and thresholds use the Kaggle "
            "images only.", ""]
    folds = {k: f for k, f in (metrics or {}).get("folds", {}).items() if f.get("external")}
    if not folds:
        return head + ["_No fold has finished yet (counts come from `metrics.json`)._", ""]
    rows = ["| fold | external trained | external validated | val F1 kaggle | val F1 external |",
            "|---|---|---|---|---|"]
    for k, f in sorted(folds.items(), key=lambda kv: int(kv[0])):
        e = f["external"]
        ext = "-" if e.get("val_f1") is None else f"{e['val_f1']:.4f}"
        rows.append(f"| {k} | {e.get('train', '?')} | {e.get('val', '?')} | {number(f.get('best_score')):.4f} "
                    f"| {ext} |")
    return head + rows + ["", "Validation F1 at each fold's best epoch (chosen on the Kaggle images), "
                          "macro over classes at 0.5.", ""]


def _curves_section(rd: RunDir, out: Path) -> list[str]:
    hist = rd.histories()
    if not hist:
        return ["## Training curves", "", "_No fold<k>/history.csv yet (written by `train.py`)._", ""]
    plot_training_curves(hist, f"training curves: {rd.path.name}", out / "curves.png")
    best = ", ".join(f"fold {k}: {h['val_f1'].max():.3f}" for k, h in sorted(hist.items()))
    ec = cv.epoch_choice(hist)
    metrics = rd.read_metrics() or {}
    pooled, chosen = metrics.get("select_pooled") or {}, metrics.get("select", "best")

    def row(key: str, label: str, how: str) -> str:
        mean = "-" if key not in ec else "n/a" if ec[key] is None else f"{ec[key]:.4f}"
        pool = f"{pooled[key]:.4f}" if key in pooled else "-"
        mark = " **(train.select)**" if key == chosen else ""
        return f"| {label}{mark} | {mean} | {pool} | {how} |"

    epochs = ", ".join(f"fold {k}: {r['nested_epoch']}" for k, r in ec["per_fold"].items())
    return ["## Training curves", "", "![training curves](report/curves.png)", "",
            f"Best validation macro F1 (0.5): {best}", "",
            "Choosing the epoch (`train.select`; validation macro F1 at 0.5, as the mean of per-fold figures "
            "and over the pooled OOF):", "",
            "| epoch | mean of folds | pooled | how it is chosen |", "|---|---|---|---|",
            row("best", "best per fold", "chosen on the fold it is scored on (`best.pt`): optimistic"),
            row("last", "last", "no choice: honest"),
            row("nested", "nested best", f"chosen on the other folds' mean curve ({epochs or '-'}): honest"),
            row("swa", "swa", "`hpa swa`'s average of kept epochs"), ""]


def _oof_section(rd: RunDir, out: Path, labels_csv, thresholds) -> list[str]:
    run_dir = rd.path
    if not rd.oof.is_file():
        return ["## OOF F1 per class", "", "_No oof.csv yet (written by `train.py` when a fold finishes)._", ""]
    oof = cv.load_oof(run_dir, labels_csv)
    table = cv.per_class_table(oof, thresholds)
    cv.plot_per_class_f1(table, f"{run_dir.name}: OOF F1 per class", out / "per_class_f1.png")
    cv.plot_fold_spread(cv.fold_table(oof, thresholds), f"{run_dir.name}: per-fold spread", out / "folds.png")
    worst = cv.worst_classes(table, 5)
    cols = [c for c in ("class", "name", "support", "f1_at_0.5", "threshold", "f1_tuned") if c in worst]
    lines = ["## OOF F1 per class", "", "![per-class F1](report/per_class_f1.png)", "",
             "![per-fold spread](report/folds.png)", "", "Worst classes:", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |"
              for row in worst[cols].itertuples(index=False)]
    if thresholds is not None:
        cv.plot_f1_vs_threshold(oof, thresholds, path=out / "threshold_curves.png")
        cv.plot_pr_curves(oof, thresholds, path=out / "pr_curves.png")
    return lines + [""]


def _threshold_section(tj: dict | None, path: Path, out: Path) -> list[str]:
    if tj is None:
        return ["## Thresholds", "", f"_No thresholds.json yet (written by `hpa thresholds --config "
                f"{path.parent}/config.yaml`)._", ""]
    figs = ["![F1 vs threshold](report/threshold_curves.png)", "",
            "![precision-recall](report/pr_curves.png)", ""]
    if not (out / "threshold_curves.png").is_file():     # drawn from oof.csv, which may be missing
        figs = ["_Threshold curves need oof.csv._", ""]
    sel = tj.get("selection") or {}
    chosen = [f"Chosen: {sel['reason']} (`{sel.get('file')}`).", ""] if sel.get("reason") else []
    table, nan = [], float("nan")
    if sel.get("nested_f1"):
        pooled = sel.get("nested_f1_pooled") or {}
        table = ["| strategy | nested macro F1, pooled | nested, mean of folds |", "|---|---|---|"] + [
            f"| {'**' + n + '**' if n == tj.get('strategy') else n} | {pooled.get(n, nan):.4f} | {v:.4f} |"
            for n, v in sel["nested_f1"].items()]
        auto = sel.get("auto")
        if auto:
            table.append(f"| auto itself (chosen inside the loop: {', '.join(auto['choices'])}) | "
                         f"{auto['nested_f1_pooled']:.4f} | {auto['nested_f1_mean']:.4f} |")
        table.append("")
    return ["## Thresholds", ""] + chosen + table + [
            f"Strategy `{tj.get('strategy')}`: pooled OOF macro F1 {number(tj.get('oof_f1_at_0.5')):.4f} at 0.5 "
            f"-> {number(tj.get('oof_f1_tuned')):.4f} tuned in-sample (optimistic); nested (honest) "
            f"{number(tj.get('nested_f1_pooled')):.4f} pooled, {number(tj.get('nested_f1_mean')):.4f} mean of folds.",
            ""] + figs


def write_run_report(run_dir: str | Path, labels_csv: str | Path | None = None) -> Path:
    """Write ``run_dir/report.md`` and its PNGs under ``run_dir/report/``; return the markdown path.

    ``labels_csv`` defaults to the run config's ``<data.root>/<data.train_csv>``.
    """
    rd = RunDir(run_dir)
    cfg = rd.load_config()
    out = rd.report_dir
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):       # a figure whose input has gone must not linger in the report
        old.unlink()
    tj = rd.read_thresholds()           # checked: 28 numbers in [0, 1]
    thresholds = None if tj is None else np.asarray(tj["thresholds"], dtype=np.float64)
    metrics = rd.read_metrics()
    lines = _summary(cfg, metrics, rd.path) + _synthetic_section(cfg, metrics) + _external_section(cfg, metrics)
    lines += _curves_section(rd, out)
    lines += _oof_section(rd, out, labels_csv, thresholds)
    lines += _threshold_section(tj, rd.thresholds(), out)
    return write_text(rd.report, "\n".join(lines).rstrip() + "\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa report``."""
    add_run(p)
    p.add_argument("--labels", help="Id,Target CSV (default: the run's <data.root>/train.csv)")


def main(args: argparse.Namespace) -> int:
    """``hpa report``: write the run's report.md and PNGs, print one summary line."""
    run = run_folder(args.run, args.config)
    path = write_run_report(run, args.labels)
    pngs = sorted(p.name for p in RunDir(run).report_dir.glob("*.png"))
    print(f"report: {path} with {len(pngs)} figure(s) ({', '.join(pngs) or 'none'})")
    return 0
