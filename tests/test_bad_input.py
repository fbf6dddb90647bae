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
from hpa.synth.manifest import COLUMNS

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
     "{t}/c.yaml: unknown config key 'train.epochz' (valid: {train_keys})", ["runs"]),
    ("unknown backbone", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "model.name=resnet_nope"],
     "model.name: unknown timm model 'resnet_nope' (closest: resnet50_gn, tresnet_m, tresnet_l, resnet50_mlp, "
     "tresnet_xl; all: timm.list_models())", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown loss", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "loss=[{name: dice}]"],
     "unknown loss 'dice' (valid: {losses})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown scheduler", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "sched.name=linear"],
     "unknown scheduler 'linear' (valid: {scheds})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
    ("unknown strategy", lambda t: [a.format(t=t) for a in TRAIN] + ["--set", "synthetic.strategy=cutmix"],
     "unknown synthetic strategy 'cutmix' (valid: {strategies})", ["runs/x/fold0/last.pt", "runs/x/oof.csv"]),
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
    from hpa.synth.generators import GENERATORS
    from hpa.synthetic import STRATEGIES
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
    assert res.stderr.startswith("error: --set optim.nme=adam: unknown config key 'optim.nme' (valid: ")
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
