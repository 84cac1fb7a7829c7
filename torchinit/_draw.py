r"""The one draw core: every random write torchinit makes goes through `draw_`, and every planned
write is an `Action` carried out by `write`.

The std arithmetic lives here too, once: $\sigma = \sqrt{\mathrm{scale}/\mathrm{fan}}$ for variance
scaling, and torch's own $\mathrm{gain}/\sqrt{\mathrm{fan}}$ (bit-exact with ``torch.nn.init``) for
the drop-ins and for ``legacy``. A uniform with std $\sigma$ has bound $\sqrt3\,\sigma$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from torchinit._distributions import SQRT3, normal_cdf, truncated_normal_std
from torchinit._types import Distribution

if TYPE_CHECKING:
    from torchinit._fans import Fans


def variance_std(scale: float, fan: float) -> float:
    r"""$\sqrt{\mathrm{scale}/\mathrm{fan}}$: the element std of a variance-scaling rule."""
    return math.sqrt(scale / fan)


def gain_std(gain: float, fan: float) -> float:
    r"""$\mathrm{gain}/\sqrt{\mathrm{fan}}$, in torch's own arithmetic (``kaiming_*_`` and the layer defaults)."""
    return gain / math.sqrt(fan)


def xavier_std(gain: float, fan_in: float, fan_out: float) -> float:
    r"""$\mathrm{gain}\sqrt{2/(\mathrm{fan\_in}+\mathrm{fan\_out})}$, in torch's arithmetic (``xavier_*_``)."""
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


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
    """
    if torch.is_grad_enabled():  # entering no_grad costs more than the check; planned writes already hold it
        with torch.no_grad():
            return draw_(tensor, distribution, param, generator, chunks=chunks, mean=mean, a=a, b=b)
    if distribution == "normal":
        return tensor.normal_(mean, param, generator=generator)
    if distribution == "uniform":
        return tensor.uniform_(mean - param, mean + param, generator=generator)
    if distribution == "constant":
        return tensor.fill_(param)
    if distribution == "truncated_normal":
        return _truncated_normal(tensor, param, mean, a, b, generator)
    for block in tensor.chunk(chunks, dim=0) if chunks > 1 else (tensor,):
        _orthogonal_block(block, param, generator)
    return tensor


def _truncated_normal(
    tensor: torch.Tensor, std: float, mean: float, a: float, b: float, generator: torch.Generator | None
) -> torch.Tensor:
    # Inverse CDF: Z = sqrt(2) erfinv(2u - 1) for u ~ U(Phi(a), Phi(b)); one uniform per element.
    sigma = std / truncated_normal_std(a, b)
    exact = tensor.dtype == torch.float64 or max(abs(a), abs(b)) > 5
    work_dtype = torch.float64 if exact else torch.float32
    work = tensor if tensor.dtype == work_dtype else torch.empty_like(tensor, dtype=work_dtype)
    work.uniform_(2 * normal_cdf(a) - 1, 2 * normal_cdf(b) - 1, generator=generator)
    work.erfinv_().clamp_(a / math.sqrt(2.0), b / math.sqrt(2.0))
    work.mul_(math.sqrt(2.0) * sigma).add_(mean)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def _orthogonal_block(block: torch.Tensor, gain: float, generator: torch.Generator | None) -> None:
    # torch's recipe (QR of a normal matrix, columns sign-corrected by sign(diag R): Haar, Mezzadri 2007),
    # with half precisions drawn and factorized in float32 (torch's QR has no kernel for them).
    rows = block.size(0)
    cols = block.numel() // rows
    low_precision = block.dtype not in (torch.float32, torch.float64)
    dtype = torch.float32 if low_precision else block.dtype
    flat = torch.empty((rows, cols), dtype=dtype, device=block.device).normal_(0, 1, generator=generator)
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


ActionKind = Literal["normal", "uniform", "truncated_normal", "orthogonal", "constant", "keep", "skip"]


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
        return self.kind in ("normal", "uniform", "truncated_normal", "orthogonal")

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
        text = f"{self.kind}({name}={self.param:.6g})"
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
    elif action.kind != "skip" and action.kind != "keep":
        draw_(tensor, action.kind, action.param, generator, chunks=action.chunks)


def write(action: Action, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """Carry out ``action`` on ``tensor`` in place; the caller holds ``torch.no_grad()``.

    A tensor that is not contiguous (channels_last, a strided view) is filled through a contiguous
    temporary, so its logical values do not depend on its memory format (torch's Conv does the same).
    """
    kind = action.kind
    if kind == "skip" or kind == "keep" or tensor.numel() == 0:
        return
    target = tensor if tensor.is_contiguous() else torch.empty_like(tensor, memory_format=torch.contiguous_format)
    if action.chunk_values is None:
        draw_(target, kind, action.param, generator, chunks=action.chunks)
    else:
        fill(action, target, generator)
    if action.zero_row is not None:
        target[action.zero_row].fill_(0)
    if target is not tensor:
        tensor.copy_(target)


def torch_fan_in(weight: torch.Tensor) -> int:
    """torch's shape-based fan_in, ``size(1) * prod(size[2:])``, without raising on empty tensors."""
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() >= 2 else 0
