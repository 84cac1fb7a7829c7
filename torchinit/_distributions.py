"""Closed forms for the distributions torchinit draws from: CDFs, truncation moments, quantiles."""

from __future__ import annotations

import math

import torch

SQRT3 = math.sqrt(3.0)


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
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def two_sided_z(alpha: float) -> float:
    """The z with P(|N(0,1)| > z) = alpha: 3.89 at 1e-4, 4.89 at 1e-6, 6.11 at 1e-9."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1); got alpha={alpha!r}.")
    return -normal_quantile(alpha / 2)


def _truncated_raw_moments(a: float, b: float, order: int) -> list[float]:
    # E[Z^k] for Z ~ N(0, 1) truncated to [a, b]:
    # m_k = (k - 1) m_{k-2} + (a^{k-1} phi(a) - b^{k-1} phi(b)) / (Phi(b) - Phi(a)).
    mass = normal_cdf(b) - normal_cdf(a)
    if not mass > 0:
        raise ValueError(f"truncation [a, b] must have positive mass; got a={a!r}, b={b!r}.")

    def edge(x: float, power: int) -> float:
        return 0.0 if math.isinf(x) else x**power * normal_pdf(x)

    moments = [1.0, (normal_pdf(a) - normal_pdf(b)) / mass]
    for k in range(2, order + 1):
        moments.append((k - 1) * moments[k - 2] + (edge(a, k - 1) - edge(b, k - 1)) / mass)
    return moments


def truncated_normal_std(a: float = -2.0, b: float = 2.0) -> float:
    """Standard deviation of N(0, 1) truncated to [a, b]: 0.8796256610 for [-2, 2]."""
    m = _truncated_raw_moments(a, b, 2)
    return math.sqrt(m[2] - m[1] ** 2)


def truncated_normal_kurtosis(a: float = -2.0, b: float = 2.0) -> float:
    """Kurtosis E[(Z-mu)^4]/sigma^4 of N(0, 1) truncated to [a, b]: 2.366 for [-2, 2], 3 untruncated."""
    m = _truncated_raw_moments(a, b, 4)
    mu = m[1]
    var = m[2] - mu**2
    central4 = m[4] - 4 * mu * m[3] + 6 * mu**2 * m[2] - 3 * mu**4
    return central4 / var**2


KURTOSIS = {"normal": 3.0, "uniform": 1.8}
"""Kurtosis of the untruncated shapes; truncated normals use `truncated_normal_kurtosis`."""
