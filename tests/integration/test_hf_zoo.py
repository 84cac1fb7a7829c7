"""Hugging Face families under every generic scheme: decoders (one dense, two MoE), encoders, encoder-decoders,
speech, vision and multimodal models, each built from a tiny config.

Criteria, per family and scheme (keyed, seed 0): no exception; nothing uncovered (the warning is an error);
tied parameters still tied; frozen parameters (Whisper's sinusoidal table) bitwise kept; learned temperatures
kept; an LM's loss on random tokens within 1 nat of ln V; an image classifier's logits std in [0.05, 5] (in
train mode, on a batch of 4 unit-normal 32x32 images).
The model is built once per family and reinitialized by each scheme in turn (each call writes every parameter
it covers, so no scheme sees another's values except the frozen ones, which must stay the model's own).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import torchinit

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

pytestmark = pytest.mark.integration

VOCAB = 2000
IDS = torch.randint(2, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
PIXELS = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
GENERIC = [
    s
    for s in torchinit.list_schemes()
    if s not in ("lsuv", "legacy") and not isinstance(torchinit.get_scheme(s), torchinit.recipes.Recipe)
]
SMALL = {
    "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "bos_token_id": 1, "eos_token_id": 1, "pad_token_id": 0,
}  # fmt: skip
ENCODER_DECODER = {
    "vocab_size": VOCAB, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "max_position_embeddings": 64,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1, "decoder_start_token_id": 1,
}  # fmt: skip
IMAGE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "image_size": 32, "patch_size": 8}  # fmt: skip


def _auto(auto: str, kind: str, **extra: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        config = transformers.AutoConfig.for_model(kind, **extra)
        return getattr(transformers, auto).from_config(config)

    return make


def _causal(kind: str, **extra: object) -> Callable[[], nn.Module]:
    return _auto("AutoModelForCausalLM", kind, **{**SMALL, **extra})


def _masked(kind: str, **extra: object) -> Callable[[], nn.Module]:
    return _auto("AutoModelForMaskedLM", kind, **{**SMALL, **extra})


def _image(kind: str, **extra: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        config = getattr(transformers, f"{kind}Config")(num_labels=10, **extra)
        return getattr(transformers, f"{kind}ForImageClassification")(config)

    return make


LMS: dict[str, Callable[[], nn.Module]] = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB)
    ),
    "llama": _causal("llama", num_key_value_heads=2),
    "mistral": _causal("mistral", num_key_value_heads=2),
    "qwen2": _causal("qwen2", num_key_value_heads=2),
    "gemma2": _causal("gemma2", num_key_value_heads=2, head_dim=16),
    "phi3": _causal("phi3", num_key_value_heads=2),
    "gpt_neox": _causal("gpt_neox"),
    "opt": _causal("opt", ffn_dim=128, word_embed_proj_dim=64),
    "bloom": _causal("bloom", n_layer=2, n_head=4),
    "falcon": _causal("falcon"),
    "olmo2": _causal("olmo2", num_key_value_heads=2),
    "nemotron": _causal("nemotron", num_key_value_heads=2, head_dim=16),  # LayerNorm1P: x_hat * (1 + w)
    "mixtral (MoE)": _causal("mixtral", num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe (MoE)": _causal(
        "qwen2_moe",
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
    ),
    "mamba (SSM)": _causal("mamba", state_size=8, expand=2, conv_kernel=4),
    "jamba (SSM + MoE)": _causal(
        "jamba",
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        mamba_d_state=8,
        mamba_expand=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        use_mamba_kernels=False,
    ),
    "bert": _masked("bert"),
    "roberta": _masked("roberta", max_position_embeddings=64, pad_token_id=1),
    "distilbert": _masked("distilbert", dim=64, hidden_dim=128, n_layers=2, n_heads=4),
    "electra": _masked("electra", embedding_size=32),
    "albert": _masked("albert", embedding_size=32),
    "deberta-v2": _masked("deberta-v2"),
    "t5": _auto(
        "AutoModelForSeq2SeqLM",
        "t5",
        vocab_size=VOCAB,
        d_model=64,
        d_kv=16,
        num_heads=4,
        d_ff=128,
        num_layers=2,
        decoder_start_token_id=0,
    ),
    "bart": _auto("AutoModelForSeq2SeqLM", "bart", **ENCODER_DECODER),
    "pegasus": _auto("AutoModelForSeq2SeqLM", "pegasus", **ENCODER_DECODER),
    "marian": _auto("AutoModelForSeq2SeqLM", "marian", **ENCODER_DECODER),
    "whisper (speech)": lambda: transformers.WhisperForConditionalGeneration(
        transformers.WhisperConfig(
            **ENCODER_DECODER,
            max_source_positions=32,
            max_target_positions=32,
            num_mel_bins=16,
            suppress_tokens=[],
            begin_suppress_tokens=[],
        )
    ),
}
IMAGES: dict[str, Callable[[], nn.Module]] = {
    "vit": _image("ViT", **IMAGE),
    "deit": _image("DeiT", **IMAGE),
    "dinov2": _image("Dinov2", **IMAGE),
    "swin": _image("Swin", image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4),
    "convnext": _image("ConvNext", num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "beit": _image("Beit", **IMAGE, use_relative_position_bias=True, layer_scale_init_value=0.1),
    "convnextv2": _image("ConvNextV2", num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "poolformer": _image("PoolFormer", hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1]),
    "resnet": _image("ResNet", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck"),
}
TEXT_IMAGE = {
    "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 24,
}  # fmt: skip
PAIRS: dict[str, Callable[[], nn.Module]] = {
    "clip": lambda: transformers.CLIPModel(
        transformers.CLIPConfig(text_config=TEXT_IMAGE, vision_config=IMAGE, projection_dim=16)
    ),
    "siglip": lambda: transformers.SiglipModel(transformers.SiglipConfig(text_config=TEXT_IMAGE, vision_config=IMAGE)),
}


def _each_scheme(model: nn.Module, check: Callable[[str], None]) -> None:
    """Reinit ``model`` by every generic scheme; after each: covered, ties and frozen parameters kept, ``check``."""
    params = dict(model.named_parameters(remove_duplicate=False))
    ties = {path: id(p) for path, p in params.items()}
    frozen = {path: p.detach().clone() for path, p in params.items() if not p.requires_grad}
    for scheme in GENERIC:
        with warnings.catch_warnings():
            warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
            report = torchinit.reinit(model, scheme, seed=0)
        assert not report.skipped, (scheme, [e.path for e in report.skipped])
        now = dict(model.named_parameters(remove_duplicate=False))
        assert {path: id(p) for path, p in now.items()} == ties, scheme
        for path, value in frozen.items():
            assert torch.equal(now[path], value), (scheme, path)
        check(scheme)


@pytest.mark.parametrize("name", list(LMS))
def test_lms_are_covered_with_a_loss_near_ln_vocab_under_every_generic_scheme(name: str) -> None:
    torch.manual_seed(0)
    model = LMS[name]().eval()
    inputs = {"input_ids": IDS, "labels": IDS}
    if "whisper" in name:
        inputs = {"input_features": torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(3)), "labels": IDS}
        assert any(not p.requires_grad for p in model.parameters())  # the sinusoidal table: kept bitwise

    def check(scheme: str) -> None:
        with torch.no_grad():
            loss = float(model(**inputs).loss)
        assert abs(loss - math.log(VOCAB)) <= 1.0, f"{scheme}: loss {loss:.3f}, ln V = {math.log(VOCAB):.3f}"

    _each_scheme(model, check)


@pytest.mark.parametrize("name", list(IMAGES))
def test_image_classifiers_are_covered_with_sane_logits_under_every_generic_scheme(name: str) -> None:
    torch.manual_seed(0)
    model = IMAGES[name]().train()  # batch statistics, as in training (and as the torchvision group)

    def check(scheme: str) -> None:
        with torch.no_grad():
            std = float(model(pixel_values=PIXELS).logits.std())
        assert 0.05 <= std <= 5, f"{scheme}: logits std {std:.4g}"

    _each_scheme(model, check)


@pytest.mark.parametrize("name", list(PAIRS))
def test_text_image_models_are_covered_and_keep_their_temperature_under_every_generic_scheme(name: str) -> None:
    torch.manual_seed(0)
    model = PAIRS[name]().eval()
    temperatures = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("logit_")}
    assert temperatures

    def check(scheme: str) -> None:
        for path, value in temperatures.items():
            assert torch.equal(model.get_parameter(path), value), (scheme, path)
        with torch.no_grad():
            out = model(input_ids=IDS[:, :16], pixel_values=PIXELS[:2])
        for embeds in (out.text_embeds, out.image_embeds):
            assert torch.isfinite(embeds).all() and float(embeds.std()) > 0, scheme

    _each_scheme(model, check)


def test_the_group_spans_twenty_families() -> None:
    assert len(LMS) + len(IMAGES) + len(PAIRS) >= 20
    assert sum("MoE" in n for n in LMS) >= 1
