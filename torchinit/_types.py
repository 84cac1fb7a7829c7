"""Public type aliases and the library's exception."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Literal

from torch.nn import parameter as _parameter

FanMode = Literal["fan_in", "fan_out", "fan_avg"]
"""Which fan a variance-scaling rule divides by: ``fan_in``, ``fan_out`` or their mean ``fan_avg``."""

Distribution = Literal["normal", "uniform", "truncated_normal"]
"""Shape of the distribution drawn by `torchinit.variance_scaling_`."""

FAN_MODES: tuple[FanMode, ...] = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS: tuple[Distribution, ...] = ("normal", "uniform", "truncated_normal")


class InitError(ValueError):
    """An argument, tensor or module that torchinit cannot initialize as asked.

    A subclass of `ValueError`, so code written against ``torch.nn.init`` keeps catching it.
    """


def choice_error(subject: str, name: str, value: object, options: Iterable[str]) -> InitError:
    """Build the error for a value outside a fixed set of options, with a nearest-name hint."""
    options = list(options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return InitError(f"{subject} must be one of {', '.join(map(repr, options))}; got {name}={value!r}.{hint}")


_LAZY: type = getattr(_parameter, "UninitializedTensorMixin")  # noqa: B009 (absent from torch's stubs)


def is_lazy(tensor: Any) -> bool:
    """Whether ``tensor`` is an uninitialized lazy parameter or buffer (no shape yet)."""
    return isinstance(tensor, _LAZY)
