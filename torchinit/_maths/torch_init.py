r"""The rest of ``torch.nn.init``: plain draws, fills, identities, sparse, and torch's deprecated aliases.

With these, every public function of ``torch.nn.init`` has a torchinit counterpart of the same name and
signature, so ``import torchinit as init`` can replace ``import torch.nn.init as init``. Each one calls torch's
own function after torchinit's argument checks: the same draws from the same generator state, bit for bit,
the same ``__torch_function__`` dispatch, and an error of the same kind (`InitError` is a ``ValueError``)
where torch raises one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import nn

from torchinit._maths.initializers import (
    kaiming_normal_,
    kaiming_uniform_,
    xavier_normal_,
    xavier_uniform_,
)
from torchinit._maths.orthogonal import orthogonal_
from torchinit._types import InitError, as_real, check_divisor

_P = ParamSpec("_P")
_R = TypeVar("_R")


def uniform_(
    tensor: torch.Tensor, a: float = 0.0, b: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Fill ``tensor`` with draws from $\mathcal U(a, b)$.

    A drop-in for ``torch.nn.init.uniform_`` (it calls it: same draws, bit-exact). Note the bounds are the
    interval's ends, so the std is $(b - a)/\sqrt{12}$; `uniform_std_` takes a std instead.

    Args:
        tensor: the tensor to fill in place.
        a: the lower bound.
        b: the upper bound.
        generator: the RNG to draw from; torch's default generator when None.

    Returns:
        ``tensor``.

    Example:
        >>> w = uniform_(torch.empty(100, 100), -0.5, 0.5, generator=torch.Generator().manual_seed(0))
        >>> bool(w.min() >= -0.5 and w.max() < 0.5)
        True
    """
    return nn.init.uniform_(tensor, a, b, generator)


def normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Fill ``tensor`` with draws from $\mathcal N(\mathrm{mean}, \mathrm{std}^2)$.

    A drop-in for ``torch.nn.init.normal_`` (it calls it: same draws, bit-exact). Not truncated; see
    `trunc_normal_` (absolute cut-offs) and `truncated_normal_` (cut-offs in sigmas, std-corrected).

    Args:
        tensor: the tensor to fill in place.
        mean: the mean.
        std: the standard deviation.
        generator: the RNG to draw from; torch's default generator when None.

    Returns:
        ``tensor``.

    Example:
        >>> w = normal_(torch.empty(1000, 1000), std=0.02, generator=torch.Generator().manual_seed(0))
        >>> round(w.std().item(), 3)
        0.02
    """
    return nn.init.normal_(tensor, mean, std, generator)


def constant_(tensor: torch.Tensor, val: float) -> torch.Tensor:
    r"""Fill ``tensor`` with the value ``val``: $w_i = \mathrm{val}$.

    A drop-in for ``torch.nn.init.constant_`` (it calls it). Integer and bool tensors are filled too, as torch
    fills them.

    Example:
        >>> constant_(torch.empty(2, 3), 0.5).sum().item()
        3.0
    """
    return nn.init.constant_(tensor, val)


def ones_(tensor: torch.Tensor) -> torch.Tensor:
    r"""Fill ``tensor`` with 1: $w_i = 1$. A drop-in for ``torch.nn.init.ones_`` (it calls it).

    Example:
        >>> ones_(torch.empty(2, 3)).sum().item()
        6.0
    """
    return nn.init.ones_(tensor)


def zeros_(tensor: torch.Tensor) -> torch.Tensor:
    r"""Fill ``tensor`` with 0: $w_i = 0$. A drop-in for ``torch.nn.init.zeros_`` (it calls it).

    Example:
        >>> zeros_(torch.ones(2, 3)).sum().item()
        0.0
    """
    return nn.init.zeros_(tensor)


def _dims(tensor: object, name: str, allowed: tuple[int, ...], expect: str) -> None:
    # The dimension checks torch makes with a ValueError, made first, with the shape in the message.
    dim = tensor.dim() if isinstance(tensor, torch.Tensor) else None
    if dim not in allowed:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InitError(f"{name} fills {expect}; got shape={shape}.")


def eye_(tensor: torch.Tensor) -> torch.Tensor:
    r"""Fill the 2-D ``tensor`` with the identity: $w_{ij} = \delta_{ij}$ (rectangular: ones on the diagonal).

    A ``Linear`` with this weight passes its first ``min(out, in)`` inputs through unchanged. A drop-in for
    ``torch.nn.init.eye_`` (it calls it).

    Raises:
        InitError: (a ``ValueError``, as torch's) for a tensor that is not 2-D, naming its shape.

    Example:
        >>> eye_(torch.empty(3, 5)).sum().item()
        3.0
    """
    _dims(tensor, "eye_", (2,), "2-D tensors only (use dirac_ for convolution weights)")
    return nn.init.eye_(tensor)


def dirac_(tensor: torch.Tensor, groups: int = 1) -> torch.Tensor:
    r"""Fill a 3-, 4- or 5-D convolution weight with the Dirac delta: the identity on channels at the centre tap.

    For a weight of shape $(C_\mathrm{out}, C_\mathrm{in}/g, k_1, \dots)$ and each group $j < g$, with
    $m = C_\mathrm{out}/g$: $w_{jm + d,\, d,\, \lfloor k_1/2 \rfloor, \dots} = 1$ for
    $d < \min(m, C_\mathrm{in}/g)$, every other entry 0, so the convolution (stride 1, "same" padding, odd
    kernel) passes each group's first channels through. A drop-in for ``torch.nn.init.dirac_`` (it calls it).
    For a random orthogonal centre tap (dynamical isometry) see `delta_orthogonal_`.

    Raises:
        InitError: (a ``ValueError``, as torch's) for a tensor that is not 3-, 4- or 5-D, or a ``groups`` that is
            not a positive integer dividing dim 0.

    Example:
        >>> dirac_(torch.empty(6, 4, 3, 3)).sum().item()
        4.0
    """
    _dims(tensor, "dirac_", (3, 4, 5), "3-, 4- or 5-D convolution weights only (use eye_ for a matrix)")
    return nn.init.dirac_(tensor, check_divisor("groups", groups, tensor.shape[0]))


def sparse_(
    tensor: torch.Tensor, sparsity: float, std: float = 0.01, generator: torch.Generator | None = None
) -> torch.Tensor:
    r"""Fill the 2-D ``tensor`` as a sparse matrix: $\mathcal N(0, \mathrm{std}^2)$, then
    $\lceil \mathrm{sparsity} \cdot \mathrm{rows} \rceil$ entries of each column set to 0.

    Martens (2010), "Deep learning via Hessian-free optimization". A drop-in for ``torch.nn.init.sparse_`` (it
    calls it, so the values are torch's). As in torch, only the normal draw uses ``generator``: the zeroed rows
    of each column come from ``torch.randperm`` on torch's *global* RNG, so a generator alone does not make the
    result reproducible; seed ``torch.manual_seed`` too.

    Args:
        tensor: a 2-D tensor, filled in place.
        sparsity: the fraction of each column set to zero, in $[0, 1]$.
        std: the std of the non-zero values.
        generator: the RNG of the normal draw.

    Raises:
        InitError: (a ``ValueError``, as torch's) for a tensor that is not 2-D; unlike torch, for a ``sparsity``
            outside $[0, 1]$ (torch reads a negative one as "all but that many rows").

    Example:
        >>> w = sparse_(torch.empty(10, 4), 0.3, generator=torch.Generator().manual_seed(0))
        >>> (w == 0).sum(dim=0).tolist()
        [3, 3, 3, 3]
    """
    _dims(tensor, "sparse_", (2,), "2-D tensors only")
    value = as_real("sparsity", sparsity)
    if not 0 <= value <= 1:
        raise InitError(f"sparsity must be a fraction in [0, 1]; got sparsity={sparsity!r}.")
    return nn.init.sparse_(tensor, sparsity, std, generator)


def _deprecated(init: Callable[_P, _R]) -> Callable[_P, _R]:
    # torch.nn.init's old names without the trailing underscore: a FutureWarning, then the in-place function.
    new = init.__name__
    old = new[:-1]

    def deprecated_init(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        warnings.warn(
            f"`torchinit.{old}` is now deprecated in favor of `torchinit.{new}`.", FutureWarning, stacklevel=2
        )
        return init(*args, **kwargs)

    deprecated_init.__doc__ = (
        f"Deprecated: use `{new}`. Warns ``FutureWarning`` and calls it, as ``torch.nn.init.{old}`` does for "
        f"``torch.nn.init.{new}``."
    )
    deprecated_init.__name__ = deprecated_init.__qualname__ = old
    return deprecated_init


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
eye = _deprecated(eye_)
dirac = _deprecated(dirac_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)
DEPRECATED = (uniform, normal, constant, eye, dirac, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal,
              orthogonal, sparse)  # fmt: skip
"""torch.nn.init's deprecated aliases (``uniform`` for ``uniform_``, ...), importable from torchinit, not in its
``__all__``."""
