r"""Tensor initializers: in place, under ``no_grad``, returning the tensor, with ``generator=``.

Every named initializer is a preset of `variance_scaling_`: a zero-mean draw with
$\mathrm{Var}(w) = \mathrm{scale}/\mathrm{fan}$. Functions that share a name with
``torch.nn.init`` keep its signature, defaults, meaning, RNG consumption and bit-exact output; the
extras (explicit fans) are keyword-only.
"""

from __future__ import annotations

import math
import warnings

import torch

from torchinit._maths.distributions import SQRT3
from torchinit._maths.draw import check_draw, draw_, gain_std, variance_std, xavier_std
from torchinit._maths.fans import BOTH_FANS, Fans, resolve_fan
from torchinit._maths.gains import calculate_gain
from torchinit._types import (
    VARIANCE_DISTRIBUTIONS,
    Distribution,
    FanMode,
    InitError,
    as_real,
    check_finite,
    check_generator,
    choice_error,
)

FansArg = Fans | tuple[float, float] | None


def check_tensor(tensor: object, generator: object = None) -> torch.Tensor:
    """The tensor, then the generator against its device: every initializer's first line, before any write."""
    if not isinstance(tensor, torch.Tensor):
        raise InitError(f"tensor must be a torch.Tensor; got {type(tensor).__name__}.")
    if not tensor.is_floating_point():
        raise InitError(f"tensor must have a floating-point dtype; got dtype={tensor.dtype}.")
    check_generator(generator, tensor.device)
    return tensor


def check_std(name: str, value: float) -> float:
    """A finite std (or gain) >= 0, as a float."""
    return check_finite(name, value, minimum=0.0)


def _fan_args(fans: FansArg, fan_in: float | None, fan_out: float | None) -> tuple[FansArg, float | None, float | None]:
    # NumPy scalars and 0-d tensors as plain numbers, so `resolve_fan` judges their values, not their types.
    if fans is None and fan_in is None and fan_out is None:  # the common case: fans from the shape
        return None, None, None
    if isinstance(fans, tuple) and len(fans) == 2:
        fans = (as_real("fan_in", fans[0]), as_real("fan_out", fans[1]))
    fan_in = None if fan_in is None else as_real("fan_in", fan_in)
    fan_out = None if fan_out is None else as_real("fan_out", fan_out)
    return fans, fan_in, fan_out


def _fan_source(mode: FanMode, fan: float, fans: FansArg, fan_in: float | None, fan_out: float | None) -> str:
    # The fan and where it came from, for an error message: "fan_in=1e-300", "fan_avg=3 from fans=(1, 5)".
    explicit = {"fan_in": fan_in, "fan_out": fan_out}
    needed = BOTH_FANS.get(mode, (mode,))
    if fans is not None:
        origin = f" from fans={fans!r}"
    elif all(explicit[key] is not None for key in needed):
        origin = ""
    else:
        origin = " from the tensor's shape"
    return f"{mode}={fan:.6g}{origin}"


def _warn_zero_element() -> None:
    # torch.nn.init.kaiming_{uniform,normal}_ warn exactly so; the drop-ins keep the warning.
    warnings.warn("Initializing zero-element tensors is a no-op", UserWarning, stacklevel=4)


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
    (\mathrm{fan\_in} + \mathrm{fan\_out})/2, \sqrt{\mathrm{fan\_in}\cdot\mathrm{fan\_out}}\}$$

    ``distribution`` picks the shape with that std: ``normal`` $\mathcal N(0, \sigma^2)$;
    ``uniform`` $\mathcal U(-\sqrt3\sigma, \sqrt3\sigma)$; ``truncated_normal`` a normal cut at
    $\pm 2$ of its own sigma and rescaled so the std is still $\sigma$ (see
    `truncated_normal_`). The core of He et al. (2015), Glorot & Bengio (2010) and LeCun et
    al. (1998) initialization, as in ``jax.nn.initializers.variance_scaling``.

    Args:
        tensor: a floating-point tensor, filled in place.
        scale: the variance numerator, e.g. ``gain ** 2``: 2 for ReLU (He), 1 for LeCun.
        mode: which fan to divide by: ``fan_in``, ``fan_out``, ``fan_avg`` (their mean) or ``fan_geo_avg``
            (their geometric mean, $\sqrt{\mathrm{fan\_in}\cdot\mathrm{fan\_out}}$, as JAX's mode of that name).
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"``.
        fans: the tensor's true fans (see `fans_of`), replacing torch's shape guess.
        fan_in: an explicit fan_in (fan_out still guessed from the shape if needed).
        fan_out: an explicit fan_out.
        generator: the RNG to draw from; torch's default generator when None.

    Returns:
        ``tensor``, filled. A zero-element tensor is returned unchanged.

    Raises:
        InitError: before anything is written, for a non-tensor or non-floating tensor, a generator that is
            not a ``torch.Generator`` on the tensor's device type, fans that are not positive finite real
            numbers (NumPy scalars and 0-d tensors are numbers; bools are not), or a std the dtype cannot
            hold (``fan_in=1e-300`` would write inf: the message names the fan and the gain).

    Example:
        >>> w = variance_scaling_(torch.empty(256, 512), 2.0, "fan_in", "uniform")
        >>> round(w.abs().max().item() / math.sqrt(6 / 512), 2)  # bound sqrt(3 * 2 / fan_in)
        1.0
    """
    tensor = check_tensor(tensor, generator)
    scale = check_std("scale", scale)
    if distribution not in VARIANCE_DISTRIBUTIONS:
        hint = " (orthogonal has no fan: use orthogonal_(tensor, gain))" if distribution == "orthogonal" else ""
        raise InitError(str(choice_error("distribution", "distribution", distribution, VARIANCE_DISTRIBUTIONS)) + hint)
    fans, fan_in, fan_out = _fan_args(fans, fan_in, fan_out)
    if tensor.numel() == 0:
        return tensor
    fan = resolve_fan(tensor, mode, fans, fan_in, fan_out)
    std = variance_std(scale, fan)
    param = SQRT3 * std if distribution == "uniform" else std
    check_draw(
        tensor,
        distribution,
        param,
        source=lambda: (
            f"std = sqrt(scale / fan) with scale={scale:.6g}, {_fan_source(mode, fan, fans, fan_in, fan_out)}"
        ),
    )
    return draw_(tensor, distribution, param, generator)


def _kaiming_param(
    tensor: torch.Tensor,
    a: float,
    mode: FanMode,
    nonlinearity: str,
    fans: FansArg,
    fan_in: float | None,
    fan_out: float | None,
    generator: torch.Generator | None,
    distribution: Distribution,
) -> float | None:
    # torch's arithmetic, gain / sqrt(fan), so the drop-ins stay bit-exact; None: nothing to draw.
    # Returns the draw's parameter: the std for a normal, the bound sqrt(3) * std for a uniform.
    check_tensor(tensor, generator)
    if a is not None:  # torch reads a=None as leaky_relu's default slope
        a = check_finite("a", a)
    gain = calculate_gain(nonlinearity, a)
    fans, fan_in, fan_out = _fan_args(fans, fan_in, fan_out)
    if tensor.numel() == 0:
        _warn_zero_element()
        return None
    fan = resolve_fan(tensor, mode, fans, fan_in, fan_out)
    std = gain_std(gain, fan)
    param = math.sqrt(3.0) * std if distribution == "uniform" else std
    check_draw(
        tensor,
        distribution,
        param,
        source=lambda: f"std = gain / sqrt(fan) with gain={gain:.6g}, {_fan_source(mode, fan, fans, fan_in, fan_out)}",
    )
    return param


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
    ``fan_in=``/``fan_out=``) replace the shape guess with true fans; mode may also be ``"fan_avg"`` or
    ``"fan_geo_avg"``.

    Note torch's own layers call this with ``a=math.sqrt(5)``: gain $\sqrt{1/3}$, bound
    $1/\sqrt{\mathrm{fan\_in}}$, 0.41x the ReLU std. Use ``nonlinearity="relu"`` for ReLU nets.

    As in torch, ``a`` is read only for ``leaky_relu`` (a negative slope gives the same gain as its
    absolute value) and a zero-element tensor is returned unchanged with torch's ``UserWarning``
    "Initializing zero-element tensors is a no-op". Unlike torch, ``a`` must be finite (``a=nan`` would
    make the std nan, ``a=inf`` the weights 0), and every argument is checked as in `variance_scaling_`.

    Example:
        >>> w = kaiming_uniform_(torch.empty(512, 256), nonlinearity="relu")
        >>> round(w.abs().max().item() / math.sqrt(6 / 256), 2)
        1.0
    """
    bound = _kaiming_param(tensor, a, mode, nonlinearity, fans, fan_in, fan_out, generator, "uniform")
    return tensor if bound is None else draw_(tensor, "uniform", bound, generator)


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
    ``variance_scaling_(tensor, scale=gain**2, mode=mode, distribution="normal")``. Arguments, checks and
    the zero-element warning as in `kaiming_uniform_`.

    Example:
        >>> w = kaiming_normal_(torch.empty(512, 1024), nonlinearity="relu", fan_in=2048)
        >>> round(w.std().item() / math.sqrt(2 / 2048), 1)
        1.0
    """
    std = _kaiming_param(tensor, a, mode, nonlinearity, fans, fan_in, fan_out, generator, "normal")
    return tensor if std is None else draw_(tensor, "normal", std, generator)


def _xavier_param(
    tensor: torch.Tensor,
    gain: float,
    fans: FansArg,
    fan_in: float | None,
    fan_out: float | None,
    generator: torch.Generator | None,
    distribution: Distribution,
) -> float | None:
    # The checked draw parameter (std, or bound for a uniform) in torch's arithmetic; None: nothing to draw.
    check_tensor(tensor, generator)
    gain = check_std("gain", gain)
    fans, fan_in, fan_out = _fan_args(fans, fan_in, fan_out)
    if tensor.numel() == 0:
        return None
    n_in = resolve_fan(tensor, "fan_in", fans, fan_in, fan_out)
    n_out = resolve_fan(tensor, "fan_out", fans, fan_in, fan_out)
    std = xavier_std(gain, n_in, n_out)
    param = math.sqrt(3.0) * std if distribution == "uniform" else std
    check_draw(
        tensor,
        distribution,
        param,
        source=lambda: (
            f"std = gain * sqrt(2 / (fan_in + fan_out)) with gain={gain:.6g}, fan_in={n_in:.6g}, fan_out={n_out:.6g}"
        ),
    )
    return param


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
    bound = _xavier_param(tensor, gain, fans, fan_in, fan_out, generator, "uniform")
    return tensor if bound is None else draw_(tensor, "uniform", bound, generator)


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
    std = _xavier_param(tensor, gain, fans, fan_in, fan_out, generator, "normal")
    return tensor if std is None else draw_(tensor, "normal", std, generator)


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
    tensor = check_tensor(tensor, generator)
    std = check_std("std", std)
    if tensor.numel() == 0:
        return tensor
    check_draw(tensor, "uniform", SQRT3 * std, source=lambda: f"bound = sqrt(3) * std with std={std:.6g}")
    return draw_(tensor, "uniform", SQRT3 * std, generator)
