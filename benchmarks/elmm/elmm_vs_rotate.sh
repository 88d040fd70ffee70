#!/usr/bin/env bash
# ELMM beside PyKEEN RotatE at the same wall-clock budget, run side by side on one CPU thread each
# (started together, so both see the same machine load). The ELMM budget covers every stage it runs:
# its own RotatE pre-training (prompt.structure_minutes), pruning, and training (train.budget_minutes);
# evaluation is excluded for both. Both are ranked on the FULL test split (both directions, filtered,
# realistic ties) by the same evaluator; ELMM selects its weights on 1,000 valid triples (its start,
# the RotatE alone, included). ELMM here: RotatE structure tokens, RotatE score under the head, the head
# scoring entities through their RotatE rows, softmax loss, bf16 autocast (all beyond the paper but bf16).
#   bash benchmarks/elmm/elmm_vs_rotate.sh ["seeds"] [DATASET] [MINUTES] [KGE_MINUTES] [tag overrides...]
#   default: "0 1" FB15k-237 30 15
# → benchmarks/elmm/results/elmm_<DATASET>_<tag>_<MINUTES>min_seed<S>.json (tag default: prior) and
#   <baseline>_<DATASET>_<MINUTES>min_1thread_seed<S>.json; a result that exists is kept (FORCE=1 reruns).
# BASELINES="rotate transe" (default: rotate) names the PyKEEN baselines, each a one-thread run of the
# same minutes; run two seeds' scripts at once (one seed each) when only baselines are left to run, so
# each baseline shares the machine with one other run, as ELMM and RotatE did.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
seeds="${1:-0 1}"; ds="${2:-FB15k-237}"; minutes="${3:-30}"; kge="${4:-15}"; tag="${5:-prior}"
shift $(( $# < 5 ? $# : 5 ))  # what is left: ELMM config overrides of this variant
source benchmarks/elmm/elmm_prior_config.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/elmm_vs_rotate
for seed in $seeds; do
  elmm="benchmarks/elmm/results/elmm_${ds}_${tag}_${minutes}min_seed$seed.json"
  pids=()
  if [[ -f $elmm && -z ${FORCE:-} ]]; then echo "kept $elmm"; else
    out="runs/elmm_vs_rotate/${ds}_${tag}_${minutes}min_seed$seed"
    rm -rf "$out"
    # shellcheck disable=SC2086
    (pc run elmm --config elmm_minilm_fb15k237.yaml "data=$ds" "${ELMM[@]}" "train.seed=$seed" "$@" "out=$out" \
      --quiet > "$out.log" 2>&1 && python -m benchmarks.common keep "$out/metrics.json" "$elmm" \
      kind=elmm group=budget "dataset=$ds" "variant=$tag" "minutes=$minutes" "seed=$seed") &
    pids+=($!)
  fi
  for model in ${BASELINES:-rotate}; do
    result="benchmarks/elmm/results/${model}_${ds}_${minutes}min_1thread_seed$seed.json"
    if [[ -f $result && -z ${FORCE:-} ]]; then echo "kept $result"; continue; fi
    base="runs/elmm_vs_rotate/${model}_${ds}_${minutes}min_seed$seed"
    mkdir -p "$base"
    (python -m benchmarks.mkgc_baselines --dataset "$ds" --models "$model" --minutes "$minutes" --seed "$seed" \
      --threads 1 --out "$base" > "$base.log" 2>&1 && python -m benchmarks.common keep "$base/${model}_$ds.json" "$result" \
      "kind=$model" group=budget "dataset=$ds" "minutes=$minutes" "seed=$seed") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
done
