#!/usr/bin/env bash
# TOFU ablations (paper fig. 5), CPU, one switch per run, full test split, selection on valid.
#   bash benchmarks/tofu/tofu_ablation.sh [seed] [graph]      graph: umls (default) or MKG-Y
# umls:  the tofu_umls config for 150 steps → benchmarks/tofu/results/tofu_umls_<variant>[_seed<S>].json
# MKG-Y: the transductive CPU settings of tofu_transductive.sh (SE 3 / GP 4 layers, batch 32, 16 nodes
#        per hop, the unreached prior) for at most 1,000 steps — a fixed step budget, so every variant
#        sees the same training queries whatever its speed — plus two rows beyond the paper's figure:
#        without the unreached prior, and with GP 2 instead of 4.
#        → benchmarks/tofu/results/tofu_MKG-Y_ablation_<variant>_seed<S>.json (kept if present; FORCE=1 reruns)
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
seed="${1:-0}"; graph="${2:-umls}"
declare -A VARIANTS=(
  [full]=""
  [no_se]="ablation.no_se=true"
  [no_structural_tokens]="ablation.no_structural_tokens=true"
  [no_text]="ablation.no_text=true"
  [transe_only]="ablation.single_message=transe"
  [distmult_only]="ablation.single_message=distmult"
  [rotate_only]="ablation.single_message=rotate"
  [no_prior]="model.unreached_prior=false"
  [gp2]="model.gp_layers=2"
)
PAPER=(full no_se no_structural_tokens no_text transe_only distmult_only rotate_only)
if [[ $graph == umls ]]; then
  suffix=$([[ $seed == 0 ]] && echo "" || echo "_seed$seed")
  for name in "${PAPER[@]}"; do
    # shellcheck disable=SC2086
    pc run tofu --config tofu_umls.yaml train.max_steps=150 train.eval_every=50 \
      "train.seed=$seed" "out=runs/tofu_ablation/$name$suffix" ${VARIANTS[$name]} --quiet
    cp "runs/tofu_ablation/$name$suffix/metrics_umls_transductive.json" "benchmarks/tofu/results/tofu_umls_$name$suffix.json"
  done
elif [[ $graph == MKG-Y ]]; then
  mapfile -t CPU < <(python -m benchmarks.tofu.cpu_settings ablation)  # benchmarks/tofu/cpu.yaml
  for name in "${PAPER[@]}" no_prior gp2; do
    result="benchmarks/tofu/results/tofu_MKG-Y_ablation_${name}_seed$seed.json"
    if [[ -f $result && -z ${FORCE:-} ]]; then echo "kept $result"; continue; fi
    out="runs/tofu_ablation/MKG-Y_${name}_seed$seed"
    rm -rf "$out"
    # shellcheck disable=SC2086
    pc run tofu --config tofu_mkgy.yaml "${CPU[@]}" "train.seed=$seed" ${VARIANTS[$name]} "out=$out" --quiet
    python -m benchmarks.common keep "$out/metrics_MKG-Y_transductive.json" "$result" \
      kind=tofu group=ablation dataset=MKG-Y "variant=$name" "seed=$seed"
  done
else
  echo "tofu_ablation.sh: unknown graph '$graph' (use umls or MKG-Y)" >&2; exit 2
fi
