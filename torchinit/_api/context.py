"""The construction context: the stack of schemes that layers being constructed should use.

`torchinit.default_scheme` pushes a scheme, `torchinit.build` pushes "skip" (``scheme=None``: no draws
at all; the scheme runs once the model is built). The stack is a `contextvars.ContextVar`: each thread,
and each asyncio task, sees its own (a new thread starts with an empty stack; a task starts from a copy
of its creator's).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

    from torchinit._schemes.registry import BaseScheme


@dataclass
class Context:
    """One entry of the stack: the scheme (None: skip every default draw) and its generator."""

    scheme: BaseScheme | None
    generator: torch.Generator | None = None
    pending: dict[int, torch.Tensor] = field(default_factory=dict)  # skipped parameters, by id
    written: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # (parameter, its version after the write)
    fills: list[tuple[torch.Tensor, Any, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    deferrer: Any = None  # build's mode that defers the model's own fills (see torchinit._api.construct)

    def mark(self, module: nn.Module) -> None:
        """Remember ``module``'s own parameters as skipped (build checks the scheme writes them all)."""
        for param in module._parameters.values():
            if param is not None:
                self.pending[id(param)] = param


_STACK: contextvars.ContextVar[tuple[Context, ...]] = contextvars.ContextVar("torchinit_contexts", default=())


def current() -> Context | None:
    """The innermost construction context of this thread or task, if any."""
    stack = _STACK.get()
    return stack[-1] if stack else None


@contextlib.contextmanager
def pushed(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` the innermost context of this thread or task for the block."""
    token = _STACK.set((*_STACK.get(), ctx))
    try:
        yield ctx
    finally:
        _STACK.reset(token)
