#!/usr/bin/env bash
# hyperlt's whole GPU measurement in one command, for one short window on an H100/H200 (under 8 minutes):
# step time of each expert form in float32 and bfloat16, T=3 over T=1, the CIFAR-10-LT IR100 recipe trained
# for as many epochs as fit (accuracy, 200-epoch time), evaluation images/s, a 231-preference sweep over
# one preference, and the official SADE/PRL PyTorch step on the same GPU. One JSON: $OUT/gpu_run_gpu.json
# (or benchmarks/results/ where $OUT is unset); rewritten after every phase, so a timeout keeps what finished.
#
# Prepare here, once (all three land in git-ignored folders):
#   python benchmarks/make_subset.py          # benchmarks/.carry/cifar10_lt_ir100.npz (43 MB)
#   bash benchmarks/setup_official.sh --no-venv  # benchmarks/.official/{SADE-AgnosticLT,PRL} (model/ only)
#   bash benchmarks/fetch_wheels.sh           # .whl/: what the GPU machine lacks (ml_collections)
# Then, with the device tool: run(command="bash benchmarks/gpu.sh", timeout_s=540,
#   carry=[".whl", "benchmarks/.carry", "benchmarks/.official"]).
#
# Arguments go to benchmarks/gpu_run.py (--cpu: the tiny CPU mode the test suite runs; --out DIR; ...).
# Environment: PYTHON (default python3), GPU_RUN_TIMEOUT (seconds, default 465),
# XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.45: JAX and PyTorch share the GPU in one process).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"

# Carried wheels, installed only for distributions this machine lacks.
site="${TMPDIR:-/tmp}/hyperlt-carried-site"
missing=()
for wheel in .whl/*.whl; do
  [[ -e "$wheel" ]] || continue
  dist="$(basename "$wheel" | cut -d- -f1)"
  "$python" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$dist" 2>/dev/null || missing+=("$wheel")
done
if (( ${#missing[@]} )); then
  echo "gpu.sh: installing ${missing[*]}"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "${missing[@]}" || exit 1
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
out="${OUT:-benchmarks/results}"
cache="${TMPDIR:-/tmp}/hyperlt-jax-cache"
cache_args=(--compile-cache "$cache")   # a rerun on a warm machine skips compilation
for arg in "$@"; do [[ "$arg" == --cpu ]] && cache_args=(); done
exec timeout --signal=TERM --kill-after=15 "${GPU_RUN_TIMEOUT:-465}" \
  "$python" benchmarks/gpu_run.py --out "$out" "${cache_args[@]}" "$@"
