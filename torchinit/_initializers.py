r"""Tensor initializers: in place, under ``no_grad``, returning the tensor, with ``generator=``.

Every named initializer is a preset of `variance_scaling_`: a zero-mean draw with
$\mathrm{Var}(w) = \mathrm{scale}/\mathrm{fan}$. Functions that share a name with
``torch.nn.init`` keep its signature, defaults, meaning, RNG consumption and bit-exact output; the
extras (explicit fans) are keyword-only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchinit._distributions import SQRT3, normal_cdf
from torchinit._draw import draw_, gain_std, variance_std, xavier_std
from torchinit._fans import Fans, resolve_fan
from torchinit._gains import calculate_gain
from torchinit._types import VARIANCE_DISTRIBUTIONS, Distribution, FanMode, InitError, check_finite, choice_error

FansArg = Fans | tuple[float, float] | None


def _check_tensor(tensor: object) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise InitError(f"tensor must be a torch.Tensor; got {type(tensor).__name__}.")
    if not tensor.is_floating_point():
        raise InitError(f"tensor must have a floating-point dtype; got dtype={tensor.dtype}.")
    return tensor


def _check_std(name: str, value: float) -> float:
    return check_finite(name, value, minimum=0.0)


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: FanMode = "fan_in",
    distribution: Distribution = "normal",
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
    fan_out: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with zero-mean values of variance $\mathrm{scale}/\mathrm{fan}$.

    $$\sigma = \sqrt{\mathrm{scale} / n}, \quad n \in \{\mathrm{fan\_in}, \mathrm{fan\_out},
    (\mathrm{fan\_in} + \mathrm{fan\_out})/2\}$$

    ``distribution`` picks the shape with that std: ``normal`` $\mathcal N(0, \sigma^2)$;
    ``uniform`` $\mathcal U(-\sqrt3\sigma, \sqrt3\sigma)$; ``truncated_normal`` a normal cut at
    $\pm 2$ of its own sigma and rescaled so the std is still $\sigma$ (see
    `truncated_normal_`). The core of He et al. (2015), Glorot & Bengio (2010) and LeCun et
    al. (1998) initialization, as in ``jax.nn.initializers.variance_scaling``.

    Args:
        tensor: a floating-point tensor, filled in place.
        scale: the variance numerator, e.g. ``gain ** 2``: 2 for ReLU (He), 1 for LeCun.
        mode: which fan to divide by.
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``.
        fans: the tensor's true fans (see `fans_of`), replacing torch's shape guess.
        fan_in: an explicit fan_in (fan_out still guessed from the shape if needed).
        fan_out: an explicit fan_out.
        generator: the RNG to draw from; torch's default generator when None.

    Returns:
        ``tensor``, filled. A zero-element tensor is returned unchanged.

    Example:
        >>> w = variance_scaling_(torch.empty(256, 512), 2.0, "fan_in", "uniform")
        >>> round(w.abs().max().item() / math.sqrt(6 / 512), 2)  # bound sqrt(3 * 2 / fan_in)
        1.0
    """
    tensor = _check_tensor(tensor)
    scale = _check_std("scale", scale)
    if distribution not in VARIANCE_DISTRIBUTIONS:
        hint = " (orthogonal has no fan: use orthogonal_(tensor, gain))" if distribution == "orthogonal" else ""
        raise InitError(str(choice_error("distribution", "distribution", distribution, VARIANCE_DISTRIBUTIONS)) + hint)
    if tensor.numel() == 0:
        return tensor
    std = variance_std(scale, resolve_fan(tensor, mode, fans, fan_in, fan_out))
    return draw_(tensor, distribution, SQRT3 * std if distribution == "uniform" else std, generator)


def _kaiming_std(
    tensor: torch.Tensor,
    a: float,
    mode: FanMode,
    nonlinearity: str,
    fans: FansArg,
    fan_in: float | None,
    fan_out: float | None,
) -> float | None:
    # torch's arithmetic, gain / sqrt(fan), so the drop-ins stay bit-exact; None: nothing to draw.
    gain = calculate_gain(nonlinearity, a)
    if _check_tensor(tensor).numel() == 0:
        return None
    return gain_std(gain, resolve_fan(tensor, mode, fans, fan_in, fan_out))


def kaiming_uniform_(
    tensor: torch.Tensor,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
    fan_out: float | None = None,
) -> torch.Tensor:
    r"""He uniform: $\mathcal U(-b, b)$, $b = \mathrm{gain}\sqrt{3/\mathrm{fan}}$.

    He et al. (2015), "Delving deep into rectifiers". A drop-in for ``torch.nn.init.kaiming_uniform_``
    (same arguments, same draws, bit-exact); ``gain = calculate_gain(nonlinearity, a)``. Equivalent to
    ``variance_scaling_(tensor, scale=gain**2, mode=mode, distribution="uniform")``. ``fans=`` (or
    ``fan_in=``/``fan_out=``) replace the shape guess with true fans; mode may also be ``"fan_avg"``.

    Note torch's own layers call this with ``a=math.sqrt(5)``: gain $\sqrt{1/3}$, bound
    $1/\sqrt{\mathrm{fan\_in}}$, 0.41x the ReLU std. Use ``nonlinearity="relu"`` for ReLU nets.

    Example:
        >>> w = kaiming_uniform_(torch.empty(512, 256), nonlinearity="relu")
        >>> round(w.abs().max().item() / math.sqrt(6 / 256), 2)
        1.0
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity, fans, fan_in, fan_out)
    return tensor if std is None else draw_(tensor, "uniform", math.sqrt(3.0) * std, generator)


def kaiming_normal_(
    tensor: torch.Tensor,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
    fan_out: float | None = None,
) -> torch.Tensor:
    r"""He normal: $\mathcal N(0, \sigma^2)$, $\sigma = \mathrm{gain}/\sqrt{\mathrm{fan}}$.

    He et al. (2015). A drop-in for ``torch.nn.init.kaiming_normal_`` (bit-exact); equivalent to
    ``variance_scaling_(tensor, scale=gain**2, mode=mode, distribution="normal")``.

    Example:
        >>> w = kaiming_normal_(torch.empty(512, 1024), nonlinearity="relu", fan_in=2048)
        >>> round(w.std().item() / math.sqrt(2 / 2048), 1)
        1.0
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity, fans, fan_in, fan_out)
    return tensor if std is None else draw_(tensor, "normal", std, generator)


def _xavier_std(tensor: torch.Tensor, gain: float, fans: FansArg, fan_in: float | None, fan_out: float | None) -> float:
    n_in = resolve_fan(tensor, "fan_in", fans, fan_in, fan_out)
    n_out = resolve_fan(tensor, "fan_out", fans, fan_in, fan_out)
    return xavier_std(gain, n_in, n_out)


def xavier_uniform_(
    tensor: torch.Tensor,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
    fan_out: float | None = None,
) -> torch.Tensor:
    r"""Glorot uniform: $\mathcal U(-b, b)$, $b = g\sqrt{6/(\mathrm{fan\_in}+\mathrm{fan\_out})}$.

    Glorot & Bengio (2010). A drop-in for ``torch.nn.init.xavier_uniform_`` (bit-exact); equivalent
    to ``variance_scaling_(tensor, scale=gain**2, mode="fan_avg", distribution="uniform")``.

    Example:
        >>> w = xavier_uniform_(torch.empty(300, 100))
        >>> round(w.abs().max().item() / math.sqrt(6 / 400), 2)
        1.0
    """
    tensor = _check_tensor(tensor)
    gain = _check_std("gain", gain)
    if tensor.numel() == 0:
        return tensor
    return draw_(tensor, "uniform", math.sqrt(3.0) * _xavier_std(tensor, gain, fans, fan_in, fan_out), generator)


def xavier_normal_(
    tensor: torch.Tensor,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
    fan_out: float | None = None,
) -> torch.Tensor:
    r"""Glorot normal: $\sigma = \mathrm{gain}\sqrt{2/(\mathrm{fan\_in}+\mathrm{fan\_out})}$.

    Glorot & Bengio (2010). A drop-in for ``torch.nn.init.xavier_normal_`` (bit-exact); equivalent
    to ``variance_scaling_(tensor, scale=gain**2, mode="fan_avg", distribution="normal")``.
    """
    tensor = _check_tensor(tensor)
    gain = _check_std("gain", gain)
    if tensor.numel() == 0:
        return tensor
    return draw_(tensor, "normal", _xavier_std(tensor, gain, fans, fan_in, fan_out), generator)


def lecun_normal_(
    tensor: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
) -> torch.Tensor:
    r"""LeCun normal: $\mathcal N(0, 1/\mathrm{fan\_in})$.

    LeCun et al. (1998), "Efficient BackProp"; the init for SELU nets (Klambauer et al. 2017).
    Equivalent to ``variance_scaling_(tensor, scale=1.0, mode="fan_in", distribution="normal")``.
    Unlike ``jax.nn.initializers.lecun_normal`` this is a plain normal, as the name says; use
    ``variance_scaling_(..., distribution="truncated_normal")`` for JAX's truncated variant.
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "normal", fans=fans, fan_in=fan_in, generator=generator)


def lecun_uniform_(
    tensor: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    fans: FansArg = None,
    fan_in: float | None = None,
) -> torch.Tensor:
    r"""LeCun uniform: $\mathcal U(\pm\sqrt{3/\mathrm{fan\_in}})$, std $1/\sqrt{\mathrm{fan\_in}}$.

    Equivalent to ``variance_scaling_(tensor, scale=1.0, mode="fan_in", distribution="uniform")``.
    """
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", fans=fans, fan_in=fan_in, generator=generator)


def uniform_std_(
    tensor: torch.Tensor,
    std: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""A uniform draw with a given standard deviation: $\mathcal U(-\sqrt3\,\sigma, \sqrt3\,\sigma)$.

    The uniform-bound family states a target std and derives the bound; ``U[-b, b]`` has std
    $b/\sqrt3$, not b. torch's legacy layer rule $\mathcal U(\pm 1/\sqrt{\mathrm{fan\_in}})$
    is ``uniform_std_(w, 1 / math.sqrt(3 * fan_in))``, i.e.
    ``variance_scaling_(w, scale=1/3, mode="fan_in", distribution="uniform")``.

    Example:
        >>> w = uniform_std_(torch.empty(64, 64), 0.5)
        >>> bool(w.abs().max() <= 0.5 * math.sqrt(3))
        True
    """
    tensor = _check_tensor(tensor)
    std = _check_std("std", std)
    return draw_(tensor, "uniform", SQRT3 * std, generator) if tensor.numel() else tensor


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
    one uniform draw per element, no rejection loop. Computed in float32 (float64 for float64 tensors
    or cut-offs beyond 5 sigma) and cast, so bf16/fp16 get the same distribution.

    Example:
        >>> w = truncated_normal_(torch.empty(1000, 1000), 0.02)
        >>> round(w.std().item(), 3), bool(w.abs().max() <= 2 * 0.02 / 0.8796256610 + 1e-6)
        (0.02, True)
    """
    tensor = _check_tensor(tensor)
    std = _check_std("std", std)
    for name, value in (("mean", mean), ("a", a), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InitError(f"{name} must be a number; got {name}={value!r}.")
    if not (a < b and normal_cdf(b) - normal_cdf(a) > 0):
        raise InitError(f"the cut-offs must satisfy a < b with mass between them; got a={a!r}, b={b!r}.")
    if tensor.numel() == 0:
        return tensor
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
    tensor = _check_tensor(tensor)
    return nn.init.trunc_normal_(tensor, mean, std, a, b, generator=generator)


def orthogonal_(
    tensor: torch.Tensor,
    gain: float = 1,
    generator: torch.Generator | None = None,
    *,
    chunks: int = 1,
) -> torch.Tensor:
    r"""A (semi-)orthogonal matrix times ``gain``, for each of ``chunks`` blocks along dim 0.

    Saxe et al. (2014). A drop-in for ``torch.nn.init.orthogonal_``: for float32/float64 the same
    draws and bit-exact values. The tensor is viewed as ``(rows, prod(rest))``; a normal matrix is
    QR-factorized and Q's columns sign-corrected by ``sign(diag(R))`` (Mezzadri 2007), so Q is
    Haar-distributed. Each row (or column, when there are more rows) has norm ``gain``, i.e. element
    std $\mathrm{gain}/\sqrt{\max(\mathrm{rows}, \mathrm{cols})}$.

    Extras: ``chunks`` makes each block of ``rows / chunks`` rows its own orthogonal matrix (RNN gate
    blocks, packed q/k/v); bf16/fp16 tensors are drawn and factorized in float32 and cast (torch's
    QR has no half-precision kernel); channels_last and other strided tensors are written correctly.
    """
    tensor = _check_tensor(tensor)
    gain = _check_std("gain", gain)
    if tensor.dim() < 2:
        raise InitError(f"orthogonal_ needs a tensor with at least 2 dimensions; got shape={tuple(tensor.shape)}.")
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1 or tensor.shape[0] % chunks:
        raise InitError(
            f"chunks must be a positive integer dividing dim 0 (size {tensor.shape[0]}); got chunks={chunks!r}."
        )
    if tensor.numel() == 0 or tensor.is_meta:
        return tensor
    return draw_(tensor, "orthogonal", gain, generator, chunks=chunks)
