"""``hpa ablate``: the synthetic-data ablation grid, strategies x data regimes x seeds.

Each cell trains the base experiment with one ``synthetic.strategy``, ``data.fraction`` and ``seed``
(everything else fixed), predicts the demo test set and writes ``<runs_dir>/<cell>/cell.json``; a cell
with that file is skipped, so an interrupted grid resumes. Then ``<out_dir>/ablation.csv`` (one row per
cell), ``ablation.md`` (mean and spread per strategy and regime, the ``none`` baseline in every row,
and the same for the **rare group**: the mean F1 of the classes on fewer than ``rare_below`` of the
training images), ``ablation.png``, ``ablation_per_class.csv`` (per strategy, regime and class: mean
OOF and test F1 over seeds and the difference from ``none``) and ``ablation_per_class.png`` are written.
Macro F1 weighs every class alike, so an average gain can hide a loss on the rare classes, where
synthetic data is meant to help most; the per-class files show where a difference comes from.

A grid row is a strategy name or a ``variants`` entry: a label with its own ``--set`` overrides (one
strategy at several settings, e.g. the UniDiffDA utilisation grid of strength x replacement
probability in ``configs/ablation_unidiffda_*.yaml``).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpa.ablation.interval import CellPredictions, markdown as study_md, plot_gain, study_table
from hpa.ablation.rare import class_deltas, per_class_cells, plot_class_deltas, rare_classes, rare_summary, truth_table
from hpa.classes import CLASS_NAMES
from hpa.config import ExperimentConfig, load_config, ranged
from hpa.data.cache import open_images
from hpa.data.dataset import load_split
from hpa.data.folds import folds_path, read_folds
from hpa.data.labels import label_matrix, read_labels
from hpa.errors import HPAError
from hpa.inference.predict import PROB_COLUMNS, open_test_images, predict_run
from hpa.io import write_csv, write_json, write_text
from hpa.reports import save_figure
from hpa.metrics import macro_f1
from hpa.rundir import RunDir, read_probs
from hpa.runlock import run_lock
from hpa.synthetic.mixing.strategies import MIXING_STRATEGIES
from hpa.synthetic.standin import make_standin
from hpa.training.run import run
from hpa.transforms import load_size

CELL_COLUMNS = ["strategy", "fraction", "seed", "folds", "oof_macro_f1", "test_macro_f1", "synthetic_used",
                "synthetic_excluded", "seconds", "run_dir"]
STUDY_COLUMNS = CELL_COLUMNS[:6] + ["heldout_macro_f1", "added"] + CELL_COLUMNS[6:]


@dataclass
class AblationConfig:
    """``configs/ablation_*.yaml``: the grid and the base experiment every cell shares."""
    name: str = ""
    experiment: str = "configs/demo.yaml"      # base experiment config
    overrides: list[str] = field(default_factory=list)   # --set strings applied to every cell
    strategies: list[str] = field(default_factory=lambda: ["none", "concat"])
    fractions: list[float] = ranged(factory=lambda: [0.25, 1.0], gt=0, le=1)
    seeds: list[int] = ranged(factory=lambda: [0, 1], ge=0)
    folds: list[int] = ranged(factory=list, ge=0)        # empty = every fold of the folds file
    runs_dir: str = "runs/ablation"
    out_dir: str = "reports"
    manifests: list[str] = field(default_factory=list)   # synthetic manifests (when standin is false)
    # per-strategy manifests replacing ``manifests`` for that strategy, e.g. local_replace needs
    # variants of each real image (SDEdit, with source_id), not class-conditional samples from noise
    strategy_manifests: dict[str, list[str]] = field(default_factory=dict)
    standin: bool = True                        # generate the cheap stand-in images (hpa.synthetic.standin)
    standin_dir: str = "input/synth/standin"
    standin_per_image: int = ranged(1, ge=1)
    test_labels: str = "test_labels.csv"        # under data.root; "" = no test score
    # label -> --set overrides (must set synthetic.strategy); a label may then appear in strategies
    variants: dict[str, list[str]] = field(default_factory=dict)
    rare_below: float = ranged(0.01, gt=0, lt=1)   # rare group: classes on fewer than this share of train.csv
    # study mode: per-image predictions on every image of the held-out folds and the test set, intervals
    # by bootstrap over images and seeds, gains over this arm (study.md, study.csv, study_gain.png)
    reference: str = ""
    bootstrap: int = ranged(1000, ge=10)


def cell_name(strategy: str, fraction: float, seed: int) -> str:
    """Run-folder name of one cell, e.g. ``concat-f0.25-s0``."""
    return f"{strategy}-f{fraction:g}-s{seed}"


def variant_strategy(ab: AblationConfig, label: str) -> str:
    """The mixing strategy of a grid row: a plain strategy name, or the one a variant sets."""
    if label not in ab.variants:
        return label
    given = [o.split("=", 1)[1].strip() for o in ab.variants[label] if o.split("=", 1)[0].strip() == "synthetic.strategy"]
    if not given:
        raise HPAError(f"variants.{label}: needs a synthetic.strategy=<name> override")
    return given[-1]


def cell_config(ab: AblationConfig, strategy: str, fraction: float, seed: int,
                manifests: list[str]) -> ExperimentConfig:
    """The experiment config of one cell (base + overrides + the cell's three settings; a variant's
    overrides last, so they may set the manifests too)."""
    extra = list(ab.variants.get(strategy, []))
    sets = list(ab.overrides) + [f"name={cell_name(strategy, fraction, seed)}", f"runs_dir={ab.runs_dir}",
                                 f"seed={seed}", f"data.fraction={fraction}",
                                 f"synthetic.strategy={variant_strategy(ab, strategy)}"]
    cfg = load_config(ab.experiment, sets + extra)
    own = any(o.split("=", 1)[0].strip() == "synthetic.manifests" for o in extra)
    if cfg.synthetic.strategy != "none" and not own:
        cfg.synthetic.manifests = list(ab.strategy_manifests.get(strategy, manifests))
    return cfg


def standin_manifests(ab: AblationConfig, base: ExperimentConfig) -> list[str]:
    """Write (or reuse) one stand-in manifest per fold held out; return their paths."""
    fold_of = read_folds(folds_path(base))
    load_split(base)                            # same validation of train.csv vs folds as training
    return [str(make_standin(base.data.root, fold_of, Path(ab.standin_dir) / f"fold{k}", held_out=k,
                             per_image=ab.standin_per_image, seed=0,
                             size=load_size(base.data.image_size, base.train.crop_from),
                             train_dir=base.data.train_dir))
            for k in (ab.folds or sorted(set(int(f) for f in fold_of)))]


def test_score(cfg: ExperimentConfig, labels_csv: Path, folds: list[int]) -> float:
    """Macro F1 at 0.5 of the cell's fold-averaged test probabilities (no TTA) against ``labels_csv``."""
    truth = read_labels(labels_csv)
    images = open_test_images(cfg, truth["Id"].tolist())
    probs = predict_run(cfg, cfg.run_dir, truth["Id"].tolist(), images, folds, tta=1, merge="mean")
    with run_lock(cfg.run_dir):
        write_csv(RunDir.of(cfg).test_probs, probs)
    return macro_f1(label_matrix(truth), probs[PROB_COLUMNS].to_numpy() > 0.5)


def heldout_score(cfg: ExperimentConfig, folds: list[int]) -> float:
    """Macro F1 at 0.5 on *every* image of the held-out ``folds`` (each by its own fold's model; with
    ``data.fraction`` < 1 the OOF holds only the fraction's share of them, but no image of fold k was
    trained on by fold k's model either way); writes ``heldout_probs.csv``."""
    load_split(cfg)                             # the same checks of train.csv against folds as training
    truth = read_labels(Path(cfg.data.root) / cfg.data.train_csv)
    fold_of = read_folds(folds_path(cfg)).reindex(truth["Id"]).to_numpy()
    d, parts = cfg.data, []
    for k in folds:
        ids = truth["Id"][fold_of == k].tolist()
        size = load_size(d.image_size, cfg.train.crop_from)
        images = open_images(Path(d.root) / d.train_dir, ids, size, "kaggle", d.cache, d.cache_dir)
        parts.append(predict_run(cfg, cfg.run_dir, ids, images, [k], tta=1, merge="mean"))
    probs = pd.concat(parts, ignore_index=True)
    with run_lock(cfg.run_dir):
        write_csv(RunDir.of(cfg).heldout_probs, probs)
    y = label_matrix(truth.set_index("Id").loc[probs["Id"]].reset_index())
    return macro_f1(y, probs[PROB_COLUMNS].to_numpy() > 0.5)


def run_cell(ab: AblationConfig, cfg: ExperimentConfig, folds: list[int] | None, label: str = "") -> dict:
    """Train one cell (resuming unfinished folds), score it, write ``cell.json``; return its row."""
    label = label or cfg.synthetic.strategy
    t0 = time.perf_counter()
    metrics = run(cfg, folds, resume=True)
    done = sorted(int(k) for k in metrics["folds"])
    syn = [metrics["folds"][str(k)].get("synthetic", {}) for k in done]
    labels_csv = Path(cfg.data.root) / ab.test_labels
    test = test_score(cfg, labels_csv, done) if ab.test_labels and labels_csv.is_file() else float("nan")
    row = dict(strategy=label, fraction=cfg.data.fraction, seed=cfg.seed,
               folds=" ".join(map(str, done)), oof_macro_f1=metrics["oof_macro_f1"], test_macro_f1=test,
               synthetic_used=float(np.mean([s.get("used", 0) for s in syn])),
               synthetic_excluded=float(np.mean([s.get("excluded", 0) for s in syn])),
               added=float(np.mean([s.get("added", 0) for s in syn])),
               heldout_macro_f1=heldout_score(cfg, done) if ab.reference else float("nan"),
               seconds=round(time.perf_counter() - t0, 1), run_dir=str(cfg.run_dir))
    write_json(cfg.run_dir / "cell.json", row)
    return row


def _all_folds(cfg: ExperimentConfig) -> list[int]:
    return sorted(set(int(k) for k in read_folds(folds_path(cfg))))


def run_grid(ab: AblationConfig, shard: tuple[int, int] = (0, 1)) -> pd.DataFrame | None:
    """Run every unfinished cell of the grid (of shard ``i`` of ``n``: cells ``i, i+n, ...``, so ``n``
    processes share a grid); return all cells' rows, or None while cells of other shards are unfinished."""
    for s in list(ab.strategies) + list(ab.strategy_manifests) + list(ab.variants):
        MIXING_STRATEGIES.get(variant_strategy(ab, s))      # unknown names fail before any training
    cells = [(s, f, seed) for f in ab.fractions for seed in ab.seeds for s in ab.strategies]
    base = cell_config(ab, "none", 1.0, ab.seeds[0] if ab.seeds else 0, [])
    manifests = list(ab.manifests)
    if any(variant_strategy(ab, s) != "none" for s in ab.strategies):
        manifests = standin_manifests(ab, base) if ab.standin else manifests
        if not manifests and any(s not in ab.strategy_manifests and s not in ab.variants
                                 for s in ab.strategies if s != "none"):
            raise HPAError("ablation: no manifests (set manifests: or standin: true)")
    rows, want = [], " ".join(map(str, sorted(ab.folds or _all_folds(base))))
    for i, (s, f, seed) in enumerate(cells):
        cfg = cell_config(ab, s, f, seed, manifests)
        done = cfg.run_dir / "cell.json"
        # a cell finished on other folds is rerun: training resumes its finished folds, scores all
        if done.is_file() and json.loads(done.read_text()).get("folds") == want:
            print(f"cell {i + 1}/{len(cells)} {cfg.name}: finished, skipped")
            rows.append(json.loads(done.read_text()))
            continue
        if i % shard[1] != shard[0]:
            continue
        print(f"cell {i + 1}/{len(cells)} {cfg.name}")
        rows.append(run_cell(ab, cfg, ab.folds or None, s))
    if len(rows) < len(cells):
        print(f"ablation {ab.name}: shard {shard[0]}/{shard[1]} done; {len(cells) - len(rows)} cells of "
              f"other shards unfinished (rerun without --shard for the report once they are)")
        return None
    return pd.DataFrame(rows).reindex(columns=STUDY_COLUMNS if ab.reference else CELL_COLUMNS)


def summarise(cells: pd.DataFrame, rare: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and spread (sample sd) per (strategy, fraction), with the ``none`` baseline and deltas;
    ``rare`` (:func:`hpa.ablation.rare.rare_summary`) adds the rare-group columns."""
    g = cells.groupby(["strategy", "fraction"], sort=False)
    out = g.agg(n=("seed", "size"), oof_mean=("oof_macro_f1", "mean"), oof_sd=("oof_macro_f1", "std"),
                test_mean=("test_macro_f1", "mean"), test_sd=("test_macro_f1", "std"),
                synthetic_used=("synthetic_used", "mean"),
                synthetic_excluded=("synthetic_excluded", "mean")).reset_index()
    base = out[out["strategy"] == "none"].set_index("fraction")
    for m in ("oof", "test"):
        out[f"{m}_baseline"] = out["fraction"].map(base[f"{m}_mean"]) if len(base) else np.nan
        out[f"{m}_delta"] = out[f"{m}_mean"] - out[f"{m}_baseline"]
    if rare is not None:
        out = out.merge(rare, on=["strategy", "fraction"], how="left")
    return out


def markdown(summary: pd.DataFrame, title: str, rare: list[int] | None = None) -> str:
    """The ``ablation.md`` table: one row per strategy and regime, baseline beside every cell; with the
    rare-group columns (and a second table of them) when ``summary`` has them."""
    def ms(m, s):
        if pd.isna(m):
            return "nan"
        return f"{m:.4f}" + (" (1 seed)" if pd.isna(s) else f" ± {s:.4f}")   # no spread from one seed

    lines = [f"# {title}", "", "Macro F1 at threshold 0.5, mean ± sd over seeds; Δ = strategy − `none` "
             "(same regime). Synthetic used/excluded: images per fold (mean).", "",
             "| strategy | fraction | seeds | OOF F1 | baseline OOF | Δ OOF | test F1 | baseline test "
             "| Δ test | synthetic used / excluded |", "|" + "---|" * 10]
    for r in summary.itertuples():
        lines.append(f"| {r.strategy} | {r.fraction:g} | {r.n} | {ms(r.oof_mean, r.oof_sd)} | "
                     f"{r.oof_baseline:.4f} | {r.oof_delta:+.4f} | {ms(r.test_mean, r.test_sd)} | "
                     f"{r.test_baseline:.4f} | {r.test_delta:+.4f} | "
                     f"{r.synthetic_used:.0f} / {r.synthetic_excluded:.0f} |")
    if "rare_test_mean" in summary.columns:
        names = ", ".join(f"{c} {CLASS_NAMES[c]}" for c in rare or [])
        lines += ["", f"## Rare group: {len(rare or [])} classes ({names})", "",
                  "Mean F1 of the rare classes (at 0.5), mean ± sd over seeds; Δ = strategy − `none`. "
                  "Per-class figures: `ablation_per_class.csv`, `ablation_per_class.png`.", "",
                  "| strategy | fraction | rare OOF F1 | Δ rare OOF | rare test F1 | Δ rare test |", "|" + "---|" * 6]
        for r in summary.itertuples():
            lines.append(f"| {r.strategy} | {r.fraction:g} | {ms(r.rare_oof_mean, r.rare_oof_sd)} | "
                         f"{r.rare_oof_delta:+.4f} | {ms(r.rare_test_mean, r.rare_test_sd)} | {r.rare_test_delta:+.4f} |")
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """Mean ± sd OOF and test macro F1 per strategy, one group per data regime (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = list(dict.fromkeys(summary["strategy"]))
    fractions = sorted(summary["fraction"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    width = 0.8 / max(len(strategies), 1)
    for ax, m in zip(axes, ("oof", "test")):
        for j, s in enumerate(strategies):
            d = summary[summary["strategy"] == s].set_index("fraction").reindex(fractions)
            ax.bar(np.arange(len(fractions)) + j * width, d[f"{m}_mean"], width,
                   yerr=d[f"{m}_sd"].fillna(0), label=s, capsize=2)
        ax.set_xticks(np.arange(len(fractions)) + 0.4 - width / 2, [f"{f:g}" for f in fractions])
        ax.set_xlabel("fraction of the training set (data regime)")
        ax.set_ylabel(f"{m.upper()} macro F1 (0.5)")
        ax.set_title(f"{m.upper()} macro F1")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def write_report(cells: pd.DataFrame, out_dir: str | Path, title: str, per_class: pd.DataFrame | None = None,
                 rare: list[int] | None = None) -> pd.DataFrame:
    """Write ``ablation.csv``, ``ablation.md`` and ``ablation.png`` into ``out_dir`` and, given the
    per-class table (:func:`hpa.ablation.rare.per_class_cells`) and the rare classes,
    ``ablation_per_class.csv`` / ``.png`` and the rare-group columns; return the summary."""
    out = Path(out_dir)
    have = per_class is not None and rare is not None
    summary = summarise(cells, rare_summary(per_class, rare) if have else None)
    write_csv(out / "ablation.csv", cells[CELL_COLUMNS])
    write_text(out / "ablation.md", markdown(summary, title, rare))
    plot(summary, out / "ablation.png", title)
    if have:
        deltas = class_deltas(per_class, rare)
        write_csv(out / "ablation_per_class.csv", deltas.round(6))
        plot_class_deltas(deltas, out / "ablation_per_class.png", title)
    return summary


def class_tables(ab: AblationConfig, cells: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """The per-class table of the grid's cells and the rare classes of its training labels."""
    base = cell_config(ab, "none", 1.0, 0, [])
    train = truth_table(Path(base.data.root) / base.data.train_csv)
    test = truth_table(Path(base.data.root) / ab.test_labels) if ab.test_labels else None
    return per_class_cells(cells, train, test), rare_classes(train.to_numpy(), ab.rare_below)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hpa ablate``."""
    p.add_argument("--config", required=True, help="ablation YAML (configs/ablation_demo.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of the ablation config, e.g. --set seeds=[0] (repeatable)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only cells I, I+N, I+2N... (N processes share one grid; the last one to finish "
                        "writes the report; default 0/1 = every cell)")
    p.add_argument("--standin-only", action="store_true",
                   help="only write the stand-in manifests of the config's folds (folds=[]: all), then stop")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (HPAError otherwise)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise HPAError(f"--shard: '{text}' is not I/N (e.g. 0/2)") from None
    if not 0 <= i < n:
        raise HPAError(f"--shard: '{text}' needs 0 <= I < N")
    return i, n


def study_predictions(cells: pd.DataFrame, truths: dict[str, pd.DataFrame]):
    """Per cell and image set, the 0/1 predictions in the order of ``truths[set]`` (Id-indexed)."""
    out = []
    for c in cells.itertuples():
        run = RunDir(c.run_dir)
        for split, path in (("heldout", run.heldout_probs), ("test", run.test_probs)):
            if split not in truths or not path.is_file():
                continue
            probs = read_probs(path).set_index("Id")
            # the held-out images of one fold: score on the Ids every cell has (all, with folds fixed)
            truth = truths[split]
            probs = probs.reindex(truth.index)
            if probs.isna().any().any():
                raise HPAError(f"{path}: lacks Ids of the {split} set (rerun the cell)")
            out.append(CellPredictions(c.strategy, float(c.fraction), int(c.seed), split,
                                       probs[PROB_COLUMNS].to_numpy() > 0.5))
    return out


def write_study(ab: AblationConfig, cells: pd.DataFrame) -> pd.DataFrame:
    """``study.csv``, ``study.md`` and ``study_gain.png`` (see :mod:`hpa.ablation.interval`) in ``out_dir``."""
    base = cell_config(ab, "none", 1.0, 0, [])
    train = truth_table(Path(base.data.root) / base.data.train_csv)
    fold_of = read_folds(folds_path(base)).reindex(train.index)
    held = fold_of.isin(ab.folds or _all_folds(base)).to_numpy()
    truths = {"heldout": train[held]}
    if ab.test_labels and (Path(base.data.root) / ab.test_labels).is_file():
        truths["test"] = truth_table(Path(base.data.root) / ab.test_labels)
    rare = rare_classes(train.to_numpy(), ab.rare_below)
    preds = study_predictions(cells, truths)
    table = study_table(preds, {k: v.to_numpy() for k, v in truths.items()}, rare, ab.reference, ab.bootstrap)
    out = Path(ab.out_dir)
    write_csv(out / "study.csv", table.round(6))
    arms = list(dict.fromkeys(ab.strategies))
    n_img = ", ".join(f"{k}: {len(v)} images" for k, v in truths.items())
    write_text(out / "study.md", f"# {ab.name}: gain over `{ab.reference}`\n\n"
               f"Scored sets: {n_img}; rare group: classes {rare} (under {ab.rare_below:g} of train.csv).\n\n"
               + study_md(table, ab.reference, arms))
    plot_gain(table, out / "study_gain.png", ab.reference, f"{ab.name}: gain over {ab.reference}")
    return table


def main(args: argparse.Namespace) -> int:
    """Run the grid (finished cells skipped), write the report, print a one-line summary."""
    ab = load_config(args.config, args.set, schema=AblationConfig)
    t0 = time.perf_counter()
    if args.standin_only:
        paths = standin_manifests(ab, cell_config(ab, "none", 1.0, 0, []))
        print(f"stand-in manifests: {len(paths)} written or up to date -> {ab.standin_dir}")
        return 0
    shard = parse_shard(args.shard)
    cells = run_grid(ab, shard)
    if cells is None:
        return 0
    if ab.reference:
        write_study(ab, cells)
    summary = write_report(cells, ab.out_dir, f"Synthetic-data ablation: {ab.name}", *class_tables(ab, cells))
    best = summary.sort_values("test_mean", ascending=False).iloc[0]
    print(f"ablation {ab.name}: {len(cells)} cells in {time.perf_counter() - t0:.0f}s; best test F1 "
          f"{best.test_mean:.4f} ({best.strategy}, fraction {best.fraction:g}) -> {ab.out_dir}/ablation.md")
    return 0
