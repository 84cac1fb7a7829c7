"""Calibrated statistical assertions: every tolerance comes from a false-alarm probability.

Each check holds a true hypothesis with probability at least ``1 - alpha`` (approximately for the std
and mean, whose sampling laws are asymptotically normal; exactly for the support and KS checks) and
fails loudly with observed, expected, allowed, n and alpha.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from torchinit._distributions import (
    KURTOSIS,
    SQRT3,
    normal_cdf,
    truncated_normal_kurtosis,
    truncated_normal_std,
    two_sided_z,
)
from torchinit._types import InitError, choice_error

DEFAULT_ALPHA = 1e-6
"""False-alarm probability of one assertion unless told otherwise (z = 4.89)."""

MIN_SAMPLES = 100
"""Fewest elements an assertion accepts: below it the normal approximations are not trusted."""

Shape = Literal["normal", "uniform", "truncated_normal"]
_SHAPES: tuple[Shape, ...] = ("normal", "uniform", "truncated_normal")


def _kurtosis(kurtosis: float | str) -> float:
    if isinstance(kurtosis, str):
        if kurtosis == "truncated_normal":
            return truncated_normal_kurtosis(-2.0, 2.0)
        if kurtosis not in KURTOSIS:
            raise choice_error("kurtosis", "kurtosis", kurtosis, _SHAPES)
        return KURTOSIS[kurtosis]
    if isinstance(kurtosis, bool) or not isinstance(kurtosis, (int, float)) or not kurtosis >= 1:
        raise InitError(f"kurtosis must be a number >= 1 or a distribution name; got kurtosis={kurtosis!r}.")
    return float(kurtosis)


def _samples(tensor: torch.Tensor) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise InitError(f"tensor must be a floating-point torch.Tensor; got {tensor!r:.80}.")
    n = tensor.numel()
    if n < MIN_SAMPLES:
        raise InitError(
            f"a statistical assertion needs at least {MIN_SAMPLES} elements; got n={n} "
            f"(shape {tuple(tensor.shape)}). Test a larger tensor or several draws concatenated."
        )
    return tensor.detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
        raise InitError(f"alpha must be a float in (0, 1); got alpha={alpha!r}.")
    return alpha


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InitError(f"{name} must be a positive finite number; got {name}={value!r}.")
    return float(value)


def _fail(what: str, lines: list[str], msg: str | None) -> AssertionError:
    context = f" [{msg}]" if msg else ""
    return AssertionError(f"{what}{context}\n  " + "\n  ".join(lines))


def std_tolerance(n: int, kurtosis: float | str = "normal", alpha: float = DEFAULT_ALPHA) -> float:
    r"""The allowed $|\ln(s/\sigma)|$ for a std of n draws: $z_{\alpha/2}\tfrac12\sqrt{(\kappa-1)/n}$.

    $\tfrac12\sqrt{(\kappa - 1)/n}$ is the relative standard error of the RMS about a known mean
    (delta method: $\mathrm{Var}(x^2) = (\kappa - 1)\sigma^4$); κ is 3 for a normal, 1.8 for a
    uniform, 2.366 for a normal truncated at ±2σ. Working on the log scale makes the law of the
    statistic nearly symmetric, so the false-alarm rate holds down to n = 100.

    Example:
        >>> round(std_tolerance(4096, "normal", 1e-6), 4)  # 4.89 * 0.01105
        0.054
    """
    return two_sided_z(_check_alpha(alpha)) * 0.5 * math.sqrt((_kurtosis(kurtosis) - 1.0) / n)


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
    $|\ln(s/\sigma)| \le$ `std_tolerance`. At n = 1e6 and the default alpha that is a
    0.35% band for a normal, so a 3% error, or torch's legacy std where Kaiming is expected (a factor
    $\sqrt6$), always fails.

    Args:
        tensor: the draws (any shape, any floating dtype, at least 100 elements).
        expected: the std the draws should have.
        kurtosis: the distribution's kurtosis, or its name: ``"normal"``, ``"uniform"``,
            ``"truncated_normal"`` (±2σ).
        mean: the known mean the draws scatter around.
        alpha: the false-alarm probability.
        msg: context added to the failure (a seed, a layer).

    Raises:
        AssertionError: with observed, expected, allowed, n and alpha.
    """
    x = _samples(tensor)
    expected = _positive("expected", expected)
    n = x.numel()
    observed = float((x - mean).square().mean().sqrt())
    tol = std_tolerance(n, kurtosis, alpha)
    if not (observed > 0 and abs(math.log(observed / expected)) <= tol):
        raise _fail(
            f"std {observed:.6g} is not {expected:.6g}",
            [
                f"observed ratio {observed / expected:.6g}, allowed [{math.exp(-tol):.6g}, {math.exp(tol):.6g}]",
                f"n={n}, kurtosis={_kurtosis(kurtosis):.4g}, alpha={alpha:g}",
            ],
            msg,
        )


def assert_mean(
    tensor: torch.Tensor,
    expected: float = 0.0,
    *,
    std: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    msg: str | None = None,
) -> None:
    r"""Assert that the elements' mean is ``expected``: $|\bar x - \mu| \le z_{\alpha/2}\,\sigma/\sqrt n$.

    ``std`` is the draws' known std; without it the sample std is used.
    """
    x = _samples(tensor)
    n = x.numel()
    sigma = _positive("std", std) if std is not None else float(x.std())
    observed = float(x.mean())
    allowed = two_sided_z(_check_alpha(alpha)) * sigma / math.sqrt(n)
    if not abs(observed - expected) <= allowed:
        raise _fail(
            f"mean {observed:.6g} is not {expected:.6g}",
            [f"allowed |mean - {expected:g}| <= {allowed:.6g} (std {sigma:.6g})", f"n={n}, alpha={alpha:g}"],
            msg,
        )


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
    exactly alpha. A std too small by a few percent fails the second check at large n.
    """
    x = _samples(tensor)
    bound = _positive("bound", bound)
    n = x.numel()
    eps = torch.finfo(tensor.dtype).eps
    reach = float(x.abs().max())
    near = bound * alpha ** (1.0 / n) * (1 - eps)
    if not (near <= reach <= bound * (1 + eps)):
        raise _fail(
            f"max |x| {reach:.6g} is not in the support reach of U(-{bound:.6g}, {bound:.6g})",
            [f"allowed [{near:.6g}, {bound * (1 + eps):.6g}]", f"n={n}, alpha={_check_alpha(alpha):g}"],
            msg,
        )


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
    fairly. Computed in torch, float64.

    Args:
        tensor: the draws.
        distribution: ``"normal"``, ``"uniform"`` ($\pm\sqrt3\,\mathrm{std}$) or
            ``"truncated_normal"`` (cut at ``a``, ``b`` in units of the underlying sigma and
            rescaled to ``std``, as `torchinit.truncated_normal_` draws).
        std: the distribution's standard deviation.
        mean: its location.
        a: lower cut-off of the truncated normal, in sigmas.
        b: upper cut-off of the truncated normal, in sigmas.
        alpha: the false-alarm probability.
        msg: context added to the failure.
    """
    x = _samples(tensor)
    std = _positive("std", std)
    n = x.numel()
    if distribution not in _SHAPES:
        raise choice_error("distribution", "distribution", distribution, _SHAPES)
    # Rounding cell [lo, hi] of each value in its own dtype.
    native = tensor.detach().reshape(-1).cpu()
    native, order = native.sort()
    x = x[order]
    up = torch.nextafter(native, torch.full_like(native, math.inf)).double()
    down = torch.nextafter(native, torch.full_like(native, -math.inf)).double()
    lo, hi = (x + down) / 2 - mean, (x + up) / 2 - mean

    def cdf(v: torch.Tensor) -> torch.Tensor:
        if distribution == "normal":
            out: torch.Tensor = torch.special.ndtr(v / std)
        elif distribution == "uniform":
            bound = SQRT3 * std
            out = ((v + bound) / (2 * bound)).clamp(0.0, 1.0)
        else:
            z = (v / (std / truncated_normal_std(a, b))).clamp(a, b)
            low, high = normal_cdf(a), normal_cdf(b)
            out = (torch.special.ndtr(z) - low) / (high - low)
        return out

    rank = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = float(torch.maximum(rank - cdf(hi), cdf(lo) - (rank - 1.0 / n)).max())
    allowed = math.sqrt(math.log(2.0 / _check_alpha(alpha)) / (2 * n))
    if not statistic <= allowed:
        raise _fail(
            f"draws do not follow {distribution}(mean={mean:g}, std={std:.6g})",
            [f"KS statistic D={statistic:.6g}, allowed {allowed:.6g} (DKW)", f"n={n}, alpha={alpha:g}"],
            msg,
        )
