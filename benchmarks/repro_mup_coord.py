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
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import torchinit
from torchinit.testing import CoordCheck, coord_check

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from mup_models import BASE, LM, MLP  # the very models tests/test_mup.py checks

LR, STEPS = 3e-4, 3
WIDTHS = (64, 128, 256, 512, 1024)


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
