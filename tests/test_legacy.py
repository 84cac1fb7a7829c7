"""legacy: bit-exact with torch's constructors from the same RNG state, for every torch.nn module with parameters."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchinit

Build = Callable[..., nn.Module]


def _lazy_linear(**kw: Any) -> nn.Module:
    m = nn.LazyLinear(6, **kw)
    m(torch.zeros(2, 5, **kw))
    return m


def _lazy_conv(**kw: Any) -> nn.Module:
    m = nn.LazyConv2d(4, 3, **kw)
    m(torch.zeros(1, 3, 6, 6, **kw))
    return m


def _quiet(build: Build) -> Build:
    def make(**kw: Any) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's own construction notices
            return build(**kw)

    return make


MODULES: dict[str, Build] = {
    "Linear": lambda **kw: nn.Linear(5, 7, **kw),
    "Linear_nobias": lambda **kw: nn.Linear(5, 7, bias=False, **kw),
    "Linear_zero_in": _quiet(lambda **kw: nn.Linear(0, 3, **kw)),  # torch warns about its empty weight
    "LazyLinear": _lazy_linear,
    "Bilinear": lambda **kw: nn.Bilinear(3, 4, 5, **kw),
    "Conv1d": lambda **kw: nn.Conv1d(4, 6, 3, stride=2, **kw),
    "Conv2d_grouped": lambda **kw: nn.Conv2d(4, 8, 3, groups=2, dilation=2, **kw),
    "Conv3d": lambda **kw: nn.Conv3d(2, 3, (1, 2, 3), bias=False, **kw),
    "ConvTranspose1d": lambda **kw: nn.ConvTranspose1d(4, 6, 3, stride=2, **kw),
    "ConvTranspose2d": lambda **kw: nn.ConvTranspose2d(4, 6, 4, stride=2, groups=2, **kw),
    "ConvTranspose3d": lambda **kw: nn.ConvTranspose3d(2, 3, 2, **kw),
    "LazyConv2d": _lazy_conv,
    "Embedding": lambda **kw: nn.Embedding(10, 4, padding_idx=-2, **kw),
    "EmbeddingBag": lambda **kw: nn.EmbeddingBag(10, 4, padding_idx=3, **kw),
    "RNN": lambda **kw: nn.RNN(3, 5, num_layers=2, nonlinearity="relu", **kw),
    "LSTM": lambda **kw: nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, **kw),
    "GRU": lambda **kw: nn.GRU(3, 5, bias=False, bidirectional=True, **kw),
    "RNNCell": lambda **kw: nn.RNNCell(3, 5, **kw),
    "LSTMCell": lambda **kw: nn.LSTMCell(3, 5, **kw),
    "GRUCell": lambda **kw: nn.GRUCell(3, 5, **kw),
    "MHA_packed": lambda **kw: nn.MultiheadAttention(8, 2, **kw),
    "MHA_separate": lambda **kw: nn.MultiheadAttention(8, 2, kdim=3, vdim=5, add_bias_kv=True, **kw),
    "MHA_nobias": lambda **kw: nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True, **kw),
    "TransformerEncoderLayer": lambda **kw: nn.TransformerEncoderLayer(8, 2, 16, **kw),
    "TransformerDecoderLayer": lambda **kw: nn.TransformerDecoderLayer(8, 2, 16, **kw),
    "TransformerEncoder": _quiet(
        lambda **kw: nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, **kw), 3, nn.LayerNorm(8, **kw))
    ),
    "TransformerDecoder": lambda **kw: nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, **kw), 2),
    "Transformer": _quiet(lambda **kw: nn.Transformer(8, 2, 2, 1, 16, **kw)),
    "BatchNorm2d": lambda **kw: nn.BatchNorm2d(4, **kw),
    "BatchNorm1d_noaffine": lambda **kw: nn.BatchNorm1d(4, affine=False, **kw),
    "SyncBatchNorm": lambda **kw: nn.SyncBatchNorm(4, **kw),
    "InstanceNorm2d": lambda **kw: nn.InstanceNorm2d(4, affine=True, track_running_stats=True, **kw),
    "LayerNorm": lambda **kw: nn.LayerNorm((3, 4), **kw),
    "GroupNorm": lambda **kw: nn.GroupNorm(2, 4, **kw),
    "RMSNorm": lambda **kw: nn.RMSNorm(4, **kw),
    "PReLU": lambda **kw: nn.PReLU(3, init=0.1, **kw),
    "AdaptiveLogSoftmaxWithLoss": lambda **kw: nn.AdaptiveLogSoftmaxWithLoss(32, 20, [5, 10], **kw),
    "Sequential": lambda **kw: nn.Sequential(
        nn.Conv2d(3, 4, 3, **kw),
        nn.BatchNorm2d(4, **kw),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 8, **kw),
        nn.LayerNorm(8, **kw),
        nn.Sequential(nn.Linear(8, 8, **kw), nn.PReLU(**kw)),
    ),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def assert_same_state(ref: nn.Module, got: nn.Module) -> None:
    a, b = ref.state_dict(), got.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(MODULES))
def test_bit_exact_with_construction(name: str, dtype: torch.dtype) -> None:
    build = MODULES[name]
    torch.manual_seed(1234)
    ref = build(dtype=dtype)
    after = torch.get_rng_state()
    model = build(dtype=dtype)
    with torch.no_grad():  # scribble over everything so nothing passes by accident
        for p in model.parameters():
            p.fill_(3.0)
    torch.manual_seed(1234)
    torchinit.reinit(model, "legacy", strict=True)
    assert_same_state(ref, model)
    assert torch.equal(torch.get_rng_state(), after)  # the same draws were consumed


@pytest.mark.parametrize("name", ["Conv2d_grouped", "ConvTranspose2d", "Sequential"])
def test_bit_exact_in_channels_last(name: str) -> None:
    torch.manual_seed(7)
    ref = MODULES[name]().to(memory_format=torch.channels_last)
    model = MODULES[name]().to(memory_format=torch.channels_last)
    torch.manual_seed(7)
    torchinit.reinit(model, "legacy")
    assert_same_state(ref, model)
    conv = next(m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_running_statistics_are_reset() -> None:
    torch.manual_seed(0)
    ref = MODULES["Sequential"]()
    model = MODULES["Sequential"]()
    model(torch.randn(4, 3, 4, 4))  # training-mode forward moves BatchNorm's running stats
    torch.manual_seed(0)
    report = torchinit.reinit(model, "legacy")
    assert_same_state(ref, model)
    assert "1.running_mean" in report.buffers


def test_explicit_generator_matches_a_seeded_global_stream() -> None:
    torch.manual_seed(99)
    ref = MODULES["LSTM"]()
    model = MODULES["LSTM"]()
    torchinit.reinit(model, "legacy", generator=torch.Generator().manual_seed(99))
    assert_same_state(ref, model)


def test_still_holds_when_a_subclass_replaced_reset_parameters() -> None:
    class MyLinear(nn.Linear):
        def reset_parameters(self) -> None:
            nn.init.zeros_(self.weight)

    torch.manual_seed(3)
    ref = nn.Linear(5, 7)
    model = MyLinear(5, 7)
    torch.manual_seed(3)
    torchinit.reinit(model, "legacy")
    assert torch.equal(model.weight, ref.weight) and torch.equal(model.bias, ref.bias)


def test_tied_after_construction() -> None:
    # The usual LM tie: both modules draw at construction, then the head takes the embedding's tensor.
    def build() -> nn.Module:
        m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10))
        m[1].weight = m[0].weight
        return m

    torch.manual_seed(5)
    ref = build()
    model = build()
    torch.manual_seed(5)
    report = torchinit.reinit(model, "legacy")
    assert_same_state(ref, model)
    assert model[1].weight is model[0].weight
    assert report["1.weight"].path == "0.weight"


def test_parametrized_weight_matches_registration_after_construction() -> None:
    from torch.nn.utils import parametrizations

    torch.manual_seed(11)
    ref = parametrizations.weight_norm(nn.Linear(6, 4))
    model = parametrizations.weight_norm(nn.Linear(6, 4))
    torch.manual_seed(11)
    torchinit.reinit(model, "legacy")
    torch.testing.assert_close(model.weight, ref.weight, rtol=0, atol=0)
    assert torch.equal(model.bias, ref.bias)


def test_legacy_report_names_torchs_rules() -> None:
    report = torchinit.reinit(nn.MultiheadAttention(8, 2), "legacy")
    assert report["in_proj_weight"].rule.startswith("uniform(bound=")
    assert report["out_proj.bias"].rule == "constant(0)"  # drawn at construction, then zeroed
    assert "legacy" in str(report)
