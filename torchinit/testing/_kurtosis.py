r"""`assert_kurtosis`: the shape check a std cannot make, with a band from the shape's own moments."""

from __future__ import annotations

import functools
import itertools
import math

import torch

import torchinit.testing._assertions as _base
from torchinit._maths.distributions import SQRT3, legendre_rule, truncated_normal_law, two_sided_z
from torchinit._types import choice_error
from torchinit.testing._assertions import ASYMPTOTIC_MIN_SAMPLES, DEFAULT_ALPHA, Shape

_SHAPES = _base._SHAPES
_check_alpha = _base._check_alpha
_cutoffs = _base._cutoffs
_fail = _base._fail
_location = _base._location
_samples = _base._samples


def _law(distribution: Shape, a: float, b: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Nodes and weights integrating the standardized shape (any scale: the kurtosis is scale-free).
    if distribution == "uniform":
        nodes, weights = legendre_rule(20)
        return tuple(SQRT3 * u for u in nodes), tuple(w / 2 for w in weights)
    if distribution == "normal":
        return truncated_normal_law(-math.inf, math.inf)
    return truncated_normal_law(a, b)


@functools.lru_cache(maxsize=64)
def _kurtosis_terms(distribution: Shape, a: float, b: float) -> tuple[float, float, float, float, float]:
    # (kappa, n * bias, n * variance, n^2 * third, n^3 * fourth cumulant) of the sample kurtosis about the
    # location, by the delta method on g(u) = u2 / u1^2 of the means u of (z^2, z^4).
    nodes, weights = _law(distribution, a, b)
    u1 = math.fsum(w * z**2 for z, w in zip(nodes, weights, strict=True))
    u2 = math.fsum(w * z**4 for z, w in zip(nodes, weights, strict=True))
    centered = [(z**2 - u1, z**4 - u2) for z in nodes]

    @functools.cache
    def mu(*index: int) -> float:  # joint central moment of (z^2, z^4)
        return math.fsum(w * math.prod(c[i] for i in index) for c, w in zip(centered, weights, strict=True))

    g = (-2 * u2 / u1**3, 1 / u1**2)
    h = ((6 * u2 / u1**4, -2 / u1**3), (-2 / u1**3, 0.0))

    def t(i: int, j: int, k: int) -> float:  # third derivatives: g_111 = -24 u2 / u1^5, g_112 = 6 / u1^4
        return {3: -24 * u2 / u1**5, 2: 6 / u1**4}.get((i, j, k).count(0), 0.0)

    r = range(2)
    bias = sum(h[i][j] * mu(i, j) for i in r for j in r) / 2
    variance = sum(g[i] * g[j] * mu(i, j) for i in r for j in r)
    third = sum(g[i] * g[j] * g[k] * mu(i, j, k) for i in r for j in r for k in r)
    third += 3 * sum(g[i] * g[j] * h[k][m] * mu(i, k) * mu(j, m) for i in r for j in r for k in r for m in r)
    fourth = 0.0
    for i, j, k, m in itertools.product(r, r, r, r):
        cumulant = mu(i, j, k, m) - mu(i, j) * mu(k, m) - mu(i, k) * mu(j, m) - mu(i, m) * mu(j, k)
        fourth += g[i] * g[j] * g[k] * g[m] * cumulant
        fourth += 12 * g[i] * g[j] * g[k] * sum(h[m][p] * mu(i, j, m) * mu(k, p) for p in r)
        for p, q in itertools.product(r, r):
            fourth += 12 * g[i] * g[j] * h[k][m] * h[p][q] * mu(i, k) * mu(j, p) * mu(m, q)
            fourth += 4 * g[i] * g[j] * g[k] * t(m, p, q) * mu(i, m) * mu(j, p) * mu(k, q)
    return u2 / u1**2, bias, variance, third, fourth


def _kurtosis_band(n: int, distribution: Shape, alpha: float, a: float, b: float) -> tuple[float, float, float]:
    r"""(low, high, kappa): the interval `assert_kurtosis` accepts for $\hat\kappa$ of n draws, and the shape's κ.

    With $u = (\overline{z^2}, \overline{z^4})$ and $g(u) = u_2/u_1^2$, the delta method gives the
    mean $\kappa + \tfrac1{2n}\sum g_{ij}\mu_{ij}$, the variance $\tfrac1n\sum g_i g_j \mu_{ij}$, the
    third cumulant $\tfrac1{n^2}(\sum g_i g_j g_k \mu_{ijk} + 3\sum g_i g_j g_{kl} \mu_{ik} \mu_{jl})$ and
    the fourth (to $n^{-3}$, with the third derivatives of g) of $\hat\kappa$, where $\mu$ are the
    joint central moments of $(z^2, z^4)$: moments of the shape up to the 16th. For a normal that is
    variance 24/n, skewness $6\sqrt6/\sqrt n$ and excess kurtosis 540/n, the known laws of the sample
    kurtosis. The band is the second-order Cornish-Fisher quantile
    $\mathrm{mean} + \mathrm{sd}\,(w + \gamma_1 (w^2 - 1)/6 + \gamma_2 (w^3 - 3w)/24 -
    \gamma_1^2 (2w^3 - 5w)/36)$ at $w = \pm z_{\alpha/2}$; the variance's own $1/n^2$ term is left out.
    """
    kappa, bias, variance, third, fourth = _kurtosis_terms(distribution, a, b)
    sd = math.sqrt(variance / n)
    skew = third / n**2 / sd**3
    excess = fourth / n**3 / sd**4
    z = two_sided_z(alpha)

    def quantile(w: float) -> float:
        shift = skew * (w * w - 1) / 6 + excess * (w**3 - 3 * w) / 24 - skew**2 * (2 * w**3 - 5 * w) / 36
        return kappa + bias / n + sd * (w + shift)

    return quantile(-z), quantile(z), kappa


def assert_kurtosis(
    tensor: torch.Tensor,
    distribution: Shape = "normal",
    *,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Assert the draws' kurtosis about ``mean``, $\hat\kappa = m_4/m_2^2$, $m_k = \tfrac1n\sum(x_i-\mu)^k$.

    The shape check the std cannot make, and scale-free: a normal has κ = 3, a truncated normal at ±2σ
    2.366, a uniform 1.8 (for asymmetric cut-offs, $E[Z^4]/E[Z^2]^2$ about the location). The band is
    `_kurtosis_band`: delta method from the shape's moments up to the 16th, with the mean's 1/n bias and
    second-order Cornish-Fisher corrections (skewness and kurtosis of the statistic), so it is
    approximate, its quantiles off by $O(n^{-3/2})$; it
    needs n >= 10,000, where at alpha 0.01 the measured false-alarm rates of all three shapes sit at
    alpha (``benchmarks/toolkit_calibration.py``). At n = 1e4 and alpha 1e-6 the normal band is
    [2.78, 3.27]: a ±2σ truncated normal (2.37) or a uniform (1.8) of the right std always fails; a
    ±3σ one (2.83) is too close to a normal to tell at that n (SE 0.049).

    Example:
        >>> x = torch.empty(10_000).normal_(generator=torch.Generator().manual_seed(0))
        >>> assert_kurtosis(x, "normal")
        >>> truncated = truncated_normal_(torch.empty(10_000), 1.0, generator=torch.Generator().manual_seed(0))
        >>> assert_kurtosis(truncated, "normal")
        Traceback (most recent call last):
        ...
        AssertionError: kurtosis ... is not normal's 3
          allowed [2.78215, 3.27168] (delta method, Cornish-Fisher)
          n=10000, alpha=1e-06

    Args:
        tensor: the draws (at least 10,000, all finite).
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"`` (cut at ``a``, ``b`` sigmas).
        mean: the known location the moments are taken about.
        a: lower cut-off of the truncated normal, in sigmas.
        b: upper cut-off of the truncated normal, in sigmas.
        alpha: the false-alarm probability, strictly between 0 and 1.
        msg: context added to the failure.

    Raises:
        AssertionError: with observed, the band, n and alpha; or when the tensor holds inf/nan.
        InitError: for arguments out of range (too few elements, alpha, cut-offs).
    """
    alpha = _check_alpha(alpha)
    mean = _location(mean)
    if distribution not in _SHAPES:
        raise choice_error("distribution", "distribution", distribution, _SHAPES)
    a, b = _cutoffs(distribution, a, b)
    x = _samples(tensor, msg, ASYMPTOTIC_MIN_SAMPLES)
    n = x.numel()
    squares = (x - mean).square()
    second = float(squares.mean())
    observed = float(squares.square().mean()) / second**2 if second > 0 else math.inf
    low, high, kappa = _kurtosis_band(n, distribution, alpha, a, b)
    if not low <= observed <= high:
        raise _fail(
            f"kurtosis {observed:.6g} is not {distribution}'s {kappa:.4g}",
            [f"allowed [{low:.6g}, {high:.6g}] (delta method, Cornish-Fisher)", f"n={n}, alpha={alpha:g}"],
            msg,
        )
