r"""Width: how each parameter of a model scales against the same architecture at a base width (muP's infshape).

A dimension of a parameter whose size differs from the base's is a *width* dimension (muP's "infinite" one);
one of the same size is finite. A weight with fans (a dense or readout weight) gets the multipliers of its fans,
$\mathrm{fan\_in}/\mathrm{base\_fan\_in}$ and $\mathrm{fan\_out}/\mathrm{base\_fan\_out}$; any other tensor (a
bias, a norm's weight, an embedding table, a token) has fan-in multiplier 1 and the multiplier of its last width
dimension as fan-out (muP's "vector-like" parameters). The learning rates of Yang et al. 2021 (Tensor Programs V,
Table 3, as Microsoft's ``mup`` package's ``MuAdam`` and ``MuSGD`` apply them) are functions of these two numbers
alone (`Width.lr`).
"""

from __future__ import annotations

import difflib
import re
import weakref
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch
from torch import nn

from torchinit._layers.rules import Role
from torchinit._maths.fans import Fans
from torchinit._model.walk import Walk, canonical, walk
from torchinit._types import InitError, check_finite, choice_error

Optimizer: TypeAlias = Literal["adam", "adamw", "sgd"]
OPTIMIZERS: tuple[Optimizer, ...] = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class Width:
    r"""A parameter's width multipliers against the base model: ``fan_in`` and ``fan_out`` are
    $\mathrm{fan}/\mathrm{fan_{base}}$ (1 for a dimension the same size as the base's).

    A weight with fans uses its true fans; any other tensor has ``fan_in`` 1 and, as ``fan_out``, the
    multiplier of its last width dimension (a bias or norm weight of the width, an embedding table's columns).
    """

    fan_in: float = 1.0
    fan_out: float = 1.0

    def lr(self, optimizer: Optimizer) -> float:
        r"""The factor muP puts on the learning rate of this parameter.

        Adam and AdamW (entrywise-normalized updates): $1/m_\mathrm{in}$: hidden and readout weights
        $\mathrm{lr}\cdot\mathrm{base\_fan\_in}/\mathrm{fan\_in}$, input weights, embeddings and vectors lr.
        SGD: $m_\mathrm{out}/m_\mathrm{in}$: input weights, embeddings and vectors of the width
        $\mathrm{lr}\cdot m$, hidden weights $\mathrm{lr}\cdot m_\mathrm{out}/m_\mathrm{in}$ (1 when square),
        the readout $\mathrm{lr}/m_\mathrm{in}$.
        """
        if optimizer == "sgd":
            return self.fan_out / self.fan_in
        return 1.0 / self.fan_in

    @property
    def hidden(self) -> bool:
        """Both fans scale with width (muP's matrix-like weight)."""
        return self.fan_in != 1.0 and self.fan_out != 1.0


def is_table(role: Role | None) -> bool:
    """An embedding table with fans: a readout tied to the input embedding, or a position table added to a tied
    token table. muP reads it as the embedding it also is: its entries keep their width-independent scale, and its
    width multipliers come from its shape, as any vector-like parameter's."""
    return role is not None and (
        role.kind == "embedding" or (role.kind == "readout" and (role.via or "").startswith("tied"))
    )


BaseShapes: TypeAlias = "dict[str, tuple[tuple[int, ...], Fans | None]]"
"""A base model as muP needs it: every parameter path (tied ones under each path) -> (shape, true fans or None)."""


def base_shapes(base: nn.Module) -> BaseShapes:
    """The shapes and true fans of every parameter of ``base`` (compiled models' paths are their own names).

    Raises:
        InitError: the base has an uninitialized lazy parameter.
    """
    found: BaseShapes = {}
    for param in walk(base).params:
        if param.lazy:
            raise InitError(
                f"recipes.mup needs the base model's shapes, and its {param.path} ({type(param.owner).__name__}) is "
                "an uninitialized lazy parameter: run one forward pass on the base first, or build it without lazy "
                "layers."
            )
        fans = param.role.fans if param.role is not None else None
        for use in param.every:
            found[use.path] = (tuple(param.tensor.shape), fans)
    return found


def built(factory: object) -> nn.Module:
    """The model a zero-argument ``factory`` makes, built on the ``meta`` device with torch's CPU RNG state
    restored afterwards (no memory, no draws: passing the model or its factory plans the same writes); a factory
    that cannot build on ``meta`` (it reads values while building) is built on the CPU, the RNG still restored.

    Raises:
        InitError: ``factory`` is not callable, or returns something other than an ``nn.Module``.
    """
    if not callable(factory):
        raise InitError(
            f"base must be the model at its base width or a zero-argument factory of it; got base={factory!r}."
        )
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            made = factory()
    except Exception:  # code that reads values while building (a .item(), a numpy call): build it for real
        with torch.random.fork_rng(devices=[]):
            made = factory()
    if not isinstance(made, nn.Module):
        raise InitError(f"base must return an nn.Module when called; it returned {type(made).__name__}.")
    return made


def widths(walked: Walk, base: BaseShapes) -> dict[str, Width]:
    """Every parameter path of the model (tied ones under each path) -> its `Width` against ``base``.

    Raises:
        InitError: the first parameter the model and the base do not share (by path, or by number of dimensions),
            with the nearest name; nothing has been written.
    """
    paths = {use.path for param in walked.params for use in param.every}
    found: dict[str, Width] = {}
    for param in walked.params:
        for use in param.every:
            if use.path not in base:
                raise _mismatch(f"the model's parameter {use.where} is not in the base model", use.path, base)
        if param.lazy:
            continue  # refused by the plan's check, with its own message
        shape, fans = base[param.path]
        ours = tuple(param.tensor.shape)
        if len(shape) != len(ours):
            raise InitError(
                f"recipes.mup: the model's {param.where} has {len(ours)} dimensions and the base's {shape} "
                f"{len(shape)}; the base must be the same architecture at another width."
            )
        table = is_table(param.role)  # its entries are an embedding's: widths by its shape, as a vector's
        role_fans = param.role.fans if param.role is not None and not table else None
        width = _width(ours, shape, role_fans, None if table else fans)
        for use in param.every:
            found[use.path] = width
    for path in base:
        if path not in paths:
            raise _mismatch(f"the base's parameter {path} is not in the model", path, dict.fromkeys(paths))
    return found


def _mismatch(what: str, path: str, names: dict[str, Any]) -> InitError:
    near = difflib.get_close_matches(path, list(names), n=1, cutoff=0.0)
    hint = f" (nearest name there: {near[0]!r})" if near else ""
    return InitError(
        f"recipes.mup: {what}{hint}. The base must be the same architecture at another width, with the same "
        "parameter names: build it with the same code and a smaller width."
    )


def _width(shape: tuple[int, ...], base: tuple[int, ...], fans: Fans | None, base_fans: Fans | None) -> Width:
    if fans is not None and base_fans is not None:
        return Width(fans.fan_in / base_fans.fan_in, fans.fan_out / base_fans.fan_out)
    wide = [ours / theirs for ours, theirs in zip(shape, base, strict=True) if ours != theirs]
    if not wide:
        return Width()
    if len(wide) == 1:
        return Width(1.0, wide[0])
    return Width(wide[-1], wide[0])  # two width dims and no fans: muP's (fan_out, fan_in) = (dim 0, dim 1) reading


def param_groups(model: nn.Module, widths: dict[str, Width], lr: object, optimizer: object) -> list[dict[str, Any]]:
    """The parameter groups of `torchinit.InitReport.param_groups` (see there)."""
    rate = check_finite("lr", lr, minimum=0.0)
    if optimizer not in OPTIMIZERS:
        raise choice_error("optimizer", "optimizer", optimizer, OPTIMIZERS)
    if not widths:
        return [{"params": list(model.parameters()), "lr": rate}]
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        path = _planned_path(name)
        width = widths.get(path)
        if width is None:
            raise InitError(
                f"{name} (shape {tuple(param.shape)}) is not among the parameters recipes.mup planned: was it added "
                "after reinit? Reinitialize the model as it is now, then ask the new report for its groups."
            )
        groups.setdefault(width.lr(optimizer), []).append(param)
    return [{"params": params, "lr": rate * factor} for factor, params in groups.items()]


_ORIGINAL = re.compile(r"\.parametrizations\.([^.]+)\.original\d*$")


def _planned_path(name: str) -> str:
    """The path a plan knows a parameter by: canonical, and a parametrization's originals as the weight they make."""
    return _ORIGINAL.sub(r".\1", canonical(name))


class ModelRef:
    """A weak reference to the model a report describes: the report does not keep a deleted model alive."""

    def __init__(self, model: nn.Module | None) -> None:
        self._ref = weakref.ref(model) if model is not None else None

    def get(self) -> nn.Module:
        """The model, or an InitError when it no longer exists (or the report was made without one)."""
        model = self._ref() if self._ref is not None else None
        if model is None:
            raise InitError(
                "this report's model no longer exists (a report keeps only a weak reference to it): keep the model "
                "alive, e.g. model = ...; report = torchinit.reinit(model, ...), then call param_groups."
            )
        return model
