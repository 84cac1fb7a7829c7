"""`Override`: a change layered on a scheme for the parameters it selects (by path, module type, role, frozen).

An override either acts (skip, keep, a constant, a std, another scheme's rule, a rule of your own) or modifies
the drawn rule it meets (scale, torch's fans, chunks). The planner asks each override, last first, whether it
selects a parameter and what that parameter gets.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, replace
from typing import Literal

import torch
from torch import nn

from torchinit._layers.rules import ROLES, Role, RoleName, default_actions
from torchinit._maths.draw import Action
from torchinit._maths.fans import Fans, torch_fans
from torchinit._model.walk import Target, canonical
from torchinit._schemes.registry import BaseScheme, get_scheme
from torchinit._types import (
    VARIANCE_DISTRIBUTIONS,
    Distribution,
    InitError,
    check_bool,
    check_finite,
    check_int,
    choice_error,
)


def _type_name(t: type) -> str:
    module = t.__module__
    return f"nn.{t.__name__}" if module.startswith("torch.nn") else f"{module}.{t.__qualname__}"


def spelled(obj: object) -> str:
    """A frozen dataclass as code that makes it again: ``Name(field=value, ...)``, defaults left out."""
    parts = []
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[operator]
        if value == default:
            continue
        if isinstance(value, type):
            text = _type_name(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, type) for v in value):
            text = "(" + ", ".join(_type_name(v) for v in value) + ",)"
        else:
            text = repr(value)
        parts.append(f"{f.name}={text}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True, kw_only=True, repr=False)
class Override:
    r"""A change layered on a scheme for the parameters it selects; the last matching override wins.

    Selection (all given filters must hold): ``path``, a glob on the parameter's full path
    (``"*.c_proj.weight"``); ``module``, the owning module's type(s); ``role``; ``frozen``
    (True selects parameters with ``requires_grad=False``).

    Frozen parameters are kept unless an override with ``frozen=True`` selects them: ``Override(frozen=True)``
    alone writes them by the scheme's own rule, ``Override(path="pos.weight", frozen=True, std=0.02)`` by its
    action. Any other override that selects a frozen parameter leaves it kept.

    Action (at most one): ``skip`` leaves the parameter untouched (listed in the report);
    ``keep`` keeps the value its constructor gave it; ``constant`` fills a value; ``std`` draws
    zero-mean with that std in ``distribution``; ``scheme`` applies another scheme's rule for the
    parameter's role (``"legacy"``: torch's own default for that layer); ``rule`` is a callable
    ``(path, module, param) -> Action | float | None`` (a float is the std of a normal draw, None
    falls through to the scheme). Without one of these the scheme's own rule is used, changed by:
    ``scale`` multiplies the std (or orthogonal gain) of the rule: GPT-2's
    $0.02/\sqrt{2 n_\mathrm{layer}}$ is ``Override(path="*.c_proj.weight", scale=...)``;
    ``fans="torch"`` computes the rule from torch's shape-based fans instead of the true fans
    (torchvision's ResNet init); ``chunks`` treats a fused projection in a plain ``nn.Linear`` (a
    ``qkv`` of 3 blocks along dim 0) chunk by chunk.

    Example:
        >>> Override(path="*.norm2.weight", constant=0.0)  # zero the last norm of each residual branch
        Override(path='*.norm2.weight', constant=0.0)
    """

    path: str = "*"
    module: type[nn.Module] | tuple[type[nn.Module], ...] | None = None
    role: RoleName | None = None
    frozen: bool | None = None
    skip: bool = False
    constant: float | None = None
    std: float | None = None
    distribution: Distribution = "normal"
    scheme: BaseScheme | str | None = None
    keep: bool = False
    rule: Callable[[str, nn.Module, torch.Tensor], Action | float | None] | None = None
    scale: float | None = None
    fans: Literal["true", "torch"] = "true"
    chunks: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise InitError(f"path must be a glob string; got path={self.path!r}.")
        if self.path.count("[") != self.path.count("]") or not self.path:
            raise InitError(
                f"path must be a glob over parameter paths ('*.attn.*.weight'; [...] a set of characters); got "
                f"path={self.path!r}, which is empty or has an unbalanced bracket."
            )
        for flag in ("skip", "frozen", "keep"):
            check_bool(flag, getattr(self, flag), optional=flag == "frozen")
        object.__setattr__(self, "_globs", (canonical(self.path),))
        types = self.module if isinstance(self.module, tuple) else (self.module,) if self.module else ()
        if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise InitError(f"module must be an nn.Module type or a tuple of them; got module={self.module!r}.")
        if self.role is not None and self.role not in ROLES:
            raise choice_error("role", "role", self.role, ROLES)
        actions = [self.skip, self.keep, self.constant is not None, self.std is not None, self.scheme is not None,
                   self.rule is not None]  # fmt: skip
        modifiers = [self.scale is not None, self.fans != "true", self.chunks is not None]
        if sum(actions) > 1 or (sum(actions) == 0 and not any(modifiers) and self.frozen is not True):
            raise InitError(
                "an Override needs exactly one action among skip=True, keep=True, constant=, std=, scheme= and rule=, "
                f"or only modifiers of the scheme's rule (scale=, fans='torch', chunks=); got {self!r}."
            )
        if any(modifiers) and (self.skip or self.keep or self.constant is not None or self.rule is not None):
            raise InitError(
                f"scale=, fans= and chunks= modify a drawn rule (the scheme's, std= or scheme=); got {self!r}."
            )
        if self.scale is not None:
            check_finite("scale", self.scale, minimum=0.0)
        if self.fans not in ("true", "torch"):
            raise choice_error("fans", "fans", self.fans, ("true", "torch"))
        check_int("chunks", self.chunks, minimum=1, optional=True)
        if self.rule is not None and not callable(self.rule):
            raise InitError(
                f"rule must be a callable (path, module, param) -> Action | float | None; got {self.rule!r}."
            )
        if self.constant is not None:
            check_finite("constant", self.constant)
        if self.std is not None:
            check_finite("std", self.std, minimum=0.0)
        if self.distribution not in VARIANCE_DISTRIBUTIONS:
            raise choice_error("distribution", "distribution", self.distribution, VARIANCE_DISTRIBUTIONS)
        # A name is resolved once, here: unknown names fail before any walk.
        resolved = get_scheme(self.scheme) if isinstance(self.scheme, str) else self.scheme
        if resolved is not None and not isinstance(resolved, BaseScheme):
            raise InitError(f"scheme must be a Scheme or a registered name; got scheme={self.scheme!r}.")
        if resolved is not None and not (resolved.by_role or resolved.torch_default):
            kind = (
                "calibrates on data in a pass of its own" if resolved.uses_data else "is not a variance-scaling Scheme"
            )
            raise InitError(
                f"Override(scheme={self.scheme!r}): {self.scheme!r} {kind}, so it has no per-parameter rule to "
                "layer; an Override takes a variance-scaling scheme (a Scheme or its name, e.g. 'lecun_normal') or "
                "'legacy' (torch's default for the layer), or use skip=True, constant= or std=."
            )
        object.__setattr__(self, "_scheme", resolved)

    __repr__ = spelled

    def seen_through(self, wrapper: str) -> Override:
        """This override for a model reached through wrappers whose ``state_dict`` names start with ``wrapper``
        (``"module."``, see `torchinit.reinit`): a path spelled with that prefix also selects the model's own
        path (``module.0.weight`` selects ``0.weight``); itself when its path does not start with it."""
        prefix = canonical(wrapper)
        glob = canonical(self.path)
        if not prefix or not glob.startswith(prefix) or glob == prefix:
            return self
        seen = copy.copy(self)
        object.__setattr__(seen, "_globs", (glob, glob[len(prefix) :]))
        return seen

    def selects(self, path: str, owner: nn.Module, role: Role | None, frozen: bool) -> bool:
        """Whether this override applies to the parameter at ``path``."""
        if not any(fnmatch.fnmatchcase(path, glob) for glob in self._globs):  # type: ignore[attr-defined]
            return False
        if self.module is not None and not isinstance(owner, self.module):
            return False
        if self.role is not None and (role is None or role.kind != self.role):
            return False
        return self.frozen is None or self.frozen == frozen

    def action(self, role: Role | None, target: Target, base: Callable[[Role], Action]) -> Action | None:
        """The write this override makes for ``target`` of the given role (``base``: the scheme's rule), or
        None when its ``rule`` passes."""
        path = target.path
        if self.skip:
            return Action("skip", reason=f"override {self!r}")
        if self.keep:
            return Action("keep", formula=f"override {self!r}: kept as constructed")
        if self.constant is not None:
            return Action("constant", float(self.constant), formula=f"override constant {self.constant:g}")
        if self.rule is not None:
            try:
                made = self.rule(path, target.owner, target.tensor)
            except InitError as error:  # a bad Action made by the rule: say where
                raise InitError(f"{path} ({type(target.owner).__name__}): {error}") from None
            if made is None:
                return None
            if isinstance(made, Action):
                return made
            check_finite("the std a rule returned", made, minimum=0.0)
            return Action("normal", float(made), formula=f"override rule: std {float(made):g}")
        if self.std is not None:
            action = Action.with_std(self.distribution, float(self.std), None, f"override std {self.std:g}")
            return scaled(action, self.scale) if self.scale is not None else action
        scheme: BaseScheme | None = self._scheme  # type: ignore[attr-defined]
        if scheme is not None and scheme.torch_default:
            found = default_actions(target.owner).get(target.name)
            if found is None:
                raise InitError(
                    f"override {self!r}: torch has no default rule torchinit knows for {path!r} "
                    f"({type(target.owner).__name__}); use std= or constant=."
                )
            return found
        if role is None:
            raise InitError(
                f"override {self!r} applies a scheme to {path!r}, which has no known role; use constant= or "
                "std=, or register a role rule for its module."
            )
        if (self.fans == "torch" or self.chunks is not None) and role.fans is not None:
            fans = torch_fans(target.tensor) if self.fans == "torch" else role.fans
            if self.chunks is not None:
                rows = target.tensor.shape[0] if target.tensor.dim() else 0
                if rows % self.chunks:
                    raise InitError(
                        f"{self!r}: {target.where} has {rows} rows along dim 0, which {self.chunks} chunks do not "
                        "divide; give the number of fused blocks it really packs."
                    )
                fans = Fans(fans.fan_in, fans.fan_out / self.chunks, chunks=self.chunks)
            role = replace(role, fans=fans)
        action = scheme.action(role) if scheme is not None and scheme.by_role else base(role)
        return scaled(action, self.scale) if self.scale is not None else action


def scaled(action: Action, scale: float) -> Action:
    """``action`` with its std (orthogonal: gain) multiplied by ``scale``."""
    if scale == 1.0 or action.kind in ("skip", "keep", "constant"):
        return action
    return replace(action, param=action.param * scale, formula=f"{action.formula} x {scale:.6g}")
