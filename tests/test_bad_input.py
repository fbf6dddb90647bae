"""The bad-input catalogue: every broken input of the reliability issue, through the real CLI, ends in
exactly one line ``error: <file/row/key>: <what>``, exit status 2, and no output (or temporary) file.

Accepted-and-converted inputs (16-bit PNG, an image of another size) are checked at the end."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from hpa.cli import run_command
from hpa.data.images import CHANNELS, read_kaggle_rgby, write_kaggle_rgby
from hpa.losses import CombinedLoss
from hpa.synthetic.manifest import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
IDS = ["im0", "im1", "im2", "im3", "im4", "im5"]


@pytest.fixture()
def ds(tmp_path):
    """Six 16 px train images, two test images, labels, folds, a sample submission and a config."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in IDS:
        write_kaggle_rgby(root / "train", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    for i in ("t0", "t1"):
        write_kaggle_rgby(root / "test", i, rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    pd.DataFrame({"Id": IDS, "Target": ["0", "1 2", "0", "25", "1", "2"]}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"Id": IDS, "fold": [0, 1] * 3}).to_csv(root / "folds.csv", index=False)
    pd.DataFrame({"Id": ["t0", "t1"], "Predicted": ["0", "0"]}).to_csv(root / "sample_submission.csv", index=False)
    cfg = {"data": {"root": str(root), "image_size": 16, "cache_dir": str(tmp_path / "cache")},
           "folds": {"n_splits": 2}, "runs_dir": str(tmp_path / "runs"), "name": "x",
           "model": {"name": "test_resnet"}, "train": {"epochs": 1, "batch_size": 2, "num_workers": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "g.yaml").write_text(f"generator: ddpm_simple\nmodels_dir: {tmp_path}/m\ndata:\n  root: {root}\n")
    return tmp_path


def _labels(t: Path, text: str) -> list[str]:
    (t / "data" / "train.csv").write_text(text)
    return ["folds", "--labels", str(t / "data/train.csv"), "--out", str(t / "out.csv"), "--k", "2"]


def _png(t: Path, name: str, arr: np.ndarray | None = None, cut: bool = False) -> Path:
    p = t / "data" / "train" / name
    if arr is not None:
        cv2.imwrite(str(p), arr)
    if cut:
        p.write_bytes(p.read_bytes()[:60])
    return p


def _yaml_key(t: Path, section: str, key: str, value) -> None:
    cfg = yaml.safe_load((t / "c.yaml").read_text())
    cfg[section][key] = value
    (t / "c.yaml").write_text(yaml.safe_dump(cfg))


def _manifest(t: Path, **row) -> list[str]:
    out = t / "syn"
    vals = {c: "" for c in COLUMNS} | {"Id": "syn-a", "Target": "0", "generator_trained_on": "all",
                                       "mode": "noise", "steps": "1", "seed": "0"} | row
    write_kaggle_rgby(out / "train", "syn-a", np.zeros((8, 8, 4), np.uint8))
    pd.DataFrame([vals], columns=COLUMNS).to_csv(out / "manifest.csv", index=False)
    return ["synth", "filter", "--manifest", str(out / "manifest.csv"), "--run", str(t / "runs/none")]


TRAIN = ["train", "--config", "{t}/c.yaml", "--set", "folds.file={t}/data/folds.csv"]
M = "{t}/syn/manifest.csv: row 2 (Id syn-a)"
# (case, setup(t) -> argv, expected stderr after 'error: ', paths that must not exist afterwards)
CASES = [
    ("missing channel file", lambda t: (_png(t, "im1_yellow.png").unlink(), ["cache", "--config", f"{t}/c.yaml"])[1],
     "{t}/data/train/im1_yellow.png: missing channel file", ["cache"]),
    ("truncated PNG", lambda t: (_png(t, "im2_green.png", cut=True), ["cache", "--config", f"{t}/c.yaml"])[1],
     "{t}/data/train/im2_green.png: unreadable or truncated image", ["cache"]),
    ("RGB PNG where grayscale expected",
     lambda t: (_png(t, "im3_red.png", np.zeros((16, 16, 3), np.uint8)), ["cache", "--config", f"{t}/c.yaml"])[1],
     "{t}/data/train/im3_red.png: expected a single-channel (grayscale) PNG, found 3 channels", ["cache"]),
    ("empty Target", lambda t: _labels(t, "Id,Target\nim0,0\nim1,\n"),
     "{t}/data/train.csv: row 3 (Id im1): empty Target", ["out.csv"]),
    ("label 28", lambda t: _labels(t, "Id,Target\nim0,0\nim1,3 28\n"),
     "{t}/data/train.csv: row 3 (Id im1): label 28 outside 0-27", ["out.csv"]),
    ("label -1", lambda t: _labels(t, "Id,Target\nim0,-1\n"),
     "{t}/data/train.csv: row 2 (Id im0): label -1 outside 0-27", ["out.csv"]),
    ("duplicate Id", lambda t: _labels(t, "Id,Target\nim0,0\nim1,1\nim0,2\n"),
     "{t}/data/train.csv: duplicate Id 'im0' at row 4", ["out.csv"]),
    ("missing column", lambda t: _labels(t, "Id,Labels\nim0,0\n"),
     "{t}/data/train.csv: missing column(s) Target (found: Id, Labels)", ["out.csv"]),
    ("Id escaping the dataset folder", lambda t: _labels(t, "Id,Target\nim0,0\n../../etc/passwd,1\n"),
     "{t}/data/train.csv: row 3: Id '../../etc/passwd' is not a plain file-name stem", ["out.csv"]),
    ("test Id absent from the sample submission",
     lambda t: ((t / "sub.csv").write_text("Id,Predicted\nt0,0\nzz,1\nt1,2\n"),
                ["validate", f"{t}/sub.csv", "--sample", f"{t}/data/sample_submission.csv"])[1],
     "{t}/sub.csv: Id 'zz' is not in {t}/data/sample_submission.csv", []),
    ("unknown config key", lambda t: (_yaml_key(t, "train", "epochz", 3), [a.format(t=t) for a in TRAIN])[1],
     "{t}/c.yaml: unknown config key 'train.epochz' (did you mean 'train.epochs'? valid: {train_keys})", ["runs"]),
    ("unknown backbone", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "model.name=resnet_nope"],
     "model.name: unknown timm model 'resnet_nope' (closest: resnet50_gn, tresnet_m, tresnet_l, resnet50_mlp, "
     "tresnet_xl; all: timm.list_models())", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown loss", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "loss=[{name: no_such_loss}]"],
     "unknown loss 'no_such_loss' (valid: {losses})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown scheduler", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "sched.name=no_such_schedule"],
     "unknown scheduler 'no_such_schedule' (valid: {scheds})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown strategy", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "synthetic.strategy=cutmix"],
     "unknown mixing strategy 'cutmix' (valid: {strategies})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown generator", lambda t: ["synth", "train", "--config", f"{t}/g.yaml", "--set", "generator=gan"],
     "unknown generator 'gan' (valid: {generators})", ["m"]),
    ("manifest Id escaping the dataset folder", lambda t: _manifest(t, Id="syn-../../x"),
     M.replace("syn-a", "syn-../../x") + ": Id 'syn-../../x' is not a plain file-name stem", ["syn/manifest_filtered.csv"]),
    ("manifest source_id escaping the dataset folder", lambda t: _manifest(t, source_id="../train/im0"),
     M + " source_id: Id '../train/im0' is not a plain file-name stem", ["syn/manifest_filtered.csv"]),
]


def _names() -> dict[str, str]:
    from dataclasses import fields

    from hpa.config import TrainConfig
    from hpa.losses import LOSSES
    from hpa.optim import SCHEDULES
    from hpa.synthetic.protocol import GENERATORS
    from hpa.synthetic.mixing import MIXING_STRATEGIES as STRATEGIES
    return {"strategies": ", ".join(STRATEGIES.names()),"train_keys": ", ".join(sorted(f.name for f in fields(TrainConfig))),
            "losses": ", ".join(LOSSES.names()), "scheds": ", ".join(SCHEDULES.names()),
            "generators": ", ".join(GENERATORS.names())}


def _check(t: Path, rc: int, err: str, message: str, absent: list[str]) -> None:
    """Exit 2; stderr ends with the one ``error:`` line (progress bars before it are fine)."""
    assert rc == 2
    line = f"error: {message.format(t=t, **_names())}"
    assert err.endswith(line + "\n")
    assert [s for s in re.split(r"[\r\n]", err) if s.startswith("error")] == [line]
    for rel in absent:
        assert not (t / rel).exists() or not any(p.is_file() for p in (t / rel).rglob("*")), rel
    assert not [p for p in t.rglob("*.tmp*")], "temporary file left behind"


@pytest.mark.parametrize("case,setup,message,absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_no_output(ds, capsys, case, setup, message, absent):
    argv = setup(ds)
    rc = run_command(argv[0], argv[1:])
    _check(ds, rc, capsys.readouterr().err, message, absent)


def test_nan_loss_is_one_error_line_and_no_checkpoint(ds, capsys, monkeypatch):
    monkeypatch.setattr(CombinedLoss, "forward", lambda self, logits, y: logits.sum() * float("nan"))
    argv = [a.format(t=ds) for a in TRAIN] + ["--folds", "0"]
    rc = run_command(argv[0], argv[1:])
    _check(ds, rc, capsys.readouterr().err,
           "fold 0 epoch 1: loss is nan; stopped (last good checkpoint kept: none yet)",
           ["runs/x/fold0/last.pt", "runs/x/fold0/best.pt", "runs/x/oof.csv"])


def test_real_subprocess_prints_one_line_and_exits_2(ds):
    """The same path through ``python -m hpa`` and ``train.py``: only stderr, one line, status 2."""
    _labels(ds, "Id,Target\nim0,0\nim1,29\n")
    res = subprocess.run([sys.executable, "-m", "hpa", "folds", "--labels", str(ds / "data/train.csv"),
                          "--out", str(ds / "out.csv")], capture_output=True, text=True, timeout=120)
    _check(ds, res.returncode, res.stderr, "{t}/data/train.csv: row 3 (Id im1): label 29 outside 0-27", ["out.csv"])
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ds / "c.yaml"),
                          "--set", "optim.nme=adam"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    # a --set key is blamed on the --set item that gave it, not on the config file (issue 17 item 15)
    assert res.stderr.startswith("error: --set optim.nme=adam: unknown config key 'optim.nme' (did you mean 'optim.name'? valid: ")
    assert res.stderr.count("\n") == 1


def test_sixteen_bit_and_wrong_size_pngs_are_accepted_and_converted(tmp_path):
    """16-bit PNGs are scaled to 8 bits (>> 8); another size is resized to the working size."""
    img = np.full((16, 16, 4), 10, np.uint8)
    write_kaggle_rgby(tmp_path, "a", img)
    cv2.imwrite(str(tmp_path / "a_green.png"), np.full((16, 16), 0xABCD, np.uint16))
    cv2.imwrite(str(tmp_path / "a_blue.png"), np.full((40, 40), 77, np.uint8))
    out = read_kaggle_rgby(tmp_path, "a", 16)
    assert out.shape == (16, 16, 4) and out.dtype == np.uint8
    assert [int(out[..., k].mean()) for k in range(4)] == [10, 0xAB, 77, 10]
    assert [c for c in CHANNELS] == ["red", "green", "blue", "yellow"]


# ------------------------------------------------------------------ second round (issue 17)
def _folds_of(t: Path, text: str, k: int = 2) -> list[str]:
    (t / "data" / "train.csv").write_text(text)
    return ["folds", "--labels", str(t / "data/train.csv"), "--out", str(t / "out.csv"), "--k", str(k)]


def _validate(t: Path, sub: str, sample: str | None = None) -> list[str]:
    (t / "sub.csv").write_text(sub)
    if sample is not None:
        (t / "data" / "sample_submission.csv").write_text(sample)
    return ["validate", f"{t}/sub.csv", "--sample", f"{t}/data/sample_submission.csv"]


def _unlink_images(t: Path, ids: list[str]) -> list[str]:
    for i in ids:
        for c in CHANNELS:
            (t / "data" / "train" / f"{i}_{c}.png").unlink()
    return ["cache", "--config", f"{t}/c.yaml"]


R = "{t}/data/train.csv: row 3 (Id im1)"
HINT = "is not an integer (ASCII digits 0-9 only)"
SAMPLE = "{t}/data/sample_submission.csv"
CASES_2 = [
    # labels: ASCII digits 0-27 separated by single spaces, in every reader (item 7)
    ("Target with a plus sign", lambda t: _folds_of(t, "Id,Target\nim0,0\nim1,+3\n"), f"{R}: label '+3' {HINT}"),
    ("full-width digit", lambda t: _folds_of(t, "Id,Target\nim0,0\nim1,３\n"), f"{R}: label '３' {HINT}"),
    ("superscript digit", lambda t: _folds_of(t, "Id,Target\nim0,0\nim1,²\n"), f"{R}: label '²' {HINT}"),
    ("tab-separated labels", lambda t: _folds_of(t, "Id,Target\nim0,0\nim1,3\t5\n"),
     f"{R}: labels must be separated by single spaces, found '3\\t5'"),
    ("double space between labels", lambda t: _folds_of(t, "Id,Target\nim0,0\nim1,3  5\n"),
     f"{R}: labels must be separated by single spaces, found '3  5'"),
    ("submission with a full-width digit", lambda t: _validate(t, "Id,Predicted\nt0,３\nt1,0\n"),
     "{t}/sub.csv: row 2 (Id t0): label '３' is not an integer 0-27"),
    ("submission with a superscript digit", lambda t: _validate(t, "Id,Predicted\nt0,0\nt1,1 ²\n"),
     "{t}/sub.csv: row 3 (Id t1): label '²' is not an integer 0-27"),
    ("submission with tab-separated labels", lambda t: _validate(t, "Id,Predicted\nt0,1\t2\nt1,0\n"),
     "{t}/sub.csv: row 2 (Id t0): labels must be separated by single spaces, found '1\\t2'"),
    ("scored submission with tab-separated labels",
     lambda t: ((t / "sub.csv").write_text("Id,Predicted\n" + "".join(f"{i},0\n" for i in IDS[1:]) + "im0,1\t2\n"),
                ["score", "--submission", f"{t}/sub.csv", "--labels", f"{t}/data/train.csv"])[1],
     "{t}/sub.csv: row 2 (Id im0): labels must be separated by single spaces, found '1\\t2'"),
    # errors name their file and row (item 15); an empty sample submission is an error (item 5)
    ("header-only train.csv", lambda t: _folds_of(t, "Id,Target\n"), "{t}/data/train.csv: no rows (only a header)"),
    ("header-only sample submission", lambda t: _validate(t, "Id,Predicted\n", "Id,Predicted\n"),
     f"{SAMPLE}: no rows (only a header)"),
    ("path Id in the sample submission", lambda t: _validate(t, "Id,Predicted\nt0,0\n", "Id,Predicted\nt0,0\n../x,0\n"),
     f"{SAMPLE}: row 3: Id '../x' is not a plain file-name stem"),
    # every missing channel file in one line (item 20); folds too small to mean anything (item 21)
    ("three images without channel files", lambda t: _unlink_images(t, ["im0", "im2", "im5"]),
     "{t}/data/train: 12 missing channel files: im0_red.png, im0_green.png, im0_blue.png, im0_yellow.png, "
     "im2_red.png and 7 more"),
    ("five images in five folds", lambda t: _folds_of(t, "Id,Target\n" + "".join(f"{i},0\n" for i in IDS[:5]), 5),
     "folds: 5 samples (or groups) for 5 folds leave a validation fold with a single image; use at most 2 folds"),
]


@pytest.mark.parametrize("case,setup,message", CASES_2, ids=[c[0] for c in CASES_2])
def test_bad_input_second_round(ds, capsys, case, setup, message):
    argv = setup(ds)
    rc = run_command(argv[0], argv[1:])
    _check(ds, rc, capsys.readouterr().err, message, ["out.csv", "cache"])


def test_header_only_sample_stops_inference_before_it_writes(ds, capsys):
    """Inference reads the sample submission first: an empty one leaves test_probs.csv as it was."""
    from hpa.config import load_config, save_config

    run = ds / "runs" / "x"
    save_config(load_config(ds / "c.yaml"), run / "config.yaml")
    (run / "test_probs.csv").write_text("old\n")
    (ds / "data" / "sample_submission.csv").write_text("Id,Predicted\n")
    rc = run_command("infer", ["--config", str(ds / "c.yaml"), "--out", str(ds / "sub.csv")])
    _check(ds, rc, capsys.readouterr().err, f"{SAMPLE}: no rows (only a header)", ["sub.csv"])
    assert (run / "test_probs.csv").read_text() == "old\n"


def test_validate_takes_the_sample_from_the_config(ds, capsys):
    (ds / "sub.csv").write_text("Id,Predicted\nt1,3\nt0,\n")
    assert run_command("validate", [str(ds / "sub.csv"), "--config", str(ds / "c.yaml")]) == 0
    assert capsys.readouterr().out.startswith(f"{ds}/sub.csv: valid (2 rows, 0.50 labels per row against ")
    rc = run_command("validate", [str(ds / "sub.csv")])
    _check(ds, rc, capsys.readouterr().err, "give --sample, or a --config naming the sample submission "
           "(data.root, data.sample_submission)", [])


def test_folds_with_a_class_rarer_than_the_folds_warn_in_one_line(ds):
    """Class 25 has one image: with 2 folds one validation fold never sees it; said on one line."""
    argv = _folds_of(ds, (ds / "data" / "train.csv").read_text())
    # a real process: under pytest, warnings go to pytest's recorder, not to the CLI's one-line format
    res = subprocess.run([sys.executable, "-m", "hpa", *argv], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    warning = [s for s in res.stderr.splitlines() if s.startswith("warning")]
    assert warning == ["warning: folds: 1 class(es) missing from some of the 2 validation folds: "
                       "25 Cytosol (1 image, in 1); their per-fold F1 and tuned thresholds rest on fewer "
                       "folds (use fewer folds or more data)"]
    assert (ds / "out.csv").is_file()


def test_sixteen_bit_png_with_eight_bit_values_is_read_as_is_with_a_warning(tmp_path):
    """A 16-bit PNG whose values are all below 256 holds 8-bit values: >> 8 would make it black."""
    from hpa.data import images

    write_kaggle_rgby(tmp_path, "a", np.full((16, 16, 4), 10, np.uint8))
    low = np.arange(256, dtype=np.uint16).reshape(16, 16)
    cv2.imwrite(str(tmp_path / "a_green.png"), low)
    cv2.imwrite(str(tmp_path / "a_blue.png"), np.zeros((16, 16), np.uint16))      # black either way
    images._warned_8_in_16.clear()
    with pytest.warns(UserWarning) as record:
        out = read_kaggle_rgby(tmp_path, "a")
        read_kaggle_rgby(tmp_path, "a")                  # once per process, not once per file read
    assert [str(w.message) for w in record] == [
        f"{tmp_path / 'a_green.png'}: 16-bit PNG whose values are all below 256 (max 255); read as 8-bit "
        "values, not scaled by >> 8 (which would make it black). Other such files are read the same way "
        "without another warning"]
    np.testing.assert_array_equal(out[..., 1], low.astype(np.uint8))
    assert [int(out[..., k].max()) for k in range(4)] == [10, 255, 0, 10]
