# The ELMM configuration of the same-budget comparisons, sourced by elmm_vs_rotate.sh and
# elmm_budget_ablation.sh (needs $minutes and $kge): RotatE structure tokens, RotatE score under the
# head, the head scoring entities through their RotatE rows, softmax loss (all beyond the paper),
# bf16 autocast for training, float32 for ranking; one wall-clock budget for the RotatE stage, pruning and training; weights selected
# on 1,000 valid triples, the RotatE stage alone (step 0) included.
# shellcheck disable=SC2034,SC2154
ELMM=(prompt.structure_tokens=true prompt.structure_from=rotate "prompt.structure_minutes=$kge"
      prompt.structure_score=true prompt.head_from_structure=true train.loss=softmax
      train.mixed_precision=bf16 train.validate_at_start=true
      train.eval_every=200 train.valid_triples=1000 train.patience=100 train.max_minutes=0
      "train.budget_minutes=$minutes" eval.test_triples=0 eval.timing_queries=64
      eval.mixed_precision=no)  # on a CPU without native bf16, bf16 autocast ranks 4-6x slower (elmm_inference_time.py)
