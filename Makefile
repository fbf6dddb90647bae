# `make test` and `make demo` create (or reuse) the local virtual environment .venv and install
# what they need; neither asks anything. Set PYTHON=python3.11 to choose the interpreter.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hpa-installed
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_CFG ?= configs/demo.yaml

.PHONY: venv test test-fast demo clean-demo

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
# submission -> validation -> score against the demo's hidden test labels. Re-running resumes:
# the dataset is kept and finished folds are skipped (`make clean-demo` starts afresh).
demo: venv
	test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	$(PY) -m hpa folds --config $(DEMO_CFG)
	$(PY) train.py --config $(DEMO_CFG) --resume
	$(PY) -m hpa thresholds --config $(DEMO_CFG)
	$(PY) infer.py --config $(DEMO_CFG) --out submissions/demo.csv
	$(PY) -m hpa validate submissions/demo.csv --sample input/demo/sample_submission.csv
	$(PY) -m hpa score --submission submissions/demo.csv --labels input/demo/test_labels.csv

clean-demo:
	rm -rf input/demo input/cache runs/demo submissions/demo.csv
