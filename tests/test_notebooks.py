"""The notebooks run top to bottom (nbclient) on a tiny fake demo run, and are committed clean."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from test_reports import make_fake_run, make_fake_synth

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_eda.ipynb", "02_cv_and_thresholds.ipynb", "03_synthetic.ipynb", "04_ensemble.ipynb"]
# figures each notebook must show when every input exists
FIGURES = {"01_eda.ipynb": 5, "02_cv_and_thresholds.ipynb": 5, "03_synthetic.ipynb": 4, "04_ensemble.ipynb": 3}


def test_committed_notebooks_are_clean_and_parameterised():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name} holds outputs"
        assert "HPA_NB_PATHS" in code[0].source and "Makefile" in code[0].source, name
        assert isinstance(_defaults(name), dict), name      # one literal dict P holds every path


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec that starts this interpreter (the venv's), found through JUPYTER_PATH."""
    d = tmp_path_factory.mktemp("jupyter")
    spec = d / "kernels" / "hpa-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hpa venv", "language": "python"}))
    return d


@pytest.fixture(scope="module")
def nb_params(tiny_demo, tmp_path_factory) -> dict[str, dict]:
    """HPA_NB_PATHS of each notebook, pointing at fake outputs of every stage."""
    root = tmp_path_factory.mktemp("nbdemo")
    run = make_fake_run(root / "runs" / "demo", tiny_demo, seed=0, with_model=True)
    run2 = make_fake_run(root / "runs" / "demo_seed1", tiny_demo, seed=1)
    synth = make_fake_synth(root / "synth" / "ddpm_demo", tiny_demo)
    ens = root / "ensemble_demo.yaml"
    ens.write_text(f"runs:\n  - {{dir: {run}, weight: 1.0}}\n  - {{dir: {run2}, weight: 1.0}}\nblend: mean\n")
    sub = root / "demo.csv"
    sample = pd.read_csv(tiny_demo / "sample_submission.csv", dtype=str)
    sample.assign(Predicted=["0 25" if i % 2 else "25" for i in range(len(sample))]).to_csv(sub, index=False)
    return {
        "01_eda.ipynb": {"data": str(tiny_demo), "example_classes": [0, 8, 27], "stats_images": 8},
        "02_cv_and_thresholds.ipynb": {"run": str(run), "curve_classes": list(range(7)),
                                       "strategies": ["global", "per_class"]},
        "03_synthetic.ipynb": {"synth": str(synth), "data": str(tiny_demo), "run": str(run), "per_class": 2},
        "04_ensemble.ipynb": {"ensemble": str(ens), "submissions": [str(root / "none.csv"), str(sub)],
                              "data": str(tiny_demo), "weight_steps": 3},
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, nb_params, kernel_env, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_env))
    monkeypatch.setenv("HPA_NB_PATHS", json.dumps(nb_params[name]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # raises CellExecutionError (with the cell and traceback) on the first failing cell
    NotebookClient(nb, kernel_name="hpa-venv", timeout=300,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert "skipped" not in text, text            # every input exists: nothing may be skipped
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures == FIGURES[name], f"{name}: {figures} figures shown"
    assert json.loads(text[text.index("{"):text.index("}") + 1]) == {**_defaults(name), **nb_params[name]}


def _defaults(name: str) -> dict:
    """The notebook's own default parameters (the dict literal P in its first code cell)."""
    import ast
    src = next(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code")
    start = src.index("P = {") + 4
    return ast.literal_eval(src[start:src.index("\n}", start) + 2])
