"""delta_orthogonal_ (Xiao et al. 2018): the kernel's structure, and the isometry it exists for.

The isometry checks are exact properties (float64 linear algebra), not statistics: every singular value of the
input-output Jacobian of a delta-orthogonal conv (stack) is the gain, to float64 rounding.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

import torchinit
from torchinit import InitError

ATOL = 1e-10  # float64: the QR's orthonormality is ~1e-15; the margin covers the Jacobian's assembly


def _jacobian_singular_values(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    j = jacobian(lambda inp: net(inp), x)
    out_numel = j.numel() // x.numel()
    return torch.linalg.svdvals(j.reshape(out_numel, x.numel()))


def _conv(dims: int, cin: int, cout: int, k: int, padding_mode: str = "circular", groups: int = 1) -> nn.Module:
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return conv(cin, cout, k, padding="same", padding_mode=padding_mode, bias=False, groups=groups).double()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # torch's copy, harmless
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(("cin", "cout"), [(3, 3), (3, 5)])
@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_one_layer_is_an_isometry(
    dims: int, cin: int, cout: int, k: int, padding_mode: str, gen: torch.Generator
) -> None:
    conv = _conv(dims, cin, cout, k, padding_mode)
    torchinit.delta_orthogonal_(conv.weight, generator=gen)
    x = torch.randn(1, cin, *[4] * dims, dtype=torch.float64, generator=gen)
    s = _jacobian_singular_values(conv, x)
    assert s.numel() == x.numel()
    assert torch.allclose(s, torch.ones_like(s), rtol=0, atol=ATOL), (s.min().item(), s.max().item())


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_singular_values_equal_the_gain(gain: float, gen: torch.Generator) -> None:
    conv = _conv(2, 4, 6, 3)
    torchinit.delta_orthogonal_(conv.weight, gain, generator=gen)
    s = _jacobian_singular_values(conv, torch.randn(1, 4, 5, 5, dtype=torch.float64, generator=gen))
    assert torch.allclose(s, torch.full_like(s, gain), rtol=0, atol=ATOL * gain)


def test_deep_stack_is_an_isometry(gen: torch.Generator) -> None:
    widths = [3, 3, 4, 4, 6, 6, 6, 8, 8, 8, 8, 8, 8]  # 12 layers, never narrowing
    layers = [_conv(2, a, b, 3) for a, b in itertools.pairwise(widths)]
    for layer in layers:
        torchinit.delta_orthogonal_(layer.weight, generator=gen)  # type: ignore[arg-type]
    net = nn.Sequential(*layers)
    s = _jacobian_singular_values(net, torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=gen))
    assert torch.allclose(s, torch.ones_like(s), rtol=0, atol=ATOL), (s.min().item(), s.max().item())


def test_grouped_is_an_isometry(gen: torch.Generator) -> None:
    conv = _conv(2, 4, 8, 3, groups=2)  # weight (8, 2, 3, 3): two (4 x 2) orthogonal blocks
    torchinit.delta_orthogonal_(conv.weight, generator=gen, groups=2)
    s = _jacobian_singular_values(conv, torch.randn(1, 4, 4, 4, dtype=torch.float64, generator=gen))
    assert torch.allclose(s, torch.ones_like(s), rtol=0, atol=ATOL)


@pytest.mark.parametrize("nonlinearity", ["relu", "linear"])
def test_kaiming_conv_is_not_an_isometry(nonlinearity: str, gen: torch.Generator) -> None:
    for depth in (1, 6):
        layers = [_conv(2, 4, 4, 3) for _ in range(depth)]
        for layer in layers:
            torchinit.kaiming_normal_(layer.weight, nonlinearity=nonlinearity, generator=gen)  # type: ignore[arg-type]
        s = _jacobian_singular_values(nn.Sequential(*layers), torch.randn(1, 4, 4, 4, dtype=torch.float64))
        assert not torch.allclose(s, torch.ones_like(s), rtol=0, atol=0.1)
        assert float(s.max() / s.min()) > 2  # the spectrum spreads (and widens with depth)


def test_structure(gen: torch.Generator) -> None:
    w = torchinit.delta_orthogonal_(torch.full((6, 4, 3, 5), 7.0, dtype=torch.float64), 1.5, generator=gen)
    centre = w[:, :, 1, 2]
    assert torch.allclose(centre.T @ centre, 2.25 * torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    w[:, :, 1, 2] = 0
    assert bool((w == 0).all())  # every other tap is zero


def test_even_kernel_centre_is_jaxs() -> None:
    w = torchinit.delta_orthogonal_(torch.empty(2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    assert torch.nonzero(w.abs().sum(dim=(0, 1))).tolist() == [[1, 1]]  # floor((4 - 1) / 2)


def test_draws_one_orthogonal_matrix_of_the_tap(seed: int) -> None:
    ours, reference = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    w = torchinit.delta_orthogonal_(torch.empty(8, 5, 3), 2.0, generator=ours)
    q = torchinit.orthogonal_(torch.empty(8, 5), 2.0, generator=reference)
    assert torch.equal(w[:, :, 1], q)
    assert torch.equal(ours.get_state(), reference.get_state())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_dtypes(dtype: torch.dtype, gen: torch.Generator) -> None:
    w = torchinit.delta_orthogonal_(torch.empty(16, 8, 3, 3, dtype=dtype), generator=gen)
    centre = w[:, :, 1, 1].double()
    eps = torch.finfo(dtype).eps
    assert w.dtype == dtype
    assert torch.allclose(centre.T @ centre, torch.eye(8, dtype=torch.float64), rtol=0, atol=16 * eps)


def test_parameter_meta_and_empty(gen: torch.Generator) -> None:
    conv = nn.Conv2d(3, 4, 3)
    out = torchinit.delta_orthogonal_(conv.weight, generator=gen)
    assert out is conv.weight and out.grad_fn is None and out.requires_grad
    meta = torch.empty(4, 3, 3, device="meta")
    assert torchinit.delta_orthogonal_(meta) is meta
    assert torchinit.delta_orthogonal_(torch.empty(0, 0, 3)).shape == (0, 0, 3)


def test_narrowing_layer_is_refused_naming_the_shape() -> None:
    w = torch.full((3, 5, 3, 3), 7.0)
    with pytest.raises(
        InitError, match=r"at least as many output as input channels: .* 3 x 5 .* got shape=\(3, 5, 3, 3\)"
    ):
        torchinit.delta_orthogonal_(w)
    assert bool((w == 7).all())  # nothing written
    with pytest.raises(InitError, match=r"per group \(groups=2\).* 2 x 3 .* got shape=\(4, 3, 3\)"):
        torchinit.delta_orthogonal_(torch.empty(4, 3, 3), groups=2)


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((4, 4), {}, r"at least 3 dimensions; got shape=\(4, 4\). Use orthogonal_ for a matrix"),
        ((4, 2, 3), {"groups": 3}, r"groups must be a positive integer dividing dim 0 \(size 4\); got groups=3"),
        ((4, 2, 3), {"groups": 0}, "groups must be a positive integer"),
        ((4, 2, 3), {"gain": -1.0}, "gain must be a finite number >= 0; got gain=-1.0"),
        ((4, 2, 3), {"gain": math.inf}, "gain must be a finite number"),
    ],
)
def test_errors(shape: tuple[int, ...], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InitError, match=match):
        torchinit.delta_orthogonal_(torch.empty(shape), **kwargs)  # type: ignore[arg-type]


def test_refuses_integer_tensors_and_foreign_generators() -> None:
    with pytest.raises(InitError, match="floating-point dtype"):
        torchinit.delta_orthogonal_(torch.zeros(4, 2, 3, dtype=torch.int64))
    with pytest.raises(InitError, match="generator must be a torch.Generator or None; got generator=3"):
        torchinit.delta_orthogonal_(torch.empty(4, 2, 3), generator=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [None, 3])
def test_a_scheme_makes_a_conv_stack_an_isometry(seed: int | None) -> None:
    # Scheme(distribution="orthogonal", delta=True): every conv weight delta-orthogonal, from reinit (keyed too);
    # the stack's input-output Jacobian has every singular value 1. Plain orthogonal kernels do not.
    def stack() -> nn.Sequential:
        return nn.Sequential(
            *(nn.Conv1d(4, 4, 3, padding="same", padding_mode="circular", bias=False) for _ in range(4))
        )

    def spectrum(model: nn.Module) -> torch.Tensor:
        x = torch.randn(1, 4, 8, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(model.double(), x).reshape(32, 32)
        return torch.linalg.svdvals(jac)

    delta = stack()
    report = torchinit.reinit(delta, torchinit.Scheme(distribution="orthogonal", scale=1.0, delta=True), seed=seed)
    assert report["0.weight"].rule.startswith("delta_orthogonal(gain=1)")
    # drawn in float32: each layer's columns are orthonormal to a few float32 ulps, 4 layers compound them
    float32_bound = 4 * 4 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(spectrum(delta), torch.ones(32, dtype=torch.float64), atol=float32_bound, rtol=0)
    plain = stack()
    torchinit.reinit(plain, torchinit.Scheme(distribution="orthogonal", scale=1.0), seed=seed)
    assert float(spectrum(plain).max() - spectrum(plain).min()) > 0.5


def test_a_delta_scheme_refuses_a_narrowing_conv_before_any_write() -> None:
    model = nn.Sequential(nn.Conv2d(8, 4, 3))
    before = model[0].weight.detach().clone()
    with pytest.raises(torchinit.InitError, match=r"0.weight .* at least as many output as input channels"):
        torchinit.reinit(model, torchinit.Scheme(distribution="orthogonal", delta=True))
    assert torch.equal(model[0].weight, before)
    with pytest.raises(torchinit.InitError, match="delta=True .* needs distribution='orthogonal'"):
        torchinit.Scheme(delta=True)
