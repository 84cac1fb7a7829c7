"""The toolkit holds its stated false-alarm probability at every n it accepts, and never passes garbage.

Exact checks of the exact bands (chi-square, Student t, against closed forms), short simulations of
the approximate ones (Bennett, the kurtosis band), and the cases 0.2.0 got wrong: inf and values
outside the support passed, alpha = 0 passed anything and alpha = -1 raised a TypeError about complex
numbers, the std band put 7.2e-6 outside at n = 100 for alpha = 1e-6. The slow measurement of every rate
is ``benchmarks/toolkit_calibration.py``.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable

import pytest
import torch

import torchinit
from torchinit import InitError
from torchinit._maths.distributions import chi2_quantile, chi2_tail, t_quantile, t_two_sided_tail
from torchinit.testing import (
    assert_distribution,
    assert_mean,
    assert_std,
    assert_uniform_support,
    std_tolerance,
)

SQRT3 = math.sqrt(3)


def _kurtosis_check() -> Callable[..., None]:
    from torchinit.testing import assert_kurtosis

    return assert_kurtosis  # type: ignore[no-any-return]


CHECKS: dict[str, Callable[[torch.Tensor, float], None]] = {
    "assert_std": lambda x, alpha: assert_std(x, 1.0, alpha=alpha),
    "assert_mean": lambda x, alpha: assert_mean(x, std=1.0, alpha=alpha),
    "assert_mean(t)": lambda x, alpha: assert_mean(x, alpha=alpha),
    "assert_uniform_support": lambda x, alpha: assert_uniform_support(x, SQRT3, alpha=alpha),
    "assert_distribution": lambda x, alpha: assert_distribution(x, "uniform", 1.0, alpha=alpha),
    "assert_kurtosis": lambda x, alpha: _kurtosis_check()(x, "uniform", alpha=alpha),
}


def _uniform(n: int, seed: int) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64).uniform_(-SQRT3, SQRT3, generator=torch.Generator().manual_seed(seed))


# --- garbage in fails ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CHECKS))
@pytest.mark.parametrize(("bad", "count"), [(math.inf, 1), (-math.inf, 3), (math.nan, 2)])
def test_non_finite_values_fail_every_assertion(name: str, bad: float, count: int) -> None:
    x = _uniform(20_000, 1)
    CHECKS[name](x, 1e-6)  # the clean draw passes
    x[:count] = bad
    kind = "nan" if math.isnan(bad) else "inf"
    with pytest.raises(AssertionError, match=rf"tensor has {count} non-finite value\(s\) \(inf or nan\) of 20000\n  "
                       rf"{count if kind == 'nan' else 0} nan, {count if kind == 'inf' else 0} inf"):  # fmt: skip
        CHECKS[name](x, 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_outside_the_support_fail_the_shape_check(dtype: torch.dtype, gen: torch.Generator) -> None:
    # 0.2.0 clamped the CDF, so one value at 100 sigma moved D by 1/n and passed.
    u = torch.empty(100_000).uniform_(-SQRT3, SQRT3, generator=gen)
    t = torchinit.truncated_normal_(torch.empty(100_000), 1.0, generator=gen)
    for x, shape, edge in ((u, "uniform", SQRT3), (t, "truncated_normal", 2 / 0.8796256610342398)):
        x = x.to(dtype)
        assert_distribution(x, shape, 1.0)  # type: ignore[arg-type]
        for far in (1.02 * edge, 100.0, -1.02 * edge):
            y = x.clone()
            y[7] = far
            with pytest.raises(AssertionError, match=r"1 value\(s\) of 100000 lie outside the support of " + shape):
                assert_distribution(y, shape, 1.0)  # type: ignore[arg-type]
        y = x.clone()
        y[7] = edge  # exactly on the edge, as a rounded draw can be: inside
        assert_distribution(y, shape, 1.0)  # type: ignore[arg-type]


BAD_ALPHAS = [0.0, -1, 1, 1.0, 1.5, math.nan, math.inf, "0.01", True, None, 1j]


@pytest.mark.parametrize("name", list(CHECKS))
@pytest.mark.parametrize("alpha", BAD_ALPHAS, ids=[repr(a) for a in BAD_ALPHAS])
def test_alpha_must_be_a_probability_in_every_assertion(name: str, alpha: object) -> None:
    x = _uniform(20_000, 2)
    with pytest.raises(InitError, match=r"alpha must be a real number strictly between 0 and 1 \(a false-alarm "
                       rf"probability\); got alpha={alpha!r}\."):  # fmt: skip
        CHECKS[name](x, alpha)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="alpha must be a real number strictly between 0 and 1"):
        std_tolerance(1000, "normal", alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(CHECKS))
def test_alpha_of_any_real_type(name: str) -> None:
    x = _uniform(20_000, 3)
    for alpha in (fractions.Fraction(1, 1000), torch.tensor(1e-3, dtype=torch.float64)):
        CHECKS[name](x, alpha)  # type: ignore[arg-type]


def test_asymptotic_checks_need_ten_thousand() -> None:
    x = _uniform(9_999, 4)
    assert_std(x, 1.0, kurtosis="uniform")  # named shapes: exact or guaranteed bands from 100
    with pytest.raises(InitError, match=r"needs at least 10000 elements; got n=9999"):
        assert_std(x, 1.0, kurtosis=1.8)
    with pytest.raises(InitError, match=r"needs at least 10000 elements; got n=9999"):
        _kurtosis_check()(x, "uniform")


# --- exact bands, checked exactly ------------------------------------------------------------------


def test_chi2_tail_matches_closed_forms() -> None:
    for x in (0.01, 1.0, 7.3, 60.0, 700.0):
        assert chi2_tail(x, 2, upper=True) == pytest.approx(math.exp(-x / 2), rel=1e-13)  # chi2(2) = Exp(1/2)
        assert chi2_tail(x, 1, upper=False) == pytest.approx(math.erf(math.sqrt(x / 2)), rel=1e-13)


@pytest.mark.parametrize("df", [100, 1_000, 10_000, 1_000_000, 100_000_000])
@pytest.mark.parametrize("p", [1e-12, 5e-7, 0.01, 0.3])
def test_chi2_quantile_inverts_the_tail(df: int, p: float) -> None:
    assert chi2_tail(chi2_quantile(p, df), df, upper=False) == pytest.approx(p, rel=1e-7)
    assert chi2_tail(chi2_quantile(p, df, upper=True), df, upper=True) == pytest.approx(p, rel=1e-7)


def test_std_band_is_exact_for_normals_at_every_n() -> None:
    # n s^2 / sigma^2 ~ chi2(n) (known mean): the band leaves alpha / 2 on each side.
    from torchinit.testing._assertions import _std_band

    for n in (100, 101, 4096, 10**6):
        for alpha in (1e-6, 0.02):
            low, high, method = _std_band(n, "normal", alpha)
            assert method == "exact chi-square"
            assert chi2_tail(n * low**2, n, upper=False) == pytest.approx(alpha / 2, rel=1e-7)
            assert chi2_tail(n * high**2, n, upper=True) == pytest.approx(alpha / 2, rel=1e-7)
    # 0.2.0's log-normal band +-std_tolerance put 7.2e-6 outside at n = 100 for alpha = 1e-6.
    tol = std_tolerance(100, "normal", 1e-6)
    old = chi2_tail(100 * math.exp(-2 * tol), 100, upper=False) + chi2_tail(100 * math.exp(2 * tol), 100, upper=True)
    assert old == pytest.approx(7.216e-6, rel=1e-3)


def test_t_tail_matches_closed_forms() -> None:
    for t in (0.1, 1.0, 3.0, 40.0, 1e5):
        assert t_two_sided_tail(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)  # Cauchy
        assert t_two_sided_tail(t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    assert t_two_sided_tail(4.891638, 10**9) == pytest.approx(1e-6, rel=1e-5)  # the normal limit


@pytest.mark.parametrize("df", [1, 2, 5, 99, 9_999, 10**6])
@pytest.mark.parametrize("alpha", [1e-6, 0.02])
def test_t_quantile_inverts_the_tail(df: int, alpha: float) -> None:
    assert t_two_sided_tail(t_quantile(alpha, df), df) == pytest.approx(alpha, rel=1e-9)


def test_mean_band_uses_student_t_without_a_std() -> None:
    # The normal z with the sample std put 3.9e-6 outside at n = 100 for alpha = 1e-6; t(99) puts alpha.
    from torchinit._maths.distributions import two_sided_z

    assert t_two_sided_tail(two_sided_z(1e-6), 99) == pytest.approx(3.875e-6, rel=1e-3)
    x = torch.full((100,), 0.0, dtype=torch.float64)
    x[::2], x[1::2] = 1.0, -1.0  # sample std 1.005, mean 0
    x += 5.1 * float(x.std()) / 10  # |mean| / (s / sqrt n) = 5.1: beyond z = 4.89, inside t = 5.22
    assert_mean(x)
    with pytest.raises(AssertionError, match=r"\(std 1.005\d+, Student t, 99 dof\)"):
        assert_mean(x + 0.02)


@pytest.mark.parametrize("shape", ["uniform", "truncated_normal"])
def test_bennett_band_is_wider_than_the_asymptotic_one(shape: str) -> None:
    # Guaranteed, so wider, in units of the mean of y = x^2 / sigma^2 (z sd(y) / sqrt n asymptotically): by at
    # most 50% at n = 100, 15% at 1e4, 11% at 1e6 (alpha = 1e-6; sqrt(2 ln(2 / alpha)) / z = 1.10 in the limit).
    from torchinit._maths.distributions import two_sided_z
    from torchinit.testing._assertions import _kurtosis, _std_band

    for n, most in ((100, 1.5), (10_000, 1.15), (10**6, 1.11)):
        low, high, method = _std_band(n, shape, 1e-6)
        assert method == "Bennett bound"
        asymptotic = two_sided_z(1e-6) * math.sqrt((_kurtosis(shape) - 1) / n)
        for width in (high**2 - 1, 1 - low**2):
            assert asymptotic < width < most * asymptotic


# --- approximate bands, checked by short simulations ----------------------------------------------


def _rejections(check: Callable[[torch.Tensor], None], rows: torch.Tensor) -> int:
    count = 0
    for row in rows:
        try:
            check(row)
        except AssertionError:
            count += 1
    return count


def _binomial_bounds(trials: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    # The counts outside which Bin(trials, p) lies with probability <= alpha per side.
    pmf = [
        math.exp(math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * math.log(p)
                 + (trials - k) * math.log1p(-p))
        for k in range(trials + 1)
    ]  # fmt: skip
    low = next(k for k in range(trials + 1) if sum(pmf[: k + 1]) > alpha)
    high = next(k for k in range(trials + 1) if sum(pmf[k + 1 :]) <= alpha)
    return low, high


DRAWS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "normal": lambda t, g: t.normal_(0.0, 1.0, generator=g),
    "uniform": lambda t, g: t.uniform_(-SQRT3, SQRT3, generator=g),
    "truncated_normal": lambda t, g: torchinit.truncated_normal_(t, 1.0, generator=g),
}


@pytest.mark.parametrize("shape", list(DRAWS))
def test_kurtosis_false_alarm_rate_is_alpha(shape: str, gen: torch.Generator) -> None:
    trials, alpha = 400, 0.05
    rows = DRAWS[shape](torch.empty(trials, 10_000, dtype=torch.float64), gen)
    count = _rejections(lambda x: _kurtosis_check()(x, shape, alpha=alpha), rows)
    low, high = _binomial_bounds(trials, alpha)
    assert low <= count <= high, count


@pytest.mark.parametrize("shape", ["uniform", "truncated_normal"])
def test_bennett_false_alarm_rate_is_at_most_alpha(shape: str, gen: torch.Generator) -> None:
    trials, alpha = 2000, 0.05
    rows = DRAWS[shape](torch.empty(trials, 100, dtype=torch.float64), gen)
    count = _rejections(lambda x: assert_std(x, 1.0, kurtosis=shape, alpha=alpha), rows)
    assert count <= _binomial_bounds(trials, alpha)[1], count


def test_mean_with_sample_std_false_alarm_rate_is_alpha(gen: torch.Generator) -> None:
    trials, alpha = 2000, 0.05
    rows = torch.empty(trials, 100, dtype=torch.float64).normal_(3.0, 2.0, generator=gen)
    count = _rejections(lambda x: assert_mean(x, 3.0, alpha=alpha), rows)
    low, high = _binomial_bounds(trials, alpha)
    assert low <= count <= high, count


# --- power: each check rejects what it should -----------------------------------------------------


def test_kurtosis_tells_a_truncated_normal_from_a_normal_of_the_same_std(gen: torch.Generator) -> None:
    # At n = 1e4 the std, the mean and (mostly) KS pass a ±2σ truncated normal as a normal; kurtosis does not.
    assert_kurtosis = _kurtosis_check()
    n = 10_000
    samples = {shape: DRAWS[shape](torch.empty(n, dtype=torch.float64), gen) for shape in DRAWS}
    truncated = samples["truncated_normal"]
    assert_std(truncated, 1.0)
    assert_mean(truncated, std=1.0)
    for shape, x in samples.items():
        assert_kurtosis(x, shape)  # type: ignore[arg-type]
        for other in DRAWS:
            if other != shape:
                with pytest.raises(AssertionError, match=rf"kurtosis \d\.\d+ is not {other}'s"):
                    assert_kurtosis(x, other)  # type: ignore[arg-type]
    wider = torchinit.truncated_normal_(torch.empty(n, dtype=torch.float64), 1.0, a=-3.0, b=3.0, generator=gen)
    assert_kurtosis(wider, "truncated_normal", a=-3.0, b=3.0)
    with pytest.raises(AssertionError):
        assert_kurtosis(wider, "truncated_normal")  # ±2 is not ±3


def test_kurtosis_about_a_known_location(gen: torch.Generator) -> None:
    assert_kurtosis = _kurtosis_check()
    x = torch.empty(20_000, dtype=torch.float64).uniform_(5 - SQRT3, 5 + SQRT3, generator=gen)
    assert_kurtosis(x, "uniform", mean=5.0)
    with pytest.raises(AssertionError, match="allowed"):
        assert_kurtosis(x, "uniform")  # about 0: a different statistic entirely
    far = torchinit.truncated_normal_(torch.empty(20_000, dtype=torch.float64), 2.0, a=8.0, b=9.0, generator=gen)
    assert_kurtosis(far, "truncated_normal", a=8.0, b=9.0)
    with pytest.raises(InitError, match="the cut-offs must reach within 37 sigma"):
        assert_kurtosis(far, "truncated_normal", a=40.0, b=41.0)


def test_std_rejects_torchs_legacy_std_where_kaiming_is_expected(gen: torch.Generator) -> None:
    # at the smallest n the toolkit accepts, with the exact and the guaranteed bands alike
    kaiming = math.sqrt(2 / 256)
    for shape, draw in (("normal", "kaiming_normal_"), ("uniform", "kaiming_uniform_")):
        w = getattr(torchinit, draw)(torch.empty(100, 256), nonlinearity="relu", generator=gen).reshape(-1)[:100]
        assert_std(w, kaiming, kurtosis=shape)
        with pytest.raises(AssertionError, match=r"allowed \[0\.\d+, 1\.\d+\] \((exact chi-square|Bennett bound)\)"):
            assert_std(w, kaiming / math.sqrt(6), kurtosis=shape)
