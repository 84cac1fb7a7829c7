r"""The keyed stream, version 2: every value a pure function of (seed, name, flat index).

Construction (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014, the
generator behind Java's ``SplittableRandom``): a stream is a pair (start, gamma) of 64-bit integers and
its ``p``-th 64-bit word is

$$ w_p = \mathrm{mix64}(\mathrm{start} + \gamma\,p \bmod 2^{64}) $$

with mix64 the SplitMix64 finaliser (Stafford's Mix13: two xor-shift-multiply rounds and a final
xor-shift). ``(start, gamma)`` come from a BLAKE2b hash of ``("torchinit/stream/v2", seed, name)``; gamma
is made odd and conditioned as in ``SplittableRandom.mixGamma`` (at least 24 bit transitions). Element
``i`` of a tensor takes the low 32 bits of $w_{\lfloor i/2 \rfloor}$ when ``i`` is even and the high 32
bits when it is odd.

Everything after the hash is integer arithmetic or a single IEEE-rounded float32 operation per kernel
(int to float conversion, +, *), in separate torch kernels so no device fuses two into one
multiply-add: the same (seed, name, index) gives bitwise the same value on every device and with any
thread count. No transcendental function is evaluated at draw time:

- uniform: $(2k+1)\,b/2^{24}$ for the top 24 bits $k$ of the word read as a signed integer, so the values
  are symmetric about 0 and never reach $\pm b$;
- normal: the top bit is the sign and the low 31 bits $V$ give the tail probability
  $t = (V + \tfrac12)/2^{32}$ (rounded to float32); $|z| = -\Phi^{-1}(t)$ interpolated linearly in a table
  with 2048 entries per binary octave of $t$ (built once from float64 ``ndtri``; within 3.2 float32 ulps
  of $|z|$ where $|z| \ge 0.1$ and 1e-8 below, while $t$'s own float32 rounding moves $|z|$ by about one
  ulp), so $|z|$ reaches 6.34;
- truncated normal (cut at $\pm c$): the same, with $V$ mapped linearly (in integers) onto
  $[\Phi(-c)\,2^{32}, 2^{31})$, then scaled by $\sigma/\mathrm{sd}(Z)$ so the std is $\sigma$ after truncation.

The values are computed in float32 and rounded once to the tensor's dtype (float64 tensors get float32
values). The version is part of the key: a future stream gets a new version and these values stay
reproducible by this one.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable

import torch

STREAM_VERSION = 2
"""The stream's version; part of every key, and of the contract the known-answer tests pin."""

_MASK64 = (1 << 64) - 1
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # SplitMix64 / Stafford Mix13
_G1, _G2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53  # MurmurHash3 fmix64, SplittableRandom.mixGamma


def signed64(v: int) -> int:
    """The int64 with the bit pattern of ``v mod 2^64`` (how an unsigned 64-bit word sits in a tensor)."""
    v &= _MASK64
    return v - (1 << 64) if v >= 1 << 63 else v


def mix64(z: int) -> int:
    """The SplitMix64 finaliser on a Python int (the reference the tensor code is tested against)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _C1) & _MASK64
    z = ((z ^ (z >> 27)) * _C2) & _MASK64
    return z ^ (z >> 31)


def _mix_gamma(z: int) -> int:
    z = ((z ^ (z >> 33)) * _G1) & _MASK64
    z = ((z ^ (z >> 33)) * _G2) & _MASK64
    z = (z ^ (z >> 33)) | 1
    return z ^ 0xAAAAAAAAAAAAAAAA if bin(z ^ (z >> 1)).count("1") < 24 else z


def stream_key(seed: int, name: str) -> tuple[int, int]:
    """(start, gamma) of the stream of parameter ``name`` under ``seed``, as unsigned 64-bit ints."""
    digest = hashlib.blake2b(f"torchinit/stream/v{STREAM_VERSION}\0{seed}\0{name}".encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), _mix_gamma(int.from_bytes(digest[8:], "little"))


def word(start: int, gamma: int, p: int) -> int:
    """The ``p``-th 64-bit word of the stream (start, gamma), in Python ints."""
    return mix64(start + gamma * p)


_SHIFTS = ((30, (1 << 34) - 1, signed64(_C1)), (27, (1 << 37) - 1, signed64(_C2)), (31, (1 << 33) - 1, 0))


class Workspace:
    """Scratch tensors reused across blocks (one per thread): fresh megabyte-sized allocations cost page
    faults on every block. ``get(slot, dtype, n, device)`` returns the first ``n`` elements of a buffer."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

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
            buffer = self.buffers[key] = make(n, dtype=dtype, device=device)
        return buffer[:n]

    def arange(self, n: int, device: torch.device) -> torch.Tensor:
        """0, 1, ..., n - 1 as int64, kept between calls."""
        return self.get("arange", torch.int64, n, device, make=torch.arange)


_local = threading.local()


def workspace() -> Workspace:
    """This thread's `Workspace`."""
    ws: Workspace | None = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = Workspace()
    return ws


def mix_(z: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """mix64 in place on an int64 tensor (two's-complement wrap-around; ``>>`` is arithmetic, hence the masks)."""
    for shift, mask, multiplier in _SHIFTS:
        torch.bitwise_right_shift(z, shift, out=scratch)
        scratch.bitwise_and_(mask)
        z.bitwise_xor_(scratch)
        if multiplier:
            z.mul_(multiplier)
    return z


def words(start: torch.Tensor | int, gamma: torch.Tensor | int, p: torch.Tensor) -> torch.Tensor:
    """The 64-bit words ``p`` (int64 tensor) of the streams (start, gamma), as int64 (bit patterns)."""
    z = torch.mul(p, gamma if isinstance(gamma, torch.Tensor) else signed64(gamma))
    z.add_(start if isinstance(start, torch.Tensor) else signed64(start))
    return mix_(z, torch.empty_like(z))


def range_words(
    start: int, gamma: int, lo: int, hi: int, device: torch.device, ws: Workspace | None = None
) -> torch.Tensor:
    """The 32-bit words of elements ``lo`` .. ``hi - 1`` (int32 tensor): one 64-bit word per two elements.

    With a workspace the result is a view of its buffer, valid until the workspace is used again."""
    p0, p1 = lo >> 1, (hi + 1) >> 1
    first = torch.tensor(signed64(start + gamma * p0))  # start + gamma (p0 + k): a CPU scalar on any device
    if ws is None:
        z = torch.add(first, torch.arange(p1 - p0, dtype=torch.int64, device=device), alpha=signed64(gamma))
        scratch = torch.empty_like(z)
    else:
        z = ws.get("z", torch.int64, p1 - p0, device)
        torch.add(first, ws.arange(p1 - p0, device), alpha=signed64(gamma), out=z)
        scratch = ws.get("scratch", torch.int64, p1 - p0, device)
    w = mix_(z, scratch).view(torch.int32)  # little-endian: the low half first, as index_words takes it
    return w[lo - 2 * p0 : hi - 2 * p0]


def index_words(start: int, gamma: int, index: torch.Tensor) -> torch.Tensor:
    """The 32-bit words of the elements at flat ``index`` (int64 tensor of any shape), as int32."""
    w = words(start, gamma, torch.bitwise_right_shift(index, 1))
    w.bitwise_right_shift_(torch.bitwise_and(index, 1).mul_(32))
    return w.to(torch.int32)  # the low 32 bits


# --- mapping 32-bit words to values ----------------------------------------------------------------

_J = 11  # sub-intervals per binary octave of t: 2^J
_S = 23 - _J  # float32 mantissa bits left for the position within a sub-interval
_FIRST = 126  # float32 exponent field of 0.5, the smallest f = V + 1/2
_ROWS = (158 + 1) << _J  # f reaches 2^31 (exponent field 158); rows below _FIRST << _J are never read
_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
_table_lock = threading.Lock()


def _build_table() -> torch.Tensor:
    # Row r = (float32 bits of f) >> S covers f = 2^e (1 + (j 2^S + x) / 2^23), x in [0, 2^S), for
    # r = (e + 127) 2^J + j; t = f / 2^32 and |z| = -ndtri(t), interpolated linearly between the
    # sub-interval's ends (so |z| is continuous and monotone in V): c0 + c1 x, x = f - (left end).
    used = torch.arange(_FIRST << _J, _ROWS, dtype=torch.float64)
    exponent = torch.floor(used / (1 << _J)) - 127
    j = used - torch.floor(used / (1 << _J)) * (1 << _J)
    ends = torch.exp2(exponent)[:, None] * (
        1 + (j[:, None] + torch.tensor([0.0, 1.0], dtype=torch.float64)) / (1 << _J)
    )
    values = -torch.special.ndtri(ends * 2.0**-32) + 0.0  # + 0.0: |z| at t = 1/2 is +0, not -0
    table = torch.zeros((2, _ROWS), dtype=torch.float32)
    table[0, _FIRST << _J :] = values[:, 0].to(torch.float32)
    table[1, _FIRST << _J :] = ((values[:, 1] - values[:, 0]) / (torch.exp2(exponent) * 2.0**-_J)).to(torch.float32)
    return table


def _table(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with _table_lock:
        tables = _tables.get(device)
        if tables is None:
            cpu = _tables.get(torch.device("cpu"))
            coeffs = torch.stack(cpu) if cpu is not None else _build_table()
            tables = _tables[device] = (coeffs[0].to(device), coeffs[1].to(device))
        return tables


def unit_uniform(w: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    r"""$(2k+1)$ as float32 for the top 24 bits $k$ of each signed word: uniform on $(-2^{24}, 2^{24})$."""
    k = torch.bitwise_right_shift(w, 7)
    k.bitwise_or_(1)
    if out is None:
        return k.to(torch.float32)
    return out.copy_(k)


def unit_normal(
    w: torch.Tensor, cut: float | None = None, out: torch.Tensor | None = None, ws: Workspace | None = None
) -> torch.Tensor:
    """Standard normal values (float32) from int32 words; cut to [-cut, cut] when ``cut`` is given.

    ``out``: a float32 tensor of w's size to write into; ``ws``: scratch buffers to reuse."""
    n, device = w.numel(), w.device
    ws = ws if ws is not None else Workspace()
    # V: the low 31 bits, in the mixer's scratch buffer (free once the words are made; not w's buffer)
    v = torch.bitwise_and(
        w, (1 << 31) - 1, out=ws.get("scratch", torch.int64, (n + 1) >> 1, device).view(torch.int32)[:n]
    )
    if cut is not None:
        low = round(0.5 * math.erfc(cut / math.sqrt(2.0)) * 2.0**32)  # t = Phi(-cut)
        wide = ws.get("wide", torch.int64, n, device).copy_(v)
        wide.mul_((1 << 31) - low)
        wide.bitwise_right_shift_(31)
        wide.add_(low)
        v.copy_(wide)
    f = ws.get("f", torch.float32, n, device).copy_(v)
    f.add_(0.5)
    bits = f.view(torch.int32)
    row = torch.bitwise_right_shift(bits, _S, out=ws.get("row", torch.int32, n, device))
    # x = f - (f with its low S mantissa bits cleared): exact (same binade), in units of f
    left = torch.bitwise_and(bits, -(1 << _S), out=v).view(torch.float32)
    x = torch.sub(f, left, out=left)
    c0, c1 = _table(device)
    z = torch.index_select(c1, 0, row, out=out if out is not None else torch.empty(n, device=device))
    z.mul_(x)
    z.add_(torch.index_select(c0, 0, row, out=f))
    # the sign: the word's top bit, or-ed into |z| (sign bit clear: c0 >= 0, the interpolation is monotone and
    # +0 + -0 is +0), which is copysign bit for bit, in two integer kernels that beat copysign's one
    z.view(torch.int32).bitwise_or_(torch.bitwise_and(w, -(1 << 31), out=row))
    return z
