"""Residual branches found by tracing one forward pass, and Scheme(residual=...) scaling their output layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchinit
from torchinit import InitError, Scheme, reinit
from torchinit._model.residual import residual_branches
from torchinit.testing import assert_std


class Mixer(nn.Module):
    """A pre-LN block with names no list knows: ``x + squeeze(act(spread(norm(x))))`` and a scaled side path."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.spread = nn.Linear(width, 4 * width)
        self.squeeze = nn.Linear(4 * width, width)
        self.tap = nn.Linear(width, width)  # read by the block, never added back
        self.layer_scale = nn.Parameter(torch.full((width,), 0.5))  # on the branch: followed through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.squeeze(nn.functional.gelu(self.spread(self.norm(x)), approximate="tanh"))
        return x + self.layer_scale * branch + 0.0 * self.tap(x).mean()


class Stack(nn.Module):
    def __init__(self, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        self.inlet = nn.Linear(8, width)
        self.trunk = nn.ModuleList(Mixer(width) for _ in range(depth))
        self.outlet = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inlet(x)
        for block in self.trunk:
            h = block(h)
        return self.outlet(h)


class PreLN(nn.Module):
    """A pre-LN Transformer-style stack of MLP blocks: the residual stream's std grows with depth at init."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def test_the_output_layer_of_each_branch_is_found_whatever_it_is_called() -> None:
    model = Stack()
    branches = residual_branches(model, torch.randn(2, 8))
    assert [(b.layer, b.block) for b in branches] == [(f"trunk.{i}.squeeze", i) for i in range(3)]
    assert [b.weight for b in branches] == [f"trunk.{i}.squeeze.weight" for i in range(3)]


def test_tracing_leaves_the_model_and_the_rng_as_they_were() -> None:
    model = nn.Sequential(nn.BatchNorm1d(8), Stack()).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    residual_branches(model, torch.randn(4, 8, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(rng, torch.get_rng_state()) and model.training


@pytest.mark.parametrize(
    ("rule", "factors"),
    [
        ("1/sqrt(2L)", [1 / math.sqrt(6)] * 3),
        ("depth_init", [1 / math.sqrt(2 * (i + 1)) for i in range(3)]),
        ("zero", [0.0] * 3),
        (0.25, [0.25] * 3),
    ],
)
def test_scheme_residual_scales_each_branch_output_and_says_so(rule: object, factors: list[float]) -> None:
    model = Stack()
    plain = reinit(model, "kaiming_relu", seed=0)
    report = reinit(model, Scheme(residual=rule), seed=0, data=torch.randn(2, 8))  # type: ignore[arg-type]
    for i, factor in enumerate(factors):
        entry = report[f"trunk.{i}.squeeze.weight"]
        assert entry.std == pytest.approx(plain[entry.path].std * factor)
        assert f"residual output of trunk.{i}.squeeze" in entry.source
        if factor == 0.0:
            assert not model.trunk[i].squeeze.weight.any()
    assert report["trunk.0.spread.weight"].std == plain["trunk.0.spread.weight"].std  # not a branch output


def test_a_residual_factor_is_drawn_not_just_reported() -> None:
    model = PreLN(64, 4)
    reinit(model, Scheme(residual="1/sqrt(2L)"), seed=0)  # its input is made from the first Linear
    expected = math.sqrt(2 / 256) / math.sqrt(8)
    assert_std(model.blocks[2][3].weight, expected, kurtosis="normal")
    with pytest.raises(AssertionError):
        assert_std(model.blocks[2][3].weight, math.sqrt(2 / 256), kurtosis="normal")  # the unscaled std


def test_the_residual_stream_grows_as_sqrt_depth_under_kaiming_and_not_under_the_gpt2_rule() -> None:
    # Each pre-LN block adds a branch of roughly the stream's initial scale: Var grows ~ L, std ~ sqrt(L).
    # Scaled by 1/sqrt(2L), the L branches add Var L / (2L) = 1/2: the stream stays near its first block's.
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(1))
    model = PreLN(64, 48)

    def stds() -> list[float]:
        out, h = [], x
        with torch.no_grad():
            for block in model.blocks:
                h = h + block(h)
                out.append(float(h.std()))
        return out

    reinit(model, "kaiming_relu", seed=0)
    kaiming = stds()
    slope = math.log(kaiming[-1] / kaiming[3]) / math.log(48 / 4)
    assert 0.35 <= slope <= 0.65, slope  # sqrt(L): 1/2 on a log-log scale
    reinit(model, Scheme(residual="1/sqrt(2L)"), seed=0)
    scaled = stds()
    assert max(scaled) <= 2 * scaled[0], (scaled[0], max(scaled))
    assert max(kaiming) > 2 * kaiming[0]  # the same criterion fails without the rule


def test_bad_residual_values_and_untraceable_models_are_init_errors() -> None:
    for bad in ("1/L", -1.0, math.nan, True):
        with pytest.raises(InitError, match="residual"):
            Scheme(residual=bad)  # type: ignore[arg-type]

    class NeedsTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + self.a(x * y)

    model = NeedsTwo()
    before = model.a.weight.detach().clone()
    with pytest.raises(InitError, match="runs the model once.*Pass data="):
        reinit(model, Scheme(residual="zero"))
    assert torch.equal(model.a.weight, before)
    report = reinit(model, Scheme(residual="zero"), data=(torch.randn(2, 4), torch.randn(2, 4)))
    assert report["a.weight"].distribution == "constant"  # x + a(x * y): a's output is added back to x
    with pytest.raises(InitError, match="data= is only used"):
        reinit(model, "kaiming_relu", data=torch.randn(2, 4))


def test_torch_multihead_attention_scales_its_out_proj() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.attn(x, x, x, need_weights=False)[0]

    model = nn.Sequential(nn.Linear(8, 32), Block())
    report = reinit(model, Scheme(residual="zero"), data=torch.randn(2, 5, 8))
    assert report["1.attn.out_proj.weight"].distribution == "constant"
    assert not model[1].attn.out_proj.weight.any()
    assert [b.weight for b in torchinit.residual_branches(model, torch.randn(2, 5, 8))] == ["1.attn.out_proj.weight"]


def test_lazy_meta_and_construction_time_uses_are_refused_without_changing_anything() -> None:
    lazy = nn.Sequential(nn.LazyLinear(8), Stack(width=8))
    with pytest.raises(InitError, match="lazy"):
        reinit(lazy, Scheme(residual="zero"))  # tracing it would have materialized 0.weight with in_features=0
    assert isinstance(lazy[0], nn.LazyLinear)
    with pytest.raises(InitError, match="lazy"):
        residual_branches(lazy, torch.randn(2, 8))
    with torch.device("meta"):
        meta = Stack()
    with pytest.raises(InitError, match="meta"):
        reinit(meta, Scheme(residual="zero"))
    building = torchinit.default_scheme(Scheme(residual="zero"))
    with pytest.raises(InitError, match="whole model's forward pass"), building:
        nn.Linear(4, 4)  # a layer being built has no model around it: not silently unscaled
