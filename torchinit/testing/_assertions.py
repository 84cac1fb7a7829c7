r"""Calibrated statistical assertions: every tolerance comes from a false-alarm probability.

Each check holds a true hypothesis with probability at least ``1 - alpha`` and fails loudly with observed,
expected, allowed, n and alpha. How each one gets there, at every n it accepts:

| check | statistic | band | false-alarm probability |
|---|---|---|---|
| `assert_std`, normal | $\sum (x_i-\mu)^2/\sigma^2 \sim \chi^2_n$ | exact chi-square quantiles | exactly alpha |
| `assert_std`, uniform / truncated | mean of $(x_i-\mu)^2/\sigma^2$, bounded | Bennett's inequality | at most alpha |
| `assert_std`, a kurtosis number | $\ln(s/\sigma)$, delta method | `std_tolerance` | about alpha, n >= 1e4 |
| `assert_mean`, ``std`` given | $\bar x$ | normal quantile | alpha (normal), below (uniform, truncated) |
| `assert_mean`, no ``std`` | $\bar x / (s/\sqrt n)$ | Student t, n - 1 dof | exactly alpha for normal draws |
| `assert_uniform_support` | $\max |x_i|$ | $b\,\alpha^{1/n}$ | exactly alpha |
| `assert_distribution` | Kolmogorov-Smirnov D, support | DKW (Massart) | at most alpha |
| `assert_kurtosis` | $m_4/m_2^2$ | delta method + Cornish-Fisher | about alpha, n >= 1e4 |

Non-finite values fail every assertion; so do values outside a bounded distribution's support.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch

from torchinit._maths.distributions import (
    KURTOSIS,
    SQRT3,
    chi2_quantile,
    normal_cdf_tensor,
    t_quantile,
    truncated_normal_cdf,
    truncated_normal_kurtosis,
    truncated_normal_law,
    truncated_normal_std,
    two_sided_z,
)
from torchinit._types import InitError, as_real, choice_error, shown

DEFAULT_ALPHA = 1e-6
"""False-alarm probability of one assertion unless told otherwise (z = 4.89)."""

MIN_SAMPLES = 100
"""Fewest elements an assertion accepts (`assert_std` with a kurtosis number and `assert_kurtosis` need
`ASYMPTOTIC_MIN_SAMPLES`)."""

ASYMPTOTIC_MIN_SAMPLES = 10_000
"""Fewest elements for the checks that rest on a large-n approximation: `assert_std` with a kurtosis
number (the delta method) and `assert_kurtosis` (delta method with a skewness correction)."""

Shape = Literal["normal", "uniform", "truncated_normal"]
_SHAPES: tuple[Shape, ...] = ("normal", "uniform", "truncated_normal")


def _kurtosis(kurtosis: float | str) -> float:
    if isinstance(kurtosis, str):
        if kurtosis == "truncated_normal":
            return truncated_normal_kurtosis(-2.0, 2.0)
        if kurtosis not in KURTOSIS:
            raise choice_error("kurtosis", "kurtosis", kurtosis, _SHAPES)
        return KURTOSIS[kurtosis]
    expectation = "a number >= 1 or a distribution name"
    return _number("kurtosis", kurtosis, lambda v: math.isfinite(v) and v >= 1, expectation)


def _fail(what: str, lines: list[str], msg: str | None) -> AssertionError:
    context = f" [{msg}]" if msg else ""
    return AssertionError(f"{what}{context}\n  " + "\n  ".join(lines))


def _samples(tensor: torch.Tensor, msg: str | None, minimum: int = MIN_SAMPLES) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise InitError(f"tensor must be a floating-point torch.Tensor; got {tensor!r:.80}.")
    n = tensor.numel()
    if n < minimum:
        raise InitError(
            f"this statistical assertion needs at least {minimum} elements; got n={n} "
            f"(shape {tuple(tensor.shape)}). Test a larger tensor or several draws concatenated."
        )
    x = tensor.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise _fail(
            f"tensor has {bad} non-finite value(s) (inf or nan) of {n}",
            [f"{int(torch.isnan(x).sum())} nan, {int(torch.isinf(x).sum())} inf; initialized values must be finite"],
            msg,
        )
    return x


def _number(name: str, value: object, ok: Callable[[float], bool], expectation: str) -> float:
    # ``value`` as a float when it is a real number (any type `as_real` takes) that passes ``ok``.
    try:
        number = float(as_real(name, value))
    except InitError:
        number = math.nan
    if not ok(number):
        raise InitError(f"{name} must be {expectation}; got {name}={shown(value)}.")
    return number


def _check_alpha(alpha: float) -> float:
    expectation = "a real number strictly between 0 and 1 (a false-alarm probability)"
    return _number("alpha", alpha, lambda v: 0.0 < v < 1.0, expectation)


def _positive(name: str, value: float) -> float:
    return _number(name, value, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def _location(mean: float) -> float:
    return _number("mean", mean, math.isfinite, "a finite number")


# --- std ------------------------------------------------------------------------------------------


def std_tolerance(n: int, kurtosis: float | str = "normal", alpha: float = DEFAULT_ALPHA) -> float:
    r"""The asymptotic allowed $|\ln(s/\sigma)|$ for a std of n draws: $z_{\alpha/2}\tfrac12\sqrt{(\kappa-1)/n}$.

    $\tfrac12\sqrt{(\kappa - 1)/n}$ is the relative standard error of the RMS about a known mean
    (delta method: $\mathrm{Var}(x^2) = (\kappa - 1)\sigma^4$); κ is 3 for a normal, 1.8 for a
    uniform, 2.366 for a normal truncated at ±2σ. This is a large-n band: at n = 100 and alpha = 1e-6
    the chi-square law of a normal's RMS puts 7.2e-6 outside it, and a uniform's more. `assert_std`
    uses it only for a kurtosis number, from n = 10,000; for the named shapes it uses exact or
    guaranteed bands (see `assert_std`).

    Raises:
        InitError: ``n`` not a positive number, ``alpha`` outside (0, 1), an unknown ``kurtosis`` name.

    Example:
        >>> round(std_tolerance(4096, "normal", 1e-6), 4)  # 4.89 * 0.01105
        0.054
    """
    size = _number("n", n, lambda v: math.isfinite(v) and v > 0, "a positive number of elements (the sample size)")
    return two_sided_z(_check_alpha(alpha)) * 0.5 * math.sqrt((_kurtosis(kurtosis) - 1.0) / size)


def _bennett_deviation(n: int, variance: float, reach: float, log_odds: float) -> float:
    # The t with exp(-(n v / M^2) h(M t / v)) = alpha/2, h(u) = (1 + u) ln(1 + u) - u (Bennett 1962):
    # solve h(u) = c by Newton from above (h is convex and increasing), then t = u v / M.
    c = log_odds * reach * reach / (n * variance)
    u = max(math.sqrt(2 * c), c)  # h(u) <= u^2 / 2 and h(u) <= u ln(1 + u) put the root below
    for _ in range(200):
        h = (1 + u) * math.log1p(u) - u
        step = (h - c) / math.log1p(u)
        u -= step
        if abs(step) <= 1e-15 * u:
            break
    return u * variance / reach


_BOUNDED = {"uniform": 3.0}  # max of x^2 / sigma^2; the truncated normal's comes from its cut-offs


@functools.lru_cache(maxsize=1024)
def _std_band(n: int, kurtosis: float | str, alpha: float) -> tuple[float, float, str]:
    # The accepted interval of s / sigma and how it was made.
    if kurtosis == "normal":
        low = chi2_quantile(alpha / 2, n)
        high = chi2_quantile(alpha / 2, n, upper=True)
        return math.sqrt(low / n), math.sqrt(high / n), "exact chi-square"
    if isinstance(kurtosis, str):  # bounded: x^2 / sigma^2 lies in [0, top] with mean 1 and variance kappa - 1
        top = _BOUNDED.get(kurtosis) or (2.0 / truncated_normal_std(-2.0, 2.0)) ** 2
        variance = _kurtosis(kurtosis) - 1.0
        log_odds = math.log(2 / alpha)
        up = _bennett_deviation(n, variance, top - 1.0, log_odds)
        down = _bennett_deviation(n, variance, 1.0, log_odds)
        return math.sqrt(max(0.0, 1.0 - down)), math.sqrt(1.0 + up), "Bennett bound"
    tol = std_tolerance(n, kurtosis, alpha)
    return math.exp(-tol), math.exp(tol), "asymptotic"


def assert_std(
    tensor: torch.Tensor,
    expected: float,
    *,
    kurtosis: float | str = "normal",
    mean: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Assert that the tensor's elements have standard deviation ``expected``.

    Uses the RMS about the known ``mean``, $s = \sqrt{\tfrac1n\sum (x_i-\mu)^2}$, and accepts when
    $s/\sigma$ lies in a band that holds a true std with probability at least ``1 - alpha`` at every n:

    - ``"normal"``: $n s^2/\sigma^2 \sim \chi^2_n$ exactly, so the band is
      $[\sqrt{\chi^2_{n,\alpha/2}/n}, \sqrt{\chi^2_{n,1-\alpha/2}/n}]$: false-alarm probability exactly
      alpha (the log-normal band of `std_tolerance` gave 7.2e-6 at n = 100 for alpha = 1e-6).
    - ``"uniform"``, ``"truncated_normal"`` (±2σ): $y_i = (x_i-\mu)^2/\sigma^2$ are bounded
      ($[0, 3]$, $[0, 5.17]$) with mean 1 and variance κ - 1, so Bennett's inequality bounds each
      tail by alpha/2 for every n. The band is wider than an exact one would be (a uniform's at n = 1e4
      and alpha = 1e-6: [0.975, 1.024] against the asymptotic [0.978, 1.022]; 10% wider as n grows) and
      the real false-alarm rate is below alpha.
    - a number κ: the asymptotic band of `std_tolerance`, only from n = 10,000, where the measured rates
      of the shapes above sit at alpha; heavy-tailed distributions need more.

    At n = 1e6 and the default alpha the band is ±0.35% for a normal, so a 3% error, or torch's legacy
    std where Kaiming is expected (a factor $\sqrt6$), always fails. A std check cannot tell shapes of the
    same std apart: a uniform or a truncated normal of the right std passes as ``"normal"`` (its band is
    the widest); use `assert_distribution` or `assert_kurtosis` for the shape.

    Args:
        tensor: the draws (any shape, any floating dtype, at least 100 elements, all finite).
        expected: the std the draws should have.
        kurtosis: the distribution's name (``"normal"``, ``"uniform"``, ``"truncated_normal"`` for
            ±2σ) or its kurtosis as a number.
        mean: the known mean the draws scatter around.
        alpha: the false-alarm probability, strictly between 0 and 1.
        msg: context added to the failure (a seed, a layer).

    Raises:
        AssertionError: with observed, expected, allowed, n and alpha; or when the tensor holds inf/nan.
        InitError: for arguments out of range (alpha, expected, kurtosis, too few elements).
    """
    alpha = _check_alpha(alpha)
    expected = _positive("expected", expected)
    mean = _location(mean)
    key = kurtosis if isinstance(kurtosis, str) else _kurtosis(kurtosis)
    _kurtosis(key)  # validates a name
    x = _samples(tensor, msg, MIN_SAMPLES if isinstance(key, str) else ASYMPTOTIC_MIN_SAMPLES)
    n = x.numel()
    observed = float((x - mean).square().mean().sqrt())
    low, high, method = _std_band(n, key, alpha)
    ratio = observed / expected
    if not low <= ratio <= high:
        raise _fail(
            f"std {observed:.6g} is not {expected:.6g}",
            [
                f"observed ratio {ratio:.6g}, allowed [{low:.6g}, {high:.6g}] ({method})",
                f"n={n}, kurtosis={_kurtosis(key):.4g}, alpha={alpha:g}",
            ],
            msg,
        )


# --- mean -----------------------------------------------------------------------------------------


def assert_mean(
    tensor: torch.Tensor,
    expected: float = 0.0,
    *,
    std: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Assert that the elements' mean is ``expected``.

    With the draws' known ``std``: $|\bar x - \mu| \le z_{\alpha/2}\,\sigma/\sqrt n$, exact for normal
    draws; for the uniform and truncated normal shapes (lighter tails, kurtosis < 3) the mean's tails are
    lighter than the normal's, so the rate is below alpha (computed exactly for a uniform at n = 100 in
    ``benchmarks/toolkit_calibration.py``). Without ``std``: the sample std $s$ (n - 1 dof) and
    Student's t, $|\bar x - \mu| \le t_{n-1,\alpha/2}\, s/\sqrt n$, exact for normal draws (the normal
    z in its place gave 4e-6 at n = 100 for alpha = 1e-6).

    A mean check sees only location: any zero-mean shape of any std passes.

    Raises:
        AssertionError: with observed, expected, allowed, n and alpha; or when the tensor holds inf/nan.
        InitError: for arguments out of range.
    """
    alpha = _check_alpha(alpha)
    expected = _location(expected)
    sigma = _positive("std", std) if std is not None else None
    x = _samples(tensor, msg)
    n = x.numel()
    if sigma is None:
        sigma, quantile, law = float(x.std()), t_quantile(alpha, n - 1), f"Student t, {n - 1} dof"
    else:
        quantile, law = two_sided_z(alpha), "normal"
    observed = float(x.mean())
    allowed = quantile * sigma / math.sqrt(n)
    if not abs(observed - expected) <= allowed:
        raise _fail(
            f"mean {observed:.6g} is not {expected:.6g}",
            [
                f"allowed |mean - {expected:g}| <= {allowed:.6g} (std {sigma:.6g}, {law})",
                f"n={n}, alpha={alpha:g}",
            ],
            msg,
        )


# --- support and shape ----------------------------------------------------------------------------


def assert_uniform_support(
    tensor: torch.Tensor,
    bound: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Assert draws from $\mathcal U(-b, b)$ stay within ±b and reach near it.

    Every $|x_i| \le b$ (up to the dtype's rounding of b), and $\max|x_i| \ge b(1-\delta)$
    with $\delta = 1 - \alpha^{1/n}$: n uniform draws all fall short of that with probability
    exactly alpha. A std too small by a few percent fails the second check at large n; a normal of the
    same std fails the first (its values pass $\sqrt3\sigma$ with probability 8%).
    """
    alpha = _check_alpha(alpha)
    bound = _positive("bound", bound)
    x = _samples(tensor, msg)
    n = x.numel()
    eps = torch.finfo(tensor.dtype).eps
    reach = float(x.abs().max())
    near = bound * alpha ** (1.0 / n) * (1 - eps)
    if not (near <= reach <= bound * (1 + eps)):
        raise _fail(
            f"max |x| {reach:.6g} is not in the support reach of U(-{bound:.6g}, {bound:.6g})",
            [f"allowed [{near:.6g}, {bound * (1 + eps):.6g}]", f"n={n}, alpha={alpha:g}"],
            msg,
        )


def _support(distribution: Shape, std: float, a: float, b: float) -> tuple[float, float]:
    # Where the draws may lie, relative to mean.
    if distribution == "uniform":
        return -SQRT3 * std, SQRT3 * std
    if distribution == "truncated_normal":
        sigma = std / truncated_normal_std(a, b)
        return a * sigma, b * sigma
    return -math.inf, math.inf


def _cutoffs(distribution: str, a: float, b: float) -> tuple[float, float]:
    a, b = float(as_real("a", a)), float(as_real("b", b))
    if distribution == "truncated_normal":
        try:
            truncated_normal_law(a, b)
        except ValueError as error:
            raise InitError(str(error)) from None
    return a, b


def assert_distribution(
    tensor: torch.Tensor,
    distribution: Shape,
    std: float,
    *,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Kolmogorov-Smirnov goodness of fit against a normal, uniform or std-corrected truncated normal.

    The statistic $D = \sup_x |F_n(x) - F(x)|$ is compared with the Dvoretzky-Kiefer-Wolfowitz
    bound $\varepsilon = \sqrt{\ln(2/\alpha)/(2n)}$; by Massart (1990),
    $P(D > \varepsilon) \le \alpha$ for every n. Values are treated as what they are, rounded
    to their dtype: each is compared with F over its whole rounding cell, so bf16 draws are judged
    fairly. Computed in torch, float64. For the bounded shapes every value must also lie in the support
    (its rounding cell must meet $[\mu - \sqrt3\sigma, \mu + \sqrt3\sigma]$, or $[\mu + as, \mu + bs]$),
    which a true draw always does: a single value outside fails, however small its effect on D.

    Power: D sees the largest CDF gap between the two laws. A truncated normal (±2σ) of the right
    std differs from a normal by 0.0167 at most (at ±0.85σ), so at n = 1e4 (allowed D 0.027 at alpha
    1e-6) it passes as a normal 97% of the time, and fails from n = 3e4 (allowed 0.0156); a uniform
    differs by 0.057 and fails from n ~ 2,000. `assert_kurtosis` sees 2.37 vs 3 at n = 1e4. The other
    direction, a normal where a bounded shape is expected, fails the support check at any n of a few
    hundred (8% of a normal's values lie past ±√3σ, 2.3% past the ±2.27σ of the truncated normal).

    Args:
        tensor: the draws.
        distribution: ``"normal"``, ``"uniform"`` ($\pm\sqrt3\,\mathrm{std}$) or
            ``"truncated_normal"`` (cut at ``a``, ``b`` in units of the underlying sigma and
            rescaled to ``std``, as `torchinit.truncated_normal_` draws).
        std: the distribution's standard deviation.
        mean: its location.
        a: lower cut-off of the truncated normal, in sigmas.
        b: upper cut-off of the truncated normal, in sigmas.
        alpha: the false-alarm probability, strictly between 0 and 1.
        msg: context added to the failure.

    Raises:
        AssertionError: a KS statistic past the bound, a value outside the support, or inf/nan values.
        InitError: for arguments out of range.
    """
    alpha = _check_alpha(alpha)
    std = _positive("std", std)
    mean = _location(mean)
    if distribution not in _SHAPES:
        raise choice_error("distribution", "distribution", distribution, _SHAPES)
    a, b = _cutoffs(distribution, a, b)
    x = _samples(tensor, msg)
    n = x.numel()
    # Rounding cell [lo, hi] of each value in its own dtype.
    native = tensor.detach().reshape(-1).cpu()
    native, order = native.sort()
    x = x[order]
    up = torch.nextafter(native, torch.full_like(native, math.inf)).double()
    down = torch.nextafter(native, torch.full_like(native, -math.inf)).double()
    lo, hi = (x + down) / 2 - mean, (x + up) / 2 - mean
    floor, ceiling = _support(distribution, std, a, b)
    outside = int(((hi < floor) | (lo > ceiling)).sum())
    if outside:
        raise _fail(
            f"{outside} value(s) of {n} lie outside the support of {distribution}(mean={mean:g}, std={std:.6g})",
            [
                f"support [{mean + floor:.6g}, {mean + ceiling:.6g}], observed [{float(x[0]):.6g}, {float(x[-1]):.6g}]",
                f"n={n}, alpha={alpha:g}",
            ],
            msg,
        )

    def cdf(v: torch.Tensor) -> torch.Tensor:
        if distribution == "normal":
            out: torch.Tensor = normal_cdf_tensor(v / std)
        elif distribution == "uniform":
            bound = SQRT3 * std
            out = ((v + bound) / (2 * bound)).clamp(0.0, 1.0)
        else:
            out = truncated_normal_cdf(v / (std / truncated_normal_std(a, b)), a, b)
        return out

    rank = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = float(torch.maximum(rank - cdf(hi), cdf(lo) - (rank - 1.0 / n)).max())
    allowed = math.sqrt(math.log(2.0 / alpha) / (2 * n))
    if not statistic <= allowed:
        raise _fail(
            f"draws do not follow {distribution}(mean={mean:g}, std={std:.6g})",
            [f"KS statistic D={statistic:.6g}, allowed {allowed:.6g} (DKW)", f"n={n}, alpha={alpha:g}"],
            msg,
        )
