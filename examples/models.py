"""Small model factories for ``torchinit audit`` (and its tests): ``torchinit audit examples/models.py:small_cnn``."""

from __future__ import annotations

from torch import nn


def small_cnn() -> nn.Module:
    """A plain CNN with torch's default init; input (N, 3, 32, 32)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),   # depthwise
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def deep_mlp(depth: int = 20, width: int = 256) -> nn.Module:
    """A plain ReLU MLP with torch's default init; input (N, width)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def broken() -> nn.Module:
    """A factory that fails, for the CLI's error path."""
    raise RuntimeError("this factory always fails")
