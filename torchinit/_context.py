"""The construction context: this thread's stack of schemes that layers being constructed should use.

`torchinit.default_scheme` pushes a scheme, `torchinit.build` pushes "skip" (``scheme=None``: no draws
at all; the scheme runs once the model is built). Other threads see an empty stack.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

    from torchinit._registry import BaseScheme


@dataclass
class Context:
    """One entry of the stack: the scheme (None: skip every default draw) and its generator."""

    scheme: BaseScheme | None
    generator: torch.Generator | None = None
    pending: dict[int, torch.Tensor] = field(default_factory=dict)  # skipped parameters, by id
    written: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # (parameter, its version after the write)
    fills: list[tuple[torch.Tensor, Any, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    deferrer: Any = None  # build's mode that defers the model's own fills (see torchinit._construct)

    def mark(self, module: nn.Module) -> None:
        """Remember ``module``'s own parameters as skipped (build checks the scheme writes them all)."""
        for param in module._parameters.values():
            if param is not None:
                self.pending[id(param)] = param


_local = threading.local()


def _stack() -> list[Context]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    stack: list[Context] = _local.stack
    return stack


def current() -> Context | None:
    """This thread's innermost construction context, if any."""
    stack = _stack()
    return stack[-1] if stack else None


@contextlib.contextmanager
def pushed(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` this thread's innermost context for the block."""
    stack = _stack()
    stack.append(ctx)
    try:
        yield ctx
    finally:
        stack.pop()
