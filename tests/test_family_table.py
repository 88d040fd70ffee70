"""The family table cannot rot: it lists every family the installed transformers registers, the
markdown is what the tool renders from the committed run, and the survey itself works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_tool

from pc_testkit.shrink import shrink_config
from pc_testkit.survey import registered_families, survey_family

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_tool("family_table")


def test_table_lists_every_registered_family() -> None:
    data = json.loads((ROOT / "benchmarks" / "families" / "results" / "families.json").read_text())
    listed = {row["model_type"] for row in data["rows"]}
    missing = sorted(set(registered_families()) - listed)
    assert not missing, f"transformers registers families the table lacks: {missing}; run tools/family_table.py"
    assert {row["status"] for row in data["rows"]} <= {"supported", "refused", "error", "not built"}
    for row in data["rows"]:
        assert row["status"] == "supported" or row["reason"], row["model_type"]


def test_not_built_families_do_not_build_at_full_size_either() -> None:
    """A "not built" row is transformers' limit, not the survey's: each such family's default
    config, unshrunk, fails to build its registered class (on the meta device, so no memory is
    spent). When one builds, the survey's shrinking is what fails it, and the row must be mended."""
    import warnings

    import torch
    import transformers
    from transformers import AutoConfig

    for row in _rows(status="not built"):
        with (
            warnings.catch_warnings(),
            torch.device("meta"),
            pytest.raises((AttributeError, KeyError, TypeError, ValueError, ImportError)),
        ):
            warnings.simplefilter("ignore")
            getattr(transformers, row["model_class"])(AutoConfig.for_model(row["model_type"]))


def test_markdown_is_rendered_from_the_results() -> None:
    tool = _tool()
    data = json.loads(tool.RESULTS.read_text())
    assert tool.MARKDOWN.read_text() == tool.render(data), "run tools/family_table.py --markdown"


def test_shrink_config_reaches_sub_configs() -> None:
    from transformers import AutoConfig

    config = shrink_config(AutoConfig.for_model("llava"))
    assert config.text_config.hidden_size == 64 and config.vision_config.num_hidden_layers == 2


def test_survey_runs_a_generic_and_a_hand_built_family(image_paths: list[str]) -> None:
    generic = survey_family("glm5_next", "Glm5NextForConditionalGeneration", image_paths[:1])
    assert (generic.status, generic.path) == ("refused", "text")  # the image path failed: text, saying why
    assert generic.images_reason.startswith("at prune: ") and "block layout is not supported" in generic.reason
    hand = survey_family("llava", "LlavaForConditionalGeneration", image_paths[:1])
    assert (hand.status, hand.path) == ("supported", "images")


def test_text_only_class_runs_on_images_as_the_text_model_its_checkpoints_are() -> None:
    """Why Mistral 4 runs inside Mistral 3's class: transformers registers it for image-text-to-text
    with ``Mistral4ForCausalLM``, whose forward takes no image (when it gains one, the special case
    may go); its published checkpoints (Mistral Small 4) are ``Mistral3ForConditionalGeneration``
    with a Mistral 4 ``text_config``. The survey builds that, with Mistral 3's processor, and runs
    it on an image (``test_family_built_from_config_runs_on_an_image``)."""
    from pc_testkit.families import overrides
    from pc_testkit.survey import takes_images

    assert not takes_images(registered_families()["mistral4"])
    assert takes_images(registered_families()[overrides("mistral4").published_as_text_model_of])
    (row,) = _rows(model_type="mistral4")
    assert (row["status"], row["path"], row["decoder"]) == ("supported", "images", "model.language_model.layers")
    assert "Mistral3ForConditionalGeneration" in row["images_reason"]


def test_shrink_config_keeps_the_relations_models_check() -> None:
    """Each relation broke a family's tiny build before: one entry per layer in every per-layer list
    (Step 3.7's ``mlp_layer_types``, Mistral Large 4's ``kv_source_layers``), key/value heads equal
    to query heads in multi-head latent attention (GLM-5), the MLA head width equal to its rotary
    part (Kimi K2.5, Mistral 4), rotary sections summing to half the rotated width (GLM-4V-MoE
    rotates half the head; Ernie 4.5-VL stacks the first two sections), 0 staying "none", and widths
    that named another config's (Kimi K2.5's projector, Muse Glimmer's shuffled vision width,
    Unlimited-OCR's SAM downsampling channels, dots3's vision and audio adapter widths), widths a
    config derives at every load (MiniMax-M3-VL's ``merged_hidden_size``, text width × the tower's
    merge²; Step 3.7's tower ``intermediate_size``, width × ``mlp_ratio``), a hierarchical tower's
    per-stage tuples (Muse Spark's audio encoder), a per-layer MLA width that made the head width
    (dots3's sliding layers) and a window Step 3.7's forward always reads."""
    from transformers import AutoConfig

    large = shrink_config(AutoConfig.for_model("mistral_large4")).text_config
    n = large.num_hidden_layers
    assert len(large.mlp_layer_types) == len(large.layer_types) == len(large.no_rope_layers) == n
    assert large.kv_source_layers == list(range(n)) and set(large.mlp_layer_types) == {"dense", "sparse"}
    assert n == 4  # two of each MLP kind; the layer-index list is not a kind (counted, it gave 144 layers)
    glm5 = shrink_config(AutoConfig.for_model("glm5_next")).text_config
    assert glm5.num_key_value_heads == glm5.num_attention_heads and glm5.qk_rope_head_dim == 0
    glm4v = shrink_config(AutoConfig.for_model("glm4v_moe")).text_config
    assert sum(glm4v.rope_parameters["mrope_section"]) == 4
    ernie = shrink_config(AutoConfig.for_model("ernie4_5_vl_moe")).text_config
    first, second, _ = ernie.rope_parameters["mrope_section"]
    assert first == second and sum(ernie.rope_parameters["mrope_section"]) == 8
    kimi = shrink_config(AutoConfig.for_model("kimi_k25"))  # the projector's width is the tower's (1152)
    assert kimi.projection_hidden_size == kimi.vision_config.hidden_size != 1152
    glimmer = shrink_config(AutoConfig.for_model("muse_glimmer"))  # the width after a 2 × 2 pixel shuffle
    assert glimmer.out_hidden_size == glimmer.vision_config.hidden_size * glimmer.vision_config.merge_size**2
    ocr = shrink_config(AutoConfig.for_model("unlimited_ocr")).vision_config  # SAM's output meets CLIP's width
    assert ocr.sam_config.downsample_channels[-1] == ocr.encoder_config.hidden_size != 1024
    assert ocr.sam_config.downsample_channels[0] * 2 == ocr.sam_config.downsample_channels[-1]  # (512, 1024) scaled
    dots3 = shrink_config(AutoConfig.for_model("dots3_note"))
    assert dots3.vision_config.adapter_in_dim == dots3.vision_config.hidden_size != 1536
    assert dots3.vision_config.adapter_out_dim == dots3.text_config.hidden_size != 5120
    assert dots3.audio_config.adapter_input_size == dots3.audio_config.hidden_size != 1280
    text = dots3.text_config
    sliding = [i for i, kind in enumerate(text.layer_types) if kind == "sliding_attention"]
    assert sliding and all(
        text.per_layer_config[i].qk_nope_head_dim + text.qk_rope_head_dim == text.head_dim for i in sliding
    )
    minimax = shrink_config(AutoConfig.for_model("minimax_m3_vl"))
    assert minimax.merged_hidden_size == minimax.text_config.hidden_size * minimax.vision_config.spatial_merge_size**2
    step = shrink_config(AutoConfig.for_model("step3p7"))
    vision = step.vision_config
    assert vision.intermediate_size == int(vision.hidden_size * vision.mlp_ratio) and step.text_config.sliding_window
    gemma3n = shrink_config(AutoConfig.for_model("gemma3n")).text_config  # last layers reuse caches of their kind
    shared = gemma3n.layer_types[-gemma3n.num_kv_shared_layers :]
    assert set(shared) <= set(gemma3n.layer_types[: -gemma3n.num_kv_shared_layers]) and gemma3n.kv_sharing_modes
    fast = shrink_config(AutoConfig.for_model("fast_vlm")).vision_config  # a timm tower: timm sets its sizes
    assert (fast.architecture, fast.hidden_size) == ("fastvit_mci3", 3072)
    spark = shrink_config(AutoConfig.for_model("muse_spark")).audio_config
    stages = spark.num_hidden_layers
    assert stages == 2 and len(spark.depths) == len(spark.hidden_sizes) == len(spark.patch_sizes) == stages
    for model_type, model_class in [
        ("dots3_note", "Dots3NoteForConditionalGeneration"),  # built: its config validated every relation above
        ("kimi_k25", "Kimi_K25ForConditionalGeneration"),
        ("glm4v_moe", "Glm4vMoeForConditionalGeneration"),
        ("unlimited_ocr", "UnlimitedOcrForConditionalGeneration"),  # reads _layer_type on every cache layer
    ]:
        row = survey_family(model_type, model_class, [])
        assert row.status == "supported", (model_type, row.reason)


def test_fit_vocabulary_sizes_the_vocabulary_to_the_tokenizer_and_keeps_ids_inside() -> None:
    """A published vocabulary (LLaVA-OneVision's Qwen2: 151,936) is cut to the survey tokenizer's,
    and the ids the config names past it (image 151,646, video 151,647) move to distinct fresh ids
    inside it; a small one (Qwen3-Omni's thinker) grows; Gemma 3n, whose per-layer input
    vocabulary follows the main one, keeps its published size."""
    from transformers import AutoConfig

    from pc_testkit.shrink import fit_vocabulary, sub_configs

    size = 30522
    onevision = shrink_config(AutoConfig.for_model("llava_onevision"))
    assert onevision.text_config.vocab_size > 100_000
    fit_vocabulary(onevision, size)
    ids = (onevision.image_token_index, onevision.video_token_index)
    assert sorted(ids) == [size, size + 1] and onevision.text_config.vocab_size == size + 2
    thinker = shrink_config(AutoConfig.for_model("qwen3_omni_moe_thinker"))
    fit_vocabulary(thinker, size)
    named = [
        value
        for sub in sub_configs(thinker)
        for field, value in vars(sub).items()
        if field.endswith(("_token_id", "_token_index")) and isinstance(value, int)
    ]
    assert thinker.text_config.vocab_size >= size and max(named) < thinker.text_config.vocab_size
    gemma3n = shrink_config(AutoConfig.for_model("gemma3n"))
    published = gemma3n.text_config.vocab_size
    fit_vocabulary(gemma3n, size)
    assert gemma3n.text_config.vocab_size == published


def test_shrink_config_keeps_layer_indices_inside_the_tiny_towers() -> None:
    """ViP-LLaVA reads vision hidden states (-2, -5, -8, -11, 6), Mllama (3, 7, 15, 23, 30), the SAM
    tower of DeepSeek-VL-Hybrid marks its global-attention layers (2, 5, 8, 11): each indexed past a
    two-layer tower (IndexError). Their number stays (projectors count them: Mllama's
    ``vision_output_dim`` is the width times one more than their number); Mllama's text stack reads
    the image only through cross-attention layers, which a two-layer stack would have lost."""
    from transformers import AutoConfig

    layers = 2
    vip = shrink_config(AutoConfig.for_model("vipllava"))
    assert len(vip.vision_feature_layer) == 5 and all(-layers <= i < layers for i in vip.vision_feature_layer)
    mllama = shrink_config(AutoConfig.for_model("mllama"))
    vision = mllama.vision_config
    assert len(vision.intermediate_layers_indices) == 5
    assert all(0 <= i < vision.num_hidden_layers for i in vision.intermediate_layers_indices)
    assert vision.vision_output_dim == vision.hidden_size * 6
    assert mllama.text_config.num_hidden_layers == layers + 1 and mllama.text_config.cross_attention_layers == [layers]
    sam = shrink_config(AutoConfig.for_model("deepseek_vl_hybrid")).high_res_vision_config
    assert len(sam.global_attn_indexes) == 4 and all(0 <= i < sam.num_hidden_layers for i in sam.global_attn_indexes)


def test_family_processor_falls_back_to_the_models_own_package() -> None:
    """Qwen's Omni thinkers and GLM-4.6V-based families are registered without a processor class,
    yet their package exports the one their checkpoints ship; else the family a model's modular
    source derives from names it; with neither, None.
    When the first assertion fails, transformers registers the thinker's processor itself."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    from pc_testkit.processor_build import family_processor

    assert "qwen2_5_omni_thinker" not in PROCESSOR_MAPPING_NAMES
    assert family_processor("llava", "LlavaForConditionalGeneration") == "LlavaProcessor"
    assert family_processor("qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration") == (
        "Qwen2_5OmniProcessor"
    )
    # the modular parent: this reads transformers' source layout (models/NAME/modular_NAME.py), and
    # these two fail loudly when that layout changes
    assert family_processor("cosmos3_omni", "Cosmos3OmniForConditionalGeneration") == "Qwen3VLProcessor"
    assert family_processor("glm_ocr", "GlmOcrForConditionalGeneration") == "Glm4vProcessor"
    assert family_processor("mistral4", "Mistral4ForCausalLM") is None  # a text LM: no parent has one


def test_processors_that_need_their_checkpoints_chat_template() -> None:
    """Why ShieldGemma 2 and PP-Chart2Table get a chat template in the survey: built from classes,
    ShieldGemma 2's processor refuses every input (it writes its policy prompts through the
    template), and PP-Chart2Table's writes no image token at all, so its model finds no place for
    the image features (its checkpoints' template writes them). When an assertion here fails,
    transformers has changed these processors and the special case may go. Mistral 4's class takes
    no image, so the survey does not try one."""
    from PIL import Image
    from transformers import PPChart2TableProcessor, ShieldGemma2Processor

    from pc_testkit.processor_build import (
        _processor,
        image_entry_template,
    )
    from pc_testkit.survey import takes_images

    image = Image.new("RGB", (32, 32))
    assert not takes_images("Mistral4ForCausalLM")
    assert takes_images("GotOcr2ForConditionalGeneration") and takes_images("Kosmos2_5ForConditionalGeneration")

    from transformers import Gemma3ImageProcessor, GotOcr2ImageProcessor, PretrainedConfig

    config = PretrainedConfig()

    shield, _ = _processor(ShieldGemma2Processor, Gemma3ImageProcessor(), None, None, config, None, {}, {}, [])
    with pytest.raises(ValueError, match="chat template"):
        shield(images=[image], text=["a"])
    # the processor names the begin-of-image token as its image token; the features go elsewhere
    assert shield.image_token_id == shield.tokenizer.convert_tokens_to_ids("<start_of_image>")

    tokens = ["<img>", "<imgpad>", "</img>"]
    chart, tokenizer = _processor(
        PPChart2TableProcessor, GotOcr2ImageProcessor(), None, None, config, None, {}, {}, tokens
    )
    ids = chart(images=[image], text=["a"], return_tensors="pt")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<imgpad>") not in ids.tolist()[0]
    chart.chat_template = image_entry_template(*tokens, per_image=5)
    prompt = chart.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a"}]}]
    )
    assert prompt.count("<imgpad>") == 5 and prompt.index("<img>") < prompt.index("</img>")


def test_fuyu_survey_tokenizer_starts_every_text_with_the_piece_its_processor_strips() -> None:
    """Why Fuyu's tiny tokenizer is sentencepiece-like: its processor looks ``|SPEAKER|`` up as a
    plain vocabulary entry and drops the first id of each image's placeholder ids, the ``▁`` its
    checkpoints' tokenizer puts before a text; with a plain WordPiece tokenizer it dropped an image
    token and then refused the batch. When the processor stops stripping, the special case may go."""
    import inspect

    from transformers import FuyuProcessor

    from pc_testkit.tiny_models import wordpiece

    assert '["input_ids"][..., 1:]' in inspect.getsource(FuyuProcessor.__call__)
    tokenizer = wordpiece({"image_token": "<image>"}, words=["|SPEAKER|", "|NEWLINE|"])
    ids = tokenizer("|SPEAKER||SPEAKER||NEWLINE|a cat", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["\u2581", "|SPEAKER|", "|SPEAKER|", "|NEWLINE|", "a", "cat"]
    assert "|SPEAKER|" in tokenizer.get_vocab() and "|SPEAKER|" not in tokenizer.all_special_tokens
    plain = wordpiece({"image_token": "<image>"})  # every other family: unchanged, no "▁"
    assert plain.convert_ids_to_tokens(plain("a cat", add_special_tokens=False)["input_ids"]) == ["a", "cat"]


def test_per_layer_overrides_move_onto_the_tiny_layers_of_their_type() -> None:
    """Gemma 4's config is heterogeneous: its full-attention layers (5, 11, … 29 of 30) override
    ``head_dim`` (512, 256 elsewhere). Shrunk without them, the overrides named layers the tiny
    stack does not have and the config refused to build; the survey puts each on the tiny layers of
    its type, its size scaled as the shared field was (512 / 256 × 16 = 32)."""
    from pc_testkit.shrink import tiny_config

    text = tiny_config("gemma4").text_config
    full = [i for i, kind in enumerate(text.layer_types) if kind == "full_attention"]
    assert full and len(full) < text.num_hidden_layers
    assert text.to_dict()["per_layer_config"] == {str(i): {"head_dim": 32} for i in full}
    assert [text.per_layer_config[i].head_dim for i in range(text.num_hidden_layers)] == [
        32 if i in full else 16 for i in range(text.num_hidden_layers)
    ]


def test_gemma4_processor_needs_audio_tokens_its_checkpoints_tokenizer_names() -> None:
    """Why the survey tokenizer names Gemma 4's audio tokens: its processor refuses every input,
    audio or not, when its tokenizer lacks ``boa_token`` or ``eoa_token`` (an ``and`` / ``or``
    precedence slip in its check). When the check is fixed, their ``tokenizer_tokens`` override may go."""
    import inspect

    from transformers import Gemma4Processor

    source = inspect.getsource(Gemma4Processor.validate_inputs)
    assert "audio is not None and self.audio_token is None or self.boa_token is None" in source
    # with the tokens, both Gemma 4 families run on images: test_family_built_from_config_runs_on_an_image
    assert {"gemma4", "gemma4_unified"} <= {r["model_type"] for r in _rows(path="images")}


def test_dots3_image_processor_makes_one_frame_patches_for_its_2d_patch_embedding() -> None:
    """Why dots3's image processor gets ``temporal_patch_size`` 1: it is Qwen2-VL's (two frames per
    patch by default), while dots3's tower embeds each patch with a ``Conv2d`` over 3 × 14 × 14
    pixels, so two-frame patches became twice the tokens its grid counts and its rotary embedding
    refused them. When either side changes, the special case may go."""
    import inspect

    from transformers import Qwen2VLImageProcessor
    from transformers.models.dots3_note import modeling_dots3_note

    from pc_testkit.families import overrides

    assert Qwen2VLImageProcessor().temporal_patch_size == 2
    assert "nn.Conv2d(" in inspect.getsource(modeling_dots3_note.Dots3NoteVisionPatchEmbed)
    assert overrides("dots3_note").image_processor_fields == {"temporal_patch_size": 1}
    assert "dots3_note" in {r["model_type"] for r in _rows(path="images")}


def test_kosmos_2_5_survey_keeps_its_fixed_patch_count_cheap() -> None:
    """Why Kosmos-2.5's tiny tower has one head: its processor class fixes 4,096 patches per image
    (a class-level ``max_patches`` that a saved processor file does not change, so the survey cannot
    shrink it) and the tower's eager attention over them costs in proportion to its heads. Its
    placeholders follow the tiny resampler: one per ``latent_query_num`` query, written by the
    processor's ``num_image_tokens``. When the class stops fixing the patch count, the special case
    may go."""
    from transformers import Kosmos2_5Processor

    from pc_testkit.shrink import tiny_config

    assert Kosmos2_5Processor.images_kwargs["max_patches"] == 4096
    config = tiny_config("kosmos-2.5")
    assert config.vision_config.num_attention_heads == 1 and config.vision_config.max_num_patches == 4096
    assert config.latent_query_num == 64  # 2,048 by default: one placeholder each in every prompt
    # the processor then writes 64 placeholders and the row runs on images:
    # test_family_built_from_config_runs_on_an_image
    assert "kosmos-2.5" in {r["model_type"] for r in _rows(path="images")}


def test_survey_fills_what_published_checkpoints_carry() -> None:
    """Qwen's Omni thinkers read ``vision_start_token_id``, which their published configs set and
    transformers' default thinker config lacks; Gemma 4's default config has no vision tower, which
    its checkpoints have (when an assertion fails, transformers has added the field and its
    ``checkpoint_fields`` override can go). Qwen3-Omni's default thinker vocabulary (3,584) is smaller
    than the survey tokenizer's, which the builder grows to fit."""
    from transformers import AutoConfig

    from pc_testkit.families import FAMILY_OVERRIDES
    from pc_testkit.shrink import tiny_config

    for model_type, family in FAMILY_OVERRIDES.items():
        for key in family.checkpoint_fields:
            assert getattr(AutoConfig.for_model(model_type), key, None) is None, (model_type, key)
    assert tiny_config("gemma4").vision_config.hidden_size == 64  # the checkpoints' tower, shrunk
    assert AutoConfig.for_model("qwen3_omni_moe_thinker").text_config.vocab_size < 30522
    # both then prune and generate on an image: test_family_built_from_config_runs_on_an_image
    assert {"qwen2_5_omni_thinker", "qwen3_omni_moe_thinker"} <= {r["model_type"] for r in _rows(path="images")}


def _rows(**match: str) -> list[dict]:
    rows = json.loads((ROOT / "benchmarks" / "families" / "results" / "families.json").read_text())["rows"]
    return [row for row in rows if all(row.get(k) == v for k, v in match.items())]


@pytest.mark.parametrize(
    "row", _rows(path="images", built="from config", status="supported"), ids=lambda row: row["model_type"]
)
def test_family_built_from_config_runs_on_an_image(row: dict, image_paths: list[str]) -> None:
    """Every family the table lists as supported on images without a hand-written builder: built
    from its default config with its real processor class, it is profiled, pruned with an image in
    every calibration sample, saved, reloaded, run forward on an image prompt and generates."""
    # the table's 120 s limit keeps a full survey bounded; here a slower machine must not fail a family
    result = survey_family(row["model_type"], row["model_class"], image_paths[:1], time_limit=600)
    assert (result.status, result.path, result.built) == ("supported", "images", "from config"), result.reason
    assert result.decoder == row["decoder"]


def test_rerun_of_an_unknown_family_is_refused_before_running() -> None:
    tool = _tool()
    before = tool.RESULTS.read_text()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--only", "no_such_family"])
    assert exit_info.value.code == 2 and tool.RESULTS.read_text() == before


def _built(model_type: str, tmp_path: Path):
    from pc_testkit.processor_build import build_with_processor
    from prune_compensate import load_model

    return load_model(build_with_processor(model_type, registered_families()[model_type], tmp_path / model_type))


def test_git_image_prefix_is_profiled_one_sample_per_batch(image_paths: list[str], tmp_path: Path) -> None:
    """GIT prepends its image features to the text inside its forward, so its stack runs on more
    positions than the batch has, and padded rows could not be lined up with them. It is calibrated
    one sample per batch (with a warning), every position a real token: the profile's cosine across
    each block equals the one recomputed from transformers' own ``hidden_states``, image prefix
    included. On text alone nothing is inserted."""
    import torch

    from prune_compensate.calibration.encode import BatchEncoder
    from prune_compensate.calibration.forward import inserts_positions
    from prune_compensate.calibration.sources import CalibrationSample, CalibrationWarning
    from prune_compensate.model.locate import find_decoder
    from prune_compensate.pruning.profile import ProfileConfig, profile_samples

    loaded = _built("git", tmp_path)
    layout = find_decoder(loaded.model)
    encoder = BatchEncoder(loaded.processor, 64)
    texts = ["a red square", "two birds on a long wire above the road", "a cat", "the sea at night, calm"]
    samples = [CalibrationSample(text, image_paths[:1], f"s{i}") for i, text in enumerate(texts)]
    assert inserts_positions(loaded.model, layout, encoder, samples, 4)
    assert not inserts_positions(loaded.model, layout, encoder, [CalibrationSample("a cat", [], "t")], 4)
    with pytest.warns(CalibrationWarning, match="one sample per batch"):
        profile = profile_samples(loaded.model, encoder, samples, ProfileConfig(k=1, show_progress=False), layout)

    sums, tokens = torch.zeros(layout.num_layers, dtype=torch.float64), 0
    for sample in samples:
        with torch.no_grad():
            states = loaded.model(**encoder([sample]), output_hidden_states=True).hidden_states
        assert states[0].shape[1] > encoder([sample])["input_ids"].shape[1]  # the image prefix
        tokens += states[0].shape[1]
        for i in range(layout.num_layers):
            cos = torch.nn.functional.cosine_similarity(states[i][0].double(), states[i + 1][0].double(), dim=-1)
            sums[i] += cos.sum()
    assert profile.n_tokens == tokens
    for layer in profile.layers:
        assert layer.block_cosine_mean == pytest.approx(float(sums[layer.index]) / tokens, abs=1e-5)


def test_blip_text_decoder_reads_input_ids_not_decoder_inputs(image_paths: list[str], tmp_path: Path) -> None:
    """BLIP's text decoder cross-attends to the image, as an encoder–decoder's decoder does, but its
    model reads the text as ``input_ids``: sending the text again as decoder inputs would make their
    (one token shorter) mask stand for the stack's tokens. Florence-2's model takes decoder inputs."""
    from prune_compensate.calibration.encode import BatchEncoder
    from prune_compensate.calibration.forward import feeds_decoder_text, inserts_positions
    from prune_compensate.calibration.sources import CalibrationSample
    from prune_compensate.model.locate import find_decoder

    loaded = _built("blip", tmp_path)
    layout = find_decoder(loaded.model)
    assert layout.cross_attends and not feeds_decoder_text(loaded.model, layout)
    samples = [CalibrationSample("a red square", image_paths[:1], "s0")]
    assert not inserts_positions(loaded.model, layout, BatchEncoder(loaded.processor, 64), samples, 1)
    florence = _built("florence2", tmp_path)
    assert feeds_decoder_text(florence.model, find_decoder(florence.model))


def test_every_family_override_carries_its_reason() -> None:
    """One record per family; a field set without its reason (or a reason for a field left at its
    default) is refused when the record is built, so the table cannot grow an unexplained entry."""
    from pc_testkit.families import FAMILY_OVERRIDES, FamilyOverrides

    registered = registered_families()
    for model_type, family in FAMILY_OVERRIDES.items():
        assert model_type in registered, f"{model_type} has an override record but is not a registered family"
        assert family.why and all(len(reason) > 20 for reason in family.why.values())
    with pytest.raises(ValueError, match=r"set \['small_sam'\], explained \[\]"):
        FamilyOverrides(small_sam=True)
    with pytest.raises(ValueError, match=r"set \[\], explained \['vision_sizes'\]"):
        FamilyOverrides(why={"vision_sizes": "a reason for a field that keeps its default"})
