# `make test` and `make demo` create (or reuse) the local virtual environment .venv and install
# what they need; neither asks anything. Set PYTHON=python3.11 to choose the interpreter.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hpa-installed
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO_CFG ?= configs/demo.yaml

.PHONY: venv test test-fast demo demo-main demo-extras demo-external synth-demo synth-tour ablation ablation-synth reproduce-lincao clean-demo scale-run gpu-check

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
# images and report (pipeline demo only: 60 training steps; `make synth-demo` trains it fully), and
# linear / MLP probes on the demo CNN's frozen features (hpa probe, configs/demo_probe.yaml; seconds).
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

# the demo's quick 60-step generator lives apart from the full one (runs/synth, make synth-demo)
SYNTH := --config configs/synth/ddpm_demo.yaml --fold 0
QUICK := --set models_dir=runs/synth_quick
SMALL := --set name=demo_seed1 --set seed=1 --set data.image_size=32 --set train.epochs=4
demo-extras: venv
	$(PY) train.py --config $(DEMO_CFG) --resume $(SMALL)
	$(PY) -m hpa thresholds --config $(DEMO_CFG) $(SMALL)
	$(PY) infer.py --config $(DEMO_CFG) $(SMALL) --out submissions/demo_seed1.csv
	$(PY) infer.py --ensemble configs/ensemble_demo.yaml
	$(PY) -m hpa score --submission submissions/ensemble_demo.csv --labels input/demo/test_labels.csv
	$(PY) -m hpa synth train $(SYNTH) $(QUICK) --set train.steps=60
	$(PY) -m hpa synth generate $(SYNTH) $(QUICK) --mode sdedit --n 48 --sampler dpmpp --steps 10
	$(PY) -m hpa synth filter --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo --fold 0 --drop 0.2
	$(PY) -m hpa synth report --manifest input/synth/ddpm_demo/manifest.csv --run runs/demo --fold 0
	$(PY) -m hpa probe --config configs/demo_probe.yaml --out submissions/demo_probe.csv
	$(PY) -m hpa score --submission submissions/demo_probe_linear.csv --labels input/demo/test_labels.csv
	$(PY) -m hpa score --submission submissions/demo_probe_mlp.csv --labels input/demo/test_labels.csv

# External data on the demo: an HPAv18-style folder beside input/demo (300 colour JPEG samples, both
# file-name forms, planted near-duplicates of demo train and test images), the leak report that must
# find exactly the planted twins (reports/leak_demo/), a label file without the test twins, and
# duplicate-aware folds over train + HPAv18 (input/demo/folds_external.csv, groups in duplicates.csv),
# then the demo trained with the external images (configs/demo_external.yaml), thresholds, prediction
# and its test score (compare with make demo-main's, or with demo.yaml on the same folds: README).
EXT := --external-csv input/demo/hpav18.csv --external-dir input/demo/hpav18
EXT_CFG := configs/demo_external.yaml
demo-external: venv
	test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	test -f input/demo/hpav18.csv || $(PY) -m hpa demo-data --out input/demo --external 300
	$(PY) -m hpa leak-report --config $(DEMO_CFG) $(EXT) --out reports/leak_demo \
	  --planted input/demo/hpav18_planted.csv --drop-test-duplicates input/demo/hpav18_no_test.csv
	$(PY) -m hpa folds --config $(EXT_CFG)
	$(PY) train.py --config $(EXT_CFG) --resume
	$(PY) -m hpa thresholds --config $(EXT_CFG)
	$(PY) infer.py --config $(EXT_CFG) --out submissions/demo_external.csv
	$(PY) -m hpa score --submission submissions/demo_external.csv --labels input/demo/test_labels.csv

# The demo DDPM at full length (~6 min on 2 idle cores) and its label-agreement report (docs/synth.md);
# needs runs/demo from `make demo-main` as the judge.
MORPH := --config configs/synth/morph_demo.yaml --fold 0
synth-demo: venv
	test -f runs/synth/morph_demo/fold0/generator.json || $(PY) -m hpa synth train $(MORPH)
	$(PY) -m hpa synth generate $(MORPH) --mode noise --n 96 --out input/synth/morph_demo_fold0_noise
	$(PY) -m hpa synth report --manifest input/synth/morph_demo_fold0_noise/manifest.csv --run runs/demo --fold 0

# Issue 27's study (configs/ablation_synth_demo.yaml): pools for the quota arms (--balance-to 40 on
# fold 0), the filtered pool, then 84 cells in 2 parallel shards and the report with intervals.
# Estimated 60-70 CPU minutes (one 100% cell: ~55 CPU s); needs `make demo-main` and `make synth-demo`.
# the full design by default; ABLATION_CFG=configs/ablation_synth_demo_short.yaml is the short study in docs/synth.md
# (25 min wall for its 36 cells on 2 cores beside other work, plus ~9 min for the pools); needs make synth-demo first
ABLATION_CFG ?= configs/ablation_synth_demo.yaml
ablation-synth: venv
	$(PY) -m hpa synth train --config configs/synth/standin_demo.yaml --fold 0
	$(PY) -m hpa synth generate --config configs/synth/standin_demo.yaml --fold 0 --balance-to 40 \
	  --out input/synth/standin_demo_fold0_balance40
	$(PY) -m hpa synth generate $(MORPH) --mode noise --balance-to 40 --out input/synth/morph_demo_fold0_balance40
	$(PY) -m hpa synth filter --manifest input/synth/morph_demo_fold0_balance40/manifest.csv --run runs/demo \
	  --fold 0 --drop 0.2
	$(PY) -m hpa ablate --config $(ABLATION_CFG) --shard 0/2 & \
	  $(PY) -m hpa ablate --config $(ABLATION_CFG) --shard 1/2; wait
	$(PY) -m hpa ablate --config $(ABLATION_CFG)

# Every generator in every mode and every sampler, on the demo data, with short trainings (a
# pipeline tour, not a quality run: ~6 min on 2 cores). Generators go to runs/synth_tour/, images to
# input/synth/tour/<generator>_<mode>[_<sampler>]/; sd_lora uses the tiny offline model of
# `hpa synth tiny-sd` in place of real Stable Diffusion weights (LCM needs an LCM-distilled UNet).
TOUR = --fold 0 --set models_dir=runs/synth_tour
TOUR_GEN = --n 4 --steps 4 --batch-size 4
synth-tour: venv
	test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	$(PY) -m hpa folds --config $(DEMO_CFG)
	test -f models/tiny-sd/model_index.json || $(PY) -m hpa synth tiny-sd --out models/tiny-sd
	for g in ddpm ddpm_simple morph sd_lora; do \
	  C="--config configs/synth/$${g}_demo.yaml $(TOUR)"; \
	  $(PY) -m hpa synth train $$C --set train.steps=8 --set train.batch_size=8 || exit 1; \
	  modes="noise sdedit mix invert interp"; test $$g = sd_lora && modes="$$modes prompt_mix"; \
	  for m in $$modes; do \
	    $(PY) -m hpa synth generate $$C --mode $$m $(TOUR_GEN) --out input/synth/tour/$${g}_$$m || exit 1; \
	  done; \
	done
	$(PY) -m hpa synth generate --config configs/synth/ddpm_demo.yaml $(TOUR) --mode invert --relabel \
	  $(TOUR_GEN) --out input/synth/tour/ddpm_invert_relabel
	for s in ddpm ddim dpmpp; do \
	  $(PY) -m hpa synth generate --config configs/synth/ddpm_demo.yaml $(TOUR) --mode noise --sampler $$s \
	    $(TOUR_GEN) --out input/synth/tour/ddpm_noise_$$s || exit 1; \
	done

# The synthetic-data ablation of the README (configs/ablation_demo.yaml): a generator per held-out
# fold (0 and 1), its class-conditional samples and SDEdit variants, then the grid (~50 min, 2 cores).
ablation: venv
	test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	$(PY) -m hpa folds --config $(DEMO_CFG)
	for k in 0 1; do \
	  S="--config configs/synth/ddpm_demo.yaml --fold $$k"; \
	  test -f runs/synth/ddpm_demo/fold$$k/generator.json || $(PY) -m hpa synth train $$S || exit 1; \
	  $(PY) -m hpa synth generate $$S --mode noise --n 647 --out input/synth/ddpm_demo_fold$${k}_noise || exit 1; \
	  $(PY) -m hpa synth generate $$S --mode sdedit --n 647 --strength 0.75 \
	    --out input/synth/ddpm_demo_fold$${k}_sdedit || exit 1; \
	done
	$(PY) -m hpa ablate --config configs/ablation_demo.yaml

# Lin & Cao end to end (tools/reproduce_lincao.py): their simplified DDPM, 384 images per class (demo:
# 24), ResNet18 baseline, Mix Loss and Mix Representation, on their 90/10 split and our 5-fold split;
# prints their table with the paper's figures beside ours. Demo scale on the CPU by default;
# LINCAO_SCALE=real: the real data (hpa download first) and their sizes, on a GPU.
LINCAO_SCALE ?= demo
reproduce-lincao: venv
	test "$(LINCAO_SCALE)" != demo || test -f input/demo/train.csv || $(PY) -m hpa demo-data --out input/demo
	$(PY) tools/reproduce_lincao.py --scale $(LINCAO_SCALE)

clean-demo:
	rm -rf runs/lincao input/synth/lincao_* input/demo input/cache input/synth/ddpm_demo input/synth/ddpm_demo_fold0_* runs/demo runs/demo_seed1 runs/ensemble_demo runs/synth/ddpm_demo runs/synth_quick runs/synth_tour input/synth/tour submissions/demo*.csv submissions/ensemble_demo.csv

# The whole pipeline at the real data's scale (the real 31,072 + 11,702 Ids from ../shared/hpa, tiny
# images), each stage timed against a tenth of the Ids, and the 512 px projections (docs/performance.md;
# ~20 min on 2 busy cores): benchmarks/scale-<date>.{json,md,png}
scale-run: venv
	$(PY) -m hpa bench --rows scale --out benchmarks/

# The GPU check on one CUDA GPU (under 8 minutes on an H200): benchmarks/gpu-<date>.{json,md,png}
gpu-check: venv
	PYTHON=$(PY) bash tools/gpu_check.sh
