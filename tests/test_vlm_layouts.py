"""Layouts beyond the plain pre-norm decoder: encoder–decoders, fused q/k/v projections, processors
that insert their own image tokens, and the limit K < L for models that generate."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TEXTS, cli_error, write_jsonl
from transformers import GPT2Config, GPT2LMHeadModel

from pc_testkit.tiny_models import build_persimmon
from prune_compensate import CalibrationSample, PCError, load_model
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.model.locate import find_decoder
from prune_compensate.pruning.config import PruneConfig
from prune_compensate.pruning.prune import kv_bytes_per_token, prune_


def test_encoder_decoder_prunes_the_decoder_unless_asked(family_dirs: dict) -> None:
    model = load_model(family_dirs["florence2"]).model
    decoder = find_decoder(model)
    assert decoder.blocks_path == "model.language_model.decoder.layers" and decoder.caches and decoder.cross_attends
    encoder = find_decoder(model, stack="encoder")
    assert encoder.blocks_path == "model.language_model.encoder.layers" and not encoder.caches
    # BART's embedding norm sits beside the blocks too, but runs before them: never the final state
    assert any(name.endswith("layernorm_embedding") for name, _ in decoder.ends)
    explicit = find_decoder(model, path="model.language_model.encoder.layers")
    assert explicit.blocks is encoder.blocks
    with pytest.raises(PCError, match=r"lists seen: .*model.language_model.decoder.layers"):
        find_decoder(model, path="model.language_model.layers")
    with pytest.raises(PCError, match="one text stack"):
        find_decoder(load_model(family_dirs["llama"]).model, stack="encoder")


def test_encoder_stack_has_no_kv_cache_to_report(family_dirs: dict, image_paths: list[str]) -> None:
    loaded = load_model(family_dirs["florence2"])
    samples = [CalibrationSample(t, image_paths[:1], f"s{i}") for i, t in enumerate(TEXTS * 2)]
    result = prune_(loaded, PruneConfig(layers=[1], stack="encoder", held_out=0.25, show_progress=False), samples)
    assert result.kv_cache_bytes_per_token is None
    assert result.decoder["blocks"] == "model.language_model.encoder.layers" and not result.decoder["caches"]
    assert result.error["lstsq"]["relative"] < result.error["none"]["relative"]


def test_both_stacks_drop_the_most_redundant_over_encoder_and_decoder(
    family_dirs: dict, image_paths: list[str], tmp_path: Path
) -> None:
    """``--stack both``: the K units with the highest residual cosine over the two stacks (each
    stack's own profile on the fitting samples says which), the encoder's round first; the
    checkpoint holds both stacks' replacements and reloads to the same outputs."""
    import torch

    from prune_compensate import load_pruned, save_pruned
    from prune_compensate.pruning.profile import ProfileConfig, profile

    samples = [CalibrationSample(t, image_paths[:1], f"s{i}") for i, t in enumerate(TEXTS * 2)]
    fit = samples[:6]  # held_out=0.25 of 8 holds out the last 2
    loaded = load_model(family_dirs["florence2"])
    cosines = []
    for stack in ("encoder", "decoder"):
        result = profile(loaded, ProfileConfig(k=0, stack=stack, show_progress=False), fit)
        cosines += [(layer.cosine_mean, stack, layer.index) for layer in result.layers]
    ranked = sorted(cosines, reverse=True)
    decoder_layers = sum(stack == "decoder" for _, stack, _ in cosines)
    # the smallest K whose top K spans both stacks and keeps a decoder layer for generate
    k = next(
        k
        for k in range(2, len(ranked))
        if {s for _, s, _ in ranked[:k]} == {"encoder", "decoder"}
        and sum(s == "decoder" for _, s, _ in ranked[:k]) < decoder_layers
    )
    expected = {stack: sorted(i for _, s, i in ranked[:k] if s == stack) for stack in ("encoder", "decoder")}
    result = prune_(loaded, PruneConfig(k=k, stack="both", held_out=0.25, show_progress=False), samples)
    (encoder_round,) = result.earlier_stacks
    assert encoder_round["decoder"]["blocks"] == "model.language_model.encoder.layers"
    assert encoder_round["pruned_layers"] == expected["encoder"] and result.pruned_layers == expected["decoder"]
    assert result.decoder["caches"] and result.kv_cache_bytes_per_token is not None
    out = save_pruned(loaded.model, loaded.processor, tmp_path / "both", result.to_manifest())
    reloaded = load_pruned(out)
    replaced = [n for n, m in reloaded.model.named_modules() if type(m).__name__ == "LinearCompensation"]
    assert sum(".encoder." in n for n in replaced) == len(expected["encoder"])
    assert sum(".decoder." in n for n in replaced) == len(expected["decoder"])
    encoder = BatchEncoder(reloaded.processor, 32)
    encoder.decoder_text = True
    inputs = encoder(samples[:2])
    with torch.no_grad():
        diff = (loaded.model(**inputs).logits - reloaded.model(**inputs).logits).abs().max()
    assert diff <= 1e-5
    with pytest.raises(PCError, match="one stack at a time"):
        ProfileConfig(stack="both")
    with pytest.raises(PCError, match="not of both"):  # refused by the config, before any model work
        PruneConfig(layers=[0], stack="both")
    with pytest.raises(PCError, match="one text stack"):
        prune_(load_model(family_dirs["llama"]), PruneConfig(k=1, stack="both", show_progress=False), samples)


def test_pc_prune_decoder_option(family_dirs: dict, image_paths: list[str], tmp_path: Path) -> None:
    calib = write_jsonl(tmp_path / "c.jsonl", TEXTS, image_paths[:1])
    args = ["prune", str(family_dirs["florence2"]), "--calib", str(calib), "--out", str(tmp_path / "o"), "--quiet"]
    assert "is not a list of attention blocks" in cli_error([*args, "--decoder", "model.vision_tower"])
    assert "unknown --stack 'middle'" in cli_error([*args, "--stack", "middle"])
    # refused before the model loads (the configs check it), for pc profile as for pc prune
    assert "unknown --stack 'middle'" in cli_error(["profile", "/nonexistent-model", "--stack", "middle", "--quiet"])


def _by_hand_kv(config, layers: int, bytes_per_value: int = 4) -> int:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return layers * 2 * kv_heads * head_dim * bytes_per_value


def test_fused_qkv_counts_only_keys_and_values(tmp_path: Path) -> None:
    persimmon = load_model(build_persimmon(tmp_path / "persimmon")).model  # nn.Linear query_key_value
    layout = find_decoder(persimmon)
    assert layout.core_names[0] == "self_attn" and hasattr(layout.core(0), "query_key_value")
    assert kv_bytes_per_token(persimmon, layout, range(2)) == _by_hand_kv(persimmon.config, 2) > 0
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=50)).eval()  # Conv1D c_attn
    layout = find_decoder(gpt2)
    assert kv_bytes_per_token(gpt2, layout, [0, 2]) == 2 * 2 * 32 * 4


def test_processors_that_insert_their_own_image_tokens(family_dirs: dict, image_paths: list[str]) -> None:
    sample = CalibrationSample("a photo", image_paths[:1], "s0")
    for name, own in [("blip2", True), ("kosmos2", True), ("florence2", True), ("llava", False)]:
        encoder = BatchEncoder(load_model(family_dirs[name]).processor, 32)
        assert encoder.inserts_own_placeholders(sample) is own, name
    blip = BatchEncoder(load_model(family_dirs["blip2"]).processor, 32)
    assert blip.image_token() == "<image>"  # an AddedToken in the processor, text in the prompt
    ids = blip([sample])["input_ids"][0].tolist()
    assert ids.count(blip.tokenizer.convert_tokens_to_ids("<image>")) == 4  # num_query_tokens, not 8


def test_pruning_every_layer_of_a_generating_model_is_refused(family_dirs: dict) -> None:
    loaded = load_model(family_dirs["llama"])
    samples = [CalibrationSample(t) for t in TEXTS]
    with pytest.raises(PCError, match="leaves no layer with a KV cache"):
        prune_(loaded, PruneConfig(k=2, show_progress=False), samples)
    with pytest.raises(PCError, match="prune at most 1 attention layers"):
        prune_(loaded, PruneConfig(layers=[0, 1], show_progress=False), samples)


def test_default_calibration_of_a_vlm_has_images(family_dirs: dict) -> None:
    from prune_compensate.calibration.sources import (
        CalibrationConfig,
        embedded_image_calibration_path,
        for_model,
        read_samples,
        split_samples,
    )

    config = CalibrationConfig(n_samples=40, seed=3)
    text = read_samples(config)
    llava = BatchEncoder(load_model(family_dirs["llava"]).processor, 32)
    mixed = for_model(text, config, llava.has_images)
    assert len(mixed) == 40 and sum(bool(s.images) for s in mixed) == 20
    fit, held = split_samples(mixed, 0.2)
    assert any(s.images for s in held) and any(not s.images for s in held)  # the error report sees both
    assert all(Path(s.images[0]).is_file() for s in mixed if s.images)
    # PaliGemma refuses a prompt without an image: its default set is the image samples alone
    paligemma = BatchEncoder(load_model(family_dirs["paligemma"]).processor, 32)
    only = for_model(text, config, paligemma.has_images, needs_images=True)
    assert only and all(s.images for s in only)
    n_lines = len(embedded_image_calibration_path().read_text().splitlines())
    assert len(only) == min(40, n_lines)
    # a text-only model keeps the text; a text-only set on a VLM is used as given, with a warning
    assert for_model(text, config, BatchEncoder(load_model(family_dirs["llama"]).processor, 32).has_images) == text
    user = CalibrationConfig(source="mine.jsonl")
    with pytest.warns(UserWarning, match="have no images but the model takes them"):
        assert for_model(text, user, llava.has_images) == text


def test_embedded_images_carry_a_licence() -> None:
    import json

    from prune_compensate.calibration.sources import embedded_image_calibration_path

    path = embedded_image_calibration_path()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["licence"] for r in records} <= {"public domain", "CC0"}
    listed = (path.parent / "images" / "LICENSES.md").read_text()
    for record in records:
        assert Path(record["images"][0]).name in listed


def test_hybrid_stack_prunes_only_its_attention_layers(tmp_path: Path) -> None:
    from pc_testkit.tiny_models import build_lfm2
    from prune_compensate import load_pruned, profile
    from prune_compensate.checkpoint.save import save_pruned
    from prune_compensate.pruning.profile import ProfileConfig

    loaded = load_model(build_lfm2(tmp_path / "lfm2"))
    layout = find_decoder(loaded.model)
    assert layout.blocks_path == "model.layers" and layout.attention_layers == [1, 3]
    samples = [CalibrationSample(f"{t} ({i})") for i, t in enumerate(TEXTS * 3)]
    ranked = profile(loaded, ProfileConfig(k=1, show_progress=False), samples)
    assert sorted(ranked.ranking) == [1, 3] and [layer.index for layer in ranked.layers] == [1, 3]
    with pytest.raises(PCError, match="layer 0 of Lfm2ForCausalLM has no attention"):
        prune_(loaded, PruneConfig(layers=[0], show_progress=False), samples)
    with pytest.raises(PCError, match="leaves no layer with a KV cache"):
        prune_(loaded, PruneConfig(k=2, show_progress=False), samples)
    result = prune_(loaded, PruneConfig(k=1, held_out=0.25, show_progress=False), samples)
    assert (
        result.pruned_layers == ranked.chosen and result.error["lstsq"]["relative"] < result.error["none"]["relative"]
    )
    assert result.kv_cache_bytes_per_token["after"] == result.kv_cache_bytes_per_token["before"] // 2
    reloaded = load_pruned(save_pruned(loaded.model, loaded.processor, tmp_path / "p", result.to_manifest()))
    inputs = BatchEncoder(reloaded.processor, 32)(samples[:2])
    generated = reloaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_models_that_need_an_image_in_every_prompt(family_dirs: dict) -> None:
    from prune_compensate.calibration.forward import model_needs_images
    from prune_compensate.calibration.sources import check_images

    for name, needs in [("blip2", True), ("kosmos2", True), ("paligemma", True), ("llava", False), ("llama", False)]:
        loaded = load_model(family_dirs[name])
        assert model_needs_images(loaded.model, BatchEncoder(loaded.processor, 32)) is needs, name
    # text-only samples for such a model: one line before any work, not a traceback mid-fit
    blip = load_model(family_dirs["blip2"])
    with pytest.raises(PCError, match="needs an image in every prompt, but 4 of 4 calibration samples"):
        prune_(
            blip,
            PruneConfig(k=1, show_progress=False),
            [CalibrationSample(t, [], f"s{i}") for i, t in enumerate(TEXTS)],
        )
    with pytest.raises(PCError, match="needs an image"):
        check_images([CalibrationSample("a")], BatchEncoder(blip.processor, 32).has_images, needs_images=True)


def test_model_without_its_image_processor_is_refused_in_one_line(family_dirs: dict) -> None:
    """Loaded without an image processor, a model calibrates on text alone. One whose forward
    requires another input (BLIP: ``pixel_values``) or refuses text alone (Pix2Struct wants
    ``flattened_patches``) is refused before any work, with the reason, instead of a traceback
    from inside transformers; text models and VLMs with their processor are not affected."""
    from pc_testkit.survey import survey_family
    from prune_compensate.calibration.forward import text_only_failure

    blip = survey_family("blip", "BlipForConditionalGeneration", [])
    assert (blip.status, blip.stage) == ("refused", "prune")
    assert "does not run on text alone (its forward requires pixel_values)" in blip.reason
    pix2struct = survey_family("pix2struct", "Pix2StructForConditionalGeneration", [])
    assert pix2struct.status == "refused" and "ValueError: You have to specify flattened_patches" in pix2struct.reason
    for name in ("llama", "llava"):
        loaded = load_model(family_dirs[name])
        assert text_only_failure(loaded.model, BatchEncoder(loaded.processor, 32)) is None, name


def test_embedded_default_prunes_a_vlm_end_to_end(family_dirs: dict) -> None:
    """The embedded image + text default through prune_ itself: probes never mix text and image
    samples in one batch (processors cannot pad such a batch), and the held-out report sees both."""
    from prune_compensate import CalibrationConfig

    loaded = load_model(family_dirs["llava"])
    config = PruneConfig(k=1, show_progress=False, calibration=CalibrationConfig(n_samples=16, batch_size=4, seed=1))
    result = prune_(loaded, config)
    assert result.calibration["n_fit"] + result.calibration["n_held_out"] == 16
    assert result.error["lstsq"]["relative"] < result.error["none"]["relative"]


def test_mllama_text_only_generate_after_pruning(tmp_path: Path) -> None:
    """Mllama reads ``layer.keys.numel()`` on every cache layer (looking for cached cross-attention
    states), so a dropped layer's cache slot must hold empty tensors, not ``None`` (transformers'
    ``DummyLayer``): text-only ``generate`` of a pruned Mllama crashed on it."""
    import torch
    from test_prune import _greedy_without_cache

    from pc_testkit.survey import build_from_config

    loaded = load_model(build_from_config("mllama", "MllamaForConditionalGeneration", tmp_path / "mllama"))
    samples = [CalibrationSample(f"text number {i} about things") for i in range(8)]
    result = prune_(loaded, PruneConfig(k=1, held_out=0.25, show_progress=False), samples)
    inputs = BatchEncoder(loaded.processor, 32)(samples[:2])
    suppress = list(loaded.tokenizer.all_special_ids)
    generated = loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False, suppress_tokens=suppress)
    assert result.k == 1 and torch.equal(generated, _greedy_without_cache(loaded.model, inputs, 3, suppress))


def test_mla_kv_bytes_match_the_real_cache(tmp_path: Path) -> None:
    """Multi-head latent attention caches the compressed latent (kv_lora_rank + qk_rope_head_dim per
    token and layer), not per-head keys and values: the reported KV bytes per token equal what the
    transformers cache really holds, before and after pruning (before: reported as 0)."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    from pc_testkit.survey import wordpiece

    tokenizer = wordpiece()
    config = DeepseekV3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, kv_lora_rank=8, q_lora_rank=None, qk_rope_head_dim=4,
        qk_nope_head_dim=4, v_head_dim=4, first_k_dense_replace=2, n_routed_experts=4, num_experts_per_tok=2,
        n_group=1, topk_group=1,
    )  # fmt: skip
    torch.manual_seed(0)
    DeepseekV3ForCausalLM(config).save_pretrained(tmp_path / "mla")
    tokenizer.save_pretrained(tmp_path / "mla")
    loaded = load_model(tmp_path / "mla")
    model = loaded.model
    layout = find_decoder(model)

    def cached_bytes_per_token() -> float:
        ids = torch.randint(0, len(tokenizer), (1, 5))
        with torch.no_grad():
            cache = model(input_ids=ids, use_cache=True).past_key_values
        stored = [t for layer in cache.layers for t in (layer.keys, layer.values) if t is not None]
        return sum(t.numel() * t.element_size() for t in stored) / ids.shape[1]

    assert kv_bytes_per_token(model, layout, layout.attention_layers) == cached_bytes_per_token() == 2 * 12 * 4
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 2)]
    result = prune_(loaded, PruneConfig(layers=[0], held_out=0, compare=(), show_progress=False), samples)
    assert result.kv_cache_bytes_per_token == {"before": 96, "after": 48}
    assert cached_bytes_per_token() == 48


def test_forward_parameters_read_once_match_the_live_signature() -> None:
    """The cached parameters of ``model.forward`` are its live signature's, self excluded, and a
    forward set on the instance (a wrapper) is read from the instance, not the class cache."""
    import inspect

    from prune_compensate.calibration.forward import forward_kwargs, forward_parameters

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    assert list(forward_parameters(model)) == list(inspect.signature(model.forward).parameters)
    assert forward_kwargs(model) == {"use_cache": False, "logits_to_keep": 1}
    model.forward = lambda input_ids=None: None
    assert list(forward_parameters(model)) == ["input_ids"] and forward_kwargs(model) == {}


class _OnePerSampleProcessor:
    """A processor that takes images only as a flat list (GOT-OCR 2 reads a nested list as the pages
    of one document) and names a text placeholder apart from its image token (Qianfan-OCR)."""

    image_processor = object()
    image_token = "<ctx>"
    image_placeholder_token = "<image>"

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer = tokenizer
        self.calls: list[str] = []

    def __call__(self, text: list[str], images: list | None = None, **kwargs: object) -> dict:
        nested = images is not None and any(isinstance(group, list) for group in images)
        self.calls.append("nested" if nested else "flat")
        if nested:
            raise ValueError("Nested images are only supported with `multi_page` set to `True`")
        assert all(prompt.count("<image>") == 1 for prompt in text)
        return dict(self.tokenizer(text, padding=True, return_tensors="pt"))


def test_encoder_sends_flat_images_to_a_processor_that_refuses_nested_lists(
    family_dirs: dict, image_paths: list[str]
) -> None:
    processor = _OnePerSampleProcessor(load_model(family_dirs["llama"]).processor)
    encoder = BatchEncoder(processor, 32)
    samples = [CalibrationSample(t, image_paths[:1], f"s{i}") for i, t in enumerate(TEXTS[:2])]
    encoder._inserts_own = False  # the probe itself is tested above; here only the batch call counts
    assert encoder.image_placeholder() == "<image>" and encoder.image_token() == "<ctx>"
    first = encoder(samples)
    second = encoder(samples)
    assert processor.calls == ["nested", "flat", "flat"]  # refused once, then flat from the start
    assert first["input_ids"].shape == second["input_ids"].shape
    two_images = [CalibrationSample(TEXTS[0], image_paths[:2], "two")]
    with pytest.raises(PCError, match="Nested images"):  # flat would lose which image is whose
        encoder(two_images)


def test_mm_token_type_ids_are_asked_of_the_processor_when_the_model_takes_them(
    family_dirs: dict, image_paths: list[str]
) -> None:
    """Models with multimodal rotary positions (Cosmos 3 Edge) refuse image inputs without
    ``mm_token_type_ids``, which a processor returns only when asked unless its defaults say so."""
    import torch

    from prune_compensate.calibration.forward import takes_mm_token_types

    loaded = load_model(family_dirs["qwen2_vl"])
    assert takes_mm_token_types(loaded.model) and not takes_mm_token_types(load_model(family_dirs["llama"]).model)
    processor = loaded.processor
    processor.return_mm_token_type_ids = False  # as a processor whose defaults do not return them
    encoder = BatchEncoder(processor, 64)
    samples = [CalibrationSample(t, image_paths[:1], f"s{i}") for i, t in enumerate(TEXTS[:2])]
    assert "mm_token_type_ids" not in encoder(samples)
    encoder.mm_token_types = True
    inputs = encoder(samples)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == image_id)


def test_layer_that_computes_the_shared_position_bias_is_never_pruned(tmp_path: Path, image_paths: list[str]) -> None:
    """Why T5-style stacks (Pix2Struct, UDOP) keep their first attention: only it holds
    ``relative_attention_bias``; it returns the bias and every later layer adds that bias to its
    scores. Replaced, it computes no bias, and the later layers run without relative positions
    (Pix2Struct's fill in zeros), silently. So the profile ranks only the other layers and
    ``--layers`` naming it is refused."""
    from pc_testkit.processor_build import build_with_processor
    from prune_compensate import profile
    from prune_compensate.pruning.profile import ProfileConfig

    loaded = load_model(build_with_processor("pix2struct", "Pix2StructForConditionalGeneration", tmp_path / "p2s"))
    layout = find_decoder(loaded.model)
    assert layout.blocks_path == "decoder.layer" and layout.attention_layers == [0, 1]
    assert layout.bias_owners == [0] and layout.prunable_layers == [1]
    samples = [CalibrationSample(f"{t} ({i})", image_paths[:1]) for i, t in enumerate(TEXTS)]
    with pytest.raises(PCError, match="layer 0 of Pix2StructForConditionalGeneration computes the relative position"):
        prune_(loaded, PruneConfig(layers=[0], show_progress=False), samples)
    ranked = profile(loaded, ProfileConfig(k=1, show_progress=False), samples)
    assert [layer.index for layer in ranked.layers] == [0, 1] and ranked.ranking == [1] == ranked.chosen


def test_block_whose_last_child_is_attention_reads_the_residual_at_its_output(tmp_path: Path) -> None:
    """Nemotron-H's blocks each hold one mixer after a norm (Mamba, attention, MoE or MLP): in an
    attention block nothing runs after attention, so the residual after attention is the block's
    output. Such blocks were refused as "pre-norm but no norm runs between attention and the MLP"."""
    import torch

    from pc_testkit.survey import build_from_config
    from prune_compensate import load_pruned
    from prune_compensate.calibration.forward import TokenMask, find_residual_sites
    from prune_compensate.checkpoint.save import save_pruned

    loaded = load_model(build_from_config("nemotron_h", "NemotronHForCausalLM", tmp_path / "nh"))
    layout = find_decoder(loaded.model)
    assert layout.attention_layers == [2, 6]  # one attention block in each run of four mixers
    samples = [CalibrationSample(f"{t} ({i})") for i, t in enumerate(TEXTS * 3)]
    inputs = BatchEncoder(loaded.processor, 32)(samples[:2])
    token_mask = TokenMask()
    token_mask.set(inputs["attention_mask"])
    sites = find_residual_sites(loaded.model, layout, inputs, token_mask)
    assert [(s.module, s.where) for s in sites if s is not None] == [("", "output"), ("", "output")]
    block = layout.blocks[2]  # by hand: its output is its input plus what attention returned
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            seen[name + "_in"] = args[0] if args else kwargs["hidden_states"]
            seen[name] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [block.register_forward_hook(keep("block"), with_kwargs=True)]
    handles.append(block.mixer.register_forward_hook(keep("attention"), with_kwargs=True))
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(seen["block"], seen["block_in"] + seen["attention"])
    result = prune_(loaded, PruneConfig(k=1, held_out=0.25, show_progress=False), samples)
    assert result.error["lstsq"]["relative"] < result.error["none"]["relative"]
    reloaded = load_pruned(save_pruned(loaded.model, loaded.processor, tmp_path / "p", result.to_manifest()))
    generated = reloaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
