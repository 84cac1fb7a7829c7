"""The walk's guarantees: ties, identity, dtype, memory format, parametrizations, compile, coverage, errors."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations
from toys import any_model

import torchinit
from torchinit import Fans, InitError, Override, Role, Scheme, UncoveredParameterWarning, reinit
from torchinit._layers import rules as _layers
from torchinit._tools import audit as _audit
from torchinit.extend import Action, LegacyDraws, LSUVScheme
from torchinit.testing import assert_std


@contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """Assert the model's parameters and buffers are bitwise the same after the block."""

    def snapshot(v: torch.Tensor) -> object:
        if isinstance(v, nn.parameter.UninitializedParameter) or v.is_meta:
            return type(v)  # nothing to compare but that it stayed so
        return v.clone()

    state = model.state_dict(keep_vars=True)
    before = {k: snapshot(v) for k, v in state.items()}
    ids = {k: id(v) for k, v in state.items()}
    yield
    after = model.state_dict(keep_vars=True)
    assert before.keys() == after.keys()
    for key, value in after.items():
        assert id(value) == ids[key], key
        old = before[key]
        assert torch.equal(value, old) if isinstance(old, torch.Tensor) else type(value) is old, key


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.gamma = nn.Parameter(torch.full((8,), 3.0))


def test_tied_parameters_written_once_and_still_tied(gen: torch.Generator) -> None:
    model = nn.Sequential(nn.Embedding(100, 64), nn.Linear(64, 100, bias=False))
    model[1].weight = model[0].weight
    report = reinit(model, "kaiming_relu", generator=gen)
    assert model[1].weight is model[0].weight
    assert report["0.weight"].aliases == ("1.weight",) and report["1.weight"] is report["0.weight"]
    assert len(report) == 1
    # A table shared by the input embedding and the output layer is the readout: drawn once by the
    # readout's linear rule (gain 1 over the Linear's fan_in 64), never N(0, 1).
    assert report["0.weight"].role == "readout" and "tied to the input embedding 0.weight" in report["0.weight"].source
    assert_std(model[0].weight, (1 / 64) ** 0.5)
    with pytest.raises(AssertionError):
        assert_std(model[0].weight, 1.0)


def test_identity_dtype_device_grad_and_memory_format(gen: torch.Generator) -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.Linear(6, 6)).to(torch.bfloat16)
    model = model.to(memory_format=torch.channels_last)
    model[2].weight.requires_grad_(False)
    before = {name: (id(p), p.dtype, p.device, p.requires_grad) for name, p in model.named_parameters()}
    reinit(model, "kaiming_relu", generator=gen)
    after = {name: (id(p), p.dtype, p.device, p.requires_grad) for name, p in model.named_parameters()}
    assert before == after
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.grad_fn is None for p in model.parameters())


def test_channels_last_gets_the_same_values_as_contiguous() -> None:
    a, b = nn.Conv2d(4, 8, 3), nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    reinit(a, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    reinit(b, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.weight, b.weight)


def test_weight_norm_effective_weight_follows_the_scheme(gen: torch.Generator) -> None:
    layer = parametrizations.weight_norm(nn.Linear(256, 512))
    originals = [id(p) for p in layer.parametrizations.weight.parameters()]
    report = reinit(layer, "kaiming_relu", generator=gen)
    assert [id(p) for p in layer.parametrizations.weight.parameters()] == originals
    assert report["weight"].role == "dense"
    assert_std(layer.weight.detach(), math.sqrt(2 / 256))
    with pytest.raises(AssertionError):
        assert_std(layer.weight.detach(), math.sqrt(2 / 256) / math.sqrt(6))


def test_spectral_norm_is_set_through_right_inverse(gen: torch.Generator) -> None:
    layer = parametrizations.spectral_norm(nn.Linear(64, 64))
    report = reinit(layer, "kaiming_relu", generator=gen)
    assert_std(layer.parametrizations.weight.original.detach(), math.sqrt(2 / 64))  # the scheme's draw
    layer.eval()
    assert report["weight"].std == pytest.approx(float(layer.weight.detach().std()))  # what the layer uses
    assert "after its parametrization (_SpectralNorm)" in report["weight"].rule


def test_compiled_module_is_reinitialized_through_the_module_it_wraps(gen: torch.Generator) -> None:
    model = nn.Sequential(nn.Linear(256, 256))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own imports under torch.compile
        compiled = torch.compile(model)
    report = reinit(compiled, "kaiming_relu", generator=gen)
    assert [e.path for e in report] == ["0.weight", "0.bias"]
    assert_std(model[0].weight, math.sqrt(2 / 256))


def test_norm_running_statistics_reset(gen: torch.Generator) -> None:
    bn = nn.BatchNorm1d(4)
    bn(torch.randn(16, 4, generator=gen) * 5 + 3)
    report = reinit(nn.Sequential(bn), "kaiming_relu", generator=gen)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert int(bn.num_batches_tracked) == 0 and "0.running_var" in report.buffers


def test_lstm_forget_gate_bias(gen: torch.Generator) -> None:
    lstm = nn.LSTM(4, 5)
    reinit(lstm, Scheme(forget_bias=1.0), generator=gen)
    assert torch.equal(lstm.bias_ih_l0, torch.tensor([0.0] * 5 + [1.0] * 5 + [0.0] * 10))
    assert torch.equal(lstm.bias_hh_l0, torch.zeros(20))  # the sum of the two is 1 on the forget gate


# --- coverage -------------------------------------------------------------------------------------


def test_uncovered_parameters_are_warned_about_and_listed(gen: torch.Generator) -> None:
    model = Custom()
    with pytest.warns(
        UncoveredParameterWarning, match=r"untouched because no rule covers them:\n  Custom.gamma x 1: gamma \(8,\)"
    ):
        report = reinit(model, "kaiming_relu", generator=gen)
    assert [e.path for e in report.skipped] == ["gamma"]
    assert report["gamma"].skipped == "no rule covers it"
    assert torch.equal(model.gamma, torch.full((8,), 3.0))
    assert "SKIPPED" in str(report)


def test_strict_raises_naming_each_path_and_shape() -> None:
    model = Custom()
    with unchanged(model), pytest.raises(InitError, match=r"gamma \(Custom, shape \(8,\)\) has no rule"):
        reinit(model, "kaiming_relu", strict=True)


def test_register_role_rule_and_fan_rule_cover_custom_modules(gen: torch.Generator) -> None:
    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(64, 2 * 128))
            self.scale = nn.Parameter(torch.empty(64))

    torchinit.register_fan_rule(Gated, lambda m, name: Fans(64, 128) if name == "w" else None)
    torchinit.register_role_rule(Gated, lambda m, name: Role("norm_weight") if name == "scale" else None)
    model = Gated()
    report = reinit(model, "kaiming_relu_fan_out", generator=gen, strict=True)
    assert report["w"].role == "dense" and report["w"].std == pytest.approx(math.sqrt(2 / 128))
    assert torch.equal(model.scale, torch.ones(64))


def test_overrides_cover_custom_parameters(gen: torch.Generator) -> None:
    model = Custom()
    reinit(model, "kaiming_relu", generator=gen, strict=True, overrides=[Override(path="gamma", constant=1.0)])
    assert torch.equal(model.gamma, torch.ones(8))


# --- overrides ------------------------------------------------------------------------------------


def test_overrides_by_type_pattern_and_frozen(gen: torch.Generator) -> None:
    model = nn.ModuleDict(
        {
            "emb": nn.Embedding(1000, 64),
            "block": nn.ModuleDict({"c_fc": nn.Linear(64, 256), "c_proj": nn.Linear(256, 64), "ln": nn.LayerNorm(64)}),
            "frozen": nn.Linear(64, 64),
        }
    )
    model["frozen"].requires_grad_(False)
    frozen_before = model["frozen"].weight.clone()
    report = reinit(
        model,
        "kaiming_relu",
        generator=gen,
        overrides=[
            Override(module=nn.Embedding, std=0.02),
            Override(path="*.c_proj.weight", std=0.01, distribution="truncated_normal"),
            Override(path="*.ln.weight", constant=0.0),
            Override(frozen=True, skip=True),
            Override(path="block.c_fc.weight", scheme="xavier_uniform"),
        ],
    )
    assert_std(model["emb"].weight, 0.02)
    assert report["block.c_proj.weight"].rule == "truncated_normal(std=0.01)"
    assert torch.equal(model["block"]["ln"].weight, torch.zeros(64))
    assert torch.equal(model["frozen"].weight, frozen_before) and report["frozen.weight"].skipped
    assert report["block.c_fc.weight"].std == pytest.approx(math.sqrt(2 / (64 + 256)))


def test_last_matching_override_wins(gen: torch.Generator) -> None:
    layer = nn.Linear(4, 4)
    scheme = Scheme().with_overrides(Override(path="*", constant=1.0), Override(path="bias", constant=2.0))
    reinit(layer, scheme, generator=gen)
    assert torch.equal(layer.weight, torch.ones(4, 4)) and torch.equal(layer.bias, torch.full((4,), 2.0))


# --- errors leave the model unchanged -------------------------------------------------------------


def test_lazy_parameters_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LazyLinear(5))
    with (
        unchanged(model),
        pytest.raises(InitError, match=r"1\.weight \(LazyLinear, shape uninitialized\) is an uninitialized lazy"),
    ):
        reinit(model)


def test_meta_parameters_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4, device="meta"))
    with (
        unchanged(model),
        pytest.raises(InitError, match=r"1\.weight \(Linear, shape \(4, 4\)\) is on the meta device.*to_empty"),
    ):
        reinit(model)


def test_integer_parameter_cannot_take_draws() -> None:
    model = Custom()
    model.count = nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    with unchanged(model), pytest.raises(InitError, match=r"count \(Custom, shape \(3,\)\) has dtype torch.int64"):
        reinit(model, overrides=[Override(path="count", frozen=True, std=1.0), Override(path="gamma", constant=1.0)])


def test_argument_errors_leave_the_model_unchanged() -> None:
    model = nn.Sequential(nn.Linear(3, 4))
    with unchanged(model):
        with pytest.raises(
            InitError, match="scheme must be a registered name; got scheme='kaiming_rleu'. Did you mean 'kaiming_relu'"
        ):
            reinit(model, "kaiming_rleu")
        with pytest.raises(InitError, match="legacy reproduces torch's defaults bit for bit and takes no overrides"):
            reinit(model, "legacy", overrides=[Override(skip=True)])
        with pytest.raises(InitError, match="overrides must be a sequence of Override"):
            reinit(model, overrides=["*.weight"])  # type: ignore[list-item]
        with pytest.raises(InitError, match="generator must be a torch.Generator or None; got generator=3"):
            reinit(model, generator=3)  # type: ignore[arg-type]
        with pytest.raises(InitError, match="scheme must be a registered name or a Scheme; got scheme=3"):
            reinit(model, 3)  # type: ignore[arg-type]
        with pytest.raises(InitError, match="applies a scheme to 'gamma', which has no known role"):
            reinit(Custom(), overrides=[Override(path="gamma", scheme="kaiming_relu")])
    with pytest.raises(InitError, match="module must be an nn.Module; got Tensor"):
        reinit(torch.zeros(3))  # type: ignore[arg-type]


def test_all_problems_reported_at_once() -> None:
    model = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 3, device="meta"), Custom())
    with unchanged(model), pytest.raises(InitError) as info:
        reinit(model, strict=True)
    text = str(info.value)
    assert text.startswith("reinit changed nothing")
    assert "0.weight" in text and "1.weight" in text and "2.gamma" in text


# --- the report -----------------------------------------------------------------------------------


def test_report_forms(gen: torch.Generator) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.LSTM(8, 8))
    report = reinit(model, "kaiming_relu", generator=gen)
    text = str(report)
    assert text.splitlines()[0] == "reinit with kaiming_relu: 6 parameters, 0 skipped"
    row = next(line for line in text.splitlines() if line.startswith("0.weight "))
    assert row.split()[:5] == ["0.weight", "8x3x3x3", "dense", "27,", "18"]  # fan_out 8*9/(2*2)
    records = report.records()
    assert records[0]["path"] == "0.weight" and records[0]["fans"] == {"fan_in": 27, "fan_out": 18, "chunks": 1}
    json.dumps(report.to_dict())
    assert report["1.weight_hh_l0"].rule == "orthogonal(gain=1) x4 chunks"
    with pytest.raises(KeyError, match="no parameter 'nope' in this report"):
        report["nope"]
    assert repr(report) == "<InitReport scheme=kaiming_relu parameters=6 skipped=0>"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reinit(model, Scheme.kaiming("gelu"), generator=gen)  # a scheme object is fine too


def test_twin_layers_share_a_plan_only_when_their_layout_matches(gen: torch.Generator) -> None:
    # Same shapes, different strides: the true fan_out differs, so the fan_out stds must too.
    model = nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3, stride=2), nn.Conv2d(8, 8, 3), nn.Linear(8, 8))
    report = reinit(model, "kaiming_relu_fan_out", generator=gen)
    assert report["0.weight"].std == pytest.approx(math.sqrt(2 / 72))
    assert report["1.weight"].std == pytest.approx(math.sqrt(2 / 18))
    assert report["2.weight"].std == report["0.weight"].std
    assert report["0.weight"].fans == Fans(72, 72) and report["1.weight"].fans == Fans(72, 18)


class WB(nn.Module):
    """A dense layer whose parameters are called ``w`` and ``b``: y = x w^T + b."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        self.b = nn.Parameter(torch.empty(n_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w)
        nn.init.zeros_(self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.t() + self.b


@pytest.fixture
def wb_described() -> Iterator[None]:
    saved = _layers.registered()

    def legacy(draws: LegacyDraws, m: nn.Module, prefix: str) -> None:  # what WB's constructor draws
        draws.draw(m, prefix, "w", Action("normal", 1.0))
        draws.draw(m, prefix, "b", Action("constant", 0.0))

    torchinit.register_layer(
        WB,
        fans=lambda m, name: Fans(m.w.shape[1], m.w.shape[0]) if name == "w" else None,  # type: ignore[union-attr, index]
        roles=lambda m, name: Role("bias") if name == "b" else None,
        legacy=legacy,
        reset="reset_parameters",
    )
    yield
    _layers.restore(saved)


def test_one_description_covers_a_layer_in_every_reader(wb_described: None, gen: torch.Generator) -> None:
    model = nn.Sequential(WB(64, 256), nn.ReLU(), WB(256, 256), nn.ReLU(), WB(256, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncoveredParameterWarning)  # nothing left uncovered anywhere below
        # reinit: the described fans and roles
        report = reinit(model, "kaiming_relu", generator=gen)
        assert (report["0.w"].role, report["0.w"].std, report["0.b"].rule) == (
            "dense",
            math.sqrt(2 / 64),
            "constant(0)",
        )
        assert_std(model[2].w, math.sqrt(2 / 256))
        # legacy: the described constructor draws, bit for bit
        torch.manual_seed(7)
        fresh = nn.Sequential(WB(64, 256), nn.ReLU(), WB(256, 256), nn.ReLU(), WB(256, 10))
        torch.manual_seed(7)
        reinit(model, "legacy")
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True))
        # LSUV: every WB calibrated through its `w`, its `b` centered
        lsuv = LSUVScheme(center=True)
        report = reinit(model, lsuv, data=torch.randn(512, 64, generator=gen), generator=gen)
        assert [layer.path for layer in report.lsuv] == ["0", "2", "4"]
        assert all(layer.converged for layer in report.lsuv)
        assert report["2.w"].source.startswith("lsuv at 2") and "centered by lsuv" in report["2.b"].rule
        # audit: a row per WB weight, nothing raw
        layers, raw = _audit.weight_layers(model, torchinit.get_scheme("kaiming_relu"))
        assert [(row["path"], row["param"], row["kind"]) for row in layers] == [
            ("0", "w", "dense"), ("2", "w", "dense"), ("4", "w", "dense")
        ] and raw == []  # fmt: skip
        # a recipe rule: Hugging Face's generic init draws every dense weight N(0, r^2)
        with pytest.warns(torchinit.RecipeMismatchWarning, match="the 'bert' recipe is for a BERT-family model"):
            report = reinit(model, any_model("bert"), generator=gen)
        assert (report["4.w"].std, report["4.w"].rule, report["4.b"].std) == (0.02, "normal(std=0.02)", 0.0)


def test_a_module_reused_at_two_positions_is_one_parameter_under_both_paths(gen: torch.Generator) -> None:
    shared = nn.Linear(16, 16)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = reinit(model, "kaiming_relu", generator=gen, overrides=[Override(path="2.weight", constant=0.5)])
    assert report["0.weight"].aliases == ("2.weight",) and report["2.weight"] is report["0.weight"]
    assert bool((shared.weight == 0.5).all())
