"""The demo: activation std through deep plain ReLU stacks under torch's default and torchinit's rules."""

from __future__ import annotations

import math

import torch
from torch import nn

from torchinit._api.reinit import reinit

SCHEMES = ("legacy", "kaiming_relu", "lecun_normal", "xavier_uniform")
"""torch's default (bit for bit) and three torchinit schemes, all with true fans and zero biases."""


def _stack(kind: str, depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Linear(width, width) if kind == "mlp" else nn.Conv2d(width, width, 3, padding=1))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def activation_stds(kind: str, scheme: str, depth: int, width: int, seed: int) -> list[float]:
    """Post-ReLU std after each layer of a stack initialized by ``scheme``, for unit-normal input."""
    model = _stack(kind, depth, width)
    g = torch.Generator().manual_seed(seed)
    reinit(model, scheme, generator=g)
    x = torch.randn((256, width) if kind == "mlp" else (4, width, 32, 32), generator=g)
    stds = []
    with torch.no_grad():
        for m in model:
            x = m(x)
            if isinstance(m, nn.ReLU):
                stds.append(float(x.std()))
    return stds


def run(
    depth: int = 50, conv_depth: int = 20, width: int = 512, channels: int = 64, seed: int = 0
) -> dict[str, object]:
    """Measure both stacks under every rule; a JSON-ready dict."""
    result: dict[str, object] = {
        "mlp": {"layers": f"{depth} x Linear({width}, {width}) + ReLU", "std": {}},
        "conv": {"layers": f"{conv_depth} x Conv2d({channels}, {channels}, 3, padding=1) + ReLU, 32x32", "std": {}},
        "seed": seed,
    }
    for name in SCHEMES:
        result["mlp"]["std"][name] = activation_stds("mlp", name, depth, width, seed)  # type: ignore[index]
        result["conv"]["std"][name] = activation_stds("conv", name, conv_depth, channels, seed)  # type: ignore[index]
    return result


def _depths(n: int) -> list[int]:
    marks = {1, 2, 5, *range(10, n + 1, 10), n}
    return sorted(d for d in marks if d <= n)


def format_table(result: dict[str, object]) -> str:
    """The measured stds as a fixed-width table, one row per depth."""
    lines: list[str] = []
    for key in ("mlp", "conv"):
        block = result[key]
        assert isinstance(block, dict)
        stds: dict[str, list[float]] = block["std"]
        names = list(stds)
        lines.append(f"{block['layers']}: post-ReLU activation std by depth (unit-normal input)")
        lines.append("depth " + "".join(f"{n:>24}" for n in names))
        for d in _depths(len(next(iter(stds.values())))):
            lines.append(f"{d:>5} " + "".join(f"{stds[n][d - 1]:>24.4g}" for n in names))
        lines.append("")
    lines.append(
        "legacy = torch's default, U(+-1/sqrt(fan_in)) weights and biases: weight std 1/sqrt(3 fan_in), "
        f"{1 / math.sqrt(3) / math.sqrt(2):.3f}x the ReLU-preserving sqrt(2/fan_in)."
    )
    return "\n".join(lines)
