"""Scratch memory for keyed draws: per-worker `Workspace` buffers, reserved before the first write and kept in a
small pool between runs, so that no write allocates (an allocation that fails happens before anything is
written)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

import torch


class Workspace:
    """Scratch tensors reused across blocks (one per worker): fresh megabyte-sized allocations cost page
    faults on every block. ``get(slot, dtype, n, device)`` returns the first ``n`` elements of a buffer,
    allocating only when the slot is missing or smaller (counted in ``allocations``)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
        self.allocations = 0

    def get(
        self,
        slot: str,
        dtype: torch.dtype,
        n: int,
        device: torch.device,
        make: Callable[..., torch.Tensor] = torch.empty,
    ) -> torch.Tensor:
        key = (slot, dtype, device)
        buffer = self.buffers.get(key)
        if buffer is None or buffer.numel() < n:
            with torch.inference_mode(False):  # a normal tensor, reusable in and out of inference mode
                buffer = self.buffers[key] = make(n, dtype=dtype, device=device)
            self.allocations += 1
        return buffer[:n]

    def arange(self, n: int, device: torch.device) -> torch.Tensor:
        """0, 1, ..., n - 1 as int64, kept between calls."""
        return self.get("arange", torch.int64, n, device, make=torch.arange)

    def reserve(self, needs: Needs) -> None:
        """Allocate now every buffer ``needs`` lists (so the writes that follow allocate nothing of a block's
        size: a failing allocation happens before anything is written)."""
        for (slot, dtype, device), n in needs.items():
            self.get(slot, dtype, n, device, make=torch.arange if slot == "arange" else torch.empty)


Needs = dict[tuple[str, torch.dtype, torch.device], int]
"""Buffer sizes per (slot, dtype, device): what a pass of kernels asks its `Workspace` for."""


def pass_needs(path: str, n: int, device: torch.device, *, truncated: bool, converting: bool, into: Needs) -> None:
    """Add to ``into`` (keeping the larger size) the buffers one pass over at most ``n`` elements asks for:
    ``path`` is ``range`` (`range_values`; ``converting``: the destination is not float32), ``stack`` or
    ``batch`` (the batched path, which also needs the per-word piece index and scales)."""
    words = (n >> 1) + 1  # a pass over n elements starting on an odd one touches n/2 + 1 words
    i64, i32, f32 = torch.int64, torch.int32, torch.float32
    sizes = {("z", i64): words, ("scratch", i64): words, ("arange", i64): words, ("f", f32): 2 * words}
    sizes[("row", i32)] = 2 * words
    if path == "range":
        sizes[("counter", i64)] = words
    if path != "range" or converting:
        sizes[("out", f32)] = 2 * words
    if path == "batch":
        sizes.update({("mark", i64): words, ("piece", i64): words, ("pair_scale", f32): words})
    if truncated:
        sizes[("wide", i64)] = 2 * words
    for (slot, dtype), size in sizes.items():
        key = (slot, dtype, device)
        into[key] = max(into.get(key, 0), size)


_local = threading.local()
_spare: list[Workspace] = []  # workspaces of finished runs, reused by the next (their buffers kept)
_spare_lock = threading.Lock()


def workspace() -> Workspace:
    """This thread's `Workspace` (the one `reserved` bound to it, else its own)."""
    ws: Workspace | None = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = Workspace()
    return ws


@contextlib.contextmanager
def reserved(
    count: int, needs: Needs, prepare: Callable[[torch.device], object] | None = None
) -> Iterator[queue.SimpleQueue[Workspace]]:
    """``count`` workspaces with `Workspace.reserve` done for ``needs`` (and ``prepare(device)`` for each device
    they name: the stream's normal table), handed out through a queue (each worker takes one with `bind`) and
    kept for the next run afterwards."""
    with _spare_lock:
        taken = [_spare.pop() if _spare else Workspace() for _ in range(count)]
    try:
        for ws in taken:
            ws.reserve(needs)
        for device in {device for _, _, device in needs} if prepare is not None else ():
            prepare(device)  # type: ignore[misc]
        handed: queue.SimpleQueue[Workspace] = queue.SimpleQueue()
        for ws in taken:
            handed.put(ws)
        yield handed
    finally:
        for ws in taken:  # CUDA scratch is not kept between runs: it would hold device memory
            ws.buffers = {key: buffer for key, buffer in ws.buffers.items() if key[2].type == "cpu"}
        with _spare_lock:
            _spare.extend(taken[: max(0, KEEP - len(_spare))])


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Runs in the block leave the pool of kept workspaces as it was (the writer's probes: a tiny write should
    not decide the buffers of the next real run)."""
    with _spare_lock:
        saved = list(_spare)
    try:
        yield
    finally:
        with _spare_lock:
            _spare[:] = saved


KEEP = 8
"""Workspaces kept between runs (CPU buffers only, a few MB each): enough for the usual worker counts."""


def bind(handed: queue.SimpleQueue[Workspace]) -> Workspace | None:
    """Make the next workspace of ``handed`` this thread's; returns the one it had (for `unbind`)."""
    previous: Workspace | None = getattr(_local, "ws", None)
    _local.ws = handed.get_nowait()
    return previous


def unbind(previous: Workspace | None) -> None:
    """Give this thread back the workspace it had before `bind`."""
    _local.ws = previous
