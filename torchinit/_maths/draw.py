r"""The one draw core: every random write torchinit makes goes through `draw_`, and every planned
write is an `Action` carried out by `write`.

The std arithmetic lives here too, once: $\sigma = \sqrt{\mathrm{scale}/\mathrm{fan}}$ for variance
scaling, and torch's own $\mathrm{gain}/\sqrt{\mathrm{fan}}$ (bit-exact with ``torch.nn.init``) for
the drop-ins and for ``legacy``. A uniform with std $\sigma$ has bound $\sqrt3\,\sigma$.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from torchinit._maths.distributions import SQRT3, check_cutoffs, flips, normal_cdf, truncated_normal_std
from torchinit._types import Distribution, InitError, check_finite, check_int, choice_error

if TYPE_CHECKING:
    from torchinit._maths.fans import Fans


def variance_std(scale: float, fan: float) -> float:
    r"""$\sqrt{\mathrm{scale}/\mathrm{fan}}$: the element std of a variance-scaling rule."""
    return math.sqrt(scale / fan)


def gain_std(gain: float, fan: float) -> float:
    r"""$\mathrm{gain}/\sqrt{\mathrm{fan}}$, in torch's own arithmetic (``kaiming_*_`` and the layer defaults)."""
    return gain / math.sqrt(fan)


def xavier_std(gain: float, fan_in: float, fan_out: float) -> float:
    r"""$\mathrm{gain}\sqrt{2/(\mathrm{fan\_in}+\mathrm{fan\_out})}$, in torch's arithmetic (``xavier_*_``)."""
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


_LABELS = {"normal": "std", "truncated_normal": "std", "uniform": "bound", "orthogonal": "gain", "constant": "value"}
# How far past ``param`` a draw's values reach, in units of param: 10 sigma for a normal (P ~ 1e-23).
_REACH = {"normal": 10.0, "uniform": 1.0, "orthogonal": 1.0, "constant": 1.0}
_RANGES: dict[torch.dtype, tuple[float, float]] = {}


def _dtype_range(dtype: torch.dtype) -> tuple[float, float]:
    # (smallest subnormal, largest finite) of a floating dtype.
    limits = _RANGES.get(dtype)
    if limits is None:
        info = torch.finfo(dtype)
        limits = _RANGES[dtype] = (info.tiny * info.eps, info.max)
    return limits


def check_draw(
    tensor: torch.Tensor,
    distribution: Distribution | Literal["constant"],
    param: float,
    *,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
    source: str | Callable[[], str] = "",
) -> None:
    r"""InitError unless `draw_` can write ``param`` into ``tensor`` as finite, non-vanishing values.

    ``param`` and ``mean`` must be finite; a std or bound must be >= 0; the values the draw can reach
    ($|\mathrm{mean}| + 10\sigma$ for a normal, the bound for a uniform, the cut-off for a truncated
    normal) must stay within the dtype's largest finite value; a nonzero std or bound must not be below its
    smallest subnormal (every value would round to 0). ``source`` names where ``param`` came from, e.g.
    ``"gain=1.41 / sqrt(fan_in=1e-300)"``, for the message (a callable is called only to write one).
    Called by `draw_` before it writes, and by planners before any write.
    """
    limits = _RANGES.get(tensor.dtype)
    reach = _REACH.get(distribution)
    # the common case in two comparisons (a nan fails both): a positive param whose values the dtype holds
    if limits is not None and reach is not None and limits[0] <= param and abs(mean) + param * reach <= limits[1]:
        return
    if param == 0.0 and mean == 0.0 and distribution == "constant":  # zeros: any dtype holds them
        return
    _refuse_draw(tensor, distribution, param, mean, a, b, source)


def _refuse_draw(
    tensor: torch.Tensor,
    distribution: str,
    param: float,
    mean: float,
    a: float,
    b: float,
    source: str | Callable[[], str],
) -> None:
    # The full check, with the messages: zero, negative constants, truncation, other dtypes and every failure.
    label = _LABELS.get(distribution, "param")
    text = source() if callable(source) else source
    where = f" from {text}" if text else ""
    fix = " Fans count connections (usually >= 1) and gains are O(1): check them, or use a wider dtype."
    if not (math.isfinite(param) and math.isfinite(mean)):
        bad = f"{label}={param!r}" if not math.isfinite(param) else f"mean={mean!r}"
        raise InitError(f"a {distribution} draw's {label} and mean must be finite; got {bad}{where}.{fix}")
    if param < 0 and distribution != "constant":
        raise InitError(f"a {distribution} draw's {label} must be >= 0; got {label}={param!r}{where}.")
    if not tensor.is_floating_point():
        return
    if distribution == "truncated_normal":
        check_cutoffs(a, b)
        reach = param / truncated_normal_std(a, b) * min(max(abs(a), abs(b)), 40.0)  # the sampler's clamp
    else:
        reach = abs(param) * _REACH.get(distribution, 1.0)  # a constant may be negative
    smallest, largest = _dtype_range(tensor.dtype)
    if not abs(mean) + reach <= largest:
        raise InitError(
            f"a {distribution} draw's {label} must keep {tensor.dtype} values finite (it reaches "
            f"{abs(mean) + reach:.6g}, the dtype holds {largest:.6g}); got {label}={param:.6g}{where}.{fix}"
        )
    if 0 < abs(param) < smallest:
        raise InitError(
            f"a nonzero {label} must be at least {tensor.dtype}'s smallest subnormal {smallest:.6g}, or every "
            f"value rounds to 0; got {label}={param:.6g}{where}.{fix}"
        )


def draw_(
    tensor: torch.Tensor,
    distribution: Distribution | Literal["constant"],
    param: float,
    generator: torch.Generator | None = None,
    *,
    chunks: int = 1,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
) -> torch.Tensor:
    r"""Fill ``tensor`` in place (under ``no_grad``) and return it.

    ``param`` is the std for ``normal`` and ``truncated_normal``, the bound b of $\mathcal U(-b, b)$ for
    ``uniform``, the gain for ``orthogonal`` (one matrix per each of ``chunks`` blocks along dim 0) and
    the value for ``constant``. ``truncated_normal`` draws $\mu + sZ$ with Z a standard normal cut to
    $[a, b]$ and $s = \mathrm{param}/\mathrm{sd}(Z)$, so the std is ``param`` after truncation.
    ``normal`` and ``uniform`` are torch's own kernels: the same generator state gives torch's values.

    Raises:
        InitError: before writing anything, when `check_draw` refuses the parameters (non-finite, or
            values the dtype cannot hold).
    """
    if torch.is_grad_enabled():  # entering no_grad costs more than the check; planned writes already hold it
        with torch.no_grad():
            return draw_(tensor, distribution, param, generator, chunks=chunks, mean=mean, a=a, b=b)
    check_draw(tensor, distribution, param, mean=mean, a=a, b=b)
    return _kernel(tensor, distribution, param, generator, chunks, mean, a, b)


def _kernel(
    tensor: torch.Tensor,
    distribution: Distribution | Literal["constant"],
    param: float,
    generator: torch.Generator | None,
    chunks: int = 1,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
) -> torch.Tensor:
    # draw_ without its checks: for planned writes, whose values Plan.check has checked (check_draw) already
    if distribution == "normal":
        return tensor.normal_(mean, param, generator=generator)
    if distribution == "uniform":
        return tensor.uniform_(mean - param, mean + param, generator=generator)
    if distribution == "constant":
        return tensor.fill_(param)
    if distribution == "truncated_normal":
        return _truncated_normal(tensor, param, mean, a, b, generator)
    for block in tensor.chunk(chunks, dim=0) if chunks > 1 else (tensor,):
        orthogonal_block(block, param, generator)
    return tensor


CENTRAL_CUTOFF = 3.0
"""Cut-offs within +-3 sigma are drawn by float32 ``erfinv`` (float64 for float64 tensors), as since 0.1."""


def _truncated_normal(
    tensor: torch.Tensor, std: float, mean: float, a: float, b: float, generator: torch.Generator | None
) -> torch.Tensor:
    # Inverse CDF, one uniform per element. Central cut-offs: Z = sqrt(2) erfinv(2u - 1), u ~ U(Phi(a), Phi(b)).
    # Beyond 3 sigma, 2u - 1 near +-1 leaves float32 a handful of values (a = 4.9, b = 5: 6 distinct) and
    # float64 a dozen at a = 8: so there Z = ndtri(u) in float64 with u ~ U(Phi(a'), Phi(b')) on the side of
    # 0 where the tail probabilities are small (the mirror [-b, -a] when [a, b] reaches farther up), exact
    # down to Phi(-37) = 6e-300.
    sigma = std / truncated_normal_std(a, b)
    if max(abs(a), abs(b)) <= CENTRAL_CUTOFF:
        work_dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
        work = tensor if tensor.dtype == work_dtype else torch.empty_like(tensor, dtype=work_dtype)
        work.uniform_(2 * normal_cdf(a) - 1, 2 * normal_cdf(b) - 1, generator=generator)
        work.erfinv_().clamp_(a / math.sqrt(2.0), b / math.sqrt(2.0))
        work.mul_(math.sqrt(2.0) * sigma)
    else:
        mirror = flips(a, b)
        lo, hi = (-b, -a) if mirror else (a, b)
        work = tensor if tensor.dtype == torch.float64 else torch.empty_like(tensor, dtype=torch.float64)
        work.uniform_(normal_cdf(lo), normal_cdf(hi), generator=generator)
        # u = 0 (possible for an infinite cut-off) maps to -inf: clamp to the finite reach of float64.
        torch.special.ndtri(work, out=work).clamp_(max(lo, -40.0), min(hi, 40.0))
        work.mul_(-sigma if mirror else sigma)
    work.add_(mean)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def orthogonal_block(
    block: torch.Tensor, gain: float, generator: torch.Generator | None, normal: torch.Tensor | None = None
) -> None:
    # torch's recipe (QR of a normal matrix, columns sign-corrected by sign(diag R): Haar, Mezzadri 2007),
    # with half precisions drawn and factorized in float32 (torch's QR has no kernel for them). ``normal``:
    # the standard normal values to factorize (keyed draws), instead of drawing them from ``generator``.
    rows = block.size(0)
    cols = block.numel() // rows
    low_precision = block.dtype not in (torch.float32, torch.float64)
    dtype = torch.float32 if low_precision else block.dtype
    if normal is None:
        flat = torch.empty((rows, cols), dtype=dtype, device=block.device).normal_(0, 1, generator=generator)
    else:
        flat = normal.reshape(rows, cols).to(dtype=dtype, copy=True)
    if rows < cols:
        flat.t_()
    q, r = torch.linalg.qr(flat)
    q *= torch.diag(r, 0).sign()
    if rows < cols:
        q.t_()
    if low_precision:
        block.copy_((q * gain).reshape(block.shape))
    else:
        block.copy_(q.reshape(block.shape))
        block.mul_(gain)


ActionKind = Literal["normal", "uniform", "truncated_normal", "orthogonal", "constant", "copy", "keep", "skip"]
"""What a parameter gets: a draw with a law, a constant, a copy of another tensor (a cloned stack under
``legacy``), ``keep`` (the constructed value, a rule's choice) or ``skip`` (untouched, with a reason)."""

KINDS: tuple[ActionKind, ...] = (
    "normal", "uniform", "truncated_normal", "orthogonal", "constant", "copy", "keep", "skip",
)  # fmt: skip
"""The closed set of `ActionKind` values: an `Action` of any other kind is an InitError when it is made."""

DRAWN = ("normal", "uniform", "truncated_normal", "orthogonal")
"""The kinds of action that draw random numbers (the rest: constant, copy, keep, skip)."""

UNWRITTEN = ("keep", "skip")
"""The kinds that write nothing: the writer never sees them."""


@dataclass(frozen=True, slots=True)
class Action:
    """One planned write into one tensor.

    ``param`` is what `draw_` takes: the std (normal, truncated_normal), the bound (uniform), the gain
    (orthogonal) or the value (constant); ``keep`` leaves the value as the model's constructor set it (a
    rule's choice, so not a skip). ``chunk_values`` gives a constant per dim-0 block (an LSTM
    forget-gate bias); ``zero_row`` zeroes one row after the draw (an embedding's padding index).
    """

    kind: ActionKind
    param: float = 0.0
    chunks: int = 1
    chunk_values: tuple[float, ...] | None = None
    zero_row: int | None = None
    fans: Fans | None = None
    formula: str = ""
    reason: str = ""
    cut: float = 2.0  # truncated_normal: cut at +-cut underlying sigmas
    delta: bool = False  # orthogonal: a convolution weight (3+ dims) gets the matrix at its centre tap only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise choice_error("an Action's kind", "kind", self.kind, KINDS)
        if self.delta and self.kind != "orthogonal":
            raise InitError(f"delta=True is a form of orthogonal draw; got kind={self.kind!r}.")
        if type(self.chunks) is not int or self.chunks != 1:
            check_int("an Action's chunks", self.chunks, minimum=1)
        if self.zero_row is not None:
            check_int("an Action's zero_row", self.zero_row)
        if self.chunk_values is not None:
            if not isinstance(self.chunk_values, tuple) or not self.chunk_values:
                raise InitError(f"chunk_values must be a non-empty tuple of numbers; got {self.chunk_values!r}.")
            for value in self.chunk_values:
                check_finite("a chunk value", value)
        cut = self.cut
        if self.kind == "truncated_normal" and not (
            isinstance(cut, (int, float)) and not isinstance(cut, bool) and 0 < cut < math.inf
        ):
            raise InitError(
                f"a truncated_normal draw's cut must be a positive number of sigmas (values in +-cut); got {cut!r}."
            )

    @classmethod
    def with_std(cls, distribution: Distribution, std: float, fans: Fans | None, formula: str) -> Action:
        """The zero-mean draw with element std ``std`` in a variance-scaling shape."""
        param = SQRT3 * std if distribution == "uniform" else std
        return cls(distribution, param, fans=fans, formula=formula)

    @property
    def std(self) -> float | None:
        """The element std this action gives (None for orthogonal and skips)."""
        if self.kind in ("normal", "truncated_normal"):
            return self.param
        if self.kind == "uniform":
            return self.param / SQRT3
        if self.kind == "constant":
            return 0.0
        return None

    @property
    def draws(self) -> bool:
        """Whether the action consumes random numbers."""
        return self.kind in DRAWN

    def describe(self) -> str:
        """A short human description: ``normal(std=0.0625)``, ``orthogonal(gain=1) x4 chunks``."""
        if self.kind == "constant":
            if self.chunk_values is not None:
                return "constant(" + ", ".join(f"{v:g}" for v in self.chunk_values) + " per chunk)"
            return f"constant({self.param:g})"
        if self.kind == "skip":
            return f"skip ({self.reason})" if self.reason else "skip"
        if self.kind == "keep":
            return "kept as constructed"
        name = {"normal": "std", "truncated_normal": "std", "uniform": "bound", "orthogonal": "gain"}[self.kind]
        text = f"{'delta_' if self.delta else ''}{self.kind}({name}={self.param:.6g})"
        if self.chunks > 1:
            text += f" x{self.chunks} chunks"
        if self.zero_row is not None:
            text += f", row {self.zero_row} zero"
        return text


def fill(action: Action, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """Carry out ``action`` on a contiguous ``tensor`` (no padding row); constants per chunk included."""
    if action.chunk_values is not None:
        for block, value in zip(tensor.chunk(len(action.chunk_values)), action.chunk_values, strict=True):
            block.fill_(value)
        return
    kind = action.kind
    if kind == "copy":
        raise InitError("a copy has no values of its own: the writer copies its source tensor")
    if kind != "skip" and kind != "keep":
        draw_(tensor, kind, action.param, generator, chunks=action.chunks, a=-action.cut, b=action.cut)


def write(action: Action, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """Carry out ``action`` on ``tensor`` in place; the caller holds ``torch.no_grad()`` and has checked the
    action's values against the tensor's dtype (`check_draw`, as ``Plan.check`` does).

    A tensor that is not contiguous (channels_last, a strided view) is filled through a contiguous
    temporary, so its logical values do not depend on its memory format (torch's Conv does the same).
    """
    kind = action.kind
    if kind == "skip" or kind == "keep" or tensor.numel() == 0:
        return
    if kind == "copy":
        raise InitError("a copy has no values of its own: the writer copies its source tensor")
    target = tensor if tensor.is_contiguous() else torch.empty_like(tensor, memory_format=torch.contiguous_format)
    if action.delta and target.dim() > 2:
        centre = torch.empty(target.shape[:2], dtype=target.dtype, device=target.device)
        _kernel(centre, kind, action.param, generator, action.chunks)
        put_centre(target, centre)
    elif action.chunk_values is None:
        _kernel(target, kind, action.param, generator, action.chunks, 0.0, -action.cut, action.cut)
    else:
        fill(action, target, generator)
    if action.zero_row is not None:
        target[action.zero_row].fill_(0)
    if target is not tensor:
        tensor.copy_(target)


def put_centre(kernel: torch.Tensor, centre: torch.Tensor) -> None:
    r"""A delta kernel: ``kernel`` zero except its centre tap $\lfloor (k_i - 1)/2 \rfloor$, which gets ``centre``
    (Xiao et al. 2018; the tap ``padding="same"`` aligns)."""
    kernel.zero_()
    taps: tuple[slice | int, ...] = (slice(None), slice(None), *((k - 1) // 2 for k in kernel.shape[2:]))
    kernel[taps] = centre


def rms(tensor: torch.Tensor) -> float:
    """The root mean square of a tensor's values (its std about 0), in float32 at least."""
    return float(tensor.detach().float().square().mean().sqrt())


def torch_fan_in(weight: torch.Tensor) -> int:
    """torch's shape-based fan_in, ``size(1) * prod(size[2:])``, without raising on empty tensors."""
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() >= 2 else 0
