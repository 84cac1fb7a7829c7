"""Per-module-type rule registries, looked up along the MRO (used for fans and for roles)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from torch import nn

from torchinit._types import InitError

R = TypeVar("R")


class TypeRules(Generic[R]):
    """Rules keyed by module type; the most derived registered class's rule is asked first and a
    None answer falls through to the rules of its base classes."""

    def __init__(self) -> None:
        self._rules: dict[type, Callable[[Any, str], R | None]] = {}
        self._chain = functools.cache(self._compute)
        self.version = 0  # bumped by every registration

    def _compute(self, cls: type) -> tuple[Callable[[Any, str], R | None], ...]:
        return tuple(self._rules[c] for c in cls.__mro__ if c in self._rules)

    def register(self, module_type: type[nn.Module], rule: Callable[[Any, str], R | None]) -> None:
        """Add (or replace) the rule of ``module_type``."""
        if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
            raise InitError(f"module_type must be an nn.Module subclass; got module_type={module_type!r}.")
        if not callable(rule):
            raise InitError(f"rule must be callable as rule(module, name); got rule={rule!r}.")
        self._rules[module_type] = rule
        self._chain.cache_clear()
        self.version += 1

    def first(self, module: nn.Module, name: str) -> R | None:
        """The first non-None answer for ``module``'s parameter ``name``."""
        for rule in self._chain(type(module)):  # type: ignore[arg-type]
            answer = rule(module, name)
            if answer is not None:
                return answer
        return None
