"""What a layer means, not what its structure suggests: zero-centred norms, frozen tables."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from toys import any_model

import torchinit
from torchinit import Override, reinit
from torchinit._layers.measure import neutral_norm_weight


class CentredRMSNorm(nn.Module):
    """Gemma's RMSNorm: ``x_hat * (1 + w)``, starting at w = 0."""

    MEASURED = "measured: output x_hat * (1 + w), so w = 0 passes x_hat unscaled"

    def __init__(self, width: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x_hat * (1.0 + self.weight)


class PlainRMSNorm(CentredRMSNorm):
    """Llama's RMSNorm: ``x_hat * w``, starting at w = 1."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class OffsetNorm(CentredRMSNorm):
    """``x_hat * (0.5 + w)``: neutral at 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (0.5 + self.weight)


class SquaredNorm(CentredRMSNorm):
    """Not affine in its weight: nothing to measure, 1 assumed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight) ** 2


def _block(norm: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 8), norm, nn.Linear(8, 2))


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # HF recipes on a toy model
def test_a_zero_centred_norm_gets_its_identity_value_under_every_scheme() -> None:
    for scheme in ("kaiming_relu", "xavier_uniform", "lecun_normal", "llama", "bert"):
        model = _block(CentredRMSNorm(8))
        model[1].weight.data.fill_(0.3)
        report = reinit(model, any_model(scheme), generator=torch.Generator().manual_seed(0))
        assert torch.equal(model[1].weight, torch.zeros(8)), scheme
        assert "measured" in report["1.weight"].source
        x = torch.randn(4, 8)
        hidden = model[0](x)
        # the identity: output is the normalized input, unscaled (a weight of 1 would double it)
        torch.testing.assert_close(model[1](hidden), hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6))


def test_legacy_gives_a_zero_centred_norm_its_constructor_value() -> None:
    model = _block(CentredRMSNorm(8))
    model[1].weight.data.fill_(0.3)
    reinit(model, "legacy")
    assert torch.equal(model[1].weight, torch.zeros(8))


def test_the_measured_value_is_the_offset_and_a_plain_norm_stays_at_one() -> None:
    assert neutral_norm_weight(OffsetNorm(8), "weight") is not None
    assert neutral_norm_weight(OffsetNorm(8), "weight")[0] == 0.5  # type: ignore[index]
    assert neutral_norm_weight(PlainRMSNorm(8), "weight") is None
    assert neutral_norm_weight(SquaredNorm(8), "weight") is None  # not affine: no claim
    assert neutral_norm_weight(nn.LayerNorm(8), "weight") is None
    assert neutral_norm_weight(nn.GroupNorm(2, 8), "weight") is None
    model = _block(PlainRMSNorm(8))
    model[1].weight.data.fill_(0.3)
    reinit(model, "kaiming_relu")
    assert torch.equal(model[1].weight, torch.ones(8))  # the usual norm: 1, unchanged behaviour


class LayerNorm1P(nn.LayerNorm):  # Nemotron's: a torch LayerNorm subclass that computes x_hat * (1 + w)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


class LayerNorm2d(nn.LayerNorm):  # timm's: channels first, the usual x_hat * w
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def test_a_subclass_of_a_torch_norm_is_measured_too() -> None:
    # torch's norm rule matched the subclass and set 1 unmeasured: Nemotron's loss under kaiming_gelu was 9.65
    model = _block(LayerNorm1P(8))
    report = reinit(model, "kaiming_relu")
    assert report["1.weight"].param == 0.0 and "measured" in report["1.weight"].source
    assert not model[1].weight.any()
    model = _block(LayerNorm2d(8))
    assert reinit(model, "kaiming_relu")["1.weight"].param == 1.0
    assert reinit(_block(nn.LayerNorm(8)), "kaiming_relu")["1.weight"].source == "norm weight"  # not measured


def test_measuring_changes_nothing_and_works_on_meta_and_half_layers() -> None:
    norm = CentredRMSNorm(8)
    norm.weight.data.fill_(0.3)
    before = norm.weight.detach().clone()
    state = torch.random.get_rng_state()

    class Meta(CentredRMSNorm):  # a fresh class: not cached yet
        pass

    assert neutral_norm_weight(Meta(8), "weight") == neutral_norm_weight(norm, "weight")
    assert torch.equal(torch.random.get_rng_state(), state) and torch.equal(norm.weight, before)
    with torch.device("meta"):
        meta = type("MetaCentred", (CentredRMSNorm,), {})(8)
    assert neutral_norm_weight(meta, "weight") is not None and neutral_norm_weight(meta, "weight")[0] == 0.0  # type: ignore[index]
    half = type("HalfCentred", (CentredRMSNorm,), {})(8).to(torch.bfloat16)
    assert neutral_norm_weight(half, "weight")[0] == 0.0  # type: ignore[index]


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # HF recipes on a toy model
def test_frozen_parameters_are_kept_and_reported_unless_an_override_says_frozen() -> None:
    def model() -> nn.Sequential:
        m = nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 8))
        with torch.no_grad():
            m[0].weight.copy_(torch.arange(128.0).reshape(16, 8))  # a fixed (sinusoidal-like) table
        m[0].weight.requires_grad_(False)
        return m

    m = model()
    table = m[0].weight.detach().clone()
    report = reinit(m, "kaiming_relu")
    assert torch.equal(m[0].weight, table)
    assert report["0.weight"].distribution == "keep" and "Override(frozen=True)" in report["0.weight"].source
    for scheme in ("bert", "xavier_uniform"):
        m = model()
        reinit(m, any_model(scheme), seed=0)
        assert torch.equal(m[0].weight, table), scheme
    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(path="0.weight", std=0.02)])  # not frozen=True: still kept
    assert torch.equal(m[0].weight, table)
    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(frozen=True)])  # opted in: the scheme's rule
    assert not torch.equal(m[0].weight, table) and abs(float(m[0].weight.std()) - 1.0) < 0.3
    assert not m[0].weight.requires_grad  # still frozen
    m = model()
    reinit(m, "kaiming_relu", overrides=[Override(frozen=True, std=0.02)])
    assert float(m[0].weight.abs().max()) < 0.2


def test_legacy_keeps_a_frozen_layer_and_still_replays_torch_for_the_others() -> None:
    torch.manual_seed(3)
    reference = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].requires_grad_(False)
    kept = [p.detach().clone() for p in model[1].parameters()]
    torch.manual_seed(3)
    report = reinit(model, "legacy")
    assert all(torch.equal(a, b) for a, b in zip(model[1].parameters(), kept, strict=True))
    for i in (0, 2):  # bit for bit: the frozen layer's draws still advanced the RNG
        assert all(torch.equal(a, b) for a, b in zip(model[i].parameters(), reference[i].parameters(), strict=True))
    assert report["1.weight"].distribution == "keep"


def test_a_frozen_norm_keeps_its_statistics() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    m[1].running_mean.fill_(0.5)
    m[1].requires_grad_(False)
    reinit(m, "kaiming_relu")
    assert float(m[1].running_mean[0]) == 0.5
    assert torchinit.__version__


def test_inside_parametrize_cached_the_layer_and_the_report_see_the_value_written() -> None:
    from torch.nn.utils import parametrizations, parametrize

    for seed in (None, 0):
        model = nn.Sequential(parametrizations.weight_norm(nn.Linear(64, 64)))
        with parametrize.cached():
            stale = model[0].weight.detach().clone()  # cached by torch under (module id, "weight")
            report = reinit(model, "kaiming_relu", seed=seed)
            inside = model[0].weight.detach().clone()
        assert not torch.equal(inside, stale)  # the layer no longer computes with the value before reinit
        assert torch.equal(inside, model[0].weight.detach())
        assert report["0.weight"].std == pytest.approx(float(inside.std()), rel=1e-6)  # not the stale 0.07


class _DroppingNorm(CentredRMSNorm):
    """Gemma's norm with dropout after it in training mode: its forward draws from torch's RNG."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(super().forward(x), 0.1, self.training)


def test_measuring_a_norm_whose_forward_draws_leaves_torch_s_rng_alone() -> None:
    # the probe ran the layer's forward on torch's RNG: a keyed call, or one refused later, moved it
    model = _block(_DroppingNorm(8)).train()
    state = torch.get_rng_state()
    reinit(model, "kaiming_relu", seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    model = _block(type("FreshNorm", (_DroppingNorm,), {})(8))  # not measured yet
    state = torch.get_rng_state()
    with pytest.raises(torchinit.InitError, match="selects nothing"):
        reinit(model, "kaiming_relu", overrides=[Override(path="x", skip=True)])
    assert torch.equal(torch.get_rng_state(), state)


def test_measuring_ignores_the_default_device() -> None:
    # under torch.device("meta") the probe's input was a meta tensor: the measurement failed and 1 was assumed
    model = _block(type("MetaDefaultNorm", (CentredRMSNorm,), {})(8))
    model[1].weight.data.fill_(0.3)
    with torch.device("meta"):
        report = reinit(model, "kaiming_relu", seed=0)
    assert report["1.weight"].param == 0.0 and not model[1].weight.any()


class _ConfiguredNorm(CentredRMSNorm):
    """``x_hat * (config.offset + w)``: what it computes is set by a config object, not by a plain attribute."""

    def __init__(self, width: int, config: object) -> None:
        super().__init__(width)
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x_hat * (self.config.offset + self.weight)  # type: ignore[attr-defined]


def test_norms_of_one_class_set_apart_by_their_configs_are_measured_apart() -> None:
    # the measurement was cached by class and plain attributes: the second config got the first's neutral value
    offset, plain = SimpleNamespace(offset=1.0), SimpleNamespace(offset=0.0)
    assert neutral_norm_weight(_ConfiguredNorm(8, offset), "weight") == (0.0, CentredRMSNorm.MEASURED)
    assert neutral_norm_weight(_ConfiguredNorm(8, plain), "weight") is None  # x_hat * w: 1
    plain.offset = 1.0  # the same config object, changed
    assert neutral_norm_weight(_ConfiguredNorm(8, plain), "weight") is not None
