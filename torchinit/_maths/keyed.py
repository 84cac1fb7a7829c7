"""Keyed generation: each value a pure function of (seed, parameter name, flat logical index).

The values come from the counter-based stream of `torchinit._maths.stream` (version 2), so they do not depend
on walk order, on other modules, on the thread count, on the device, or on how the tensor is sharded:
a shard computes the words of its own elements only. Tensors are batched: small whole ones of one shape
are the rows of one matrix (a key per row), other small ones share one pass of kernels (their keys are
per-element tensors) and are written with ``torch._foreach_*`` calls, so a parameter costs a few list
entries, not a generator state; large ones are cut into spans of `SPAN` elements, each computed straight
into the tensor a block at a time (`torchinit._maths.stream.range_values`). Orthogonal weights (a QR of the
whole matrix) draw the whole tensor's normal values from the same stream and factorize them on their device.
"""

from __future__ import annotations

import functools
import math
import operator
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from torchinit._maths import stream as _stream
from torchinit._maths import workspace as _workspace
from torchinit._maths.draw import DRAWN, Action, check_draw, orthogonal_block, put_centre
from torchinit._maths.keyed_jobs import (
    Item,
    Piece,
    Region,
    batch_job,
    copy_into,
    fill_post,
    global_index,
    in_workspace,
    place,
    scale_of,
    stack_job,
    unit_values,
    zero_row_post,
)
from torchinit._maths.stream import (
    index_words,
    range_values,
    range_words,
    signed64,
    stream_key,
    unit_normal,
)
from torchinit._maths.workspace import Workspace, pass_needs
from torchinit._types import InitError, check_int

BLOCK = 1 << 17
"""Elements per batch of kernels (small tensors are batched up to it; larger ranges are cut into spans
computed a block at a time, see `range_values`). Only speed and scratch memory depend on it, never the values."""

SPAN = 1 << 21
"""Elements per job of a large range on CPU (a loop of blocks in one call): jobs small enough to balance the
workers, large enough that a job's fixed cost is small; on other devices a range is one job. Values do not
depend on it."""


@functools.lru_cache(maxsize=1 << 16)
def _key(seed: int, name: str) -> tuple[int, int, int, int]:
    """(start, gamma) of the stream, unsigned and as int64 bit patterns."""
    start, gamma = stream_key(seed, name)
    return start, gamma, signed64(start), signed64(gamma)


_ONE_AT_A_TIME = threading.Lock()
"""Held while a call runs its jobs with torch's intra-op threads at 1: the count is process-wide (MKL's too), so
a call from another thread restoring it while this one's QRs run would change their rounding (1e-6)."""

STACKED = 1 << 14
"""Whole contiguous tensors of at most this many elements (an even number) are computed stacked with the
others of their shape (one row each): no per-tensor views, offsets or repeats. Values do not depend on it."""


class KeyedWriter:
    """Collects keyed writes, computes them in batches (on ``threads`` workers), then finishes up."""

    def __init__(self, seed: int, threads: int | None = None) -> None:
        self.seed = seed
        self.threads = threads
        self.groups: dict[tuple[torch.device, str, float], list[Piece]] = {}
        self.stacks: dict[tuple[torch.device, str, float, tuple[int, ...], torch.dtype], list[Item]] = {}
        self.constants: dict[tuple[float, torch.device, torch.dtype], list[torch.Tensor]] = {}
        self.tasks: list[Callable[[], int]] = []
        self.spans: list[tuple[Callable[[Workspace], int], torch.Tensor, str, int]] = []  # (job, dest, kind, words)
        self.finish: list[Callable[[], None]] = []
        self.drawn = 0
        """Random 32-bit words this process computed (a shard: its own elements, plus at most one per end)."""

    def add(self, action: Action, tensor: torch.Tensor, name: str, region: Region | None = None) -> None:
        """Schedule ``action`` on ``tensor`` (the local block of ``region`` when sharded)."""
        kind = action.kind
        n = tensor.numel()
        if kind == "skip" or kind == "keep" or n == 0:
            return
        if kind == "constant":
            if region is None and action.chunk_values is None and action.zero_row is None:
                key = (action.param, tensor.device, tensor.dtype)
                same = self.constants.get(key)
                if same is None:
                    self.constants[key] = [tensor]
                else:
                    same.append(tensor)
            else:
                self.finish.append(functools.partial(fill_post, action, tensor, region))
            return
        start, gamma, signed_start, signed_gamma = _key(self.seed, name)
        if kind == "orthogonal":
            self.tasks.append(functools.partial(self._orthogonal, action, tensor, start, gamma, region))
            return
        shape = tuple(tensor.shape)
        if region is None and n <= STACKED and not n & 1 and tensor.is_contiguous():
            # a small whole tensor: computed with others of its shape (and dtype), one row each
            if action.zero_row is not None:
                self.finish.append(functools.partial(zero_row_post, tensor, action, region))
            stack = (tensor.device, kind, action.cut, shape, tensor.dtype)
            items = self.stacks.get(stack)
            if items is None:
                items = self.stacks[stack] = []
            items.append((signed_start, signed_gamma, tensor, scale_of(action)))
            return
        if region is not None and not region.is_range(shape):
            self.tasks.append(functools.partial(self._indexed, action, tensor, start, gamma, region))
            return
        lo, hi = (0, n) if region is None else region.flat_range(shape)
        if tensor.is_contiguous():
            dest = tensor.view(-1)
        else:  # channels_last or a strided view: fill in logical order, then copy
            dest = torch.empty(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
            self.finish.append(functools.partial(copy_into, tensor, dest))
        if action.zero_row is not None:
            self.finish.append(functools.partial(zero_row_post, tensor, action, region))
        scale = scale_of(action)
        if hi - lo > BLOCK:  # a large range: its own jobs of up to SPAN elements, each a loop of blocks
            length = SPAN if tensor.device.type == "cpu" else hi - lo  # on CUDA one job: launches are the cost
            for a in range(lo, hi, length):
                b = min(a + length, hi)
                job = functools.partial(
                    range_values, kind, action.cut, start, gamma, a, b, dest[a - lo : b - lo], scale
                )
                self.spans.append((job, dest, kind, ((b + 1) >> 1) - (a >> 1)))
            return
        pieces = self.groups.get((tensor.device, kind, action.cut))
        if pieces is None:
            pieces = self.groups[(tensor.device, kind, action.cut)] = []
        pieces.append((start, gamma, lo, hi, dest, scale))

    def run(self) -> None:
        """Compute every batch and task, then write constants, copy and zero rows.

        torch's own intra-op threads are set to 1 for the duration and the jobs (orthogonal QRs, spans of
        large ranges, batches of small tensors, largest first) are spread over a thread pool of ``threads``
        workers: no per-kernel fork/join, which on a busy machine costs more than the kernels. On CPU a span
        is one call of a TorchScript function that runs all its kernels without the GIL, so the workers do
        not take turns between kernels (`torchinit._maths.stream.SCRIPTED`). Values do not depend on the split.
        """
        jobs: list[Callable[[], int]] = list(self.tasks)  # the largest first: orthogonal QRs (backed up)
        needs: _workspace.Needs = {}  # what the workers' workspaces must hold before the first write
        for span, dest, kind, words in self.spans:
            n = 2 * min(words, _stream.block_words(dest.device))
            converting = dest.dtype != torch.float32
            pass_needs("range", n, dest.device, truncated=kind == "truncated_normal", converting=converting, into=needs)
            jobs.append(functools.partial(in_workspace, span))
        for (device, kind, cut), pieces in self.groups.items():
            for batch in _batches(pieces):
                n = 2 * sum(((p[3] + 1) >> 1) - (p[2] >> 1) for p in batch)
                path = "range" if len(batch) == 1 else "batch"
                converting = batch[0][4].dtype != torch.float32
                pass_needs(path, n, device, truncated=kind == "truncated_normal", converting=converting, into=needs)
                jobs.append(batch_job(kind, cut, batch))
        for (device, kind, cut, shape, _), items in self.stacks.items():
            numel = math.prod(shape)
            rows = max(1, BLOCK // numel)
            for i in range(0, len(items), rows):
                chunk = items[i : i + rows]
                n = numel * len(chunk)
                pass_needs("stack", n, device, truncated=kind == "truncated_normal", converting=True, into=needs)
                jobs.append(stack_job(kind, cut, shape, chunk))
        inference = torch.is_inference_mode_enabled()
        if any(device.type == "cpu" for _, _, device in needs):
            _stream.compile_kernels()
        with _ONE_AT_A_TIME:  # torch's thread count is process-wide state: one call sets and restores it at a time
            self._run_jobs(jobs, needs, inference)
        for (value, _, _), tensors in self.constants.items():
            torch._foreach_zero_(tensors)
            if value != 0:
                torch._foreach_add_(tensors, value)
        for step in self.finish:
            step()

    def _run_jobs(self, jobs: list[Callable[[], int]], needs: _workspace.Needs, inference: bool) -> None:
        previous = torch.get_num_threads()
        workers = min(self.threads if self.threads is not None else previous, len(jobs))
        if previous > 1:
            torch.set_num_threads(1)
        try:
            # every worker's scratch buffers are allocated before the first write: a failing allocation
            # leaves the model as it was (the jobs then allocate only a few small key tensors)
            with _workspace.reserved(max(workers, 1), needs, _stream.prepare_table) as handed:
                if workers <= 1:
                    own = _workspace.bind(handed)
                    try:
                        self.drawn += sum(_no_grad(job, inference) for job in jobs)
                    finally:
                        _workspace.unbind(own)
                else:
                    with ThreadPoolExecutor(
                        max_workers=workers, initializer=_workspace.bind, initargs=(handed,)
                    ) as pool:
                        self.drawn += sum(pool.map(functools.partial(_no_grad, inference=inference), jobs))
        finally:
            if previous > 1:
                torch.set_num_threads(previous)

    def _orthogonal(self, action: Action, tensor: torch.Tensor, start: int, gamma: int, region: Region | None) -> int:
        shape = region.global_shape if region is not None else tuple(tensor.shape)
        kernel = shape if action.delta and len(shape) > 2 else None
        shape = shape[:2] if kernel is not None else shape  # delta: the centre tap's matrix is what is drawn
        total = math.prod(shape)
        normal = torch.empty(total, dtype=torch.float32, device=tensor.device)
        for a in range(0, total, BLOCK):
            b = min(a + BLOCK, total)
            normal[a:b] = unit_normal(range_words(start, gamma, a, b, tensor.device))
        full = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
        blocks = full.chunk(action.chunks, dim=0) if action.chunks > 1 else (full,)
        values = normal.view(shape).chunk(action.chunks, dim=0) if action.chunks > 1 else (normal.view(shape),)
        for block, drawn in zip(blocks, values, strict=True):
            orthogonal_block(block, action.param, None, normal=drawn)
        if kernel is not None:
            full, centre = torch.empty(kernel, dtype=tensor.dtype, device=tensor.device), full
            put_centre(full, centre)
        place(full.reshape(-1), 0, tensor, region, action)
        return total

    def _indexed(self, action: Action, tensor: torch.Tensor, start: int, gamma: int, region: Region) -> int:
        # A block that is not one flat run (a Shard(1) column block): the words of exactly its elements,
        # a few rows at a time.
        row = math.prod(tensor.shape[1:])
        rows = max(1, BLOCK // max(row, 1))
        scale = scale_of(action)
        drawn = 0
        for r0 in range(0, tensor.shape[0], rows):
            part = tensor[r0 : r0 + rows]
            offset = (region.offset[0] + r0, *region.offset[1:])
            index = global_index(tuple(part.shape), offset, region.global_shape, tensor.device)
            values = unit_values(action.kind, action.cut, index_words(start, gamma, index.reshape(-1)))
            values.mul_(scale)
            part.copy_(values.view(part.shape))
            drawn += index.numel()
        zero_row_post(tensor, action, region)
        return drawn


def _no_grad(job: Callable[[], int], inference: bool = False) -> int:
    # grad mode is thread-local (pool threads start with it on), as are inference mode (a model made under
    # torch.inference_mode() is written under it) and TorchScript's optimizing flag: off, the compiled chains
    # run exactly the ops they list (no profiling runs, no specialization by shape)
    with torch.inference_mode(inference), torch.no_grad(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
        return job()


def _batches(pieces: list[Piece]) -> list[list[Piece]]:
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    size = 0
    for piece in pieces:
        n = piece[3] - piece[2]
        if current and size + n > BLOCK:
            batches.append(current)
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        batches.append(current)
    return batches


def _ints(what: str, values: object) -> tuple[int, ...]:
    """``values`` as a tuple of ints (a list, tuple or torch.Size of integers), else an InitError."""
    try:
        if not isinstance(values, (tuple, list, torch.Size)) or any(isinstance(v, bool) for v in values):
            raise TypeError
        return tuple(operator.index(v) for v in values)
    except TypeError:
        raise InitError(f"{what} must be a tuple of integers, one per dimension; got {what}={values!r}.") from None


def keyed_(
    tensor: torch.Tensor,
    distribution: str = "normal",
    param: float = 1.0,
    *,
    seed: int,
    name: str,
    global_shape: Sequence[int] | None = None,
    offset: Sequence[int] | None = None,
    cut: float | None = 2.0,
    chunks: int = 1,
) -> torch.Tensor:
    r"""Fill ``tensor`` in place from the keyed stream of ``(seed, name)`` and return it.

    Element ``i`` (flat, row-major, logical order) gets a value that depends only on ``seed``, ``name``,
    ``i`` and the distribution: the same on every device and thread count, and the same whether the
    tensor is filled whole or block by block. ``param`` is the std (``normal``; ``truncated_normal``, whose
    values are cut at $\pm$``cut`` underlying sigmas, 2 when None, and rescaled to std ``param``), the bound $b$ of
    $\mathcal U(-b, b)$ (``uniform``), or the gain (``orthogonal``: a QR of the whole matrix's normal values,
    which depends on the device's linear algebra). ``reinit(model, scheme, seed=s)`` fills each parameter
    this way, with ``name`` its qualified name, and its report entry holds the arguments (``distribution``,
    ``param``, ``cut``, ``chunks``). ``chunks`` (orthogonal only): factorize each of that many equal dim-0
    blocks on its own, as packed RNN gates are.

    The keyed normal is an inverse-CDF table read at one of $2^{31}$ tail probabilities per sign (see the
    distributed guide), so its tails are capped and coarse: $|z|$ never exceeds 6.338 sigma
    ($-\Phi^{-1}(2^{-33}) = 6.33796$), and above 6 sigma it takes only four magnitudes (6.0310, 6.0851, 6.1664,
    6.3380; probability $2^{-29} = 1.9 \cdot 10^{-9}$ per element against the normal's $2.0 \cdot 10^{-9}$).
    Below 6 sigma the steps shrink fast (1,227 magnitudes between 5 and 6 sigma; within 3.2 float32 ulps of
    the exact quantile from 0.1 sigma). Use ``reinit`` without ``seed=`` (torch's ``normal_``) if an analysis needs
    draws beyond 6.3 sigma.

    To fill a shard, pass the global tensor's ``global_shape`` and the block's per-dimension ``offset``:
    only the block's own elements are computed (orthogonal excepted), and gathering the blocks gives the
    whole tensor's values bit for bit.

    Raises:
        InitError: for a negative or non-integer seed, an unknown distribution, a block outside
            ``global_shape``, or parameters `check_draw` refuses.
    """
    check_int("seed", seed, minimum=0)
    if not isinstance(name, str):
        raise InitError(f"name must be a str (the parameter's qualified name); got name={name!r}.")
    if distribution not in DRAWN:
        raise InitError(f"distribution must be one of {', '.join(DRAWN)}; got {distribution!r}.")
    if not tensor.is_floating_point():
        raise InitError(f"keyed_ fills floating-point tensors; got dtype {tensor.dtype}.")
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        raise InitError(
            "keyed_ got a tensor created under torch.inference_mode(), which cannot be written outside it; call "
            "keyed_ inside torch.inference_mode(), or make the tensor outside it."
        )
    if isinstance(param, bool) or not isinstance(param, (int, float)):
        raise InitError(f"param must be a number (the std, bound or gain); got param={param!r}.")
    cut = 2.0 if cut is None else cut  # None, as a report entry of a draw that is not truncated holds
    if isinstance(cut, bool) or not isinstance(cut, (int, float)) or not cut > 0:
        raise InitError(f"cut must be a positive number of underlying sigmas; got cut={cut!r}.")
    check_int("chunks", chunks, minimum=1)
    if tensor.dim() and tensor.shape[0] % chunks:
        raise InitError(
            f"chunks must be a positive int dividing dim 0 (size {tensor.shape[0] if tensor.dim() else 0}); got "
            f"chunks={chunks!r}."
        )
    if chunks > 1 and distribution != "orthogonal":
        raise InitError(f"chunks applies to orthogonal draws only (a QR per block); got distribution={distribution!r}.")
    if distribution == "orthogonal" and tensor.dim() < 2:
        raise InitError(
            f"orthogonal needs a tensor with at least 2 dimensions (rows x the rest); got shape {tuple(tensor.shape)}."
        )
    region = None
    if global_shape is not None or offset is not None:
        shape = _ints("global_shape", global_shape if global_shape is not None else tuple(tensor.shape))
        where = _ints("offset", offset if offset is not None else (0,) * len(shape))
        if (
            len(shape) != tensor.dim()
            or len(where) != tensor.dim()
            or any(o < 0 or o + n > g for o, n, g in zip(where, tensor.shape, shape, strict=True))
        ):
            raise InitError(
                f"a block of shape {tuple(tensor.shape)} at offset {where} does not fit in global_shape {shape}: "
                "pass one offset per dimension, with offset + block size <= global size in each."
            )
        region = Region(shape, where)
    check_draw(tensor, distribution, param, a=-cut, b=cut)  # type: ignore[arg-type]
    writer = KeyedWriter(seed)
    with torch.no_grad():
        writer.add(Action(distribution, float(param), chunks=chunks, cut=cut), tensor, name, region)  # type: ignore[arg-type]
        writer.run()
    return tensor
