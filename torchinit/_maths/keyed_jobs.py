"""The computations keyed writes are made of: batches of small pieces, stacks of small whole tensors, and
what is done after them (copies into non-contiguous tensors, zero rows, constants, shard placement).

`torchinit._maths.keyed.KeyedWriter` collects a call's writes and schedules these jobs; each job is a pure
function of (seed, parameter name, flat logical index), computed in a reserved workspace.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from torchinit._maths.distributions import truncated_normal_std
from torchinit._maths.draw import Action, fill
from torchinit._maths.stream import mix_, range_values, signed64, unit_normal, unit_uniform
from torchinit._maths.workspace import Workspace, workspace


@dataclass
class Region:
    """Where a local tensor sits in its global (logical) tensor: per-dim offsets and the global shape."""

    global_shape: tuple[int, ...]
    offset: tuple[int, ...]

    def flat_range(self, local_shape: tuple[int, ...]) -> tuple[int, int]:
        """First and one-past-last global flat index the local block touches."""
        strides = _strides(self.global_shape)
        first = sum(o * s for o, s in zip(self.offset, strides, strict=True))
        last = sum((o + n - 1) * s for o, n, s in zip(self.offset, local_shape, strides, strict=True))
        return first, last + 1

    def is_range(self, local_shape: tuple[int, ...]) -> bool:
        """Whether the local block is one run of consecutive global flat indices."""
        lo, hi = self.flat_range(local_shape)
        return hi - lo == math.prod(local_shape)


def _strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return tuple(reversed(strides))


Piece = tuple[int, int, int, int, torch.Tensor, float]
"""(start, gamma, lo, hi, dest, scale): elements lo .. hi-1 of one stream, scaled into ``dest`` (flat)."""

Item = tuple[int, int, torch.Tensor, float]
"""(start, gamma, tensor, scale), the key as int64 bit patterns: all of a small tensor's elements (an even
number), scaled into it."""


def scale_of(action: Action) -> float:
    if action.kind == "uniform":
        return action.param * 2.0**-24  # unit_uniform gives odd integers in (-2^24, 2^24)
    if action.kind == "truncated_normal":
        return action.param / truncated_normal_std(-action.cut, action.cut)
    return action.param


def unit_values(
    kind: str, cut: float, w: torch.Tensor, out: torch.Tensor | None = None, ws: Workspace | None = None
) -> torch.Tensor:
    if kind == "uniform":
        return unit_uniform(w, out, ws)
    return unit_normal(w, cut if kind == "truncated_normal" else None, out, ws)


def in_workspace(span: Callable[[Workspace], int]) -> int:
    return span(workspace())


def batch_job(kind: str, cut: float, batch: list[Piece]) -> Callable[[], int]:
    """The job computing a batch of pieces in one pass of kernels, its small per-piece tensors (piece
    starts, keys, scales) made now, before anything is written."""
    if len(batch) == 1:  # one range of one tensor: computed into the tensor itself when it is float32
        return functools.partial(in_workspace, functools.partial(range_values, kind, cut, *batch[0]))
    device = batch[0][4].device
    first = [p[2] >> 1 for p in batch]
    counts = [((p[3] + 1) >> 1) - f for p, f in zip(batch, first, strict=True)]
    offsets = list(itertools.accumulate(counts, initial=0))
    at = offsets.pop()
    # word k of the batch is word first_i + (k - offset_i) of piece i's stream: start_i + gamma_i (first_i -
    # offset_i) + gamma_i k, with piece i's words at offsets[i] ..
    starts = torch.tensor(offsets[1:], dtype=torch.int64, device=device)
    gammas = torch.tensor([signed64(p[1]) for p in batch], dtype=torch.int64, device=device)
    bases = [signed64(p[0] + p[1] * (f - o)) for p, f, o in zip(batch, first, offsets, strict=True)]
    sizes: list[int] = []
    for p, c in zip(batch, counts, strict=True):
        lead, n = p[2] & 1, p[3] - p[2]
        sizes += (lead, n, 2 * c - lead - n)
    keys = (starts, gammas, torch.tensor(bases, dtype=torch.int64, device=device))
    scale = _scales([p[5] for p in batch], device)
    return functools.partial(_compute, kind, cut, at, keys, scale, [p[4] for p in batch], sizes)


def _scales(scales: list[float], device: torch.device) -> float | torch.Tensor:
    """One scalar when the pieces share their scale, else one float32 per piece (a scalar multiply rounds
    its scale to float32 too: the same values as each piece alone)."""
    if all(v == scales[0] for v in scales):
        return scales[0]
    return torch.tensor(scales, dtype=torch.float32, device=device)


def _compute(
    kind: str,
    cut: float,
    at: int,
    keys: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scale: float | torch.Tensor,
    dests: list[torch.Tensor],
    sizes: list[int],
) -> int:
    """One pass of kernels over a batch of pieces (``at`` words; ``keys``: where each piece's words start,
    its gamma and base); returns the number of 32-bit words computed. Allocates nothing of its size: every
    buffer comes from the (reserved) workspace."""
    starts, gammas, bases = keys
    device = starts.device
    ws = workspace()
    # each word's piece: a 1 where a piece starts, summed up
    mark = ws.get("mark", torch.int64, at, device).zero_()
    mark.index_fill_(0, starts, 1)
    piece = torch.cumsum(mark, 0, out=ws.get("piece", torch.int64, at, device))
    z = torch.index_select(gammas, 0, piece, out=ws.get("z", torch.int64, at, device))
    z.mul_(ws.arange(at, device))
    scratch = ws.get("scratch", torch.int64, at, device)
    z.add_(torch.index_select(bases, 0, piece, out=scratch))
    w = mix_(z, scratch).view(torch.int32)
    units = unit_values(kind, cut, w, ws.get("out", torch.float32, w.numel(), device), ws)
    if isinstance(scale, torch.Tensor):
        units.view(at, 2).mul_(
            torch.index_select(scale, 0, piece, out=ws.get("pair_scale", torch.float32, at, device))[:, None]
        )
    else:
        units.mul_(scale)
    torch._foreach_copy_(dests, list(torch.split_with_sizes(units, sizes)[1::3]))
    return 2 * at


def stack_job(kind: str, cut: float, shape: tuple[int, ...], items: list[Item]) -> Callable[[], int]:
    """The job computing whole tensors of one shape as rows of one matrix, its small key and scale
    tensors made now, before anything is written."""
    device = items[0][2].device
    keys = torch.tensor([it[:2] for it in items], dtype=torch.int64, device=device)
    scale = _scales([it[3] for it in items], device)
    if isinstance(scale, torch.Tensor):
        scale = scale[:, None]  # one per row
    return functools.partial(_compute_stack, kind, cut, shape, keys, scale, [it[2] for it in items])


def _compute_stack(
    kind: str,
    cut: float,
    shape: tuple[int, ...],
    keys: torch.Tensor,
    scale: float | torch.Tensor,
    tensors: list[torch.Tensor],
) -> int:
    """Row i, word k is mix64(start_i + gamma_i k), ``keys`` row i = (start_i, gamma_i)."""
    device = keys.device
    ws = workspace()
    m, n = len(tensors), math.prod(shape)
    pairs = n >> 1
    z = ws.get("z", torch.int64, m * pairs, device).view(m, pairs)
    torch.mul(ws.arange(pairs, device)[None, :], keys[:, 1:], out=z)
    z.add_(keys[:, :1])
    w = mix_(z.view(-1), ws.get("scratch", torch.int64, m * pairs, device)).view(torch.int32)
    units = unit_values(kind, cut, w, ws.get("out", torch.float32, m * n, device), ws).view(m, n)
    units.mul_(scale)
    if tensors[0].dtype == torch.float32:  # a stack has one dtype: rows copied without Python views
        torch.unbind_copy(units.view(m, *shape), 0, out=tensors)
    else:
        torch._foreach_copy_(tensors, list(units.view(m, *shape).unbind(0)))
    return m * n


def global_index(
    shape: tuple[int, ...], offset: tuple[int, ...], global_shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    index = torch.zeros((), dtype=torch.int64, device=device)
    for dim, (o, n, s) in enumerate(zip(offset, shape, _strides(global_shape), strict=True)):
        view = [1] * len(shape)
        view[dim] = n
        index = index + ((torch.arange(n, device=device) + o) * s).view(view)
    return index.expand(shape)


def copy_into(tensor: torch.Tensor, flat: torch.Tensor) -> None:
    tensor.copy_(flat.view(tensor.shape))


def zero_row_post(t: torch.Tensor, action: Action, region: Region | None) -> None:
    if action.zero_row is None:
        return
    row = action.zero_row - (region.offset[0] if region is not None else 0)
    if 0 <= row < t.shape[0]:
        t[row].fill_(0)


def local_block(full_flat: torch.Tensor, base: int, tensor: torch.Tensor, region: Region) -> torch.Tensor:
    """The elements of ``region``'s local block, taken from a flat global range starting at ``base``."""
    if region.is_range(tuple(tensor.shape)):
        first, last = region.flat_range(tuple(tensor.shape))
        return full_flat[first - base : last - base].view(tensor.shape)
    index = global_index(tuple(tensor.shape), region.offset, region.global_shape, tensor.device)
    return full_flat[index - base]


def place(flat: torch.Tensor, base: int, tensor: torch.Tensor, region: Region | None, action: Action) -> None:
    """Copy drawn values (a flat global range starting at ``base``) into the tensor or its local block."""
    tensor.copy_(flat.view(tensor.shape) if region is None else local_block(flat, base, tensor, region))
    zero_row_post(tensor, action, region)


def fill_post(action: Action, tensor: torch.Tensor, region: Region | None) -> None:
    if action.chunk_values is not None and region is not None:
        # per-chunk constants along dim 0 of the global tensor
        rows = region.global_shape[0] // len(action.chunk_values)
        for i in range(tensor.shape[0]):
            tensor[i].fill_(action.chunk_values[(region.offset[0] + i) // rows])
        return
    fill(action, tensor, None)
