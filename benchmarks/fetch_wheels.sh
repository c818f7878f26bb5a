#!/usr/bin/env bash
# Download into .whl/ the wheels benchmarks/gpu_check.sh installs on a GPU host without network:
# the packages its image lacks, at the versions installed here, for its Python (3.12 by default,
# PYTHON_VERSION=3.11 ...). From the repository root: bash benchmarks/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON_VERSION:-3.12}"
# What the package needs beyond jax, flax, optax, orbax, numpy, opencv, pillow, matplotlib, scikit-learn,
# tqdm, safetensors, absl-py, etils and protobuf, which the GPU image has.
NEEDED="diffusers grain portpicker array_record ml_collections openpyxl et_xmlfile tensorboardX importlib_metadata"
mkdir -p .whl
for name in $NEEDED; do
  version="$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
  spec="$name${version:+==$version}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
ls -l .whl
