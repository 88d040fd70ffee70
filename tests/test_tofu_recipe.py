"""TOFU recipe: tokens, context sampling, the mixture of messages, training, transfer to a graph
with other entity and relation counts, the protocol's files, ablations, visual tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prune_compensate import PCError
from prune_compensate_recipes.config import CONFIG_DIR
from prune_compensate_recipes.mkgc.data import pykeen_dataset_dir
from prune_compensate_recipes.tofu.config import load_config
from prune_compensate_recipes.tofu.graph import ContextSampler, KGGraph, num_structural_tokens
from prune_compensate_recipes.tofu.model import UNREACHED, MixtureOfMessages, Tofu
from prune_compensate_recipes.tofu.run import (
    build_model,
    evaluate,
    load_tofu,
    make_tokenizer,
    prepare_graph,
    run_tofu,
    train_logits,
    train_on,
)
from prune_compensate_recipes.tofu.tokens import TextTokenizer

CONFIGS = sorted(CONFIG_DIR.glob("tofu_*.yaml"))

SMALL = [
    "model.hidden=16",
    "model.se_layers=2",
    "model.gp_layers=2",
    "model.me_heads=2",
    "structure.max_nodes_per_hop=8",
    "structure.max_edges=150",
    "tokens.text_tokens=4",
    "train.batch_size=16",
    "train.lr=3e-3",
    "train.valid_triples=40",
    "eval.batch_size=64",
]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_instantiates(path: Path) -> None:
    config = load_config(path)
    assert config.graphs and config.train.lr > 0 and config.model.hidden == 32
    assert set(config.messages) == {"transe", "distmult", "rotate"}


def test_paper_defaults_and_bad_values() -> None:
    config = load_config(None)
    t, m = config.train, config.model
    assert (t.epochs, t.batch_size, t.lr, m.hidden, m.se_layers, m.gp_layers) == (30, 256, 5e-4, 32, 6, 6)
    assert load_config(None, ["ablation.single_message=rotate"]).messages == ["rotate"]
    with pytest.raises(PCError, match="message functions"):
        load_config(None, ["model.messages=[transe, complex]"])
    with pytest.raises(PCError, match="unknown config key"):
        load_config(None, ["model.layers=3"])


def test_text_tokenizer_is_deterministic_and_picks_rare_tokens() -> None:
    texts = ["the city of paris", "the city of lyon", None, "the the the"]
    first = TextTokenizer(n=3, select="first")
    ids = first(texts)
    assert torch.equal(ids, TextTokenizer(n=3, select="first")(texts))
    assert ids.shape == (4, 3) and (ids[2] == -1).all()
    vocab = first.tokenizer
    assert vocab.convert_ids_to_tokens(ids[0].tolist()) == ["the", "city", "of"]
    rare = TextTokenizer(n=2, select="idf")(texts)
    assert torch.equal(rare, TextTokenizer(n=2, select="idf")(texts))
    # "paris" occurs once among the texts, "the" in three: the rare word is kept, reading order stays
    words = vocab.convert_ids_to_tokens([i for i in rare[0].tolist() if i >= 0])
    assert "paris" in words and "the" not in words
    assert vocab.convert_ids_to_tokens([i for i in rare[3].tolist() if i >= 0]) == ["the"]


def test_mixture_weights_sum_to_one() -> None:
    torch.manual_seed(0)
    mim = MixtureOfMessages(8, ["transe", "distmult", "rotate"])
    weights = mim.weights(torch.randn(3, 10, 8) * 5, torch.randn(3, 8))
    assert weights.shape == (3, 10, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 10))
    assert (weights > 0).all()
    # the weights depend on the relation (the point of a relation-aware mixture)
    assert not torch.allclose(weights[0, 0], weights[0, 1])


def _chain_graph() -> KGGraph:
    """0 -r0-> 1 -r0-> 2 -r1-> 3, plus 4 -r1-> 5 (another example of r1)."""
    triples = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 1, 3], [4, 1, 5]])
    return KGGraph.from_triples(triples, 6, 2)


def test_structural_tokens_are_relative_positions() -> None:
    graph = _chain_graph()
    sampler = ContextSampler(graph, hops=2, examples=1, max_nodes_per_hop=10)
    # query (2, r1, ?) hiding its own edge 2 (and inverse 6): the only other r1 example is 4 → 5
    hidden = torch.tensor([2, graph.partner(torch.tensor([2])).item()])
    ctx = sampler.sample(torch.tensor([2]), torch.tensor([1]), [hidden], seed=0)
    far = 3
    token = ctx.node_token[ctx.query_node[0]].item()
    assert token // (far + 1) ** 2 == 0  # distance 0 to the query entity
    assert ctx.node_token.max() < num_structural_tokens(2)
    # the hidden edge 2→3 is not in the context, so 3 is not reached from the query
    assert ctx.node_token.numel() == 5  # 0, 1, 2 (query side) and 4, 5 (the example)
    assert torch.equal(
        ctx.node_token, sampler.sample(torch.tensor([2]), torch.tensor([1]), [hidden], seed=0).node_token
    )


def test_training_hides_the_target_edge() -> None:
    """With a 1-layer GP, the answer of a training query is reachable only through the query's own
    edge; hiding it must leave the answer at the unreached prior score."""
    graph = _chain_graph()
    config = load_config(None, [*SMALL, "model.gp_layers=1", "tokens.text_tokens=0"])
    model = build_model(config).eval()
    from prune_compensate_recipes.tofu.run import GraphData
    from prune_compensate_recipes.tofu.tokens import EntityTokens

    empty = torch.full((6, 0), -1, dtype=torch.long)
    data = GraphData("chain", None, graph, EntityTokens(empty, empty), ContextSampler(graph, 2, 1, 8))  # type: ignore[arg-type]
    with torch.no_grad():
        scores = train_logits(model, data, torch.tensor([3]), seed=0, device=torch.device("cpu"))  # 4 -r1-> 5
    assert scores[0, 5] == UNREACHED and scores[0, 4] > UNREACHED  # only the query entity is reached
    with torch.no_grad():  # evaluation (nothing hidden) reaches 5 in one hop
        ctx = data.sampler.sample(torch.tensor([4]), torch.tensor([1]), [torch.empty(0, dtype=torch.long)], 0)
        visible = model(graph, data.tokens, torch.tensor([4]), ctx)
    assert visible[0, 5] > UNREACHED and visible[0, 0] == UNREACHED


def test_unreached_prior_scores_by_hand_and_never_sees_the_hidden_edge() -> None:
    """With ``model.unreached_prior`` an entity out of reach gets ``b + w1·log(1 + tails of the
    query relation) + w2·log(1 + in-degree)``, counted without the query's hidden edges."""
    import math

    graph = _chain_graph()
    config = load_config(None, [*SMALL, "model.gp_layers=1", "tokens.text_tokens=0", "model.unreached_prior=true"])
    model = build_model(config).eval()
    from prune_compensate_recipes.tofu.run import GraphData
    from prune_compensate_recipes.tofu.tokens import EntityTokens

    empty = torch.full((6, 0), -1, dtype=torch.long)
    data = GraphData("chain", None, graph, EntityTokens(empty, empty), ContextSampler(graph, 2, 1, 8))  # type: ignore[arg-type]
    with torch.no_grad():
        scores = train_logits(model, data, torch.tensor([3]), seed=0, device=torch.device("cpu"))  # 4 -r1-> 5 hidden
    (w1, w2), b = model.prior.weight.tolist(), model.prior.bias.item()
    # 5: the hidden edge was its only r1 edge and only in-edge -> nothing left
    assert scores[0, 5].item() == pytest.approx(b)
    # 3: tail of r1 once (2 -r1-> 3), in-degree 1
    assert scores[0, 3].item() == pytest.approx(b + (w1 + w2) * math.log(2))
    # 0: no r1 tail, in-degree 1 (the inverse edge of 0 -r0-> 1)
    assert scores[0, 0].item() == pytest.approx(b + w2 * math.log(2))
    assert scores[0, 4] > UNREACHED and scores.min() > UNREACHED  # nothing left at the shared constant
    with torch.no_grad():  # evaluation hides nothing: 5 is reached in one hop and scored by GP
        ctx = data.sampler.sample(torch.tensor([4]), torch.tensor([1]), [torch.empty(0, dtype=torch.long)], 0)
        visible = model(graph, data.tokens, torch.tensor([4]), ctx)
    assert visible[0, 0].item() == pytest.approx(b + w2 * math.log(2))
    # the prior is trained: a loss on an unreached answer reaches its parameters
    model.train()
    logits = train_logits(model, data, torch.tensor([3]), seed=0, device=torch.device("cpu"))
    torch.nn.functional.cross_entropy(logits, torch.tensor([5])).backward()
    assert model.prior.bias.grad is not None and model.prior.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def nations_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tofu, Path]:
    config = load_config(None, [*SMALL, "graphs=[nations]"])
    torch.manual_seed(0)
    model = build_model(config)
    data = prepare_graph("nations", config, make_tokenizer(config))
    cpu = torch.device("cpu")
    untrained = evaluate(model, data, "valid", config, cpu, limit=40, show_progress=False).metrics()["mrr"]
    info = train_on(
        model,
        [data],
        config,
        epochs=1,
        lr=3e-3,
        max_minutes=0,
        max_steps=80,
        label="t",
        device=cpu,
        show_progress=False,
    )
    assert info["steps"] == 80 and info["stopped_by"] == "80 steps"
    # the loss falls (Nations' queries have many answers, so the cross-entropy stays high) and the
    # valid MRR (the same 40 triples) rises well above the untrained model's
    assert info["loss_last"] < info["loss_first"] - 0.05, info
    assert info["best_valid_mrr"] > untrained + 0.1, (untrained, info["best_valid_mrr"])
    out = tmp_path_factory.mktemp("tofu")
    from prune_compensate_recipes.tofu.run import save_checkpoint

    save_checkpoint(model, config, out)
    return model, out


def test_a_nations_model_transfers_to_umls(nations_model: tuple[Tofu, Path]) -> None:
    model, out = nations_model
    saved = load_file(str(out / "checkpoint" / "tofu.safetensors"))
    assert not any("text_codebook" in k for k in saved)  # frozen tokenizer codebook: never saved
    # no tensor is sized by a graph: Nations has 14 entities and 55 relations, UMLS 135 and 46
    assert not {14, 55, 110} & {d for t in saved.values() for d in t.shape}
    loaded, config = load_tofu(out)
    for key, tensor in loaded.state_dict().items():
        if key in saved:
            assert torch.equal(tensor, saved[key])
    umls = prepare_graph("umls", config, make_tokenizer(config))
    assert umls.dataset.num_entities == 135 and umls.dataset.num_relations == 46
    result = evaluate(loaded, umls, "test", config, torch.device("cpu"), limit=60, show_progress=False)
    metrics = result.metrics()
    assert metrics["n"] == 120 and 1 <= metrics["mr"] <= 135 and 0 < metrics["mrr"] <= 1


def test_evaluation_does_not_depend_on_the_batch(nations_model: tuple[Tofu, Path]) -> None:
    """Each query's context is drawn from its own seed: the metrics at eval.batch_size 3 and 32 are
    the same (a seed summed over the batch made them differ)."""
    model, out = nations_model
    _, config = load_tofu(out)
    data = prepare_graph("nations", config, make_tokenizer(config))
    cpu = torch.device("cpu")
    ranks = []
    for batch_size in (3, 32):
        config.eval.batch_size = batch_size
        result = evaluate(model, data, "test", config, cpu, limit=40, show_progress=False)
        ranks.append(result.ranks("realistic", "both"))
    assert torch.equal(ranks[0], ranks[1])
    # the context of one query alone equals its part of a batched draw
    queries, relations = torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3])
    empty = [torch.empty(0, dtype=torch.long)] * 3
    batched = data.sampler.sample(queries, relations, empty, [11, 12, 13])
    alone = data.sampler.sample(queries[1:2], relations[1:2], empty[:1], [12])
    assert torch.equal(batched.node_token[batched.node_graph == 1], alone.node_token)


def test_run_writes_zero_shot_and_fine_tune_metrics(nations_model: tuple[Tofu, Path], tmp_path: Path) -> None:
    _, trained = nations_model
    config = load_config(
        None,
        [
            *SMALL,
            "graphs=[]",
            f"checkpoint={trained}",
            "targets=[kinships]",
            "finetune.epochs=1",
            "finetune.max_steps=3",
            "eval.test_triples=30",
            f"out={tmp_path}",
        ],
    )
    documents = run_tofu(config, show_progress=False, command="test")
    assert [d["setting"] for d in documents] == ["zero-shot", "fine-tune"]
    assert documents[1]["finetuning"]["steps"] == 3
    for setting in ("zero-shot", "fine-tune"):
        doc = json.loads((tmp_path / f"metrics_kinships_{setting}.json").read_text())
        assert doc["test"]["both"]["n"] == 60 and doc["graph"]["entities"] == 104 and doc["parameters"] > 0
        assert doc["versions"]["torch"] == torch.__version__ and "prune-compensate-recipes" in doc["versions"]
    assert (tmp_path / "checkpoint" / "tofu.safetensors").is_file()


@pytest.mark.parametrize("switch", ["no_se", "no_structural_tokens", "no_text", "no_visual", "single_message=distmult"])
def test_ablation_switches(switch: str) -> None:
    key, _, value = switch.partition("=")
    config = load_config(None, [*SMALL, f"ablation.{key}={value or 'true'}"])
    torch.manual_seed(0)
    model = build_model(config)
    data = prepare_graph("nations", config, make_tokenizer(config))
    logits = train_logits(model, data, torch.arange(8), seed=0, device=torch.device("cpu"))
    logits.logsumexp(-1).sum().backward()
    se_grad = model.se.rel_update[0].weight.grad
    token_grad = model.se.token_embedding.weight.grad
    if key == "no_se":
        assert se_grad is None and token_grad is None
    elif key == "no_structural_tokens":
        assert se_grad is not None and token_grad is None
    else:
        assert se_grad is not None and token_grad is not None
    if key == "no_text":
        assert data.tokens.text.shape[1] == 0 and model.me.text_codebook is None
    else:
        assert data.tokens.text.shape[1] == 4
    if key == "single_message":
        assert model.gp.mim[0].names == ["distmult"]


def test_visual_tokens_from_a_vq_file(tmp_path: Path) -> None:
    folder = tmp_path / "nations"
    shutil.copytree(pykeen_dataset_dir("nations"), folder)
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (14, 6))
    ids[3] = -1  # an entity without images
    save_file({"token_ids": ids, "codebook": torch.randn(50, 32)}, str(folder / "visual_tokens.safetensors"))
    config = load_config(None, [*SMALL, "tokens.visual_tokens=4"])
    data = prepare_graph(str(folder), config, make_tokenizer(config))
    assert torch.equal(data.tokens.visual, ids[:, :4]) and data.tokens.visual_codebook.shape == (50, 32)
    model = build_model(config).eval()
    entities = torch.tensor([0, 1])
    with torch.no_grad():
        before = model.me(data.tokens.text[entities], data.tokens.visual[entities], data.tokens.visual_codebook)
        after = model.me(data.tokens.text[entities], data.tokens.visual[entities] * 0, data.tokens.visual_codebook)
    assert not torch.allclose(before, after)  # the visual tokens reach the entity vector
    assert (
        prepare_graph(str(folder), load_config(None, [*SMALL, "ablation.no_visual=true"]), None).tokens.visual.shape[1]
        == 0
    )
    save_file({"token_ids": ids[:5], "codebook": torch.randn(50, 32)}, str(folder / "visual_tokens.safetensors"))
    with pytest.raises(PCError, match="one row per entity"):
        prepare_graph(str(folder), config, None)
    (folder / "visual_tokens.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PCError, match="unreadable"):
        prepare_graph(str(folder), config, None)


def test_bad_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PCError, match="not a TOFU checkpoint"):
        load_tofu(tmp_path)


def test_bf16_autocast_trains() -> None:
    config = load_config(None, [*SMALL, "train.mixed_precision=bf16", "train.valid_triples=10"])
    torch.manual_seed(0)
    model = build_model(config)
    data = prepare_graph("nations", config, make_tokenizer(config))
    info = train_on(
        model,
        [data],
        config,
        epochs=1,
        lr=3e-3,
        max_minutes=0,
        max_steps=3,
        label="t",
        device=torch.device("cpu"),
        show_progress=False,
    )
    assert info["steps"] == 3 and torch.isfinite(torch.tensor(info["loss_last"]))
    with pytest.raises(PCError, match="mixed_precision"):
        load_config(None, ["train.mixed_precision=fp16"])


def test_gp_node_budget_keeps_the_strongest_new_entities_per_query() -> None:
    from prune_compensate_recipes.tofu.model import GlobalPropagation

    gp = GlobalPropagation(8, 1, ["transe"], max_new_nodes=2)
    fresh_graph = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    priority = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.2, 0.8, 0.7])
    assert gp.keep_strongest(fresh_graph, priority, 2).tolist() == [1, 2, 5, 6]
    # on a real graph the budget bounds what is reached, and scores stay defined for everything
    config = load_config(None, [*SMALL, "model.gp_layers=3", "model.gp_max_new_nodes=3"])
    model = build_model(config).eval()
    data = prepare_graph("nations", config, make_tokenizer(config))
    with torch.no_grad():
        scores = train_logits(model, data, torch.arange(4), seed=0, device=torch.device("cpu"))
    reached = (scores > UNREACHED).sum(1)
    assert scores.shape == (4, 14) and (reached <= 1 + 3 * 3).all() and (reached > 1).all()


def _run_weights(tmp: Path, name: str, stop: int | None = None) -> dict[str, torch.Tensor] | dict[str, int]:
    overrides = [*SMALL, "graphs=[nations]", "train.epochs=1", "train.max_steps=8", "train.eval_every=4"]
    config = load_config(None, [*overrides, "eval.test_triples=10", f"out={tmp / name}"])
    result = run_tofu(config, show_progress=False, stop_after_steps=stop)
    if stop is not None:
        return result
    return load_file(str(tmp / name / "checkpoint" / "tofu.safetensors"))


def test_training_resumes_after_a_kill_to_identical_weights(tmp_path: Path) -> None:
    """Bit-identical needs one thread: multi-threaded scatter reductions reorder float additions
    (two uninterrupted 4-thread runs already differ by ~1e-9)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = _run_weights(tmp_path, "full")
        assert _run_weights(tmp_path, "broken", stop=6) == {"interrupted_at_step": 6}
        assert (tmp_path / "broken" / "train_state" / "progress.json").is_file()  # saved at step 4
        resumed = _run_weights(tmp_path, "broken")
    finally:
        torch.set_num_threads(threads)
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


def test_weights_are_seeded_by_the_config(tmp_path: Path) -> None:
    """Two fresh processes build the same initial weights from the same config (``train.seed``)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from safetensors.torch import save_file\n"
        "from prune_compensate_recipes.tofu.config import load_config\n"
        "from prune_compensate_recipes.tofu.run import run_tofu\n"
        f"config = load_config(None, {[*SMALL, 'graphs=[nations]', 'train.epochs=0']!r} + ['out=' + sys.argv[1]])\n"
        "run_tofu(config, show_progress=False)\n"
    )
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, capture_output=True)
    a = load_file(str(tmp_path / "a" / "checkpoint" / "tofu.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint" / "tofu.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_state_from_another_config_is_refused_not_resumed(tmp_path: Path) -> None:
    """A killed run's state resumes under a longer budget, but a changed learning rate (or graph, or
    anything that shapes training) is a one-line error instead of a silent resume of the old run."""
    overrides = [*SMALL, "graphs=[nations]", "train.epochs=1", "train.eval_every=4", "eval.test_triples=10"]
    out = f"out={tmp_path / 'run'}"
    config = load_config(None, [*overrides, "train.max_steps=8", out])
    assert run_tofu(config, show_progress=False, stop_after_steps=6) == {"interrupted_at_step": 6}
    with pytest.raises(PCError, match=r"another config \(train.lr differ\).*train.resume=false"):
        run_tofu(load_config(None, [*overrides, "train.max_steps=8", "train.lr=0.01", out]), show_progress=False)
    longer = run_tofu(load_config(None, [*overrides, "train.max_steps=10", out]), show_progress=False)
    assert longer[0]["training"]["steps"] == 10  # resumed at step 4 and ran to the new budget
