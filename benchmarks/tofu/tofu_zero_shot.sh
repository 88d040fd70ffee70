#!/usr/bin/env bash
# TOFU zero-shot on the 12 GraIL inductive test graphs, one pre-training regime and seed per call:
# the transductive CPU settings (benchmarks/tofu/cpu.yaml: SE 3 layers, batch 32, 16 nodes per hop,
# the learned prior for unreached entities) with GP 4 layers, pre-trained for at most MINUTES of
# wall clock (resumable: rerunning the same command continues from runs/…/train_state), then every
# _ind test graph ranked zero-shot (full test splits, both directions, filtered) beside PPR.
#   bash benchmarks/tofu/tofu_zero_shot.sh SEED [REGIME] [MINUTES]
#   REGIME: fb   = MKG-Y + the fb237 v1 training graph (default)
#           mkgy = MKG-Y alone (no graph drawn from FB15k-237 or WN18RR)
# → benchmarks/tofu/results/inductive_zero_shot_gp4_<REGIME>_seed<SEED>.json (with the checkpoint's
#   SHA-256, the command and the budget); benchmarks/tofu/zero_shot_overlap.py measures what each
#   regime shares with the test graphs.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
seed="${1:?seed}"; regime="${2:-fb}"; minutes="${3:-15}"
case $regime in
  fb) graphs='[MKG-Y, inductive/fb237_v1]'; label="GP 4 + prior, MKG-Y + fb237_v1, $minutes min" ;;
  mkgy) graphs='[MKG-Y]'; label="GP 4 + prior, MKG-Y only, $minutes min" ;;
  *) echo "unknown regime $regime (fb or mkgy)" >&2; exit 2 ;;
esac
mapfile -t CPU < <(python -m benchmarks.tofu.cpu_settings transductive)
targets="[$(printf 'inductive/%s_v%s_ind, ' fb237 1 fb237 2 fb237 3 fb237 4 WN18RR 1 WN18RR 2 WN18RR 3 WN18RR 4 \
  nell 1 nell 2 nell 3 nell 4 | sed 's/, $//')]"
out="runs/tofu_zero_shot_gp4_${regime}_seed$seed"
pc run tofu --config tofu_pretrain.yaml "${CPU[@]}" model.gp_layers=4 "graphs=$graphs" "targets=$targets" \
  "train.max_minutes=$minutes" "train.seed=$seed" finetune.epochs=0 "out=$out" --quiet
python -m benchmarks.tofu.inductive_zero_shot --tofu "$out" --label "$label" \
  --out "benchmarks/tofu/results/inductive_zero_shot_gp4_${regime}_seed$seed.json"
