"""``hpa download`` / ``hpa submit`` against a fake client and a locally made zip in the Kaggle layout."""
from __future__ import annotations

import logging
import zipfile

import numpy as np
import pandas as pd
import pytest

import hpa.kaggle.client as hk
import hpa.kaggle.download as hd
from hpa.cli import run_command
from hpa.data.images import write_kaggle_rgby
from hpa.errors import HPAError

TOKEN = "tok-SECRET-4242"


def _make_zip(tmp_path, drop: str | None = None, evil: bool = False):
    """A competition zip: train.csv (3 Ids), sample_submission.csv (2 Ids), 4 channel PNGs each."""
    stage = tmp_path / "stage"
    rng = np.random.default_rng(0)
    stage.mkdir()
    pd.DataFrame({"Id": ["t0", "t1", "t2"], "Target": ["0", "1 25", "27"]}).to_csv(stage / "train.csv", index=False)
    pd.DataFrame({"Id": ["s0", "s1"], "Predicted": ["0", "0"]}).to_csv(stage / "sample_submission.csv", index=False)
    for split, ids in (("train", ["t0", "t1", "t2"]), ("test", ["s0", "s1"])):
        for i in ids:
            write_kaggle_rgby(stage / split, i, rng.integers(0, 255, (8, 8, 4), dtype=np.uint8))
    zpath = tmp_path / "hpa.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(stage.rglob("*")):
            rel = f.relative_to(stage).as_posix()
            if f.is_file() and rel != drop:
                zf.write(f, rel)
        if evil:
            zf.writestr("../escape.txt", "x")
    return zpath


class FakeClient:
    """Stands in for KaggleApi: 'downloads' a local zip, records submissions, can fail with the token."""

    def __init__(self, zpath=None, fail: str | None = None):
        self.zpath, self.fail, self.calls = zpath, fail, []

    def competition_download_files(self, competition, path=None, quiet=True):
        self.calls.append(("download", competition))
        if self.fail:
            raise RuntimeError(self.fail)
        (hd.Path(path) / f"{competition}.zip").write_bytes(self.zpath.read_bytes())

    def competition_submit(self, file_name, message, competition):
        self.calls.append(("submit", file_name, message, competition))
        if self.fail:
            raise RuntimeError(self.fail)


def test_download_unpacks_and_checks_layout(tmp_path):
    client = FakeClient(_make_zip(tmp_path))
    counts = hd.download_competition(tmp_path / "input" / "hpa", client=client)
    assert counts == {"train_ids": 3, "train_pngs": 12, "test_ids": 2, "test_pngs": 8}
    assert client.calls == [("download", "human-protein-atlas-image-classification")]
    assert not list((tmp_path / "input" / "hpa").glob("*.zip"))


def test_download_names_missing_channel(tmp_path):
    client = FakeClient(_make_zip(tmp_path, drop="test/s1_yellow.png"))
    dest = tmp_path / "out"
    with pytest.raises(HPAError) as e:
        hd.download_competition(dest, client=client)
    assert str(e.value) == f"{dest / 'test' / 's1_yellow.png'}: missing image (test Id s1)"


def test_download_refuses_zip_slip(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(HPAError, match=r"member '../escape.txt' would be written outside"):
        hd.download_competition(dest, client=FakeClient(_make_zip(tmp_path, evil=True)))
    assert not (tmp_path / "escape.txt").exists()


def test_missing_credentials_is_one_line(tmp_path, monkeypatch, capsys):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kcfg"))
    assert run_command("download", ["--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: no Kaggle credentials: put kaggle.json (from kaggle.com > Settings > API) in "
                   f"{tmp_path / 'kcfg'}/ with chmod 600, or set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY\n")
    (tmp_path / "kcfg").mkdir()
    (tmp_path / "kcfg" / "kaggle.json").write_text("{}")
    assert hk.credentials_source() == str(tmp_path / "kcfg" / "kaggle.json")
    assert hk.credentials_source({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}) == \
        "environment (KAGGLE_USERNAME, KAGGLE_KEY)"


def _submission(tmp_path, text="Id,Predicted\ns0,0\ns1,1 2\n"):
    sample = tmp_path / "sample.csv"
    sample.write_text("Id,Predicted\ns0,0\ns1,0\n")
    sub = tmp_path / "sub.csv"
    sub.write_text(text)
    return sub, sample


def test_submit_validates_then_submits_without_leaking_token(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    client = FakeClient()
    monkeypatch.setattr(hk, "default_client", lambda: client)
    sub, sample = _submission(tmp_path)
    assert run_command("submit", [str(sub), "-m", "first try", "--sample", str(sample)]) == 0
    assert client.calls == [("submit", str(sub), "first try", "human-protein-atlas-image-classification")]
    # a client error that quotes the token is passed on masked
    client.fail = f"401 Unauthorized for token {TOKEN}"
    assert run_command("submit", [str(sub), "-m", "again", "--sample", str(sample)]) == 2
    out = capsys.readouterr()
    assert out.err == "error: kaggle submit failed: 401 Unauthorized for token ***\n"
    assert TOKEN not in out.out + out.err + caplog.text


def test_submit_refuses_invalid_file_before_calling_kaggle(tmp_path, monkeypatch, capsys):
    client = FakeClient()
    monkeypatch.setattr(hk, "default_client", lambda: client)
    sub, sample = _submission(tmp_path, "Id,Predicted\ns0,0\n")
    assert run_command("submit", [str(sub), "-m", "x", "--sample", str(sample)]) == 2
    assert capsys.readouterr().err == f"error: {sub}: 1 Id(s) of {sample} missing, first 's1'\n"
    assert client.calls == []


def test_key_from_kaggle_json_is_masked_in_download_errors(tmp_path, monkeypatch, capsys):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "kcfg").mkdir()
    (tmp_path / "kcfg" / "kaggle.json").write_text('{"username": "me", "key": "%s"}' % TOKEN)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kcfg"))
    monkeypatch.setattr(hk, "default_client", lambda: FakeClient(fail=f"403 key={TOKEN} forbidden"))
    assert run_command("download", ["--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: kaggle download of 'human-protein-atlas-image-classification' failed: "
                   "403 key=*** forbidden\n")
