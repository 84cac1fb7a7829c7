"""Keyed generation: each parameter's values are a function of (seed, qualified name) only.

A parameter is drawn in fixed-size chunks of its flattened (row-major, logical) order; chunk ``c`` of
parameter ``name`` comes from its own generator stream, keyed by ``(seed, name, c)``. So the values
do not depend on walk order, on which other modules exist, on the number of threads, or on how the
tensor is sharded: a shard draws only the chunks it overlaps. Chunks are filled from a thread pool.

Streams: torch's CPU generator is MT19937 and ``manual_seed`` only uses 32 bits of a seed, so keyed
streams set the full 19937-bit state instead, from a SHAKE-128 expansion of the key: two distinct
keys share a stream with probability about 2^-128, like a counter-based generator's keys. CUDA
generators (Philox) take a 64-bit seed hashed from the key.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from torchinit._draw import Action, fill

CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}
"""Chunk size (elements) per device type; part of the definition of the keyed values."""
_DEFAULT_CHUNK = 1 << 24

_MT_WORDS = 624
_MT_OFFSET = 24  # where torch's CPU generator state keeps the 624 MT words (one per uint64)
_template: bytes | None = None
_template_lock = threading.Lock()


def _mt_template() -> bytes:
    global _template
    with _template_lock:
        if _template is None:
            state = torch.Generator().manual_seed(1).get_state()
            # Layout check: seed 1 gives MT word 0 = 1 and word 1 = 1812433254 (Matsumoto-Nishimura init).
            words = state[_MT_OFFSET : _MT_OFFSET + 16].view(torch.int64).tolist()
            if words != [1, 1812433254] or state.numel() < _MT_OFFSET + 8 * _MT_WORDS:
                raise RuntimeError("unexpected torch CPU generator state layout; keyed generation is unavailable")
            _template = bytes(state.tolist())
        return _template


def key_bytes(seed: int, name: str, purpose: str, index: int) -> bytes:
    """The stream key of one chunk (or orthogonal block) of one parameter."""
    return f"torchinit/v1\0{seed}\0{name}\0{purpose}\0{index}".encode()


def keyed_generator(key: bytes, device: torch.device) -> torch.Generator:
    """A generator whose stream is a function of ``key`` alone."""
    if device.type == "cpu":
        digest = hashlib.shake_128(key).digest(4 * _MT_WORDS)
        state = bytearray(_mt_template())
        for byte in range(4):  # each 32-bit little-endian word into the low half of its uint64 slot
            state[_MT_OFFSET + byte : _MT_OFFSET + 8 * _MT_WORDS : 8] = digest[byte::4]
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(state, dtype=torch.uint8))
        return generator
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1)
    return generator


def chunk_elements(device: torch.device) -> int:
    """The chunk size used on this device type."""
    return CHUNK_ELEMENTS.get(device.type, _DEFAULT_CHUNK)


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


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for size in reversed(shape):
        strides.append(acc)
        acc *= size
    return tuple(reversed(strides))


class KeyedWriter:
    """Collects keyed fills as independent tasks, runs them on a thread pool, then finishes up."""

    def __init__(self, seed: int, threads: int | None = None) -> None:
        self.seed = seed
        self.threads = max(1, threads if threads is not None else torch.get_num_threads())
        self.tasks: list[tuple[int, Callable[[], None]]] = []  # (elements, task)
        self.finish: list[Callable[[], None]] = []
        self.drawn = 0

    def add(self, action: Action, tensor: torch.Tensor, name: str, region: Region | None = None) -> None:
        """Schedule ``action`` on ``tensor`` (the local block of ``region`` when sharded)."""
        if action.kind in ("skip", "keep") or tensor.numel() == 0:
            return
        if not action.draws:
            self.finish.append(lambda: _fill_post(action, tensor, region))
            return
        if action.kind == "orthogonal":  # a QR of the whole matrix: not chunkable
            self._whole(action, tensor, name, region)
            return
        self._chunked(action, tensor, name, region)

    def _chunked(self, action: Action, tensor: torch.Tensor, name: str, region: Region | None) -> None:
        chunk = chunk_elements(tensor.device)
        if region is None:
            lo, hi = 0, tensor.numel()
            direct = tensor.is_contiguous()
            buffer = (
                tensor.view(-1) if direct else torch.empty(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
            )
            base = 0
        else:
            lo, hi = region.flat_range(tuple(tensor.shape))
            direct = False
            base = (lo // chunk) * chunk
            end = min(math.ceil(hi / chunk) * chunk, math.prod(region.global_shape))
            buffer = torch.empty(end - base, dtype=tensor.dtype, device=tensor.device)
        total = tensor.numel() if region is None else math.prod(region.global_shape)
        for c in range(lo // chunk, (hi - 1) // chunk + 1):
            start = c * chunk
            stop = min(start + chunk, total)
            piece = buffer[start - base : stop - base]
            key = key_bytes(self.seed, name, "chunk", c)
            self.drawn += piece.numel()
            self.tasks.append((piece.numel(), functools.partial(_fill_keyed, action, piece, key)))
        if not direct:
            self.finish.append(functools.partial(_place, buffer, base, tensor, region, action))
        elif action.zero_row is not None:
            self.finish.append(functools.partial(_zero_row, tensor, action, None))

    def _whole(self, action: Action, tensor: torch.Tensor, name: str, region: Region | None) -> None:
        shape = region.global_shape if region is not None else tuple(tensor.shape)
        full = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
        key = key_bytes(self.seed, name, action.kind, 0)
        self.drawn += full.numel()
        self.tasks.append((full.numel(), functools.partial(_fill_keyed, action, full, key)))
        self.finish.append(functools.partial(_place, full.reshape(-1), 0, tensor, region, action))

    def run(self) -> None:
        """Fill every chunk (in parallel), then copy, scatter and write constants.

        Tasks are split once into ``threads`` lists of about equal element counts (largest first,
        each to the least-loaded list), so the pool costs a few submissions, not one per tensor.
        """
        workers = min(self.threads, len(self.tasks))
        if workers <= 1:
            for _, task in self.tasks:
                task()
        else:
            lists: list[list[Callable[[], None]]] = [[] for _ in range(workers)]
            loads = [0] * workers
            for size, task in sorted(self.tasks, key=lambda t: -t[0]):
                least = loads.index(min(loads))
                lists[least].append(task)
                loads[least] += size
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(_run_all, tasks) for tasks in lists]:
                    future.result()
        for step in self.finish:
            step()


def _run_all(tasks: list[Callable[[], None]]) -> None:
    for task in tasks:
        task()


def _fill_keyed(action: Action, piece: torch.Tensor, key: bytes) -> None:
    with torch.no_grad():  # grad mode is thread-local: pool threads start with it on
        fill(action, piece, keyed_generator(key, piece.device))


def _zero_row(t: torch.Tensor, action: Action, region: Region | None) -> None:
    if action.zero_row is None:
        return
    row = action.zero_row - (region.offset[0] if region is not None else 0)
    if 0 <= row < t.shape[0]:
        t[row].fill_(0)


def local_block(full_flat: torch.Tensor, base: int, tensor: torch.Tensor, region: Region) -> torch.Tensor:
    """The elements of ``region``'s local block, taken from a flat global range starting at ``base``."""
    if tuple(tensor.shape[1:]) == region.global_shape[1:]:  # a block of whole rows (Shard(0)): one slice
        first, last = region.flat_range(tuple(tensor.shape))
        return full_flat[first - base : last - base].view(tensor.shape)
    strides = _strides(region.global_shape)
    index = torch.zeros((), dtype=torch.int64, device=tensor.device)
    for dim, (o, n, s) in enumerate(zip(region.offset, tensor.shape, strides, strict=True)):
        shape = [1] * tensor.dim()
        shape[dim] = n
        index = index + ((torch.arange(n, device=tensor.device) + o) * s).view(shape)
    return full_flat[index - base]


def _place(flat: torch.Tensor, base: int, tensor: torch.Tensor, region: Region | None, action: Action) -> None:
    """Copy drawn values (a flat global range starting at ``base``) into the tensor or its local block."""
    tensor.copy_(flat.view(tensor.shape) if region is None else local_block(flat, base, tensor, region))
    _zero_row(tensor, action, region)


def _fill_post(action: Action, tensor: torch.Tensor, region: Region | None) -> None:
    if action.chunk_values is not None and region is not None:
        # per-chunk constants along dim 0 of the global tensor
        rows = region.global_shape[0] // len(action.chunk_values)
        for i in range(tensor.shape[0]):
            tensor[i].fill_(action.chunk_values[(region.offset[0] + i) // rows])
        return
    fill(action, tensor, None)
