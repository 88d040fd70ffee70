#!/usr/bin/env bash
# Unreached entities: one shared constant (the paper's propagation) vs the learned prior
# (model.unreached_prior), with the CPU settings of tofu_runs.sh and the PyKEEN baselines' budget
# (4 minutes on MKG-W / MKG-Y, 8 on DB15K), test metrics on the same seeded 1,000 test triples
# (both directions) for every run. Writes benchmarks/tofu/results/tofu_<DATASET>_{shared,prior}_seed<S>.json.
#   bash benchmarks/tofu/tofu_prior.sh [config-slug DATASET minutes "seeds" "variants" extra-overrides...]
#   default: mkgw MKG-W 4 "0 1" "shared prior"   (MKG-W: 71 % of training answers out of a 2-layer GP's reach)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
slug="${1:-mkgw}"; dataset="${2:-MKG-W}"; minutes="${3:-4}"; seeds="${4:-0 1}"; variants="${5:-shared prior}"
shift $(( $# < 5 ? $# : 5 ))
mapfile -t CPU < <(python -m benchmarks.tofu.cpu_settings runs)  # benchmarks/tofu/cpu.yaml
tag=$(printf '%s' "$*" | sed -e 's/model\.//g' -e 's/=//g' | tr -c 'A-Za-z0-9\n' '_')
for seed in $seeds; do
  for variant in $variants; do
    flag=$([[ $variant == prior ]] && echo true || echo false)
    name="${variant}${tag:+_$tag}_seed$seed"
    pc run tofu --config "tofu_$slug.yaml" "${CPU[@]}" "train.max_minutes=$minutes" "train.seed=$seed" \
      "model.unreached_prior=$flag" "$@" "out=runs/tofu_prior/${dataset}_$name" --quiet
    cp "runs/tofu_prior/${dataset}_$name/metrics_${dataset}_transductive.json" \
      "benchmarks/tofu/results/tofu_${dataset}_$name.json"
  done
done
