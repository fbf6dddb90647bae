#!/usr/bin/env bash
# The GPU path in one command, under 8 minutes on one H200 (docs/performance.md, "GPU check"), then the
# embedding step (bench row 8, hpa embed vs a bare forward of a foundation ViT-L, under a minute):
#   bash tools/gpu_check.sh                                    # CUDA -> benchmarks/gpu-<date>.{json,md,png}
#   bash tools/gpu_check.sh --device cpu --quick --out DIR     # tiny sizes on the CPU (tests/test_bench.py)
# Extra arguments go to `hpa bench --rows gpu` (--budget SECONDS, --parts peak,loader,train,compile,generate).
# The report goes to $OUT when set (the device tool brings that folder back), else benchmarks/; it is
# rewritten after every part, so a run stopped early keeps what it measured. When the interpreter lacks
# the packages the device image does not have, they are installed from the wheels in .whl/
# (tools/gpu_wheels.sh fetches them on a machine with network) into /tmp/hpa-site.
set -uo pipefail
cd "$(dirname "$0")/.."
# no network calls: albumentations asks PyPI for updates on import (2 s timeout); nothing needs the hub
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import albumentations, diffusers, iterstrat, imagehash" 2>/dev/null; then
  if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hpa-site \
      .whl/*.whl || { echo "error: installing .whl/ failed" >&2; exit 3; }
    export PYTHONPATH=/tmp/hpa-site${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "import albumentations, diffusers, iterstrat, imagehash" || { echo "error: .whl/ did not suffice" >&2; exit 3; }
  else
    echo "error: $PY lacks albumentations/diffusers/iterstrat/imagehash and .whl/ has no wheels (run tools/gpu_wheels.sh)" >&2
    exit 3
  fi
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUTDIR=${OUT:-benchmarks}
prev=""
for a in "$@"; do [ "$prev" = "--out" ] && OUTDIR=$a; prev=$a; done   # an explicit --out wins
mkdir -p "$OUTDIR"
device=()
case " $* " in *" --device "*) ;; *) device=(--device cuda) ;; esac
if command -v nvidia-smi > /dev/null; then   # read-only: what the card looked like when measured
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu,power.draw \
    --format=csv 2>&1 | tee "$OUTDIR/gpu-smi.csv"
fi
# a last guard: the parts keep to --budget, this stops anything that does not (the report is already written)
timeout -k 15 "${GPU_CHECK_SECONDS:-450}" "$PY" -m hpa bench --rows gpu --out "$OUTDIR" "${device[@]}" "$@" 2>&1 \
  | tee "$OUTDIR/gpu-check.log"
rc=${PIPESTATUS[0]}
# embed step: `hpa embed`'s batch path (uint8 -> device -> per-image normalisation -> ViT -> pooling -> host)
# against a bare forward of the same backbone, Cell-DINO's ViT-L/16 at its published size and 224 px in
# bf16 + channels-last (random weights: nothing is downloaded); its own report in $OUTDIR/embed/
passthrough=()
for a in "$@"; do case "$a" in --quick|cpu|cuda) passthrough+=("$a") ;; --device) passthrough+=("$a") ;; esac; done
mkdir -p "$OUTDIR/embed"
timeout -k 15 "${GPU_EMBED_SECONDS:-120}" "$PY" -m hpa bench --rows embed --out "$OUTDIR/embed" \
  "${device[@]}" "${passthrough[@]}" 2>&1 | tee "$OUTDIR/embed/embed.log"
erc=${PIPESTATUS[0]}
[ "$rc" -ne 0 ] && exit "$rc"
exit "$erc"
