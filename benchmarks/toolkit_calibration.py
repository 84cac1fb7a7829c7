"""Measure and compute the false-alarm rates of torchinit.testing (docs/guides/testing.md, "Calibration").

python benchmarks/toolkit_calibration.py [--trials 4000] [--alpha 0.01] > docs/reproductions/toolkit_calibration.txt

Three kinds of numbers:

- simulated rates at a loose alpha: each assertion run on ``trials`` independent true draws (a fresh
  seeded generator per configuration), with the exact (Clopper-Pearson) 95% interval of the rate;
- exact tails at alpha = 1e-6, computed, not simulated: the chi-square law of a normal's RMS against
  the old log-normal band and the new exact band, Student's t against the normal z, and the exact
  Irwin-Hall law of a uniform's mean (rational arithmetic) against the normal band;
- the far-tail truncated normal, a = 8, b = 9, before (the float64 erfinv of 2u - 1) and after;
- power: how often a truncated normal of the right std passes each check as a normal.
"""

from __future__ import annotations

import argparse
import math
import platform
from collections.abc import Callable
from fractions import Fraction

import torch

import torchinit
from torchinit._maths.distributions import chi2_tail, normal_cdf, t_two_sided_tail, truncated_normal_std, two_sided_z
from torchinit.testing import (
    assert_distribution,
    assert_kurtosis,
    assert_mean,
    assert_std,
    std_tolerance,
)

SQRT3 = math.sqrt(3.0)
DRAWS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "normal": lambda t, g: t.normal_(0.0, 1.0, generator=g),
    "uniform": lambda t, g: t.uniform_(-SQRT3, SQRT3, generator=g),
    "truncated_normal": lambda t, g: torchinit.truncated_normal_(t, 1.0, generator=g),
}


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    # log P(Bin(n, p) <= k), summed in log space.
    if k < 0:
        return -math.inf
    if k >= n:
        return 0.0
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(terms)
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided confidence interval of a binomial rate, by bisection on the binomial CDF."""
    tail = (1 - level) / 2

    def solve(target: Callable[[float], bool]) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if target(mid) else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: math.exp(_log_binomial_cdf(k - 1, n, p)) > 1 - tail)
    high = 1.0 if k == n else solve(lambda p: math.exp(_log_binomial_cdf(k, n, p)) > tail)
    return low, high


def rate(check: Callable[[torch.Tensor], None], rows: torch.Tensor) -> int:
    count = 0
    for row in rows:
        try:
            check(row)
        except AssertionError:
            count += 1
    return count


def simulated(trials: int, alpha: float, seed: int) -> None:
    print(f"Simulated false-alarm rates at alpha = {alpha:g}, {trials} true draws each (95% Clopper-Pearson)")
    print(f"{'assertion':<34}{'shape':<18}{'n':>7}{'alarms':>8}{'rate':>9}   interval")
    configs: list[tuple[str, int, Callable[[str], Callable[[torch.Tensor], None]]]] = [
        ("assert_std", 100, lambda s: lambda x: assert_std(x, 1.0, kurtosis=s, alpha=alpha)),
        ("assert_std", 10_000, lambda s: lambda x: assert_std(x, 1.0, kurtosis=s, alpha=alpha)),
        ("assert_mean(std=1)", 100, lambda s: lambda x: assert_mean(x, std=1.0, alpha=alpha)),
        ("assert_mean(std=1)", 10_000, lambda s: lambda x: assert_mean(x, std=1.0, alpha=alpha)),
        ("assert_mean (sample std, t)", 100, lambda s: lambda x: assert_mean(x, alpha=alpha)),
        ("assert_mean (sample std, t)", 10_000, lambda s: lambda x: assert_mean(x, alpha=alpha)),
        ("assert_distribution (KS)", 100, lambda s: lambda x: assert_distribution(x, s, 1.0, alpha=alpha)),  # type: ignore[arg-type]
        ("assert_distribution (KS)", 10_000, lambda s: lambda x: assert_distribution(x, s, 1.0, alpha=alpha)),  # type: ignore[arg-type]
        ("assert_kurtosis", 10_000, lambda s: lambda x: assert_kurtosis(x, s, alpha=alpha)),  # type: ignore[arg-type]
    ]
    for index, (name, n, make) in enumerate(configs):
        for shape_index, shape in enumerate(DRAWS):
            gen = torch.Generator().manual_seed(seed + 100 * index + shape_index)
            rows = DRAWS[shape](torch.empty(trials, n, dtype=torch.float64), gen)
            k = rate(make(shape), rows)
            low, high = clopper_pearson(k, trials)
            print(f"{name:<34}{shape:<18}{n:>7}{k:>8}{k / trials:>9.4f}   [{low:.4f}, {high:.4f}]")


def irwin_hall_upper(n: int, s: Fraction) -> Fraction:
    """P(U_1 + ... + U_n > s) for iid U(0, 1), exactly: the Irwin-Hall CDF at n - s by symmetry."""
    x = n - s
    total = Fraction(0)
    for k in range(math.floor(x) + 1):
        total += (-1) ** k * math.comb(n, k) * (x - k) ** n
    return total / math.factorial(n)


def exact(alpha: float = 1e-6, n: int = 100) -> None:
    print(f"\nExact tails at alpha = {alpha:g}, n = {n} (computed, not simulated)")
    # assert_std, normal draws: n s^2 / sigma^2 ~ chi-square(n).
    tol = std_tolerance(n, "normal", alpha)
    old = chi2_tail(n * math.exp(-2 * tol), n, upper=False) + chi2_tail(n * math.exp(2 * tol), n, upper=True)
    print(f"  assert_std normal, old log band +-{tol:.4f}:  P(false alarm) = {old:.3e}")
    from torchinit.testing._assertions import _std_band

    low, high, _ = _std_band(n, "normal", alpha)
    below, above = chi2_tail(n * low**2, n, upper=False), chi2_tail(n * high**2, n, upper=True)
    print(f"  assert_std normal, exact chi-square band [{low:.5f}, {high:.5f}]:  P = {below:.4e} + {above:.4e} = "
          f"{below + above:.4e}")  # fmt: skip
    for shape in ("uniform", "truncated_normal"):
        low, high, _ = _std_band(n, shape, alpha)
        print(f"  assert_std {shape}, Bennett band [{low:.5f}, {high:.5f}]: P <= {alpha:g} by construction")
    # assert_mean with the sample std, normal draws: |mean| / (s / sqrt n) ~ |t(n - 1)|.
    z = two_sided_z(alpha)
    print(f"  assert_mean sample std, old normal z = {z:.4f}:  P(|t_{n - 1}| > z) = {t_two_sided_tail(z, n - 1):.3e}")
    from torchinit._maths.distributions import t_quantile

    t = t_quantile(alpha, n - 1)
    print(f"  assert_mean sample std, Student t = {t:.4f}:  P(|t_{n - 1}| > t) = {t_two_sided_tail(t, n - 1):.4e}")
    # assert_mean with known std, uniform draws: Irwin-Hall, exact in rationals.
    edge = Fraction(n, 2) + Fraction(z * math.sqrt(n) / (2 * SQRT3)).limit_denominator(10**15)
    uniform = 2 * float(irwin_hall_upper(n, edge))
    print(
        f"  assert_mean std given, uniform draws (Irwin-Hall):  P(false alarm) = {uniform:.4e} "
        f"(normal draws: {alpha:g})"
    )


def old_truncated_std(a: float, b: float) -> float:
    """0.2.0's sd(Z): raw moments over the mass Phi(b) - Phi(a), a difference of two numbers near 1."""

    def pdf(x: float) -> float:
        return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)

    mass = normal_cdf(b) - normal_cdf(a)
    m1 = (pdf(a) - pdf(b)) / mass
    m2 = 1 + (a * pdf(a) - b * pdf(b)) / mass
    return math.sqrt(m2 - m1 * m1)


def far_tail(n: int = 100_000) -> None:
    print(f"\nTruncated normal far in the tail: truncated_normal_(std=1, a=8, b=9), n = {n}")
    print(f"  sd(Z) on [8, 9]: 0.2.0's closed form {old_truncated_std(8.0, 9.0):.6f}, "
          f"quadrature {truncated_normal_std(8.0, 9.0):.6f}")  # fmt: skip
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        # Before (0.2.0): the float64 erfinv of 2u - 1, u ~ U(Phi(8), Phi(9)), both within 1e-15 of 1.
        u = torch.empty(n, dtype=torch.float64).uniform_(2 * normal_cdf(8) - 1, 2 * normal_cdf(9) - 1, generator=g)
        z = u.erfinv_().clamp_(8 / math.sqrt(2), 9 / math.sqrt(2)) * math.sqrt(2)
        before = (z / old_truncated_std(8.0, 9.0)).to(dtype)
        after = torchinit.truncated_normal_(torch.empty(n, dtype=dtype), 1.0, a=8.0, b=9.0, generator=g)
        for label, x in (("before", before), ("after", after)):
            try:
                assert_distribution(x, "truncated_normal", 1.0, a=8.0, b=9.0)
                verdict = "passes"
            except AssertionError as error:
                verdict = "fails: " + str(error).splitlines()[1].strip()
            print(f"  {label:<7}{dtype!s:<15} distinct values {x.unique().numel():>7}, "
                  f"std {float(x.double().std()):.4f}, KS {verdict}")  # fmt: skip


def power(trials: int = 400) -> None:
    print(
        "\nPower at the default alpha = 1e-6: how often a truncated normal (±2σ, std 1) passes as a normal "
        f"({trials} draws)"
    )
    print(f"{'n':>8}  {'assert_std':>11}{'assert_mean':>12}{'assert_distribution':>20}{'assert_kurtosis':>16}")
    checks: list[Callable[[torch.Tensor], None]] = [
        lambda x: assert_std(x, 1.0),
        lambda x: assert_mean(x, std=1.0),
        lambda x: assert_distribution(x, "normal", 1.0),
        lambda x: assert_kurtosis(x, "normal"),
    ]
    for n in (10_000, 30_000, 50_000, 100_000):
        gen = torch.Generator().manual_seed(n)
        rows = torchinit.truncated_normal_(torch.empty(trials, n, dtype=torch.float64), 1.0, generator=gen)
        passes = [trials - rate(check, rows) for check in checks]
        print(f"{n:>8}  " + "".join(f"{p / trials:>{w}.3f}" for p, w in zip(passes, (11, 12, 20, 16), strict=True)))


def kurtosis_tails(trials: int = 20_000, n: int = 10_000) -> None:
    from torchinit.testing._kurtosis import _kurtosis_band

    print(f"\nassert_kurtosis per tail, {trials} true draws of n = {n} each (statistic computed in bulk)")
    for shape in DRAWS:
        for alpha in (0.01, 0.001):
            low, high, _ = _kurtosis_band(n, shape, alpha, -2.0, 2.0)  # type: ignore[arg-type]
            below = above = 0
            gen = torch.Generator().manual_seed(round(1 / alpha) + 7 * len(shape))  # a stream per line
            for _ in range(trials // 2000):
                x = DRAWS[shape](torch.empty(2000, n, dtype=torch.float64), gen)
                squares = x.square()
                k = squares.square().mean(1) / squares.mean(1) ** 2
                below, above = below + int((k < low).sum()), above + int((k > high).sum())
            ci = clopper_pearson(below + above, trials)
            print(f"  {shape:<17} alpha {alpha:<6g} below {below / trials:.5f}  above {above / trials:.5f}  "
                  f"rate {(below + above) / trials:.5f} [{ci[0]:.5f}, {ci[1]:.5f}]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torchinit {torchinit.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()} ({torch.get_num_threads()} thread)")  # fmt: skip
    exact()
    far_tail()
    power()
    kurtosis_tails()
    print()
    simulated(args.trials, args.alpha, args.seed)


if __name__ == "__main__":
    main()
