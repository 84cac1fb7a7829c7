"""Never silent on bad input: the initializers refuse what they cannot draw, before any write, and say why.

Each case here failed on 0.2.0: inf weights from a tiny fan, a dozen distinct values from a far-tail
truncated normal, NumPy and 0-d tensor fans rejected as "not a number", raw torch errors for a nan slope,
an int generator or a module that is not an activation.
"""

from __future__ import annotations

import fractions
import math
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

import torchinit
from torchinit import Fans, InitError
from torchinit._maths.distributions import truncated_normal_kurtosis, truncated_normal_std
from torchinit.testing import assert_distribution, assert_std

Init = Callable[[torch.Tensor], torch.Tensor]


def _refused(call: Init, tensor: torch.Tensor, match: str) -> None:
    """``call`` raises InitError matching ``match`` and leaves the tensor and torch's RNG untouched."""
    before, rng = tensor.clone(), torch.get_rng_state()
    with pytest.raises(InitError, match=match):
        call(tensor)
    assert torch.equal(tensor, before) and torch.equal(torch.get_rng_state(), rng)


# --- 1. a std or bound the dtype cannot hold ------------------------------------------------------

UNREPRESENTABLE: list[tuple[str, Init, str]] = [
    ("kaiming_normal_ tiny fan_in", lambda w: torchinit.kaiming_normal_(w, fan_in=1e-300),
     r"normal draw's std must keep torch.float32 values finite .* got std=1.41421e\+150 from std = gain / "
     r"sqrt\(fan\) with gain=1.41421, fan_in=1e-300\. Fans count connections"),
    ("kaiming_uniform_ tiny fan_out", lambda w: torchinit.kaiming_uniform_(w, mode="fan_out", fan_out=1e-300),
     r"uniform draw's bound must keep torch.float32 values finite .* fan_out=1e-300"),
    ("kaiming_normal_ subnormal fan_in", lambda w: torchinit.kaiming_normal_(w, fan_in=1e-320),
     r"got std=1.414\d+e\+160 .* fan_in=9.99989e-321"),
    ("kaiming_normal_ huge fan_in", lambda w: torchinit.kaiming_normal_(w, fan_in=1e300),
     r"nonzero std must be at least torch.float32's smallest subnormal 1.4013e-45, or every value rounds to 0; "
     r"got std=1.41421e-150 .* fan_in=1e\+300"),
    ("variance_scaling_ inf std", lambda w: torchinit.variance_scaling_(w, 1e308, fan_in=1e-10),
     r"normal draw's std and mean must be finite; got std=inf from std = sqrt\(scale / fan\) with "
     r"scale=1e\+308, fan_in=1e-10"),
    ("xavier_uniform_ inf bound", lambda w: torchinit.xavier_uniform_(w, 1e300, fans=(1e-300, 1e-300)),
     r"got bound=inf from std = gain \* sqrt\(2 / \(fan_in \+ fan_out\)\) with gain=1e\+300, fan_in=1e-300"),
    ("xavier_normal_ from the shape", lambda w: torchinit.xavier_normal_(w, 1e38),
     r"normal draw's std must keep torch.float32 values finite .* gain=1e\+38, fan_in=4, fan_out=4"),
    ("lecun_uniform_", lambda w: torchinit.lecun_uniform_(w, fan_in=1e-90),
     r"uniform draw's bound must keep .* fan_in=1e-90"),
    ("uniform_std_", lambda w: torchinit.uniform_std_(w, 1e300), r"from bound = sqrt\(3\) \* std with std=1e\+300"),
    ("truncated_normal_", lambda w: torchinit.truncated_normal_(w, 2e38),
     r"truncated_normal draw's std must keep torch.float32 values finite \(it reaches 4.54\d+e\+38"),
    ("orthogonal_", lambda w: torchinit.orthogonal_(w, 1e39), r"orthogonal draw's gain must keep .* gain=1e\+39"),
    ("float16 std", lambda w: torchinit.kaiming_normal_(w.half(), fan_in=1e-8),
     r"must keep torch.float16 values finite \(it reaches 141421, the dtype holds 65504\)"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in UNREPRESENTABLE], ids=[c[0] for c in UNREPRESENTABLE])
def test_unrepresentable_std_is_refused_before_writing(call: Init, match: str) -> None:
    _refused(call, torch.full((4, 4), 7.0), match)


def test_the_limit_is_the_dtypes(gen: torch.Generator) -> None:
    # float64 holds a std of 1.4e150: drawn, finite; float32 cannot.
    w = torchinit.kaiming_normal_(torch.empty(64, 64, dtype=torch.float64), fan_in=1e-300, generator=gen)
    assert bool(w.isfinite().all())
    assert_std(w, math.sqrt(2) / 1e-150)
    with pytest.raises(InitError, match="torch.float32 values finite"):
        torchinit.kaiming_normal_(torch.empty(64, 64), fan_in=1e-300, generator=gen)


@pytest.mark.parametrize("value", [0, -3, math.nan, math.inf, -math.inf, 0.0])
@pytest.mark.parametrize("arg", ["fan_in", "fan_out"])
def test_fans_must_be_positive_finite(arg: str, value: float) -> None:
    mode = arg  # the fan that is read
    shown = repr(value)
    _refused(
        lambda w: torchinit.kaiming_normal_(w, mode=mode, **{arg: value}),  # type: ignore[arg-type]
        torch.full((4, 4), 7.0),
        rf"{arg} must be a positive finite number; got {arg}={shown}",
    )
    with pytest.raises(InitError, match=rf"{arg} must be a positive finite number; got {arg}={shown}"):
        torchinit.xavier_uniform_(torch.empty(4, 4), fans=(value, 3) if arg == "fan_in" else (3, value))


@pytest.mark.parametrize(
    ("kind", "param", "match"),
    [
        ("normal", math.inf, r"normal draw's std and mean must be finite; got std=inf\."),
        ("normal", math.nan, r"got std=nan\."),
        ("normal", -1.0, r"normal draw's std must be >= 0; got std=-1\.0\."),
        ("uniform", -1.0, r"uniform draw's bound must be >= 0; got bound=-1\.0\."),
        ("constant", 1e39, r"constant draw's value must keep torch.float32 values finite"),
        ("constant", -1e39, r"constant draw's value must keep torch.float32 values finite"),
        ("constant", math.nan, r"constant draw's value and mean must be finite; got value=nan"),
    ],
)
def test_the_draw_core_refuses_too(kind: str, param: float, match: str) -> None:
    # draw_ is what schemes and reinit write through: the last guard, before anything is written.
    _refused(lambda w: torchinit.extend.draw_(w, kind, param), torch.full((4, 4), 7.0), match)  # type: ignore[arg-type]


# --- 2. far-tail truncated normals ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncated_normal_far_tail_is_a_truncated_normal(dtype: torch.dtype, gen: torch.Generator) -> None:
    # 0.2.0: 12 distinct values in [3.92, 4.07], std 0.043, where [67.3, 75.7] and std 1 were asked for.
    n = 100_000
    x = torchinit.truncated_normal_(torch.empty(n, dtype=dtype), 1.0, a=8.0, b=9.0, generator=gen)
    assert x.unique().numel() > (0.99 if dtype == torch.float64 else 0.5) * n
    assert_distribution(x, "truncated_normal", 1.0, a=8.0, b=9.0)
    center = 8.121188992979796 / truncated_normal_std(8.0, 9.0)  # E[Z] on [8, 9] (mpmath: 8.12118899297980)
    assert_std(x, 1.0, mean=center, kurtosis=truncated_normal_kurtosis(8.0, 9.0))  # the std correction holds
    for wrong in ({"a": 7.9, "b": 9.0}, {"a": 8.0, "b": 8.9}):  # and the check can tell
        with pytest.raises(AssertionError):
            assert_distribution(x, "truncated_normal", 1.0, **wrong)
    with pytest.raises(AssertionError):
        assert_std(x, 1.03, mean=center, kurtosis=truncated_normal_kurtosis(8.0, 9.0))


@pytest.mark.parametrize(
    ("a", "b"),
    [(4.9, 5.0), (4.0, 5.0), (30.0, 31.0), (-31.0, -30.0), (36.0, math.inf), (-math.inf, -36.0), (-2.0, 9.0),
     (-9.0, 9.0), (5.0, 5.001), (-math.inf, math.inf)],
)  # fmt: skip
def test_truncated_normal_any_tail(a: float, b: float, gen: torch.Generator) -> None:
    x = torchinit.truncated_normal_(torch.empty(20_000, dtype=torch.float64), 0.5, a=a, b=b, generator=gen)
    sigma = 0.5 / truncated_normal_std(a, b)
    assert float(x.min()) >= a * sigma and float(x.max()) <= b * sigma
    assert_distribution(x, "truncated_normal", 0.5, a=a, b=b)
    with pytest.raises(AssertionError):  # a std 15% off: values outside the support, or D too large
        assert_distribution(x, "truncated_normal", 0.5 * 1.15, a=a, b=b)


def test_truncated_normal_moments_match_closed_forms() -> None:
    # One-sided [c, inf): var = 1 - lam (lam - c), lam = 1 / R(c), R the Mills ratio sqrt(pi/2) erfcx(c/sqrt 2):
    # stable where Phi differences are not, and computed by a different route than the quadrature.
    for c in (0.0, 2.0, 8.0, 20.0, 30.0, 36.0):
        mills = math.sqrt(math.pi / 2) * float(torch.special.erfcx(torch.tensor(c / math.sqrt(2), dtype=torch.float64)))
        lam = 1 / mills
        assert truncated_normal_std(c, math.inf) == pytest.approx(math.sqrt(1 - lam * (lam - c)), rel=1e-9)
        assert truncated_normal_std(-math.inf, -c) == pytest.approx(truncated_normal_std(c, math.inf), rel=1e-13)
    assert truncated_normal_std(-2.0, 2.0) == 0.8796256610342398  # JAX's constant, to the last bit
    assert truncated_normal_kurtosis(-2.0, 2.0) == pytest.approx(2.3655367, abs=1e-7)  # REFERENCE.md: 2.366
    assert truncated_normal_std(-math.inf, math.inf) == pytest.approx(1.0, abs=1e-15)
    for c, w in ((0.0, 1e-3), (5.0, 1e-3), (30.0, 1e-4)):  # narrow: nearly uniform, sd = w / sqrt(12) (1 + O(w c))
        assert truncated_normal_std(c, c + w) == pytest.approx(w / math.sqrt(12), rel=2 * w * (c + 1))


def test_truncated_normal_refuses_cutoffs_past_37_sigma() -> None:
    for a, b in ((37.0, 38.0), (40.0, 50.0), (-math.inf, -37.5)):
        _refused(
            lambda w, a=a, b=b: torchinit.truncated_normal_(w, a=a, b=b),
            torch.full((4, 4), 7.0),
            rf"the cut-offs must reach within 37 sigma of the mean .* got a={a!r}, b={b!r}\. Move mean instead",
        )
    torchinit.truncated_normal_(torch.empty(4, 4), a=36.9, b=math.inf)  # just inside


# --- 3. real numbers of any type ------------------------------------------------------------------

try:  # NumPy is not a dependency; its scalars are tested where it is installed
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

REALS: list[object] = [torch.tensor(5), torch.tensor(5.0), torch.tensor(5, dtype=torch.int16), fractions.Fraction(5)]
if np is not None:
    REALS += [np.int64(5), np.int32(5), np.float64(5.0), np.float32(5.0), np.array(5)]


@pytest.mark.parametrize("five", REALS, ids=[f"{type(v).__name__}:{getattr(v, 'dtype', '')}" for v in REALS])
def test_numbers_of_any_type_are_numbers(five: object) -> None:
    # Each call with the 5 as a NumPy scalar, a 0-d tensor, a Fraction equals the call with a plain 5.
    calls: list[tuple[Callable[[torch.Tensor, object], torch.Tensor], object]] = [
        (lambda w, v: torchinit.kaiming_normal_(w, fan_in=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.kaiming_uniform_(w, mode="fan_out", fan_out=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.xavier_uniform_(w, fans=(v, 3)), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.variance_scaling_(w, v, fan_in=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.kaiming_normal_(w, a=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.xavier_normal_(w, gain=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.truncated_normal_(w, v, mean=v, a=-v, b=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.trunc_normal_(w, mean=v, std=v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.uniform_std_(w, v), 5),  # type: ignore[arg-type]
        (lambda w, v: torchinit.orthogonal_(w, v), 5),  # type: ignore[arg-type]
    ]
    if "int" in str(getattr(five, "dtype", "")):
        calls.append((lambda w, v: torchinit.orthogonal_(w, chunks=v), 5))  # type: ignore[arg-type]
    for call, plain in calls:
        torch.manual_seed(3)
        expected = call(torch.empty(10, 4), plain)
        torch.manual_seed(3)
        assert torch.equal(call(torch.empty(10, 4), five), expected)
    assert torchinit.calculate_gain("leaky_relu", five) == torchinit.calculate_gain("leaky_relu", 5)  # type: ignore[arg-type]
    assert torchinit.exact_gain("leaky_relu", five) == torchinit.exact_gain("leaky_relu", 5)  # type: ignore[arg-type]


NOT_REALS: list[tuple[object, str | None]] = [
    (True, "not a bool; got fan_in=True"),
    (torch.tensor(True), "not a bool"),
    ("5", "must be a real number; got fan_in='5'"),
    (None, None),  # None means "from the shape": allowed
    (torch.tensor([5, 6]), r"must be a single real number; got fan_in=Tensor of shape \(2,\)\. Pass one element"),
    (2 + 1j, "not a complex one"),
    (torch.tensor(2 + 1j), "not a complex one"),
    ([5], "must be a real number; got fan_in=\\[5\\]"),
]
if np is not None:
    NOT_REALS += [
        (np.bool_(True), "not a bool"),
        (np.array([5.0]), r"got fan_in=ndarray of shape \(1,\)"),
        (np.complex128(2), "not a complex one"),
    ]


@pytest.mark.parametrize(("value", "match"), NOT_REALS, ids=[repr(v)[:20] for v, _ in NOT_REALS])
def test_what_is_not_a_real_number_is_refused(value: object, match: str | None) -> None:
    if match is None:
        torchinit.kaiming_normal_(torch.empty(4, 4), fan_in=value)  # type: ignore[arg-type]
        return
    _refused(lambda w: torchinit.kaiming_normal_(w, fan_in=value), torch.full((4, 4), 7.0), match)  # type: ignore[arg-type]
    with pytest.raises(InitError, match=match.replace("fan_in=", "fan_out=")):  # the tuple form of fans= too
        torchinit.xavier_uniform_(torch.empty(4, 4), fans=(3, value))  # type: ignore[arg-type]


def test_torchinit_imports_and_works_without_numpy() -> None:
    # torch imports NumPy when it is installed; torchinit itself must need nothing but torch.
    code = (
        "import sys, warnings; sys.modules['numpy'] = None; warnings.simplefilter('ignore')\n"
        "import torch, torchinit\n"
        "w = torchinit.kaiming_normal_(torch.empty(8, 8), fan_in=torch.tensor(5))\n"
        "from torchinit.testing import assert_std, assert_kurtosis\n"
        "print('ok', float(w.std()) > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok True", out.stderr
    import torchinit as package

    root = package.__file__.rsplit("/", 1)[0]
    sources = subprocess.run(["grep", "-rlE", r"^\s*(import|from) numpy", root], capture_output=True, text=True)
    assert sources.stdout == "", sources.stdout


# --- 4. wrong slopes, generators and activations --------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda w: torchinit.kaiming_normal_(w, a=math.nan), r"a must be a finite number; got a=nan\."),
        (lambda w: torchinit.kaiming_uniform_(w, a=math.inf), r"a must be a finite number; got a=inf\."),
        (lambda w: torchinit.kaiming_normal_(w, a=math.nan, nonlinearity="relu"), "got a=nan"),  # even if unread
        (lambda w: torchinit.kaiming_normal_(w, a="0.2"), r"a must be a finite number; got a='0.2'\."),
        (lambda w: torchinit.kaiming_normal_(w, generator=1), r"generator must be a torch.Generator or None; got "
         r"generator=1 \(int\)\. Pass torch.Generator\(\).manual_seed\(seed\)\."),
        (lambda w: torchinit.xavier_uniform_(w, generator="0"), r"got generator='0' \(str\)\.$"),
        (lambda w: torchinit.orthogonal_(w, generator=torch.get_rng_state()),
         r"generator must be a torch.Generator or None; got generator=Tensor of shape"),
        (lambda w: torchinit.truncated_normal_(w, generator=0), "generator must be a torch.Generator"),
        (lambda w: torchinit.trunc_normal_(w, generator=0), "generator must be a torch.Generator"),
        (lambda w: torchinit.variance_scaling_(w, generator=0), "generator must be a torch.Generator"),
        (lambda w: torchinit.uniform_std_(w, 1.0, generator=0), "generator must be a torch.Generator"),
        (lambda w: torchinit.trunc_normal_(w, std=0.0), r"std must be a positive finite number \(torch divides"),
        (lambda w: torchinit.trunc_normal_(w, a=1.0, b=-1.0), r"a < b \(absolute values, \+-inf allowed\); got a=1"),
    ],
)  # fmt: skip
def test_wrong_arguments_say_which_and_how(call: Init, match: str) -> None:
    _refused(call, torch.full((4, 4), 7.0), match)


def test_calculate_gain_refuses_a_nan_slope() -> None:
    with pytest.raises(
        InitError, match=r"slope must be finite \(nan gives a nan gain, inf a gain of 0\); got param=nan"
    ):
        torchinit.calculate_gain("leaky_relu", math.nan)
    with pytest.raises(InitError, match="got param=inf"):
        torchinit.calculate_gain("leaky_relu", math.inf)
    assert torchinit.calculate_gain("leaky_relu", -0.2) == torchinit.calculate_gain("leaky_relu", 0.2)  # as torch


def test_generator_on_another_device_is_refused_up_front() -> None:
    from torchinit._types import check_generator

    cpu = torch.Generator()
    assert check_generator(cpu, torch.device("cpu")) is cpu
    assert check_generator(cpu, torch.device("meta")) is cpu  # meta tensors draw nothing
    with pytest.raises(InitError, match=r"generator must be on the tensor's device type; got a generator on cpu for "
                       r"a tensor on cuda:0\. Use torch.Generator\(device='cuda'\).manual_seed\(seed\)\."):  # fmt: skip
        check_generator(cpu, torch.device("cuda:0"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_generator_device_mismatch_on_cuda() -> None:  # pragma: no cover - run on GPU machines
    _refused(lambda w: torchinit.kaiming_normal_(w, generator=torch.Generator()), torch.zeros(4, 4, device="cuda"),
             "got a generator on cpu for a tensor on cuda:0")  # fmt: skip
    _refused(lambda w: torchinit.kaiming_normal_(w, generator=torch.Generator(device="cuda")), torch.zeros(4, 4),
             "got a generator on cuda")  # fmt: skip


@pytest.mark.parametrize(
    ("activation", "match"),
    [
        (
            nn.Linear(2, 2),
            r"activation=Linear\(in_features=2, out_features=2, bias=True\) is a layer with weights \(weight of "
            r"shape \(2, 2\)\), not an activation\. Pass the nonlinearity that follows the Linear: a name "
            r"\(exact_gain\('relu'\)",
        ),
        (nn.Sequential(nn.Linear(256, 256), nn.ReLU()), r"is a layer with weights \(0\.weight of shape \(256, 256\)\)"),
        (nn.Bilinear(2, 2, 2), r"\(weight of shape \(2, 2, 2\)\), not an activation"),
        (nn.Softmax(dim=0), "its outputs depend on the other elements or change between calls"),
        (nn.Dropout(0.5), "its outputs depend on the other elements or change between calls"),
        (lambda x: x.sum(), r"got Tensor of shape \(\)\."),
        (lambda x: 3, r"got int\."),
        (42, r"activation must be a name, an nn.Module or a callable; got activation=42\."),
    ],
)
def test_exact_gain_refuses_what_is_not_an_activation(activation: object, match: str) -> None:
    with pytest.raises(InitError, match=match):
        torchinit.exact_gain(activation)  # type: ignore[arg-type]


def test_exact_gain_of_a_module_with_weights_leaves_it_alone() -> None:
    prelu = nn.PReLU(init=0.25)
    assert torchinit.exact_gain(prelu) == pytest.approx(math.sqrt(2 / 1.0625), abs=1e-12)
    assert prelu.weight.dtype == torch.float32 and prelu.training
    assert torchinit.exact_gain(nn.Sequential(nn.ReLU(), nn.Tanh())) > 0  # compositions of elementwise maps


def test_fans_object_is_unchanged() -> None:
    assert torchinit.variance_scaling_(torch.empty(4, 4), fans=Fans(4, 4)).shape == (4, 4)
