"""reinit with variance-scaling schemes: formulas with true fans, variance preservation, the walk's guarantees."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from torch import nn

import torchinit
from torchinit import Scheme, reinit
from torchinit._maths.distributions import two_sided_z
from torchinit.testing import MIN_SAMPLES, assert_distribution, assert_std
from torchinit.testing import strategies as tst

SCHEMES: dict[str, Scheme] = {
    name: torchinit.get_scheme(name)  # type: ignore[misc]
    for name in ("kaiming_relu", "kaiming_relu_uniform", "kaiming_relu_fan_out", "lecun_normal", "xavier_normal")
}
SCHEMES["kaiming_gelu_truncated_fan_avg"] = Scheme.kaiming("gelu", distribution="truncated_normal", mode="fan_avg")


def expected_std(scheme: Scheme, module: nn.Module, path: str) -> float:
    fans = torchinit.fans_of(module, path)
    return math.sqrt(scheme.scale / fans.fan(scheme.mode))


def assert_orthogonal_blocks(param: torch.Tensor, chunks: int, gain: float) -> None:
    for block in param.detach().double().chunk(chunks):
        flat = block.reshape(block.shape[0], -1)
        small = flat if flat.shape[0] <= flat.shape[1] else flat.T
        eye = torch.eye(small.shape[0], dtype=torch.float64) * gain**2
        torch.testing.assert_close(small @ small.T, eye, rtol=0, atol=1e-5 * max(1.0, gain**2))


@pytest.mark.parametrize("scheme_name", sorted(SCHEMES))
@settings(max_examples=25)
@given(spec=tst.layers(), seed=tst.seeds())
def test_every_tensor_follows_its_formula(scheme_name: str, spec: tst.LayerSpec, seed: int) -> None:
    """Exact: each report std is the formula with true fans. Statistical: the draws, divided by that std,
    pooled over the layer's tensors (and repeated draws for small layers), have the scheme's shape."""
    scheme = SCHEMES[scheme_name]
    module = spec.build()
    pooled: dict[str, list[torch.Tensor]] = {}
    for repeat in range(100):
        report = reinit(module, scheme, generator=torch.Generator().manual_seed(seed + repeat), strict=True)
        for entry in report:
            param = module.get_parameter(entry.path)
            if entry.role == "dense":
                assert entry.std == pytest.approx(expected_std(scheme, module, entry.path), rel=1e-12)
                assert entry.fans == torchinit.fans_of(module, entry.path)
            if entry.role == "recurrent":
                assert_orthogonal_blocks(param, entry.fans.chunks, 1.0)  # type: ignore[union-attr]
            elif entry.distribution in ("normal", "uniform", "truncated_normal"):
                assert entry.std is not None and entry.std > 0
                pooled.setdefault(entry.distribution, []).append(param.detach().reshape(-1) / entry.std)
            elif entry.role in ("bias", "norm_bias"):
                assert bool((param == 0).all()), entry.path
        if all(sum(x.numel() for x in xs) >= 2000 for xs in pooled.values()):
            break
    for shape, parts in pooled.items():
        sample = torch.cat(parts)
        if sample.numel() < MIN_SAMPLES:  # a layer with only a few tiny bias_k/bias_v tokens
            continue
        label = f"{spec} {scheme_name} ({shape}, n={sample.numel()})"
        assert_std(sample, 1.0, kurtosis=shape, msg=label)
        assert_distribution(sample, shape, 1.0, msg=label)  # type: ignore[arg-type]
        with pytest.raises(AssertionError):  # the same check rejects torch's legacy ratio
            assert_std(sample, 1 / math.sqrt(6), kurtosis=shape)


@settings(max_examples=15)
@given(spec=tst.layers(), seed=tst.seeds())
def test_orthogonal_scheme(spec: tst.LayerSpec, seed: int) -> None:
    module = spec.build()
    report = reinit(module, Scheme.orthogonal(gain=2.0), generator=torch.Generator().manual_seed(seed))
    for entry in report:
        if entry.role == "dense":
            assert entry.distribution == "orthogonal"
            assert_orthogonal_blocks(module.get_parameter(entry.path), entry.fans.chunks, 2.0)  # type: ignore[union-attr]


# --- variance preservation ------------------------------------------------------------------------

# (layer, input shape): valid padding; transposed kernels divisible by their stride.
PRESERVING = [
    (lambda: nn.Linear(256, 128), (512, 256)),
    (lambda: nn.Conv2d(32, 64, 3), (8, 32, 16, 16)),
    (lambda: nn.Conv2d(32, 64, 3, stride=2), (8, 32, 17, 17)),
    (lambda: nn.Conv2d(64, 64, 3, groups=64), (8, 64, 16, 16)),
    (lambda: nn.Conv2d(32, 64, 3, dilation=2, groups=4), (8, 32, 16, 16)),
    (lambda: nn.Conv1d(16, 64, 5, stride=3), (16, 16, 200)),
    (lambda: nn.Conv3d(8, 32, 3), (4, 8, 10, 10, 10)),
    (lambda: nn.ConvTranspose2d(32, 64, 4, stride=2), (8, 32, 12, 12)),
    (lambda: nn.ConvTranspose2d(64, 64, 4, stride=2, groups=4), (8, 64, 12, 12)),
    (lambda: nn.ConvTranspose1d(32, 64, 6, stride=3), (16, 32, 60)),
]


def second_moment_test(layer: nn.Module, shape: tuple[int, ...], gen: torch.Generator) -> tuple[float, float]:
    """(E[out^2] estimate, allowed deviation at alpha=1e-6) for out = layer(relu(y)), y ~ N(0, 1).

    Given the input, output channels are independent (independent weight rows), so the mean over
    channels of each channel's mean square has a sampling variance estimated from those channels;
    the input's own fluctuation adds Var(4 relu(y)^2)/numel = 5/numel.
    """
    x = torch.relu(torch.randn(shape, generator=gen))
    with torch.no_grad():
        out = layer(x)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):  # crop the border, where fewer taps land
        crop = [d * (k - 1) for k, d in zip(layer.kernel_size, layer.dilation, strict=True)]
        out = out[(slice(None), slice(None), *[slice(c, out.shape[2 + i] - c) for i, c in enumerate(crop)])]
    per_channel = out.transpose(0, 1).reshape(out.shape[1], -1).square().mean(1)
    m = per_channel.numel()
    se = math.sqrt(float(per_channel.var()) / m + 5.0 / x.numel())
    return float(per_channel.mean()), two_sided_z(1e-6) * se


@pytest.mark.parametrize(("build", "shape"), PRESERVING)
def test_kaiming_relu_preserves_the_second_moment(build, shape, gen: torch.Generator) -> None:
    layer = build()
    reinit(layer, "kaiming_relu", generator=gen)
    moment, allowed = second_moment_test(layer, shape, gen)
    assert abs(moment - 1.0) <= allowed, (moment, allowed)
    # The same test rejects torch's default (with its bias zeroed): E[out^2] is about 1/6 there.
    reinit(layer, "legacy", generator=gen)
    torch.nn.init.zeros_(layer.bias)
    moment, allowed = second_moment_test(layer, shape, gen)
    assert abs(moment - 1.0) > allowed, (moment, allowed)


def _deep(kind: str, scheme: str, gen: torch.Generator) -> tuple[float, float]:
    if kind == "mlp":
        model = nn.Sequential(*[m for _ in range(50) for m in (nn.Linear(512, 512), nn.ReLU())])
        x = torch.randn(64, 512, generator=gen)
    else:
        model = nn.Sequential(*[m for _ in range(20) for m in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())])
        x = torch.randn(4, 64, 32, 32, generator=gen)
    reinit(model, scheme, generator=gen)
    with torch.no_grad():
        y = model(x)
    rms = float(y.square().mean().sqrt())
    input_dependent = float(y.std(dim=0).mean())  # what changes from one input to another
    return rms, input_dependent


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_deep_stacks_hold_under_kaiming_and_collapse_under_legacy(kind: str, gen: torch.Generator) -> None:
    rms, signal = _deep(kind, "kaiming_relu", gen)
    assert 0.5 <= rms <= 2.0
    assert signal > 0.1
    legacy_rms, legacy_signal = _deep(kind, "legacy", gen)
    assert legacy_rms < 0.05  # only bias noise is left...
    assert legacy_signal < 1e-3 * signal  # ...and the input no longer matters
