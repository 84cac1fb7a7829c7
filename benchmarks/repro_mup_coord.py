"""The coordinate check of muP (Yang et al. 2021) on an MLP and a pre-LN Transformer LM, against the standard
parametrization with one learning rate: tests/test_mup.py's setting, at widths 64 to 1024.

Each model is built at each width; muP is ``reinit(model, recipes.mup(base))`` with base width 64 and
``torch.optim.Adam(report.param_groups(lr))``; the standard parametrization (SP) is ``lecun_normal`` with one
``Adam(model.parameters(), lr)`` (and the LM's attention scaled 1/sqrt(head_dim), muP's sqrt(16)/head_dim).
Three Adam steps at lr 3e-4 on one fixed batch; the tables give the std of each recorded output's change from
init (``torchinit.testing.coord_check``) and the log-log slope against width. A few seconds on the 2-core CPU.

    python benchmarks/repro_mup_coord.py --plot docs/img/mup_coord.png > docs/reproductions/mup_coord.txt
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import torchinit
from torchinit.testing import CoordCheck, coord_check

BASE, LR, STEPS = 64, 3e-4, 3
WIDTHS = (64, 128, 256, 512, 1024)


class MLP(nn.Module):
    def __init__(self, width: int, d_in: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.fc_1, self.fc_2, self.act = nn.Linear(d_in, width), nn.Linear(width, width), nn.ReLU()
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc_2(F.relu(self.fc_1(x)))))  # type: ignore[no-any-return]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, scaling: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.scaling = heads, width // heads, scaling
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))  # type: ignore[no-any-return]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, scaling: float) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(width), Attention(width, heads, scaling)
        self.ln_2, self.fc, self.out = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))  # type: ignore[no-any-return]


class LM(nn.Module):
    """Pre-LN, 2 blocks, 4 heads (head_dim grows with width), untied head; muP's attention 1/head_dim."""

    def __init__(self, width: int, mu: bool = True, vocab: int = 64, context: int = 16) -> None:
        super().__init__()
        head_dim = width // 4
        scaling = (BASE // 4) ** 0.5 / head_dim if mu else head_dim**-0.5
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, 4, scaling) for _ in range(2))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # type: ignore[no-any-return]


def run(build: Callable[[int, bool], nn.Module], mu: bool, inputs: torch.Tensor,
        loss: Callable[[torch.Tensor], torch.Tensor], layers: list[str]) -> CoordCheck:  # fmt: skip
    def setup(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = build(width, mu)
        generator = torch.Generator().manual_seed(width)
        if mu:
            report = torchinit.reinit(model, torchinit.recipes.mup(lambda: build(BASE, True)), generator=generator)
            return model, torch.optim.Adam(report.param_groups(LR))
        torchinit.reinit(model, "lecun_normal", generator=generator)
        return model, torch.optim.Adam(model.parameters(), lr=LR)

    return coord_check(setup, WIDTHS, inputs, loss, steps=STEPS, layers=layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the figure here (needs matplotlib)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    tokens, targets = torch.randint(0, 64, (4, 16), generator=g), torch.randint(0, 64, (4, 16), generator=g)
    checks = {}
    for mu in (True, False):
        name = "muP" if mu else "SP"
        checks["MLP", name] = run(lambda w, _: MLP(w), mu, x, lambda o: F.cross_entropy(o, y), ["act", ""])
        checks["LM", name] = run(
            lambda w, m: LM(w, mu=m), mu, tokens,
            lambda o: F.cross_entropy(o.flatten(0, 1), targets.flatten()), ["blocks.1", ""],
        )  # fmt: skip
    print(f"Adam, lr {LR:g} at the base width {BASE}, {STEPS} steps on one batch; torch {torch.__version__}")
    for (model, name), check in checks.items():
        print(f"\n{model}, {name}: {check}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True, sharey="row")  # one scale per model
        for row, model in enumerate(("MLP", "LM")):
            for col, name in enumerate(("muP", "SP")):
                check, ax = checks[model, name], axes[row][col]
                for layer in check.layers:
                    label = f"{layer or 'logits'} (slope {check.slope(layer):+.2f})"
                    ax.plot(check.widths, check.change[layer][-1], marker="o", label=label)
                ax.set(xscale="log", yscale="log", title=f"{model}, {name}")
                ax.set_xticks(check.widths, [str(w) for w in check.widths])
                ax.legend(fontsize="small")
        for ax in axes[1]:
            ax.set_xlabel("width")
        for ax in axes[:, 0]:
            ax.set_ylabel(f"std of the change after {STEPS} steps")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
