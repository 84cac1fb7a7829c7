"""JAX's ``fan_geo_avg`` mode: fan = sqrt(fan_in * fan_out), exactly JAX's arithmetic, wherever a mode is taken."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import torchinit
from torchinit import Fans, InitError, Scheme
from torchinit._maths.fans import mode_fan, resolve_fan
from torchinit._types import FAN_MODES
from torchinit.testing import assert_std

FANS = st.one_of(st.integers(1, 10**6), st.floats(0.25, 1e6, allow_nan=False, allow_infinity=False))


def jax_denominator(fan_in: float, fan_out: float) -> float:
    # jax.nn.initializers.variance_scaling: `elif mode == "fan_geo_avg": denominator = (fan_in * fan_out) ** 0.5`
    return (fan_in * fan_out) ** 0.5


def test_fan_geo_avg_is_a_fan_mode() -> None:
    assert FAN_MODES == ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
    assert "fan_geo_avg" in torchinit.FanMode.__args__  # type: ignore[attr-defined]


@given(fan_in=FANS, fan_out=FANS)
def test_equals_jax_formula_exactly(fan_in: float, fan_out: float) -> None:
    expected = jax_denominator(fan_in, fan_out)
    assert mode_fan("fan_geo_avg", fan_in, fan_out) == expected
    fans = Fans(fan_in, fan_out)
    assert fans.fan("fan_geo_avg") == jax_denominator(fans.fan_in, fans.fan_out)
    t = torch.empty(3, 2)
    assert resolve_fan(t, "fan_geo_avg", None, fan_in, fan_out) == expected
    assert resolve_fan(t, "fan_geo_avg", (fan_in, fan_out), None, None) == jax_denominator(fans.fan_in, fans.fan_out)


def test_fan_geo_avg_from_the_shape() -> None:
    t = torch.empty(32, 8, 3, 3)  # torch's fans: fan_in 72, fan_out 288
    assert resolve_fan(t, "fan_geo_avg", None, None, None) == 144.0
    assert resolve_fan(t, "fan_geo_avg", None, 200, None) == jax_denominator(200, 288)  # the shape fills fan_out
    assert Fans(64, 256).fan("fan_geo_avg") == 128.0
    # between the harmonic-like min and the arithmetic mean
    assert Fans(10, 1000).fan("fan_in") < Fans(10, 1000).fan("fan_geo_avg") < Fans(10, 1000).fan("fan_avg")


@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_variance_scaling_geo_avg(distribution: str, gen: torch.Generator) -> None:
    w = torchinit.variance_scaling_(torch.empty(512, 128), 2.0, "fan_geo_avg", distribution, generator=gen)  # type: ignore[arg-type]
    assert_std(w, math.sqrt(2.0 / 256.0), kurtosis=distribution)  # sqrt(128 * 512) = 256
    same = torch.Generator().manual_seed(gen.initial_seed())
    direct = torchinit.variance_scaling_(
        torch.empty(512, 128), 2.0 / 256.0 * 128, "fan_in", distribution, generator=same
    )  # type: ignore[arg-type]
    assert torch.equal(w, direct)  # the same draw with the std sqrt(2 / 256)


def test_kaiming_with_fan_geo_avg_and_explicit_fans(gen: torch.Generator) -> None:
    w = torchinit.kaiming_normal_(
        torch.empty(64, 64), mode="fan_geo_avg", nonlinearity="relu", fans=(16, 64), generator=gen
    )
    assert_std(w, math.sqrt(2.0 / 32.0))  # sqrt(16 * 64) = 32


def test_scheme_takes_fan_geo_avg() -> None:
    scheme = Scheme(mode="fan_geo_avg")
    assert repr(scheme) == "Scheme(mode='fan_geo_avg')"
    model = torch.nn.Linear(100, 400)
    report = torchinit.reinit(model, scheme, seed=0)
    assert report["weight"].std == pytest.approx(math.sqrt(2.0 / 200.0), rel=1e-12)
    assert_std(model.weight, math.sqrt(2.0 / 200.0))


def test_mode_errors_name_fan_geo_avg() -> None:
    with pytest.raises(
        InitError,
        match="mode must be one of 'fan_in', 'fan_out', 'fan_avg', 'fan_geo_avg'; got mode='fan_geo'. Did you mean "
        "'fan_geo_avg'",
    ):
        torchinit.variance_scaling_(torch.empty(3, 3), mode="fan_geo")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="Did you mean 'fan_geo_avg'"):
        Scheme(mode="fan_geoavg")  # type: ignore[arg-type]
    with pytest.raises(InitError, match=r"at least 2 dimensions; got shape=\(5,\)"):
        resolve_fan(torch.empty(5), "fan_geo_avg", None, 7, None)  # fan_out missing, no shape to guess from
    with pytest.raises(InitError, match=r"fan_geo_avg=.* from fans="):
        torchinit.variance_scaling_(torch.empty(3, 3, dtype=torch.float16), 1.0, "fan_geo_avg", fans=(1e-300, 1e-300))


def test_fan_geo_avg_far_fans_do_not_underflow() -> None:
    assert mode_fan("fan_geo_avg", 1e-300, 4e-300) == pytest.approx(2e-300, rel=1e-15)
    assert mode_fan("fan_geo_avg", 1e300, 4e300) == pytest.approx(2e300, rel=1e-15)
