r"""Gains: the factor that keeps activations' second moment at 1 through a nonlinearity.

For $y = W f(x)$ with $x \sim \mathcal N(0, 1)$ elementwise, $\mathrm{Var}(y) =
\mathrm{fan\_in}\,\mathrm{Var}(w)\,\mathbb E[f(z)^2]$, so variance preservation needs
$\mathrm{Var}(w) = g^2/\mathrm{fan\_in}$ with $g = 1/\sqrt{\mathbb E[f(z)^2]}$.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from torchinit._types import InitError, as_real, choice_error, shown

_TORCH_LINEAR = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
_TORCH_NAMES = (*_TORCH_LINEAR, "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def calculate_gain(nonlinearity: str, param: int | float | None = None) -> float:
    r"""torch's recommended gain, value for value (a drop-in for ``torch.nn.init.calculate_gain``).

    | nonlinearity  | torch's gain                      | `exact_gain` |
    |---------------|-----------------------------------|--------------|
    | linear, conv* | $1$                               | $1$          |
    | sigmoid       | $1$                               | 1.8462       |
    | tanh          | $5/3$                             | 1.5925       |
    | relu          | $\sqrt 2$                         | $\sqrt 2$    |
    | leaky_relu    | $\sqrt{2/(1+a^2)}$ (a = 0.01)     | same         |
    | selu          | $3/4$                             | 1.0000       |

    torch's tanh, sigmoid and selu values are conventions, not variance preservation: sigmoid's 1
    ignores that $\mathbb E[\sigma(z)^2] \approx 0.29$, tanh's 5/3 was chosen for saturating
    training dynamics, and 3/4 for SELU trades self-normalization for gradient flow (torch's own docs
    advise ``'linear'`` for self-normalizing nets). Use `exact_gain` for the preserving value.

    Raises:
        InitError: an unknown nonlinearity, or a ``param`` for leaky_relu that is not a finite real number
            (NumPy scalars and 0-d tensors are numbers; bools, nan and inf are not). Like torch, ``param`` is
            read only for leaky_relu.
    """
    if nonlinearity in _TORCH_LINEAR or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope: float = 0.01
        else:
            try:
                slope = as_real("param", param)
            except InitError:
                raise InitError(f"leaky_relu's negative slope must be a number; got param={shown(param)}.") from None
            if not math.isfinite(slope):
                raise InitError(
                    f"leaky_relu's negative slope must be finite (nan gives a nan gain, inf a gain of 0); "
                    f"got param={param!r}."
                )
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise choice_error("nonlinearity", "nonlinearity", nonlinearity, _TORCH_NAMES)


def _identity(x: torch.Tensor, _: float) -> torch.Tensor:
    return x


# name -> (f(x, param), default param or None when the activation takes none)
_ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], float | None]] = {
    **{alias: (_identity, None) for alias in ("identity", *_TORCH_LINEAR)},
    "relu": (lambda x, _: F.relu(x), None),
    "leaky_relu": (lambda x, a: F.leaky_relu(x, a), 0.01),
    "tanh": (lambda x, _: torch.tanh(x), None),
    "sigmoid": (lambda x, _: torch.sigmoid(x), None),
    "gelu": (lambda x, _: F.gelu(x), None),
    "gelu_tanh": (lambda x, _: F.gelu(x, approximate="tanh"), None),
    "silu": (lambda x, _: F.silu(x), None),
    "swish": (lambda x, _: F.silu(x), None),
    "mish": (lambda x, _: F.mish(x), None),
    "elu": (lambda x, a: F.elu(x, a), 1.0),
    "celu": (lambda x, a: F.celu(x, a), 1.0),
    "selu": (lambda x, _: F.selu(x), None),
    "softplus": (lambda x, b: F.softplus(x, b), 1.0),
    "softsign": (lambda x, _: F.softsign(x), None),
    "relu6": (lambda x, _: F.relu6(x), None),
    "hardtanh": (lambda x, _: F.hardtanh(x), None),
    "hardswish": (lambda x, _: F.hardswish(x), None),
    "hardsigmoid": (lambda x, _: F.hardsigmoid(x), None),
    "logsigmoid": (lambda x, _: F.logsigmoid(x), None),
}

ACTIVATIONS: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))
"""The activation names `exact_gain` knows."""


def _named(name: str, param: float | None) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise choice_error("activation", "activation", name, ACTIVATIONS)
    f, default = _ACTIVATIONS[name]
    if default is None and param is not None:
        raise InitError(f"activation {name!r} takes no parameter; got param={param!r}.")
    value = 0.0
    if default is not None:
        try:
            value = float(as_real("param", default if param is None else param))
        except InitError:
            raise InitError(f"param must be a number; got param={shown(param)}.") from None
        if not math.isfinite(value):
            raise InitError(f"param must be a finite number; got param={param!r}.")
    return lambda x: f(x, value)


@functools.lru_cache(maxsize=4)
def _hermite_rule(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Golub-Welsch for the probabilists' Hermite weight exp(-z^2/2)/sqrt(2 pi): the Jacobi matrix
    # has zero diagonal and off-diagonal sqrt(k); nodes are its eigenvalues, weights the squared
    # first components of its eigenvectors (they sum to 1).
    k = torch.arange(1, points, dtype=torch.float64).sqrt()
    nodes, vectors = torch.linalg.eigh(torch.diag(k, 1) + torch.diag(k, -1))
    return nodes, vectors[0] ** 2


def second_moment(f: Callable[[torch.Tensor], torch.Tensor], points: int = 256) -> float:
    r"""$\mathbb E[f(z)^2]$ for $z \sim \mathcal N(0,1)$ by Gauss-Hermite quadrature.

    Two rules, of ``points`` and ``2 * points`` nodes, are combined by Richardson extrapolation
    $(4 I_{2n} - I_n)/3$. For smooth f both are exact to rounding and so is the combination;
    for activations whose second derivative jumps at 0 (ELU, SELU, CELU) a single rule errs by
    $O(n^{-2})$ (1e-5 at n = 256) and the extrapolation brings that to about 1e-9.
    Positively homogeneous pieces (ReLU, leaky ReLU) are exact with any even n by symmetry.
    """
    values = []
    for n in (points, 2 * points):
        nodes, weights = _hermite_rule(n)
        fz = _evaluate(f, nodes)
        values.append(float((weights * fz.double() ** 2).sum()))
    coarse, fine = values
    return (4 * fine - coarse) / 3


def _evaluate(f: Callable[[torch.Tensor], torch.Tensor], nodes: torch.Tensor) -> torch.Tensor:
    # f at the nodes, checked to be a deterministic elementwise map: same shape, and f of the first half of
    # the nodes is the first half of f (an nn.Linear(n, n) keeps the shape but mixes elements, a softmax
    # normalizes over them, a dropout changes between calls).
    expectation = (
        f"activation must map a float64 tensor of shape ({nodes.numel()},) elementwise to a tensor of the same "
        "shape (an activation name, an activation module such as nn.GELU(), or an elementwise callable)"
    )
    half = nodes.numel() // 2
    with torch.no_grad():
        try:
            fz = f(nodes.clone())
            part = f(nodes[:half].clone()) if isinstance(fz, torch.Tensor) and fz.shape == nodes.shape else None
        except Exception as error:  # the callable is the user's: any failure is a wrong activation
            raise InitError(f"{expectation}; calling it raised {type(error).__name__}: {error}") from error
    if not isinstance(fz, torch.Tensor) or fz.shape != nodes.shape:
        got = f"{type(fz).__name__}" + (f" of shape {tuple(fz.shape)}" if isinstance(fz, torch.Tensor) else "")
        raise InitError(f"{expectation}; got {got}.")
    if not (
        isinstance(part, torch.Tensor)
        and part.shape == (half,)
        and torch.allclose(part.double(), fz[:half].double(), rtol=1e-9, equal_nan=True)
    ):
        raise InitError(f"{expectation}; its outputs depend on the other elements or change between calls.")
    return fz


def _refuse_layers(module: nn.Module) -> None:
    """A module holding a weight matrix (nn.Linear, a conv, a Sequential with one) is a layer, not an activation."""
    for path, param in module.named_parameters():
        if param.dim() >= 2:
            raise InitError(
                f"activation={shown(module)} is a layer with weights ({path} of shape {tuple(param.shape)}), not an "
                f"activation. Pass the nonlinearity that follows the {type(module).__name__}: a name (exact_gain("
                "'relu'), 'gelu', 'tanh', ...), an activation module such as nn.GELU(), or an elementwise callable."
            )


def exact_gain(
    activation: str | nn.Module | Callable[[torch.Tensor], torch.Tensor],
    param: float | None = None,
) -> float:
    r"""The variance-preserving gain $g = 1/\sqrt{\mathbb E[f(z)^2]}$, $z \sim \mathcal N(0,1)$.

    Computed by Gauss-Hermite quadrature (see `second_moment`), for any activation:

    Args:
        activation: a name (``"relu"``, ``"leaky_relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"silu"``,
            ``"mish"``, ``"elu"``, ``"selu"``, ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ... and torch's
            ``"linear"``/``"conv2d"`` aliases), a module instance (``nn.LeakyReLU(0.2)``,
            ``nn.GELU(approximate="tanh")``), or any elementwise callable on tensors.
        param: the name's parameter: leaky_relu's negative slope (default 0.01), elu/celu's alpha,
            softplus' beta. Not allowed with a module or callable, which carry their own.

    Returns:
        The gain; ReLU gives $\sqrt2$ to rounding, leaky ReLU $\sqrt{2/(1+a^2)}$.

    Raises:
        InitError: an unknown name, a ``param`` that is not a finite number, or an ``activation`` that is
            not a deterministic elementwise map (``exact_gain(nn.Linear(2, 2))``: the message says so and
            what to pass instead), or whose second moment is not positive and finite.

    Unlike `calculate_gain`, every value preserves the second moment: tanh 1.5925 (torch 5/3),
    sigmoid 1.8462 (torch 1), selu 1.0000 (torch 3/4). GELU, SiLU and Mish are not positively
    homogeneous, so no constant gain keeps a deep stack exactly at scale: the gain is exact for one
    layer fed unit-variance input, and a stack drifts slowly (GELU reaches ~11 by layer 50).

    Example:
        >>> round(exact_gain("relu"), 6), round(exact_gain(nn.GELU()), 4)
        (1.414214, 1.5335)
    """
    if isinstance(activation, str):
        f = _named(activation, param)
    elif param is not None:
        raise InitError(
            f"param is only for named activations; got param={param!r} with activation={activation!r}. "
            "Configure the module or callable itself."
        )
    elif isinstance(activation, nn.Module):
        _refuse_layers(activation)
        f = activation
        if next(activation.parameters(), None) is not None or next(activation.buffers(), None) is not None:
            try:  # a module with weights (nn.PReLU) evaluated in float64 on a copy; the user's stays as it is
                f = copy.deepcopy(activation).to(device="cpu", dtype=torch.float64)
            except (RuntimeError, NotImplementedError) as error:
                raise InitError(f"activation {shown(activation)} cannot be copied to float64: {error}") from error
    elif callable(activation):
        f = activation
    else:
        raise InitError(f"activation must be a name, an nn.Module or a callable; got activation={shown(activation)}.")
    moment = second_moment(f)
    if not (math.isfinite(moment) and moment > 0):
        raise InitError(
            f"activation {activation!r} has E[f(z)^2]={moment!r} under z ~ N(0, 1); a gain needs a "
            "positive finite second moment."
        )
    return 1.0 / math.sqrt(moment)
