"""``pc eval``: what pruning cost on tasks, pruned vs original in the same run (see ``run``)."""

from .run import EvalConfig, EvalMetric, EvalResult, evaluate

__all__ = ["EvalConfig", "EvalMetric", "EvalResult", "evaluate"]
