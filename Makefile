# `make test` and `make demo` create (or reuse) the local virtual environment .venv and install
# what they need; neither asks anything. Set PYTHON=python3.11 to choose the interpreter.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hpa-installed
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_CFG ?= configs/demo.yaml

.PHONY: venv test test-fast demo demo-main demo-extras clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

# The main job, end to end on the demo data: dataset -> folds -> 5-fold training -> thresholds ->
# submission -> validation -> score against the demo's hidden test labels; then the extras the
# notebooks show: a second (smaller) run and their ensemble, and a tiny diffusion generator with its
# images and report (pipeline demo only: a CPU-sized DDPM makes noise-like images, see docs/synth.md).
# Re-running resumes: the dataset is kept and finished folds are skipped (`make clean-demo` restarts).
demo: demo-main demo-extras

demo-main: venv
	test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	$(PY) -m hpa folds --config $(DEMO_CFG)
	$(PY) train.py --config $(DEMO_CFG) --resume
	$(PY) -m hpa thresholds --config $(DEMO_CFG)
	$(PY) infer.py --config $(DEMO_CFG) --out submissions/demo.csv
	$(PY) -m hpa validate submissions/demo.csv --sample input/demo/sample_submission.csv
	$(PY) -m hpa score --submission submissions/demo.csv --labels input/demo/test_labels.csv

SMALL := --set name=demo_seed1 --set seed=1 --set data.image_size=32 --set train.epochs=4
demo-extras: venv
	$(PY) train.py --config $(DEMO_CFG) --resume $(SMALL)
	$(PY) -m hpa thresholds --config $(DEMO_CFG) $(SMALL)
	$(PY) infer.py --config $(DEMO_CFG) $(SMALL) --out submissions/demo_seed1.csv
	$(PY) infer.py --ensemble configs/ensemble_demo.yaml
	$(PY) -m hpa score --submission submissions/ensemble_demo.csv --labels input/demo/test_labels.csv
	$(PY) -m hpa synth train --config configs/synth/ddpm_demo.yaml --fold 0 --set train.steps=60 --set train.batch_size=16
	$(PY) -m hpa synth generate --config configs/synth/ddpm_demo.yaml --fold 0 --mode sdedit --n 48 --sampler dpmpp --steps 10
	$(PY) -m hpa synth filter --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo --fold 0 --drop 0.2
	$(PY) -m hpa synth report --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo --fold 0

clean-demo:
	rm -rf input/demo input/cache input/synth/ddpm_demo runs/demo runs/demo_seed1 runs/ensemble_demo runs/synth/ddpm_demo submissions/demo*.csv submissions/ensemble_demo.csv
