"""Actions: one concrete write into one tensor (a draw, a constant, an orthogonal block), and how to do it.

A plan is a list of actions, fully validated before the first one runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from torchinit._distributions import SQRT3
from torchinit._fans import Fans
from torchinit._initializers import orthogonal_, truncated_normal_

ActionKind = Literal["normal", "uniform", "truncated_normal", "orthogonal", "constant", "skip"]


@dataclass(frozen=True, slots=True)
class Action:
    """What to write into a tensor.

    ``param`` is the std (normal, truncated_normal), the bound (uniform), the gain (orthogonal) or
    the value (constant). ``chunk_values`` gives a constant per dim-0 block (an LSTM forget-gate
    bias); ``zero_row`` zeroes one row after the draw (an embedding's padding index).
    """

    kind: ActionKind
    param: float = 0.0
    chunks: int = 1
    chunk_values: tuple[float, ...] | None = None
    zero_row: int | None = None
    fans: Fans | None = None
    formula: str = ""
    reason: str = ""

    @property
    def std(self) -> float | None:
        """The element std this action gives (None for orthogonal and skips)."""
        if self.kind in ("normal", "truncated_normal"):
            return self.param
        if self.kind == "uniform":
            return self.param / SQRT3
        if self.kind == "constant":
            return 0.0
        return None

    @property
    def draws(self) -> bool:
        """Whether the action consumes random numbers."""
        return self.kind in ("normal", "uniform", "truncated_normal", "orthogonal")

    def describe(self) -> str:
        """A short human description: ``normal(std=0.0625)``, ``orthogonal(gain=1) x4``."""
        if self.kind == "constant":
            if self.chunk_values is not None:
                return "constant(" + ", ".join(f"{v:g}" for v in self.chunk_values) + " per chunk)"
            return f"constant({self.param:g})"
        if self.kind == "skip":
            return f"skip ({self.reason})" if self.reason else "skip"
        name = {"normal": "std", "truncated_normal": "std", "uniform": "bound", "orthogonal": "gain"}[self.kind]
        text = f"{self.kind}({name}={self.param:.6g})"
        if self.chunks > 1:
            text += f" x{self.chunks} chunks"
        if self.zero_row is not None:
            text += f", row {self.zero_row} zero"
        return text


def write(action: Action, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """Carry out ``action`` on ``tensor`` in place; the caller holds ``torch.no_grad()``.

    A tensor that is not contiguous (channels_last, a strided view) is filled through a contiguous
    temporary, so its logical values do not depend on its memory format (torch's Conv does the same).
    """
    if action.kind == "skip" or tensor.numel() == 0:
        return
    target = tensor if tensor.is_contiguous() else torch.empty_like(tensor, memory_format=torch.contiguous_format)
    _fill(action, target, generator)
    if action.zero_row is not None:
        target[action.zero_row].fill_(0)
    if target is not tensor:
        tensor.copy_(target)


def _fill(action: Action, t: torch.Tensor, generator: torch.Generator | None) -> None:
    kind, p = action.kind, action.param
    if kind == "normal":
        t.normal_(0.0, p, generator=generator)
    elif kind == "uniform":
        t.uniform_(-p, p, generator=generator)
    elif kind == "truncated_normal":
        truncated_normal_(t, p, generator=generator)
    elif kind == "orthogonal":
        orthogonal_(t, p, generator=generator, chunks=action.chunks)
    elif action.chunk_values is not None:
        for block, value in zip(t.chunk(len(action.chunk_values)), action.chunk_values, strict=True):
            block.fill_(value)
    else:
        t.fill_(p)


def variance_action(distribution: str, std: float, fans: Fans | None, formula: str) -> Action:
    """The draw with the given element std in one of the variance-scaling shapes."""
    if distribution == "uniform":
        return Action("uniform", SQRT3 * std, fans=fans, formula=formula)
    if distribution == "truncated_normal":
        return Action("truncated_normal", std, fans=fans, formula=formula)
    return Action("normal", std, fans=fans, formula=formula)


def torch_fan_in(weight: torch.Tensor) -> int:
    """torch's shape-based fan_in, ``size(1) * prod(size[2:])``, without raising on empty tensors."""
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() >= 2 else 0
