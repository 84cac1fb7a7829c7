r"""Closed forms and float64 numerics for the distributions torchinit draws from and tests against.

Normal CDF and quantile; the truncated normal's mass (tail-stable), moments (Gauss-Legendre quadrature,
accurate in far tails and narrow intervals) and CDF; the chi-square and Student-t quantiles behind the
exact tests of `torchinit.testing`. Pure Python ``math`` except where a torch kernel is the better tool
(``ndtri``, ``gammainc``); nothing here imports NumPy or SciPy.
"""

from __future__ import annotations

import functools
import math

import torch

SQRT3 = math.sqrt(3.0)

TAIL_LIMIT = 37.0
r"""Farthest cut-off a truncated normal may lie beyond: some point of $[a, b]$ must be within 37 sigma of the
mean. $\Phi(-37) = 5.7\times10^{-300}$; past 37.5 the tail mass leaves float64's normal range."""


def normal_pdf(x: float) -> float:
    """Standard normal density; 0 at +-inf."""
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def normal_cdf(x: float) -> float:
    """Standard normal CDF, accurate in both tails (erfc, not 1 + erf)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """Inverse of `normal_cdf`, in float64."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1); got p={p!r}.")
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64, device="cpu")))


def two_sided_z(alpha: float) -> float:
    """The z with P(|N(0,1)| > z) = alpha: 3.89 at 1e-4, 4.89 at 1e-6, 6.11 at 1e-9."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got alpha={alpha!r}.")
    return -normal_quantile(alpha / 2)


# --- truncated normal -----------------------------------------------------------------------------


def flips(a: float, b: float) -> bool:
    """Whether [a, b] reaches farther above 0 than below: then its mirror [-b, -a] is the tail-stable frame."""
    return b > -a


def truncated_mass(a: float, b: float) -> float:
    r"""$\Phi(b) - \Phi(a)$, taken on the side of 0 where both terms are small, so far tails keep their digits.

    ``normal_cdf(9) - normal_cdf(8)`` is a difference of two numbers within 1e-15 of 1; the mirror
    ``normal_cdf(-8) - normal_cdf(-9)`` is exact to rounding.
    """
    if flips(a, b):
        return normal_cdf(-a) - normal_cdf(-b)
    return normal_cdf(b) - normal_cdf(a)


def check_cutoffs(a: float, b: float) -> None:
    """ValueError unless [a, b] is a drawable truncation: a < b, mass between them, within `TAIL_LIMIT`."""
    if a >= TAIL_LIMIT or b <= -TAIL_LIMIT:
        raise ValueError(
            f"the cut-offs must reach within {TAIL_LIMIT:g} sigma of the mean (the normal's mass beyond is "
            f"below 6e-300, at the edge of float64); got a={a!r}, b={b!r}. Move mean instead of the cut-offs."
        )
    if not (a < b and truncated_mass(a, b) > 0):
        raise ValueError(f"the cut-offs must satisfy a < b with mass between them; got a={a!r}, b={b!r}.")


@functools.lru_cache(maxsize=4)
def legendre_rule(points: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Gauss-Legendre nodes and weights on [-1, 1] by Newton's method on the three-term recurrence, in plain
    # float arithmetic so the numbers do not depend on a LAPACK build.
    nodes: list[float] = []
    weights: list[float] = []
    for i in range(points):
        z = math.cos(math.pi * (i + 0.75) / (points + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, z
            for k in range(2, points + 1):
                p0, p1 = p1, ((2 * k - 1) * z * p1 - (k - 1) * p0) / k
            derivative = points * (z * p1 - p0) / (z * z - 1)
            step = p1 / derivative
            z -= step
            if abs(step) < 1e-16:
                break
        nodes.append(z)
        weights.append(2 / ((1 - z * z) * derivative * derivative))
    return tuple(nodes), tuple(weights)


@functools.lru_cache(maxsize=256)
def truncated_normal_law(a: float, b: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    r"""Nodes and probability weights (summing to 1) that integrate N(0, 1) truncated to [a, b].

    Composite 20-point Gauss-Legendre on panels no wider than $\min(1, 1/|x|)$, on the density
    $e^{-(x^2 - c^2)/2}$ taken relative to its peak c (the point of [a, b] nearest 0), so nothing
    underflows however far out the interval lies; infinite ends stop where the density drops below
    $e^{-60}$. Expectations of polynomials up to degree 12 come out to about 1e-14, in far tails
    (a = 30) and in narrow intervals alike, where differences of closed-form terms lose every digit.
    """
    check_cutoffs(a, b)
    c = min(max(0.0, a), b)
    reach = math.sqrt(c * c + 120.0)
    lo, hi = max(a, -reach), min(b, reach)
    panels = max(1, math.ceil((hi - lo) * max(1.0, abs(lo), abs(hi))))
    unit_nodes, unit_weights = legendre_rule(20)
    nodes: list[float] = []
    weights: list[float] = []
    width = (hi - lo) / panels
    for k in range(panels):
        left = lo + k * width
        right = hi if k == panels - 1 else left + width
        half, mid = (right - left) / 2, (right + left) / 2
        for u, w in zip(unit_nodes, unit_weights, strict=True):
            x = mid + half * u
            nodes.append(x)
            weights.append(half * w * math.exp(-0.5 * (x - c) * (x + c)))
    total = math.fsum(weights)
    return tuple(nodes), tuple(w / total for w in weights)


def law_moments(law: tuple[tuple[float, ...], tuple[float, ...]], orders: int) -> list[float]:
    """Central moments ``[1, 0, mu_2, ..., mu_orders]`` of a discrete law (nodes, weights), two-pass."""
    nodes, weights = law
    mean = math.fsum(w * x for x, w in zip(nodes, weights, strict=True))
    deviations = [x - mean for x in nodes]
    moments = [1.0, 0.0]
    for k in range(2, orders + 1):
        moments.append(math.fsum(w * d**k for d, w in zip(deviations, weights, strict=True)))
    return moments


def truncated_normal_mean(a: float = -2.0, b: float = 2.0) -> float:
    """Mean of N(0, 1) truncated to [a, b]: 0 for symmetric cut-offs, 8.1 for [8, 9]."""
    nodes, weights = truncated_normal_law(a, b)
    return math.fsum(w * x for x, w in zip(nodes, weights, strict=True))


@functools.lru_cache(maxsize=256)
def truncated_normal_std(a: float = -2.0, b: float = 2.0) -> float:
    """Standard deviation of N(0, 1) truncated to [a, b]: 0.8796256610 for [-2, 2], 0.1189 for [8, 9]."""
    return math.sqrt(law_moments(truncated_normal_law(a, b), 2)[2])


def truncated_normal_kurtosis(a: float = -2.0, b: float = 2.0) -> float:
    """Kurtosis E[(Z-mu)^4]/sigma^4 of N(0, 1) truncated to [a, b]: 2.366 for [-2, 2], 3 untruncated."""
    moments = law_moments(truncated_normal_law(a, b), 4)
    return moments[4] / moments[2] ** 2


def normal_cdf_tensor(z: torch.Tensor) -> torch.Tensor:
    """`normal_cdf` elementwise: ``erfc``, accurate in both tails (``torch.special.ndtr(-8.5)`` gives 0)."""
    return 0.5 * torch.erfc(z * (-1.0 / math.sqrt(2.0)))


def truncated_normal_cdf(z: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """CDF of N(0, 1) truncated to [a, b] at float64 ``z``, tail-stable like `truncated_mass`."""
    z = z.clamp(a, b)
    mass = truncated_mass(a, b)
    if flips(a, b):
        return (normal_cdf(-a) - normal_cdf_tensor(-z)) / mass
    return (normal_cdf_tensor(z) - normal_cdf(a)) / mass


KURTOSIS = {"normal": 3.0, "uniform": 1.8}
"""Kurtosis of the untruncated shapes; truncated normals use `truncated_normal_kurtosis`."""


# --- exact quantiles for the tests ----------------------------------------------------------------


def _f64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64, device="cpu")


def chi2_tail(x: float, df: float, *, upper: bool) -> float:
    r"""$P(\chi^2_{df} \le x)$, or $P(\chi^2_{df} > x)$ when ``upper``: the regularized gamma P or Q(df/2, x/2)."""
    special = torch.special.gammaincc if upper else torch.special.gammainc
    return float(special(_f64(df / 2), _f64(x / 2)))


@functools.lru_cache(maxsize=1024)
def chi2_quantile(p: float, df: float, *, upper: bool = False) -> float:
    r"""The x with $P(\chi^2_{df} \le x) = p$ (``upper``: $P(\chi^2_{df} > x) = p$), float64.

    Wilson-Hilferty's cube-root normal approximation to start, then Newton on $\log$ of the tail
    probability (regularized incomplete gamma, torch's Cephes kernels), which converges from both
    sides in a few steps down to tails of 1e-300; relative error about 1e-14.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1); got p={p!r}.")
    z = -normal_quantile(p) if upper else normal_quantile(p)
    h = 2.0 / (9.0 * df)
    x = df * max(1.0 - h + z * math.sqrt(h), 0.05) ** 3
    log_p = math.log(p)
    log_norm = math.lgamma(df / 2) + (df / 2) * math.log(2.0)
    for _ in range(100):
        tail = chi2_tail(x, df, upper=upper)
        if tail <= 0.0:  # past float64: step back toward the bulk
            x = x * 0.5 if not upper else x * 0.9
            continue
        log_density = (df / 2 - 1) * math.log(x) - x / 2 - log_norm
        slope = math.exp(log_density - math.log(tail)) * (-1.0 if upper else 1.0)  # d log tail / dx
        step = (math.log(tail) - log_p) / slope
        new = x - step
        if new <= 0:
            new = x / 2
        if abs(new - x) <= 1e-15 * x:
            return new
        x = new
    return x


def _beta_fraction(x: float, a: float, b: float) -> float:
    # Continued fraction of the incomplete beta (modified Lentz); converges for x < (a + 1) / (a + b + 2).
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 100_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return result


def t_two_sided_tail(t: float, df: float) -> float:
    r"""$P(|T_{df}| > t)$ for Student's t: the regularized incomplete beta $I_{df/(df+t^2)}(df/2, 1/2)$.

    Computed directly in the tail (its own continued fraction, never ``1 - cdf``), float64; checked against
    the closed forms for df = 1 and 2 and the normal limit.
    """
    if t <= 0:
        return 1.0
    a, b = df / 2, 0.5
    ratio = t * t / df
    x = 1.0 / (1.0 + ratio)
    log_front = a * math.log(x) + b * math.log(ratio * x) - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1 - x, b, a) / b


@functools.lru_cache(maxsize=1024)
def t_quantile(alpha: float, df: float) -> float:
    r"""The t with $P(|T_{df}| > t) = \alpha$, float64: Cornish-Fisher start, then Newton on the log tail."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got alpha={alpha!r}.")
    z = two_sided_z(alpha)
    t = z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    log_alpha = math.log(alpha)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(100):
        tail = t_two_sided_tail(t, df)
        log_density = log_norm - (df + 1) / 2 * math.log1p(t * t / df)
        step = (math.log(tail) - log_alpha) * tail / (-2 * math.exp(log_density))
        new = max(t - step, t / 2)
        if abs(new - t) <= 1e-15 * t:
            return new
        t = new
    return t
