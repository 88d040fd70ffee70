"""``pc eval`` output: one rich table (original / pruned / retention per metric) and a plot of
retention per metric."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .run import EvalResult


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def eval_table(result: EvalResult) -> Table:
    title = f"What pruning cost — {result.model}" + (f" against {result.against}" if result.against else "")
    table = Table(title=title)
    for column in ("task", "metric", "n", "original", "pruned", "retention"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for row in result.metrics:
        retention = "—" if row.retention is None else f"{row.retention:.3f}"
        table.add_row(row.task, row.metric, f"{row.n:,}", _fmt(row.original), _fmt(row.pruned), retention)
    return table


def print_eval(result: EvalResult, console: Console | None = None) -> None:
    (console or Console()).print(eval_table(result))


def plot_retention(result: EvalResult, path: str | Path) -> None:
    """Bar per metric with a retention (pruned vs original); the line at 1 is the original."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.metrics if r.retention is not None]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(rows) + 2), 4))
    labels = [f"{r.task}\n{r.metric}" for r in rows]
    values = [r.retention for r in rows]
    ax.bar(range(len(rows)), values, color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("retention (1 = original)")
    low = min([*values, 1.0])
    ax.set_ylim(max(0.0, low - 0.1 * (1.05 - low) - 0.02), max([*values, 1.0]) + 0.02)
    ax.set_title(f"{result.model}: quality kept after pruning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
