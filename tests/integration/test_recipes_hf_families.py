"""The CLIP, SigLIP, Whisper, Gemma and ViT recipes against Hugging Face's own ``_init_weights``.

Each model is tiny (hidden 64, 2 layers, vocabulary 1000, 32-pixel images in patches of 4) and built once; the
vision models are 128 wide so that the vectors HF draws by a rule of their own (CLIP's ``class_embedding``,
SigLIP's ``probe``, ViT's ``cls_token``) have the 100 elements the distribution tests need.
`assert_recipe_matches` never changes the reference it is given.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from torch import nn

import torchinit
from conftest import assert_recipe_matches
from torchinit.extend import Action
from torchinit.recipes import Recipe

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.integration

TEXT = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 64}  # fmt: skip
VISION = {"hidden_size": 128, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "image_size": 32, "patch_size": 4}  # fmt: skip
DECODER = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16}  # fmt: skip


@functools.cache
def _clip(model: str = "CLIPModel", text_factor: float = 1.0, vision_factor: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    text = {**TEXT, "initializer_factor": text_factor}
    vision = {**VISION, "initializer_factor": vision_factor}
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=32, num_labels=10)
    if model == "CLIPTextModelWithProjection":
        return transformers.CLIPTextModelWithProjection(config.text_config)
    if model == "CLIPVisionModelWithProjection":
        return transformers.CLIPVisionModelWithProjection(config.vision_config)
    return getattr(transformers, model)(config)  # type: ignore[no-any-return]


@functools.cache
def _siglip(model: str = "SiglipModel") -> nn.Module:
    torch.manual_seed(0)
    config = transformers.SiglipConfig(text_config=TEXT, vision_config=VISION, num_labels=10)
    return getattr(transformers, model)(config)  # type: ignore[no-any-return]


@functools.cache
def _whisper(model: str = "WhisperForConditionalGeneration") -> nn.Module:
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
        max_source_positions=64, max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, use_weighted_layer_sum=True, num_labels=10,
    )  # fmt: skip
    return getattr(transformers, model)(config)  # type: ignore[no-any-return]


@functools.cache
def _decoder(family: str) -> nn.Module:
    torch.manual_seed(0)
    config_class, model_class = {
        "gemma": ("GemmaConfig", "GemmaForCausalLM"),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
        "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
    }[family]
    config = getattr(transformers, config_class)(**DECODER)
    return getattr(transformers, model_class)(config)  # type: ignore[no-any-return]


@functools.cache
def _vit(model: str = "ViTForImageClassification") -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(**VISION, encoder_stride=4, num_labels=10)
    return getattr(transformers, model)(config)  # type: ignore[no-any-return]


CASES: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "clip": ("clip", _clip),
    "clip-factors-per-tower": ("clip", lambda: _clip(text_factor=0.5, vision_factor=2.0)),
    "clip-text-projection": ("clip", lambda: _clip("CLIPTextModelWithProjection")),
    "clip-vision-projection": ("clip", lambda: _clip("CLIPVisionModelWithProjection")),
    "clip-classifier": ("clip", lambda: _clip("CLIPForImageClassification")),
    "siglip": ("siglip", _siglip),
    "siglip-classifier": ("siglip", lambda: _siglip("SiglipForImageClassification")),
    "whisper": ("whisper", _whisper),
    "whisper-audio-classifier": ("whisper", lambda: _whisper("WhisperForAudioClassification")),
    "gemma": ("gemma", lambda: _decoder("gemma")),
    "gemma2": ("gemma", lambda: _decoder("gemma2")),
    "gemma3_text": ("gemma", lambda: _decoder("gemma3_text")),
    "llama-on-gemma": ("llama", lambda: _decoder("gemma")),
    "llama-on-gemma3_text": ("llama", lambda: _decoder("gemma3_text")),
    "vit_hf": ("vit_hf", _vit),
    "vit_hf-masked-image-modeling": ("vit_hf", lambda: _vit("ViTForMaskedImageModeling")),
}


@pytest.mark.parametrize(("recipe", "factory"), CASES.values(), ids=CASES.keys())
def test_recipe_reproduces_hugging_faces_init(recipe: str, factory: Callable[[], nn.Module]) -> None:
    assert_recipe_matches(factory(), recipe)


def _hf_init_again(model: nn.Module) -> nn.Module:
    """A copy of ``model`` through HF's ``initialize_weights`` once more (every module's done-flag cleared)."""
    again = copy.deepcopy(model)
    for module in again.modules():
        module.__dict__.pop("_is_hf_initialized", None)
    again.initialize_weights()
    return again


@pytest.mark.parametrize(("recipe", "factory"), CASES.values(), ids=CASES.keys())
def test_what_a_recipe_keeps_is_what_hugging_faces_init_leaves_there(
    recipe: str, factory: Callable[[], nn.Module]
) -> None:
    """The comparison accepts a kept parameter as it finds it; here HF's init runs again and must leave each
    one bitwise as constructed (Whisper's sinusoids: it writes the same table; CLIP's ``logit_scale``: it
    never touches it), while it redraws the rest."""
    reference = factory()
    report = torchinit.reinit(copy.deepcopy(reference), recipe, seed=0)
    kept = [entry.path for entry in report if entry.distribution == "keep"]
    again = dict(_hf_init_again(reference).named_parameters())
    assert all(torch.equal(again[path], reference.get_parameter(path)) for path in kept), kept
    drawn = [e.path for e in report if e.distribution in ("normal", "uniform") and (e.std or 0) > 1e-3]
    assert drawn and not any(torch.equal(again[path], reference.get_parameter(path)) for path in drawn)
    assert all(path.endswith(("logit_scale", "encoder.embed_positions.weight")) for path in kept), kept


def _norms_at_one(model: nn.Module) -> dict[str, Action]:
    """The gemma recipe with every RMSNorm weight 1: what every scheme wrote before norms were measured."""
    table = torchinit.recipes.gemma().rules(model)
    for path, module in model.named_modules():
        if "RMSNorm" in type(module).__name__:
            table[f"{path}.weight"] = Action("constant", 1.0, formula="norm weight 1")
    return table


WRONG: dict[str, tuple[Callable[[], nn.Module], object, str]] = {
    # HF's generic rule (bert's) on CLIP: q, k, v at 0.02, not d^-1/2 (2L)^-1/2 = 0.0625
    "generic-on-clip": (_clip, torchinit.get_scheme("bert").anywhere(), r"k_proj.weight \(reference\)"),
    # the CLIP recipe on SigLIP: embeddings at 0.02, not d^-1/2 = 0.125
    "clip-on-siglip": (_siglip, torchinit.get_scheme("clip").anywhere(), r"token_embedding.weight \(reference\)"),
    "whisper-std-0.01": (_whisper, torchinit.recipes.whisper(init_std=0.01), r"conv1.weight \(reference\)"),
    "gemma-norms-at-1": (
        lambda: _decoder("gemma"),
        replace(torchinit.recipes.gemma(), rules=_norms_at_one, spelled="gemma_norms_at_one"),
        r"input_layernorm.weight: reference constant 0.0",
    ),
    # timm's ViT rules on HF's ViT: tokens truncated at +-2 sigma (HF: +-2 absolute, 100 sigma), patch conv torch's
    "timm-vit-on-hf-vit": (_vit, torchinit.get_scheme("vit").anywhere(), r"embeddings.cls_token \(reference\)"),
}


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # the .anywhere() recipes
@pytest.mark.parametrize(("factory", "recipe", "failing"), WRONG.values(), ids=WRONG.keys())
def test_the_comparison_rejects_a_wrong_recipe(factory: Callable[[], nn.Module], recipe: object, failing: str) -> None:
    with pytest.raises(AssertionError, match=failing):
        assert_recipe_matches(factory(), recipe)


REFUSED = {
    "clip": (_siglip, "a CLIP model .* got config.model_type 'siglip'; recipes for this model: siglip"),
    "siglip": (_clip, "a SigLIP model .* got config.model_type 'clip'; recipes for this model: clip"),
    "whisper": (lambda: _decoder("gemma"), "a Whisper model .* recipes for this model: gemma, llama"),
    "gemma": (lambda: _decoder("llama"), "a Gemma model .* got config.model_type 'llama'"),
    "vit_hf": (lambda: _clip("CLIPVisionModelWithProjection"), "a Hugging Face ViT model .* 'clip_vision_model'"),
}


@pytest.mark.parametrize(("recipe", "factory", "message"), [(k, *v) for k, v in REFUSED.items()], ids=REFUSED.keys())
def test_a_recipe_refuses_a_model_it_is_not_for(recipe: str, factory: Callable[[], nn.Module], message: str) -> None:
    model = copy.deepcopy(factory())
    before = {path: p.detach().clone() for path, p in model.named_parameters()}
    with pytest.raises(torchinit.InitError, match=f"the {recipe!r} recipe is for {message}"):
        torchinit.reinit(model, recipe)
    assert all(torch.equal(before[path], p) for path, p in model.named_parameters())  # nothing written


def test_whisper_keeps_the_sinusoidal_table_bitwise() -> None:
    from transformers.models.whisper.modeling_whisper import sinusoids

    model = copy.deepcopy(_whisper())
    table = model.model.encoder.embed_positions.weight
    assert not table.requires_grad and torch.equal(table, sinusoids(64, 64))  # HF's table, frozen
    report = torchinit.reinit(model, "whisper", seed=0)
    assert torch.equal(table, sinusoids(64, 64)) and report[
        "model.encoder.embed_positions.weight"
    ].distribution == "keep"  # fmt: skip
    table.requires_grad_(True)  # trainable, it is still the table HF writes: kept
    torchinit.reinit(model, "whisper", seed=1)
    assert torch.equal(table, sinusoids(64, 64))
    decoder = model.model.decoder.embed_positions.weight  # the decoder's is learned: drawn
    assert report["model.decoder.embed_positions.weight"].std == pytest.approx(0.02) and decoder.std() > 0


def test_contrastive_temperatures_are_what_hugging_face_leaves() -> None:
    """CLIP's ``logit_scale`` is log(1/0.07) as constructed and HF's init never touches it (a changed one stays);
    SigLIP's ``logit_scale`` and ``logit_bias`` are set to 0 by HF's init, whatever they held."""
    clip, siglip = copy.deepcopy(_clip()), copy.deepcopy(_siglip())
    assert torch.equal(clip.logit_scale, torch.tensor(clip.config.logit_scale_init_value))
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    torchinit.reinit(clip, "clip", seed=0)
    assert torch.equal(clip.logit_scale, torch.tensor(2.6592))
    with torch.no_grad():
        clip.logit_scale.fill_(4.0)
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-10.0)  # the paper's values
    hf_clip, hf_siglip = copy.deepcopy(clip), copy.deepcopy(siglip)
    hf_clip._init_weights(hf_clip)  # HF's rule for the root module, which owns these parameters
    hf_siglip._init_weights(hf_siglip)
    torchinit.reinit(clip, "clip", seed=0)
    torchinit.reinit(siglip, "siglip", seed=0)
    assert clip.logit_scale.item() == hf_clip.logit_scale.item() == 4.0
    for name in ("logit_scale", "logit_bias"):
        assert torch.equal(getattr(siglip, name), getattr(hf_siglip, name)) and getattr(siglip, name).item() == 0.0


def test_hyper_parameters_replace_the_configs() -> None:
    clip = torchinit.reinit(copy.deepcopy(_clip()), torchinit.recipes.clip(initializer_factor=2.0), seed=0)
    assert clip["text_model.encoder.layers.0.self_attn.q_proj.weight"].std == pytest.approx(2 * 64**-0.5 / 2)
    assert clip["vision_model.embeddings.class_embedding"].std == pytest.approx(2 * 128**-0.5)
    vit = torchinit.reinit(copy.deepcopy(_vit()), torchinit.recipes.vit_hf(initializer_range=0.01), seed=0)
    assert [vit["vit.embeddings.cls_token"].std, vit["vit.layers.0.mlp.fc1.weight"].std] == pytest.approx([0.01] * 2)
    assert vit["vit.embeddings.cls_token"].cut == pytest.approx(200.0)  # +-2 absolute
    gemma = torchinit.reinit(copy.deepcopy(_decoder("gemma")), torchinit.recipes.gemma(initializer_range=0.05))
    assert gemma["model.layers.0.mlp.up_proj.weight"].std == pytest.approx(0.05)
    assert gemma["model.norm.weight"].rule == "constant(0)"
    whisper = torchinit.reinit(copy.deepcopy(_whisper()), torchinit.recipes.whisper(init_std=0.05), seed=0)
    assert whisper["model.encoder.conv1.weight"].std == pytest.approx(0.05)
    assert repr(torchinit.recipes.clip(initializer_factor=2.0)) == "recipes.clip(initializer_factor=2.0)"
    assert isinstance(torchinit.get_scheme("vit_hf"), Recipe)


def test_a_wrapped_model_is_recognized_by_structure_and_layers_outside_it_get_the_base_scheme() -> None:
    wrapper = nn.ModuleDict({"backbone": copy.deepcopy(_decoder("gemma")), "head": nn.Linear(64, 3)})
    report = torchinit.reinit(wrapper, "gemma", seed=0)  # no config on the wrapper: Gemma's RMSNorm tells
    assert report["backbone.model.norm.weight"].rule == "constant(0)"
    assert report["backbone.model.layers.0.mlp.up_proj.weight"].std == pytest.approx(0.02)
    assert not report["head.weight"].source.startswith("HF")  # HF never initializes it: torchinit's base scheme
    with pytest.raises(torchinit.InitError, match="the 'clip' recipe is for .* recipes for this model: gemma, llama"):
        torchinit.reinit(wrapper, "clip")


def test_a_config_setting_that_is_not_a_number_is_named_and_nothing_is_written() -> None:
    model = copy.deepcopy(_clip())
    model.text_model.config.initializer_factor = None
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(torchinit.InitError, match="config.initializer_factor must be a finite number >= 0; got .*None"):
        torchinit.reinit(model, "clip")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
