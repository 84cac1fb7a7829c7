"""Public type aliases, the library's exception and warnings, and the argument checks every module shares."""

from __future__ import annotations

import contextlib
import difflib
import math
import numbers
import operator
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.nn import parameter as _parameter

FanMode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
"""Which fan a variance-scaling rule divides by: ``fan_in``, ``fan_out``, their mean ``fan_avg`` or their geometric
mean ``fan_geo_avg`` ($\\sqrt{\\mathrm{fan\\_in}\\cdot\\mathrm{fan\\_out}}$, JAX's mode of that name)."""

Distribution = Literal["normal", "uniform", "truncated_normal", "orthogonal"]
"""The shape of a random draw.

``normal``, ``uniform`` and ``truncated_normal`` (std-corrected, cut at $\\pm 2\\sigma$) are the
variance-scaling shapes: they are parametrized by an element std. ``orthogonal`` is a (semi-)orthogonal
matrix times a gain; it has no fan, so `torchinit.variance_scaling_` does not take it.
"""

FAN_MODES: tuple[FanMode, ...] = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS: tuple[Distribution, ...] = ("normal", "uniform", "truncated_normal", "orthogonal")
VARIANCE_DISTRIBUTIONS: tuple[Distribution, ...] = ("normal", "uniform", "truncated_normal")


class InitError(ValueError):
    """An argument, tensor or module that torchinit cannot initialize as asked.

    A subclass of `ValueError`, so code written against ``torch.nn.init`` keeps catching it.
    """


class InitTypeError(InitError, TypeError):
    """An argument of the wrong type: an `InitError` that is also a `TypeError` (``threads="4"``)."""


class UncoveredParameterWarning(UserWarning):
    """Some parameters have no rule and were left untouched (listed in the report)."""


class RecipeMismatchWarning(UserWarning):
    """A recipe was applied (``.anywhere()``) to a model of another family than the one it was written for."""


class TiedTableWarning(UserWarning):
    """An input embedding tied to the output layer is drawn by a rule that makes the logits far too large."""


class SchemeOverwrittenWarning(UserWarning):
    """Parameters a construction-time scheme wrote were overwritten afterwards by the model's own init code."""


class ShardedWithoutSeedWarning(UserWarning):
    """Sharded (DTensor / FSDP2) parameters drawn from torch's RNG: every rank draws whole tensors."""


_OWN = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
"""torchinit's folder and torch's: the frames `warn_at_caller` walks past."""


def _internal(filename: str) -> bool:
    return filename.startswith(_OWN) or filename == contextlib.__file__


def warn_at_caller(warning: Warning) -> None:
    """Issue ``warning`` at the first frame outside torchinit, torch and ``contextlib``: the user's line that
    called ``reinit``/``build``, closed a ``default_scheme`` block or constructed the layer, however many
    frames of ours (and of torch's constructors) lie between, so ``-W error`` and filters by module see it."""
    frame = sys._getframe(1)
    level = 2  # warnings.warn's frame count from here: 1 is this function, 2 its caller
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(warning, stacklevel=level)


def choice_error(subject: str, name: str, value: object, options: Iterable[str]) -> InitError:
    """Build the error for a value outside a fixed set of options, with a nearest-name hint."""
    options = list(options)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1)
        if close:
            hint = f" Did you mean {close[0]!r}?"
    return InitError(f"{subject} must be one of {', '.join(map(repr, options))}; got {name}={value!r}.{hint}")


def shown(value: object) -> str:
    """``repr(value)`` for a message: a tensor or array as its type and shape, anything else cut at 80 characters."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (int, float)) and len(tuple(shape)) > 0:
        return f"{type(value).__name__} of shape {tuple(shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_real(name: str, value: object) -> int | float:
    """``value`` as a Python ``int`` (integer-valued types) or ``float``, or an InitError naming ``name``.

    Accepts what ``numbers.Real`` admits and its duck-typed kin: Python ints and floats, NumPy scalars and
    0-d arrays, 0-d torch tensors (through ``operator.index`` / ``float``), ``fractions.Fraction``; NumPy
    is never imported. Rejects bools (of any library), complex numbers, strings, ``None`` and tensors or
    arrays with dimensions. Finiteness is the caller's check.
    """
    if type(value) is int or type(value) is float:  # the common case, checked first
        return value
    dtype = str(getattr(value, "dtype", ""))
    if isinstance(value, bool) or dtype in ("bool", "torch.bool"):
        raise InitError(f"{name} must be a real number, not a bool; got {name}={value!r}.")
    if getattr(value, "ndim", 0) != 0:
        raise InitError(
            f"{name} must be a single real number; got {name}={shown(value)}. Pass one element (``t.item()``)."
        )
    if (isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)) or "complex" in dtype:
        raise InitError(f"{name} must be a real number, not a complex one; got {name}={value!r}.")
    if isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__"):
        raise InitError(f"{name} must be a real number; got {name}={shown(value)}.")
    if isinstance(value, numbers.Integral) or hasattr(type(value), "__index__"):
        try:
            return operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass  # a float tensor or array: its __index__ refuses
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise InitError(f"{name} must be a real number; got {name}={shown(value)} ({error}).") from None


def check_int(name: str, value: object, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` when it is an int (not a bool) >= ``minimum`` (None too, when ``optional``), else an error.

    The wrong type (a string, a float, a bool) is an `InitTypeError`; an int out of range an `InitError`.
    """
    if value is None and optional:
        return None
    names = {0: "a non-negative integer", 1: "a positive integer"}
    expected = names.get(minimum, f"an integer >= {minimum}") if minimum is not None else "an integer"
    expected += " or None" if optional else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InitTypeError(f"{name} must be {expected}; got {name}={shown(value)} ({type(value).__name__}).")
    if minimum is not None and value < minimum:
        raise InitError(f"{name} must be {expected}; got {name}={value!r}.")
    return value


def check_bool(name: str, value: object, *, optional: bool = False) -> bool | None:
    """``value`` when it is True or False (or None, when ``optional``), else an `InitTypeError`."""
    if isinstance(value, bool) or (value is None and optional):
        return value
    expected = "True, False or None" if optional else "True or False"
    raise InitTypeError(f"{name} must be {expected}; got {name}={shown(value)}.")


def check_finite(name: str, value: object, *, minimum: float | None = None) -> float:
    """``value`` as a float, or an InitError naming ``name`` when it is not a finite real (>= ``minimum``).

    Any real number type `as_real` accepts (NumPy scalars, 0-d tensors) passes; bools and strings do not.
    """
    bound = f" >= {minimum:g}" if minimum is not None else ""
    try:
        number = float(as_real(name, value))
    except InitError:
        raise InitError(f"{name} must be a finite number{bound}; got {name}={shown(value)}.") from None
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        raise InitError(f"{name} must be a finite number{bound}; got {name}={value!r}.")
    return number


def check_divisor(name: str, value: object, size: int) -> int:
    """``value`` as an int, or an InitError unless it is a positive integer dividing ``size`` (a tensor's dim 0)."""
    try:
        count = as_real(name, value)
    except InitError:
        count = 0
    if type(count) is not int or count < 1 or size % count:
        raise InitError(f"{name} must be a positive integer dividing dim 0 (size {size}); got {name}={value!r}.")
    return count


def check_generator(generator: object, device: torch.device | None = None) -> torch.Generator | None:
    """``generator`` when it is None or a ``torch.Generator`` that can draw on ``device``, else an InitError.

    torch's kernels need the generator on the tensor's device type (a CPU generator cannot fill a CUDA
    tensor); meta tensors draw nothing, so any generator passes for them.
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        hint = " Pass torch.Generator().manual_seed(seed)." if isinstance(generator, int) else ""
        raise InitError(
            f"generator must be a torch.Generator or None; got generator={shown(generator)} "
            f"({type(generator).__name__}).{hint}"
        )
    if device is not None and device.type != "meta" and generator.device.type != device.type:
        raise InitError(
            f"generator must be on the tensor's device type; got a generator on {generator.device} for a tensor "
            f"on {device}. Use torch.Generator(device={device.type!r}).manual_seed(seed)."
        )
    return generator


LAZY: type = getattr(_parameter, "UninitializedTensorMixin")  # noqa: B009 (absent from torch's stubs)
"""The class of torch's uninitialized (lazy) parameters and buffers."""


def is_lazy(tensor: Any) -> bool:
    """Whether ``tensor`` is an uninitialized lazy parameter or buffer (no shape yet)."""
    return isinstance(tensor, LAZY)
