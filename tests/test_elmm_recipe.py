"""The ELMM recipe end to end: config, loss, train → evaluate → save → reload → evaluate, resume,
images through a real vision tower, ablation switches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli_error
from safetensors.torch import load_file

from prune_compensate import PCError
from prune_compensate.pruning.compensation import LinearCompensation
from prune_compensate_recipes.config import CONFIG_DIR
from prune_compensate_recipes.elmm.config import load_config
from prune_compensate_recipes.elmm.modules import EntityRowScores, elmm_bce_loss
from prune_compensate_recipes.elmm.run import build_run, load_elmm, run_elmm
from prune_compensate_recipes.elmm.train import STATE_DIR, TrainQueries, grouped_bce_loss, grouped_softmax_loss
from prune_compensate_recipes.mkgc.data import pykeen_dataset_dir

CONFIGS = sorted(CONFIG_DIR.glob("elmm_*.yaml"))

FAST = [
    "data=nations",
    "prune.k=3",
    "prune.calibration_samples=64",
    "prompt.entity_tokens=8",
    "prompt.relation_tokens=8",
    "prompt.structure_tokens=true",
    "images.source=none",
    "train.epochs=2",
    "train.batch_size=64",
    "train.lr=1e-3",
    "train.head_lr=3e-3",
    "train.checkpoint_every=4",
    "eval.batch_size=128",
    "eval.timing_queries=4",
]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_instantiates(path: Path) -> None:
    config = load_config(path)
    assert config.train.lr > 0 and isinstance(config.train.lr, float)
    assert config.k <= 32


def test_overrides_and_bad_keys() -> None:
    config = load_config(None, ["train.lr=1e-3", "prune.k=2", "ablation.no_linear=true", "lora.targets=[q, v]"])
    assert config.train.lr == 1e-3 and config.k == 2 and config.init == "none"
    assert load_config(None, ["ablation.no_pruning=true"]).k == 0
    # YAML reads a bare `no` as False: a text field gets the word back, a bool field keeps False
    unquoted = load_config(None, ["train.mixed_precision=no", "eval.mixed_precision=no", "ablation.no_mvtc=no"])
    assert unquoted.train.mixed_precision == "no" and unquoted.eval.mixed_precision == "no"
    assert unquoted.ablation.no_mvtc is False
    with pytest.raises(PCError, match="unknown config key 'train.learning_rate'"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(PCError, match="wants a number"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(PCError, match="0..10"):
        load_config(None, ["images.per_entity=11"])
    with pytest.raises(PCError, match="train.budget_minutes must be 0"):
        load_config(None, ["train.budget_minutes=-5"])
    kge = ["prompt.structure_tokens=true", "prompt.structure_from=rotate", "prompt.structure_minutes=10"]
    with pytest.raises(PCError, match="leaves nothing of train.budget_minutes"):
        load_config(None, [*kge, "train.budget_minutes=10"])
    assert load_config(None, [*kge, "train.budget_minutes=20"]).train.budget_minutes == 20


def test_grouped_loss_equals_the_per_triple_loss() -> None:
    """One forward per (h, r) with all its tails, averaged per triple, is eq. 15 per triple with
    the other known tails left out of the negatives — including a self-loop answer (t = h)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, requires_grad=True)
    answers = [[2, 5], [1], [0, 3, 4]]  # query 2's entity (0) is one of its own answers
    heads = torch.tensor([1, 4, 0])
    positives = torch.zeros(3, 7, dtype=torch.bool)
    for row, tails in enumerate(answers):
        positives[row, tails] = True
    rows = [row for row, tails in enumerate(answers) for _ in tails]
    targets = torch.tensor([t for tails in answers for t in tails])
    per_triple = elmm_bce_loss(logits[rows], targets, heads[rows], known_true=positives[rows])
    assert torch.allclose(grouped_bce_loss(logits, positives, heads), per_triple)


def test_grouped_softmax_loss_is_per_triple_cross_entropy_over_the_filtered_negatives() -> None:
    """Each triple's term is torch's cross-entropy over {its target} ∪ N_q, N_q = all entities but
    the query's answers plus the query's own entity (not when the triple's target is that entity)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, requires_grad=True)
    answers = [[2, 5], [1], [0, 3, 4]]  # query 2's entity (0) is one of its own answers
    heads = [1, 4, 0]
    positives = torch.zeros(3, 7, dtype=torch.bool)
    for row, tails in enumerate(answers):
        positives[row, tails] = True
    losses = []
    for row, tails in enumerate(answers):
        for t in tails:
            keep = [e for e in range(7) if e == t or e not in tails or (e == heads[row] and e != t)]
            candidates = logits[row, keep]
            losses.append(torch.nn.functional.cross_entropy(candidates[None], torch.tensor([keep.index(t)])))
    expected = torch.stack(losses).mean()
    mine = grouped_softmax_loss(logits, positives, torch.tensor(heads))
    torch.testing.assert_close(mine, expected)
    # and the gradient the step takes, which only the selected entries may carry
    torch.testing.assert_close(torch.autograd.grad(mine, logits)[0], torch.autograd.grad(expected, logits)[0])


def test_train_queries_group_answers() -> None:
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [1, 0, 2], [0, 1, 2]])
    queries = TrainQueries.from_triples(triples, num_relations=1)
    assert queries.keys.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert queries.targets(torch.tensor([0, 2]), 3).tolist() == [[False, True, True], [False, False, True]]


def _metrics_equal(a: dict, b: dict) -> None:
    for key in ("mr", "mrr", "hits@1", "hits@3", "hits@10"):
        assert a["both"][key] == pytest.approx(b["both"][key], abs=1e-12), key


def test_minilm_train_evaluate_save_reload(tmp_path: Path) -> None:
    """Real MiniLM, K=3, on Nations: the loss falls, the model beats random ranking, and the
    reloaded checkpoint reproduces the test metrics exactly."""
    config = load_config(None, [*FAST, "train.epochs=3", f"out={tmp_path / 'run'}"])
    document = run_elmm(config, show_progress=False)
    training = document["training"]
    assert training["probe_loss_after"] < 0.85 * training["probe_loss_before"]
    assert document["pruning"]["pruned_layers"] and len(document["pruning"]["pruned_layers"]) == 3
    assert document["test"]["both"]["mrr"] > 0.5  # random ranking of 14 entities: ~0.23
    timing = document["timing"]
    assert timing["pruned_s_per_query"] > 0 and "unpruned_s_per_query" in timing
    assert timing["eval_batch_size"] == 128 and timing["eval_batch_pruned_s_per_query"] > 0
    assert timing["precision"] == "no"  # eval.mixed_precision "train" resolved to the training's
    assert timing["eval_batch_speedup"] == pytest.approx(
        timing["eval_batch_unpruned_s_per_query"] / timing["eval_batch_pruned_s_per_query"]
    )
    reloaded = load_elmm(tmp_path / "run")
    assert sum(isinstance(m, LinearCompensation) for m in reloaded.model.modules()) == 3
    _metrics_equal(reloaded.evaluate("test", show_progress=False).to_dict(), document["test"])


def test_resume_after_interruption_gives_identical_weights(tmp_path: Path) -> None:
    overrides = [*FAST, "train.epochs=1", "eval.timing_queries=0"]  # 15 steps of 64 queries
    full = load_config(None, [*overrides, f"out={tmp_path / 'full'}"])
    run_elmm(full, show_progress=False)
    broken = load_config(None, [*overrides, f"out={tmp_path / 'broken'}"])
    assert run_elmm(broken, show_progress=False, stop_after_steps=6) == {"interrupted_at_step": 6}
    assert (tmp_path / "broken" / STATE_DIR / "progress.json").is_file()  # saved at step 4
    run_elmm(broken, show_progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoint" / "elmm.safetensors"))
    b = load_file(str(tmp_path / "broken" / "checkpoint" / "elmm.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def nations_with_images(tmp_path_factory: pytest.TempPathFactory, image_paths: list[str]) -> Path:
    """Nations with 0, 1 or 3 real PNG images per entity (matplotlib's sample images)."""
    root = tmp_path_factory.mktemp("nations_img")
    for split in ("train", "valid", "test"):
        shutil.copy(pykeen_dataset_dir("nations") / f"{split}.txt", root / f"{split}.txt")
    for index, entity in enumerate(["brazil", "burma", "china", "cuba", "egypt", "india", "usa", "uk"]):
        folder = root / "images" / entity
        folder.mkdir(parents=True)
        for path in image_paths[: 1 + 2 * (index % 2)]:
            shutil.copy(path, folder / Path(path).name)
    return root


def _llava_overrides(data: Path, llava: Path, out: Path) -> list[str]:
    return [
        *FAST,
        f"data={data}",
        f"backbone.model={llava}",
        f"out={out}",
        "prune.k=1",
        "images.source=folder",
        "images.per_entity=3",
        "mvtc.heads=4",
    ]


def test_tiny_llava_with_images_train_save_reload(nations_with_images: Path, family_dirs: dict, tmp_path: Path) -> None:
    config = load_config(None, _llava_overrides(nations_with_images, family_dirs["llava"], tmp_path / "run"))
    document = run_elmm(config, show_progress=False)
    assert document["images"]["source"] == "folder"
    assert document["training"]["probe_loss_after"] < document["training"]["probe_loss_before"]
    cache = next((tmp_path / "run" / "image_cache").iterdir())
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 8  # one per entity with images, encoded once
    stamps = [f.stat().st_mtime_ns for f in files]
    reloaded = load_elmm(tmp_path / "run")  # reuses the cache
    assert [f.stat().st_mtime_ns for f in files] == stamps
    _metrics_equal(reloaded.evaluate("test", show_progress=False).to_dict(), document["test"])
    tokens = load_file(str(files[0]))
    assert tokens["tokens"].shape[-1] == 64 and tokens["cls"].shape[-1] == 64  # projected to D


@pytest.mark.parametrize(
    "switch",
    ["no_image_view", "no_text_view", "no_mvtc", "no_pruning", "no_linear", "no_init", "plain_head"],
)
def test_ablation_switches(switch: str, nations_with_images: Path, family_dirs: dict, tmp_path: Path) -> None:
    overrides = [*_llava_overrides(nations_with_images, family_dirs["llava"], tmp_path), f"ablation.{switch}=true"]
    run = build_run(load_config(None, overrides), show_progress=False)
    entities, relations = torch.tensor([0, 1, 8]), torch.tensor([0, 1, 2])  # brazil: 1 image, burma: 3, jordan: 0
    logits = run.model(*run.inputs(entities, relations))
    assert logits.shape == (3, 14) and torch.isfinite(logits).all()
    compensations = [m for m in run.model.modules() if isinstance(m, LinearCompensation)]
    if switch == "no_pruning":
        assert not compensations
    else:
        assert len(compensations) == 1
    if switch == "no_linear":
        assert compensations[0].kind == "none"
    if switch == "no_init":
        assert torch.count_nonzero(compensations[0].weight) == 0
    if switch == "no_mvtc":
        assert run.model.mvtc is None
    if switch in ("no_image_view", "no_text_view"):
        images = run.bank.batch(entities)
        query = run.prompter(entities, relations)
        span = query.entity_mask | query.relation_mask
        _, mask = run.model.mvtc(run.model._embed(query), span, images.tokens, images.mask, images.cls)
        dropped = slice(0, 4) if switch == "no_image_view" else slice(4, 8)
        assert not mask[:, dropped].any() and mask.sum(1).tolist() == [4, 4, 0]  # the other view is kept
    if switch == "plain_head":
        assert run.model.head.plain


def test_cli_run_elmm_errors_are_one_line() -> None:
    message = cli_error(["run", "elmm", "--config", "no/such.yaml"])
    assert "config no/such.yaml does not exist" in message
    message = cli_error(["run", "elmm", "train.learnin_rate=1"])
    assert "unknown config key" in message


def test_precomputed_image_features(tmp_path: Path) -> None:
    """``image_features.safetensors`` rows (with a mask) become one projected token per entity."""
    from safetensors.torch import save_file

    root = tmp_path / "nations_feat"
    root.mkdir()
    for split in ("train", "valid", "test"):
        shutil.copy(pykeen_dataset_dir("nations") / f"{split}.txt", root / f"{split}.txt")
    mask = torch.arange(14) % 3 != 0
    save_file({"features": torch.randn(14, 20), "mask": mask}, str(root / "image_features.safetensors"))
    config = load_config(None, [*FAST, f"data={root}", "images.source=auto", f"out={tmp_path / 'run'}"])
    run = build_run(config, show_progress=False)
    assert run.image_source == "features" and run.model.feature_proj.in_features == 20
    images = run.bank.batch(torch.tensor([0, 1]))
    assert images.tokens.shape == (2, 1, 1, 20) and images.mask.tolist() == [[False], [True]]
    assert torch.isfinite(run.model(*run.inputs(torch.tensor([0, 1]), torch.tensor([3, 4])))).all()


def test_unreadable_image_is_a_clear_error(tmp_path: Path, nations_with_images: Path, family_dirs: dict) -> None:
    root = tmp_path / "broken"
    shutil.copytree(nations_with_images, root)
    (root / "images" / "brazil" / "broken.png").write_bytes(b"not a png")
    config = load_config(None, _llava_overrides(root, family_dirs["llava"], tmp_path / "run"))
    with pytest.raises(PCError, match="cannot read image .*broken.png"):
        build_run(config, show_progress=False)


@pytest.fixture
def fresh_accelerate_state() -> None:
    """accelerate keeps one state per process (one precision per process, as a real run has);
    tests that change the precision reset it around themselves (accelerate's own tests do the same
    with this private helper; if it disappears, this fixture fails loudly)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize(
    ("train", "evaluate", "expected"),
    [("no", "train", None), ("bf16", "train", torch.bfloat16), ("bf16", "no", None), ("no", "bf16", torch.bfloat16)],
)
def test_scoring_runs_at_the_eval_precision(train: str, evaluate: str, expected: torch.dtype | None) -> None:
    """Every model scored (the trained one, the unpruned twin of the timing) runs under
    ``eval.mixed_precision``, "train" meaning the training's: one precision for pruned and
    unpruned, and float32 ranking when asked for (bf16 autocast is slow on CPUs without bf16)."""
    from types import SimpleNamespace

    from prune_compensate_recipes.elmm.run import inference_precision

    config = load_config(None, [f"train.mixed_precision={train}", f"eval.mixed_precision={evaluate}"])
    run = SimpleNamespace(config=config, device=torch.device("cpu"))
    with inference_precision(run):  # type: ignore[arg-type]
        assert torch.is_autocast_enabled("cpu") == (expected is not None)
        product = torch.ones(2, 2) @ torch.ones(2, 2)
        assert product.dtype == (expected or torch.float32)


def test_bf16_training_autocasts_its_forward_and_ranks_at_eval_precision(
    fresh_accelerate_state: None, tmp_path: Path
) -> None:
    """With ``train.mixed_precision=bf16`` the training forward passes run under bf16 autocast, and
    validation and the test ranking under ``eval.mixed_precision`` (here float32): accelerate's
    permanent autocast of the prepared model's forward is undone."""
    overrides = [*FAST, "train.epochs=1", "train.mixed_precision=bf16", "eval.mixed_precision=no"]
    config = load_config(None, [*overrides, "eval.timing_queries=0", "train.eval_every=4", f"out={tmp_path}"])
    run = build_run(config, show_progress=False)
    seen: list[tuple[bool, bool]] = []  # (model in training mode, autocast on) per backbone forward
    hook = run.model.text_model.register_forward_hook(
        lambda module, *_: seen.append((module.training, torch.is_autocast_enabled("cpu")))
    )
    from prune_compensate_recipes.elmm import run as run_module

    queries = TrainQueries.from_triples(run.dataset.with_inverse(run.dataset.train), run.dataset.num_relations)

    def make_batch(index: torch.Tensor) -> tuple:
        entities, relations = queries.keys[index, 0], queries.keys[index, 1]
        return run.inputs(entities, relations), queries.targets(index, run.dataset.num_entities), entities

    try:
        run_module.train(
            run.model,
            queries,
            make_batch,
            lambda: run.evaluate("valid", 8, show_progress=False).metrics()["mrr"],
            config.train,
            tmp_path / "state",
            show_progress=False,
        )
        run.scores(torch.tensor([0]), torch.tensor([0]))
    finally:
        hook.remove()
    assert {autocast for training, autocast in seen if training} == {True}
    assert {autocast for training, autocast in seen if not training} == {False}  # validation and scoring


def test_second_precision_in_one_process_is_a_clear_error(fresh_accelerate_state: None, tmp_path: Path) -> None:
    from accelerate import Accelerator

    Accelerator(mixed_precision="no")
    config = load_config(None, [*FAST, "train.mixed_precision=bf16", "eval.timing_queries=0", f"out={tmp_path}"])
    with pytest.raises(PCError, match="already initialised .* fresh process"):
        run_elmm(config, show_progress=False)


def test_bf16_mixed_precision_trains(
    fresh_accelerate_state: None, nations_with_images: Path, family_dirs: dict, tmp_path: Path
) -> None:
    """accelerate's bf16 autocast (CPU here, GPUs the same way) through MVTC, compensation and LoRA."""
    overrides = [
        *_llava_overrides(nations_with_images, family_dirs["llava"], tmp_path / "run"),
        "train.mixed_precision=bf16",
        "train.epochs=1",
        "eval.timing_queries=0",
    ]
    document = run_elmm(load_config(None, overrides), show_progress=False)
    assert document["training"]["probe_loss_after"] < document["training"]["probe_loss_before"]
    assert all(h["valid_mrr"] > 0 for h in document["training"]["history"])


def test_structure_tokens_from_a_trained_rotate_train_save_reload(tmp_path: Path) -> None:
    """``prompt.structure_from=rotate``: a PyKEEN RotatE trains first, its frozen rows (inverse
    relations as conjugates) feed the structure tokens through a learned map; the checkpoint keeps
    the rows, so a reload scores exactly as the run did without training the KGE again."""
    overrides = [*FAST, "train.epochs=1", "eval.timing_queries=0", "prompt.structure_from=rotate"]
    config = load_config(None, [*overrides, "prompt.structure_minutes=0.05", f"out={tmp_path / 'run'}"])
    document = run_elmm(config, show_progress=False)
    assert document["structure_pretraining"]["epochs"] >= 1 and document["structure_pretraining"]["model"] == "RotatE"
    reloaded = load_elmm(tmp_path / "run")
    rows = reloaded.model.entity_structure.features
    assert rows.shape == (14, 400)  # Nations: 14 entities, RotatE dim 200 as [Re; Im]
    assert not any(p is rows for p in reloaded.model.parameters())  # frozen: a buffer, not trained
    _metrics_equal(reloaded.evaluate("test", show_progress=False).to_dict(), document["test"])
    with pytest.raises(PCError, match="structure_minutes"):
        load_config(None, [*FAST, "prompt.structure_from=rotate"])


@pytest.mark.parametrize("row_head", [False, True], ids=["free_head", "head_from_structure"])
def test_structure_score_starts_at_the_kge_and_trains_saves_reloads(tmp_path: Path, row_head: bool) -> None:
    """``prompt.structure_score``: before training the logits are exactly the KGE's scores plus its
    margin (the head's last layer starts at zero, a free matrix or the map onto the KGE's entity
    rows), so the model ranks as RotatE does; training moves the head, and a reload scores as the
    run did. Without a KGE the config refuses."""
    overrides = [*FAST, "train.epochs=1", "eval.timing_queries=2", "prompt.structure_from=rotate"]
    overrides += [f"prompt.head_from_structure={str(row_head).lower()}"]
    overrides += ["prompt.structure_minutes=0.05", "prompt.structure_score=true", "train.validate_at_start=true"]
    overrides += [f"out={tmp_path / 'run'}"]
    config = load_config(None, overrides)
    run = build_run(config, show_progress=False)
    prior = run.model.structure_score
    entities, relations = run.dataset.train[:8, 0], run.dataset.train[:8, 1]
    with torch.no_grad():
        expected = prior.raw(entities, relations) + 9.0  # RotatE's NSSA margin
    torch.testing.assert_close(run.scores(entities, relations), expected, atol=1e-5, rtol=1e-5)
    document = run_elmm(config, show_progress=False)
    first = document["training"]["history"][0]
    assert first["step"] == 0 and first["valid_mrr"] > 0  # the KGE alone, validated and selectable
    reloaded = load_elmm(tmp_path / "run")
    last = reloaded.model.head.scores
    assert isinstance(last, EntityRowScores) == row_head
    if document["training"]["best_step"] > 0:  # the text head trained
        assert (last.project.weight if row_head else last.weight).abs().sum() > 0
    _metrics_equal(reloaded.evaluate("test", show_progress=False).to_dict(), document["test"])
    assert document["timing"]["unpruned_s_per_query"] > 0  # the unpruned twin gets the same KGE rows
    again = run_elmm(config, show_progress=False)  # a rerun resumes: the KGE's rows are reused, not retrained
    assert "reused_from" in again["structure_pretraining"]
    _metrics_equal(again["test"], document["test"])
    with pytest.raises(PCError, match="need a KGE to score with"):
        load_config(None, [*FAST, "prompt.structure_score=true"])


def test_backbone_dropout_zero_makes_training_forward_deterministic() -> None:
    """``backbone.dropout=0`` (with ``lora.dropout=0``) turns off every dropout, attention's too:
    a forward in training mode equals the eval-mode forward; the default keeps MiniLM's 0.1."""
    config = load_config(None, [*FAST, "prune.k=0", "backbone.dropout=0", "lora.dropout=0"])
    run = build_run(config, show_progress=False)
    entities, relations = run.dataset.train[:4, 0], run.dataset.train[:4, 1]
    inputs = run.inputs(entities, relations)
    with torch.no_grad():
        run.model.train()
        training = run.model(*inputs)
        run.model.eval()
        torch.testing.assert_close(training, run.model(*inputs))
    default = build_run(load_config(None, [*FAST, "prune.k=0"]), show_progress=False)
    assert {m.p for m in default.model.backbone.modules() if isinstance(m, torch.nn.Dropout)} >= {0.1}
    with pytest.raises(PCError, match="backbone.dropout"):
        load_config(None, ["backbone.dropout=1.5"])
