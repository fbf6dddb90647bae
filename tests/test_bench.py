"""``hpa bench``: the quick run end to end (schema, every row has ratios and figures) and its helpers.

No timing assertions: the speed goals live in the bench itself, not in the tests.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import torch

from hpa.bench.core import ORDER, ROW_KEYS, interleaved, make_row, markdown_table, result_stem
from hpa.bench.model_rows import peak_tflops
from hpa.cli import run_command


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    """One quick run of every row (toy sizes, one repeat, one thread): (exit code, result dict, folder)."""
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    try:
        rc = run_command("bench", ["--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    files = sorted(out.glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("-quick.json")
    return rc, json.loads(files[0].read_text()), out


def test_quick_run_writes_schema(quick_result):
    rc, result, out = quick_result
    assert rc == 0
    assert result["schema"] == 1 and result["device"] == "cpu" and result["settings"]["quick"] is True
    assert [r["row"] for r in result["rows"]] == list(range(1, 8))
    for r in result["rows"]:
        assert tuple(k for k in r if k in ROW_KEYS) == ROW_KEYS
        assert r["status"] in ("ok", "not run"), r
        assert r["met"] in (True, False, None)
    stem = out / f"cpu-{result['date']}-quick"
    assert stem.with_suffix(".md").read_text() == markdown_table(result)
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_measured_row_has_ratios_and_figures(quick_result):
    _, result, _ = quick_result
    rows = {r["name"]: r for r in result["rows"]}
    expected = {"data loading": {"cache / png", "cache / PIL", "cache / memcopy"},
                "training step": {"train loop / bare"}, "inference TTA x folds": {"predict / bare"},
                "thresholds": {"grid time / exact time", "vectorised grid time / exact time",
                               "exact F1 / grid F1"},
                "generation": {"ddim50 / ddpm1000", "dpmpp20 / ddpm1000", "dpmpp10 / ddpm1000"}}
    for name, ratios in expected.items():
        r = rows[name]
        assert set(r["ratios"]) == ratios, name
        assert all(v > 0 for v in r["ratios"].values()), r
        assert r["figures"] and all(v > 0 for v in r["figures"].values()), r
        assert r["status"] == "ok"
    # the threshold row is checked on a 3000-row OOF in quick mode: exact tuning never loses F1
    assert rows["thresholds"]["figures"]["exact macro F1"] >= rows["thresholds"]["figures"]["grid macro F1"]
    assert rows["generation"]["met"] is None and "label agreement n/a" in rows["generation"]["note"]
    assert rows["GPU training 512px"]["status"] == "not run"
    assert rows["GPU training 512px"]["note"] == "not run (needs --device cuda)"
    folds = rows["folds"]
    assert folds["status"] in ("ok", "not run")
    if folds["status"] == "ok":
        assert folds["note"].endswith("same assignment as iterstrat: True")
        assert folds["figures"]["max class deviation"] < 1.0


def test_markdown_table_exact():
    result = {"device": "cpu", "date": "2026-01-02", "settings": {"quick": False}, "total_seconds": 12.3,
              "rows": [make_row(4, "thresholds", "s", {"exact s": 0.01234567}, {"a / b": 25.04},
                                ">= 20x", True, "n|ote"),
                       make_row(7, "gpu", "images/s", {}, {}, "report", None, "no gpu", status="not run")]}
    assert markdown_table(result).splitlines() == [
        "`hpa bench` on cpu (2026-01-02, full run, 12 s)", "",
        "| # | measure | ratio | goal | met | figures | note |", "|---|---|---|---|---|---|---|",
        "| 4 | thresholds (s) | a / b = 25x | >= 20x | yes | exact s: 0.0123 | n/ote |",
        "| 7 | gpu (images/s) | not run | report | not run |  | no gpu |"]


def test_make_row_rounds_to_four_significant_digits():
    r = make_row(1, "x", "u", {"f": 1234.5678}, {"r": 0.123456}, "g", False)
    assert r["figures"] == {"f": 1235.0} and r["ratios"] == {"r": 0.1235}
    assert list(r) == list(ROW_KEYS)


def test_interleaved_warms_up_then_takes_medians():
    calls = []

    def make(name):
        def fn():
            calls.append(name)
            return 10
        return fn

    rates = interleaved({"a": make("a"), "b": make("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "a", "b"]       # warm-up round, then A B A B
    assert set(rates) == {"a", "b"} and all(v > 0 for v in rates.values())


def test_peak_table_and_override():
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Some GPU") is None
    assert peak_tflops("NVIDIA H200", 500.0) == 500.0


def test_result_stem():
    when = datetime(2026, 3, 4, tzinfo=timezone.utc)
    assert result_stem("cpu", False, when) == "cpu-2026-03-04"
    assert result_stem("cuda", True, when) == "cuda-2026-03-04-quick"


def test_unknown_row_is_one_line_error(capsys, tmp_path):
    assert run_command("bench", ["--rows", "loading,speed", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --rows: unknown row 'speed' (valid: all, {', '.join(ORDER)})\n"
    assert not list(tmp_path.iterdir())


def test_generator_needs_classifier(capsys, tmp_path):
    assert run_command("bench", ["--rows", "generate", "--generator", "x", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --generator and --classifier go together (label agreement needs both)\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_error(capsys, tmp_path):
    assert run_command("bench", ["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --device cuda: no CUDA device is available on this machine\n"


def test_row6_agreement_uses_the_held_out_folds_judge_and_many_images(tmp_path, monkeypatch):
    """With a generator and a classifier run, row 6 scores ``agreement_images`` images per sampler
    with the model of the fold the generator held out, and reports the shuffled-label control."""
    from hpa.bench import synth_rows
    from hpa.config import ExperimentConfig, save_config
    from hpa.models import build_model
    from hpa.synth import filter as filter_mod

    gen = synth_rows.stand_in_generator(tmp_path / "gen", 16, (16, 32), False, "cpu")
    gen.meta["fold"] = 2
    cfg = ExperimentConfig(name="judge")
    cfg.data.image_size, cfg.model.name = 16, "test_resnet"
    save_config(cfg, tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "fold2").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg.model).state_dict()}, tmp_path / "run" / "fold2" / "best.pt")
    folds, sizes = [], []
    orig = filter_mod.load_classifier
    monkeypatch.setattr(filter_mod, "load_classifier",
                        lambda run, fold=0: (folds.append(fold), orig(run, fold))[1])
    orig_gen = synth_rows.generate
    monkeypatch.setattr(synth_rows, "generate",
                        lambda g, labels, s, k, seed: (sizes.append(len(labels)), orig_gen(g, labels, s, 2, seed))[1])
    res = synth_rows.agreement(gen, 40, "dpmpp", 20, str(tmp_path / "run"), 0)
    assert folds == [2] and sizes == [32, 8]                  # the held-out fold's judge; batches of 32
    assert 0 <= res["macro_f1"] <= 1 and 0 <= res["shuffled_control_f1"] <= 1
