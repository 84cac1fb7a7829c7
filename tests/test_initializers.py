"""Initializers: drop-in equality with torch.nn.init, every formula over generated shapes, errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import torchinit
from torchinit import Fans, InitError
from torchinit._maths.distributions import truncated_normal_std
from torchinit.testing import assert_distribution, assert_mean, assert_std, assert_uniform_support
from torchinit.testing import strategies as tst

FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


# test_torch_dropin.py checks every torch.nn.init function's signature against torchinit's.
DROP_IN_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("kaiming_uniform_", {}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"nonlinearity": "relu"}),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "tanh"}),
    ("xavier_uniform_", {"gain": 5 / 3}),
    ("xavier_normal_", {}),
    ("trunc_normal_", {"std": 0.02}),
    ("trunc_normal_", {"mean": 0.5, "std": 1.0, "a": -1.0, "b": 0.0}),
    ("orthogonal_", {"gain": 2.0}),
]


@pytest.mark.parametrize(("name", "kwargs"), DROP_IN_CALLS, ids=[f"{n}{k}" for n, k in DROP_IN_CALLS])
@given(shape=tst.weight_shapes(max_dims=4, max_side=12), seed=tst.seeds(), dtype=st.sampled_from(FLOATS))
def test_bitwise_equal_to_torch(
    name: str, kwargs: dict[str, Any], shape: tuple[int, ...], seed: int, dtype: torch.dtype
) -> None:
    ours_gen, torch_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    expected = torch.empty(shape, dtype=dtype)
    try:
        getattr(nn.init, name)(expected, **kwargs, generator=torch_gen)
    except RuntimeError:  # torch's QR has no half-precision kernel: ours is an extension there
        assert name == "orthogonal_" and dtype in (torch.bfloat16, torch.float16)
        return
    actual = getattr(torchinit, name)(torch.empty(shape, dtype=dtype), **kwargs, generator=ours_gen)
    assert torch.equal(actual, expected)
    assert torch.equal(ours_gen.get_state(), torch_gen.get_state())  # same RNG consumption


@pytest.mark.parametrize("name", ["kaiming_normal_", "xavier_uniform_", "orthogonal_"])
def test_global_rng_equal_to_torch(name: str) -> None:
    torch.manual_seed(123)
    expected = getattr(nn.init, name)(torch.empty(8, 6, 3))
    after = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(getattr(torchinit, name)(torch.empty(8, 6, 3)), expected)
    assert torch.equal(torch.rand(1), after)


# --- every formula, over generated shapes ---------------------------------------------------------

Std = Callable[[Fans], float]
# name -> (call(tensor, fans, generator), distribution, std from the fans)
PRESETS: dict[str, tuple[Callable[..., torch.Tensor], str, Std]] = {
    "kaiming_normal_": (lambda t, f, g: torchinit.kaiming_normal_(t, nonlinearity="relu", fans=f, generator=g),
                        "normal", lambda f: math.sqrt(2 / f.fan_in)),
    "kaiming_normal_fan_out": (lambda t, f, g: torchinit.kaiming_normal_(t, 0.2, "fan_out", fans=f, generator=g),
                               "normal", lambda f: math.sqrt(2 / 1.04 / f.fan_out)),
    "kaiming_uniform_": (lambda t, f, g: torchinit.kaiming_uniform_(t, nonlinearity="relu", fans=f, generator=g),
                         "uniform", lambda f: math.sqrt(2 / f.fan_in)),
    "kaiming_uniform_legacy": (lambda t, f, g: torchinit.kaiming_uniform_(t, math.sqrt(5), fans=f, generator=g),
                               "uniform", lambda f: 1 / math.sqrt(3 * f.fan_in)),
    "xavier_uniform_": (lambda t, f, g: torchinit.xavier_uniform_(t, fans=f, generator=g),
                        "uniform", lambda f: math.sqrt(2 / (f.fan_in + f.fan_out))),
    "xavier_normal_": (lambda t, f, g: torchinit.xavier_normal_(t, 2.0, fans=f, generator=g),
                       "normal", lambda f: 2 * math.sqrt(2 / (f.fan_in + f.fan_out))),
    "lecun_normal_": (lambda t, f, g: torchinit.lecun_normal_(t, fans=f, generator=g),
                      "normal", lambda f: 1 / math.sqrt(f.fan_in)),
    "lecun_uniform_": (lambda t, f, g: torchinit.lecun_uniform_(t, fans=f, generator=g),
                       "uniform", lambda f: 1 / math.sqrt(f.fan_in)),
    "uniform_std_": (lambda t, f, g: torchinit.uniform_std_(t, 0.3, generator=g), "uniform", lambda f: 0.3),
    "truncated_normal_": (lambda t, f, g: torchinit.truncated_normal_(t, 0.05, generator=g),
                          "truncated_normal", lambda f: 0.05),
}  # fmt: skip
for _mode in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg"):
    for _dist in ("normal", "uniform", "truncated_normal"):
        PRESETS[f"variance_scaling_{_mode}_{_dist}"] = (
            lambda t, f, g, m=_mode, d=_dist: torchinit.variance_scaling_(t, 0.7, m, d, fans=f, generator=g),
            _dist,
            lambda f, m=_mode: math.sqrt(0.7 / f.fan(m)),  # type: ignore[misc]
        )

BIG_SHAPES = tst.weight_shapes(max_dims=4, max_side=80, min_numel=2000, max_numel=40_000)


def _check(x: torch.Tensor, distribution: str, std: float, label: str) -> None:
    assert_std(x, std, kurtosis=distribution, msg=label)
    assert_mean(x, std=std, msg=label)
    assert_distribution(x, distribution, std, msg=label)  # type: ignore[arg-type]
    if distribution == "uniform":
        assert_uniform_support(x, math.sqrt(3) * std, msg=label)
    if distribution == "truncated_normal":
        assert float(x.abs().max()) <= 2 * std / truncated_normal_std() * (1 + torch.finfo(x.dtype).eps)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@given(shape=BIG_SHAPES, explicit=st.booleans(), data=st.data(), gen=tst.generators())
def test_formula(
    preset: str, shape: tuple[int, ...], explicit: bool, data: st.DataObject, gen: torch.Generator
) -> None:
    call, distribution, std_of = PRESETS[preset]
    fans = torchinit.torch_fans(torch.empty(shape, device="meta"))
    if explicit:  # true fans differ from the shape guess: they must be the ones used
        fans = Fans(data.draw(st.integers(1, 5000), "fan_in"), data.draw(st.integers(1, 5000), "fan_out"))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]), "dtype")
    x = call(torch.empty(shape, dtype=dtype), fans if explicit else None, gen)
    assert x.dtype == dtype and x.shape == shape
    label = f"{preset} shape={shape} fans={fans} dtype={dtype}"
    _check(x, distribution, std_of(fans), label)
    for wrong in (std_of(fans) * math.sqrt(6), std_of(fans) / math.sqrt(6)):  # the legacy ratio is caught
        with pytest.raises(AssertionError):
            assert_std(x, wrong, kurtosis=distribution, msg=label)
        with pytest.raises(AssertionError):
            assert_distribution(x, distribution, wrong, msg=label)  # type: ignore[arg-type]


def test_named_presets_equal_variance_scaling() -> None:
    # "Equivalent to variance_scaling_(...)": the same draws, scaled by stds equal up to rounding.
    cases = [
        (lambda t, g: torchinit.kaiming_normal_(t, nonlinearity="relu", generator=g), (2.0, "fan_in", "normal")),
        (lambda t, g: torchinit.kaiming_uniform_(t, 0.3, "fan_out", generator=g), (2 / 1.09, "fan_out", "uniform")),
        (lambda t, g: torchinit.xavier_normal_(t, 1.5, generator=g), (2.25, "fan_avg", "normal")),
        (lambda t, g: torchinit.xavier_uniform_(t, generator=g), (1.0, "fan_avg", "uniform")),
        (lambda t, g: torchinit.lecun_uniform_(t, generator=g), (1.0, "fan_in", "uniform")),
        (lambda t, g: torchinit.kaiming_uniform_(t, math.sqrt(5), generator=g), (1 / 3, "fan_in", "uniform")),
    ]
    for named, (scale, mode, dist) in cases:
        a = named(torch.empty(30, 20, 3, dtype=torch.float64), torch.Generator().manual_seed(1))
        b = torchinit.variance_scaling_(
            torch.empty(30, 20, 3, dtype=torch.float64),
            scale,
            mode,
            dist,
            generator=torch.Generator().manual_seed(1),  # type: ignore[arg-type]
        )
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_legacy_rule_through_uniform_std() -> None:
    # torch's layer default U(+-1/sqrt(fan_in)) stated as a std: 1/sqrt(3 fan_in).
    w = nn.Linear(300, 200).weight
    expected = nn.init.kaiming_uniform_(torch.empty_like(w), a=math.sqrt(5), generator=torch.Generator().manual_seed(4))
    got = torchinit.uniform_std_(
        torch.empty_like(w), 1 / math.sqrt(3 * 300), generator=torch.Generator().manual_seed(4)
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


@given(
    a=st.floats(-6.0, 1.0), width=st.floats(0.5, 8.0), mean=st.floats(-3, 3), std=st.floats(1e-3, 10.0),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]), gen=tst.generators(),
)  # fmt: skip
def test_truncated_normal_any_cutoffs(
    a: float, width: float, mean: float, std: float, dtype: torch.dtype, gen: torch.Generator
) -> None:
    b = a + width
    x = torchinit.truncated_normal_(torch.empty(20_000, dtype=dtype), std, mean=mean, a=a, b=b, generator=gen)
    sigma = std / truncated_normal_std(a, b)
    slack = torch.finfo(dtype).eps * (abs(mean) + sigma * max(abs(a), abs(b)))
    assert float(x.min()) >= mean + a * sigma - slack and float(x.max()) <= mean + b * sigma + slack
    assert_distribution(x, "truncated_normal", std, mean=mean, a=a, b=b)


def test_truncated_normal_differs_from_torchs() -> None:
    g = torch.Generator().manual_seed(0)
    ours = torchinit.truncated_normal_(torch.empty(1_000_000), 1.0, generator=g)
    theirs = torchinit.trunc_normal_(torch.empty(1_000_000), std=1.0, generator=g)
    assert_std(ours, 1.0, kurtosis="truncated_normal")
    assert_std(theirs, truncated_normal_std(), kurtosis="truncated_normal")  # torch's: 0.88, uncorrected
    with pytest.raises(AssertionError):
        assert_std(theirs, 1.0, kurtosis="truncated_normal")


# --- orthogonal -----------------------------------------------------------------------------------


@given(
    rows=st.integers(1, 40), cols=st.integers(1, 40), chunks=st.sampled_from([1, 2, 3, 4]),
    dtype=st.sampled_from(FLOATS), gen=tst.generators(),
)  # fmt: skip
def test_orthogonal_blocks(rows: int, cols: int, chunks: int, dtype: torch.dtype, gen: torch.Generator) -> None:
    w = torchinit.orthogonal_(torch.empty(rows * chunks, cols, dtype=dtype), 1.5, generator=gen, chunks=chunks)
    for block in w.double().chunk(chunks):
        small = block if rows <= cols else block.T  # rows of `small` are orthonormal * gain
        eye = torch.eye(small.shape[0], dtype=torch.float64) * 1.5**2
        tol = 20 * max(rows, cols) * torch.finfo(dtype).eps * 1.5**2  # rounding of the stored values
        torch.testing.assert_close(small @ small.T, eye, rtol=0, atol=tol)


def test_orthogonal_channels_last_and_views() -> None:
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    contiguous = torchinit.orthogonal_(torch.empty(8, 4, 3, 3), generator=g1)
    cl = torchinit.orthogonal_(torch.empty(8, 4, 3, 3).to(memory_format=torch.channels_last), generator=g2)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, contiguous)


def test_low_precision_gets_the_same_distribution(gen: torch.Generator) -> None:
    for dtype in (torch.bfloat16, torch.float16):
        w = torchinit.kaiming_normal_(torch.empty(512, 256, dtype=dtype), nonlinearity="relu", generator=gen)
        _check(w, "normal", math.sqrt(2 / 256), str(dtype))
        t = torchinit.variance_scaling_(
            torch.empty(512, 256, dtype=dtype), 1.0, "fan_in", "truncated_normal", generator=gen
        )
        _check(t, "truncated_normal", 1 / 16, str(dtype))
        o = torchinit.orthogonal_(torch.empty(1024, 64, dtype=dtype), generator=gen)
        assert_std(o, 1 / math.sqrt(1024), kurtosis=3.0)  # an orthogonal column of length 1024 is near-normal


# --- edge cases and errors ------------------------------------------------------------------------

ALL = [
    lambda t, g: torchinit.kaiming_normal_(t, generator=g),
    lambda t, g: torchinit.kaiming_uniform_(t, generator=g),
    lambda t, g: torchinit.xavier_normal_(t, generator=g),
    lambda t, g: torchinit.xavier_uniform_(t, generator=g),
    lambda t, g: torchinit.lecun_normal_(t, generator=g),
    lambda t, g: torchinit.lecun_uniform_(t, generator=g),
    lambda t, g: torchinit.variance_scaling_(t, generator=g),
    lambda t, g: torchinit.uniform_std_(t, 1.0, generator=g),
    lambda t, g: torchinit.truncated_normal_(t, generator=g),
    lambda t, g: torchinit.orthogonal_(t, generator=g),
]


@pytest.mark.parametrize("init", ALL)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0, 3), (0,)])
def test_zero_element_is_a_noop(init: Callable[..., torch.Tensor], shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    t = torch.empty(shape)
    if len(shape) < 2 and init is ALL[-1]:
        with pytest.raises(InitError, match="at least 2 dimensions"):
            init(t, g)
        return
    if init in ALL[:2]:  # the kaiming drop-ins warn as torch's do (tests/test_torch_parity.py)
        with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
            assert init(t, g) is t
    else:
        assert init(t, g) is t
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("init", ALL[:7])
def test_one_dim_needs_explicit_fans(init: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(InitError, match=r"at least 2 dimensions; got shape=\(7,\). Pass fans="):
        init(torch.empty(7), None)


def test_one_dim_with_explicit_fans(gen: torch.Generator) -> None:
    b = torchinit.kaiming_uniform_(torch.empty(4096), nonlinearity="relu", fan_in=50, generator=gen)
    _check(b, "uniform", math.sqrt(2 / 50), "bias")
    b = torchinit.xavier_normal_(torch.empty(4096), fans=(30, 70), generator=gen)
    _check(b, "normal", math.sqrt(2 / 100), "bias")


def test_in_place_no_grad_and_identity() -> None:
    p = nn.Parameter(torch.empty(16, 8))
    for init in ALL:
        out = init(p, None)
        assert out is p and p.grad_fn is None and p.requires_grad
    view = torch.zeros(10, 10)[:, :5]
    torchinit.truncated_normal_(view)
    assert bool((view != 0).all())


def test_meta_tensors_pass_through() -> None:
    for init in ALL:
        out = init(torch.empty(6, 4, device="meta"), None)
        assert out.is_meta


def test_initializer_errors() -> None:
    w = torch.empty(4, 4)
    with pytest.raises(InitError, match="tensor must be a torch.Tensor; got list"):
        torchinit.kaiming_normal_([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(InitError, match="tensor must have a floating-point dtype; got dtype=torch.int64"):
        torchinit.lecun_normal_(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(InitError, match="scale must be a finite number >= 0; got scale=-1"):
        torchinit.variance_scaling_(w, -1)
    with pytest.raises(InitError, match="distribution must be one of .* got distribution='truncated'"):
        torchinit.variance_scaling_(w, 1.0, "fan_in", "truncated")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="mode must be one of .* got mode='fan_average'"):
        torchinit.variance_scaling_(w, 1.0, "fan_average")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="nonlinearity must be one of"):
        torchinit.kaiming_normal_(w, nonlinearity="gelu")
    with pytest.raises(InitError, match="gain must be a finite number >= 0; got gain=nan"):
        torchinit.xavier_uniform_(w, math.nan)
    with pytest.raises(InitError, match="std must be a finite number >= 0; got std='1'"):
        torchinit.uniform_std_(w, "1")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="mean must be a finite number; got mean=None"):
        torchinit.truncated_normal_(w, mean=None)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="the cut-offs must satisfy a < b with mass between them; got a=2, b=1"):
        torchinit.truncated_normal_(w, a=2, b=1)
    with pytest.raises(InitError, match=r"the cut-offs must reach within 37 sigma of the mean .* got a=40, b=50"):
        torchinit.truncated_normal_(w, a=40, b=50)
    with pytest.raises(InitError, match=r"orthogonal_ needs a tensor with at least 2 dimensions; got shape=\(4,\)"):
        torchinit.orthogonal_(torch.empty(4))
    with pytest.raises(InitError, match=r"chunks must be a positive integer dividing dim 0 \(size 4\); got chunks=3"):
        torchinit.orthogonal_(w, chunks=3)
    with pytest.raises(InitError, match="tensor must be a torch.Tensor; got NoneType"):
        torchinit.trunc_normal_(None)  # type: ignore[arg-type]
