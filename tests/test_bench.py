"""``hpa bench``: the quick run end to end (schema, every row has ratios and figures) and its helpers.

No timing assertions: the speed goals live in the bench itself, not in the tests.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from hpa.bench.core import ROW_KEYS, interleaved, load_rows, make_row, markdown_table, result_stem
from hpa.bench.model_rows import peak_tflops
from hpa.cli import run_command

ROOT = Path(__file__).resolve().parents[1]


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
    assert [r["row"] for r in result["rows"]] == list(range(1, len(load_rows()) + 1))
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
                "generation": {"ddim50 / ddpm1000", "dpmpp20 / ddpm1000", "dpmpp10 / ddpm1000"},
                "embedding": {"embed / bare"}}
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
              "rows": [make_row("thresholds", "s", {"exact s": 0.01234567}, {"a / b": 25.04},
                                ">= 20x", True, "n|ote", row=4),
                       make_row("gpu", "images/s", {}, {}, "report", None, "no gpu", status="not run", row=7)]}
    assert markdown_table(result).splitlines() == [
        "`hpa bench` on cpu (2026-01-02, full run, 12 s)", "",
        "| # | measure | ratio | goal | met | figures | note |", "|---|---|---|---|---|---|---|",
        "| 4 | thresholds (s) | a / b = 25x | >= 20x | yes | exact s: 0.0123 | n/ote |",
        "| 7 | gpu (images/s) | not run | report | not run |  | no gpu |"]


def test_make_row_rounds_to_four_significant_digits():
    r = make_row("x", "u", {"f": 1234.5678}, {"r": 0.123456}, "g", False)
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
    assert capsys.readouterr().err == (f"error: --rows: unknown row 'speed' (valid: all, {', '.join(load_rows())}; "
                                       "alone: scale, gpu)\n")
    assert run_command("bench", ["--rows", "scale,loading", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --rows scale: runs alone (its own report), not with other rows\n"
    assert run_command("bench", ["--rows", "gpu", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "only with --quick" in capsys.readouterr().err
    assert run_command("bench", ["--rows", "gpu", "--device", "cpu", "--quick", "--parts", "peak,fly",
                                 "--out", str(tmp_path)]) == 2
    assert "unknown part 'fly'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_generator_needs_classifier(capsys, tmp_path):
    assert run_command("bench", ["--rows", "generate", "--generator", "x", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --generator and --classifier go together (label agreement needs both)\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_error(capsys, tmp_path):
    assert run_command("bench", ["--device", "cuda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: --device cuda: no CUDA device is available on this machine (use --device cpu)\n"


def test_row6_agreement_uses_the_held_out_folds_judge_and_many_images(tmp_path, monkeypatch):
    """With a generator and a classifier run, row 6 scores ``agreement_images`` images per sampler
    with the model of the fold the generator held out, and reports the shuffled-label control."""
    from hpa.bench import synth_rows
    from hpa.config import ExperimentConfig, save_config
    from hpa.models import build_model
    from hpa.synthetic import filter as filter_mod

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
    monkeypatch.setattr(synth_rows, "load_classifier",
                        lambda run, fold=0: (folds.append(fold), orig(run, fold))[1])
    orig_gen = synth_rows.generate
    monkeypatch.setattr(synth_rows, "generate",
                        lambda g, labels, s, k, seed: (sizes.append(len(labels)), orig_gen(g, labels, s, 2, seed))[1])
    res = synth_rows.agreement(gen, 40, "dpmpp", 20, str(tmp_path / "run"), 0)
    assert folds == [2] and sizes == [32, 8]                  # the held-out fold's judge; batches of 32
    assert 0 <= res["macro_f1"] <= 1 and 0 <= res["shuffled_control_f1"] <= 1


# ----------------------------------------------------------------------------- the GPU check (tools/gpu_check.sh)
@pytest.mark.slow
def test_gpu_check_script_runs_every_part_on_the_cpu(tmp_path):
    """tools/gpu_check.sh at tiny sizes on the CPU: every part runs in its own process and reports,
    so the script the GPU machine runs cannot rot while no GPU is at hand."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OUT"}     # OUT would redirect the report
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path), "--budget", "400"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = [f[:-5] for f in files if f.endswith(".json")][0]
    assert stem.startswith("gpu-cpu-") and stem.endswith("-quick")
    assert {f"{stem}.json", f"{stem}.md", f"{stem}.png", "gpu-check.log"} <= set(files)
    result = json.loads((tmp_path / f"{stem}.json").read_text())
    parts = {p["part"]: p for p in result["parts"]}
    assert list(parts) == ["peak", "loader", "train", "compile", "generate"]
    assert all(p["status"] == "ok" for p in parts.values()), parts
    f = {k: v for p in parts.values() for k, v in p["figures"].items()}
    for key in ("matmul TFLOP/s", "cpu augment, 0 workers images/s", "cpu augment, 1 workers images/s",
                "gpu augment, 1 workers images/s", "gpu augment alone images/s", "resnet34 loop",
                "resnet34 loop gpu-aug", "resnet34 bare", "resnet34 loop / bare", "resnet34 bare % of peak",
                "resnet34 compile=on images/s", "resnet34 compile=off images/s", "sd unet dpmpp2 latents/s",
                "sd vae decode images/s", "sd15 unet dpmpp20 images/s", "ddpm16 dpmpp20 images/s"):
        assert f.get(key, 0) > 0, key
    md = (tmp_path / f"{stem}.md").read_text()
    assert "### What it says" in md and "feed the GPU" in md
    # the embed step (bench row 8) reports in its own folder
    embed = json.loads(next((tmp_path / "embed").glob("*.json")).read_text())
    assert [r["name"] for r in embed["rows"]] == ["embedding"] and embed["rows"][0]["status"] == "ok"


@pytest.mark.slow
def test_gpu_part_past_its_budget_or_failing_keeps_the_report(tmp_path):
    """A part stopped at its budget reports 'timeout', one that raises reports 'error' with the
    message; the report is written with whatever finished."""
    from hpa.bench.gpu import run_part, write_report
    from hpa.bench.gpu_parts import GpuSettings

    s = GpuSettings.for_device("cpu", True)
    slow = run_part("peak", s, tmp_path, 0.2)             # not even torch imports in 0.2 s
    assert slow["status"] == "timeout" and "budget of 0 s" in slow["error"]
    s.models = ("no_such_model",)
    bad = run_part("train", s, tmp_path, 120)
    assert bad["status"] == "error" and "no_such_model" in bad["error"]
    result = {"device": "cpu", "date": "2026-01-02", "settings": {"quick": True}, "total_seconds": 9.0,
              "budget_s": 10.0, "environment": {"torch": "x", "cpu_count": 2}, "parts": [slow, bad],
              "verdicts": []}
    write_report(result, tmp_path, "gpu-test")
    md = (tmp_path / "gpu-test.md").read_text()
    assert "### peak: timeout" in md and "### train: error" in md and "no_such_model" in md
    assert (tmp_path / "gpu-test.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- the scale run
def test_scale_dataset_links_files_and_plants_duplicates(tmp_path):
    import pandas as pd

    from hpa.bench.scale import DUP_EVERY, build_dataset

    labels = pd.DataFrame({"Id": [f"id{i:04d}" for i in range(2 * DUP_EVERY)], "Target": ["0"] * (2 * DUP_EVERY)})
    info = build_dataset(tmp_path, labels, ["t0", "t1", "t2"], 16)
    assert info["train_ids"] == 600 and info["test_ids"] == 3 and info["planted_duplicates"] == 2
    red = tmp_path / "train" / "id0000_red.png"
    assert red.stat().st_nlink > 1                                  # hard links to a small pool
    greens = {(tmp_path / "train" / f"id{i:04d}_green.png").stat().st_ino for i in range(600)}
    assert len(greens) == 600 - 2                                   # unique protein stains, 2 planted pairs
    assert pd.read_csv(tmp_path / "train.csv")["Id"].tolist() == labels["Id"].tolist()
    assert pd.read_csv(tmp_path / "sample_submission.csv")["Id"].tolist() == ["t0", "t1", "t2"]


@pytest.mark.slow
def test_scale_stage_records_time_and_memory(tmp_path):
    """One stage as the scale run runs it: its own process, CPU time, heap and the tree's peak RSS."""
    import pandas as pd

    from hpa.bench.scale import run_stage

    pd.DataFrame({"Id": ["a", "b"], "Predicted": ["0", "1 2"]}).to_csv(tmp_path / "sub.csv", index=False)
    pd.DataFrame({"Id": ["a", "b"], "Predicted": ["0", "0"]}).to_csv(tmp_path / "sample.csv", index=False)
    rec = run_stage("validate", ["validate", str(tmp_path / "sub.csv"), "--sample", str(tmp_path / "sample.csv")],
                    tmp_path, 1)
    assert rec["rc"] == 0 and rec["stage"] == "validate" and rec["cpu_s"] >= 0
    assert rec["tree_peak_rss_mb"] >= rec["peak_rss_mb"] > rec["base_anon_mb"] > 0
    from hpa.errors import HPAError
    with pytest.raises(HPAError, match="stage bad exited 2: error: .*nope.csv: file not found"):
        run_stage("bad", ["validate", str(tmp_path / "sub.csv"), "--sample", str(tmp_path / "nope.csv")], tmp_path, 1)


def test_scale_growth_table_known_numbers():
    from hpa.bench.scale import growth_table

    def run(n, size, cpu, anon):
        return {"size": size, "dataset": {"train_ids": n, "test_ids": 0},
                "stages": [{"stage": "cache", "cpu_s": cpu, "run_s": 2 * cpu, "import_s": 1.0,
                            "tree_peak_rss_mb": 700.0,
                            "peak_anon_mb": 300.0 + anon, "base_anon_mb": 300.0}]}

    # 10x the Ids, 10x the CPU: linear, no fixed cost; heap grows 1 MiB per 1024 added Ids
    rows = growth_table(run(10240, 16, 20.0, 11.0), run(1024, 16, 2.0, 2.0),
                        run(100, 64, 1.0, 50.0), run(1000, 64, 1.0, 50.0 + 900 * 16384 / 2**20))
    r = rows[0]
    assert r["cpu_growth"] == 10.0 and r["heap_bytes_per_id"] == 1024
    assert r["fixed_cpu_s"] == 0.0 and r["cpu_ms_per_1000_ids"] == pytest.approx(1953.1, abs=0.1)
    assert r["big_heap_bytes_per_id"] == 16384 and r["big_image_bytes"] == 16384 and r["holds_all_images"] is True
    rows = growth_table(run(10240, 16, 20.0, 11.0), run(1024, 16, 2.0, 2.0), run(100, 64, 1.0, 50.0),
                        run(1000, 64, 1.0, 51.0))
    assert rows[0]["holds_all_images"] is False


def test_projection_counts_flops_and_prefers_measured_gpu_figures():
    from hpa.bench import projection

    f = projection.classifier_flops("resnet34", 512)
    assert abs(f["forward"] / 1e9 - 38.69) < 0.05 and 2.5 < f["train"] / f["forward"] < 3.5
    rate, basis = projection._gpu_rate(None, "resnet34 loop", 1e11, "resnet34")
    assert basis.startswith("estimate") and rate == pytest.approx(0.15 * 790e12 / 1e11)
    gpu = {"date": "2026-01-02", "environment": {"gpu": "NVIDIA H200"},
           "parts": [{"figures": {"resnet34 loop": 1234.0}}]}
    rate, basis = projection._gpu_rate(gpu, "resnet34 loop", 1e11, "resnet34")
    assert rate == 1234.0 and basis == "measured (NVIDIA H200, 2026-01-02)"
    r = projection.project_recipe("5-fold ResNet34, 512 px, 40 epochs", 31072, 11702, gpu, 100.0)
    d, a = r["default_workers"], r["all_workers"]
    assert d["workers"] == 4 and d["loader_images_per_s"] == 400 and d["bound"] == "loader"
    assert a["workers"] == 15 and a["bound"] == "GPU"
    # per epoch: 4/5 of the Ids at the slower rate + 1/5 forward-only at the FLOP-scaled rate
    fwd_rate = 1234.0 * f["train"] / f["forward"]
    assert d["epoch_minutes"] == round((31072 * 0.8 / 400 + 31072 * 0.2 / fwd_rate) / 60, 1)
    # with a GPU check: the loop with GPU augmentations, and the loader measured on the GPU host
    gpu["parts"].append({"figures": {"resnet34 loop gpu-aug": 2000.0, "cpu augment, 4 workers images/s": 900.0,
                                     "cpu augment, 16 workers images/s": 3000.0}})
    r = projection.project_recipe("5-fold ResNet34, 512 px, 40 epochs", 31072, 11702, gpu, 100.0)
    assert r["gpu_train_images_per_s"] == 2000 and r["default_workers"]["loader_images_per_s"] == 900
    assert r["default_workers"]["bound"] == "loader" and r["all_workers"]["loader_images_per_s"] == 3000
