"""TOFU's batched context sampler and global propagation against plain per-query computations:
networkx BFS distances for the structural tokens, and a dense one-query-at-a-time propagation
with the paper's message sum (eqs. 9-12) for the fused mixture of messages."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from prune_compensate_recipes.tofu.graph import ContextSampler, KGGraph, first_per_group, random_keys
from prune_compensate_recipes.tofu.model import UNREACHED, GlobalPropagation, MixtureOfMessages


def _random_graph(entities: int = 40, relations: int = 5, triples: int = 110, seed: int = 0) -> KGGraph:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randint(0, entities, (triples,), generator=gen)
    t = (h + torch.randint(1, entities, (triples,), generator=gen)) % entities  # no self-loops
    r = torch.randint(0, relations, (triples,), generator=gen)
    unique = torch.unique(torch.stack([h, r, t], 1), dim=0)
    return KGGraph.from_triples(unique, entities, relations)


def test_first_per_group_keeps_the_k_lowest_of_each_group() -> None:
    gen = torch.Generator().manual_seed(0)
    group = torch.cat([torch.full((n,), g) for g, n in enumerate([3, 40, 2000, 1, 17])])
    priority = random_keys(torch.tensor(7), torch.arange(group.numel()), 0)
    # group 4: every priority near the top of the range, so fewer than k fall below the
    # pre-filter's quantile and the group must fall back to a full sort
    top = torch.iinfo(torch.long).max
    priority[group == 4] = top - torch.randint(0, 1000, (17,), generator=gen)
    for k in (1, 5, 16):
        keep = first_per_group(group, priority, k)
        for g in range(5):
            members = (group == g).nonzero().squeeze(1)
            expected = set(members[torch.argsort(priority[members])[:k]].tolist())
            assert set(keep.nonzero().squeeze(1).tolist()) & set(members.tolist()) == expected
    # the hash is uniform enough to sample with: signs balanced, mean of the mapped uniforms 1/2
    keys = random_keys(torch.full((20000,), 3), torch.arange(20000), 1)
    uniform = (keys.double() + 2.0**63) / 2.0**64
    assert abs(uniform.mean().item() - 0.5) < 0.01 and abs((keys < 0).double().mean().item() - 0.5) < 0.02


def test_sampled_tokens_and_edges_equal_networkx_bfs() -> None:
    """Without caps a context is exact: nodes within ``hops`` of the query entity or of the
    relation's examples, tokens = capped BFS distances, every visible edge among them."""
    graph = _random_graph()
    hops, far = 2, 3
    sampler = ContextSampler(graph, hops=hops, examples=10_000, max_nodes_per_hop=10_000, max_edges=10**6)
    queries, relations = torch.tensor([0, 7, 7, 21]), torch.tensor([1, 0, 4, 2])
    e = int((graph.src == 0).nonzero()[0])  # query 0 hides one of its out-edges and its inverse
    masked = [torch.tensor([e, int(graph.partner(torch.tensor(e)))]), *[torch.empty(0, dtype=torch.long)] * 3]
    ctx = sampler.sample(queries, relations, masked, seed=[1, 2, 3, 4])
    for b in range(4):
        banned = set(masked[b].tolist())
        visible = [i for i in range(graph.num_edges) if i not in banned]
        g = nx.MultiDiGraph()
        g.add_nodes_from(range(graph.num_entities))
        g.add_edges_from((int(graph.src[i]), int(graph.dst[i])) for i in visible)
        examples = [i for i in visible if int(graph.rel[i]) == int(relations[b])]

        def distances(seeds: set[int], g: nx.MultiDiGraph = g) -> dict[int, int]:
            return nx.multi_source_dijkstra_path_length(g, seeds, cutoff=hops) if seeds else {}

        d_q = distances({int(queries[b])})
        d_h = distances({int(graph.src[i]) for i in examples})
        d_t = distances({int(graph.dst[i]) for i in examples})
        nodes = sorted(set(d_q) | set(d_h) | set(d_t))
        token = {n: (d_q.get(n, far) * (far + 1) + d_h.get(n, far)) * (far + 1) + d_t.get(n, far) for n in nodes}
        in_b = (ctx.node_graph == b).nonzero().squeeze(1)
        assert ctx.node_token[in_b].tolist() == [token[n] for n in nodes]  # nodes in entity order
        assert ctx.node_token[ctx.query_node[b]] == token[int(queries[b])]
        expected_edges = sorted(
            (token[int(graph.src[i])], int(graph.rel[i]), token[int(graph.dst[i])])
            for i in visible
            if int(graph.src[i]) in token and int(graph.dst[i]) in token
        )
        edge_in_b = ctx.node_graph[ctx.edge_src] == b
        got = sorted(
            (int(ctx.node_token[s]), int(ctx.rel_id[r]), int(ctx.node_token[d]))
            for s, r, d in zip(ctx.edge_src[edge_in_b], ctx.edge_rel[edge_in_b], ctx.edge_dst[edge_in_b], strict=True)
        )
        assert got == expected_edges
        assert ctx.rel_id[ctx.query_rel[b]] == relations[b] and ctx.rel_graph[ctx.query_rel[b]] == b


def test_sampler_caps_new_nodes_and_edges_per_query() -> None:
    graph = _random_graph(entities=60, triples=400, seed=1)
    sampler = ContextSampler(graph, hops=2, examples=1, max_nodes_per_hop=3, max_edges=20)
    ctx = sampler.sample(torch.arange(6), torch.arange(6) % 5, [torch.empty(0, dtype=torch.long)] * 6, seed=5)
    # three seed sets of at most 1 node, each adding at most 3 new nodes per hop over 2 hops
    assert torch.bincount(ctx.node_graph).max() <= 3 * (1 + 2 * 3)
    assert torch.bincount(ctx.node_graph[ctx.edge_src]).max() <= 20
    again = sampler.sample(torch.arange(6), torch.arange(6) % 5, [torch.empty(0, dtype=torch.long)] * 6, seed=5)
    assert torch.equal(ctx.node_token, again.node_token) and torch.equal(ctx.edge_src, again.edge_src)


def _paper_messages(mim: MixtureOfMessages, h, rel_ids, relations, query):  # noqa: ANN001, ANN202
    """Eqs. 9-12 for one query: Σ_k w_k fn_k(h, r, θ) weighted by the edge attention α."""
    r = mim.relation(relations)  # (2R, d)
    w = mim.weights(relations[None], query[None])[0]  # (2R, K)
    angle = math.pi * torch.tanh(mim.angle(r))
    r_e, w_e, a_e = r[rel_ids], w[rel_ids], angle[rel_ids]
    message = sum(w_e[:, k : k + 1] * fn(h, r_e, a_e) for k, fn in enumerate(mim.functions))
    context = mim.att_context(torch.cat([r, query.expand_as(r)], -1))
    alpha = torch.sigmoid(mim.att_out(torch.relu(mim.att_entity(h) + context[rel_ids])))
    return alpha * message


def _dense_propagation(gp: GlobalPropagation, start, entities, relations, query, graph, masked):  # noqa: ANN001, ANN202
    """One query at a time over all N entities: layer l sends messages from the entities reached
    in < l hops; entities never reached score UNREACHED."""
    n, d = graph.num_entities, start.shape[1]
    out = []
    for b in range(start.shape[0]):
        hidden = torch.zeros(graph.num_edges, dtype=torch.bool)
        hidden[masked[1][masked[0] == b]] = True
        reached = torch.zeros(n, dtype=torch.bool)
        reached[entities[b]] = True
        h = torch.zeros(n, d)
        h[entities[b]] = start[b]
        for layer, mim in enumerate(gp.mim):
            edges = (reached[graph.src] & ~hidden).nonzero().squeeze(1)
            message = _paper_messages(mim, h[graph.src[edges]], graph.rel[edges], relations[b], query[b])
            agg = torch.zeros(n, d).index_add(0, graph.dst[edges], message)
            agg[entities[b]] += start[b]
            reached = reached.clone()
            reached[graph.dst[edges]] = True
            updated = h + torch.relu(gp.norm[layer](gp.update[layer](torch.cat([agg, h], -1))))
            h = torch.where(reached[:, None], updated, torch.zeros_like(updated))
        score = gp.score(torch.cat([h, query[b].expand(n, d)], -1)).squeeze(-1)
        out.append(torch.where(reached, score, torch.full_like(score, UNREACHED)))
    return torch.stack(out)


@pytest.mark.parametrize("messages", [["transe", "distmult", "rotate"], ["distmult"], ["rotate", "transe"]])
def test_batched_propagation_equals_dense_per_query_propagation(messages: list[str]) -> None:
    torch.manual_seed(0)
    graph, d, b = _random_graph(), 8, 5
    # messages are computed once per (source, relation) group: the graph has groups of several edges
    assert graph.group_rel.numel() < 0.9 * graph.num_edges
    gp = GlobalPropagation(d, 3, messages).eval()
    start, query = torch.randn(b, d), torch.randn(b, d)
    relations = torch.randn(b, 2 * graph.num_relations, d)
    entities = torch.tensor([0, 3, 3, 17, 39])
    masked = (torch.tensor([0, 0, 2]), torch.tensor([1, graph.num_edges // 2 + 1, 5]))
    with torch.no_grad():
        batched = gp(start, entities, relations, query, graph, masked)
        dense = _dense_propagation(gp, start, entities, relations, query, graph, masked)
    assert torch.equal(batched == UNREACHED, dense == UNREACHED)
    assert (batched > UNREACHED).sum() > b * 5  # the test covers more than the query entities
    torch.testing.assert_close(batched, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_training_step_on_cuda_equals_cpu() -> None:
    """The batched propagation, the unreached prior and the sampler's output run on a GPU and
    give the CPU's scores and gradients (device placement of every index the step builds)."""
    from prune_compensate_recipes.tofu.model import Tofu
    from prune_compensate_recipes.tofu.tokens import EntityTokens

    graph = _random_graph(entities=60, triples=400, seed=2)
    torch.manual_seed(0)
    cpu_model = Tofu(hidden=16, se_layers=2, gp_layers=3, me_heads=2, unreached_prior=True)
    gpu_model = Tofu(hidden=16, se_layers=2, gp_layers=3, me_heads=2, unreached_prior=True)
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model = gpu_model.cuda()
    none = torch.full((graph.num_entities, 0), -1, dtype=torch.long)
    tokens = EntityTokens(none, none)
    edges = torch.arange(0, graph.num_edges, 37)
    hidden = torch.stack([edges, graph.partner(edges)], 1)
    ctx = ContextSampler(graph, 2, 1, 8).sample(graph.src[edges], graph.rel[edges], list(hidden), seed=3)
    masked = (torch.arange(edges.shape[0]).repeat_interleave(2), hidden.flatten())
    scores = []
    for model, device in ((cpu_model, "cpu"), (gpu_model, "cuda")):
        out = model(
            graph, tokens.to(device), graph.src[edges].to(device), ctx.to(device), tuple(m.to(device) for m in masked)
        )
        torch.nn.functional.cross_entropy(out, graph.dst[edges].to(device)).backward()
        scores.append(out.detach().cpu())
    torch.testing.assert_close(scores[1], scores[0], atol=1e-4, rtol=1e-4)
    for (name, a), b in zip(cpu_model.named_parameters(), gpu_model.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad.cpu(), a.grad, atol=1e-4, rtol=1e-3, msg=name)
