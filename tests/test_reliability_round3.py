"""Reliability, third round (issue 26): each case of the issue, through the real command line where a
user meets it, with the exact one-line error, exit status 2 and nothing (or nothing new) written.

The tests are numbered by the issue's cases; docs/reliability.md lists them."""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hpa.cli import run_command
from hpa.data.images import write_kaggle_rgby
from hpa.errors import HPAError

IDS = [f"im{i}" for i in range(8)]


def _run(argv: list[str]) -> int:
    """``run_command``; an exception that escapes it (a traceback for a user) counts as exit 1."""
    try:
        return run_command(argv[0], argv[1:])
    except Exception:     # noqa: BLE001 - the bug this file guards against is exactly this
        return 1


def _errors(err: str) -> list[str]:
    return [s for s in err.replace("\r", "\n").split("\n") if s.startswith("error")]


def _dataset(tmp_path: Path) -> Path:
    """Eight 16 px train images, two test images, labels, folds, a sample submission and a config."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in IDS:
        write_kaggle_rgby(root / "train", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    for i in ("t0", "t1"):
        write_kaggle_rgby(root / "test", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    targets = ["0", "1 2", "0", "25", "1", "2", "0 1", "2 25"]
    pd.DataFrame({"Id": IDS, "Target": targets}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": IDS, "fold": [0, 1] * 4}).to_csv(root / "folds.csv", index=False)
    pd.DataFrame({"Id": ["t0", "t1"], "Predicted": ["0", "0"]}).to_csv(root / "sample_submission.csv", index=False)
    cfg = {"data": {"root": str(root), "image_size": 16, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 2, "file": str(root / "folds.csv")}, "runs_dir": str(tmp_path / "runs"),
           "name": "x", "model": {"name": "test_resnet"},
           "train": {"epochs": 1, "batch_size": 4, "num_workers": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


@pytest.fixture()
def ds(tmp_path):
    """A fresh tiny dataset and config per test (see :func:`_dataset`)."""
    return _dataset(tmp_path)


def _train(ds: Path) -> Path:
    assert run_command("train", ["--config", str(ds / "c.yaml")]) == 0
    assert run_command("infer", ["--config", str(ds / "c.yaml"), "--tta", "1", "--out", str(ds / "s.csv")]) == 0
    return ds


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset with run ``x`` trained (2 folds, 1 epoch) and predicted once, shared by the tests
    that only read it (each leaves the run as it found it)."""
    return _train(_dataset(tmp_path_factory.mktemp("trained")))


# ----------------------------------------------------------------------------- data loss
def test_01_infer_out_is_checked_first_and_outputs_appear_together(trained, capsys):
    probs = trained / "runs/x/test_probs.csv"
    before = probs.read_bytes()
    (trained / "pl").mkdir()
    capsys.readouterr()
    argv = ["infer", "--config", str(trained / "c.yaml"), "--tta", "2", "--out", str(trained / "pl")]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [f"error: {trained / 'pl'}: --out is a folder; give a file name"]
    assert probs.read_bytes() == before
    assert not [p for p in trained.rglob("*.tmp")]


def test_01_output_group_renames_nothing_when_one_final_name_is_a_folder(tmp_path):
    from hpa.rundir import OutputGroup

    (tmp_path / "a.csv").write_text("old")
    (tmp_path / "b.csv").mkdir()
    with pytest.raises(HPAError, match="b.csv: is a folder"):
        with OutputGroup() as group:
            group.path(tmp_path / "a.csv").write_text("new")
            group.path(tmp_path / "b.csv").write_text("new")
    assert (tmp_path / "a.csv").read_text() == "old"
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- silent wrong results
def test_02_a_loss_of_zero_total_weight_is_refused(ds, capsys):
    argv = ["train", "--config", str(ds / "c.yaml"), "--set", "loss=[{name: bce, weight: 0}]"]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: --set loss=[{name: bce, weight: 0}]: config key 'loss' has no term with a weight > 0 "
        "(it would train nothing)"]
    assert not (ds / "runs").exists()


def _hpav18_csv(t: Path) -> Path:
    path = t / "v18.csv"
    pd.DataFrame({"Id": ["10580_1610_C1_1", "10580_1610_C1_2"], "Target": ["0", "1"]}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_03_download_limit_below_one_is_refused(tmp_path, capsys, limit):
    argv = ["download", "--hpav18", "--csv", str(_hpav18_csv(tmp_path)), "--out", str(tmp_path / "o"),
            "--base-url", "http://127.0.0.1:9/", "--limit", limit]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [f"error: --limit: must be at least 1, got {limit}"]
    assert not (tmp_path / "o").exists()


def test_04_download_refetches_files_it_did_not_write(tmp_path):
    from hpa.demo.external import write_hpav18_jpegs
    from hpa.external.download import DownloadSettings, download_hpav18
    from hpa.external.hpav18 import image_url
    from hpa.demo.loopback import HPAv18Server, serve_map

    src, out = tmp_path / "src", tmp_path / "out"
    ids = ["101_1_A1_1", "102_2_A2_1", "103_3_A3_1"]
    rng = np.random.default_rng(0)
    src.mkdir()
    for i in ids:
        write_hpav18_jpegs(src, i, rng.integers(0, 255, (32, 32, 4), dtype=np.uint8), 90)
    files = serve_map(src, ids)
    out.mkdir()
    whole = (src / f"{ids[2]}_red.jpg").read_bytes()
    for i in ids:                                  # complete-looking Ids the downloader never wrote
        for c in ("red", "green", "blue", "yellow"):
            (out / f"{i}_{c}.jpg").write_bytes((src / f"{i}_{c}.jpg").read_bytes())
    (out / f"{ids[0]}_green.jpg").write_bytes(b"")                      # zero bytes
    (out / f"{ids[1]}_blue.jpg").write_bytes(whole[: len(whole) // 2])  # truncated
    settings = DownloadSettings(workers=2, retries=0, timeout=2.0, backoff=0.01, progress=False)
    with HPAv18Server(files) as srv:
        settings.base_url = srv.url
        r = download_hpav18(_labels(tmp_path / "l.csv", ids), out, settings)
        assert (r.done, r.skipped, r.failed) == (2, 1, 0)
        assert sorted(srv.requests_to) == sorted([image_url("", ids[0], "green"), image_url("", ids[1], "blue")])
    assert (out / f"{ids[0]}_green.jpg").read_bytes() == (src / f"{ids[0]}_green.jpg").read_bytes()


def test_04_readers_and_hashing_refuse_a_truncated_or_empty_jpeg(tmp_path):
    from hpa.data.duplicates import read_stain
    from hpa.data.images import read_hpav18_rgby
    from hpa.demo.external import write_hpav18_jpegs

    write_hpav18_jpegs(tmp_path, "101_1_A1_1", np.random.default_rng(0).integers(0, 255, (512, 512, 4), np.uint8), 90)
    p = tmp_path / "101_1_A1_1_green.jpg"
    p.write_bytes(p.read_bytes()[:-2])        # only the end marker lost: OpenCV decodes it with a warning
    with pytest.raises(HPAError, match="101_1_A1_1_green.jpg: unreadable or truncated image"):
        read_hpav18_rgby(tmp_path, "101_1_A1_1")         # what the image cache and training read
    with pytest.raises(HPAError, match="unreadable or truncated image"):
        read_stain(tmp_path, "101_1_A1_1", "green", "hpav18")
    (tmp_path / "101_1_A1_1_blue.jpg").write_bytes(b"")
    with pytest.raises(HPAError, match="unreadable or truncated image"):
        read_stain(tmp_path, "101_1_A1_1", "blue", "hpav18")


def _labels(path: Path, ids: list[str]) -> Path:
    pd.DataFrame({"Id": ids, "Target": ["0"] * len(ids)}).to_csv(path, index=False)
    return path


def test_05_baseline_refuses_external_data_it_would_not_use(ds, capsys):
    argv = ["baseline", "--config", str(ds / "c.yaml"), "--set", f"data.external_csv={_hpav18_csv(ds)}",
            "--set", f"data.external_dir={ds}"]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: data.external_csv: hpa baseline fits on the Kaggle images only; it would ignore the external "
        "images (add --set data.external_csv= to run it without them)"]
    assert not (ds / "runs").exists()


def test_06_an_hpav18_id_with_a_newline_is_refused(tmp_path):
    from hpa.external.hpav18 import read_hpav18_labels

    path = tmp_path / "v.csv"
    path.write_text('Id,Target\n10580_1610_C1_1,0\n"10580_1610_C1_2\n",1\n')
    with pytest.raises(HPAError, match="row 3: Id '10580_1610_C1_2\n' is not an HPAv18 Id"):
        read_hpav18_labels(path)


def test_07_a_base_list_lets_only_keys_a_file_sets_itself_override(tmp_path):
    from hpa.config import load_config

    (tmp_path / "p.yaml").write_text("train:\n  epochs: 1\n  batch_size: 2\noptim:\n  lr: 0.1\n")
    (tmp_path / "x.yaml").write_text("base: p.yaml\ntrain:\n  epochs: 5\n")
    (tmp_path / "y.yaml").write_text("base: p.yaml\ntrain:\n  batch_size: 3\n")
    (tmp_path / "c.yaml").write_text("base: [x.yaml, y.yaml]\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == (5, 3, 0.1)
    # a value y sets itself still wins over x's (later bases override earlier ones)
    (tmp_path / "y.yaml").write_text("base: p.yaml\ntrain:\n  epochs: 7\n")
    assert load_config(tmp_path / "c.yaml").train.epochs == 7
    # and the error for a bad value names the file that set it
    (tmp_path / "x.yaml").write_text("base: p.yaml\ntrain:\n  batch_size: 0\n")
    with pytest.raises(HPAError, match=r"^.*x\.yaml: config key 'train.batch_size' must be >= 1"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize("name", ["../escaped", ".", "..", "a/b", ".hidden"])
def test_08_a_run_name_is_a_plain_folder_name(ds, capsys, name):
    argv = ["train", "--config", str(ds / "c.yaml"), "--set", f"name={name}"]
    assert _run(argv) == 2
    what = "is empty" if not name else f"must be a plain folder name (no '/', not '.' or '..', no leading '.'), got '{name}'"
    assert _errors(capsys.readouterr().err) == [f"error: --set name={name}: config key 'name' {what}"]
    assert not (ds / "runs").exists() and not (ds / "escaped").exists()


def test_08_baseline_name_is_checked_too(ds, capsys):
    assert _run(["baseline", "--config", str(ds / "c.yaml"), "--name", "../up"]) == 2
    assert "config key 'name' must be a plain folder name" in capsys.readouterr().err
    assert not (ds / "up").exists() and not (ds / "runs").exists()


@pytest.mark.parametrize("item", ["model.name=resnet18", "data.image_size=32", "model.head=arcface"])
def test_09_infer_refuses_overrides_the_saved_run_decides(trained, capsys, item):
    capsys.readouterr()
    argv = ["infer", "--config", str(trained / "c.yaml"), "--out", str(trained / "z.csv"), "--set", item]
    assert _run(argv) == 2
    key = item.split("=")[0]
    assert _errors(capsys.readouterr().err) == [
        f"error: --set {item}: infer.py predicts with the run's own {key} (from {trained / 'runs/x/config.yaml'}); "
        "train another run to change it"]
    assert not (trained / "z.csv").exists()


def test_09_infer_accepts_an_override_that_restates_the_runs_own_value(trained, capsys):
    """make demo-extras passes its training overrides (data.image_size=32) to infer.py as well."""
    argv = ["infer", "--config", str(trained / "c.yaml"), "--tta", "1", "--out", str(trained / "same.csv"),
            "--set", "data.image_size=16"]
    assert _run(argv) == 0 and (trained / "same.csv").is_file()


def test_09_infer_says_which_settings_of_an_edited_config_it_ignores(trained, capsys, tmp_path):
    cfg = yaml.safe_load((trained / "c.yaml").read_text())
    cfg["data"]["image_size"] = 24                      # edited after training
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert _run(["infer", "--config", str(tmp_path / "c.yaml"), "--tta", "1", "--out", str(tmp_path / "s.csv")]) == 0
    assert (f"warning: data.image_size of this config differs from the run's; inference uses the run's "
            f"({trained / 'runs/x/config.yaml'})") in capsys.readouterr().err


# ----------------------------------------------------------------------------- one line, exit 2
def test_11_download_out_under_a_file_or_proc_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    base = ["download", "--hpav18", "--csv", str(_hpav18_csv(tmp_path)), "--base-url", "http://127.0.0.1:9/"]
    assert _run(base + ["--out", str(tmp_path / "f" / "out")]) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {tmp_path / 'f' / 'out'}: cannot be written: {tmp_path / 'f'} is a file, not a folder"]
    assert _run(base + ["--out", "/proc/hpa_nope/out"]) == 2
    assert _errors(capsys.readouterr().err)[0].startswith("error: /proc/hpa_nope/out: cannot create the folder (")


def test_12_baseline_c_nan_is_refused_before_any_write(ds, capsys):
    for c in ("nan", "inf", "-1"):
        assert _run(["baseline", "--config", str(ds / "c.yaml"), "--C", c]) == 2
        assert _errors(capsys.readouterr().err) == [f"error: --C: must be a finite number > 0, got {float(c)}"]
    assert not (ds / "runs").exists()


def test_13_one_device_check_wherever_device_is_taken(ds, capsys):
    from hpa.devices import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) in ("cpu", "cuda")
    with pytest.raises(HPAError, match=r"^--device: 'gpu' is not a device \(cpu, cuda, cuda:N\)$"):
        resolve_device("gpu")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-GPU message cannot be shown")
    msg = "--device cuda: no CUDA device is available on this machine (use --device cpu)"
    with pytest.raises(HPAError, match=r"^" + msg.replace("(", r"\(").replace(")", r"\)") + "$"):
        resolve_device("cuda")
    assert _run(["swa", "--config", str(ds / "c.yaml"), "--last", "2", "--device", "cuda"]) == 2
    assert _errors(capsys.readouterr().err) == [f"error: {msg}"]
    gen = ds / "g.yaml"
    gen.write_text(f"generator: ddpm_simple\nmodels_dir: {ds}/m\ndata:\n  root: {ds}/data\n")
    assert _run(["synth", "generate", "--config", str(gen), "--device", "cuda", "--out", str(ds / "syn")]) == 2
    assert _errors(capsys.readouterr().err) == [f"error: {msg}"]
    assert not (ds / "runs").exists() and not (ds / "syn").exists()


def test_14_out_that_is_a_folder_or_under_a_file(trained, capsys):
    (trained / "d").mkdir()
    (trained / "f").write_text("x")
    capsys.readouterr()
    for argv, path in [
            (["pseudo-label", "--run", str(trained / "runs/x"), "--out", str(trained / "d")], trained / "d"),
            (["baseline", "--config", str(trained / "c.yaml"), "--out", str(trained / "d")], trained / "d")]:
        assert _run(argv) == 2
        assert _errors(capsys.readouterr().err) == [f"error: {path}: --out is a folder; give a file name"]
    argv = ["infer", "--config", str(trained / "c.yaml"), "--tta", "1", "--out", str(trained / "f/s.csv")]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {trained / 'f/s.csv'}: cannot be written: {trained / 'f'} is a file, not a folder"]
    assert not (trained / "runs/x_baseline").exists()


def test_15_a_tracking_path_that_is_a_file_stops_before_config_is_written(ds, capsys):
    run = ds / "runs" / "x"
    run.mkdir(parents=True)
    (run / "tensorboard").write_text("not a folder")
    argv = ["train", "--config", str(ds / "c.yaml"), "--set", "train.log_with=tensorboard"]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        f"error: {run / 'tensorboard'}: exists and is not a folder (train.log_with writes there)"]
    assert sorted(p.name for p in run.iterdir()) in (["tensorboard"], [".lock", "tensorboard"])


@pytest.mark.parametrize("action", ["filter", "report"])
def test_16_a_header_only_manifest_is_one_line_and_leaves_no_report_folder(trained, capsys, action):
    from hpa.synthetic.manifest import COLUMNS

    folder = trained / f"syn_{action}"
    folder.mkdir()
    pd.DataFrame(columns=COLUMNS).to_csv(folder / "manifest.csv", index=False)
    capsys.readouterr()
    assert _run(["synth", action, "--manifest", str(folder / "manifest.csv"), "--run", str(trained / "runs/x")]) == 2
    what = "filter" if action == "filter" else "report"
    assert _errors(capsys.readouterr().err) == [
        f"error: {folder / 'manifest.csv'}: no images (only a header); nothing to {what}"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.csv"]


def test_17_an_augmentation_param_out_of_range_is_one_line(ds, capsys):
    argv = ["train", "--config", str(ds / "c.yaml"), "--set", "train.augment=[{name: hflip, params: {p: 2}}]"]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert _errors(err) == ["error: train.augment[0]: hflip: p: Input should be less than or equal to 1 (got 2)"]
    assert "pydantic" not in err and not (ds / "runs/x/config.yaml").exists()


def test_18_a_vit_at_a_size_its_position_embedding_does_not_fit(ds, capsys):
    argv = ["train", "--config", str(ds / "c.yaml"), "--set", "model.name=vit_tiny_patch16_224"]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == [
        "error: data.image_size: 16 px does not fit model 'vit_tiny_patch16_224', which takes 224x224 "
        "images only (a fixed position embedding); set data.image_size: 224, or model.kwargs: "
        "{img_size: 16} to build it for 16 px"]
    assert not (ds / "runs").exists()
    argv += ["--set", "model.kwargs={img_size: 16, patch_size: 8}"]
    assert _run(argv) == 0


# ----------------------------------------------------------------------------- leftovers
def test_19_every_stage_that_writes_a_run_folder_removes_stale_temporaries(ds):
    run = ds / "runs" / "x_baseline"
    (run / "fold0").mkdir(parents=True)
    stale = [run / ".oof.csv.abcdefgh.tmp", run / "fold0" / ".summary.json.abcdefgh.tmp"]
    for p in stale:
        p.write_text("half")
        os.utime(p, (time.time() - 3600, time.time() - 3600))     # older than this process: a killed write
    assert run_command("baseline", ["--config", str(ds / "c.yaml")]) == 0
    assert not any(p.exists() for p in stale)


def test_20_demo_data_checks_the_external_count_before_writing(tmp_path, capsys):
    argv = ["demo-data", "--out", str(tmp_path / "d"), "--n-train", "40", "--n-test", "8", "--size", "16",
            "--no-contact-sheet", "--external", "5"]
    assert _run(argv) == 2
    assert _errors(capsys.readouterr().err) == ["error: --external: must be an integer >= 10, got 5"]
    assert not (tmp_path / "d").exists()


def test_21_a_fresh_start_removes_the_swa_files_of_the_old_checkpoints(ds):
    trained = _train(ds)
    rd = trained / "runs/x"
    for p in (rd / "swa_oof.csv", rd / "swa_metrics.json", rd / "fold0/swa.pt", rd / "fold0/swa_oof.csv"):
        p.write_text("old")
    assert run_command("train", ["--config", str(trained / "c.yaml")]) == 0
    assert not [p.name for p in rd.rglob("swa*")]


def test_22_a_quota_far_above_the_data_is_refused_before_planning(ds, capsys):
    gen = ds / "s.yaml"
    gen.write_text(f"generator: standin\nmodels_dir: {ds}/m\ndata:\n  root: {ds}/data\n  output_size: 0\n"
                   "train:\n  threads: 1\n")
    assert run_command("synth", ["train", "--config", str(gen), "--fold", "0"]) == 0
    capsys.readouterr()
    t0 = time.perf_counter()
    argv = ["synth", "generate", "--config", str(gen), "--fold", "0", "--out", str(ds / "syn"),
            "--balance-to", "1000000000"]
    assert _run(argv) == 2
    assert time.perf_counter() - t0 < 30
    assert _errors(capsys.readouterr().err) == [
        "error: --balance-to: 1000000000 would plan up to 2,999,999,994 images from the generator's 4 training "
        "images (at most 100 per real image, 400); ask for fewer"]
    assert not (ds / "syn").exists()


# ----------------------------------------------------------------------------- a first real user
def test_25_json_outputs_hold_null_not_nan(tmp_path):
    from hpa.io import write_json

    write_json(tmp_path / "a.json", {"a": float("nan"), "b": [1.0, float("inf"), np.float32("nan")],
                                     "c": {"d": -float("inf")}, "e": np.float64(0.5)})
    text = (tmp_path / "a.json").read_text()

    def refuse(token):
        raise ValueError(token)
    assert json.loads(text, parse_constant=refuse) == {"a": None, "b": [1.0, None, None], "c": {"d": None},
                                                       "e": 0.5}


def test_26_credentials_message_names_every_source(tmp_path):
    from hpa.kaggle.client import credentials_source

    with pytest.raises(HPAError) as e:
        credentials_source({}, tmp_path)
    assert "KAGGLE_API_TOKEN" in str(e.value) and "KAGGLE_USERNAME and KAGGLE_KEY" in str(e.value)


def test_26_an_unknown_config_key_suggests_the_nearest(ds, capsys):
    assert _run(["train", "--config", str(ds / "c.yaml"), "--set", "train.epoch=3"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(
        "error: --set train.epoch=3: unknown config key 'train.epoch' (did you mean 'train.epochs'? valid: ")
    assert _run(["train", "--config", str(ds / "c.yaml"), "--set", "trian.epochs=3"]) == 2
    assert "unknown config key 'trian' (did you mean 'train'? valid: " in capsys.readouterr().err
    assert _run(["train", "--config", str(ds / "c.yaml"), "--set", "train.zzzzzz=3"]) == 2
    assert "unknown config key 'train.zzzzzz' (valid: " in capsys.readouterr().err


def test_27_progress_to_a_file_is_lines_not_carriage_return_frames(ds, monkeypatch):
    from tqdm.auto import tqdm

    log = io.StringIO()                     # not a terminal, like a log file
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setenv("HPA_PROGRESS_SECONDS", "0")

    def main(args):
        for _ in tqdm(range(3), desc="work"):
            pass
        for _ in tqdm(range(2), desc="quiet", leave=False):
            pass
        return 0
    import hpa.cli as cli
    monkeypatch.setattr(cli, "build_parser", lambda c: (__import__("argparse").ArgumentParser(),
                                                         type("M", (), {"main": staticmethod(main)})))
    assert cli.run_command("x", []) == 0
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert any(line.startswith("work: 100%") and "3/3" in line for line in lines)


def test_28_report_md_links_only_the_figures_written(monkeypatch):
    import hpa.synthetic.verdict as v

    monkeypatch.setattr(v, "verdict", lambda res: [])          # the table's rows are not what is tested
    monkeypatch.setattr(v, "verdict_rows", lambda res: [])
    text = v.markdown({"judge": "runs/x fold 0", "per_class_quality": [None] * 28}, "t")
    assert "`per_class_agreement.png`" in text and "per_class_quality.png" not in text


def test_28_offline_stable_diffusion_says_what_to_do(monkeypatch):
    import diffusers

    from hpa.synthetic.sd_lora import load_pipeline

    def offline(*a, **k):
        raise OSError("Cannot load model nobody/sd: model is not cached locally and an error occurred while "
                      "trying to fetch metadata from the Hub. Please check out the root cause in the stacktrace above.")
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", offline)
    with pytest.raises(HPAError) as e:
        load_pipeline("nobody/sd")
    msg = str(e.value)
    assert "stacktrace" not in msg and "\n" not in msg
    assert "huggingface-cli download nobody/sd" in msg and "HF_HOME" in msg and "local diffusers folder" in msg


def test_28_a_missing_generator_folds_file_names_the_command_that_writes_it(ds, capsys):
    gen = ds / "l.yaml"
    gen.write_text(f"generator: ddpm_simple\nmodels_dir: {ds}/m\ndata:\n  root: {ds}/data\n"
                   f"  folds: {ds}/data/folds10.csv\n")
    assert _run(["synth", "train", "--config", str(gen), "--fold", "0"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(f"error: {ds}/data/folds10.csv: folds file not found (data.folds); "
                                               f"write it with 'hpa folds --labels {ds}/data/train.csv")
