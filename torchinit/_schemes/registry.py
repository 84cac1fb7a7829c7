"""The scheme protocol and the name registry.

Every kind of scheme (variance scaling, ``legacy``, LSUV, recipes) is a `BaseScheme`: it plans its own
writes for a model (`BaseScheme.plan`), may run a pass afterwards (`BaseScheme.finish`, LSUV's
rescaling), and describes itself. A name is a registry key for a default instance, resolved once per call.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeAlias

from torch import nn

from torchinit._types import InitError

if TYPE_CHECKING:
    import torch

    from torchinit._layers.rules import Role
    from torchinit._maths.draw import Action
    from torchinit._schemes.plan import Plan, Selector
    from torchinit._schemes.report import InitReport


@dataclass(frozen=True)
class Call:
    """What one `torchinit.reinit` call asks of a scheme besides the model.

    Attributes:
        overrides: `Override` values given to the call (the scheme's own come first).
        own_only: plan the root module's own parameters only (a layer being constructed).
        seed: keyed generation was asked for.
        data: the batch a data-driven scheme calibrates on.
        generator: the RNG of the call's draws (None: torch's default generator).
        wrapper: the prefix of the wrappers reinit looked through (``"module."`` for ``nn.DataParallel``):
            an override spelled with it, as a ``state_dict`` name of the wrapped model is, selects too.
    """

    overrides: Sequence[Selector] = ()
    own_only: bool = False
    seed: int | None = None
    data: object = None
    generator: torch.Generator | None = None
    wrapper: str = ""


class BaseScheme:
    """The protocol every scheme kind implements; subclass it to add one (see the recipes guide).

    `plan` is the one required method. ``uses_data`` says whether the scheme needs ``data=`` (it then
    cannot run at construction time); ``torch_default`` that it is torch's own default, so construction
    contexts let torch's reset methods run unchanged.
    """

    uses_data: ClassVar[bool] = False
    takes_data: bool = False
    """Whether the scheme reads ``data=`` when given (a `Scheme` with ``residual=`` traces one forward pass of it)
    without needing it."""
    torch_default: ClassVar[bool] = False
    by_role: ClassVar[bool] = False
    """Whether `action` decides a parameter's write from its role alone (a `Scheme`): an `Override` can then
    layer this scheme's rule on another scheme's parameters."""

    def action(self, role: Role) -> Action:
        """The write for a parameter of the given role (schemes with ``by_role`` only)."""
        raise NotImplementedError(f"{self!r} decides writes from the whole model, not from a role alone")

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """The validated-to-be writes for ``module``: one `Plan` of steps, nothing written yet.

        Raise `InitError` here for anything the scheme cannot do with this call (a seed, overrides).
        """
        raise NotImplementedError

    def validate(self, module: nn.Module, call: Call) -> None:
        """Check what `finish` will need (LSUV: its data), before anything is written; raise `InitError`."""

    def finish(self, module: nn.Module, report: InitReport, call: Call) -> None:
        """A pass after the plan was written (LSUV rescales here); records what it did in ``report``.

        If it raises, reinit restores every tensor the plan wrote and the RNG states.
        """

    def dense_std(self, module: nn.Module, role: Role) -> float | None:
        """The element std this scheme gives a dense weight of ``module`` (for audits), or None."""
        return None

    def summary(self) -> str:
        """One line saying what the scheme does (``torchinit schemes`` prints it)."""
        return repr(self)


SchemeLike: TypeAlias = "str | BaseScheme"
"""A scheme argument: a registered name (``"kaiming_relu"``) or a scheme object."""

_REGISTRY: dict[str, BaseScheme] = {}


def register_scheme(name: str, scheme: BaseScheme, *, overwrite: bool = False) -> None:
    """Make ``scheme`` available as ``reinit(model, name)``.

    Raises:
        InitError: a non-identifier name, a non-scheme value, or an existing name without ``overwrite``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise InitError(f"name must be an identifier-like string; got name={name!r}.")
    if not isinstance(scheme, BaseScheme):
        raise InitError(
            f"scheme must be a Scheme; got scheme={scheme!r}. Any torchinit.extend.BaseScheme can be registered."
        )
    if name in _REGISTRY and not overwrite:
        raise InitError(f"scheme {name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[name] = scheme


def unregister_scheme(name: str) -> None:
    """Remove a registered name (tests restore the registry with it)."""
    _REGISTRY.pop(name, None)


def get_scheme(name: str) -> BaseScheme:
    """The scheme registered under ``name``.

    Raises:
        InitError: (a ValueError) for an unknown name, with the nearest name and the list.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InitError(
        f"scheme must be a registered name; got scheme={name!r}.{hint} Registered: {', '.join(sorted(_REGISTRY))}."
    )


def list_schemes() -> list[str]:
    """The registered scheme names, sorted; each works as ``reinit(model, name)``.

    Example:
        >>> "kaiming_relu" in list_schemes() and "legacy" in list_schemes()
        True
    """
    return sorted(_REGISTRY)


def resolve_scheme(scheme: SchemeLike) -> BaseScheme:
    """A scheme object from a name or a scheme."""
    if isinstance(scheme, str):
        return get_scheme(scheme)
    if isinstance(scheme, BaseScheme):
        return scheme
    raise InitError(f"scheme must be a registered name or a Scheme; got scheme={scheme!r}.")


def scheme_name(scheme: SchemeLike, resolved: BaseScheme) -> str:
    """How a report names the scheme: the name it was given by, or its repr."""
    return scheme if isinstance(scheme, str) else repr(resolved)
