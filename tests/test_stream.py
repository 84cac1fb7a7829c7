"""The keyed stream (v2): known answers, the raw words' statistics, and the mapped distributions.

Every statistical check runs at a false-alarm probability fixed in advance (alpha = 1e-6 per check,
Bonferroni-split where one check is many) on 2^20 words, and the same battery is shown to reject
weaker generators (the Weyl counter without its mixer, a single mixing round), so it can fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from torchinit import InitError, keyed_
from torchinit._maths.distributions import chi2_quantile, truncated_normal_std, two_sided_z
from torchinit._maths.stream import (
    index_words,
    mix64,
    mix_,
    range_words,
    signed64,
    stream_key,
    unit_normal,
    unit_uniform,
    word,
    words,
)
from torchinit.testing import assert_distribution, assert_kurtosis, assert_std

ALPHA = 1e-6
N = 1 << 20
Stream = Callable[[int, str, int], torch.Tensor]  # (seed, name, n) -> n int64 words


def v2(seed: int, name: str, n: int) -> torch.Tensor:
    start, gamma = stream_key(seed, name)
    return words(start, gamma, torch.arange(n))


def unmixed(seed: int, name: str, n: int) -> torch.Tensor:  # the Weyl sequence alone
    start, gamma = stream_key(seed, name)
    return torch.arange(n).mul_(signed64(gamma)).add_(signed64(start))


def naive(seed: int, name: str, n: int) -> torch.Tensor:  # SplitMix64 seeded with the seed alone
    golden = signed64(0x9E3779B97F4A7C15)
    return mix_(torch.arange(n).add_(seed).mul_(golden), torch.empty(n, dtype=torch.int64))


# --- known answers -------------------------------------------------------------------------------


def test_mix64_is_splitmix64() -> None:
    # SplitMix64 (Steele, Lea & Flood 2014; Vigna's splitmix64.c) seeded with 0: its first output is
    # mix64(0x9e3779b97f4a7c15) = 0xe220a8397b1dcdaf, the published first value.
    golden = 0x9E3779B97F4A7C15
    assert word(golden, golden, 0) == 0xE220A8397B1DCDAF
    assert word(golden, golden, 1) == 0x6E789E6AA1B965F4
    assert word(golden, golden, 2) == 0x06C45D188009454F


def test_tensor_words_equal_the_python_reference() -> None:
    start, gamma = stream_key(7, "layer.weight")
    p = torch.cat([torch.arange(4096), torch.tensor([2**31 - 1, 2**32, 2**40 + 3, 2**62])])
    expected = [word(start, gamma, int(i)) for i in p]
    got = words(start, gamma, p)
    assert [v & (2**64 - 1) for v in got.tolist()] == expected
    edge = torch.tensor([0, 1, -1, -(2**63), 2**63 - 1])
    assert [v & (2**64 - 1) for v in mix_(edge.clone(), torch.empty_like(edge)).tolist()] == [
        mix64(v) for v in edge.tolist()
    ]


def test_known_answers_pin_stream_version_2() -> None:
    # Changing any of these changes every seeded model: a new stream needs a new version.
    assert stream_key(0, "weight") == (0x26935F374D8F4485, 0x479294EB089E2C9D)
    assert [word(*stream_key(0, "weight"), p) for p in range(3)] == [
        0x967359660DB2EF9C,
        0xBE8B7425FB00D814,
        0x831EA75389B0D7AD,
    ]
    expected = {
        "normal": [0x3FCE4CCB, 0xBFAD72F1, 0xBD487A65, 0xBF3146E8, 0xBFE358AA, 0xC01013A2],
        "uniform": [0x3DDB2EF8, 0xBF53194D, 0xBD1FE4F0, 0xBF02E917, 0xBF6C9E51, 0xBF79C2B1],
        "truncated_normal": [0x3FD2B04C, 0xBFB540FC, 0xBD5988F1, 0xBF3EE251, 0xBFE39ED5, 0xC0046ADE],
    }
    for distribution, bits in expected.items():
        t = keyed_(torch.empty(6), distribution, 1.0, seed=0, name="weight")
        assert [b & 0xFFFFFFFF for b in t.view(torch.int32).tolist()] == bits, distribution


def test_elements_take_the_low_then_the_high_half_of_each_word() -> None:
    start, gamma = stream_key(3, "x")
    w = word(start, gamma, 5)
    got = range_words(start, gamma, 10, 12, torch.device("cpu")).tolist()
    assert [v & 0xFFFFFFFF for v in got] == [w & 0xFFFFFFFF, w >> 32]
    index = torch.tensor([[11, 10], [3, 4]])
    assert torch.equal(index_words(start, gamma, index.reshape(-1)).view(2, 2)[0], torch.tensor(got[::-1]))


# --- the raw stream ------------------------------------------------------------------------------


def _chi2_fails(counts: torch.Tensor, alpha: float) -> bool:
    expected = counts.sum() / counts.numel()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    return statistic > chi2_quantile(alpha, counts.numel() - 1, upper=True)


def _halves(w: torch.Tensor) -> list[torch.Tensor]:
    return [w.bitwise_and(0xFFFFFFFF), w.bitwise_right_shift(32).bitwise_and(0xFFFFFFFF)]


def _bits_fail(w: torch.Tensor, alpha: float) -> bool:
    # each of the 64 bits is 1 with probability 1/2: |ones - n/2| <= z sqrt(n/4), Bonferroni over 64
    n = w.numel()
    bound = two_sided_z(alpha / 64) * math.sqrt(n / 4)
    return any(abs(int(w.bitwise_right_shift(b).bitwise_and_(1).sum()) - n / 2) > bound for b in range(64))


def _correlation_fails(x: torch.Tensor, y: torch.Tensor, alpha: float) -> bool:
    # Pearson r of independent uniforms: sqrt(n) r -> N(0, 1)
    r = float(torch.corrcoef(torch.stack([x.double(), y.double()]))[0, 1])
    return abs(r) * math.sqrt(x.numel()) > two_sided_z(alpha)


def _pairs_fail(x: torch.Tensor, y: torch.Tensor, alpha: float) -> bool:
    # joint histogram of the top 4 bits of two 32-bit words: 256 cells, uniform under independence
    cells = x.bitwise_right_shift(28).mul(16).add(y.bitwise_right_shift(28))
    return _chi2_fails(torch.bincount(cells, minlength=256).double(), alpha)


def battery(stream: Stream) -> list[str]:
    """The names of the failed checks (each at alpha / number of checks)."""
    w = stream(11, "blocks.0.mlp.weight", N)
    lo, hi = _halves(w)
    checks: dict[str, bool] = {}
    checks["bit frequencies"] = _bits_fail(w, ALPHA)
    for label, half in (("low", lo), ("high", hi)):
        checks[f"{label} half top byte"] = _chi2_fails(torch.bincount(half >> 24, minlength=256).double(), ALPHA)
        checks[f"{label} half bottom byte"] = _chi2_fails(torch.bincount(half & 255, minlength=256).double(), ALPHA)
        checks[f"{label} half serial correlation"] = _correlation_fails(half[:-1], half[1:], ALPHA)
        checks[f"{label} half serial pairs"] = _pairs_fail(half[:-1], half[1:], ALPHA)
    checks["low/high halves pairs"] = _pairs_fail(lo, hi, ALPHA)
    for label, other in (
        ("seed + 1", stream(12, "blocks.0.mlp.weight", N)),
        ("neighbouring name", stream(11, "blocks.1.mlp.weight", N)),
    ):
        olo, _ = _halves(other)
        checks[f"{label}: correlation"] = _correlation_fails(lo, olo, ALPHA)
        checks[f"{label}: pairs"] = _pairs_fail(lo, olo, ALPHA)
        checks[f"{label}: xor bits"] = _bits_fail(w ^ other, ALPHA)
        # 2^40 pairs of random 64-bit words share one with probability 2^-24: streams must not overlap
        checks[f"{label}: shared words"] = bool(torch.isin(w, other).any())
    return [name for name, failed in checks.items() if failed]


def test_the_stream_passes_the_battery() -> None:
    assert battery(v2) == []


@pytest.mark.parametrize("weak", [unmixed, naive])
def test_the_battery_rejects_weaker_generators(weak: Stream) -> None:
    assert battery(weak), f"{weak.__name__} passed every check: the battery cannot tell"


# --- the mapped distributions ----------------------------------------------------------------------


def test_normal_table_matches_float64_ndtri() -> None:
    # every octave of t, its edges and a dense random sample of V, against -ndtri(t) in float64 for the t
    # the word stands for (f = float32(V) + 1/2, t = f / 2^32): within 3.2 float32 ulps of |z| where
    # |z| >= 0.1, within 1e-8 below (the interpolation and its float32 evaluation; t's own rounding is ~1 ulp)
    gen = torch.Generator().manual_seed(0)
    v = torch.cat(
        [
            torch.arange(0, 1 << 16),
            torch.randint(0, 2**31, (1 << 20,), generator=gen),
            torch.arange(2**31 - (1 << 16), 2**31),
            torch.tensor([2**k + d for k in range(31) for d in (-1, 0, 1) if 0 <= 2**k + d < 2**31]),
        ]
    ).to(torch.int32)
    z = unit_normal(v).double()
    assert not bool(torch.signbit(z).any())  # |z| for sign bit 0, down to +0 at V = 2^31 - 1 (t rounds to 1/2)
    t = (v.to(torch.float32) + 0.5).double() * 2.0**-32
    reference = -torch.special.ndtri(t)
    error = (z - reference).abs()
    large = reference.abs() >= 0.1
    ulp = torch.finfo(torch.float32).eps / 2 * torch.exp2(torch.floor(torch.log2(reference[large].abs())))
    assert float((error[large] / ulp).max()) <= 3.2
    assert float(error[~large].max()) <= 1e-8
    assert float(z.max()) == pytest.approx(-float(torch.special.ndtri(torch.tensor(2.0**-33, dtype=torch.float64))))
    # the sign: the top bit, independent of V, so flipping it negates the value exactly
    w = torch.randint(-(2**31), 2**31, (4096,), generator=gen, dtype=torch.int64).to(torch.int32)
    assert torch.equal(unit_normal(w), -unit_normal(w ^ -(2**31)))
    # bit for bit copysign(|z|, word), signed zeros included (the words whose t rounds to 1/2)
    w = torch.cat([v, v ^ -(2**31)])
    signed = torch.copysign(unit_normal(w & (2**31 - 1)), w.view(torch.float32))
    assert torch.equal(unit_normal(w).view(torch.int32), signed.view(torch.int32))


def test_uniform_values_are_odd_multiples_of_two_to_the_minus_24() -> None:
    w = torch.tensor([0, -1, 2**31 - 1, -(2**31), 255, 256], dtype=torch.int32)
    assert unit_uniform(w).tolist() == [1.0, -1.0, 2.0**24 - 1, -(2.0**24) + 1, 1.0, 3.0]


@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_mapped_distributions(distribution: str) -> None:
    std = 0.02
    param = std * math.sqrt(3) if distribution == "uniform" else std
    values = keyed_(torch.empty(N), distribution, param, seed=5, name="h.0.attn.c_attn.weight")
    assert_std(values, std, kurtosis=distribution)  # type: ignore[arg-type]
    assert_distribution(values, distribution, std)  # type: ignore[arg-type]
    assert_kurtosis(values, distribution)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):  # the same assertion rejects torch's legacy std (1/sqrt(6) of it)
        assert_std(values, std / math.sqrt(6), kurtosis=distribution)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        assert_distribution(values, "normal" if distribution == "uniform" else "uniform", std)


def test_normal_tails() -> None:
    # P(|Z| > 4) = 6.334e-5: the count in 2^22 draws is binomial; the table must not thin the tails
    values = keyed_(torch.empty(4 * N), "normal", 1.0, seed=1, name="tails")
    p = math.erfc(4 / math.sqrt(2))
    n = values.numel()
    count = int((values.abs() > 4).sum())
    assert abs(count - n * p) <= two_sided_z(ALPHA) * math.sqrt(n * p * (1 - p))
    cut = keyed_(torch.empty(N), "truncated_normal", 1.0, seed=1, name="tails", cut=1.5)
    # cut at 1.5 underlying sigmas: |value| * sd(Z) <= 1.5
    sd = truncated_normal_std(-1.5, 1.5)
    assert float(cut.abs().max()) * sd <= 1.5 * (1 + 2**-22)
    assert_distribution(cut, "truncated_normal", 1.0, a=-1.5, b=1.5)


def test_keyed_fill_errors() -> None:
    t = torch.empty(4, 4)
    with pytest.raises(InitError, match="seed must be a non-negative integer; got seed=-1"):
        keyed_(t, seed=-1, name="w")
    with pytest.raises(InitError, match="distribution must be one of"):
        keyed_(t, "cauchy", seed=1, name="w")
    with pytest.raises(InitError, match=r"does not fit in global_shape \(4, 6\)"):
        keyed_(t, seed=1, name="w", global_shape=(4, 6), offset=(0, 3))
    with pytest.raises(InitError, match="floating-point"):
        keyed_(torch.empty(3, dtype=torch.int64), seed=1, name="w")
    with pytest.raises(InitError, match="must keep torch.float16 values finite"):
        keyed_(torch.empty(3, dtype=torch.float16), "normal", 1e5, seed=1, name="w")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"global_shape": (4, 6), "offset": (1.5, 0)}, "offset must be a tuple of integers"),
        ({"global_shape": (4, 6), "offset": "20"}, "offset must be a tuple of integers"),
        ({"global_shape": 24}, "global_shape must be a tuple of integers"),
        ({"param": "a"}, "param must be a number"),
        ({"cut": 0.0, "distribution": "truncated_normal"}, "cut must be a positive number"),
    ],
)
def test_keyed_fill_refuses_loose_arguments(kwargs: dict[str, object], match: str) -> None:
    # nothing silently truncated or split into digits: a clear InitError naming the argument
    args = {"distribution": "normal", "param": 1.0, **kwargs}
    with pytest.raises(InitError, match=match):
        keyed_(torch.empty(2, 6), seed=0, name="w", **args)  # type: ignore[arg-type]


def test_keyed_orthogonal_needs_a_matrix() -> None:
    with pytest.raises(InitError, match="at least 2 dimensions"):
        keyed_(torch.empty(6), "orthogonal", 1.0, seed=0, name="w")
    block = keyed_(torch.empty(2, 6), "normal", 1.0, seed=0, name="w", global_shape=(4, 6), offset=[2, 0])
    whole = keyed_(torch.empty(4, 6), "normal", 1.0, seed=0, name="w")
    assert torch.equal(block, whole[2:])  # a list of offsets is fine
