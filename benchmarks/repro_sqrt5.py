"""Reproduce the numbers behind the sqrt(5) story (REFERENCE.md section 1).

python benchmarks/repro_sqrt5.py > docs/reproductions/sqrt5.txt
"""

from __future__ import annotations

import math

import torch
from torch import nn

import torchinit

SCHEMES = ("legacy", "kaiming_relu", "lecun_normal", "xavier_uniform")


def stack(kind: str, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(512, 512) if kind == "mlp" else nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def post_relu(kind: str, depth: int, scheme: str, seed: int = 0) -> tuple[float, float]:
    """(std of the last post-ReLU activation, its input-dependent part: std over the batch, averaged)."""
    torch.manual_seed(seed)
    model = stack(kind, depth)
    torch.manual_seed(seed)
    torchinit.reinit(model, scheme)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn((256, 512) if kind == "mlp" else (4, 64, 32, 32), generator=g)
    with torch.no_grad():
        y = model(x)
    return float(y.std()), float(y.std(dim=0).mean())


def main() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 8, 5)
    print("torch's layer default: kaiming_uniform_(w, a=sqrt(5))")
    print(f"  gain(leaky_relu, sqrt 5) = {torchinit.calculate_gain('leaky_relu', math.sqrt(5)):.6f} = sqrt(1/3)")
    measured, theory, relu = conv.weight.std().item(), 1 / math.sqrt(75), math.sqrt(2 / 25)
    print(f"  Conv2d(1, 8, 5) weight std: measured {measured:.4f}, theory 1/sqrt(3*25) = {theory:.4f}; "
          f"ReLU needs sqrt(2/25) = {relu:.4f} (ratio {theory / relu:.3f})")  # fmt: skip

    print("\nOne Conv2d(1, 8, 5) on N(0, 1) input (64 x 1 x 64 x 64), pre-activation std:")
    x = torch.randn(64, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    for scheme in SCHEMES:
        layer = nn.Conv2d(1, 8, 5)
        torch.manual_seed(0)
        torchinit.reinit(layer, scheme)
        with torch.no_grad():
            print(f"  {scheme:<16} weight std {layer.weight.std().item():.4f}   output std {layer(x).std().item():.3f}")

    for kind, depths in (("mlp", (10, 50)), ("conv", (20,))):
        label = "Linear(512, 512) + ReLU" if kind == "mlp" else "Conv2d(64, 64, 3, padding=1) + ReLU on 32x32"
        for depth in depths:
            print(f"\n{depth} x {label}, unit-normal input: last post-ReLU std (input-dependent part)")
            for scheme in SCHEMES:
                std, signal = post_relu(kind, depth, scheme)
                print(f"  {scheme:<16} {std:.3g}   ({signal:.3g})")


if __name__ == "__main__":
    main()
