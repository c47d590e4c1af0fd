#!/usr/bin/env bash
# The published CIFAR-LT recipe (METHOD.md section 6: ResNet-32 with SADE's 24/48 expert branches, SGD
# Nesterov lr 0.1, wd 5e-4, batch 128, 200 epochs, 5 warm-up epochs, x0.1 at 160 and 180) for every
# method, on CIFAR-10-LT and CIFAR-100-LT at IR 10, 50 and 100: 18 tables under
# experiments/results/published/. A GPU job: about 60 runs of 200 epochs each.
#
#   bash experiments/cifar_published.sh                      # everything
#   DATASETS=c100 RATIOS=100 SEEDS=0,1,2 bash experiments/cifar_published.sh
#
# CIFAR-10 comes from the .npz source (CIFAR10_NPZ, default the shared JPEG copy); CIFAR-100 from TFDS
# (set TFDS_DATA_DIR or pass data.data_dir=... through EXTRA). Resumable: finished (method, seed) pairs
# are skipped, interrupted runs resume from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASETS=${DATASETS:-"c10 c100"}
RATIOS=${RATIOS:-"10 50 100"}
SEEDS=${SEEDS:-0}
METHODS=${METHODS:-ce,balanced_softmax,logit_adjust,sade,balpoe,ride,prl,prl_paper,prl_code}
CIFAR10_NPZ=${CIFAR10_NPZ:-../shared/data/cifar10-jpeg75.npz}
EXTRA=${EXTRA:-}
for dataset in $DATASETS; do
  for ratio in $RATIOS; do
    data_args=()
    if [[ $dataset == c10 ]]; then data_args=("data.path=$CIFAR10_NPZ"); fi
    # shellcheck disable=SC2086
    python experiments/compare.py --config "cifar_lt:$dataset,ir$ratio" --methods "$METHODS" --seeds "$SEEDS" \
      --out "experiments/results/published/cifar${dataset#c}_ir$ratio" "${data_args[@]}" \
      'model.widths=(16,24,48)' $EXTRA
  done
done
