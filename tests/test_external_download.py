"""``hpa download --hpav18`` against a loopback HTTP server: layout, formats, faults, resume, Ctrl-C.

The server (``hpa.demo.loopback``) runs in a thread on 127.0.0.1 and serves the real HPAv18
samples of ../shared (skipped when absent) or small generated colour JPEGs (always).
"""
from __future__ import annotations

import os
import signal

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa.cli import run_command
from hpa.data.cache import check_images
from hpa.data.images import CHANNELS, hpav18_path, hpav18_short_id, read_hpav18_rgby, read_kaggle_rgby
from hpa.errors import HPAError
from hpa.demo.external import write_hpav18_jpegs
from hpa.external.download import DownloadSettings, download_hpav18
from hpa.external.hpav18 import image_url, read_hpav18_labels
from hpa.demo.loopback import HPAv18Server, serve_map

REAL = ["10580_1610_C1_1", "10580_1610_C1_2", "11088_89_B5_1", "30741_800_A6_1"]   # both name forms


def _settings(srv, **kw) -> DownloadSettings:
    kw = {"workers": 4, "retries": 2, "timeout": 2.0, "backoff": 0.01, "progress": False, **kw}
    return DownloadSettings(base_url=srv.url, **kw)


def _labels(path, ids):
    pd.DataFrame({"Id": ids, "Target": ["13 25 0"] * len(ids)}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Eight generated samples (colour JPEGs, 40-72 px), half under the server's short name."""
    d = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(0)
    ids = [f"{100 + k}_{k}_A{k + 1}_1" for k in range(8)]
    for k, i in enumerate(ids):
        side = 40 + 8 * (k % 5)
        img = cv2.GaussianBlur(rng.integers(0, 255, (side, side, 4), dtype=np.uint8), (5, 5), 0)
        write_hpav18_jpegs(d, hpav18_short_id(i) if k % 2 else i, img, 90)
    return d, ids


def test_ids_urls_and_both_file_name_forms(shared_hpa, tmp_path):
    d = shared_hpa / "real-samples" / "hpav18"
    assert image_url("http://v18.proteinatlas.org/images/", "10580_1610_C1_1", "red") == \
        "http://v18.proteinatlas.org/images/10580/1610_C1_1_red.jpg"
    assert hpav18_short_id("24089_si27_F4_11") == "si27_F4_11" and hpav18_short_id("abc_1") is None
    assert hpav18_path(d, "11088_89_B5_1", "red").name == "89_B5_1_red.jpg"       # server's name
    assert hpav18_path(d, "10580_1610_C1_1", "red").name == "10580_1610_C1_1_red.jpg"
    a, b = read_hpav18_rgby(d, "11088_89_B5_1", 64), read_hpav18_rgby(d, "89_B5_1", 64)
    np.testing.assert_array_equal(a, b)
    assert check_images(d, REAL, "hpav18") == 4
    with pytest.raises(HPAError, match=r"4 missing channel files: 99_89_B5_2_red.jpg"):
        check_images(d, ["99_89_B5_2"], "hpav18")
    df = read_hpav18_labels(shared_hpa / "HPAv18RBGY_wodpl.csv")
    assert len(df) == 74606 and df["Id"].map(hpav18_short_id).nunique() == 74606


def test_download_real_samples_jpg_then_png(shared_hpa, tmp_path):
    d = shared_hpa / "real-samples" / "hpav18"
    with HPAv18Server(serve_map(d, REAL)) as srv:
        r = download_hpav18(_labels(tmp_path / "l.csv", REAL), tmp_path / "jpg", _settings(srv))
        assert (r.total, r.done, r.skipped, r.failed) == (4, 4, 0, 0)
        for i in REAL:                       # byte for byte what the server holds
            for c in CHANNELS:
                assert (tmp_path / "jpg" / f"{i}_{c}.jpg").read_bytes() == hpav18_path(d, i, c).read_bytes()
        assert r.bytes == sum(hpav18_path(d, i, c).stat().st_size for i in REAL for c in CHANNELS)
        r = download_hpav18(tmp_path / "l.csv", tmp_path / "png", _settings(srv, fmt="png", size=128))
        assert r.done == 4
    for i in REAL:                           # the PNGs are what the JPEG reader makes of the JPEGs
        png = read_kaggle_rgby(tmp_path / "png", i)
        assert png.shape == (128, 128, 4) and png.dtype == np.uint8
        np.testing.assert_array_equal(png, read_hpav18_rgby(d, i, 128))
        assert cv2.imread(str(tmp_path / "png" / f"{i}_green.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    assert pd.read_csv(tmp_path / "png" / "failed.csv").empty


def test_faults_retries_and_failed_csv(generated, tmp_path):
    d, ids = generated
    files = serve_map(d, ids)
    u = {i: image_url("", i, "green") for i in ids}
    faults = {u[ids[0]]: "404", u[ids[1]]: "500-once", u[ids[2]]: "truncate", u[ids[3]]: "stall",
              u[ids[4]]: "garbage"}
    with HPAv18Server(files, faults=faults) as srv:
        r = download_hpav18(_labels(tmp_path / "l.csv", ids), tmp_path / "out", _settings(srv, timeout=0.5))
        assert (r.done, r.failed) == (4, 4)
        assert srv.requests_to[u[ids[0]]] == 1                   # a 404 is final
        assert srv.requests_to[u[ids[1]]] == 2                   # the 500 succeeded on retry
        assert srv.requests_to[u[ids[2]]] == 3                   # 1 + 2 retries
    failed = pd.read_csv(tmp_path / "out" / "failed.csv")
    assert failed.columns.tolist() == ["Id", "stain", "url", "reason"]
    reasons = dict(zip(failed["Id"], failed["reason"]))
    assert reasons[ids[0]] == "HTTP 404 (after 1 attempt(s))"
    assert reasons[ids[2]].startswith("truncated body") and reasons[ids[2]].endswith("(after 3 attempt(s))")
    assert reasons[ids[3]].startswith("timed out")
    assert reasons[ids[4]].startswith("not a whole JPEG")
    assert set(failed["stain"]) == {"green"} and failed["url"].iat[0].endswith(u[ids[0]])
    names = os.listdir(tmp_path / "out")
    assert f"{ids[0]}_red.jpg" in names and f"{ids[0]}_green.jpg" not in names   # whole files only
    assert not [n for n in names if n.startswith(".")]
    # resume: the server is fixed; only the 4 failed Ids are fetched again, and only their missing
    # stains (an Id stops at its first failed stain: green, blue and yellow; red is kept)
    with HPAv18Server(files) as srv:
        r = download_hpav18(tmp_path / "l.csv", tmp_path / "out", _settings(srv))
        assert (r.done, r.skipped, r.failed) == (4, 4, 0)
        assert sorted(srv.requests_to) == sorted(image_url("", i, c) for i in ids[:5] if i != ids[1]
                                                 for c in ("green", "blue", "yellow"))
    assert pd.read_csv(tmp_path / "out" / "failed.csv").empty
    for i in ids:
        assert read_hpav18_rgby(tmp_path / "out", i).shape[2] == 4


def test_ctrl_c_leaves_only_whole_files_and_resumes(generated, tmp_path, request):
    d, src = generated
    # a shell that starts the suite in the background (CI, `make test &`) hands it SIGINT ignored:
    # restore Python's own handler so the signal below raises KeyboardInterrupt as at a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    ids = [f"{500 + k}_{k}_B1_1" for k in range(40)]
    files = serve_map(d, ids, src)
    fired = []

    def interrupt(total):                    # a real SIGINT, as Ctrl-C sends, after 30 requests
        if total == 30 and not fired:
            fired.append(total)
            os.kill(os.getpid(), signal.SIGINT)

    with HPAv18Server(files, latency=0.02, on_request=interrupt) as srv:
        with pytest.raises(KeyboardInterrupt):
            download_hpav18(_labels(tmp_path / "l.csv", ids), tmp_path / "out", _settings(srv))
    names = os.listdir(tmp_path / "out")
    assert not [n for n in names if n.startswith(".")]           # no temporary file left
    jpgs = [n for n in names if n.endswith(".jpg")]
    assert 0 < len(jpgs) < 4 * len(ids)
    for n in jpgs:                                                # every file whole and decodable
        assert (tmp_path / "out" / n).read_bytes() == files[image_url("", n.rsplit("_", 1)[0], n.rsplit("_", 1)[1][:-4])]
    with HPAv18Server(files) as srv:
        r = download_hpav18(tmp_path / "l.csv", tmp_path / "out", _settings(srv))
        assert r.done + r.skipped == 40 and r.skipped >= 1 and r.failed == 0
        assert sum(srv.requests_to.values()) == 4 * 40 - len(jpgs)    # nothing fetched twice


def test_cli_summary_exit_codes_and_bad_input(generated, tmp_path, capsys):
    d, ids = generated
    labels = _labels(tmp_path / "l.csv", ids)
    with HPAv18Server(serve_map(d, ids), faults={image_url("", ids[0], "red"): "404"}) as srv:
        args = ["--hpav18", "--csv", str(labels), "--base-url", srv.url, "--workers", "3", "--retries", "0"]
        assert run_command("download", args + ["--out", str(tmp_path / "a")]) == 1
        out = capsys.readouterr().out
        assert f"hpav18 download -> {tmp_path / 'a'} (jpg): 8 Ids: 7 done, 0 skipped (already there), 1 failed" in out
        assert f"reasons in {tmp_path / 'a' / 'failed.csv'}" in out
        # another format into the same folder: refused before anything is written
        assert run_command("download", args + ["--out", str(tmp_path / "a"), "--format", "png"]) == 2
        assert capsys.readouterr().err == (f"error: {tmp_path / 'a'}: already holds HPAv18 .jpg files; "
                                           "--format png would mix two formats in one folder (use another --out)\n")
        srv.faults.clear()
        assert run_command("download", args + ["--out", str(tmp_path / "p"), "--format", "png", "--size", "32",
                                               "--limit", "2"]) == 0
        assert "2 Ids: 2 done" in capsys.readouterr().out
        assert run_command("download", args + ["--out", str(tmp_path / "p"), "--format", "png", "--size", "64"]) == 2
        assert "already holds 32x32 PNGs" in capsys.readouterr().err
    # a Kaggle train.csv is not an HPAv18 label file
    (tmp_path / "k.csv").write_text("Id,Target\n00070df0-bbc3-11e8-b2bc-ac1f6b6435d0,16 0\n")
    assert run_command("download", ["--hpav18", "--csv", str(tmp_path / "k.csv"), "--out", str(tmp_path / "k")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'k.csv'}: row 2: Id '00070df0-bbc3-11e8-b2bc-ac1f6b6435d0' is not an HPAv18 Id "
        "(<antibody>_<plate>_<well>_<field>, e.g. 10580_1610_C1_1): not an HPAv18 label file\n")
    assert not (tmp_path / "k").exists()
    (tmp_path / "t.csv").write_text("Id,Labels\n1_2_A1_1,0\n")
    assert run_command("download", ["--hpav18", "--csv", str(tmp_path / "t.csv")]) == 2
    assert "missing column(s) Target" in capsys.readouterr().err
    assert run_command("download", ["--hpav18"]) == 2
    assert "give the label file with --csv" in capsys.readouterr().err
