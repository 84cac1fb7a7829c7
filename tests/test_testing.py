"""The statistical toolkit: calibrated false-alarm rates, power against wrong values, errors, strategies."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import errors, given
from hypothesis import strategies as st

import torchinit
from torchinit import InitError
from torchinit.testing import (
    MIN_SAMPLES,
    assert_distribution,
    assert_mean,
    assert_std,
    assert_uniform_support,
    std_tolerance,
)
from torchinit.testing import strategies as tst

SQRT3 = math.sqrt(3)


def binomial_upper(trials: int, p: float, alpha: float = 1e-6) -> int:
    """Smallest k with P(Bin(trials, p) > k) <= alpha: more rejections than this mean miscalibration."""
    term = (1 - p) ** trials
    cdf = term
    k = 0
    while 1 - cdf > alpha:
        term *= (trials - k) / (k + 1) * p / (1 - p)
        cdf += term
        k += 1
    return k


def binomial_lower(trials: int, p: float, alpha: float = 1e-6) -> int:
    """Largest k with P(Bin(trials, p) < k) <= alpha."""
    term = (1 - p) ** trials
    cdf = 0.0
    k = 0
    while cdf + term <= alpha:
        cdf += term
        term *= (trials - k) / (k + 1) * p / (1 - p)
        k += 1
    return k


def rejections(check: Callable[[torch.Tensor], None], draws: torch.Tensor) -> int:
    count = 0
    for row in draws:
        try:
            check(row)
        except AssertionError:
            count += 1
    return count


DRAWS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "normal": lambda t, g: t.normal_(0.0, 1.0, generator=g),
    "uniform": lambda t, g: t.uniform_(-SQRT3, SQRT3, generator=g),
    "truncated_normal": lambda t, g: torchinit.truncated_normal_(t, 1.0, generator=g),
}

TRIALS = 2000
ALPHA = 0.02  # large enough that a rate can be measured from 2000 trials


@pytest.mark.parametrize("shape", list(DRAWS))
@pytest.mark.parametrize("n", [MIN_SAMPLES, 4096])
def test_std_false_alarm_rate_is_alpha(shape: str, n: int, gen: torch.Generator) -> None:
    # normal: the exact chi-square band, rate alpha; the bounded shapes: Bennett's bound, rate at most alpha.
    draws = DRAWS[shape](torch.empty(TRIALS, n), gen)
    count = rejections(lambda x: assert_std(x, 1.0, kurtosis=shape, alpha=ALPHA), draws)
    lower = binomial_lower(TRIALS, ALPHA) if shape == "normal" else 0
    assert lower <= count <= binomial_upper(TRIALS, ALPHA), count


@pytest.mark.parametrize("n", [MIN_SAMPLES, 4096])
def test_mean_false_alarm_rate_is_alpha(n: int, gen: torch.Generator) -> None:
    draws = torch.empty(TRIALS, n).uniform_(-SQRT3, SQRT3, generator=gen)
    count = rejections(lambda x: assert_mean(x, std=1.0, alpha=ALPHA), draws)
    assert binomial_lower(TRIALS, ALPHA) <= count <= binomial_upper(TRIALS, ALPHA), count


def test_support_false_alarm_rate_is_alpha(gen: torch.Generator) -> None:
    draws = torch.empty(TRIALS, MIN_SAMPLES, dtype=torch.float64).uniform_(-1, 1, generator=gen)
    count = rejections(lambda x: assert_uniform_support(x, 1.0, alpha=ALPHA), draws)
    assert binomial_lower(TRIALS, ALPHA) <= count <= binomial_upper(TRIALS, ALPHA), count


@pytest.mark.parametrize("shape", list(DRAWS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ks_false_alarm_rate_is_at_most_alpha(shape: str, dtype: torch.dtype, gen: torch.Generator) -> None:
    # DKW bounds the rate from above for every n; rounding to bf16 must not inflate it.
    draws = DRAWS[shape](torch.empty(500, 2000), gen).to(dtype)
    count = rejections(lambda x: assert_distribution(x, shape, 1.0, alpha=ALPHA), draws)  # type: ignore[arg-type]
    assert count <= binomial_upper(500, ALPHA), count


# --- power: the assertions reject wrong values ----------------------------------------------------


def test_rejects_legacy_std_where_kaiming_is_expected(gen: torch.Generator) -> None:
    fan_in = 512
    kaiming, legacy = math.sqrt(2 / fan_in), 1 / math.sqrt(3 * fan_in)  # ratio sqrt(6)
    w = torchinit.kaiming_normal_(torch.empty(256, fan_in), nonlinearity="relu", generator=gen)
    assert_std(w, kaiming)
    with pytest.raises(AssertionError, match=r"std 0\.06\d+ is not 0\.0255"):
        assert_std(w, legacy)
    v = torch.nn.init.kaiming_uniform_(torch.empty(256, fan_in), a=math.sqrt(5), generator=gen)
    assert_std(v, legacy, kurtosis="uniform")
    with pytest.raises(AssertionError, match="observed ratio 0.408"):
        assert_std(v, kaiming, kurtosis="uniform")
    with pytest.raises(AssertionError):
        assert_distribution(v, "uniform", kaiming)
    with pytest.raises(AssertionError):
        assert_uniform_support(v, math.sqrt(3) * kaiming)


@pytest.mark.parametrize("shape", list(DRAWS))
def test_rejects_three_percent_at_a_million(shape: str, gen: torch.Generator) -> None:
    n = 1_000_000
    x = DRAWS[shape](torch.empty(n), gen)
    assert std_tolerance(n, shape) < 0.005  # a 0.5% band at most, so 3% is far outside
    assert_std(x, 1.0, kurtosis=shape)
    assert_distribution(x, shape, 1.0)  # type: ignore[arg-type]
    for wrong in (0.97, 1.03):
        with pytest.raises(AssertionError, match="allowed"):
            assert_std(x, wrong, kurtosis=shape)
        # a wider std: D too large; a narrower one: the bounded shapes' extreme values leave the support
        with pytest.raises(
            AssertionError, match="KS statistic" if shape == "normal" or wrong > 1 else "outside the support"
        ):
            assert_distribution(x, shape, wrong)  # type: ignore[arg-type]
    if shape == "uniform":
        assert_uniform_support(x, SQRT3)
        for wrong in (0.97, 1.03):
            with pytest.raises(AssertionError, match="support"):
                assert_uniform_support(x, SQRT3 * wrong)


def test_ks_rejects_wrong_shape_with_right_std(gen: torch.Generator) -> None:
    x = torch.empty(100_000).uniform_(-SQRT3, SQRT3, generator=gen)
    assert_std(x, 1.0, kurtosis="uniform")
    with pytest.raises(AssertionError, match="do not follow normal"):
        assert_distribution(x, "normal", 1.0)
    t = torchinit.truncated_normal_(torch.empty(100_000), 1.0, generator=gen)
    with pytest.raises(AssertionError, match="do not follow normal"):
        assert_distribution(t, "normal", 1.0)


def test_mean_rejects_shift(gen: torch.Generator) -> None:
    x = torch.empty(1_000_000).normal_(0.01, 1.0, generator=gen)
    assert_mean(x, 0.01, std=1.0)
    with pytest.raises(AssertionError, match=r"mean 0\.0\d+ is not 0\n  allowed \|mean - 0\| <= 0\.0048"):
        assert_mean(x)


def test_failure_message_has_everything(gen: torch.Generator) -> None:
    x = torch.empty(4096).normal_(0, 2.0, generator=gen)
    with pytest.raises(AssertionError) as info:
        assert_std(x, 1.0, msg="layer fc1, seed 7")
    text = str(info.value)
    assert re.match(
        r"std 1\.9\d+ is not 1 \[layer fc1, seed 7\]\n  observed ratio 1\.9\d+, "
        r"allowed \[0\.9463\d+, 1\.0544\d+\] \(exact chi-square\)",
        text,
    )
    assert "n=4096, kurtosis=3, alpha=1e-06" in text, text


# --- argument errors ------------------------------------------------------------------------------


def test_assertion_argument_errors() -> None:
    x = torch.zeros(200).normal_()
    with pytest.raises(InitError, match=r"at least 100 elements; got n=99 \(shape \(9, 11\)\)"):
        assert_std(torch.zeros(9, 11), 1.0)
    with pytest.raises(InitError, match="tensor must be a floating-point torch.Tensor; got"):
        assert_std(torch.zeros(200, dtype=torch.int64), 1.0)
    with pytest.raises(InitError, match="alpha must be a real number strictly between 0 and 1"):
        assert_std(x, 1.0, alpha=0.0)
    with pytest.raises(InitError, match=r"alpha must be .* got alpha=1\.$"):
        assert_std(x, 1.0, alpha=1)
    with pytest.raises(InitError, match="kurtosis must be one of .* got kurtosis='gauss'"):
        assert_std(x, 1.0, kurtosis="gauss")
    with pytest.raises(InitError, match="kurtosis must be a number >= 1 or a distribution name; got kurtosis=0.5"):
        assert_std(x, 1.0, kurtosis=0.5)
    with pytest.raises(InitError, match="expected must be a positive finite number; got expected=0"):
        assert_std(x, 0)
    with pytest.raises(InitError, match="std must be a positive finite number; got std=-1"):
        assert_mean(x, std=-1)
    with pytest.raises(InitError, match="bound must be a positive finite number; got bound=inf"):
        assert_uniform_support(x, math.inf)
    with pytest.raises(InitError, match="distribution must be one of .* got distribution='unifrom'. Did you mean"):
        assert_distribution(x, "unifrom", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="std must be a positive finite number; got std=0"):
        assert_distribution(x, "normal", 0)


def test_std_tolerance_matches_reference() -> None:
    # REFERENCE.md section 5: relative SE 0.01105 (normal) and 0.00699 (uniform) at n = 4096.
    z = 4.891638475698591
    assert std_tolerance(4096, "normal") / z == pytest.approx(0.011049, abs=1e-6)
    assert std_tolerance(4096, "uniform") / z == pytest.approx(0.006988, abs=1e-6)
    # REFERENCE quotes the truncated kurtosis as 2.366, rounded to 4 figures.
    assert std_tolerance(4096, 2.366) == pytest.approx(std_tolerance(4096, "truncated_normal"), rel=2e-4)


# --- strategies -----------------------------------------------------------------------------------


@given(tst.weight_shapes(min_dims=2, max_dims=3, max_side=9, min_numel=10, max_numel=200))
def test_weight_shapes_respect_bounds(shape: tuple[int, ...]) -> None:
    assert 2 <= len(shape) <= 3 and all(1 <= s <= 9 for s in shape) and 10 <= math.prod(shape) <= 200


@given(tst.layers())
def test_layer_specs_build_and_repr(spec: tst.LayerSpec) -> None:
    module = spec.build()
    assert isinstance(module, spec.cls)
    assert repr(spec).startswith(f"nn.{spec.cls.__name__}(")
    assert eval(repr(spec), {"nn": torch.nn}).__class__ is spec.cls


@given(tst.conv_layers(dims=(2,), transposed=True))
def test_conv_strategy_filters(spec: tst.LayerSpec) -> None:
    assert spec.cls is torch.nn.ConvTranspose2d


@given(tst.generators(), st.data())
def test_generators_are_seeded(g: torch.Generator, data: st.DataObject) -> None:
    assert isinstance(g, torch.Generator)
    seed = data.draw(tst.seeds())
    a = torch.randn(3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, torch.randn(3, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: tst.weight_shapes(min_dims=0), "min_dims must be an integer >= 1; got min_dims=0"),
        (lambda: tst.weight_shapes(min_side=5, max_side=2), "min_side must be <= max_side; got min_side=5"),
        (lambda: tst.weight_shapes(min_side=10, max_numel=50), "no shape fits"),
        (lambda: tst.linear_layers(max_features=True), "max_features must be an integer"),
        (lambda: tst.bilinear_layers(max_features=0), "max_features must be an integer >= 1"),
        (lambda: tst.conv_layers(dims=(4,)), r"dims must be a non-empty subset of \(1, 2, 3\); got dims=\(4,\)"),
        (lambda: tst.conv_layers(max_groups=0), "max_groups must be an integer >= 1; got max_groups=0"),
        (lambda: tst.attention_layers(max_heads=0), "max_heads must be an integer"),
        (lambda: tst.recurrent_layers(max_layers=0), "max_layers must be an integer"),
    ],
)
def test_strategy_argument_errors(make: Callable[[], object], match: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=match):
        make()


@pytest.mark.parametrize("n", [0, -5, math.nan, math.inf])
def test_std_tolerance_refuses_a_sample_size_that_is_not_positive(n: float) -> None:
    with pytest.raises(InitError, match=r"n must be a positive number of elements \(the sample size\); got n="):
        std_tolerance(n)  # type: ignore[arg-type]
