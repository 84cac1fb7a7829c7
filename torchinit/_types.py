"""Public type aliases, the library's exception and warnings, and the argument checks every module shares."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any, Literal

from torch.nn import parameter as _parameter

FanMode = Literal["fan_in", "fan_out", "fan_avg"]
"""Which fan a variance-scaling rule divides by: ``fan_in``, ``fan_out`` or their mean ``fan_avg``."""

Distribution = Literal["normal", "uniform", "truncated_normal", "orthogonal"]
"""The shape of a random draw.

``normal``, ``uniform`` and ``truncated_normal`` (std-corrected, cut at $\\pm 2\\sigma$) are the
variance-scaling shapes: they are parametrized by an element std. ``orthogonal`` is a (semi-)orthogonal
matrix times a gain; it has no fan, so `torchinit.variance_scaling_` does not take it.
"""

FAN_MODES: tuple[FanMode, ...] = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS: tuple[Distribution, ...] = ("normal", "uniform", "truncated_normal", "orthogonal")
VARIANCE_DISTRIBUTIONS: tuple[Distribution, ...] = ("normal", "uniform", "truncated_normal")


class InitError(ValueError):
    """An argument, tensor or module that torchinit cannot initialize as asked.

    A subclass of `ValueError`, so code written against ``torch.nn.init`` keeps catching it.
    """


class UncoveredParameterWarning(UserWarning):
    """Some parameters have no rule and were left untouched (listed in the report)."""


class SchemeOverwrittenWarning(UserWarning):
    """Parameters a construction-time scheme wrote were overwritten afterwards by the model's own init code."""


class ShardedWithoutSeedWarning(UserWarning):
    """Sharded (DTensor / FSDP2) parameters drawn from torch's RNG: every rank draws whole tensors."""


def choice_error(subject: str, name: str, value: object, options: Iterable[str]) -> InitError:
    """Build the error for a value outside a fixed set of options, with a nearest-name hint."""
    options = list(options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return InitError(f"{subject} must be one of {', '.join(map(repr, options))}; got {name}={value!r}.{hint}")


def check_finite(name: str, value: object, *, minimum: float | None = None) -> float:
    """``value`` as a float, or an InitError naming ``name`` when it is not a finite real (>= ``minimum``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum):  # type: ignore[operator]
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise InitError(f"{name} must be a finite number{bound}; got {name}={value!r}.")
    return float(value)  # type: ignore[arg-type]


_LAZY: type = getattr(_parameter, "UninitializedTensorMixin")  # noqa: B009 (absent from torch's stubs)


def is_lazy(tensor: Any) -> bool:
    """Whether ``tensor`` is an uninitialized lazy parameter or buffer (no shape yet)."""
    return isinstance(tensor, _LAZY)
