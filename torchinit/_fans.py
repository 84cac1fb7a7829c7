"""Fans: how many scalars feed one output (fan_in) and how many outputs one input feeds (fan_out).

torch's helper reads fans off the weight's shape alone (``size(1) * prod(kernel)`` and
``size(0) * prod(kernel)``). That is right for Linear and plain Conv but wrong for transposed, grouped,
strided and packed weights. The rules here read the module's layout instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchinit._rules import TypeRules
from torchinit._types import FAN_MODES, FanMode, InitError, choice_error, is_lazy


def _number(name: str, value: object) -> int | float:
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
        object.__setattr__(self, "fan_in", _number("fan_in", self.fan_in))
        object.__setattr__(self, "fan_out", _number("fan_out", self.fan_out))
        if isinstance(self.chunks, bool) or not isinstance(self.chunks, int) or self.chunks < 1:
            raise InitError(f"chunks must be a positive integer; got chunks={self.chunks!r}.")

    def __repr__(self) -> str:
        chunks = f", chunks={self.chunks}" if self.chunks != 1 else ""
        return f"Fans(fan_in={self.fan_in!r}, fan_out={self.fan_out!r}{chunks})"

    def fan(self, mode: FanMode) -> float:
        r"""The fan a variance-scaling rule divides by: fan_in, fan_out, or (fan_in + fan_out) / 2."""
        if mode == "fan_in":
            return self.fan_in
        if mode == "fan_out":
            return self.fan_out
        if mode == "fan_avg":
            return (self.fan_in + self.fan_out) / 2
        raise choice_error("mode", "mode", mode, FAN_MODES)


def torch_fans(tensor: torch.Tensor) -> Fans:
    r"""torch's shape-only fans: ``fan_in = size(1) * prod(size[2:])``, ``fan_out = size(0) * prod(size[2:])``.

    This is what ``torch.nn.init`` uses; `fans_of` gives the true fans of a module's parameter.

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


FanRule = Callable[[nn.Module, str], "Fans | None"]
"""A rule gives the fans of a module's parameter, by its local name, or None when it has none."""

_RULES: TypeRules[Fans] = TypeRules()


def register_fan_rule(module_type: type[nn.Module], rule: FanRule) -> None:
    """Teach `fans_of` (and so ``reinit``) the layout of a custom module type.

    The rule receives the module and a parameter's local name and returns its `Fans`, or None
    when that parameter has no fans (a bias, a scale). Rules apply to subclasses too; the rule of the
    most derived registered class wins, and a None falls through to the rules of its base classes.

    Example:
        >>> class Gate(nn.Module):  # y = x @ w, w of shape (in, 2 * out): two packed halves
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.empty(8, 2 * 16))
        >>> register_fan_rule(Gate, lambda m, name: Fans(8, 16) if name == "w" else None)
        >>> fans_of(Gate(), "w")
        Fans(fan_in=8, fan_out=16)
    """
    _RULES.register(module_type, rule)


def find_fans(module: nn.Module, name: str) -> Fans | None:
    """The fans of ``module``'s own parameter ``name`` by the registered rules, or None if none covers it.

    A zero-element parameter has no fans (nothing connects), so it gets None too.
    """
    param = getattr(module, name, None)
    if is_lazy(param):
        return None  # no shape yet: fans_of and reinit report it as lazy
    if isinstance(param, torch.Tensor) and param.numel() == 0:
        return None
    return _RULES.first(module, name)


def fans_of(module: nn.Module, name: str) -> Fans:
    """The true fans of a parameter, from its module's layout rather than its shape alone.

    Args:
        module: the module that owns the parameter, or any ancestor of it.
        name: the parameter's name relative to ``module`` (``"weight"``, ``"0.conv.weight"``).

    Returns:
        The parameter's `Fans`; packed weights (attention ``in_proj_weight``, RNN gates) get
        per-chunk fans with ``chunks`` > 1. See the fan table in the docs for every rule.

    Raises:
        InitError: no such parameter, an uninitialized lazy parameter, or no rule covers it.

    Example:
        >>> fans_of(nn.ConvTranspose2d(64, 32, 4, stride=2), "weight")
        Fans(fan_in=256, fan_out=512)
        >>> fans_of(nn.LSTM(128, 256), "weight_ih_l0")
        Fans(fan_in=128, fan_out=256, chunks=4)
    """
    owner_path, _, local = name.rpartition(".")
    try:
        owner = module.get_submodule(owner_path) if owner_path else module
    except AttributeError:
        owner = None
    param = getattr(owner, local, None) if owner is not None else None
    if not isinstance(param, torch.Tensor):
        raise InitError(f"{type(module).__name__} has no parameter {name!r}.")
    if is_lazy(param):
        raise InitError(
            f"parameter {name!r} of {type(owner).__name__} is an uninitialized lazy parameter; "
            "run a forward pass first so it gets its shape."
        )
    assert owner is not None
    fans = find_fans(owner, local)
    if fans is None:
        raise InitError(
            f"no fan rule covers parameter {name!r} of {type(owner).__name__} (shape "
            f"{tuple(param.shape)}). Biases and scales have no fans; for a custom layout pass "
            "fans=Fans(...) explicitly or call torchinit.register_fan_rule."
        )
    return fans


# --- built-in rules -------------------------------------------------------------------------------


def _linear(m: Any, name: str) -> Fans | None:
    if name != "weight":
        return None
    out_features, in_features = m.weight.shape
    return Fans(in_features, out_features)


def _bilinear(m: Any, name: str) -> Fans | None:
    # y_k = sum_ij W_kij x1_i x2_j is linear in the outer product x1 (x) x2 (in1 * in2 features).
    if name != "weight":
        return None
    out_features, in1, in2 = m.weight.shape
    return Fans(in1 * in2, out_features)


def _conv(m: Any, name: str) -> Fans | None:
    if name != "weight":
        return None
    kernel = math.prod(m.kernel_size)
    stride = math.prod(m.stride)
    per_group_in = m.in_channels // m.groups
    per_group_out = m.out_channels // m.groups
    if m.transposed:
        return Fans(per_group_in * kernel / stride, per_group_out * kernel)
    return Fans(per_group_in * kernel, per_group_out * kernel / stride)


def _embedding(m: Any, name: str) -> Fans | None:
    # Used as one_hot(x) @ W: rows are inputs, columns outputs.
    if name != "weight":
        return None
    return Fans(m.num_embeddings, m.embedding_dim)


def _attention(m: Any, name: str) -> Fans | None:
    e = m.embed_dim
    if name == "in_proj_weight":
        return Fans(e, e, chunks=3)
    if name == "q_proj_weight":
        return Fans(e, e)
    if name == "k_proj_weight":
        return Fans(m.kdim, e)
    if name == "v_proj_weight":
        return Fans(m.vdim, e)
    return None


_RNN_NAME = re.compile(r"weight_(ih|hh|hr)(_l\d+(_reverse)?)?")


def _recurrent(m: Any, name: str) -> Fans | None:
    match = _RNN_NAME.fullmatch(name)
    if match is None:
        return None
    rows, inputs = getattr(m, name).shape
    if match.group(1) == "hr":  # LSTM projection: hidden -> proj_size
        return Fans(inputs, rows)
    hidden = m.hidden_size
    return Fans(inputs, hidden, chunks=rows // hidden)


register_fan_rule(nn.Linear, _linear)
register_fan_rule(nn.Bilinear, _bilinear)
register_fan_rule(nn.modules.conv._ConvNd, _conv)
register_fan_rule(nn.Embedding, _embedding)
register_fan_rule(nn.EmbeddingBag, _embedding)
register_fan_rule(nn.MultiheadAttention, _attention)
register_fan_rule(nn.RNNBase, _recurrent)
register_fan_rule(nn.RNNCellBase, _recurrent)


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
            _number(key, value)
    needed = ("fan_in", "fan_out") if mode == "fan_avg" else (mode,)
    if any(given[key] is None for key in needed):
        guess = torch_fans(tensor)
        given = {"fan_in": fan_in or guess.fan_in, "fan_out": fan_out or guess.fan_out}
    values = [float(given[key]) for key in needed]  # type: ignore[arg-type]
    return sum(values) / len(values)
