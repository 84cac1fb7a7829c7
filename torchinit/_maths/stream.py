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
thread count. On CPU the kernel chains run as TorchScript functions (`SCRIPTED`): the same kernels in
the same order, without the GIL between them, and without TorchScript's optimizer. No transcendental
function is evaluated at draw time:

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
import warnings
from collections.abc import Callable

import torch

from torchinit._maths.workspace import Workspace

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


def prepare_table(device: torch.device) -> None:
    """Build the normal table (or copy it to ``device``) now, once per process: a workspace reservation asks."""
    _table(device)


def _mix_into(src: torch.Tensor, z: torch.Tensor, scratch: torch.Tensor) -> None:
    # z = mix64(src) on int64 tensors (z may be src): two's-complement wrap-around, and ``>>`` is arithmetic,
    # hence the masks. The literals are _C1 and _C2 as signed int64 (tests check them): TorchScript source.
    torch.bitwise_right_shift(src, 30, out=scratch)
    scratch.bitwise_and_((1 << 34) - 1)
    torch.bitwise_xor(src, scratch, out=z)
    z.mul_(-4658895280553007687)
    torch.bitwise_right_shift(z, 27, out=scratch)
    scratch.bitwise_and_((1 << 37) - 1)
    z.bitwise_xor_(scratch)
    z.mul_(-7723592293110705685)
    torch.bitwise_right_shift(z, 31, out=scratch)
    scratch.bitwise_and_((1 << 33) - 1)
    z.bitwise_xor_(scratch)


def mix_(z: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """mix64 in place on an int64 tensor, using ``scratch`` (an int64 tensor of z's size)."""
    kernel(_mix_into, z)(z, z, scratch)
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
    first = torch.tensor(
        signed64(start + gamma * p0), device="cpu"
    )  # start + gamma (p0 + k): a CPU scalar on any device
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
    used = torch.arange(_FIRST << _J, _ROWS, dtype=torch.float64, device="cpu")
    exponent = torch.floor(used / (1 << _J)) - 127
    j = used - torch.floor(used / (1 << _J)) * (1 << _J)
    ends = torch.exp2(exponent)[:, None] * (
        1 + (j[:, None] + torch.tensor([0.0, 1.0], dtype=torch.float64, device="cpu")) / (1 << _J)
    )
    values = -torch.special.ndtri(ends * 2.0**-32) + 0.0  # + 0.0: |z| at t = 1/2 is +0, not -0
    table = torch.zeros((2, _ROWS), dtype=torch.float32, device="cpu")
    table[0, _FIRST << _J :] = values[:, 0].to(torch.float32)
    table[1, _FIRST << _J :] = ((values[:, 1] - values[:, 0]) / (torch.exp2(exponent) * 2.0**-_J)).to(torch.float32)
    return table


def _table(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    with _table_lock:
        tables = _tables.get(device)
        if tables is None:
            with torch.inference_mode(False):  # kept for the process: not an inference tensor
                tables = _tables[device] = _device_tables(device)
        return tables


def _device_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cpu = _tables.get(torch.device("cpu"))
    coeffs = torch.stack(cpu) if cpu is not None else _build_table()
    return coeffs[0].to(device), coeffs[1].to(device)


def _uniform_into(w: torch.Tensor, k: torch.Tensor, out: torch.Tensor) -> None:
    # (2k + 1) for the top 24 bits k of each signed word, as float32 (TorchScript source; k: int32 scratch)
    torch.bitwise_right_shift(w, 7, out=k)
    k.bitwise_or_(1)
    out.copy_(k)


def unit_uniform(w: torch.Tensor, out: torch.Tensor | None = None, ws: Workspace | None = None) -> torch.Tensor:
    r"""$(2k+1)$ as float32 for the top 24 bits $k$ of each signed word: uniform on $(-2^{24}, 2^{24})$."""
    n, device = w.numel(), w.device
    k = torch.empty(n, dtype=torch.int32, device=device) if ws is None else ws.get("row", torch.int32, n, device)
    out = out if out is not None else torch.empty(n, dtype=torch.float32, device=device)
    kernel(_uniform_into, w)(w, k, out)
    return out


def _low_word(cut: float) -> int:
    """The smallest V of a normal cut at +-cut: Phi(-cut) 2^32 (V maps linearly onto [it, 2^31))."""
    return round(0.5 * math.erfc(cut / math.sqrt(2.0)) * 2.0**32)


def _normal_into(
    w: torch.Tensor,
    v: torch.Tensor,
    x: torch.Tensor,
    f: torch.Tensor,
    bits: torch.Tensor,
    row: torch.Tensor,
    out: torch.Tensor,
    out_bits: torch.Tensor,
    c0: torch.Tensor,
    c1: torch.Tensor,
    wide: torch.Tensor,
    low: int,
) -> None:
    # The normal mapping (TorchScript source; views are made by the caller, as TorchScript has no
    # view(dtype)): v (int32) and x (float32) share a buffer, as do f and bits, and out and out_bits.
    # Literals: 2^31 - 1, S = 12 (so -(1 << 12) clears S mantissa bits) and the sign bit.
    torch.bitwise_and(w, 2147483647, out=v)  # V: the low 31 bits
    if low >= 0:  # truncated: V mapped linearly, in integers, onto [low, 2^31)
        wide.copy_(v)
        wide.mul_(2147483648 - low)
        wide.bitwise_right_shift_(31)
        wide.add_(low)
        v.copy_(wide)
    f.copy_(v)
    f.add_(0.5)
    torch.bitwise_right_shift(bits, 12, out=row)
    # x = f - (f with its low S mantissa bits cleared): exact (same binade), in units of f
    torch.bitwise_and(bits, -4096, out=v)
    torch.sub(f, x, out=x)
    torch.index_select(c1, 0, row, out=out)
    out.mul_(x)
    out.add_(torch.index_select(c0, 0, row, out=f))
    # the sign: the word's top bit, or-ed into |z| (sign bit clear: c0 >= 0, the interpolation is monotone and
    # +0 + -0 is +0), which is copysign bit for bit, in two integer kernels that beat copysign's one
    out_bits.bitwise_or_(torch.bitwise_and(w, -2147483648, out=row))


def unit_normal(
    w: torch.Tensor, cut: float | None = None, out: torch.Tensor | None = None, ws: Workspace | None = None
) -> torch.Tensor:
    """Standard normal values (float32) from int32 words; cut to [-cut, cut] when ``cut`` is given.

    ``out``: a contiguous float32 tensor of w's size to write into; ``ws``: scratch buffers to reuse."""
    n, device = w.numel(), w.device
    ws = ws if ws is not None else Workspace()
    # V, then x: in the mixer's scratch buffer (free once the words are made; not w's buffer)
    v = ws.get("scratch", torch.int64, (n + 1) >> 1, device).view(torch.int32)[:n]
    low = -1
    wide = v  # unused without a cut
    if cut is not None:
        low = _low_word(cut)
        wide = ws.get("wide", torch.int64, n, device)
    f = ws.get("f", torch.float32, n, device)
    out = out if out is not None else torch.empty(n, dtype=torch.float32, device=device)
    c0, c1 = _table(device)
    row = ws.get("row", torch.int32, n, device)
    kernel(_normal_into, w)(
        w, v, v.view(torch.float32), f, f.view(torch.int32), row, out, out.view(torch.int32), c0, c1, wide, low
    )
    return out


def _range_into(
    kind: int,
    low: int,
    first: int,
    gamma: int,
    step: int,
    lead: int,
    n: int,
    scale: float,
    arange: torch.Tensor,
    counter: torch.Tensor,
    z: torch.Tensor,
    w: torch.Tensor,
    scratch: torch.Tensor,
    v: torch.Tensor,
    x: torch.Tensor,
    f: torch.Tensor,
    bits: torch.Tensor,
    row: torch.Tensor,
    wide: torch.Tensor,
    c0: torch.Tensor,
    c1: torch.Tensor,
    out: torch.Tensor,
    out_bits: torch.Tensor,
    dest: torch.Tensor,
    direct: bool,
) -> None:
    # n consecutive elements of one stream, from element `lead` (0 or 1) of word `first`'s pair on, a block
    # of counter.numel() words at a time (TorchScript source: one call, no GIL between the kernels).
    # counter holds start + gamma p for the block's words and is advanced by step = gamma * block, so each block
    # costs one add where a fresh counter costs a multiply. kind: 0 uniform, 1 normal (cut when low >= 0).
    # out/out_bits: float32 scratch for the values, or (direct) the float32 destination itself.
    block = counter.numel()
    torch.mul(arange, gamma, out=counter)
    counter.add_(first)
    done = 0
    while done < n:
        if done > 0:
            counter.add_(step)
        m = min(2 * block - lead, n - done)
        q = (lead + m + 1) // 2
        _mix_into(counter[:q], z[:q], scratch[:q])
        words = w[lead : lead + m]
        if direct:
            values, values_bits = out[done : done + m], out_bits[done : done + m]
        else:
            values, values_bits = out[:m], out_bits[:m]
        if kind == 0:
            _uniform_into(words, v[:m], values)
        else:
            _normal_into(words, v[:m], x[:m], f[:m], bits[:m], row[:m], values, values_bits, c0, c1, wide[:m], low)
        values.mul_(scale)
        if not direct:
            dest[done : done + m].copy_(values)  # rounded once, from the float32 value
        done += m
        lead = 0


def range_values(
    kind: str, cut: float, start: int, gamma: int, lo: int, hi: int, dest: torch.Tensor, scale: float, ws: Workspace
) -> int:
    """Elements ``lo`` .. ``hi - 1`` of the stream (start, gamma) mapped to ``kind`` (uniform, normal,
    truncated_normal cut at +-cut), times ``scale``, written into the flat contiguous ``dest``, `block_words`
    words at a time. Returns the number of 32-bit words computed."""
    device = dest.device
    p0 = lo >> 1
    pairs = ((hi + 1) >> 1) - p0
    block = min(pairs, block_words(device))
    n = 2 * block
    counter = ws.get("counter", torch.int64, block, device)
    z = ws.get("z", torch.int64, block, device)
    scratch = ws.get("scratch", torch.int64, block, device)
    v = scratch.view(torch.int32)
    low = -1
    wide = v
    if kind == "truncated_normal":
        low = _low_word(cut)
        wide = ws.get("wide", torch.int64, n, device)
    f = ws.get("f", torch.float32, n, device)
    direct = dest.dtype == torch.float32
    out = dest if direct else ws.get("out", torch.float32, n, device)
    c0, c1 = _table(device)
    kernel(_range_into, dest)(
        0 if kind == "uniform" else 1,
        low,
        signed64(start + gamma * p0),
        signed64(gamma),
        signed64(gamma * block),
        lo & 1,
        hi - lo,
        scale,
        ws.arange(block, device),
        counter,
        z,
        z.view(torch.int32),
        scratch,
        v,
        v.view(torch.float32),
        f,
        f.view(torch.int32),
        ws.get("row", torch.int32, n, device),
        wide,
        c0,
        c1,
        out,
        out.view(torch.int32),
        dest,
        direct,
    )
    return 2 * pairs


BLOCK_WORDS = 1 << 16
"""64-bit words per pass of kernels in `range_values` on CPU (two elements each): the pass's scratch stays
near the caches. Only speed and scratch memory depend on it, never the values."""

DEVICE_BLOCK_WORDS = 1 << 22
"""The same on other devices (CUDA), where each kernel is a launch from Python: larger passes, fewer launches
(about 200 MB of scratch per worker)."""


def block_words(device: torch.device) -> int:
    """Words per pass of `range_values` on ``device``."""
    return BLOCK_WORDS if device.type == "cpu" else DEVICE_BLOCK_WORDS


# --- running the kernel chains compiled ------------------------------------------------------------

SCRIPTED = True
"""Run the kernel chains (`KERNELS`: `range_values`, `mix_`, `unit_normal`, `unit_uniform`) on CPU tensors as
TorchScript functions when torch can
compile them: the same ops in the same order, so the same values, but one call runs them all without
the GIL, so parallel workers' kernels no longer wait for each other between kernels. False: eager
(the fallback where TorchScript is unavailable; CUDA always runs eager)."""

_compiled: dict[Callable[..., None], Callable[..., None]] = {}
_compile_lock = threading.Lock()


def compile_kernels() -> None:
    """Compile the kernel chains now (once per process), in the calling thread: before worker threads start,
    so no worker compiles (``warnings.catch_warnings``, around the deprecation notice, is process-wide)."""
    cpu = torch.empty(0, device="cpu")
    for fn in KERNELS:
        kernel(fn, cpu)


KERNELS = (_range_into, _mix_into, _normal_into, _uniform_into)
"""The kernel chains `kernel` compiles."""


def kernel(fn: Callable[..., None], like: torch.Tensor) -> Callable[..., None]:
    """``fn`` compiled by TorchScript for CPU tensors (once per process; ``fn`` itself if that fails)."""
    if not SCRIPTED or like.device.type != "cpu":
        return fn
    found = _compiled.get(fn)
    if found is None:
        with _compile_lock:
            found = _compiled.get(fn)
            if found is None:
                try:
                    with warnings.catch_warnings():  # torch.jit.script is deprecated; the fallback is eager
                        # its notice only (a DeprecationWarning in torch 2.13, a FutureWarning in 2.14)
                        warnings.filterwarnings("ignore", message=r"\W*torch\.jit\.script\W* is deprecated")
                        found = torch.jit.script(fn)
                except Exception:  # no TorchScript (or no source files): eager, the same values
                    found = fn
                _compiled[fn] = found
    return found
