"""PyTorch's own init tests (test/nn/test_init.py, torch 2.13), rewritten against torchinit's drop-ins.

Every property torch checks for kaiming_uniform_, kaiming_normal_, xavier_uniform_, xavier_normal_,
trunc_normal_, orthogonal_ and calculate_gain is checked here for torchinit's function of the same
name: gains, errors on tensors below 2-d, the zero-element warning, distributions (our calibrated
Kolmogorov-Smirnov in place of scipy's), truncation bounds and resolution, orthogonality. And each
draw is compared bit for bit with torch's from the same generator state. The rest of torch's file (uniform_,
normal_, constant_, eye_, dirac_, sparse_, the deprecated aliases) is in test_torch_dropin.py.
"""

from __future__ import annotations

import inspect
import math
import random
import string
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import torchinit
from torchinit._maths.distributions import truncated_normal_std
from torchinit.testing import assert_distribution

DROP_INS = ["kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_"]


def both(name: str, shape: tuple[int, ...], seed: int, **kwargs: Any) -> torch.Tensor:
    """torchinit's ``name`` on a fresh tensor, asserted bitwise equal to torch's from the same seed."""
    ours = getattr(torchinit, name)(torch.empty(shape), **kwargs, generator=torch.Generator().manual_seed(seed))
    theirs = getattr(nn.init, name)(torch.empty(shape), **kwargs, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(ours, theirs), name
    return ours  # type: ignore[no-any-return]


def random_shape(rng: random.Random, dims: int, low: int, high: int) -> tuple[int, ...]:
    return tuple(rng.randint(low, high) for _ in range(dims))


def torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# --- calculate_gain -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
)
def test_calculate_gain_linear(name: str) -> None:
    assert torchinit.calculate_gain(name) == 1


@pytest.mark.parametrize(
    ("name", "gain"), [("sigmoid", 1), ("tanh", 5 / 3), ("relu", math.sqrt(2)), ("leaky_relu", 1.4141428569978354),
                       ("selu", 0.75)],
)  # fmt: skip
def test_calculate_gain_nonlinear(name: str, gain: float) -> None:
    assert torchinit.calculate_gain(name) == gain


@pytest.mark.parametrize(
    ("param", "gain"), [(None, 1.4141428569978354), (0, math.sqrt(2)), (0.01, 1.4141428569978354),
                        (10, 0.14071950894605836)],
)  # fmt: skip
def test_calculate_gain_leaky_relu(param: float | None, gain: float) -> None:
    assert torchinit.calculate_gain("leaky_relu", param) == gain


@pytest.mark.parametrize("param", [True, [1], {"a": "b"}])
def test_calculate_gain_leaky_relu_only_accepts_numbers(param: object) -> None:
    with pytest.raises(ValueError, match="leaky_relu's negative slope must be a number"):
        torchinit.calculate_gain("leaky_relu", param)  # type: ignore[arg-type]


def test_calculate_gain_only_accepts_valid_nonlinearities() -> None:
    rng = random.Random(123)
    for length in (2, 5, 25):
        name = "".join(rng.choice(string.ascii_lowercase) for _ in range(length))
        with pytest.raises(ValueError, match="nonlinearity must be one of"):
            torchinit.calculate_gain(name)


# --- errors below 2-d and zero-element tensors ----------------------------------------------------


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("shape", [(), (1,)])
def test_errors_on_inputs_smaller_than_2d(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        getattr(nn.init, name)(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"at least 2 dimensions; got shape=.*Pass fans=Fans\(fan_in, fan_out\)"):
        getattr(torchinit, name)(torch.zeros(shape))


def _warnings_of(call: Callable[[], object]) -> list[tuple[type[Warning], str, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [(w.category, str(w.message), w.filename) for w in caught]


@pytest.mark.parametrize("name", DROP_INS)
@pytest.mark.parametrize("shape", [(0, 1), (3, 0), (2, 0, 3), (0, 0)])
def test_zero_element_tensors_warn_as_torch_does(name: str, shape: tuple[int, ...]) -> None:
    # torch warns "Initializing zero-element tensors is a no-op" from kaiming_uniform_ and kaiming_normal_
    # (and from nothing else); the drop-ins say the same, pointing at the caller's line.
    ours = _warnings_of(lambda: getattr(torchinit, name)(torch.empty(shape)))
    if name.startswith("xavier") and shape == (0, 0):  # torch divides by fan_in + fan_out = 0; ours is a no-op
        with pytest.raises(ZeroDivisionError):
            getattr(nn.init, name)(torch.empty(shape))
        assert ours == []
        return
    # torch's own function: once torchinit.build has run, nn.init's fills are wrapped (build defers them), and
    # the wrapper shifts where torch's stacklevel=2 warning points
    theirs = _warnings_of(lambda: inspect.unwrap(getattr(nn.init, name))(torch.empty(shape)))
    assert ours == theirs
    assert bool(ours) == name.startswith("kaiming")
    for category, message, filename in ours:
        assert (category, message, filename) == (UserWarning, "Initializing zero-element tensors is a no-op", __file__)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_warning_on_zero_element_tensor(name: str) -> None:
    tensor = torch.empty(0, 1)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        assert getattr(torchinit, name)(tensor) is tensor


# --- distributions --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_"])
@pytest.mark.parametrize("dims", [2, 4])
@pytest.mark.parametrize("use_gain", [True, False])
def test_xavier(name: str, dims: int, use_gain: bool, seed: int) -> None:
    rng = random.Random(seed)
    shape = random_shape(rng, dims, 20, 25)
    gain = rng.uniform(0.1, 2) if use_gain else 1.0
    x = both(name, shape, seed, **({"gain": gain} if use_gain else {}))
    fan_in, fan_out = torch_fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    distribution = "uniform" if name == "xavier_uniform_" else "normal"
    assert_distribution(x, distribution, std)
    with pytest.raises(AssertionError):  # and the check has the power to see a wrong std (legacy vs Kaiming)
        assert_distribution(x, distribution, math.sqrt(6) * std)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
@pytest.mark.parametrize("dims", [2, 4])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("use_a", [True, False])
def test_kaiming(name: str, dims: int, mode: str, use_a: bool, seed: int) -> None:
    rng = random.Random(seed)
    shape = random_shape(rng, dims, 20, 25)
    a = rng.uniform(0.1, 2) if use_a else 0.0
    x = both(name, shape, seed, mode=mode, **({"a": a} if use_a else {}))
    fan_in, fan_out = torch_fans(shape)
    std = math.sqrt(2.0 / ((1 + a**2) * (fan_in if mode == "fan_in" else fan_out)))
    distribution = "uniform" if name == "kaiming_uniform_" else "normal"
    assert_distribution(x, distribution, std)
    with pytest.raises(AssertionError):
        assert_distribution(x, distribution, math.sqrt(6) * std)


def _assert_trunc_normal(x: torch.Tensor, mean: float, std: float, a: float, b: float) -> None:
    # torch's trunc_normal_ is N(mean, std) cut at absolute a, b: in our terms a truncated normal with
    # cut-offs (a - mean) / std, (b - mean) / std sigmas and std scaled by sd(Z).
    a0, b0 = (a - mean) / std, (b - mean) / std
    assert_distribution(x, "truncated_normal", std * truncated_normal_std(a0, b0), mean=mean, a=a0, b=b0)


def test_trunc_normal_generator() -> None:
    gen = torch.Generator().manual_seed(42)
    with_generator = torchinit.trunc_normal_(torch.empty(5), generator=gen)
    torch.manual_seed(42)
    assert torch.equal(with_generator, torchinit.trunc_normal_(torch.empty(5)))
    many = both("trunc_normal_", (5000,), 42, a=0.0, b=1.0)
    _assert_trunc_normal(many, 0.0, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("dims", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_normal_all_dtypes(dims: int, dtype: torch.dtype, seed: int) -> None:
    rng = random.Random(seed)
    shape = random_shape(rng, dims, 30, 50)
    mean = rng.uniform(-3, 3)
    std = rng.uniform(0.01, 1)
    a, b = rng.uniform(mean - 2 * std, mean), rng.uniform(mean, mean + 2 * std)
    gen = torch.Generator().manual_seed(seed)
    draws = [torchinit.trunc_normal_(torch.zeros(shape, dtype=dtype), mean=mean, std=std, a=a, b=b, generator=gen)]
    while sum(d.numel() for d in draws) < 200:  # a 1-d tensor of 30-50: several draws for the KS test
        draws.append(torchinit.trunc_normal_(torch.zeros(shape, dtype=dtype), mean, std, a, b, generator=gen))
    x = torch.cat([d.reshape(-1) for d in draws])
    lo, hi = torch.tensor(a, dtype=dtype).item(), torch.tensor(b, dtype=dtype).item()  # bounds at tensor precision
    assert x.min().item() >= lo and x.max().item() <= hi
    _assert_trunc_normal(x, mean, std, a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_trunc_normal_low_precision(dtype: torch.dtype, gen: torch.Generator) -> None:
    x = torchinit.trunc_normal_(torch.empty(10_000, dtype=dtype), mean=0.0, std=1.0, a=-2.0, b=2.0, generator=gen)
    assert x.min().item() >= -2.0 and x.max().item() <= 2.0
    _assert_trunc_normal(x, 0.0, 1.0, -2.0, 2.0)  # our KS judges each value over its rounding cell


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_trunc_normal_narrow_interval(dtype: torch.dtype, gen: torch.Generator) -> None:
    # torch leaves bf16 out (65 values in [2, 3] fail scipy's KS); ours compares rounding cells, so it stays in.
    x = torchinit.trunc_normal_(torch.empty(10_000, dtype=dtype), mean=0.0, std=1.0, a=2.0, b=3.0, generator=gen)
    assert x.min().item() >= 2.0 and x.max().item() <= 3.0
    _assert_trunc_normal(x, 0.0, 1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("dtype", "min_unique"),
    [(torch.float32, 5000), (torch.float64, 5000), (torch.float16, 3000), (torch.bfloat16, 1000)],
)
def test_trunc_normal_unique_values(dtype: torch.dtype, min_unique: int, gen: torch.Generator) -> None:
    x = torchinit.trunc_normal_(torch.empty(10_000, dtype=dtype), mean=0.0, std=1.0, a=-2.0, b=2.0, generator=gen)
    assert x.min().item() >= -2.0 and x.max().item() <= 2.0
    assert x.unique().numel() > min_unique
    assert bool(x.isfinite().all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_trunc_normal_no_boundary_values_small_std(dtype: torch.dtype, gen: torch.Generator) -> None:
    x = torchinit.trunc_normal_(torch.empty(10_000, dtype=dtype), mean=0.0, std=0.1, a=-2.0, b=2.0, generator=gen)
    assert int((x == -2.0).sum()) == 0 and int((x == 2.0).sum()) == 0


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (20, 2, 3, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("use_gain", [True, False])
def test_orthogonal(shape: tuple[int, ...], use_gain: bool, seed: int) -> None:
    gain = random.Random(seed).uniform(0.1, 2) if use_gain else 1.0
    x = both("orthogonal_", shape, seed, **({"gain": gain} if use_gain else {}))
    rows, cols = shape[0], math.prod(shape[1:])
    flat = x.reshape(rows, cols)
    gram = flat.T @ flat if rows > cols else flat @ flat.T
    # torch allows 1e-6; the float32 Gram of a gain-2 matrix rounds at 4 * 2^-23 = 5e-7 per term
    torch.testing.assert_close(gram, torch.eye(min(rows, cols)) * gain**2, atol=1e-6 * max(1.0, gain**2), rtol=0)
