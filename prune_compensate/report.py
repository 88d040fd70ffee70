"""Human-facing output: rich tables and the cosine-by-layer plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .export import ExportResult
from .pruning.profile import ProfileResult
from .pruning.prune import PruneResult


def profile_table(result: ProfileResult) -> Table:
    """One row per layer that fits 80 columns: short headers, the long names in the caption (every
    field is in ``--json``)."""
    chosen = set(result.chosen)
    replaced = set(result.replaced)
    kept = [layer for layer in result.ranking if layer not in replaced]
    rank_of = {layer: str(rank) for rank, layer in enumerate(kept, start=1)}
    rank_of.update({layer: "pruned" for layer in replaced})
    block_unit = result.unit == "block"
    what = "Block" if block_unit else "Attention"
    caption = "cos: mean ± std over tokens of cos(residual before, after)"
    if not block_unit:
        caption += "; time: attention's share of the block's time"
    drop_one = result.ranked_by == "drop-one"
    if drop_one:
        caption += "; drop: output divergence with the unit alone removed"
    rank_by = "drop" if drop_one else f"{result.unit} cos"
    table = Table(
        title=f"{what} redundancy — {result.model_class} ({result.n_samples} samples, {result.n_tokens} tokens)",
        caption=f"{caption}; ✔: the {result.k} that pc prune --k {result.k} takes; rank by {rank_by}",
    )
    table.add_column("layer", justify="right")
    if not block_unit:
        table.add_column("attention cos", justify="right", no_wrap=True)
    table.add_column("block cos", justify="right", no_wrap=True)
    if not block_unit:
        table.add_column("time", justify="right")
    if drop_one:
        table.add_column("drop", justify="right")
    table.add_column("rank", justify="right")
    table.add_column("prune", justify="center")
    for layer in result.layers:
        share = "—" if layer.attention_time_share is None else f"{100 * layer.attention_time_share:.1f}%"
        block = "—"
        if layer.block_cosine_mean is not None:
            block = f"{layer.block_cosine_mean:.4f} ± {layer.block_cosine_std:.4f}"
        cells = [block] if block_unit else [f"{layer.cosine_mean:.4f} ± {layer.cosine_std:.4f}", block, share]
        if drop_one:
            cells.append("—" if layer.drop_one is None else f"{layer.drop_one:.4f}")
        table.add_row(str(layer.index), *cells, rank_of[layer.index], "✔" if layer.index in chosen else "")
    return table


def print_profile(result: ProfileResult, console: Console | None = None) -> None:
    (console or Console()).print(profile_table(result))


def plot_profile(result: ProfileResult, path: str | Path) -> None:
    """PNG of cosine by layer (mean ± std; the y-axis spans the data, not 0–1, so a 0.88–0.94
    spread stays visible), the layers ``prune`` would take highlighted, and the attention core's
    share of the layer's time on a second axis when it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = set(result.chosen)
    index = [layer.index for layer in result.layers]
    mean = [layer.cosine_mean for layer in result.layers]
    std = [layer.cosine_std for layer in result.layers]
    colors = ["tab:red" if i in chosen else "tab:gray" if i in result.replaced else "tab:blue" for i in index]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(index)), 4))
    ax.bar(index, mean, yerr=std, color=colors, capsize=2)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("cos(residual before, after " + ("the block)" if result.unit == "block" else "attention)"))
    ax.set_title(f"{result.model_class}: red = the {result.k} layers prune would take")
    low = min(m - s for m, s in zip(mean, std, strict=True))
    high = max(m + s for m, s in zip(mean, std, strict=True))
    margin = 0.1 * max(high - low, 1e-3)
    ax.set_ylim(low - margin, min(1.0, high) + margin)
    shares = [layer.attention_time_share for layer in result.layers]
    if any(share is not None for share in shares):
        right = ax.twinx()
        right.plot(index, [100 * s if s is not None else float("nan") for s in shares], "o-", color="tab:orange")
        right.set_ylabel("attention share of layer time (%)", color="tab:orange")
        right.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prune_tables(result: PruneResult) -> list[Table]:
    """Summary (parameters, KV cache), chosen layers with scores, and the held-out error table."""
    units = "blocks" if result.unit == "block" else "attention layers"
    earlier = result.earlier_stacks  # --stack both: the encoder's round ran first
    total = result.k + sum(round_["k"] for round_ in earlier)
    summary = Table(title=f"Pruned {total} {units} of {result.model_class} (init={result.init})")
    summary.add_column("")
    summary.add_column("before", justify="right")
    summary.add_column("after", justify="right")
    before = earlier[0]["parameters"]["before"] if earlier else result.parameters["before"]
    summary.add_row("parameters", f"{before:,}", f"{result.parameters['after']:,}")
    kv = result.kv_cache_bytes_per_token
    if kv is not None:
        summary.add_row("KV cache bytes / token", f"{kv['before']:,}", f"{kv['after']:,}")
    else:
        summary.add_row("KV cache bytes / token", "— (encoder: no KV cache)", "—")
    layers = Table(title="Chosen layers")
    if earlier:
        layers.add_column("stack")
    layers.add_column("layer", justify="right")
    layers.add_column("score (profile)", justify="right")
    rounds = [(r["decoder"]["blocks"], r["pruned_layers"], r["scores"]) for r in earlier]
    rounds.append((result.decoder["blocks"], result.pruned_layers, result.scores))
    for blocks, pruned, scores in rounds:
        for layer in pruned:
            score = scores.get(layer, scores.get(str(layer)))
            layers.add_row(*([blocks] if earlier else []), str(layer), "—" if score is None else f"{score:.4f}")
    tables = [summary, layers]
    if result.error:
        first = next(iter(result.error.values()))
        extra = ["kl", "top1"] if "kl" in first else ["embedding_cosine"]
        errors = Table(title=f"Held-out error of the final hidden states ({first['n_tokens']} tokens)")
        for column in ["init", "mse", "relative", "relative_norm", *extra]:
            errors.add_column(column, justify="right")
        none = result.error.get("none", {}).get("relative")
        for name, row in result.error.items():
            mark = " ◀" if name == result.init else ""
            rel = f"{row['relative']:.4f}"
            if none and name != "none":
                rel += f" ({row['relative'] / none:.2f}×none)"
            errors.add_row(
                name + mark, f"{row['mse']:.5g}", rel, f"{row['relative_norm']:.4f}", *[f"{row[c]:.4f}" for c in extra]
            )
        tables.append(errors)
    if result.heal:
        heal = result.heal
        curve = heal["curve"]
        task = dict(heal.get("task_curve") or [])  # (absent from manifests written before it existed)
        table = Table(title=f"Heal ({heal['objective']}): held-out loss by step")
        for column in ("step", "held-out loss", *(["task MRR"] if task else [])):
            table.add_column(column, justify="right")
        for step, loss in curve:
            cells = [f"{loss:.5g}", *([f"{task[step]:.4f}"] if task else [])]
            table.add_row(f"{step}" + (" ◀" if step == heal["best_step"] else ""), *cells)
        table.caption = (
            f"{heal['steps_run']} steps, {heal['seconds']:.0f} s, peak RSS {heal['peak_rss_mb']:.0f} MB; "
            f"kept step {heal['best_step']} (by {heal.get('selected_by', 'held-out loss')})"
        )
        tables.append(table)
    return tables


def print_prune(result: PruneResult, console: Console | None = None) -> None:
    console = console or Console()
    for table in prune_tables(result):
        console.print(table)


def _spans(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``0–2, 5, 7–8``."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(f"{run[0]}–{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs) or "—"


def print_export(result: ExportResult, console: Console | None = None) -> None:
    """The layers of an export by kind, where it went, and how far its check was off."""
    table = Table(title=f"pc export → {result.format}")
    table.add_column("layers")
    table.add_column("which")
    table.add_row("attention", _spans(result.layers["attention"]))
    table.add_row("linear map (replace_with_linear)", _spans(result.layers["linear"]))
    table.add_row("no attention (no_op)", _spans(result.layers["no_op"]))
    if result.layers.get("no_ffn"):
        table.add_row("no MLP either", _spans(result.layers["no_ffn"]))
    if result.layers.get("merged"):
        table.add_row("map merged into the MLP below", _spans(result.layers["merged"]))
    if result.dropped_bias:
        table.add_row("map bias left out (--drop-bias)", _spans(result.dropped_bias))
    table.caption = (
        f"{result.out} ({result.bytes / 1e6:.1f} MB{', ' + result.outtype if result.outtype else ''}); "
        f"checked against the model: max |Δ logit| {result.check_error:.1e} of the logits' range"
    )
    (console or Console()).print(table)
