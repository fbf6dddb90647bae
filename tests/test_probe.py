"""``hpa embed`` and ``hpa probe``: a trained run as a frozen backbone, a tiny foundation model, the cache.

The run source trains 2 folds of the tiny demo for 2 epochs (seconds); the probe's run folders must be
read by ``hpa thresholds`` and ``infer.py --ensemble`` like any trained run's.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hpa.classes import PROB_COLUMNS
from hpa.cli import run_command
from hpa.config import load_config
from hpa.data.labels import read_labels
from hpa.errors import HPAError
from hpa.probe import embed as embed_mod
from hpa.probe.embed import cache_key, run_embed, views
from hpa.rundir import RunDir
from hpa.training.run import run as train_run


@pytest.fixture(scope="module")
def trained(tiny_experiment, tmp_path_factory):
    """A 2-fold run of 2 epochs on the tiny demo, and its config path."""
    work = tmp_path_factory.mktemp("probe")
    path = tiny_experiment(work, 2, {"epochs": 2, "batch_size": 16, "num_workers": 0}, loss=[{"name": "bce"}])
    train_run(load_config(path))
    return work, path


def _probe_cfg(work, path, **embed):
    cfg = yaml.safe_load(path.read_text())
    cfg["name"] = "p"
    cfg["embed"] = {"source": f"run:{work / 'runs' / 'tiny'}", "cache_dir": str(work / "emb"), "batch_size": 16,
                    **embed}
    cfg["probe"] = {"heads": ["linear", "mlp"], "max_iter": 50, "hidden": 32}
    out = work / "probe.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def _train_images(cfg, n):
    from hpa.data.cache import open_images

    image_dir, ids, kind = embed_mod.split_ids(cfg, "train")
    return np.array(open_images(image_dir, ids[:n], 32, kind, False))


def test_views_cut_tiles_and_flips():
    x = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8)
    v = views(x, 2, 4)
    assert v.shape == (16, 2, 4, 4, 4)
    torch.testing.assert_close(v[0], x[..., :4, :4])
    torch.testing.assert_close(v[1], torch.rot90(x[..., :4, :4], 1, dims=(2, 3)))
    torch.testing.assert_close(v[4], x[..., :4, 4:])


def test_probe_on_a_trained_runs_features_writes_runs_that_thresholds_and_ensembles_read(trained, capsys):
    work, path = trained
    cfg_path = _probe_cfg(work, path)
    assert run_command("embed", ["--config", str(cfg_path)]) == 0
    line = capsys.readouterr().out
    assert line.startswith("embed run:") and "120 image embeddings of dim" in line.replace("240", "120")
    # one cache folder per fold (fold k's checkpoint embeds for fold k's probe), keyed by size and crops
    cfg = load_config(cfg_path)
    dirs = [work / "emb" / cache_key(cfg.embed, 32, f) for f in (0, 1)]
    assert all((d / "train.npy").is_file() and (d / "test.npy").is_file() for d in dirs)
    x0, x1 = np.load(dirs[0] / "train.npy"), np.load(dirs[1] / "train.npy")
    assert x0.shape == (96, x0.shape[1]) and not np.allclose(x0, x1)
    # the features are the fold model's own pooled features
    rd = RunDir(work / "runs" / "tiny")
    model, _ = rd.load_model(0)
    img = _train_images(cfg, 2)
    with torch.no_grad():
        want = model.features(torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float()).numpy()
    np.testing.assert_allclose(x0[:2], want, rtol=1e-4, atol=1e-5)

    assert run_command("probe", ["--config", str(cfg_path), "--out", str(work / "sub.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    for head in ("linear", "mlp"):
        sub = pd.read_csv(work / f"sub_{head}.csv")
        assert len(sub) == 24 and list(sub.columns) == ["Id", "Predicted"]
    assert out[0].startswith("probe linear on run:") and "0 images embedded now" in out[0]   # all cached
    assert out[1].startswith("probe mlp on run:")
    train = read_labels(load_config(cfg_path).data.root + "/train.csv")
    for head in ("linear", "mlp"):
        hd = RunDir(work / "runs" / f"p_{head}")
        ids, folds, probs = hd.read_oof(train["Id"].tolist())
        assert len(ids) == 96 and sorted(set(folds)) == [0, 1]
        m = hd.read_metrics()
        assert m["probe"]["head"] == head and 0.0 <= m["oof_macro_f1"] <= 1.0
        assert len(hd.read_test_probs()) == 24
        assert run_command("thresholds", ["--config", str(cfg_path), "--set", f"name=p_{head}"]) == 0
        assert hd.read_thresholds()["strategy"]
    ens = work / "ens.yaml"
    ens.write_text(f"runs_dir: {work / 'runs'}\nruns:\n  - {{dir: {work / 'runs' / 'p_linear'}}}\n"
                   f"  - {{dir: {work / 'runs' / 'p_mlp'}}}\n"
                   f"out: {work / 'ens.csv'}\n")
    assert run_command("infer", ["--ensemble", str(ens)]) == 0
    blended = pd.read_csv(work / "runs" / "ens" / "test_probs.csv")[PROB_COLUMNS].to_numpy()
    a = RunDir(work / "runs" / "p_linear").read_test_probs()[PROB_COLUMNS].to_numpy()
    b = RunDir(work / "runs" / "p_mlp").read_test_probs()[PROB_COLUMNS].to_numpy()
    np.testing.assert_allclose(blended, (a + b) / 2)


def test_linear_probe_recovers_a_separable_label(trained, tmp_path):
    """Embeddings that hold the answer: the linear head must find it (OOF F1 on that class near 1)."""
    from hpa.probe.stage import fit_head

    rng = np.random.default_rng(0)
    y = np.zeros((200, 28))
    y[:, 0] = rng.random(200) < 0.4
    x = rng.normal(size=(200, 8))
    x[:, 0] += 4 * y[:, 0]
    cfg = load_config(None, ["probe.max_iter=300"])
    for head in ("linear", "mlp"):
        p, = fit_head(head, x[:150], y[:150], [x[150:]], cfg.probe, 0)
        assert ((p[:, 0] > 0.5) == (y[150:, 0] > 0)).mean() > 0.95


def test_embedding_resumes_by_shard_and_refuses_other_ids(trained, tmp_path, monkeypatch):
    work, path = trained
    cfg = load_config(_probe_cfg(work, path, cache_dir=str(tmp_path / "emb")))
    monkeypatch.setattr(embed_mod, "SHARD", 32)
    calls = []
    real = embed_mod.embed_batch

    def dying(fn, images, e, device):
        calls.append(len(images))
        if len(calls) == 5:                     # mid-way through the train split of fold 0
            raise KeyboardInterrupt
        return real(fn, images, e, device)
    monkeypatch.setattr(embed_mod, "embed_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        run_embed(cfg, [0], ("train",), "cpu", progress=False)
    parts = tmp_path / "emb" / cache_key(cfg.embed, 32, 0) / "train.parts"
    assert sorted(p.name for p in parts.glob("0*.npy")) == ["00000.npy", "00001.npy"]
    calls.clear()
    monkeypatch.setattr(embed_mod, "embed_batch", real)
    r = run_embed(cfg, [0], ("train",), "cpu", progress=False)
    assert r["computed"] == 96 and not parts.exists()
    full = np.load(tmp_path / "emb" / cache_key(cfg.embed, 32, 0) / "train.npy")
    monkeypatch.setattr(embed_mod, "SHARD", 1024)
    fresh = load_config(_probe_cfg(work, path, cache_dir=str(tmp_path / "emb2")))
    run_embed(fresh, [0], ("train",), "cpu", progress=False)
    np.testing.assert_allclose(full, np.load(tmp_path / "emb2" / cache_key(cfg.embed, 32, 0) / "train.npy"),
                               rtol=1e-5, atol=1e-6)
    ids_file = tmp_path / "emb" / cache_key(cfg.embed, 32, 0) / "train_ids.txt"
    ids_file.write_text("other\n" + ids_file.read_text())
    with pytest.raises(HPAError, match="cached train embeddings are of other Ids"):
        run_embed(cfg, [0], ("train",), "cpu", progress=False)


def test_embed_with_a_tiny_foundation_model_and_tiles(trained, tmp_path, capsys):
    from test_foundation import TINY, tiny_source

    work, path = trained
    src, published = tiny_source("celldino_hpa_sc", img_size=16)
    torch.save(published, tmp_path / "w.pth")
    cfg_path = _probe_cfg(work, path, source="foundation/celldino_hpa_sc", weights=str(tmp_path / "w.pth"),
                          params={"img_size": 16, "cache_dir": str(tmp_path / "models"), **TINY},
                          tiles=2, flips=2, cache_dir=str(tmp_path / "emb"))
    assert run_command("embed", ["--config", str(cfg_path)]) == 0
    assert "120 image embeddings of dim 32" in capsys.readouterr().out
    cfg = load_config(cfg_path)
    d = tmp_path / "emb" / cache_key(cfg.embed, 32)
    assert d.name == "celldino_hpa_sc-ww-s32-t2-f2"
    x = np.load(d / "train.npy")
    img = _train_images(cfg, 1)
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        want = torch.stack([src.eval()(c) for c in views(t, 2, 2)]).mean(0).numpy()
    np.testing.assert_allclose(x[:1], want, rtol=1e-4, atol=1e-5)
    assert run_command("probe", ["--config", str(cfg_path), "--set", "probe.heads=[linear]"]) == 0
    assert "probe linear on foundation/celldino_hpa_sc (32-d, 0 images embedded now)" in capsys.readouterr().out


def test_embed_and_probe_refuse_bad_settings(trained, capsys):
    work, path = trained
    cfg_path = _probe_cfg(work, path)
    assert run_command("embed", ["--config", str(cfg_path), "--set", "embed.source=timm/resnet18"]) == 2
    assert "neither foundation/<name> nor run:<run folder>" in capsys.readouterr().err
    assert run_command("embed", ["--config", str(cfg_path), "--set", f"embed.source=run:{work}"]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert run_command("probe", ["--config", str(cfg_path), "--set", "probe.heads=[svm]"]) == 2
    assert "probe.heads: 'svm' not one of linear, mlp" in capsys.readouterr().err


def test_a_retrained_fold_invalidates_its_cached_embeddings(trained, tmp_path):
    import os

    work, path = trained
    cfg = load_config(_probe_cfg(work, path, cache_dir=str(tmp_path / "emb")))
    assert run_embed(cfg, [1], ("test",), "cpu", progress=False)["computed"] == 24
    assert run_embed(cfg, [1], ("test",), "cpu", progress=False)["computed"] == 0
    best = RunDir(work / "runs" / "tiny").checkpoint_paths([1])[0]
    st = best.stat()
    os.utime(best, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="checkpoint changed"):
        assert run_embed(cfg, [1], ("test",), "cpu", progress=False)["computed"] == 24


def test_embed_external_hpav18_images(tiny_demo, tmp_path, capsys):
    """``hpa embed --external`` embeds the HPAv18 folder too (colour JPEGs, the demo's layout)."""
    import shutil

    from hpa.demo.external import make_external_demo
    from test_foundation import TINY, tiny_source

    root = tmp_path / "demo"
    shutil.copytree(tiny_demo, root)
    make_external_demo(root, 20, seed=0)
    _, published = tiny_source("dino4cells_hpa_fov")
    torch.save(published, tmp_path / "w.pth")
    cfg = {"data": {"root": str(root), "image_size": 32, "cache_dir": str(tmp_path / "cache"),
                    "external_csv": str(root / "hpav18.csv"), "external_dir": str(root / "hpav18")},
           "embed": {"source": "foundation/dino4cells_hpa_fov", "weights": str(tmp_path / "w.pth"),
                     "params": {"img_size": 32, "cache_dir": str(tmp_path / "m"), **TINY},
                     "cache_dir": str(tmp_path / "emb")}}
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert run_command("embed", ["--config", str(path), "--external"]) == 0
    assert "140 image embeddings of dim 32" in capsys.readouterr().out       # 96 train + 24 test + 20 HPAv18
    d = next((tmp_path / "emb").iterdir())
    x, ids = embed_mod.load_embeddings(d, "external")
    assert x.shape == (20, 32) and ids == pd.read_csv(root / "hpav18.csv")["Id"].tolist()
