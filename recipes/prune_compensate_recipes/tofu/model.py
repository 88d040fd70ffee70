"""TOFU (paper §4): structural encoder, multi-modal encoder, gated fusion, global propagation with
a mixture of messages. No parameter has a size that depends on a graph's entity or relation count:
entities are seen only through token ids (codebooks) and relations only through the structural
encoder's output, which is what lets one checkpoint run on a graph it has never seen.

Shapes: B queries, d = ``hidden``, N entities, E edges (with inverses), 2R relations.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax

from .graph import ContextBatch, KGGraph, csr_ranges, gather_ranges, num_structural_tokens
from .tokens import EntityTokens

UNREACHED = -1.0e4  # score of entities the propagation does not reach (fits fp16/bf16)


def attend_and_pool(messages: torch.Tensor, score: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``(M, d)`` messages into ``(size, 2d)``: attention-weighted sum (softmax of ``score`` ``(M,)``
    within each target) beside max-pooling (paper A.1); empty targets get zeros."""
    alpha = softmax(score, index, num_nodes=size)
    summed = scatter(alpha.unsqueeze(-1) * messages, index, 0, dim_size=size, reduce="sum")
    pooled = scatter(messages, index, 0, dim_size=size, reduce="max")
    return torch.cat([summed, pooled], -1)


class StructuralEncoder(nn.Module):
    """SE (§4.2.1, A.1): L layers over the context subgraphs, alternately updating relation nodes
    (from the entities they connect) and entities (from their in-edges); messages are MLPs of
    [hidden states; query relation state], aggregated by attention + max-pooling, ReLU."""

    def __init__(self, hidden: int, layers: int, num_tokens: int) -> None:
        super().__init__()
        d = hidden
        self.token_embedding = nn.Embedding(num_tokens, d)
        self.query = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.rel_message = nn.ModuleList(nn.Sequential(nn.Linear(3 * d, d), nn.ReLU()) for _ in range(layers))
        self.rel_score = nn.ModuleList(nn.Linear(d, 1) for _ in range(layers))
        self.rel_update = nn.ModuleList(nn.Linear(3 * d, d) for _ in range(layers))
        self.ent_message = nn.ModuleList(nn.Sequential(nn.Linear(3 * d, d), nn.ReLU()) for _ in range(layers))
        self.ent_score = nn.ModuleList(nn.Linear(d, 1) for _ in range(layers))
        self.ent_update = nn.ModuleList(nn.Linear(3 * d, d) for _ in range(layers))
        self.rel_norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.ent_norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))

    def forward(self, ctx: ContextBatch, use_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """→ entity states ``(nodes, d)`` and relation-node states ``(rel nodes, d)``."""
        n_nodes, n_rels = ctx.node_token.shape[0], ctx.rel_id.shape[0]
        d = self.query.shape[0]
        ent = self.token_embedding(ctx.node_token) if use_tokens else self.query.new_zeros(n_nodes, d)
        rel = self.query.new_zeros(n_rels, d).index_add(0, ctx.query_rel, self.query.expand(ctx.query_rel.shape[0], d))
        edge_graph = ctx.node_graph[ctx.edge_src]
        for layer in range(len(self.rel_update)):
            q = rel[ctx.query_rel]  # (B, d): the query relation's current state
            m = self.rel_message[layer](torch.cat([ent[ctx.edge_src], ent[ctx.edge_dst], q[edge_graph]], -1))
            agg = attend_and_pool(m, self.rel_score[layer](m).squeeze(-1), ctx.edge_rel, n_rels)
            rel = rel + torch.relu(self.rel_norm[layer](self.rel_update[layer](torch.cat([rel, agg], -1))))
            q = rel[ctx.query_rel]
            m = self.ent_message[layer](torch.cat([ent[ctx.edge_src], rel[ctx.edge_rel], q[edge_graph]], -1))
            agg = attend_and_pool(m, self.ent_score[layer](m).squeeze(-1), ctx.edge_dst, n_nodes)
            ent = ent + torch.relu(self.ent_norm[layer](self.ent_update[layer](torch.cat([ent, agg], -1))))
        return ent, rel


class MultimodalEncoder(nn.Module):
    """ME (§4.2.2): a transformer over [readout; projected text tokens; projected visual tokens];
    the readout's output is the entity's multi-modal vector. The text codebook (MiniLM's word
    embeddings) is a frozen, non-persistent buffer: loaded from the package, never checkpointed."""

    def __init__(
        self, hidden: int, layers: int, heads: int, text_codebook: torch.Tensor | None, visual_dim: int
    ) -> None:
        super().__init__()
        d = hidden
        self.register_buffer("text_codebook", text_codebook, persistent=False)
        text_dim = text_codebook.shape[1] if text_codebook is not None else 384
        self.text_proj = nn.Linear(text_dim, d)
        self.visual_proj = nn.Linear(visual_dim, d)
        self.readout = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.modality = nn.Parameter(torch.zeros(3, d))
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, text_ids: torch.Tensor, visual_ids: torch.Tensor, visual_codebook: torch.Tensor | None):  # noqa: ANN201
        """``(B, n)``/``(B, m)`` ids (−1 = pad; empty = modality off) → ``(B, d)``."""
        b, d = text_ids.shape[0], self.readout.shape[0]
        parts = [(self.readout + self.modality[0]).expand(b, 1, d)]
        pads = [torch.zeros(b, 1, dtype=torch.bool, device=text_ids.device)]
        if text_ids.shape[1] and self.text_codebook is not None:
            parts.append(self.text_proj(self.text_codebook[text_ids.clamp(min=0)]) + self.modality[1])
            pads.append(text_ids < 0)
        if visual_ids.shape[1] and visual_codebook is not None:
            parts.append(self.visual_proj(visual_codebook[visual_ids.clamp(min=0)]) + self.modality[2])
            pads.append(visual_ids < 0)
        out = self.encoder(torch.cat(parts, 1), src_key_padding_mask=torch.cat(pads, 1))
        return out[:, 0]


def linear_of_concat(linear: nn.Linear, parts: list[torch.Tensor]) -> torch.Tensor:
    """``linear(cat(parts, -1))`` without building the concatenation: one matmul per part with
    its slice of the weight (the concatenated ``(rows, 2d)`` copy costs more than the matmuls)."""
    out, start = None, 0
    for part in parts:
        width = part.shape[-1]
        term = nn.functional.linear(part, linear.weight[:, start : start + width])
        out, start = term if out is None else out + term, start + width
    return out + linear.bias


class GatedFusion(nn.Module):
    """GF (eqs. 6–7): gate = σ(W[e_S; e_M; q]), e = gate ⊙ e_S + (1 − gate) ⊙ e_M (relation-aware)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(3 * hidden, hidden)

    def forward(self, structural: torch.Tensor, multimodal: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([structural, multimodal, query], -1)))
        return gate * structural + (1 - gate) * multimodal


def transe(h: torch.Tensor, r: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return h + r


def distmult(h: torch.Tensor, r: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return h * r


def rotate(h: torch.Tensor, r: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """h as d/2 complex numbers (first half real, second imaginary) rotated by ``angle`` ``(…, d/2)``."""
    re, im = h.chunk(2, -1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.cat([re * cos - im * sin, re * sin + im * cos], -1)


def swap_halves(h: torch.Tensor) -> torch.Tensor:
    """``[re; im]`` → ``[im; re]``: with it every message function is ``h ⊙ a + swap(h) ⊙ b + c``."""
    re, im = h.chunk(2, -1)
    return torch.cat([im, re], -1)


def message_coefficients(name: str, r: torch.Tensor, angle: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Message function ``name`` as ``(a, b, c)`` with ``fn(h) = h ⊙ a + swap(h) ⊙ b + c``, from
    relation states ``r`` ``(…, d)`` and angles ``(…, d/2)``: TransE (1, 0, r), DistMult (r, 0, 0),
    RotatE ([cos; cos], [−sin; sin], 0). Coefficients live on (query, relation) pairs, so the
    mixture is formed there, once, instead of on every one of the many more edges."""
    ones, zeros = torch.ones_like(r), torch.zeros_like(r)
    if name == "transe":
        return ones, zeros, r
    if name == "distmult":
        return r, zeros, zeros
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1), zeros


MESSAGE_FUNCTIONS = {"transe": transe, "distmult": distmult, "rotate": rotate}


class MixtureOfMessages(nn.Module):
    """MiM (eqs. 9–12) for one GP layer: per (query, relation) weights w = softmax(g / τ) over the
    K message functions, with gate logits g = W_g[r; q] and a relation-aware temperature
    τ = softplus(w_τ · r) + 0.05; per edge a query-aware attention α = σ(W2 ReLU(W1[h_u; r; q]))."""

    def __init__(self, hidden: int, messages: list[str]) -> None:
        super().__init__()
        d = hidden
        self.names = list(messages)
        self.functions = [MESSAGE_FUNCTIONS[m] for m in messages]
        self.relation = nn.Linear(d, d)
        self.gate = nn.Linear(2 * d, len(messages))
        self.temperature = nn.Linear(d, 1)
        self.angle = nn.Linear(d, d // 2)
        self.att_entity = nn.Linear(d, d, bias=False)
        self.att_context = nn.Linear(2 * d, d)
        self.att_out = nn.Linear(d, 1)

    def weights(self, relations: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``(B, 2R, d)`` relation states, ``(B, d)`` query → ``(B, 2R, K)`` mixture weights."""
        r = self.relation(relations)
        return self._mixture(r, torch.cat([r, query.unsqueeze(1).expand_as(r)], -1))

    def _mixture(self, r: torch.Tensor, r_and_query: torch.Tensor) -> torch.Tensor:
        """Weights from projected relation states ``r`` and ``[r; q]`` (both ``(B, 2R, ·)``)."""
        tau = nn.functional.softplus(self.temperature(r)) + 0.05
        return torch.softmax(self.gate(r_and_query) / tau, -1)

    def forward(
        self,
        h: torch.Tensor,
        row_graph: torch.Tensor,
        edge_rel: torch.Tensor,
        relations: torch.Tensor,
        query: torch.Tensor,
    ) -> torch.Tensor:
        """Messages of M (query, source entity, relation) groups: ``h`` ``(M, d)`` the source
        states, ``row_graph`` ``(M,)`` each one's query, ``edge_rel`` ``(M,)`` its relation →
        ``(M, d)``. A message does not depend on its target, so the propagation computes one per
        group and carries it along each of the group's edges."""
        r = self.relation(relations)  # (B, 2R, d), projected once for all uses
        r_and_query = torch.cat([r, query.unsqueeze(1).expand_as(r)], -1)
        w = self._mixture(r, r_and_query)  # (B, 2R, K)
        angle = math.pi * torch.tanh(self.angle(r))
        # Σ_k w_k fn_k(h) = h ⊙ a + swap(h) ⊙ b + c with a, b, c mixed per (query, relation), then
        # gathered per edge: the same sum as the paper's at a fraction of the per-edge work (DB15K:
        # ~300k edges per batch of 32 queries against 32 × 2R (query, relation) pairs)
        parts = [message_coefficients(name, r, angle) for name in self.names]
        a, b, c = (sum(w[..., k : k + 1] * part[i] for k, part in enumerate(parts)) for i in range(3))
        pair = row_graph * r.shape[1] + edge_rel  # (M,) row of each edge's (query, relation) pair

        def per_edge(table: torch.Tensor) -> torch.Tensor:  # (B, 2R, d) → (M, d)
            return table.flatten(0, 1).index_select(0, pair)

        a_e, c_e, context_e = per_edge(a), per_edge(c), per_edge(self.att_context(r_and_query))
        rotates = "rotate" in self.names  # else b = 0 and swap(h) is never needed
        message = h * a_e + c_e + (swap_halves(h) * per_edge(b) if rotates else 0)
        alpha = torch.sigmoid(self.att_out(torch.relu(self.att_entity(h) + context_e)))
        return alpha * message


class GlobalPropagation(nn.Module):
    """GP (§4.3): L layers from the query entity over the observed graph. The boundary condition is
    the fused query vector at the query entity and zeros elsewhere; propagation is progressive (as
    in RED-GNN / KG-ICL): layer l passes messages only from entities reached in < l hops, so the
    cost follows the reached neighbourhood, not B × |E|. ``max_new_nodes`` > 0 keeps, per query and
    layer, only that many newly reached entities (those receiving the strongest messages), which
    bounds the cost of deep propagation on graphs with hubs. MiM messages, sum aggregation, residual
    update; a score layer MLP([h_t; q]) over the reached entities. Entities more than L hops away
    score ``UNREACHED`` (below any reached one, tied among themselves); training drops queries
    whose answer is unreached, which would otherwise only teach the model to rank reached entities
    below the unreached block (seen on DB15K with L = 2: valid MRR fell while the loss fell)."""

    def __init__(
        self, hidden: int, layers: int, messages: list[str], checkpoint: bool = False, max_new_nodes: int = 0
    ) -> None:
        super().__init__()
        d = hidden
        self.max_new_nodes = max_new_nodes
        self.mim = nn.ModuleList(MixtureOfMessages(d, messages) for _ in range(layers))
        self.update = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(layers))
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.score = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))
        self.checkpoint = checkpoint

    @staticmethod
    def expand(rows: torch.Tensor, graph: KGGraph, masked_keys: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Out-edges of active (query, entity) ``rows`` ``(A, 2)``, by (source, relation) group.

        → ``group_row`` ``(M_g,)`` (the active row each message leaves), ``group`` ``(M_g,)``,
        then per edge ``(M_e,)``: the message it carries (index into the M_g), its id, and its
        target key ``b·N + dst``; the masked (query, edge) pairs are left out."""
        device = rows.device
        group_row, group = csr_ranges(graph.node_group_ptr.to(device), rows[:, 1])
        message, position = csr_ranges(graph.group_ptr.to(device), group)
        edges = graph.out_edges.to(device)[position]
        query = rows[group_row[message], 0]
        if masked_keys is not None and masked_keys.numel():  # a few keys per query: binary search
            masked_sorted = masked_keys.sort().values
            keys = query * graph.num_edges + edges
            at = torch.searchsorted(masked_sorted, keys).clamp(max=masked_sorted.numel() - 1)
            keep = masked_sorted[at] != keys
            message, edges, query = message[keep], edges[keep], query[keep]
        target = query * graph.num_entities + graph.dst.to(device)[edges]
        return group_row, group, message, edges, target

    def _layer(
        self,
        layer,
        states,
        group_row,
        row_graph,
        group_rel,
        message_of_edge,
        target_row,
        n_rows,
        start,
        relations,
        query,
    ):  # noqa: ANN001, ANN202, E501
        """One layer: a message per (active row, relation group) ``(M_g, d)``, carried along each of
        the group's edges ``(M_e,)`` into its target row; residual update of the grown states."""
        message = self.mim[layer](states[group_row], row_graph, group_rel, relations, query)
        grown = torch.cat([states, states.new_zeros(n_rows - states.shape[0], states.shape[1])])
        agg = grown.new_zeros(grown.shape).index_add_(0, target_row, message.index_select(0, message_of_edge))
        agg = agg.index_add_(0, torch.arange(start.shape[0], device=agg.device), start)  # boundary condition
        updated = grown + torch.relu(self.norm[layer](linear_of_concat(self.update[layer], [agg, grown])))
        return updated, agg.detach().norm(dim=-1)

    def keep_strongest(self, fresh_graph: torch.Tensor, priority: torch.Tensor, b: int) -> torch.Tensor:
        """Indices (ascending) of at most ``max_new_nodes`` newly reached entities per query, those
        with the largest incoming message (AdaProp-style budget; deterministic, so evaluation keeps
        what training keeps)."""
        order = torch.argsort(priority, descending=True, stable=True)
        order = order[torch.argsort(fresh_graph[order], stable=True)]  # grouped by query, strongest first
        counts = torch.bincount(fresh_graph, minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.numel(), device=order.device) - starts[fresh_graph[order]]
        return order[rank < self.max_new_nodes].sort().values

    def forward(
        self,
        start: torch.Tensor,
        entities: torch.Tensor,
        relations: torch.Tensor,
        query: torch.Tensor,
        graph: KGGraph,
        masked: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``start`` ``(B, d)`` at ``entities`` ``(B,)``; ``masked``: (query row, edge) pairs whose
        messages are dropped → ``(B, N)`` scores."""
        b, d = start.shape
        n, device = graph.num_entities, start.device
        group_rel = graph.group_rel.to(device)
        masked_keys = masked[0] * graph.num_edges + masked[1] if masked is not None else None
        keys = torch.arange(b, device=device) * n + entities  # active (query, entity) keys b·N + e
        # key → row of ``states`` (−1: not reached); dense like the (B, N) scores it fills, so
        # finding the newly reached entities and each message's target row needs no sorting
        position = torch.full((b * n,), -1, dtype=torch.long, device=device)
        position[keys] = torch.arange(b, device=device)
        states = start
        for layer in range(len(self.mim)):
            rows = torch.stack([keys // n, keys % n], 1)
            group_row, group, message_of_edge, _, target = self.expand(rows, graph, masked_keys)
            # rows keep their place (old keys first, newly reached after, ascending), so states line up
            hit = torch.zeros(b * n, dtype=torch.bool, device=device)
            hit[target] = True
            hit[keys] = False
            fresh = hit.nonzero().squeeze(1)
            n_old = keys.shape[0]
            position[fresh] = torch.arange(n_old, n_old + fresh.shape[0], device=device)
            all_keys = torch.cat([keys, fresh])
            args = (
                states,
                group_row,
                keys[group_row] // n,
                group_rel[group],
                message_of_edge,
                position[target],
                all_keys.shape[0],
                start,  # the boundary condition at the first b keys, the query entities
                relations,
                query,
            )
            if self.checkpoint and self.training:
                states, strength = torch.utils.checkpoint.checkpoint(self._layer, layer, *args, use_reentrant=False)
            else:
                states, strength = self._layer(layer, *args)
            if self.max_new_nodes and fresh.numel() > self.max_new_nodes:
                kept = self.keep_strongest(fresh // n, strength[n_old:], b) + n_old
                rows_kept = torch.cat([torch.arange(n_old, device=device), kept])
                states, all_keys = states[rows_kept], all_keys[rows_kept]
                position[fresh] = -1
                position[all_keys] = torch.arange(all_keys.shape[0], device=device)
            keys = all_keys
        first, relu, last = self.score  # MLP([h_t; q]) with q's half computed once per query
        per_query = nn.functional.linear(query, first.weight[:, d:], first.bias)  # (B, d)
        hidden = nn.functional.linear(states, first.weight[:, :d]) + per_query[keys // n]
        reached = last(relu(hidden)).squeeze(-1)
        scores = reached.new_full((b * n,), UNREACHED).index_put((keys,), reached)
        return scores.view(b, n)


class UnreachedPrior(nn.Module):
    """Scores ``(B, N)`` for the entities the propagation does not reach, from statistics of the
    observed graph that need no entity embedding (so they transfer to unseen graphs):
    ``log(1 + #edges with the query relation ending at e)`` (the relation's tail distribution) and
    ``log(1 + in-degree(e))``, combined by a learned affine map. Edges a training query may not see
    (its own edge and inverse) are subtracted from the counts, so the prior cannot read the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, 0.1]))
        self.bias = nn.Parameter(torch.tensor(-4.0))

    def forward(
        self,
        graph: KGGraph,
        query_relations: torch.Tensor,
        masked: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        device = self.weight.device
        b, n = query_relations.shape[0], graph.num_entities
        rel, dst = graph.rel.to(device), graph.dst.to(device)
        in_degree = torch.bincount(dst, minlength=n).to(self.weight.dtype).expand(b, n).clone()
        # tail counts of each query's relation: (B, N) from that relation's edges (CSR by relation)
        query_relations = query_relations.cpu()
        counts = graph.rel_ptr[query_relations + 1] - graph.rel_ptr[query_relations]
        rows = torch.repeat_interleave(torch.arange(b), counts).to(device)
        edges = gather_ranges(graph.rel_ptr, graph.rel_edges, query_relations).to(device)
        query_relations = query_relations.to(device)
        tails = torch.zeros(b, n, dtype=self.weight.dtype, device=device)
        tails.index_put_((rows, dst[edges]), torch.ones_like(rows, dtype=tails.dtype), accumulate=True)
        if masked is not None and masked[0].numel():
            hidden_rows, hidden_edges = masked[0].to(device), masked[1].to(device)
            ones = torch.ones_like(hidden_rows, dtype=tails.dtype)
            in_degree.index_put_((hidden_rows, dst[hidden_edges]), -ones, accumulate=True)
            hit = rel[hidden_edges] == query_relations[hidden_rows]
            tails.index_put_((hidden_rows[hit], dst[hidden_edges[hit]]), -ones[hit], accumulate=True)
        features = torch.stack([torch.log1p(tails.clamp(min=0)), torch.log1p(in_degree.clamp(min=0))], -1)
        return features @ self.weight + self.bias


class Tofu(nn.Module):
    """The whole model; ``forward`` scores every entity of ``graph`` for B queries (e, r, ?)."""

    def __init__(
        self,
        hidden: int = 32,
        se_layers: int = 6,
        gp_layers: int = 6,
        me_layers: int = 1,
        me_heads: int = 4,
        hops: int = 2,
        messages: list[str] | None = None,
        text_codebook: torch.Tensor | None = None,
        visual_dim: int = 32,
        use_se: bool = True,
        use_structural_tokens: bool = True,
        checkpoint_gp: bool = False,
        gp_max_new_nodes: int = 0,
        unreached_prior: bool = False,
    ) -> None:
        super().__init__()
        self.use_se, self.use_structural_tokens = use_se, use_structural_tokens
        self.se = StructuralEncoder(hidden, se_layers, num_structural_tokens(hops))
        self.me = MultimodalEncoder(hidden, me_layers, me_heads, text_codebook, visual_dim)
        self.fusion = GatedFusion(hidden)
        self.missing_relation = nn.Parameter(torch.zeros(hidden))
        self.gp = GlobalPropagation(
            hidden, gp_layers, messages or list(MESSAGE_FUNCTIONS), checkpoint_gp, gp_max_new_nodes
        )
        self.prior = UnreachedPrior() if unreached_prior else None

    def relation_states(self, ctx: ContextBatch, num_relations: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ SE entity states of the query entities ``(B, d)``, relation table ``(B, 2R, d)``
        (relations absent from a context get the shared ``missing_relation`` vector), query ``(B, d)``."""
        b, d = ctx.query_node.shape[0], self.missing_relation.shape[0]
        if self.use_se:
            ent, rel = self.se(ctx, self.use_structural_tokens)
        else:  # w/o SE: no structural features; the query relation is told apart by the query vector
            ent = self.missing_relation.new_zeros(ctx.node_token.shape[0], d)
            rel = self.missing_relation.new_zeros(ctx.rel_id.shape[0], d)
            rel = rel.index_add(0, ctx.query_rel, self.se.query.expand(b, d))
        table = self.missing_relation.expand(b, 2 * num_relations, d).clone()
        table[ctx.rel_graph, ctx.rel_id] = rel
        return ent[ctx.query_node], table, rel[ctx.query_rel]

    def forward(
        self,
        graph: KGGraph,
        tokens: EntityTokens,
        entities: torch.Tensor,
        ctx: ContextBatch,
        masked: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``entities`` ``(B,)`` query entities (relations are in ``ctx``) → ``(B, N)`` scores."""
        structural, relations, query = self.relation_states(ctx, graph.num_relations)
        multimodal = self.me(tokens.text[entities], tokens.visual[entities], tokens.visual_codebook)
        fused = self.fusion(structural, multimodal, query)
        scores = self.gp(fused, entities, relations, query, graph, masked)
        if self.prior is None:
            return scores
        prior = self.prior(graph, ctx.rel_id[ctx.query_rel], masked)
        return torch.where(scores == UNREACHED, prior.to(scores.dtype), scores)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the frozen codebooks are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
