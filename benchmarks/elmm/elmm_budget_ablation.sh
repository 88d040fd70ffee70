#!/usr/bin/env bash
# Leave-one-out ablations of the same-budget ELMM configuration (elmm_prior_config.sh): each variant
# switches one part off and runs at a shorter fixed budget (its RotatE stage, pruning and training
# all inside it), seeds 0 and 1 side by side on one CPU thread each. Every variant of a seed starts
# from the RotatE stage the "full" run of that seed trained (its <out>/structure_kge, reused as a
# resumed run reuses it, its recorded minutes still charged to the budget), so the variants differ
# only in what they switch, not in how many RotatE epochs the machine's load allowed; "full" runs
# first. Ranked on a fixed sample of the test split (eval.test_triples draws it with its own seed 0:
# the same triples for every run), so a variant costs a minute of evaluation instead of ten; weights
# selected on 1,000 valid triples.
#   bash benchmarks/elmm/elmm_budget_ablation.sh ["variants"] [DATASET] [MINUTES] [KGE_MINUTES] [TEST_TRIPLES]
#   default: every variant below in order, FB15k-237, 10, 5, 2000
# → benchmarks/elmm/results/elmm_<DATASET>_ablation_<variant>_<MINUTES>min_seed<S>.json; a result that
#   exists is kept (FORCE=1 reruns). tools/results_table.py block elmmablation prints the table.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
declare -A VARIANTS=(
  [full]=""                                          # the configuration of elmm_vs_rotate.sh
  [no_pruning]="ablation.no_pruning=true"            # the paper's w/o pruning (K = 0)
  [no_linear]="ablation.no_linear=true"              # the paper's w/o Linear: dropped, no map
  [theorem1_mean]="prune.init=mean"                  # the paper's Theorem 1 init (full fits lstsq)
  [no_init]="ablation.no_init=true"                  # the paper's w/o Init: zero map, trained
  [no_score]="prompt.structure_score=false"          # no RotatE score under the head
  [bce]="train.loss=bce"                             # the paper's BCE instead of the softmax loss
  [no_row_head]="prompt.head_from_structure=false"   # a free head row per entity
  [k6]="prune.k=6"                                   # every attention of MiniLM dropped
)
variants="${1:-full no_pruning no_linear theorem1_mean no_init no_score bce no_row_head k6}"
ds="${2:-FB15k-237}"; minutes="${3:-10}"; kge="${4:-5}"; test_triples="${5:-2000}"
source benchmarks/elmm/elmm_prior_config.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/elmm_budget_ablation
for variant in $variants; do
  [[ -v "VARIANTS[$variant]" ]] || { echo "unknown variant $variant (known: ${!VARIANTS[*]})" >&2; exit 2; }
  pids=()
  for seed in 0 1; do
    result="benchmarks/elmm/results/elmm_${ds}_ablation_${variant}_${minutes}min_seed$seed.json"
    if [[ -f $result && -z ${FORCE:-} ]]; then echo "kept $result"; continue; fi
    out="runs/elmm_budget_ablation/${ds}_${variant}_${minutes}min_seed$seed"
    rm -rf "$out"
    shared="runs/elmm_budget_ablation/${ds}_full_${minutes}min_seed$seed/structure_kge"
    if [[ $variant != full ]]; then
      [[ -d $shared ]] || { echo "run the full variant first: $shared is missing" >&2; exit 2; }
      mkdir -p "$out" && cp -r "$shared" "$out/"
    fi
    # shellcheck disable=SC2086
    (pc run elmm --config elmm_minilm_fb15k237.yaml "data=$ds" "${ELMM[@]}" "eval.test_triples=$test_triples" \
      ${VARIANTS[$variant]} "train.seed=$seed" "out=$out" --quiet > "$out.log" 2>&1 \
      && python -m benchmarks.common keep "$out/metrics.json" "$result" \
      kind=elmm group=ablation "dataset=$ds" "variant=$variant" "minutes=$minutes" "seed=$seed") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || echo "a run of $variant failed: see its log in runs/" >&2; done
done
