#!/usr/bin/env bash
# The first GPU run in one command, on a GPU host whose image has jax (CUDA), flax, optax and orbax
# but not the rest: install the missing packages from the wheels carried in .whl/ (no network
# needed; skipped when they import already), then benchmarks/gpu_check.py. From the repository root:
#   bash benchmarks/fetch_wheels.sh            # here, with the package index: writes .whl/
#   bash benchmarks/gpu_check.sh OUT           # there: paper size, about 8 minutes
#   SIZE=tiny bash benchmarks/gpu_check.sh OUT # the same parts at :tiny (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check}"
if ! python3 -c "import diffusers, grain, ml_collections, openpyxl, tensorboardX" 2>/dev/null; then
  compgen -G ".whl/*.whl" >/dev/null || { echo "error: packages missing and no .whl/ (run benchmarks/fetch_wheels.sh)" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
exec python3 benchmarks/gpu_check.py --out "$OUT" --size "${SIZE:-paper}"
