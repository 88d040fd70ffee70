"""lm-evaluation-harness on an already-loaded model, so the pruned modules are what gets scored.

lm-eval's ``HFLM`` accepts a model instance; we hand it the pruned (and the original) model with
its tokenizer and read per-task metrics, as the layer-pruning papers report them. lm-eval is an
optional extra (``pip install "prune-compensate[eval]"``). Task data come as lm-eval always gets
them (the Hub), or from local task YAMLs under ``include_path``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ..errors import PCError

# metrics where a higher value is better; lm-eval reports these for the usual multiple-choice tasks
HIGHER_IS_BETTER = ("acc", "acc_norm", "exact_match", "f1", "mcc", "bleu")


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as err:
        raise PCError(
            "lm-eval is not installed, so --tasks cannot run",
            'install the extra: pip install "prune-compensate[eval]" (or pip install -e ".[eval]")',
        ) from err
    return lm_eval


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None) -> Any:
    """lm-eval's task index, built once per process and include path: building it reads every task
    YAML lm-eval ships (about 14,700 tasks, 25–35 s on a CPU), and one evaluation needs it three
    times (the check before any scoring, then the original's and the pruned model's run)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_tasks(tasks: list[str], include_path: str | None = None) -> Any:
    """lm-eval's task manager, after checking that it is installed and knows every task."""
    _lm_eval()
    manager = _task_manager(include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise PCError(f"lm-eval knows no task {unknown[0]!r}", "check the name (or --include-path for local tasks)")
    return manager


def run_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    include_path: str | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` of ``model`` (standard errors dropped; ``_n``: examples scored)."""
    lm_eval = _lm_eval()
    from lm_eval.models.huggingface import HFLM

    manager = check_tasks(tasks, include_path)
    device = str(next(model.parameters()).device)
    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    results = lm_eval.simple_evaluate(
        model=harness_model,
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=False,
        bootstrap_iters=0,
    )
    table: dict[str, dict[str, float]] = {}
    for task, metrics in (results or {}).get("results", {}).items():
        values = {}
        for key, value in metrics.items():
            name = key.split(",")[0]
            if (
                "stderr" in name
                or name == "sample_len"
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            if not math.isnan(float(value)):
                values[name] = float(value)
        counts = (results or {}).get("n-samples", {}).get(task, {})
        values["_n"] = float(counts.get("effective", 0))
        table[task] = values
    return table
