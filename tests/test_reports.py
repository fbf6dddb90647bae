"""Report functions (hpa.reports) on a fake run built with numpy: no training, seconds in all."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.classes import NUM_CLASSES
from hpa.config import ExperimentConfig, ThresholdConfig, save_config
from hpa.data.images import read_kaggle_rgby, write_kaggle_rgby
from hpa.data.labels import format_target, label_matrix, read_labels
from hpa.errors import HPAError
from hpa.io import write_csv, write_json

P = [f"p{i}" for i in range(NUM_CLASSES)]


def make_fake_run(run_dir: Path, data_root: Path, seed: int, with_model: bool = False) -> Path:
    """A run folder as train.py/infer.py/hpa thresholds would leave it, with probabilities that are
    informative but noisy (probs = 0.45 * label + noise), 3 folds, 3-epoch histories."""
    from hpa.thresholds.stage import tune_run

    rng = np.random.default_rng(seed)
    labels = read_labels(data_root / "train.csv")
    y = label_matrix(labels)
    cfg = ExperimentConfig(name=run_dir.name, runs_dir=str(run_dir.parent))
    cfg.data.root, cfg.data.image_size, cfg.model.name, cfg.train.epochs = str(data_root), 32, "test_resnet", 3
    save_config(cfg, run_dir / "config.yaml")
    folds = np.arange(len(labels)) % 3
    oof = pd.DataFrame(np.clip(0.45 * y + 0.6 * rng.beta(1, 3, y.shape), 0, 1), columns=P)
    oof.insert(0, "fold", folds)
    oof.insert(0, "Id", labels["Id"])
    write_csv(run_dir / "oof.csv", oof)
    for f in range(3):
        write_csv(run_dir / f"fold{f}" / "history.csv", pd.DataFrame({
            "epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.72, 0.6, 0.55 + 0.01 * f],
            "val_f1": [0.1, 0.2, 0.3 + 0.02 * f], "lr": [1e-3, 5e-4, 1e-4], "time_s": [1.0, 1.0, 1.0]}))
    write_json(run_dir / "metrics.json", {"oof_macro_f1": 0.5, "n_images": len(labels), "constant_macro_f1": 0.1})
    tune_run(run_dir, data_root / "train.csv", ThresholdConfig())
    sample = pd.read_csv(data_root / "sample_submission.csv", dtype=str)
    test = pd.DataFrame(rng.random((len(sample), NUM_CLASSES)) * 0.6, columns=P)
    test.insert(0, "Id", sample["Id"])
    write_csv(run_dir / "test_probs.csv", test)
    if with_model:
        import torch
        from hpa.models import build_model
        torch.manual_seed(0)
        (run_dir / "fold0").mkdir(exist_ok=True)
        torch.save({"model": build_model(cfg.model).state_dict(), "epoch": 3, "score": 0.3},
                   run_dir / "fold0" / "best.pt")
    return run_dir


def make_fake_synth(folder: Path, data_root: Path, n: int = 12, seed: int = 0) -> Path:
    """A synthetic folder: ``n`` noisy copies of real images with their labels, filter scores filled,
    and ``manifest_filtered.csv`` keeping the top 75 %."""
    from hpa.synthetic.manifest import COLUMNS
    rng = np.random.default_rng(seed)
    labels = read_labels(data_root / "train.csv").head(n)
    rows = []
    for i, (src, ls) in enumerate(zip(labels["Id"], labels["labels"])):
        img = read_kaggle_rgby(data_root / "train", src).astype(np.int16)
        img = np.clip(img + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)
        sid = f"syn-demo-sdedit-{i:06d}"
        write_kaggle_rgby(folder / "train", sid, img)
        rows.append({"Id": sid, "Target": format_target(ls), "label_weights": "", "source_id": src,
                     "generator": "ddpm", "generator_trained_on": "1 2", "mode": "sdedit", "strength": "0.6",
                     "steps": "25", "guidance": "2.0", "seed": str(i), "filter_score": f"{(i + 1) / (n + 1):.6f}"})
    man = pd.DataFrame(rows, columns=COLUMNS)
    write_csv(folder / "manifest.csv", man)
    write_csv(folder / "manifest_filtered.csv", man.iloc[n // 4:])
    return folder


@pytest.fixture(scope="module")
def outputs(tiny_demo, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    run = make_fake_run(root / "runs" / "demo", tiny_demo, seed=0)
    run2 = make_fake_run(root / "runs" / "demo_seed1", tiny_demo, seed=1)
    synth = make_fake_synth(root / "synth" / "demo", tiny_demo)
    return {"data": tiny_demo, "run": run, "run2": run2, "synth": synth, "root": root}


def test_eda_tables_and_figures(outputs, tmp_path):
    from hpa.reports import eda
    labels = read_labels(outputs["data"] / "train.csv")
    t = eda.class_table(labels)
    assert t["count"].tolist() == label_matrix(labels).sum(0).tolist()
    assert t["real_share"].iat[0] == pytest.approx(12885 / 31072, abs=1e-4)
    c = eda.cooccurrence(labels)
    assert np.array_equal(np.diag(c), t["count"].to_numpy()) and np.array_equal(c, c.T)
    fig = eda.plot_class_frequencies(labels, path=tmp_path / "freq.png")
    assert fig.axes[0].get_yscale() == "log" and (tmp_path / "freq.png").stat().st_size > 1000
    assert fig.axes[0].get_xticklabels()[27].get_text() == "27 Rods & rings"
    eda.plot_cooccurrence(labels, path=tmp_path / "co.png")
    eda.plot_labels_per_image(labels, path=tmp_path / "lpi.png")
    fig = eda.plot_class_examples(outputs["data"] / "train", labels, classes=[0, 27], path=tmp_path / "ex.png")
    assert len(fig.axes) == 10 and fig.axes[0].get_title() == "RGBY composite"
    stats = eda.intensity_stats(outputs["data"] / "train", labels["Id"][:3].tolist(), size=32)
    assert stats.shape == (12, 6) and stats["channel"].tolist()[:4] == ["red", "green", "blue", "yellow"]
    img = read_kaggle_rgby(outputs["data"] / "train", labels["Id"].iat[0], 32)
    assert stats["mean"].iat[1] == pytest.approx(img[..., 1].mean(), rel=1e-5)
    eda.plot_intensity_stats(stats, path=tmp_path / "int.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co.png", "ex.png", "freq.png", "int.png", "lpi.png"]


def test_cv_numbers(outputs):
    from hpa.metrics import macro_f1
    from hpa.reports import cv
    from hpa.thresholds import apply_thresholds, load_thresholds
    oof = cv.load_oof(outputs["run"])
    th = load_thresholds(outputs["run"] / "thresholds.json")
    t = cv.per_class_table(oof, th["thresholds"])
    assert t["f1_tuned"].mean() == pytest.approx(th["oof_f1_tuned"], abs=1e-12)
    assert t["f1_at_0.5"].mean() == pytest.approx(th["oof_f1_at_0.5"], abs=1e-12)
    worst = cv.worst_classes(t, 3)
    assert worst["f1_tuned"].tolist() == sorted(t["f1_tuned"])[:3]
    folds = cv.fold_table(oof)
    assert folds["n"].tolist() == [32, 32, 32]
    m0 = oof.folds == 0
    assert folds["macro_f1"].iat[0] == pytest.approx(macro_f1(oof.y[m0], apply_thresholds(oof.probs[m0], [0.5] * 28)))
    curve = cv.threshold_curves(oof, 0, np.array([0.0, 0.5, 1.01]))
    n0 = oof.y[:, 0].sum()
    assert curve["recall"].iat[0] == 1.0 and curve["precision"].iat[0] == pytest.approx(n0 / len(oof.ids))
    assert curve["f1"].iat[2] == 0.0 and curve["precision"].iat[2] == 1.0
    hv = cv.honest_vs_optimistic(oof, ["per_class", "global"], ensure_one=True)   # as hpa thresholds did
    row = hv.set_index("strategy").loc["per_class"]
    pc = load_thresholds(outputs["run"] / "thresholds_per_class.json")
    assert row["in_sample"] == pytest.approx(pc["oof_f1_tuned"])
    assert row["nested"] == pytest.approx(pc["nested_f1_pooled"])         # pooled, like in_sample
    assert row["nested_mean"] == pytest.approx(pc["nested_f1_mean"])
    assert row["gap"] > 0          # tuning 28 thresholds on the data it is scored on flatters it


def test_cv_figures(outputs, tmp_path):
    from hpa.reports import cv
    oof = cv.load_oof(outputs["run"])
    t = cv.per_class_table(oof, [0.4] * 28)
    fig = cv.plot_per_class_f1(t, path=tmp_path / "f1.png")
    assert fig.axes[0].get_ylabel() == "F1" and "Nucleoplasm" in fig.axes[0].get_xticklabels()[0].get_text()
    cv.plot_fold_spread(cv.fold_table(oof), path=tmp_path / "folds.png")
    fig = cv.plot_f1_vs_threshold(oof, [0.4] * 28, classes=[0, 1, 2])
    assert [ax.get_title().split(" (")[0] for ax in fig.axes[:3]] == ["0 Nucleoplasm", "1 Nuclear membrane",
                                                                      "2 Nucleoli"]
    cv.plot_pr_curves(oof, [0.4] * 28, path=tmp_path / "pr.png")
    cv.plot_honest_vs_optimistic(cv.honest_vs_optimistic(oof, ["global"]), path=tmp_path / "hv.png")
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_run_report_full_and_partial(outputs, tmp_path):
    from hpa.reports.run_report import write_run_report
    md = write_run_report(outputs["run"]).read_text()
    assert md.startswith("# Run report: demo")
    for png in ("curves", "per_class_f1", "folds", "threshold_curves", "pr_curves"):
        assert f"(report/{png}.png)" in md and (outputs["run"] / "report" / f"{png}.png").is_file()
    # every fold peaks at its last epoch (0.30, 0.32, 0.34): best = last = nested best
    assert "| best per fold **(train.select)** | 0.3200 |" in md and "| last | 0.3200 |" in md
    assert "| nested best | 0.3200 | - | chosen on the other folds' mean curve (fold 0: 3, fold 1: 3, fold 2: 3)" in md
    assert "Chosen: auto: " in md and ("| fixed | " in md or "| **fixed** | " in md) and "| auto itself (chosen inside the loop: " in md
    # a run with only its config: every section says what is missing, nothing crashes
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(outputs["run"] / "config.yaml", bare / "config.yaml")
    md = write_run_report(bare).read_text()
    assert "_No fold<k>/history.csv yet" in md and "_No oof.csv yet" in md and "_No thresholds.json yet" in md
    assert list((bare / "report").glob("*.png")) == []
    # a present but corrupt optional file and a missing required file are errors
    (bare / "thresholds.json").write_text("{not json")
    with pytest.raises(HPAError, match=r"thresholds.json: invalid JSON"):
        write_run_report(bare)
    with pytest.raises(HPAError, match=r"config.yaml"):
        write_run_report(tmp_path / "nope")


def test_report_cli(outputs, capsys):
    from hpa.cli import main
    assert main(["report", "--run", str(outputs["run"])]) == 0
    assert "report: " in capsys.readouterr().out


def test_synthetic(outputs, tmp_path):
    from hpa.synthetic import figures as S
    man, filt = S.load_synth(outputs["synth"])
    assert len(man) == 12 and len(filt) == 9
    real = read_labels(outputs["data"] / "train.csv")
    near = S.nearest_real(man, outputs["synth"] / "train", real, outputs["data"] / "train", size=32)
    # each image is a noisy copy of its source: the nearest real image is the source
    assert near["nearest_id"].tolist() == man["source_id"].tolist()
    assert (near["similarity"] > 0.5).all() and (near["similarity"] <= 1 + 1e-5).all()
    S.plot_memorization(near["similarity"], path=tmp_path / "mem.png")
    eff = S.filter_effect(man, filt)
    assert eff["before"].sum() == sum(len(ls) for ls in man["labels"])
    assert eff["after"].sum() == sum(len(ls) for ls in filt["labels"])
    S.plot_filter_effect(man, filt, path=tmp_path / "filter.png")
    probs = np.zeros((12, NUM_CLASSES))
    probs[:, 0] = 0.8
    ag = S.label_agreement_per_class(list(man["labels"]), probs).set_index("class")
    n0 = sum(0 in ls for ls in man["labels"])
    assert ag.loc[0, "n_images"] == n0 and ag.loc[0, "recall_at_0.5"] == 1.0
    S.plot_label_agreement(ag.reset_index(), path=tmp_path / "agree.png")
    fig = S.plot_real_vs_synthetic(man, outputs["synth"] / "train", real, outputs["data"] / "train",
                                   classes=[0, 25], per_class=2, path=tmp_path / "grid.png")
    assert fig.axes[0].get_title() == "real" and fig.axes[2].get_title() == "synthetic"
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_ensemble(outputs, tmp_path):
    from hpa.reports import ensemble as E
    from hpa.config import ThresholdConfig
    oofs = E.load_oofs([outputs["run"], outputs["run2"]])
    corr = E.oof_correlation(oofs)
    assert corr.index.tolist() == ["demo", "demo_seed1"] and corr.iat[0, 0] == 1.0
    assert 0.3 < corr.iat[0, 1] < 1.0 and corr.iat[0, 1] == corr.iat[1, 0]
    E.plot_correlation(corr, path=tmp_path / "corr.png")
    scan = E.blend_weight_scan(oofs, steps=3)
    assert scan.shape == (6, 6) and scan["weight"].tolist() == [0.0, 0.5, 1.0] * 2
    from hpa.reports.cv import per_class_table
    solo = per_class_table(oofs["demo"])["f1_at_0.5"].mean()
    assert scan.query("run == 'demo' and weight == 1.0")["f1_at_0.5"].iat[0] == pytest.approx(solo)
    # auto: at each weight the strategy infer.py --ensemble would choose, among the default candidates
    auto = E.blend_weight_scan(oofs, steps=2, strategy="auto")
    assert set(auto["strategy"]) <= set(ThresholdConfig().candidates) and auto.shape == (4, 6)
    # one definition of each figure: fixed 0.5's nested estimate is the pooled OOF F1 at 0.5 itself
    fixed = E.blend_weight_scan(oofs, steps=2, strategy="fixed")
    np.testing.assert_allclose(fixed["f1_nested"], fixed["f1_at_0.5"])
    E.plot_blend_weights(scan, path=tmp_path / "w.png")
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"Id": ["a", "b", "c", "d"], "Predicted": ["0", "0 25", "25", "27"]}).to_csv(sub, index=False)
    rates = E.submission_label_rates(sub)
    assert rates[0] == 0.5 and rates[25] == 0.5 and rates[27] == 0.25 and rates.sum() == 1.25
    fig = E.plot_submission_rates(sub, outputs["data"] / "train.csv", path=tmp_path / "rates.png")
    assert len(fig.axes[0].patches) == 3 * NUM_CLASSES
    with pytest.raises(HPAError, match="at least 2 runs"):
        E.blend_weight_scan({"demo": oofs["demo"]})
