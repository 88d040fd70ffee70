"""Human-facing output: rich tables and the cosine-by-layer plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .profile import ProfileResult


def profile_table(result: ProfileResult) -> Table:
    chosen = set(result.chosen)
    rank_of = {layer: rank for rank, layer in enumerate(result.ranking, start=1)}
    table = Table(
        title=f"Attention redundancy — {result.model_class} ({result.n_samples} samples, {result.n_tokens} tokens)"
    )
    table.add_column("layer", justify="right")
    table.add_column("cosine mean ± std", justify="right")
    table.add_column("attention time share", justify="right")
    table.add_column("rank", justify="right")
    table.add_column(f"prune (k={result.k})", justify="center")
    for layer in result.layers:
        share = "—" if layer.attention_time_share is None else f"{100 * layer.attention_time_share:.1f}%"
        table.add_row(
            str(layer.index),
            f"{layer.cosine_mean:.4f} ± {layer.cosine_std:.4f}",
            share,
            str(rank_of[layer.index]),
            "✔" if layer.index in chosen else "",
        )
    return table


def print_profile(result: ProfileResult, console: Console | None = None) -> None:
    (console or Console()).print(profile_table(result))


def plot_profile(result: ProfileResult, path: str | Path) -> None:
    """PNG of cosine by layer (mean ± std), the layers ``prune`` would take highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = set(result.chosen)
    index = [layer.index for layer in result.layers]
    mean = [layer.cosine_mean for layer in result.layers]
    std = [layer.cosine_std for layer in result.layers]
    colors = ["tab:red" if i in chosen else "tab:blue" for i in index]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(index)), 4))
    ax.bar(index, mean, yerr=std, color=colors, capsize=2)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("cos(residual before, after attention)")
    ax.set_title(f"{result.model_class}: red = the {result.k} layers prune would take")
    ax.set_ylim(min(0.0, min(mean) - 0.05), 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
