"""Fans: how many scalars feed one output (fan_in) and how many outputs one input feeds (fan_out).

torch's helper reads fans off the weight's shape alone (``size(1) * prod(kernel)`` and
``size(0) * prod(kernel)``). That is right for Linear and plain Conv but wrong for transposed, grouped,
strided and packed weights; the layer rules (``_layers/torch_nn.py``) read the module's layout instead.
This file holds the value type and the shape-only arithmetic.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from torchinit._types import FAN_MODES, FanMode, InitError, check_int, choice_error


def check_fan(name: str, value: object) -> int | float:
    """``value`` as an int (when whole) or a float, or an InitError unless it is a positive finite number."""
    if type(value) is int and value > 0:  # the common case, checked first
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InitError(f"{name} must be a positive finite number; got {name}={value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise InitError(f"{name} must be a positive finite number; got {name}={value!r}.")
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class Fans:
    r"""The fans of a weight, or of each of its ``chunks`` equal blocks along dim 0.

    ``fan_in`` counts the input scalars that feed one output scalar; ``fan_out`` counts the output
    scalars that one input scalar feeds (averaged over interior positions, so it may be fractional
    for strided convolutions). A packed weight such as attention's ``in_proj_weight`` (q, k and v
    stacked) is ``Fans(E, E, chunks=3)``: each block is its own ``E -> E`` map.

    Example:
        >>> Fans(576, 288.0)
        Fans(fan_in=576, fan_out=288)
        >>> Fans(128, 256, chunks=4).fan("fan_avg")
        192.0
    """

    fan_in: float
    fan_out: float
    chunks: int = 1

    def __post_init__(self) -> None:
        ints = type(self.fan_in) is int and type(self.fan_out) is int and type(self.chunks) is int
        if ints and self.fan_in > 0 and self.fan_out > 0 and self.chunks > 0:
            return  # the common case: nothing to normalize
        object.__setattr__(self, "fan_in", check_fan("fan_in", self.fan_in))
        object.__setattr__(self, "fan_out", check_fan("fan_out", self.fan_out))
        check_int("chunks", self.chunks, minimum=1)

    def __repr__(self) -> str:
        chunks = f", chunks={self.chunks}" if self.chunks != 1 else ""
        return f"Fans(fan_in={self.fan_in!r}, fan_out={self.fan_out!r}{chunks})"

    def fan(self, mode: FanMode) -> float:
        r"""The fan a variance-scaling rule divides by (see `mode_fan`)."""
        return mode_fan(mode, self.fan_in, self.fan_out)


def mode_fan(mode: FanMode, fan_in: float, fan_out: float) -> float:
    r"""The fan ``mode`` names: fan_in, fan_out, $(\mathrm{fan\_in} + \mathrm{fan\_out})/2$ (``fan_avg``) or
    $\sqrt{\mathrm{fan\_in}\cdot\mathrm{fan\_out}}$ (``fan_geo_avg``).

    ``fan_geo_avg`` is JAX's ``(fan_in * fan_out) ** 0.5``, in the same floating-point operations (where the
    product neither under- nor overflows: there the roots are taken apart).

    Example:
        >>> mode_fan("fan_geo_avg", 64, 256)
        128.0
    """
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2
    if mode == "fan_geo_avg":
        fan = float((fan_in * fan_out) ** 0.5)
        # the product under- or overflows only for fans beyond 1e+-154: take the roots apart there
        return fan if 0.0 < fan < math.inf else math.sqrt(fan_in) * math.sqrt(fan_out)
    raise choice_error("mode", "mode", mode, FAN_MODES)


@functools.lru_cache(maxsize=4096)
def cached_fans(fan_in: float, fan_out: float, chunks: int = 1) -> Fans:
    """``Fans(fan_in, fan_out, chunks)``, one shared instance per value (layer rules build the same fans often)."""
    return Fans(fan_in, fan_out, chunks)


def torch_fans(tensor: torch.Tensor) -> Fans:
    r"""torch's shape-only fans: ``fan_in = size(1) * prod(size[2:])``, ``fan_out = size(0) * prod(size[2:])``.

    This is what ``torch.nn.init`` uses; `torchinit.fans_of` gives the true fans of a module's parameter.

    Raises:
        InitError: if the tensor has fewer than 2 dimensions or a zero-sized dimension.
    """
    if tensor.dim() < 2:
        raise InitError(
            f"fans can be read off a tensor's shape only when it has at least 2 dimensions; got "
            f"shape={tuple(tensor.shape)}. Pass fans=Fans(fan_in, fan_out) (or fan_in=/fan_out=) explicitly."
        )
    if tensor.numel() == 0:
        raise InitError(f"fans of a zero-element tensor are undefined; got shape={tuple(tensor.shape)}.")
    receptive = math.prod(tensor.shape[2:])
    return Fans(tensor.shape[1] * receptive, tensor.shape[0] * receptive)


def resolve_fan(
    tensor: torch.Tensor,
    mode: FanMode,
    fans: Fans | tuple[float, float] | None,
    fan_in: float | None,
    fan_out: float | None,
) -> float:
    """The fan ``mode`` asks for: explicit values first, the shape guess only for what is missing."""
    if mode not in FAN_MODES:
        raise choice_error("mode", "mode", mode, FAN_MODES)
    if fans is not None:
        if fan_in is not None or fan_out is not None:
            raise InitError(
                f"pass either fans= or fan_in=/fan_out=, not both; got fans={fans!r}, "
                f"fan_in={fan_in!r}, fan_out={fan_out!r}."
            )
        if isinstance(fans, tuple) and len(fans) == 2:
            fans = Fans(*fans)
        if not isinstance(fans, Fans):
            raise InitError(f"fans must be a Fans or a (fan_in, fan_out) tuple; got fans={fans!r}.")
        return fans.fan(mode)
    given = {"fan_in": fan_in, "fan_out": fan_out}
    for key, value in given.items():
        if value is not None:
            check_fan(key, value)
    needed = BOTH_FANS.get(mode, (mode,))
    if any(given[key] is None for key in needed):
        guess = torch_fans(tensor)
        given = {"fan_in": fan_in or guess.fan_in, "fan_out": fan_out or guess.fan_out}
    if len(needed) == 1:
        return float(given[mode])  # type: ignore[arg-type]
    return mode_fan(mode, float(given["fan_in"]), float(given["fan_out"]))  # type: ignore[arg-type]


BOTH_FANS: dict[str, tuple[str, str]] = {"fan_avg": ("fan_in", "fan_out"), "fan_geo_avg": ("fan_in", "fan_out")}
"""The modes that combine both fans (the others read one)."""
