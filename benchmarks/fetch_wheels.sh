#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels that the device tool's H100/H200 machine lacks for hyperlt,
# for its Python 3.12 on x86-64; benchmarks/gpu.sh installs them there. That machine has no network.
#
# Its package list (/work/.library/device/KINDS.md) holds jax, flax, optax, orbax-checkpoint, chex, numpy,
# scikit-learn, matplotlib, tqdm, pillow, filelock, absl-py and PyYAML; of hyperlt's imports only
# ml_collections is missing (its own needs, absl-py and PyYAML, are there). tensorflow-datasets is only
# imported for tfds: sources, which the GPU run does not use.
#
#   bash benchmarks/fetch_wheels.sh                      # ml_collections at the version installed here
#   bash benchmarks/fetch_wheels.sh NAME==VERSION ...    # others
set -euo pipefail
cd "$(dirname "$0")/.."
if (( $# )); then
  wanted=("$@")
else
  version="$(python3 -c 'import importlib.metadata as m; print(m.version("ml_collections"))' 2>/dev/null || echo 1.1.0)"
  wanted=("ml_collections==$version")
fi
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wanted[@]}"
ls -l .whl
