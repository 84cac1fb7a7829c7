r"""The coordinate check: does each layer's update stay the same size as the model widens?

Under muP (Yang et al. 2021) the change of every activation after a few optimizer steps is independent of width;
under the standard parametrization with one learning rate it grows with width. `coord_check` builds the model at
several widths, takes a few steps on one fixed batch, and records for each chosen layer the std of its output's
change from init, $\operatorname{std}(h_t - h_0)$. The log-log slope of that against width is 0 for a
width-independent layer, 1 for one that grows linearly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchinit._types import InitError, check_int

Setup = Callable[[int], "tuple[nn.Module, torch.optim.Optimizer]"]
"""``width -> (model, optimizer)``: the model at that width, initialized, and the optimizer that trains it."""


@dataclass(frozen=True)
class CoordCheck:
    """What `coord_check` measured.

    Attributes:
        widths: the widths, ascending.
        layers: the module paths recorded (``""`` is the model's output).
        init: layer -> the std of its output at init, per width.
        change: layer -> per step (1 to ``steps``) -> the std of its output's change from init, per width.
    """

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    init: dict[str, tuple[float, ...]]
    change: dict[str, tuple[tuple[float, ...], ...]]

    @property
    def steps(self) -> int:
        """The number of optimizer steps taken at each width."""
        return len(next(iter(self.change.values()))) if self.change else 0

    def slope(self, layer: str, step: int | None = None) -> float:
        r"""The least-squares slope of $\log \operatorname{std}(h_t - h_0)$ against $\log \mathrm{width}$ for
        ``layer`` after ``step`` steps (default: the last): 0 when the change does not depend on width, 1 when it
        grows linearly with it. ``-inf`` or ``nan`` when a change is exactly 0."""
        values = self.change[self._known(layer)][(step or self.steps) - 1]
        xs = [math.log(w) for w in self.widths]
        ys = [math.log(v) if v > 0 else -math.inf for v in values]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)

    def _known(self, layer: str) -> str:
        if layer not in self.change:
            raise InitError(f"layer must be one of the recorded {list(self.layers)}; got layer={layer!r}.")
        return layer

    def __str__(self) -> str:
        rows = [("layer", *(f"w={w}" for w in self.widths), "slope")]
        for layer in self.layers:
            cells = (f"{v:.3g}" for v in self.change[layer][-1])
            rows.append((layer or "(output)", *cells, f"{self.slope(layer):+.2f}"))
        sizes = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"std of each layer's output change after {self.steps} step(s), by width; slope of log-log fit"]
        lines += ["  ".join(c.rjust(s) if i else c.ljust(s) for i, (c, s) in enumerate(zip(r, sizes, strict=True)))
                  for r in rows]  # fmt: skip
        return "\n".join(line.rstrip() for line in lines)

    def plot(self, path: str | None = None) -> Any:
        """One log-log panel per step: each layer's change std against width. Needs matplotlib
        (``pip install torchinit[plot]``); saved to ``path`` when given. Returns the figure."""
        try:
            import matplotlib

            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as error:
            raise InitError("CoordCheck.plot needs matplotlib: pip install torchinit[plot].") from error
        fig, axes = plt.subplots(1, self.steps, figsize=(4 * self.steps, 3.4), squeeze=False, sharey=True)
        for step, ax in enumerate(axes[0], start=1):
            for layer in self.layers:
                ax.plot(self.widths, self.change[layer][step - 1], marker="o", label=layer or "(output)")
            ax.set(xscale="log", yscale="log", xlabel="width", title=f"step {step}")
            ax.set_xticks(self.widths, [str(w) for w in self.widths])
        axes[0][0].set_ylabel("std of the change from init")
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def coord_check(
    setup: Setup,
    widths: Sequence[int],
    inputs: torch.Tensor | Sequence[torch.Tensor],
    loss: Callable[[Any], torch.Tensor],
    *,
    steps: int = 3,
    layers: Sequence[str] | None = None,
) -> CoordCheck:
    r"""Train the model a few steps at each width and record how much each layer's output moved.

    At each width, ``setup(width)`` gives the initialized model and its optimizer; the model's output on
    ``inputs`` (``model(*inputs)``) at each chosen layer is recorded at init, then after each of ``steps``
    optimizer steps on ``loss(model(*inputs))``; the result holds $\operatorname{std}(h_t - h_0)$ per layer,
    step and width. Outputs are recorded with gradients off and the model in eval mode (dropout off), the
    training steps in the mode ``setup`` left it in. A layer's output is its tensor, or the first tensor of a
    tuple, list or mapping (a Hugging Face output's ``logits``).

    Args:
        setup: ``width -> (model, optimizer)``.
        widths: at least two distinct positive widths.
        inputs: a tensor, or the positional arguments of the model's forward.
        loss: the model's output -> a scalar loss.
        steps: optimizer steps per width.
        layers: module paths to record, ``""`` for the model's output; default: every module with parameters of
            its own, and the output.

    Raises:
        InitError: bad widths, steps or layers (a path the model does not have), or ``setup`` not returning a
            model and an optimizer.

    Example:
        >>> def setup(width):
        ...     model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))
        ...     return model, torch.optim.SGD(model.parameters(), lr=0.01)
        >>> x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        >>> check = coord_check(setup, [16, 32], x, lambda out: out.square().mean(), steps=2)
        >>> check.layers, check.steps, check.widths
        (('0', '2', ''), 2, (16, 32))
    """
    given = list(widths) if isinstance(widths, Sequence) and not isinstance(widths, str) else [widths]
    sizes = sorted(set(given))
    if len(sizes) < 2 or not all(type(w) is int and w > 0 for w in sizes):
        raise InitError(f"widths must hold at least two distinct positive ints; got widths={given!r}.")
    check_int("steps", steps, minimum=1)
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    init: dict[str, list[float]] = {}
    change: dict[str, list[list[float]]] = {}
    chosen: tuple[str, ...] = ()
    for width in sizes:
        model, optimizer = _made(setup, width)
        chosen = _layers(model, layers)
        start = _record(model, chosen, args)
        for layer in chosen:
            init.setdefault(layer, []).append(_std(start[layer]))
            change.setdefault(layer, [[] for _ in range(steps)])
        for step in range(steps):
            optimizer.zero_grad()
            loss(model(*args)).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            now = _record(model, chosen, args)
            for layer in chosen:
                change[layer][step].append(_std(now[layer] - start[layer]))
    return CoordCheck(
        tuple(sizes),
        chosen,
        {k: tuple(v) for k, v in init.items()},
        {k: tuple(tuple(s) for s in v) for k, v in change.items()},
    )


def _made(setup: Setup, width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    made = setup(width)
    if not (
        isinstance(made, tuple)
        and len(made) == 2
        and isinstance(made[0], nn.Module)
        and isinstance(made[1], torch.optim.Optimizer)
    ):
        raise InitError(f"setup(width) must return (model, optimizer); setup({width}) returned {made!r:.80}.")
    return made


def _layers(model: nn.Module, layers: Sequence[str] | None) -> tuple[str, ...]:
    modules = dict(model.named_modules())
    if layers is None:
        return (*(path for path, m in modules.items() if path and any(True for _ in m.parameters(recurse=False))), "")
    missing = [path for path in layers if path not in modules]
    if missing or isinstance(layers, str):
        raise InitError(
            f"layers must be a list of the model's module paths ('' for its output); got {missing or layers!r}, "
            f"which it does not have (it has {', '.join(p for p in modules if p)})."
        )
    return tuple(layers)


def _record(model: nn.Module, layers: tuple[str, ...], args: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    """Each chosen module's output on ``args``, detached, in eval mode without gradients."""
    found: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[path].register_forward_hook(lambda _m, _i, out, path=path: found.__setitem__(path, _tensor(out)))
        for path in layers
    ]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    idle = [path for path in layers if path not in found]
    if idle:
        raise InitError(f"layers {idle!r} did not run in the model's forward pass: leave them out of layers=.")
    return found


def _tensor(out: Any) -> torch.Tensor:
    kind = type(out).__name__
    if isinstance(out, Mapping):
        out = out.get("logits", next(iter(out.values()), None))
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if not isinstance(out, torch.Tensor):
        raise InitError(f"coord_check records tensors; a layer returned a {kind} without one: leave it out of layers=.")
    return out.detach().double().clone()


def _std(tensor: torch.Tensor) -> float:
    return float(tensor.std(correction=0))
