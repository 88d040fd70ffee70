#!/usr/bin/env bash
# TOFU transductive with a longer budget and early-stopping patience 20 (what more epochs reach), one
# seed per call; kept as group=epochs, so it stays out of the same-budget table beside RotatE.
#   THREADS=2 bash benchmarks/tofu/tofu_epochs.sh SEED DATASET SLUG MINUTES [overrides...]
#   e.g. THREADS=2 bash benchmarks/tofu/tofu_epochs.sh 0 MKG-W mkgw 24 model.gp_layers=4 model.gp_max_new_nodes=100
# → benchmarks/tofu/results/tofu_<DATASET>_epochs_<MINUTES>min_seed<SEED>.json
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
seed="$1"; ds="$2"; slug="$3"; minutes="$4"; shift 4
mapfile -t CPU < <(python -m benchmarks.tofu.cpu_settings transductive)
out="runs/tofu_epochs/${ds}_seed$seed"; rm -rf "$out"
export OMP_NUM_THREADS=${THREADS:-1} MKL_NUM_THREADS=${THREADS:-1}
pc run tofu --config "tofu_$slug.yaml" "${CPU[@]}" "$@" "train.max_minutes=$minutes" train.patience=20 "train.seed=$seed" "out=$out" --quiet
python -m benchmarks.common keep "$out/metrics_${ds}_transductive.json" "benchmarks/tofu/results/tofu_${ds}_epochs_${minutes}min_seed$seed.json" \
  kind=tofu group=epochs "dataset=$ds" "variant=gp4_${minutes}min" "seed=$seed" "minutes=$minutes"
