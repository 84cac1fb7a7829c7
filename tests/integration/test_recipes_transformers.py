"""Recipes against Hugging Face's own init: the same architecture, the library's values vs torchinit's."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchinit
from conftest import assert_recipe_matches

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
pytestmark = pytest.mark.integration

SMALL = {"vocab_size": 1000}


def _gpt2() -> nn.Module:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=3, n_embd=64, n_head=4, **SMALL))


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, pad_token_id=0, **SMALL
    )
    return transformers.BertForMaskedLM(config)


def _llama(tied: bool) -> nn.Module:
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        tie_word_embeddings=tied, **SMALL,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _t5(tied: bool) -> nn.Module:
    config = transformers.T5Config(
        d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, tie_word_embeddings=tied, **SMALL
    )
    return transformers.T5ForConditionalGeneration(config)


@pytest.mark.parametrize(
    ("recipe", "factory"),
    [
        ("gpt2", _gpt2),
        ("bert", _bert),
        ("llama", lambda: _llama(True)),
        ("llama", lambda: _llama(False)),
        ("t5", lambda: _t5(True)),
        ("t5", lambda: _t5(False)),
    ],
    ids=["gpt2", "bert", "llama-tied", "llama-untied", "t5-tied", "t5-untied"],
)
def test_recipe_reproduces_hugging_faces_init(recipe: str, factory: object) -> None:
    torch.manual_seed(0)
    assert_recipe_matches(factory(), recipe)  # type: ignore[operator]


def test_gpt2_scales_residual_projections_by_depth() -> None:
    model = _gpt2()
    report = torchinit.reinit(model, "gpt2", seed=0)
    assert report["transformer.h.2.mlp.c_proj.weight"].std == pytest.approx(0.02 / math.sqrt(2 * 3))
    assert report["transformer.h.2.mlp.c_fc.weight"].std == pytest.approx(0.02)
    custom = torchinit.reinit(model, torchinit.recipes.gpt2(initializer_range=0.01, n_layer=12), seed=0)
    assert custom["transformer.h.0.attn.c_proj.weight"].std == pytest.approx(0.01 / math.sqrt(24))


def _torchtitan_reference(model: nn.Module, init_std: float = 0.02) -> None:
    """torchtitan's Llama ``init_weights`` (depth_init=True), transcribed onto Hugging Face names."""
    inner = model.model
    nn.init.normal_(inner.embed_tokens.weight)
    for layer_id, block in enumerate(inner.layers):
        depth_std = init_std / (2 * (layer_id + 1)) ** 0.5
        for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
            nn.init.trunc_normal_(proj.weight, mean=0.0, std=init_std)
        nn.init.trunc_normal_(block.self_attn.o_proj.weight, mean=0.0, std=depth_std)
        nn.init.trunc_normal_(block.mlp.gate_proj.weight, mean=0.0, std=init_std)
        for proj in (block.mlp.up_proj, block.mlp.down_proj):
            nn.init.trunc_normal_(proj.weight, mean=0.0, std=depth_std)
    final_std = model.lm_head.weight.shape[1] ** -0.5
    nn.init.trunc_normal_(model.lm_head.weight, mean=0.0, std=final_std, a=-3 * final_std, b=3 * final_std)


def test_llama_depth_reproduces_torchtitans_init() -> None:
    torch.manual_seed(0)
    model = _llama(False)
    with torch.no_grad():
        _torchtitan_reference(model)
    assert_recipe_matches(model, "llama_depth")
    report = torchinit.reinit(model, "llama_depth", seed=0)
    assert report["model.layers.1.self_attn.o_proj.weight"].std == pytest.approx(0.02 / 2)  # 0.02 / sqrt(2 * 2)


def test_the_comparison_rejects_a_wrong_recipe() -> None:
    torch.manual_seed(0)
    with (
        pytest.raises(AssertionError, match=r"c_proj.weight \(reference\)"),
        pytest.warns(torchinit.RecipeMismatchWarning, match="the 'bert' recipe is for a BERT-family model"),
    ):
        assert_recipe_matches(_gpt2(), torchinit.get_scheme("bert").anywhere())  # no depth-scaled projections
