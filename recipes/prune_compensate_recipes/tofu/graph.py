"""One KG's observed graph and the per-query context subgraphs that give structural tokens.

Edges carry inverses: edge ``e < T`` is triple ``e`` (h, r, t) and edge ``T + e`` is (t, r + R, h),
so a query (e, r, ?) over ``2R`` relations is answered by following edges forward. Training
queries are edges of the graph itself, so each masks its own edge and that edge's inverse (else
the answer is one hop away by construction).

A query's context (paper §4.1.2, after KG-ICL) is sampled around three seed sets: the query entity
``q``, and the heads ``h'`` and tails ``t'`` of ``examples`` other triples of the query relation.
Each context entity's structural token is its distance tuple ``(d(e, q), d(e, h'), d(e, t'))``,
each capped at ``hops + 1`` (= not reached), so the codebook has ``(hops + 2)³`` entries whatever
the graph: ids that mean the same relative position on every KG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def csr_ranges(ptr: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CSR rows ``ptr[n]:ptr[n+1]`` of every n in ``nodes``, concatenated: → ``owner`` (which
    entry of ``nodes`` each position belongs to) and ``position`` (the index into the CSR items)."""
    starts, counts = ptr[nodes], ptr[nodes + 1] - ptr[nodes]
    owner = torch.repeat_interleave(torch.arange(nodes.shape[0], device=nodes.device), counts)
    offsets = torch.arange(owner.shape[0], device=nodes.device) - (torch.cumsum(counts, 0) - counts)[owner]
    return owner, starts[owner] + offsets


def gather_ranges(ptr: torch.Tensor, items: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """``items[ptr[n]:ptr[n+1]]`` for every n in ``nodes``, concatenated (CSR row gather)."""
    return items[csr_ranges(ptr, nodes)[1]]


@dataclass
class KGGraph:
    """``src``/``rel``/``dst`` ``(2T,)``; CSR by source (``out_ptr``, ``out_edges``) and by
    relation (``rel_ptr``, ``rel_edges``). A node's out-edges are ordered by relation, so its
    edges of one relation form a contiguous *group*: ``group_ptr`` ``(G + 1,)`` bounds group ``g``
    in ``out_edges``, ``group_rel`` ``(G,)`` is its relation and ``node_group_ptr`` ``(N + 1,)``
    lists a node's groups. A propagation message depends on the source, the relation and the
    query, never on the target, so it is computed once per group (DB15K: 3.8× fewer than edges)."""

    num_entities: int
    num_relations: int  # R; edges use ids 0 .. 2R - 1
    src: torch.Tensor
    rel: torch.Tensor
    dst: torch.Tensor
    out_ptr: torch.Tensor
    out_edges: torch.Tensor
    rel_ptr: torch.Tensor
    rel_edges: torch.Tensor
    group_ptr: torch.Tensor
    group_rel: torch.Tensor
    node_group_ptr: torch.Tensor

    @classmethod
    def from_triples(cls, triples: torch.Tensor, num_entities: int, num_relations: int) -> KGGraph:
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        src, rel, dst = torch.cat([h, t]), torch.cat([r, r + num_relations]), torch.cat([t, h])

        def csr(keys: torch.Tensor, size: int, order_by: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            order = torch.argsort(order_by, stable=True)
            ptr = torch.zeros(size + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=size), 0)
            return ptr, order

        group_key = src * (2 * num_relations) + rel
        out_ptr, out_edges = csr(src, num_entities, group_key)
        rel_ptr, rel_edges = csr(rel, 2 * num_relations, rel)
        sorted_key = group_key[out_edges]
        starts = torch.ones_like(sorted_key, dtype=torch.bool)
        starts[1:] = sorted_key[1:] != sorted_key[:-1]
        first = starts.nonzero().squeeze(1)
        group_ptr = torch.cat([first, torch.tensor([sorted_key.numel()])])
        node_group_ptr = torch.zeros(num_entities + 1, dtype=torch.long)
        node_group_ptr[1:] = torch.cumsum(torch.bincount(src[out_edges[first]], minlength=num_entities), 0)
        return cls(
            num_entities, num_relations, src, rel, dst, out_ptr, out_edges, rel_ptr, rel_edges,
            group_ptr, rel[out_edges[first]], node_group_ptr,
        )  # fmt: skip

    @property
    def num_edges(self) -> int:
        return int(self.src.shape[0])

    def partner(self, edges: torch.Tensor) -> torch.Tensor:
        """The inverse edge of each edge."""
        half = self.num_edges // 2
        return (edges + half) % self.num_edges


@dataclass
class ContextBatch:
    """B context subgraphs as one disjoint graph. Nodes: ``node_graph`` (which query),
    ``node_token`` (structural token id). Relation nodes (one per relation present in a context,
    plus the query relation): ``rel_graph``, ``rel_id``. Edges: ``edge_src``/``edge_dst`` (node
    indices), ``edge_rel`` (relation-node index). ``query_node``/``query_rel`` ``(B,)``."""

    node_graph: torch.Tensor
    node_token: torch.Tensor
    rel_graph: torch.Tensor
    rel_id: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_rel: torch.Tensor
    query_node: torch.Tensor
    query_rel: torch.Tensor

    def to(self, device: torch.device | str) -> ContextBatch:
        return ContextBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def num_structural_tokens(hops: int) -> int:
    return (hops + 2) ** 3


def random_keys(seeds: torch.Tensor, items: torch.Tensor, salt: int) -> torch.Tensor:
    """A pseudo-random int64 per (seed, item) pair (a splitmix64-style hash, the same on every
    device and in every batch): sorting items by it draws a uniform random order per seed, which
    lets every query of a batch draw its own sample in one vectorised step."""
    x = seeds * -7046029254386353131 + items * -4658895280553007687 + salt * 1442695040888963407

    def shift(v: torch.Tensor, bits: int) -> torch.Tensor:  # logical (unsigned) right shift of int64
        return (v >> bits) & ((1 << (64 - bits)) - 1)

    x = (x ^ shift(x, 30)) * -4658895280553007687
    x = (x ^ shift(x, 27)) * -7723592293110705685
    return x ^ shift(x, 31)


def first_per_group(group: torch.Tensor, priority: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` items of lowest ``priority`` (``random_keys``) within each ``group``.

    Priorities are uniform, so a group of ``c`` items has its ``k`` lowest, with near certainty,
    among the ``≈ 4k`` items below the ``4k / c`` quantile: only those are sorted (groups where
    fewer than ``k`` fall below it keep all their items), the same answer as sorting everything
    for a fraction of the work (a 2-hop frontier on DB15K: 310k candidates, 16 kept per search)."""
    if group.numel() == 0:
        return torch.zeros_like(group, dtype=torch.bool)
    counts = torch.bincount(group)
    uniform = (priority.double() + 2.0**63) / 2.0**64  # [0, 1)
    candidate = uniform < (4.0 * k / counts.double()).clamp(max=1.0)[group]
    short = torch.bincount(group[candidate], minlength=counts.numel()) < torch.clamp(counts, max=k)
    candidate |= short[group]
    index = candidate.nonzero().squeeze(1)
    order = torch.argsort(priority[index], stable=True)
    order = order[torch.argsort(group[index][order], stable=True)]  # by group, lowest priority first
    sorted_group = group[index][order]
    is_start = torch.ones_like(sorted_group, dtype=torch.bool)
    is_start[1:] = sorted_group[1:] != sorted_group[:-1]
    start_at = torch.cummax(torch.where(is_start, torch.arange(order.numel()), 0), 0).values
    keep = torch.zeros_like(group, dtype=torch.bool)
    keep[index[order[torch.arange(order.numel()) - start_at < k]]] = True
    return keep


class ContextSampler:
    """Samples context subgraphs; ``max_nodes_per_hop`` new nodes per hop and seed set keep hubs
    from pulling in the whole graph, ``max_edges`` bounds a context of a dense graph.

    All queries of a batch are sampled together (one frontier expansion per hop for every query
    and seed set); each random choice is ordered by ``random_keys`` of the query's own seed, so a
    query's context depends on its seed only, never on the other queries of its batch."""

    def __init__(
        self, graph: KGGraph, hops: int = 2, examples: int = 1, max_nodes_per_hop: int = 32, max_edges: int = 2000
    ) -> None:
        self.graph, self.hops, self.examples, self.cap = graph, hops, examples, max_nodes_per_hop
        self.max_edges = max_edges

    def _not_banned(self, query: torch.Tensor, edges: torch.Tensor, banned_keys: torch.Tensor) -> torch.Tensor:
        """Mask of the (query, edge) pairs that are not hidden from that query."""
        if banned_keys.numel() == 0:
            return torch.ones_like(edges, dtype=torch.bool)
        keys = query * self.graph.num_edges + edges
        at = torch.searchsorted(banned_keys, keys).clamp(max=banned_keys.numel() - 1)
        return banned_keys[at] != keys

    def sample(
        self,
        entities: torch.Tensor,
        relations: torch.Tensor,
        masked: list[torch.Tensor],
        seed: int | Sequence[int],
    ) -> ContextBatch:
        """Contexts of queries (entities[b], relations[b], ?); ``masked[b]``: edge ids the query may
        not see (its own triple and inverse in training, empty at evaluation).

        ``seed``: one per query, or one for the batch (query ``b`` then draws with ``seed``
        combined with ``b``). A query's context depends on its own seed only, not on which other
        queries share its batch, nor on the batch size."""
        g, far, hops = self.graph, self.hops + 1, self.hops
        b, n = entities.shape[0], g.num_entities
        if isinstance(seed, int):
            seed = [seed * 1_000_003 + i for i in range(b)]
        if len(seed) != b:
            raise ValueError(f"sample got {len(seed)} seeds for {b} queries")
        seeds = torch.tensor([int(s) for s in seed], dtype=torch.long)
        banned_counts = torch.tensor([m.numel() for m in masked], dtype=torch.long)
        banned_rows = torch.repeat_interleave(torch.arange(b), banned_counts)
        banned_keys = (banned_rows * g.num_edges + torch.cat([*masked, torch.empty(0, dtype=torch.long)])).sort().values
        # examples: per query, `examples` random edges of its relation that it may see
        counts = g.rel_ptr[relations + 1] - g.rel_ptr[relations]
        pool_query = torch.repeat_interleave(torch.arange(b), counts)
        pool = gather_ranges(g.rel_ptr, g.rel_edges, relations)
        visible = self._not_banned(pool_query, pool, banned_keys)
        pool_query, pool = pool_query[visible], pool[visible]
        chosen = first_per_group(pool_query, random_keys(seeds[pool_query], pool, 0), self.examples)
        example_query, examples = pool_query[chosen], pool[chosen]
        # BFS from 3B seed sets at once: search s = kind·B + query, kind 0 = the query entity,
        # 1 = the examples' heads, 2 = their tails; dist (3, B, N) hop counts, `far` = not reached
        dist = torch.full((3 * b * n,), far, dtype=torch.uint8)  # hop counts ≤ hops + 1: a byte each
        search = torch.cat([torch.arange(b), b + example_query, 2 * b + example_query])
        node = torch.cat([entities, g.src[examples], g.dst[examples]])
        frontier = torch.unique(search * n + node)
        dist[frontier] = 0
        for hop in range(1, hops + 1):
            if frontier.numel() == 0:
                break
            f_search, f_node = frontier // n, frontier % n
            out_counts = g.out_ptr[f_node + 1] - g.out_ptr[f_node]
            e_search = torch.repeat_interleave(f_search, out_counts)
            edges = gather_ranges(g.out_ptr, g.out_edges, f_node)
            keep = self._not_banned(e_search % b, edges, banned_keys)
            reached = torch.zeros(3 * b * n, dtype=torch.bool)  # dense marks: no sort of the many edges
            reached[e_search[keep] * n + g.dst[edges[keep]]] = True
            new = (reached & (dist == far)).nonzero().squeeze(1)
            if self.cap and new.numel():
                new_search = new // n
                priority = random_keys(seeds[new_search % b], new % n, hop * 3 + new_search // b + 1)
                new = new[first_per_group(new_search, priority, self.cap)]
            dist[new] = hop
            frontier = new
        dist = dist.view(3, b, n)
        in_context = (dist < far).any(0)  # (B, N)
        node_graph, node_id = in_context.nonzero(as_tuple=True)  # by query, then entity id
        d_q, d_h, d_t = dist[:, node_graph, node_id].long()
        position = torch.full((b * n,), -1, dtype=torch.long)
        position[node_graph * n + node_id] = torch.arange(node_graph.numel())
        # context edges: out-edges of context nodes whose target is in the same context
        out_counts = g.out_ptr[node_id + 1] - g.out_ptr[node_id]
        e_graph = torch.repeat_interleave(node_graph, out_counts)
        edges = gather_ranges(g.out_ptr, g.out_edges, node_id)
        keep = in_context.view(-1)[e_graph * n + g.dst[edges]] & self._not_banned(e_graph, edges, banned_keys)
        e_graph, edges = e_graph[keep], edges[keep]
        if self.max_edges and edges.numel() > self.max_edges:  # dense graphs: a random subset per context
            keep = first_per_group(e_graph, random_keys(seeds[e_graph], edges, 1 + 3 * (hops + 1)), self.max_edges)
            e_graph, edges = e_graph[keep], edges[keep]
        # relation nodes: per query, the relations of its context edges and the query relation
        two_r = 2 * g.num_relations
        rel_keys = torch.unique(torch.cat([e_graph * two_r + g.rel[edges], torch.arange(b) * two_r + relations]))
        return ContextBatch(
            node_graph,
            (d_q * (far + 1) + d_h) * (far + 1) + d_t,
            rel_keys // two_r,
            rel_keys % two_r,
            position[e_graph * n + g.src[edges]],
            position[e_graph * n + g.dst[edges]],
            torch.searchsorted(rel_keys, e_graph * two_r + g.rel[edges]),
            position[torch.arange(b) * n + entities],
            torch.searchsorted(rel_keys, torch.arange(b) * two_r + relations),
        )
