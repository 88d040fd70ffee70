#!/usr/bin/env bash
# TOFU ablations (paper fig. 5) on UMLS, CPU: the tofu_umls config for 150 steps, one switch per run,
# full test split. Writes benchmarks/results/tofu_umls_<variant>.json.
#   bash benchmarks/tofu_ablation.sh [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-0}"
suffix=$([[ $seed == 0 ]] && echo "" || echo "_seed$seed")
declare -A VARIANTS=(
  [full]=""
  [no_se]="ablation.no_se=true"
  [no_structural_tokens]="ablation.no_structural_tokens=true"
  [no_text]="ablation.no_text=true"
  [transe_only]="ablation.single_message=transe"
  [distmult_only]="ablation.single_message=distmult"
  [rotate_only]="ablation.single_message=rotate"
)
for name in full no_se no_structural_tokens no_text transe_only distmult_only rotate_only; do
  # shellcheck disable=SC2086
  pc run tofu --config tofu_umls.yaml train.max_steps=150 train.eval_every=50 \
    "train.seed=$seed" "out=runs/tofu_ablation/$name$suffix" ${VARIANTS[$name]} --quiet
  cp "runs/tofu_ablation/$name$suffix/metrics_umls_transductive.json" "benchmarks/results/tofu_umls_$name$suffix.json"
done
