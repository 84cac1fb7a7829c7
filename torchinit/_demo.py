"""The demo: activation std through deep plain ReLU stacks under torch's default and torchinit's rules."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from torchinit._fans import fans_of
from torchinit._initializers import kaiming_normal_, lecun_normal_, xavier_uniform_

Rule = Callable[[nn.Module, torch.Generator], None]


def _zero_bias(module: nn.Module) -> None:
    bias = getattr(module, "bias", None)
    if bias is not None:
        nn.init.zeros_(bias)


def _kaiming(m: Any, g: torch.Generator) -> None:
    kaiming_normal_(m.weight, nonlinearity="relu", fans=fans_of(m, "weight"), generator=g)
    _zero_bias(m)


def _lecun(m: Any, g: torch.Generator) -> None:
    lecun_normal_(m.weight, fans=fans_of(m, "weight"), generator=g)
    _zero_bias(m)


def _xavier(m: Any, g: torch.Generator) -> None:
    xavier_uniform_(m.weight, fans=fans_of(m, "weight"), generator=g)
    _zero_bias(m)


RULES: dict[str, Rule | None] = {
    "torch default": None,  # whatever the constructor drew: kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in)) bias
    "kaiming_normal (relu)": _kaiming,
    "lecun_normal": _lecun,
    "xavier_uniform": _xavier,
}


def _stack(kind: str, depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers.append(nn.Linear(width, width) if kind == "mlp" else nn.Conv2d(width, width, 3, padding=1))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def activation_stds(kind: str, rule: Rule | None, depth: int, width: int, seed: int) -> list[float]:
    """Post-ReLU std after each layer of a fresh stack, for unit-normal input."""
    torch.manual_seed(seed)
    model = _stack(kind, depth, width)
    g = torch.Generator().manual_seed(seed)
    if rule is not None:
        for m in model:
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                rule(m, g)
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
    for name, rule in RULES.items():
        result["mlp"]["std"][name] = activation_stds("mlp", rule, depth, width, seed)  # type: ignore[index]
        result["conv"]["std"][name] = activation_stds("conv", rule, conv_depth, channels, seed)  # type: ignore[index]
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
        "torch's default draws U(+-1/sqrt(fan_in)): std 1/sqrt(3 fan_in), "
        f"{1 / math.sqrt(3) / math.sqrt(2):.3f}x the ReLU-preserving sqrt(2/fan_in)."
    )
    return "\n".join(lines)


def main(json_output: bool, depth: int, seed: int) -> None:
    """Print the demo table (or JSON)."""
    result = run(depth=depth, seed=seed)
    print(json.dumps(result, indent=1) if json_output else format_table(result))
