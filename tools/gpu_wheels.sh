#!/usr/bin/env bash
# Fetch into .whl/ the wheels that tools/gpu_check.sh needs and this workplace's H200 image lacks
# (its python3 is 3.12 on x86-64 with torch, timm, accelerate, peft, transformers, opencv, scikit-learn,
# pandas, matplotlib already; /work/.library/device/KINDS.md). Run it here, where pip reaches the
# registry; the device command then carries .whl (git-ignored through .git/info/exclude):
#   bash tools/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
PY=${PYTHON:-.venv/bin/python}
# the project's pins (requirements.txt) and, with --no-deps, each of their requirements the image lacks
WHEELS=(albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing_extensions==4.16.0 simsimd==6.5.16 stringzilla==5.3.2
        diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 zipp==4.1.2
        ImageHash==4.3.2 PyWavelets==1.9.0 iterative-stratification==0.1.9)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
du -sh .whl
