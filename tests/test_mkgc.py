"""MKGC foundations: datasets in every format, relation categories, and filtered evaluation that
equals PyKEEN's RankBasedEvaluator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prune_compensate.cli import app
from prune_compensate_recipes.mkgc.data import load_kg, relation_categories, resolve_kg
from prune_compensate_recipes.mkgc.evaluate import InverseRelationScorer, evaluate_link_prediction, filtered_ranks
from prune_compensate_recipes.mkgc.staged import STAGED, default_shared_root, load_staged

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def test_labeled_slice_of_fb15k237_with_text() -> None:
    data = load_kg(FIXTURES / "fb15k237_slice")
    assert (data.train.shape[0], data.valid.shape[0], data.test.shape[0]) == (400, 47, 48)
    assert data.entities == sorted(data.entities)  # PyKEEN's id convention
    assert all(data.entity_text) and all(data.relation_text)
    # names + Wikidata descriptions are joined: "<label>, <description>"
    denton = [t for t in data.entity_text if t and t.startswith("United States of America")]
    assert denton and "," in denton[0]
    assert data.relation_label(data.num_relations).startswith("inverse of ")


def test_openke_slice_of_db15k_reports_and_removes_duplicates() -> None:
    data = load_kg(FIXTURES / "db15k_slice")
    assert data.source == "openke"
    assert data.duplicates_removed["valid"] > 0 and data.duplicates_removed["train"] == 0
    rows = {tuple(r) for r in data.valid.tolist()}
    assert len(rows) == data.valid.shape[0]
    # OpenKE stores "head tail relation": the first train line maps to (h, r, t)
    first = (FIXTURES / "db15k_slice" / "train2id.txt").read_text().splitlines()[1].split()
    assert data.train[0].tolist() == [int(first[0]), int(first[2]), int(first[1])]


def test_overlaps_between_splits_by_hand() -> None:
    from prune_compensate_recipes.mkgc.data import KGDataset

    train = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 1, 3]])
    valid = torch.tensor([[1, 0, 2], [3, 1, 0], [0, 1, 2]])  # the first is a training triple
    test = torch.tensor([[3, 1, 0], [2, 0, 0]])  # the first is a valid triple
    data = KGDataset("hand", ["a", "b", "c", "d"], ["r0", "r1"], train, valid, test)
    summary = data.summary()
    assert summary["also_in_train"] == {"valid": 1, "test": 0} and summary["test_also_in_valid"] == 1
    assert data.evaluation_triples("valid").tolist() == [[3, 1, 0], [0, 1, 2]]
    assert torch.equal(data.evaluation_triples("test"), test)


def test_inverse_relations() -> None:
    data = resolve_kg("nations")
    both = data.with_inverse(data.test[:3])
    assert both.shape == (6, 3)
    h, r, t = data.test[0].tolist()
    assert both[3].tolist() == [t, r + data.num_relations, h]


def test_relation_categories_on_a_hand_graph() -> None:
    train = torch.tensor(
        [
            [0, 0, 1],
            [2, 0, 3],  # 1-1
            [0, 1, 1],
            [0, 1, 2],
            [0, 1, 3],  # 1-N
            [1, 2, 0],
            [2, 2, 0],
            [3, 2, 0],  # N-1
            [0, 3, 2],
            [0, 3, 3],
            [1, 3, 2],
            [1, 3, 3],
        ]  # N-N
    )
    assert relation_categories(train, 5) == ["1-1", "1-N", "N-1", "N-N", "unseen"]


def test_images_and_features_layout(tmp_path: Path, image_paths: list[str]) -> None:
    import shutil

    from safetensors.torch import save_file

    (tmp_path / "train.txt").write_text("/m/a\tr\t/m/b\n/m/b\tr\t/m/c\n")
    (tmp_path / "valid.txt").write_text("/m/a\tr\t/m/c\n")
    (tmp_path / "test.txt").write_text("/m/c\tr\t/m/a\n")
    folder = tmp_path / "images" / "m_b"
    folder.mkdir(parents=True)
    for path in image_paths[:2]:
        shutil.copy(path, folder)
    save_file(
        {"features": torch.randn(3, 8), "mask": torch.tensor([True, False, True])},
        str(tmp_path / "image_features.safetensors"),
    )
    data = load_kg(tmp_path)
    assert list(data.entity_images) == [data.entities.index("/m/b")] and len(data.entity_images[1]) == 2
    assert data.image_features.shape == (3, 8) and data.summary()["modalities"]["entities_with_image_features"] == 2


def test_bad_dataset_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "info", str(tmp_path)])
    assert result.exit_code == 2 and "has no train.txt" in result.output


def test_pc_data_info_json(tmp_path: Path) -> None:
    out = tmp_path / "info.json"
    result = runner.invoke(app, ["data", "info", str(FIXTURES / "db15k_slice"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert summary["splits"]["train"] == 200 and summary["entities"] > 0 and summary["relations"] > 0
    assert sum(summary["relation_categories"].values()) == summary["relations"]


EXPECTED_COUNTS = {  # from ../shared/data/README.md (valid of DB15K: unique triples)
    "FB15k-237": (14541, 237, 272115, 17535, 20466),
    "WN18": (40943, 18, 141442, 5000, 5000),
    "WN18RR": (40943, 11, 86835, 3034, 3134),
    "DB15K": (12842, 279, 79222, 7481, 9902),
    "MKG-W": (15000, 169, 34196, 4276, 4274),
    "MKG-Y": (15000, 28, 21310, 2665, 2663),
}


@pytest.mark.skipif(not default_shared_root().is_dir(), reason="../shared/data is not on this machine")
@pytest.mark.parametrize("name", STAGED)
def test_staged_dataset_counts(name: str) -> None:
    data = load_staged(name)
    counts = (data.num_entities, data.num_relations, *(data.split(s).shape[0] for s in ("train", "valid", "test")))
    assert counts == EXPECTED_COUNTS[name]
    if name == "DB15K":
        assert data.duplicates_removed["valid"] == 9904 - 7481
        # measured: most of DB15K's valid triples are training triples too (reported, not removed)
        assert data.summary()["also_in_train"] == {"valid": 6584, "test": 0}
        assert data.summary()["test_also_in_valid"] == 824
        # model selection runs on the 897 valid triples that are not training triples
        selection = data.evaluation_triples("valid")
        assert selection.shape[0] == 7481 - 6584
        train_rows = {tuple(row) for row in data.train.tolist()}
        assert not any(tuple(row) in train_rows for row in selection.tolist())
        assert torch.equal(data.evaluation_triples("test"), data.test)
        assert all(data.entity_text)  # every DB15K entity gets a name through the same-as links


@pytest.mark.skipif(not default_shared_root().is_dir(), reason="../shared/data is not on this machine")
def test_inductive_split_counts() -> None:
    data = load_kg(default_shared_root() / "inductive" / "fb237_v1")
    assert (data.num_entities, data.num_relations, data.train.shape[0]) == (1594, 180, 4245)


# ---------------------------------------------------------------- evaluation


def test_ranks_by_hand_with_ties_and_filtering() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.1, 0.95]])
    # target 1 (score 0.5): entity 5 (0.95) is another known answer -> filtered;
    # entity 0 (0.9) is better; entities 2 and 3 tie with the target
    known = (torch.tensor([0, 0]), torch.tensor([5, 1]))  # the target itself is listed too
    optimistic, pessimistic = filtered_ranks(scores, torch.tensor([1]), known)
    assert optimistic.item() == 2 and pessimistic.item() == 4


def _pykeen_ranks(scores: torch.Tensor, targets: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor]):
    """PyKEEN's own filtering (NaN) and ranking, the independent computation to compare with."""
    from pykeen.evaluation.evaluator import filter_scores_
    from pykeen.evaluation.ranks import Ranks

    scores = scores.clone()
    index = torch.arange(scores.shape[0])
    true = scores[index, targets].clone()
    filter_scores_(scores, torch.stack(known, 1))
    scores[index, targets] = true
    ranks = Ranks.from_scores(true[:, None], scores)
    return ranks.optimistic.double(), ranks.pessimistic.double()


def test_float64_near_ties_are_ranked_like_pykeen() -> None:
    # scores 1e-12 apart: a float32 cast merged them into one tie (MR off by up to 16 on a real test)
    base = torch.full((3, 40), 0.5, dtype=torch.float64)
    base += torch.arange(40, dtype=torch.float64) * 1e-12
    targets = torch.tensor([3, 20, 39])
    known = (torch.tensor([0, 1, 2]), torch.tensor([10, 30, 0]))
    ours = filtered_ranks(base, targets, known)
    theirs = _pykeen_ranks(base, targets, known)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert ours[0].tolist() == [36, 19, 1]  # by hand: entities above the target, minus a filtered one
    assert torch.equal(ours[0], ours[1])  # no ties at all in float64


def test_a_target_scoring_minus_inf_does_not_tie_with_filtered_entries() -> None:
    scores = torch.tensor([[0.3, float("-inf"), 0.1, 0.2, 0.0]], dtype=torch.float64)
    known = (torch.tensor([0, 0, 0]), torch.tensor([2, 3, 1]))  # 2 and 3 filtered, the target listed
    ours = filtered_ranks(scores, torch.tensor([1]), known)
    theirs = _pykeen_ranks(scores, torch.tensor([1]), known)
    # left after filtering: 0 (0.3), 4 (0.0) above the target, and nothing tied with it
    assert ours[0].item() == 3 and ours[1].item() == 3
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


def _toy_scorer(num_entities: int, constant: bool = False) -> InverseRelationScorer:
    table = torch.randn(10, num_entities, generator=torch.Generator().manual_seed(3))

    def fn(heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        if constant:
            return torch.zeros(heads.shape[0], num_entities)
        return table[(heads + 3 * relations) % 10]

    return InverseRelationScorer(fn, num_relations=2)


def test_metrics_by_hand_and_constant_scores() -> None:
    triples = torch.tensor([[0, 0, 1], [1, 1, 2]])
    result = evaluate_link_prediction(_toy_scorer(4, constant=True), triples, triples, 4, 2, show_progress=False)
    m = result.to_dict()
    # constant scores: filtered candidates per query = 4 - (other known answers) -> all tie
    assert m["optimistic"]["both"]["mrr"] == 1.0  # looks perfect optimistically
    assert m["both"]["mr"] == pytest.approx(2.5) and m["pessimistic"]["both"]["mr"] == 4.0
    assert m["both"]["mrr"] == pytest.approx(0.4)
    assert m["both"]["hits@1"] == 0.0 and m["both"]["hits@3"] == 1.0 and m["both"]["n"] == 4


def test_batching_does_not_change_ranks() -> None:
    data = resolve_kg("nations")
    scorer = _toy_scorer(data.num_entities)
    kwargs = dict(num_entities=data.num_entities, num_relations=2, show_progress=False)
    triples = data.test.clone()
    triples[:, 1] %= 2
    a = evaluate_link_prediction(scorer, triples, triples, batch_size=7, **kwargs).to_dict()
    b = evaluate_link_prediction(scorer, triples, triples, batch_size=1000, **kwargs).to_dict()
    assert a == b


def test_matches_pykeen_rank_based_evaluator() -> None:
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import TransE
    from pykeen.triples import TriplesFactory

    data = resolve_kg("nations")
    factory = TriplesFactory(
        data.train,
        entity_to_id={e: i for i, e in enumerate(data.entities)},
        relation_to_id={r: i for i, r in enumerate(data.relations)},
    )
    torch.manual_seed(0)
    model = TransE(triples_factory=factory, embedding_dim=8)  # untrained: many near-ties, a hard case
    model.eval()
    theirs = RankBasedEvaluator().evaluate(
        model, data.test, additional_filter_triples=[data.train, data.valid], batch_size=64, use_tqdm=False
    )

    class PyKEENScorer:
        def score_tails(self, heads, relations):
            return model.score_t(torch.stack([heads, relations], 1))

        def score_heads(self, relations, tails):
            return model.score_h(torch.stack([relations, tails], 1))

    ours = evaluate_link_prediction(
        PyKEENScorer(),
        data.test,
        data.all_triples(),
        data.num_entities,
        data.num_relations,
        batch_size=50,
        show_progress=False,
    )
    for side, their_side in (("both", "both"), ("head", "head"), ("tail", "tail")):
        for rank_type in ("realistic", "optimistic", "pessimistic"):
            mine = ours.metrics(rank_type, side)
            for metric, key in (
                ("mr", "arithmetic_mean_rank"),
                ("mrr", "inverse_harmonic_mean_rank"),
                ("hits@1", "hits_at_1"),
                ("hits@3", "hits_at_3"),
                ("hits@10", "hits_at_10"),
            ):
                expected = theirs.get_metric(f"{their_side}.{rank_type}.{key}")
                assert math.isclose(mine[metric], expected, rel_tol=1e-6, abs_tol=1e-9), (side, rank_type, metric)


def test_one_resolver_for_names_pykeen_graphs_and_folders(tmp_path) -> None:
    from prune_compensate_recipes.mkgc.staged import resolve_dataset

    umls, folder = resolve_dataset("umls")
    assert folder is None and umls.num_entities == 135
    sliced, folder = resolve_dataset(str(FIXTURES / "fb15k237_slice"))
    assert folder == FIXTURES / "fb15k237_slice" and sliced.train.shape[0] > 0
    staged = tmp_path / "DB15K"  # a name found through --data-dir
    staged.mkdir()
    for split in ("train", "valid", "test"):
        (staged / f"{split}.txt").write_text("a\tr\tb\nb\tr\tc\n")
    found, folder = resolve_dataset("DB15K", data_dir=tmp_path)
    assert folder == staged and found.num_entities == 3


def test_ppr_equals_networkx_pagerank() -> None:
    """PPR from each query entity equals networkx's personalised PageRank on the same multigraph
    (both directions of every training triple; an isolated entity and a repeated pair included)."""
    import networkx as nx

    from prune_compensate_recipes.mkgc.data import KGDataset
    from prune_compensate_recipes.mkgc.ppr import PPRScorer

    train = torch.tensor([[0, 0, 1], [1, 1, 2], [2, 0, 0], [2, 1, 3], [3, 0, 4], [0, 1, 1]])
    names = [str(i) for i in range(6)]  # entity 5 has no edge
    data = KGDataset("hand", names, ["r0", "r1"], train, train[:0], train[:0])
    scorer = PPRScorer(data, teleport=0.2, tol=1e-14, max_iterations=1000)
    graph = nx.MultiDiGraph()
    graph.add_nodes_from(range(6))
    for h, _, t in train.tolist():
        graph.add_edge(h, t)
        graph.add_edge(t, h)
    sources = torch.tensor([0, 3, 5])
    ours = scorer.score_tails(sources, torch.zeros(3, dtype=torch.long))
    for row, source in enumerate(sources.tolist()):
        theirs = nx.pagerank(graph, alpha=0.8, personalization={source: 1.0}, tol=1e-14, max_iter=1000)
        expected = torch.tensor([theirs[i] for i in range(6)], dtype=torch.float64)
        torch.testing.assert_close(ours[row], expected, rtol=1e-8, atol=1e-10)
    assert ours[2, 5] == 1.0  # an isolated entity keeps all its mass
    assert torch.equal(scorer.score_heads(torch.zeros(3, dtype=torch.long), sources), ours)


@pytest.mark.parametrize("name", ["rotate", "transe"])
def test_kge_features_score_like_pykeen_and_inverse_rows_reverse_the_triple(name: str) -> None:
    """The feature rows of a trained KGE give PyKEEN's own score of (h, r, t), and the inverse
    relation's row scores (t, r⁻¹, h) the same (−r for TransE, r̄ for unit-modulus RotatE)."""
    from prune_compensate_recipes.mkgc.kge import kge_features, train_kge
    from prune_compensate_recipes.mkgc.staged import resolve_dataset

    dataset = resolve_dataset("nations")[0]
    model, info = train_kge(dataset, name, minutes=1.0, epochs=2, batch_size=256)
    assert info["epochs"] == 2
    entities, relations = kge_features(model, name)
    r_count = dataset.num_relations
    assert entities.shape[0] == dataset.num_entities and relations.shape[0] == 2 * r_count
    triples = dataset.test[:20]
    h, r, t = entities[triples[:, 0]], relations[triples[:, 1]], entities[triples[:, 2]]
    r_inv = relations[triples[:, 1] + r_count]
    with torch.no_grad():
        theirs = model.score_hrt(triples).squeeze(-1)
    if name == "transe":
        ours = -(h + r - t).abs().sum(-1)
        reverse = -(t + r_inv - h).abs().sum(-1)
    else:

        def complex_rows(x: torch.Tensor) -> torch.Tensor:
            return torch.complex(*x.chunk(2, -1))

        hc, rc, tc, ric = map(complex_rows, (h, r, t, r_inv))
        ours = -(hc * rc - tc).abs().square().sum(-1).sqrt()
        reverse = -(tc * ric - hc).abs().square().sum(-1).sqrt()
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reverse, ours, atol=1e-4, rtol=1e-4)
