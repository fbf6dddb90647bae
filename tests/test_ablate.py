"""``hpa ablate``: summary numbers, the markdown table, and a tiny resumable grid end to end."""
import json

import pandas as pd
import pytest
import yaml

from hpa.ablation.grid import CELL_COLUMNS, markdown, summarise
from hpa.cli import run_command
from hpa.data.folds import make_folds, write_folds
from hpa.data.labels import read_labels
from hpa.errors import HPAError


def cells():
    rows = [("none", 0.25, 0, 0.20, 0.30), ("none", 0.25, 1, 0.30, 0.40),
            ("concat", 0.25, 0, 0.25, 0.35), ("concat", 0.25, 1, 0.45, 0.35)]
    return pd.DataFrame([dict(strategy=s, fraction=f, seed=seed, oof_macro_f1=o, test_macro_f1=t,
                              synthetic_used=10 if s != "none" else 0, synthetic_excluded=5 if s != "none" else 0,
                              seconds=1.0, run_dir="x") for s, f, seed, o, t in rows], columns=CELL_COLUMNS)


def test_summary_mean_spread_and_baseline_in_every_row():
    s = summarise(cells()).set_index("strategy")
    assert s.loc["concat", "oof_mean"] == pytest.approx(0.35)
    assert s.loc["concat", "oof_sd"] == pytest.approx(0.14142136, rel=1e-6)      # sample sd of .25, .45
    assert s.loc["concat", "oof_baseline"] == pytest.approx(0.25)
    assert s.loc["concat", "oof_delta"] == pytest.approx(0.10)
    assert s.loc["concat", "test_delta"] == pytest.approx(0.0)
    md = markdown(summarise(cells()), "T")
    assert "| none | 0.25 | 2 | 0.2500 ± 0.0707 | 0.2500 | +0.0000 | 0.3500 ± 0.0707 | 0.3500 | +0.0000 | 0 / 0 |" in md
    assert "| concat | 0.25 | 2 | 0.3500 ± 0.1414 | 0.2500 | +0.1000 | 0.3500 ± 0.0000 | 0.3500 | +0.0000 | 10 / 5 |" in md


def per_class_cells_table():
    """Per-class F1 of the four cells above: class 0 is rare-ish (F1 varies), the rest 0.5."""
    from hpa.ablation.rare import KEYS
    f1_of = {("none", 0): 0.0, ("none", 1): 0.2, ("concat", 0): 0.4, ("concat", 1): 0.8}
    rows = [dict(zip(KEYS, (s, f, seed)), **{"class": c}, oof_f1=f1_of[s, seed] if c in (0, 1) else 0.5,
                 test_f1=f1_of[s, seed] / 2 if c in (0, 1) else 0.5)
            for s, f, seed in cells()[KEYS].itertuples(index=False) for c in range(28)]
    return pd.DataFrame(rows)


def test_rare_group_and_per_class_deltas():
    import numpy as np

    from hpa.ablation.rare import class_deltas, rare_classes, rare_summary
    labels = np.zeros((200, 28), int)
    labels[:, 0] = 1
    labels[:1, 1] = labels[:3, 2] = 1            # 0.5% and 1.5% of the images
    assert rare_classes(labels, 0.01)[:3] == [1, 3, 4] and 2 not in rare_classes(labels, 0.01)
    pc = per_class_cells_table()
    r = rare_summary(pc, [0, 1]).set_index("strategy")
    assert r.loc["concat", "rare_oof_mean"] == pytest.approx(0.6)            # seeds: 0.4, 0.8
    assert r.loc["concat", "rare_oof_sd"] == pytest.approx(0.28284271, rel=1e-6)
    assert r.loc["concat", "rare_oof_delta"] == pytest.approx(0.5)            # none: 0.0, 0.2
    assert r.loc["concat", "rare_test_delta"] == pytest.approx(0.25)
    d = class_deltas(pc, [0, 1]).set_index(["strategy", "class"])
    assert d.loc[("concat", 0), "oof_delta"] == pytest.approx(0.5) and d.loc[("concat", 5), "oof_delta"] == 0
    assert bool(d.loc[("concat", 1), "rare"]) and not bool(d.loc[("concat", 2), "rare"])
    assert d.loc[("concat", 0), "name"] == "Nucleoplasm"
    md = markdown(summarise(cells(), rare_summary(pc, [0, 1])), "T", [0, 1])
    assert "## Rare group: 2 classes (0 Nucleoplasm, 1 Nuclear membrane)" in md
    assert "| concat | 0.25 | 0.6000 ± 0.2828 | +0.5000 | 0.3000 ± 0.1414 | +0.2500 |" in md


def test_variants_set_their_strategy_settings_and_manifests(tmp_path):
    from hpa.ablation.grid import AblationConfig, cell_config, variant_strategy
    from hpa.config import load_config
    ab = load_config(None, ["variants={lrr_p0.3: [synthetic.strategy=local_replace, synthetic.params.p=0.3, "
                            "'synthetic.manifests=[a.csv]'], fc: [synthetic.strategy=concat]}",
                            "strategy_manifests={fc: [b.csv]}"], schema=AblationConfig)
    assert variant_strategy(ab, "lrr_p0.3") == "local_replace" and variant_strategy(ab, "concat") == "concat"
    cfg = cell_config(ab, "lrr_p0.3", 0.5, 1, ["m.csv"])
    assert (cfg.name, cfg.synthetic.strategy, cfg.synthetic.params, cfg.synthetic.manifests) == \
        ("lrr_p0.3-f0.5-s1", "local_replace", {"p": 0.3}, ["a.csv"])
    assert cell_config(ab, "fc", 1.0, 0, ["m.csv"]).synthetic.manifests == ["b.csv"]
    assert cell_config(ab, "replace", 1.0, 0, ["m.csv"]).synthetic.manifests == ["m.csv"]
    ab.variants["bad"] = ["synthetic.params.p=0.1"]
    with pytest.raises(HPAError, match="variants.bad: needs a synthetic.strategy=<name> override"):
        variant_strategy(ab, "bad")


@pytest.mark.slow
def test_tiny_grid_writes_report_and_resumes(tiny_demo, tmp_path, capsys):
    folds = tmp_path / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 3, 0))
    ab = {"experiment": str(tmp_path / "exp.yaml"), "strategies": ["none", "concat"], "fractions": [1.0],
          "seeds": [0], "folds": [0], "runs_dir": str(tmp_path / "runs"), "out_dir": str(tmp_path / "rep"),
          "standin_dir": str(tmp_path / "standin"), "overrides": ["train.epochs=1"], "rare_below": 0.06,
          "reference": "none"}     # held-out scoring and the study report (gain over the reference) run too
    exp = {"data": {"root": str(tiny_demo), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 3, "file": str(folds)}, "model": {"name": "test_resnet"},
           "loss": [{"name": "bce"}], "train": {"batch_size": 16, "num_workers": 0}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump(ab))
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml")]) == 0
    table = pd.read_csv(tmp_path / "rep" / "ablation.csv")
    assert list(table.columns) == CELL_COLUMNS
    assert table[["strategy", "fraction", "seed"]].values.tolist() == [["none", 1.0, 0], ["concat", 1.0, 0]]
    n_train = int((pd.read_csv(folds)["fold"] != 0).sum())
    assert table["synthetic_used"].tolist() == [0.0, n_train]        # fold 0's stand-ins, sources in training
    assert table["test_macro_f1"].between(0, 1).all() and table["oof_macro_f1"].between(0, 1).all()
    study = pd.read_csv(tmp_path / "rep" / "study.csv")             # every fold-0 image, by fold 0's model
    assert set(study["arm"]) == {"none", "concat"} and {"heldout", "test"} <= set(study["set"])
    assert (tmp_path / "rep" / "study.md").is_file() and (tmp_path / "rep" / "study_gain.png").is_file()
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert md.count("| concat | 1 | 1 |") == 1 and (tmp_path / "rep" / "ablation.png").stat().st_size > 10_000
    # every class of the tiny demo has >= 5 of 96 images: under 6%, the 5-image classes are the rare group
    assert "## Rare group:" in md and "| concat | 1 | " in md.split("## Rare group")[1]
    per = pd.read_csv(tmp_path / "rep" / "ablation_per_class.csv")
    assert len(per) == 2 * 28 and per["rare"].any() and per.loc[per["strategy"] == "none", "test_delta"].eq(0).all()
    assert (tmp_path / "rep" / "ablation_per_class.png").read_bytes()[:4] == b"\x89PNG"
    cell = tmp_path / "runs" / "concat-f1-s0" / "cell.json"
    before = cell.stat().st_mtime_ns
    capsys.readouterr()
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml")]) == 0
    assert "cell 2/2 concat-f1-s0: finished, skipped" in capsys.readouterr().out
    assert cell.stat().st_mtime_ns == before
    assert json.loads(cell.read_text())["strategy"] == "concat"
    assert json.loads(cell.read_text())["folds"] == "0"
    # a cell finished on other folds is not skipped: rerun (its trained fold resumes) and rescored
    cell.write_text(json.dumps({**json.loads(cell.read_text()), "folds": "9"}))
    capsys.readouterr()
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml")]) == 0
    out = capsys.readouterr().out
    assert "cell 1/2 none-f1-s0: finished, skipped" in out and "cell 2/2 concat-f1-s0\n" in out
    assert json.loads(cell.read_text())["folds"] == "0"


def test_unknown_strategy_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump({"strategies": ["none", "cutmix"]}))
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cutmix" in err and "concat" in err


def test_standin_only_writes_one_manifest_per_held_out_fold(tiny_demo, tmp_path, capsys):
    folds = tmp_path / "folds.csv"
    write_folds(folds, make_folds(read_labels(tiny_demo / "train.csv"), 3, 0))
    exp = {"data": {"root": str(tiny_demo), "image_size": 32}, "folds": {"n_splits": 3, "file": str(folds)}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    ab = {"experiment": str(tmp_path / "exp.yaml"), "folds": [0, 2], "standin_dir": str(tmp_path / "si")}
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump(ab))
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml"), "--standin-only"]) == 0
    assert "stand-in manifests: 2 written or up to date" in capsys.readouterr().out
    fold_of = pd.read_csv(folds).set_index("Id")["fold"]
    for k in (0, 2):
        m = pd.read_csv(tmp_path / "si" / f"fold{k}" / "manifest.csv", dtype=str, keep_default_na=False)
        assert len(m) == int((fold_of != k).sum()) and not fold_of[m["source_id"]].eq(k).any()
        assert set(m["generator_trained_on"]) == {" ".join(str(j) for j in range(3) if j != k)}
        assert set(m["generator"]) == {"standin"}
    assert not (tmp_path / "si" / "fold1").exists()


def test_strategy_manifests_replace_the_shared_list_for_that_strategy_only(tmp_path):
    from hpa.ablation.grid import AblationConfig, cell_config
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"data": {"root": str(tmp_path)}}))
    ab = AblationConfig(experiment=str(tmp_path / "exp.yaml"),
                        strategy_manifests={"local_replace": ["variants/manifest.csv"]})
    shared = ["noise/manifest.csv"]
    assert cell_config(ab, "local_replace", 0.25, 1, shared).synthetic.manifests == ["variants/manifest.csv"]
    concat = cell_config(ab, "concat", 0.25, 1, shared)
    assert concat.synthetic.manifests == shared and concat.data.fraction == 0.25 and concat.seed == 1
    assert cell_config(ab, "none", 1.0, 0, shared).synthetic.manifests == []


def test_unknown_strategy_in_strategy_manifests_is_refused(tmp_path, capsys):
    ab = {"strategies": ["none"], "strategy_manifests": {"local_swap": ["m.csv"]}}
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump(ab))
    assert run_command("ablate", ["--config", str(tmp_path / "ab.yaml")]) == 2
    assert "local_swap" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["demo", "real"])
def test_unidiffda_grids_build_every_cell(scale):
    from pathlib import Path

    from hpa.ablation.grid import AblationConfig, cell_config, variant_strategy
    from hpa.config import load_config
    from hpa.synthetic.mixing.strategies import MIXING_STRATEGIES
    root = Path(__file__).resolve().parents[1]
    ab = load_config(root / f"configs/ablation_unidiffda_{scale}.yaml", schema=AblationConfig)
    assert set(ab.strategies) - {"none"} == set(ab.variants)                # every row is defined
    used = {variant_strategy(ab, s) for s in ab.strategies}
    assert used == {"none", "concat", "replace", "local_replace", "global_replace"}   # FC, FR, LRR, GRR
    strengths = set()
    for label in ab.strategies:
        MIXING_STRATEGIES.get(variant_strategy(ab, label))
        cfg = cell_config(ab, label, 1.0, 0, [])
        assert cfg.synthetic.strategy == variant_strategy(ab, label)
        if label == "none":
            continue
        s = label.split("_")[1]                     # the label names the strength of its images
        assert all(f"sdedit_{s}/" in m for m in cfg.synthetic.manifests) and cfg.synthetic.manifests
        strengths.add(s)
        if "_p" in label:
            assert cfg.synthetic.params["p"] == float(label.split("_p")[1])
    assert len(strengths) >= 2


@pytest.mark.parametrize("name", ["ablation_standin.yaml", "ablation_demo.yaml", "ablation_balance_demo.yaml",
                                  "ablation_unidiffda_demo.yaml"])
def test_demo_ablations_train_the_first_recipe_loss(name):
    """demo.yaml changed recipe after the committed ablation tables: their grids pin the old loss."""
    from hpa.ablation.grid import AblationConfig, cell_config
    from hpa.config import load_config

    cfg = cell_config(load_config(f"configs/{name}", schema=AblationConfig), "none", 1.0, 0, [])
    assert [(t.name, t.params) for t in cfg.loss] == [("bce", {"pos_weight": "auto"}), ("soft_f1", {})]
    assert cfg.model.name == "resnet10t" and cfg.data.image_size == 32


def test_study_intervals_and_gain_over_the_reference():
    import numpy as np
    from hpa.ablation.interval import CellPredictions, study_table, weighted_f1
    truth = np.zeros((40, 28), bool)
    truth[:20, 0] = truth[20:, 1] = True
    perfect, half = truth.copy(), truth.copy()
    half[:10, 0] = False                                 # class 0: recall 0.5 -> F1 2/3
    assert weighted_f1(truth, perfect, np.ones((1, 40)), [0, 1])[0] == 1.0
    assert weighted_f1(truth, half, np.ones((1, 40)), [0, 1])[0] == pytest.approx((2 / 3 + 1) / 2)
    cells = [CellPredictions(a, 1.0, s, "test", p) for s in (0, 1, 2)
             for a, p in (("oversample", half), ("morph", perfect))]
    t = study_table(cells, {"test": truth}, rare=[0], draws=200).set_index(["arm", "group"])
    g = t.loc[("morph", "rare")]
    assert g["gain"] == pytest.approx(1 / 3) and g["gain_lo"] > 0 and g["lo"] <= g["mean"] <= g["hi"]
    assert np.isnan(t.loc[("oversample", "macro"), "gain"])
