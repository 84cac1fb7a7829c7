"""He et al. (2015) at small scale: a 30-layer plain ReLU MLP trained with SGD from different inits.

A synthetic task generated in code: 10-class labels from a random 2-layer teacher on 64-d Gaussian
inputs. Same data, same student architecture (30 x Linear(128, 128) + ReLU, no normalization), same
optimizer and seed for every scheme; only the init differs. Prints losses and accuracies, writes
the loss curves. About two minutes on the 2-core CPU.

    python benchmarks/repro_deep_plain.py --plot docs/img/deep_plain.png > docs/reproductions/deep_plain.txt
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import torchinit

SCHEMES = ("legacy", "xavier_uniform", "kaiming_relu", "lsuv")


def task(seed: int = 0, n: int = 8192) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    teacher_1, teacher_2 = torch.randn(64, 128, generator=g) / 8, torch.randn(128, 10, generator=g) / 11
    x = torch.randn(n + 2048, 64, generator=g)
    y = (torch.relu(x @ teacher_1) @ teacher_2).argmax(1)
    return x[:n], y[:n], x[n:], y[n:]


def student(depth: int = 30, width: int = 128) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(64, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def train(scheme: str, steps: int, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    model = student()
    if scheme == "lsuv":
        torchinit.reinit(model, "lsuv", data=x[:512], generator=torch.Generator().manual_seed(seed))
    else:
        torchinit.reinit(model, scheme, generator=torch.Generator().manual_seed(seed)) if scheme != "legacy" else None
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (256,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    train.model = model  # type: ignore[attr-defined]
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--plot", metavar="FILE.png")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x, y, x_test, y_test = task()
    print(f"30-layer plain ReLU MLP (width 128), SGD lr 0.02 momentum 0.9, batch 256, {args.steps} steps")
    print(f"chance loss ln(10) = {torch.log(torch.tensor(10.0)):.3f}\n")
    curves = {}
    print(f"{'scheme':<16}{'loss@100':>10}{'loss@500':>10}{'final loss':>12}{'test acc':>10}{'seconds':>9}")
    for scheme in SCHEMES:
        start = time.perf_counter()
        losses = train(scheme, args.steps, x, y)
        model: nn.Module = train.model  # type: ignore[attr-defined]
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        smooth = [sum(losses[max(0, i - 49) : i + 1]) / len(losses[max(0, i - 49) : i + 1]) for i in range(len(losses))]
        curves[scheme] = smooth
        print(f"{scheme:<16}{smooth[99]:>10.3f}{smooth[min(499, len(smooth) - 1)]:>10.3f}{smooth[-1]:>12.3f}"
              f"{accuracy:>10.3f}{time.perf_counter() - start:>9.1f}")  # fmt: skip
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        for scheme, curve in curves.items():
            ax.plot(curve, label=scheme)
        ax.axhline(float(torch.log(torch.tensor(10.0))), color="grey", linestyle=":", label="chance")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("training loss (50-step mean)")
        ax.set_title("30-layer plain ReLU MLP: the init decides whether it trains", fontsize=10)
        ax.legend()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
