r"""The std-corrected truncated normal (`truncated_normal_`) and torch's own ``trunc_normal_`` (cut-offs in absolute
units), both in place with ``generator=``."""

from __future__ import annotations

import math

import torch
from torch import nn

from torchinit._maths.distributions import check_cutoffs
from torchinit._maths.draw import check_draw, draw_
from torchinit._maths.initializers import check_std, check_tensor
from torchinit._types import InitError, as_real, check_finite


def truncated_normal_(
    tensor: torch.Tensor,
    std: float = 1.0,
    *,
    mean: float = 0.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""A truncated normal whose standard deviation is ``std`` after truncation.

    Values are $\mu + s Z$, Z a standard normal truncated to $[a, b]$ (cut-offs in units
    of the underlying sigma), with $s = \mathrm{std}/\mathrm{sd}(Z)$ so the result's std is
    exactly ``std``. For the default $\pm2$, sd(Z) = 0.8796256610, so ``s = 1.1368 std`` and
    values stay within $\pm 2.274\,\mathrm{std}$ (JAX's and Keras' variance-scaling correction).

    Contrast ``trunc_normal_`` (torch's meaning): cut-offs at absolute values and no correction, so
    ``trunc_normal_(w, std=0.02)`` is a plain normal and ``trunc_normal_(w, std=1)`` has std 0.88.

    Sampled by inverting the CDF, $Z = \Phi^{-1}(U)$, $U \sim \mathcal U(\Phi(a), \Phi(b))$:
    one uniform draw per element, no rejection loop. Cut-offs within $\pm3$ use float32 ``erfinv``
    (float64 for float64 tensors); farther ones use float64 ``ndtri`` on the side of 0 where the tail
    probabilities are small (the mirror $[-b, -a]$ when the interval reaches farther up), so far tails
    keep their resolution: $[8, 9]$ gives as many distinct values as draws, where the float64 ``erfinv`` of
    $2U - 1 \approx 1 - 10^{-15}$ gave a dozen. The std correction sd(Z) comes from quadrature (see
    `truncated_normal_std`), exact to about 1e-14 in far tails and narrow intervals. Bf16/fp16 are cast
    from the float32/64 draw, so they get the same distribution.

    Args:
        tensor: a floating-point tensor, filled in place.
        std: the std after truncation.
        mean: the location: the mean of the underlying normal (of the draws, for symmetric cut-offs).
        a: the lower cut-off, in underlying sigmas; ``-inf`` allowed.
        b: the upper cut-off, in underlying sigmas; ``inf`` allowed.
        generator: the RNG to draw from; torch's default generator when None.

    Raises:
        InitError: cut-offs with ``a >= b`` or no mass between them, or that lie entirely beyond
            37 sigma (``a >= 37`` or ``b <= -37``: the normal's mass there, below 6e-300, is at the edge of
            float64; shift ``mean`` instead), and the checks of `variance_scaling_`.

    Example:
        >>> w = truncated_normal_(torch.empty(1000, 1000), 0.02)
        >>> round(w.std().item(), 3), bool(w.abs().max() <= 2 * 0.02 / 0.8796256610 + 1e-6)
        (0.02, True)
    """
    tensor = check_tensor(tensor, generator)
    std = check_std("std", std)
    mean = check_finite("mean", mean)
    low, high = as_real("a", a), as_real("b", b)
    if math.isnan(low) or math.isnan(high):
        raise InitError(f"the cut-offs must be numbers (+-inf allowed); got a={a!r}, b={b!r}.")
    try:
        check_cutoffs(low, high)
    except ValueError as error:
        raise InitError(str(error)) from None
    a, b = float(low), float(high)
    if tensor.numel() == 0:
        return tensor
    source = f"std={std:.6g}, cut-offs a={a:g}, b={b:g} sigma, mean={mean:g}"  # the slow path checks anyway
    check_draw(tensor, "truncated_normal", std, mean=mean, a=a, b=b, source=source)
    return draw_(tensor, "truncated_normal", std, generator, mean=mean, a=a, b=b)


def trunc_normal_(
    tensor: torch.Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""torch's truncated normal, unchanged: $\mathcal N(\mu, \sigma^2)$ restricted to absolute ``[a, b]``.

    A drop-in for ``torch.nn.init.trunc_normal_`` (it calls it, so draws and values are identical).
    The cut-offs are absolute values, not multiples of ``std``, and the std is not corrected: with
    the defaults and ``std=0.02`` nothing is ever cut. For the corrected, sigma-relative version use
    `truncated_normal_`.
    """
    tensor = check_tensor(tensor, generator)
    mean, std = check_finite("mean", mean), check_finite("std", std)
    a, b = float(as_real("a", a)), float(as_real("b", b))
    if not std > 0:
        raise InitError(f"std must be a positive finite number (torch divides by it); got std={std!r}.")
    if math.isnan(a) or math.isnan(b) or not a < b:
        raise InitError(f"the cut-offs must satisfy a < b (absolute values, +-inf allowed); got a={a!r}, b={b!r}.")
    return nn.init.trunc_normal_(tensor, mean, std, a, b, generator=generator)
