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


def _gather_ranges(ptr: torch.Tensor, items: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """``items[ptr[n]:ptr[n+1]]`` for every n in ``nodes``, concatenated (CSR row gather)."""
    starts, counts = ptr[nodes], ptr[nodes + 1] - ptr[nodes]
    total = int(counts.sum())
    if total == 0:
        return items[:0]
    offsets = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    return items[offsets + torch.arange(total)]


@dataclass
class KGGraph:
    """``src``/``rel``/``dst`` ``(2T,)``; CSR by source (``out_ptr``, ``out_edges``) and by
    relation (``rel_ptr``, ``rel_edges``)."""

    num_entities: int
    num_relations: int  # R; edges use ids 0 .. 2R - 1
    src: torch.Tensor
    rel: torch.Tensor
    dst: torch.Tensor
    out_ptr: torch.Tensor
    out_edges: torch.Tensor
    rel_ptr: torch.Tensor
    rel_edges: torch.Tensor

    @classmethod
    def from_triples(cls, triples: torch.Tensor, num_entities: int, num_relations: int) -> KGGraph:
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        src, rel, dst = torch.cat([h, t]), torch.cat([r, r + num_relations]), torch.cat([t, h])

        def csr(keys: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
            order = torch.argsort(keys, stable=True)
            ptr = torch.zeros(size + 1, dtype=torch.long)
            ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=size), 0)
            return ptr, order

        out_ptr, out_edges = csr(src, num_entities)
        rel_ptr, rel_edges = csr(rel, 2 * num_relations)
        return cls(num_entities, num_relations, src, rel, dst, out_ptr, out_edges, rel_ptr, rel_edges)

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


class ContextSampler:
    """Samples context subgraphs; ``max_nodes_per_hop`` new nodes per hop and seed set keep hubs
    from pulling in the whole graph, ``max_edges`` bounds a context of a dense graph."""

    def __init__(
        self, graph: KGGraph, hops: int = 2, examples: int = 1, max_nodes_per_hop: int = 32, max_edges: int = 2000
    ) -> None:
        self.graph, self.hops, self.examples, self.cap = graph, hops, examples, max_nodes_per_hop
        self.max_edges = max_edges

    def _bfs(self, seeds: torch.Tensor, banned: torch.Tensor, gen: torch.Generator) -> dict[int, int]:
        g = self.graph
        dist = {int(s): 0 for s in seeds.tolist()}
        frontier = torch.unique(seeds)
        for hop in range(1, self.hops + 1):
            if frontier.numel() == 0:
                break
            edges = _gather_ranges(g.out_ptr, g.out_edges, frontier)
            if banned.numel():
                edges = edges[~torch.isin(edges, banned)]
            new = torch.unique(g.dst[edges])
            new = new[~torch.isin(new, torch.tensor(list(dist), dtype=torch.long))]
            if new.numel() > self.cap:
                new = new[torch.randperm(new.numel(), generator=gen)[: self.cap]]
            for n in new.tolist():
                dist[n] = hop
            frontier = new
        return dist

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
        combined with ``b``). Every query has its own generator, so a query's context never
        depends on which other queries share its batch, nor on the batch size."""
        g, far = self.graph, self.hops + 1
        if isinstance(seed, int):
            seed = [seed * 1_000_003 + b for b in range(entities.shape[0])]
        if len(seed) != entities.shape[0]:
            raise ValueError(f"sample got {len(seed)} seeds for {entities.shape[0]} queries")
        gen = torch.Generator()
        node_graph, node_token = [], []
        rel_graph, rel_id, e_src, e_dst, e_rel = [], [], [], [], []
        query_node, query_rel = [], []
        n_nodes = n_rels = 0
        for b, (q, qr) in enumerate(zip(entities.tolist(), relations.tolist(), strict=True)):
            gen.manual_seed(int(seed[b]))
            banned = masked[b]
            pool = g.rel_edges[g.rel_ptr[qr] : g.rel_ptr[qr + 1]]
            if banned.numel():
                pool = pool[~torch.isin(pool, banned)]
            examples = pool[torch.randperm(pool.numel(), generator=gen)[: self.examples]]
            d_q = self._bfs(torch.tensor([q]), banned, gen)
            d_h = self._bfs(g.src[examples], banned, gen) if examples.numel() else {}
            d_t = self._bfs(g.dst[examples], banned, gen) if examples.numel() else {}
            nodes = torch.tensor(sorted(set(d_q) | set(d_h) | set(d_t)), dtype=torch.long)
            tokens = [
                (d_q.get(n, far) * (far + 1) + d_h.get(n, far)) * (far + 1) + d_t.get(n, far) for n in nodes.tolist()
            ]
            edges = _gather_ranges(g.out_ptr, g.out_edges, nodes)
            keep = torch.isin(g.dst[edges], nodes)
            if banned.numel():
                keep &= ~torch.isin(edges, banned)
            edges = edges[keep]
            if edges.numel() > self.max_edges:  # dense graphs: a random subset of the context's edges
                edges = edges[torch.randperm(edges.numel(), generator=gen)[: self.max_edges]]
            rels = torch.unique(torch.cat([g.rel[edges], torch.tensor([qr])]))
            node_graph.append(torch.full((nodes.numel(),), b, dtype=torch.long))
            node_token.append(torch.tensor(tokens, dtype=torch.long))
            rel_graph.append(torch.full((rels.numel(),), b, dtype=torch.long))
            rel_id.append(rels)
            # nodes and rels are sorted, so a local index is a binary search
            e_src.append(torch.searchsorted(nodes, g.src[edges]) + n_nodes)
            e_dst.append(torch.searchsorted(nodes, g.dst[edges]) + n_nodes)
            e_rel.append(torch.searchsorted(rels, g.rel[edges]) + n_rels)
            query_node.append(int(torch.searchsorted(nodes, torch.tensor(q))) + n_nodes)
            query_rel.append(int(torch.searchsorted(rels, torch.tensor(qr))) + n_rels)
            n_nodes += nodes.numel()
            n_rels += rels.numel()
        return ContextBatch(
            torch.cat(node_graph),
            torch.cat(node_token),
            torch.cat(rel_graph),
            torch.cat(rel_id),
            torch.cat(e_src),
            torch.cat(e_dst),
            torch.cat(e_rel),
            torch.tensor(query_node, dtype=torch.long),
            torch.tensor(query_rel, dtype=torch.long),
        )
