"""The generator interface: every registered generator against the protocol, the one list of modes, the
stand-in as a generator (same bytes as the ablation's stand-ins), and offline refusal of an incomplete
generator folder."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpa.cli import build_parser, run_command
from hpa.data.images import read_kaggle_rgby
from hpa.errors import HPAError
from hpa.synthetic.config import load_synth_config
from hpa.synthetic.generate import generate
from hpa.synthetic.manifest import read_manifest
from hpa.synthetic.modes import MODES, ModeOptions
from hpa.synthetic.protocol import GENERATORS, Generator, generator_class, load_generator, train_generator
from hpa.synthetic.standin import make_standin, perturb

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_generator_implements_the_protocol():
    for name in GENERATORS:
        cls = generator_class(name)
        assert issubclass(cls, Generator) and cls.kind == name
        assert cls.modes and set(cls.modes) <= set(MODES), name
        assert not getattr(cls, "__abstractmethods__", None), name
    assert generator_class("morph").source_stains == (0, 2, 3)
    assert generator_class("standin").modes == ("perturb",)
    assert "prompt_mix" in generator_class("sd_lora").modes and "prompt_mix" not in generator_class("ddpm").modes


def test_no_generator_name_checks_outside_the_generators():
    """Capabilities are class attributes: nothing in hpa.synthetic branches on a generator's name."""
    pattern = re.compile(r"""(kind|generator)\s*[!=]=|[!=]=\s*["'](ddpm|ddpm_simple|morph|sd_lora|standin)["']""")
    hits = [f"{p.name}:{i}" for p in sorted((ROOT / "src/hpa/synth").glob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_one_list_of_modes_feeds_the_cli_and_the_docs():
    parser, _ = build_parser("synth")
    gen = parser._subparsers._group_actions[0].choices["generate"]
    mode = next(a for a in gen._actions if a.dest == "mode")
    assert mode.choices == list(MODES) and mode.default is None
    doc = (ROOT / "docs/synth.md").read_text()
    table = re.findall(r"^\| `(\w+)` \| (.+) \| (.+) \|$", doc.split("| mode | what | papers |")[1].split("\n\n")[0],
                       re.M)
    assert [(n, h, p) for n, h, p in table] == [(n, m.help, m.papers) for n, m in MODES.items()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, make_random_dataset):
    """18 random 24 px images, 3 folds (fold = i % 3)."""
    root = tmp_path_factory.mktemp("standin")
    make_random_dataset(root, 18, 24, [f"{i % 4} 25" if i % 3 else str(i % 5) for i in range(18)], 3)
    return root


def test_standin_generator_equals_the_ablation_path_and_keeps_its_rng(data_root, tmp_path):
    cfg = load_synth_config(None, ["generator=standin", "name=standin", f"data.root={data_root}",
                                   f"models_dir={tmp_path}/m"])
    gen = load_generator(train_generator(cfg, "1"))
    assert gen.size == 24 and gen.meta["generator_trained_on"] == "0 2"
    generate(cfg, gen, ModeOptions(mode="perturb"), 14, 0, tmp_path / "cli", batch_size=5)
    fold_of = pd.read_csv(data_root / "folds.csv").set_index("Id")["fold"]
    ab = read_manifest(make_standin(data_root, fold_of, tmp_path / "ab", held_out=1, per_image=2))
    cli = read_manifest(tmp_path / "cli" / "manifest.csv")
    # 12 training images: images 12 and 13 are second copies of the first two
    assert cli["Id"].tolist()[:2] == ["syn-standin-f1-00000-0", "syn-standin-f1-00001-0"]
    assert cli["Id"].tolist()[12:] == ["syn-standin-f1-00000-1", "syn-standin-f1-00001-1"]
    assert len(ab) == 24 and set(cli["Id"]) < set(ab["Id"])
    assert set(cli["mode"]) == {"perturb"} and set(cli["generator"]) == {"standin"}
    assert (cli[["strength", "steps", "guidance", "seed"]].values == [0.0, 0, 1.0, 0]).all()
    assert not fold_of[cli["source_id"]].eq(1).any() and cli["source_id"].nunique() == 12
    for row in cli.itertuples():
        img = read_kaggle_rgby(tmp_path / "cli" / "train", row.Id)
        assert np.array_equal(img, read_kaggle_rgby(tmp_path / "ab" / "train", row.Id))
        k, j = (int(v) for v in row.Id.split("-")[-2:])
        # the stand-in's randomness (and so the ablation's stand-in cells) is keyed as before
        want = perturb(read_kaggle_rgby(data_root / "train", row.source_id), np.random.default_rng([0, 1, k, j]))
        assert np.array_equal(img, want) and row.labels == sorted(int(t) for t in row.Target.split())
    with pytest.raises(HPAError, match=r"mode 'noise' is not available for standin \(valid: perturb\)"):
        generate(cfg, gen, ModeOptions(mode="noise"), 1, 0, tmp_path / "x")
    assert not (tmp_path / "x").exists()                       # refused before the folder is made


def _folder(path: Path, kind: str, **meta) -> Path:
    path.mkdir(parents=True)
    (path / "generator.json").write_text(json.dumps({"generator": kind, "fold": "0",
                                                     "generator_trained_on": "1 2", **meta}))
    (path / "train_ids.csv").write_text("Id,Target\na,0\n")
    return path


def test_incomplete_generator_folder_names_the_missing_file_offline(tmp_path, monkeypatch):
    import huggingface_hub

    def no_hub(*a, **k):
        raise AssertionError("the model hub was asked")
    for fn in ("hf_hub_download", "snapshot_download", "model_info"):
        monkeypatch.setattr(huggingface_hub, fn, no_hub)
    d = _folder(tmp_path / "ddpm", "ddpm")
    with pytest.raises(HPAError) as e:
        load_generator(d)
    assert str(e.value) == f"{d}/denoiser: missing (not a trained generator folder)"
    (d / "denoiser").mkdir()
    with pytest.raises(HPAError, match=re.escape(f"{d}/denoiser/config.json: missing")):
        load_generator(d)
    sd = _folder(tmp_path / "sd", "sd_lora", textual_inversion=True, pretrained="x", image_size=32)
    with pytest.raises(HPAError, match=re.escape(f"{sd}/lora: missing (not a trained generator folder)")):
        load_generator(sd)
    (sd / "lora").mkdir()
    (sd / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    with pytest.raises(HPAError, match=re.escape(f"{sd}/tokens.pt: missing (not a trained generator folder)")):
        load_generator(sd)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "generator.json").write_text("{not json")
    with pytest.raises(HPAError, match="generator.json: not valid JSON"):
        load_generator(tmp_path / "bad")
    with pytest.raises(HPAError, match=re.escape(f"{tmp_path}/none/generator.json: missing (not a trained generator")):
        load_generator(tmp_path / "none")


def test_pretrained_and_lcm_paths_that_hold_no_model_are_refused_offline(tmp_path):
    from hpa.synthetic.sd_lora import check_local_model, load_pipeline
    (tmp_path / "empty").mkdir()
    with pytest.raises(HPAError) as e:
        load_pipeline(str(tmp_path / "empty"))
    assert str(e.value) == (f"model.pretrained: {tmp_path}/empty/model_index.json: missing "
                            "(not a diffusers pipeline folder)")
    with pytest.raises(HPAError, match=re.escape(f"model.pretrained: {tmp_path}/gone: missing (no such folder)")):
        load_pipeline(str(tmp_path / "gone"))
    with pytest.raises(HPAError, match=re.escape(f"model.lcm_weights: {tmp_path}/empty/config.json: missing")):
        check_local_model(str(tmp_path / "empty"), "model.lcm_weights", "config.json", "a diffusers UNet folder")
    check_local_model("owner/model", "model.pretrained", "model_index.json", "x")     # a hub id passes


def test_cli_generate_from_a_folder_without_denoiser_is_one_line_exit_2(tmp_path, capsys):
    d = _folder(tmp_path / "runs/synth/x/fold0", "ddpm")
    (tmp_path / "g.yaml").write_text(f"generator: ddpm\ndata:\n  root: {tmp_path}\n")
    rc = run_command("synth", ["generate", "--config", str(tmp_path / "g.yaml"), "--model", str(d),
                               "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2 and capsys.readouterr().err == f"error: {d}/denoiser: missing (not a trained generator folder)\n"
    assert not (tmp_path / "o").exists()
