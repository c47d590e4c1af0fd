#!/usr/bin/env bash
# Sets up what benchmarks/bench_official.py needs beside hyperlt, outside the package:
#   1. its own virtual env with PyTorch and hyperlt (PyTorch is never a dependency of hyperlt);
#   2. working copies of the official SADE and PRL code under benchmarks/.official/ (ignored by git: their
#      code is read from there at run time and is never part of this repository).
#
# Usage (from anywhere):
#   bash benchmarks/setup_official.sh [--venv DIR] [--sade SRC] [--prl SRC] [--no-venv]
#
# SRC is where the official code comes from, either
#   * a bare git directory, e.g. the mirror the fetch tool leaves (/work/.mirror/Vanint+SADE-AgnosticLT/repo,
#     /work/.mirror/DataLab-atom+PRL/repo): the files are taken with
#       git --git-dir=SRC archive HEAD model LICENSE README.md | tar -x -C benchmarks/.official/<name>
#   * or a checkout (a clone of https://github.com/Vanint/SADE-AgnosticLT or
#     https://github.com/DataLab-atom/PRL): its model/, LICENSE and README.md are copied.
# Defaults: the fetch tool's mirrors above when they exist. Only model/ (the networks and losses, about
# 0.1 MB) is needed, which also keeps the copies small enough to carry to a GPU machine.
#
# The env: python3 -m venv DIR (default /work/bench-venv), without system site packages; then
#   pip install $TORCH_SPEC [--index-url $TORCH_INDEX]    (default TORCH_SPEC=torch)
#   pip install -e <repo>                                  (hyperlt with jax, flax, optax, ...)
# PyPI's `torch` on Linux is a CUDA build (several GB) that also runs on a CPU. For the small CPU build set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu, or, where pip's find-links hold a CPU wheel (this
# workplace keeps torch 2.13.0+cpu for Python 3.11 on disk), TORCH_SPEC='torch==2.13.0'.
# WITH_TORCHVISION=1 also installs torchvision (needed only for bench_official.py --augment published).
#
# Afterwards:
#   /work/bench-venv/bin/python benchmarks/bench_official.py \
#       --sade-dir benchmarks/.official/SADE-AgnosticLT --prl-dir benchmarks/.official/PRL
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
venv="/work/bench-venv"
sade_src="/work/.mirror/Vanint+SADE-AgnosticLT/repo"
prl_src="/work/.mirror/DataLab-atom+PRL/repo"
make_venv=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --sade) sade_src="$2"; shift 2 ;;
    --prl) prl_src="$2"; shift 2 ;;
    --no-venv) make_venv=0; shift ;;
    *) echo "setup_official.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Copies model/, LICENSE and README.md of the official code from $1 (bare git dir or checkout) into
# benchmarks/.official/$2, and records the commit (when known) in OFFICIAL_COMMIT.
copy_official() {
  local src="$1" name="$2" dest="$here/.official/$2"
  if [[ ! -e "$src" ]]; then
    echo "setup_official.sh: $src not found; $name skipped (fetch it, or pass --${3} PATH)" >&2
    return 0
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  # A fetch mirror may lack its largest files (data lists); git then reports "invalid object" for them on
  # stderr, which does not concern the paths taken here.
  if git --git-dir="$src" rev-parse --verify -q HEAD >/dev/null 2>&1 && [[ ! -d "$src/model" ]]; then
    git --git-dir="$src" archive HEAD model LICENSE README.md | tar -x -C "$dest"
    git --git-dir="$src" rev-parse HEAD >"$dest/OFFICIAL_COMMIT" 2>/dev/null
  else
    cp -r "$src/model" "$dest/"
    for f in LICENSE README.md; do [[ -f "$src/$f" ]] && cp "$src/$f" "$dest/"; done
    (git -C "$src" rev-parse HEAD >"$dest/OFFICIAL_COMMIT" 2>/dev/null) || rm -f "$dest/OFFICIAL_COMMIT"
  fi
  echo "$name: $(du -sh "$dest" | cut -f1) in $dest"
}

copy_official "$sade_src" SADE-AgnosticLT sade
copy_official "$prl_src" PRL prl

if [[ "$make_venv" == 1 ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
  fi
  index_args=()
  if [[ -n "${TORCH_INDEX:-}" ]]; then index_args=(--index-url "$TORCH_INDEX"); fi
  "$venv/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch}" "${index_args[@]}"
  if [[ "${WITH_TORCHVISION:-0}" == 1 ]]; then
    "$venv/bin/python" -m pip install --quiet torchvision "${index_args[@]}"
  fi
  "$venv/bin/python" -m pip install --quiet -e "$repo"
  "$venv/bin/python" -c "import torch, jax, hyperlt; print('torch', torch.__version__, '| jax', jax.__version__)"
fi
