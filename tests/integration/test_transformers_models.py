"""Hugging Face models from tiny configs under every built-in scheme: covered, sane initial loss, trainable.

Criteria: zero uncovered parameters; the initial cross-entropy on random tokens within 1.5 nats of
ln(vocab) and falling over 20 AdamW steps; ``build(..., seed=0)`` leaves torch's global RNG unchanged;
``default_scheme`` on a model that re-initializes itself (HF ``post_init``) warns.

``legacy`` is torch.nn's layer defaults by definition (embeddings N(0, 1), so a tied LM head gives logits of
std ~sqrt(d)): it is held to coverage, not to the loss criterion.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

import torchinit

if TYPE_CHECKING:
    from conftest import RNGWatch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()  # config notes about token ids outside the tiny vocabulary

pytestmark = pytest.mark.integration

VOCAB = 1000
# lsuv needs data (test_lsuv); recipes are model-specific (test_recipes_*)
SCHEMES = [
    s
    for s in torchinit.list_schemes()
    if s != "lsuv" and not isinstance(torchinit.get_scheme(s), torchinit.recipes.Recipe)
]
KEYED = [s for s in SCHEMES if s != "legacy"]


def _llama(tied: bool) -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    return transformers.LlamaForCausalLM(config)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB)
    ),
    "llama_tied": lambda: _llama(True),
    "llama_untied": lambda: _llama(False),
    "bert": lambda: transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
        )
    ),
    "bart": lambda: transformers.BartForConditionalGeneration(
        transformers.BartConfig(
            vocab_size=VOCAB,
            d_model=64,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_position_embeddings=64,
        )
    ),
    "t5": lambda: transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            vocab_size=VOCAB,
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
        )
    ),
}
models = pytest.mark.parametrize("name", list(MODELS))


def _reinit(name: str, scheme: str) -> tuple[nn.Module, torchinit.InitReport]:
    torch.manual_seed(0)
    model = MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        warnings.simplefilter("ignore", torchinit.TiedTableWarning)  # legacy on tied LMs (test_families.py)
        report = torchinit.reinit(model, scheme, seed=None if scheme == "legacy" else 0)
    return model, report


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss  # enc-dec models shift the labels into decoder inputs


@models
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_parameter_is_covered(name: str, scheme: str) -> None:
    _, report = _reinit(name, scheme)
    assert not report.skipped, [(e.path, e.skipped) for e in report.skipped]


@models
@pytest.mark.parametrize("scheme", KEYED)
def test_initial_loss_is_near_ln_vocab_and_falls(name: str, scheme: str) -> None:
    model, _ = _reinit(name, scheme)
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        initial = _loss(model, ids).item()
    assert abs(initial - math.log(VOCAB)) <= 1.5, f"initial loss {initial:.3f}, ln V = {math.log(VOCAB):.3f}"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    torch.manual_seed(0)
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        _loss(model, ids).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = _loss(model, ids).item()
    assert final < initial, f"loss did not fall: {initial:.4f} -> {final:.4f}"


@models
def test_tied_heads_are_readouts_drawn_once(name: str) -> None:
    model, report = _reinit(name, "kaiming_gelu")
    head = model.get_output_embeddings()
    path = next(p for p, m in model.named_modules() if m is head)
    entry = report[f"{path}.weight"]
    assert entry.role == "readout", entry
    if head.weight is model.get_input_embeddings().weight:
        assert "tied to the input embedding" in entry.source and entry.std == 1 / math.sqrt(64)


@models
@pytest.mark.parametrize("scheme", ["kaiming_gelu", "lecun_normal", "orthogonal"])
def test_build_with_a_seed_draws_once_and_leaves_the_rng_alone(name: str, scheme: str, drew: RNGWatch) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        built, report = torchinit.build(drew(MODELS[name]), scheme, seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert drew.draws == [False], "the model's own init drew during construction"
    assert not report.skipped
    reference, _ = _reinit(name, scheme)
    for (key, a), b in zip(built.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), key  # the same values as reinit(factory(), seed=0): nothing drawn twice


@models
def test_default_scheme_on_a_self_initializing_model_warns(name: str) -> None:
    with pytest.warns(torchinit.SchemeOverwrittenWarning, match="post_init"), torchinit.default_scheme("lecun_normal"):
        MODELS[name]()
