"""Foundation backbones loaded offline: tiny models in each published key layout, served from 127.0.0.1.

Every registered entry (contract test over ``FOUNDATION``) is built tiny (the published module names,
tiny widths), its weights written in the *published* layout (Cell-DINO's chunked DINOv2 blocks,
SubCell's Hugging Face ViT under ``encoder.`` + ``pool_model.``, DINO4Cells' DINO ``teacher``
checkpoint), served over HTTP on 127.0.0.1 and loaded through every path: the published URL (cache),
a URL given as ``weights``, and a local file. Each load must reproduce the source model's features.
"""
from __future__ import annotations

import argparse
import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from hpa.config import ModelConfig
from hpa.errors import HPAError
from hpa.models import build_model
from hpa.models.foundation import FOUNDATION, build_foundation, sha256_of

TINY = dict(embed_dim=32, depth=4, num_heads=2)


# ----------------------------------------------------------------------------- published layouts
def _chunked(sd: dict, depth: int, chunks: int = 4) -> dict:
    """DINOv2 ``block_chunks=4``: block i lives at ``blocks.<i // (depth / 4)>.<i>``; plus mask_token."""
    per = depth // chunks
    out = {"mask_token": torch.zeros(1, sd["cls_token"].shape[-1])}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // per}.{i}." + k.split(".", 2)[2]
        out[k] = v
    return out


_HF = {"attn.proj": "attention.output.dense", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
       "norm1": "layernorm_before", "norm2": "layernorm_after"}


def _hf_subcell(sd: dict) -> dict:
    """SubCell's encoder.pth: transformers-4 ViT names under ``encoder.``; pooler Linear at index 1."""
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    out = {"decoder.decoder_pred.weight": torch.zeros(2, 2)}        # MAE decoder: ignored as SubCell does
    for k, v in sd.items():
        if k.startswith("pool."):
            out["pool_model." + k[5:].replace("_v.0.", "_v.1.").replace("_u.0.", "_u.1.")] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            part, kind = rest.rsplit(".", 1)
            if part == "attn.qkv":
                for name, t in zip(("query", "key", "value"), v.chunk(3)):
                    out[f"encoder.encoder.layer.{i}.attention.attention.{name}.{kind}"] = t
            else:
                out[f"encoder.encoder.layer.{i}.{_HF[part]}.{kind}"] = v
        else:
            out["encoder." + top[k]] = v
    return out


def _dino_teacher(sd: dict) -> dict:
    """A DINO training checkpoint: teacher + student with module.backbone. prefixes, head, args."""
    teacher = {f"module.backbone.{k}": v for k, v in sd.items()}
    teacher["module.head.last_layer.weight_g"] = torch.ones(8, 1)
    return {"teacher": teacher, "student": dict(teacher), "epoch": 3, "args": argparse.Namespace(arch="vit_base")}


PUBLISHED = {"dinov2_chunked": lambda sd: _chunked(sd, TINY["depth"]), "hf_vit_subcell": _hf_subcell,
             "dino_teacher": _dino_teacher}


def tiny_source(name: str, seed: int = 0, img_size: int = 32):
    """A tiny randomly initialised backbone of entry ``name`` and its state dict in the published layout."""
    torch.manual_seed(seed)
    m = build_foundation(name, pretrained=False, img_size=img_size, **TINY).eval()
    with torch.no_grad():       # LayerScale and zero-init tokens would hide a wrong mapping
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = {k[4:] if k.startswith("vit.") else k: v.clone() for k, v in m.state_dict().items()}
    return m, PUBLISHED[FOUNDATION.get(name).remap](sd)


# ----------------------------------------------------------------------------- a file server with Range
class FileServer:
    """Serves ``files`` (url path -> bytes) on 127.0.0.1 with HTTP Range; ``cut_once`` paths send half the
    body on their first request and close; ``ranges`` records the Range headers received."""

    def __init__(self, files: dict[str, bytes], cut_once: set[str] = frozenset()):
        self.files, self.cut_once, self.ranges, self.hits = files, set(cut_once), [], {}
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                data = srv.files.get(self.path)
                srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                srv.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in srv.cut_once:
                    srv.cut_once.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _bytes(obj, tmp_path, name="w.pth") -> bytes:
    p = tmp_path / name
    torch.save(obj, p)
    return p.read_bytes()


def _features(m, x):
    with torch.no_grad():
        return m.eval()(x)


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randint(0, 256, (3, 4, 32, 32)).float()


# ----------------------------------------------------------------------------- every entry, every path
@pytest.mark.parametrize("name", FOUNDATION.names())
def test_every_entry_loads_its_published_layout_through_every_path(name, tmp_path, monkeypatch, images, capsys):
    src, published = tiny_source(name)
    want = _features(src, images)
    data = _bytes(published, tmp_path)
    digest = sha256_of(tmp_path / "w.pth")
    with FileServer({f"/{name}/weights.pth": data}) as srv:
        url = f"{srv.url}/{name}/weights.pth"
        spec = dataclasses.replace(FOUNDATION.get(name), url=url, sha256=digest)
        monkeypatch.setitem(FOUNDATION._items, name, spec)
        cache = tmp_path / "cache"
        # 1. the published URL into the cache, checked against the recorded sha256
        m1 = build_foundation(name, img_size=32, cache_dir=str(cache), progress=False, **TINY)
        assert (cache / name / "weights.pth").is_file()
        # 2. a URL given as weights (another cache), 3. a local file
        m2 = build_foundation(name, weights=url, img_size=32, cache_dir=str(tmp_path / "c2"), progress=False, **TINY)
        m3 = build_foundation(name, weights=str(tmp_path / "w.pth"), sha256=digest, img_size=32,
                              cache_dir=str(cache), progress=False, **TINY)
        # a second use of the cache downloads nothing
        build_foundation(name, img_size=32, cache_dir=str(cache), progress=False, **TINY)
        assert srv.hits[f"/{name}/weights.pth"] == 2
    for m in (m1, m2, m3):
        torch.testing.assert_close(_features(m, images), want)
    assert want.shape == (3, src.num_features)
    # the licence is printed the first time a cache folder sees the model, then not again
    err = capsys.readouterr().err
    assert err.count(f"licence: {spec.title}") == 2          # cache and c2
    if spec.non_commercial:
        assert "NON-COMMERCIAL" in err


@pytest.mark.parametrize("name", FOUNDATION.names())
def test_one_renamed_key_is_refused_naming_the_file_and_the_key(name, tmp_path):
    _, published = tiny_source(name)
    inner = published["teacher"] if "teacher" in published else published
    key = next(k for k in inner if "norm1" in k or "layernorm_before" in k)
    inner[key.replace("norm1", "norm_1").replace("layernorm_before", "layernorm_pre")] = inner.pop(key)
    torch.save(published, tmp_path / "renamed.pth")
    with pytest.raises(HPAError) as e:
        build_foundation(name, weights=str(tmp_path / "renamed.pth"), img_size=32, cache_dir=str(tmp_path), **TINY)
    msg = str(e.value)
    assert str(tmp_path / "renamed.pth") in msg and "missing" in msg and "unexpected" in msg
    assert "\n" not in msg and ("norm_1" in msg or "layernorm_pre" in msg)


def test_positional_embeddings_are_interpolated_for_other_sizes(tmp_path, images):
    src, published = tiny_source("celldino_hpa_sc", img_size=32)        # a 2x2 grid
    torch.save(published, tmp_path / "w.pth")
    m = build_foundation("celldino_hpa_sc", weights=str(tmp_path / "w.pth"), img_size=64,
                         cache_dir=str(tmp_path), **TINY).eval()
    assert m.vit.pos_embed.shape[1] == 1 + 16                             # resampled to 4x4 at load
    big = torch.nn.functional.interpolate(images, size=64)
    assert _features(m, big).shape == (3, 32)
    assert _features(m, images).shape == (3, 32) and _features(m, images[..., :48, :48]).shape == (3, 32)
    # at the grid it was trained at the resampling is exact: same features as the source
    m32 = build_foundation("celldino_hpa_sc", weights=str(tmp_path / "w.pth"), img_size=32,
                           cache_dir=str(tmp_path), **TINY)
    torch.testing.assert_close(_features(m32, images), _features(src, images))


def test_subcell_remap_matches_hugging_face_vit_numerically(tmp_path):
    """The published SubCell encoder is a transformers ViTModel: its last hidden state (after the final
    LayerNorm) must equal our timm model's tokens once loaded through the remap."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                 image_size=32, patch_size=16, num_channels=4, qkv_bias=True,
                                 layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    v4 = {}
    for k, v in hf.state_dict().items():      # transformers 5 names -> the transformers 4 names SubCell saved
        k = (k.replace("layers.", "encoder.layer.").replace("attention.q_proj", "attention.attention.query")
             .replace("attention.k_proj", "attention.attention.key").replace("attention.v_proj", "attention.attention.value")
             .replace("attention.o_proj", "attention.output.dense").replace("mlp.fc1", "intermediate.dense")
             .replace("mlp.fc2", "output.dense"))
        v4["encoder." + k] = v
    pool = build_foundation("subcell_rybg", pretrained=False, img_size=32, embed_dim=32, depth=2, num_heads=2).pool
    v4.update({f"pool_model.{k}": v for k, v in pool.state_dict().items()})
    torch.save(v4, tmp_path / "encoder.pth")
    m = build_foundation("subcell_rybg", weights=str(tmp_path / "encoder.pth"), img_size=32, embed_dim=32,
                         depth=2, num_heads=2, cache_dir=str(tmp_path)).eval()
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m.vit.forward_features(x), hf(pixel_values=x).last_hidden_state,
                                   atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- what is refused, in one line
def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_corrupt_wrong_sha_and_wrong_channels_are_one_line(tmp_path, images):
    name = "dino4cells_hpa_fov"
    with pytest.raises(HPAError) as e:
        build_foundation(name, weights=str(tmp_path / "absent.pth"), **TINY)
    assert "file not found" in _one_line(e) and "absent.pth" in str(e.value)
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HPAError) as e:
        build_foundation(name, weights=str(tmp_path / "corrupt.pth"), cache_dir=str(tmp_path), **TINY)
    assert "corrupt.pth: not a readable PyTorch checkpoint" in _one_line(e)
    _, published = tiny_source(name)
    torch.save(published, tmp_path / "w.pth")
    with pytest.raises(HPAError) as e:
        build_foundation(name, weights=str(tmp_path / "w.pth"), sha256="0" * 64, cache_dir=str(tmp_path), **TINY)
    assert "w.pth: sha256" in _one_line(e) and "differs from the expected 0000" in str(e.value)
    rgb = dict(published["teacher"])
    rgb["module.backbone.patch_embed.proj.weight"] = rgb["module.backbone.patch_embed.proj.weight"][:, :3]
    torch.save({"teacher": rgb}, tmp_path / "rgb.pth")
    with pytest.raises(HPAError) as e:
        build_foundation(name, weights=str(tmp_path / "rgb.pth"), cache_dir=str(tmp_path), img_size=32, **TINY)
    assert "rgb.pth: patch_embed takes 3 input channels; foundation/dino4cells_hpa_fov takes 4" in _one_line(e)
    m = build_foundation(name, pretrained=False, **TINY)
    with pytest.raises(HPAError) as e:
        m(images[:, :3])
    assert "input has shape (3, 3, 32, 32)" in _one_line(e)
    with pytest.raises(HPAError) as e:
        build_foundation(name, pretrained=False, in_chans=3)
    assert "in_chans 3" in _one_line(e)
    with pytest.raises(HPAError) as e:
        build_foundation("celldino_hpa_fov", cache_dir=str(tmp_path))      # no confirmed URL: say so
    assert "no published download URL is confirmed" in _one_line(e)


def test_an_interrupted_download_resumes_and_a_wrong_digest_is_deleted(tmp_path, monkeypatch):
    name = "subcell_bg"
    _, published = tiny_source(name)
    data = _bytes(published, tmp_path)
    with FileServer({"/enc.pth": data, "/bad.pth": data}, cut_once={"/enc.pth"}) as srv:
        monkeypatch.setitem(FOUNDATION._items, name, dataclasses.replace(
            FOUNDATION.get(name), url=f"{srv.url}/enc.pth", sha256=sha256_of(tmp_path / "w.pth")))
        with pytest.raises(HPAError) as e:
            build_foundation(name, cache_dir=str(tmp_path / "c"), progress=False, img_size=32, **TINY)
        assert "rerun to resume" in _one_line(e)
        part = tmp_path / "c" / name / "enc.pth.part"
        have = part.stat().st_size
        assert 0 < have < len(data)
        build_foundation(name, cache_dir=str(tmp_path / "c"), progress=False, img_size=32, **TINY)
        assert srv.ranges[-1] == f"bytes={have}-" and not part.exists()      # only the rest was fetched
        with pytest.raises(HPAError) as e:
            build_foundation(name, weights=f"{srv.url}/bad.pth", sha256="f" * 64, cache_dir=str(tmp_path / "c"),
                             progress=False, img_size=32, **TINY)
        assert "bad.pth: sha256" in _one_line(e) and not (tmp_path / "c" / name / "bad.pth").exists()
    # a cached file changed after its first use no longer matches its pinned digest
    cached = tmp_path / "c" / name / "enc.pth"
    cached.write_bytes(cached.read_bytes()[:-10] + b"0" * 10)
    monkeypatch.setitem(FOUNDATION._items, name, dataclasses.replace(FOUNDATION.get(name), sha256=None))
    with pytest.raises(HPAError) as e:
        build_foundation(name, cache_dir=str(tmp_path / "c"), progress=False, img_size=32, **TINY)
    assert "recorded in enc.pth.sha256 at first use" in _one_line(e)


# ----------------------------------------------------------------------------- through build_model (train.py)
def test_build_model_fine_tunes_a_foundation_backbone_with_layer_decay_and_checkpointing(tmp_path):
    from hpa.config import OptimConfig
    from hpa.optim import build_optimizer

    _, published = tiny_source("celldino_hpa_sc")
    torch.save(published, tmp_path / "w.pth")
    cfg = ModelConfig(name="foundation/celldino_hpa_sc", pretrained=True, weights=str(tmp_path / "w.pth"),
                      grad_checkpointing=True,
                      kwargs=dict(img_size=32, cache_dir=str(tmp_path), **TINY))
    model = build_model(cfg)
    assert model.backbone.vit.grad_checkpointing
    x = torch.randint(0, 256, (2, 4, 32, 32)).float()
    torch.testing.assert_close(model.normalise(x), x)                  # the backbone normalises itself
    opt = build_optimizer(model, OptimConfig(lr=1e-3, layer_decay=0.5))
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    # stem + 4 blocks + final norm + head: 6 decayed groups, the head at full lr, the stem at 0.5 ** 5
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.5 ** 5) and len(scales) == 6
    model(x).sum().backward()
    assert model.backbone.vit.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(HPAError) as e:
        build_model(ModelConfig(name="foundation/nope"))
    assert "unknown foundation backbone 'nope'" in str(e.value)
    with pytest.raises(HPAError, match="model.kwargs: foundation backbones have no parameter 'img_sise'"):
        build_model(ModelConfig(name="foundation/celldino_hpa_sc", kwargs={"img_sise": 32}))
    with pytest.raises(HPAError, match="model.kwargs.depth"):
        build_model(ModelConfig(name="foundation/celldino_hpa_sc", kwargs={"depth": "deep"}))


def test_train_py_fine_tunes_a_foundation_backbone_with_a_frozen_warm_up(tiny_experiment, tmp_path):
    """One epoch of train.py with the backbone frozen: the head learns, the published weights stay."""
    from hpa.config import load_config
    from hpa.rundir import load_checkpoint
    from hpa.training.run import run

    _, published = tiny_source("dino4cells_hpa_fov")
    torch.save(published, tmp_path / "w.pth")
    path = tiny_experiment(tmp_path, 2, {"epochs": 1, "batch_size": 16, "num_workers": 0,
                                         "freeze_backbone_epochs": 1},
                           model={"name": "foundation/dino4cells_hpa_fov", "pretrained": True,
                                  "weights": str(tmp_path / "w.pth"),
                                  "kwargs": {"img_size": 32, "cache_dir": str(tmp_path / "m"), **TINY}},
                           optim={"lr": 0.01, "layer_decay": 0.75}, loss=[{"name": "bce"}])
    cfg = load_config(path)
    run(cfg, folds=[0])
    state = load_checkpoint(cfg.run_dir / "fold0" / "last.pt")["model"]
    src = {k: v for k, v in published["teacher"].items() if "head." not in k}
    for k, v in src.items():
        torch.testing.assert_close(state["backbone.vit." + k[len("module.backbone."):]], v)
    fresh = build_model(cfg.model)
    assert not torch.equal(state["head.fc.weight"], fresh.head.fc.weight)


def test_readme_table_is_generated_from_the_registry():
    from pathlib import Path

    from hpa.bench.foundation_rows import readme_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- foundation-table:start -->\n")[1].split("\n<!-- foundation-table:end -->")[0]
    assert block == readme_table()
    assert all(f"`foundation/{n}`" in block for n in FOUNDATION.names())
    assert block.count("**non-commercial**") == sum(bool(FOUNDATION.get(n).non_commercial) for n in FOUNDATION.names())


def test_pools_are_the_class_token_the_patch_mean_or_both(images):
    torch.manual_seed(0)
    m = build_foundation("dino4cells_hpa_fov", pretrained=False, pool="cls+avg", img_size=32, **TINY).eval()
    with torch.no_grad():
        tokens = m.vit.forward_features(m.prepare(images))
        torch.testing.assert_close(m(images), torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1))
    assert m.num_features == 2 * TINY["embed_dim"]
    with pytest.raises(HPAError, match="pool 'gated' not one of cls, avg, cls\\+avg"):
        build_foundation("dino4cells_hpa_fov", pretrained=False, pool="gated", **TINY)
