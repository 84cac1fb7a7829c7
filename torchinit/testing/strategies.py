"""Hypothesis strategies for weight shapes, layer configurations and random generators.

Every layer strategy yields a `LayerSpec`, whose repr reads like the constructor call and
whose `LayerSpec.build` makes the module, so a failing example can be pasted back as code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import errors, note
from hypothesis import strategies as st
from torch import nn

__all__ = [
    "LayerSpec",
    "attention_layers",
    "bilinear_layers",
    "conv_layers",
    "generators",
    "layers",
    "linear_layers",
    "recurrent_layers",
    "seeds",
    "weight_shapes",
]


@dataclass(frozen=True)
class LayerSpec:
    """A module type and its constructor keywords; ``build()`` constructs it."""

    cls: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self, **overrides: Any) -> nn.Module:
        """Construct the module (``overrides`` such as ``device="meta"`` or ``dtype`` are passed on)."""
        return self.cls(**{**self.kwargs, **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.kwargs.items())
        return f"nn.{self.cls.__name__}({args})"


def _check_range(name_min: str, low: int, name_max: str, high: int, floor: int = 1) -> None:
    for name, value in ((name_min, low), (name_max, high)):
        if isinstance(value, bool) or not isinstance(value, int) or value < floor:
            raise errors.InvalidArgument(f"{name} must be an integer >= {floor}; got {name}={value!r}.")
    if low > high:
        raise errors.InvalidArgument(f"{name_min} must be <= {name_max}; got {name_min}={low!r}, {name_max}={high!r}.")


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator().manual_seed`` (the full 64-bit range torch accepts)."""
    return st.integers(min_value=0, max_value=2**63 - 1)


def generators() -> st.SearchStrategy[torch.Generator]:
    """CPU ``torch.Generator`` objects seeded from `seeds`; the seed is reported with a failure."""

    @st.composite
    def draw(d: Callable[[st.SearchStrategy[int]], int]) -> torch.Generator:
        seed = d(seeds())
        note(f"generator seed={seed}")
        return torch.Generator().manual_seed(seed)

    return draw()


def weight_shapes(
    *,
    min_dims: int = 2,
    max_dims: int = 5,
    min_side: int = 1,
    max_side: int = 64,
    min_numel: int = 1,
    max_numel: int = 2**16,
) -> st.SearchStrategy[tuple[int, ...]]:
    """Weight shapes ``(out, in, *kernel)`` with a bounded number of elements."""
    _check_range("min_dims", min_dims, "max_dims", max_dims)
    _check_range("min_side", min_side, "max_side", max_side)
    _check_range("min_numel", min_numel, "max_numel", max_numel)
    if min_side**min_dims > max_numel or max_side**max_dims < min_numel:
        raise errors.InvalidArgument(
            f"no shape fits: sides in [{min_side}, {max_side}] and {min_dims}-{max_dims} dims cannot give "
            f"numel in [{min_numel}, {max_numel}]."
        )
    sides = st.integers(min_side, max_side)
    return (
        st.integers(min_dims, max_dims)
        .flatmap(lambda k: st.tuples(*[sides] * k))
        .filter(lambda shape: min_numel <= math.prod(shape) <= max_numel)
    )


def linear_layers(
    *, min_features: int = 1, max_features: int = 64, bias: bool | None = None
) -> st.SearchStrategy[LayerSpec]:
    """``nn.Linear`` configurations."""
    _check_range("min_features", min_features, "max_features", max_features)
    features = st.integers(min_features, max_features)
    return st.builds(
        lambda i, o, b: LayerSpec(nn.Linear, {"in_features": i, "out_features": o, "bias": b}),
        features, features, st.booleans() if bias is None else st.just(bias),
    )  # fmt: skip


def bilinear_layers(*, max_features: int = 16) -> st.SearchStrategy[LayerSpec]:
    """``nn.Bilinear`` configurations."""
    _check_range("min_features", 1, "max_features", max_features)
    f = st.integers(1, max_features)
    return st.builds(
        lambda a, b, c: LayerSpec(nn.Bilinear, {"in1_features": a, "in2_features": b, "out_features": c}),
        f, f, f,
    )  # fmt: skip


_CONV = {
    (1, False): nn.Conv1d, (2, False): nn.Conv2d, (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d, (3, True): nn.ConvTranspose3d,
}  # fmt: skip


def conv_layers(
    *,
    dims: Sequence[int] = (1, 2, 3),
    transposed: bool | None = None,
    max_channels_per_group: int = 6,
    max_groups: int = 4,
    max_kernel: int = 4,
    max_stride: int = 3,
    max_dilation: int = 2,
) -> st.SearchStrategy[LayerSpec]:
    """Conv and ConvTranspose configurations: groups (depthwise included), per-axis kernel, stride, dilation.

    ``transposed`` None draws both kinds. Channels are drawn per group, so they always divide.
    """
    if not dims or any(d not in (1, 2, 3) for d in dims):
        raise errors.InvalidArgument(f"dims must be a non-empty subset of (1, 2, 3); got dims={dims!r}.")
    for name, value in (
        ("max_channels_per_group", max_channels_per_group), ("max_groups", max_groups),
        ("max_kernel", max_kernel), ("max_stride", max_stride), ("max_dilation", max_dilation),
    ):  # fmt: skip
        _check_range("1", 1, name, value)
    kinds = [False, True] if transposed is None else [transposed]

    @st.composite
    def draw(d: Any) -> LayerSpec:
        n = d(st.sampled_from(list(dims)))
        is_transposed = d(st.sampled_from(kinds))
        groups = d(st.integers(1, max_groups))
        per_in = d(st.integers(1, max_channels_per_group))
        per_out = d(st.integers(1, max_channels_per_group))
        axis = st.tuples(*[st.integers(1, max_kernel)] * n)
        kwargs: dict[str, Any] = {
            "in_channels": groups * per_in,
            "out_channels": groups * per_out,
            "kernel_size": d(axis),
            "stride": d(st.tuples(*[st.integers(1, max_stride)] * n)),
            "dilation": d(st.tuples(*[st.integers(1, max_dilation)] * n)),
            "groups": groups,
            "bias": d(st.booleans()),
        }
        return LayerSpec(_CONV[n, is_transposed], kwargs)

    return draw()


def attention_layers(*, max_heads: int = 4, max_head_dim: int = 8) -> st.SearchStrategy[LayerSpec]:
    """``nn.MultiheadAttention``: packed in_proj (kdim = vdim = embed_dim) or separate q/k/v."""
    _check_range("1", 1, "max_heads", max_heads)
    _check_range("1", 1, "max_head_dim", max_head_dim)

    @st.composite
    def draw(d: Any) -> LayerSpec:
        heads = d(st.integers(1, max_heads))
        embed = heads * d(st.integers(1, max_head_dim))
        kwargs: dict[str, Any] = {"embed_dim": embed, "num_heads": heads, "bias": d(st.booleans())}
        if d(st.booleans()):  # separate projections
            kwargs["kdim"] = d(st.integers(1, 2 * embed))
            kwargs["vdim"] = d(st.integers(1, 2 * embed))
        kwargs["add_bias_kv"] = d(st.booleans())
        return LayerSpec(nn.MultiheadAttention, kwargs)

    return draw()


def recurrent_layers(*, max_size: int = 12, max_layers: int = 3, cells: bool = True) -> st.SearchStrategy[LayerSpec]:
    """RNN, LSTM and GRU with layers, bidirectional and (LSTM) proj_size; with ``cells`` also the cells."""
    _check_range("1", 1, "max_size", max_size)
    _check_range("1", 1, "max_layers", max_layers)
    size = st.integers(1, max_size)

    @st.composite
    def draw(d: Any) -> LayerSpec:
        kinds: list[type[nn.Module]] = [nn.RNN, nn.LSTM, nn.GRU]
        if cells:
            kinds += [nn.RNNCell, nn.LSTMCell, nn.GRUCell]
        cls = d(st.sampled_from(kinds))
        kwargs: dict[str, Any] = {"input_size": d(size), "hidden_size": d(size), "bias": d(st.booleans())}
        if issubclass(cls, nn.RNNBase):
            kwargs["num_layers"] = d(st.integers(1, max_layers))
            kwargs["bidirectional"] = d(st.booleans())
            if cls is nn.LSTM and kwargs["hidden_size"] > 1 and d(st.booleans()):
                kwargs["proj_size"] = d(st.integers(1, kwargs["hidden_size"] - 1))
        return LayerSpec(cls, kwargs)

    return draw()


def layers() -> st.SearchStrategy[LayerSpec]:
    """Any of the layer strategies above, with their defaults."""
    return st.one_of(linear_layers(), bilinear_layers(), conv_layers(), attention_layers(), recurrent_layers())
