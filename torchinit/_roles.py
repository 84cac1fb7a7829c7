"""Module rules: what each parameter *is* (its role, true fans, packed chunks), never what it gets.

Schemes (``_schemes.py``) map roles to draws; this file only knows torch.nn's layouts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from torchinit._fans import _RULES as _FANS
from torchinit._fans import Fans, find_fans
from torchinit._rules import TypeRules
from torchinit._types import InitError

RoleName = Literal["dense", "recurrent", "bias", "norm_weight", "norm_bias", "embedding", "prelu", "attention_kv"]
"""What a parameter is for.

``dense``: a weight that maps inputs to outputs (Linear, Conv, ConvTranspose, Bilinear, attention
projections, RNN input and projection weights); ``recurrent``: an RNN's hidden-to-hidden weight;
``bias``; ``norm_weight`` and ``norm_bias`` of normalization layers; ``embedding`` tables;
``prelu`` slopes; ``attention_kv``: MultiheadAttention's learned ``bias_k``/``bias_v`` tokens.
"""

ROLES: tuple[RoleName, ...] = (
    "dense", "recurrent", "bias", "norm_weight", "norm_bias", "embedding", "prelu", "attention_kv",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Role:
    """A parameter's role and the layout facts a scheme needs.

    Attributes:
        kind: the role.
        fans: true fans (per chunk) of a ``dense`` or ``recurrent`` weight.
        chunks: equal blocks along dim 0 of a packed bias (an RNN's gates).
        forget_chunk: which of those blocks is an LSTM's forget gate.
        input_side: for RNN biases, True on ``bias_ih`` (where a forget-gate bias goes).
        padding_idx: the embedding row kept at zero.
        value: the constant a ``prelu`` starts from.
        width: ``attention_kv`` embedding width (torch draws N(0, 1/width)).
    """

    kind: RoleName
    fans: Fans | None = None
    chunks: int = 1
    forget_chunk: int | None = None
    input_side: bool = False
    padding_idx: int | None = None
    value: float | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ROLES:
            raise InitError(f"kind must be one of {', '.join(map(repr, ROLES))}; got kind={self.kind!r}.")
        if self.kind in ("dense", "recurrent") and self.fans is None:
            raise InitError(f"a {self.kind} role needs fans=Fans(fan_in, fan_out); got fans=None.")


RoleRule = Callable[[nn.Module, str], "Role | None"]
"""A rule gives the role of a module's own parameter, by local name, or None to defer."""

_RULES: TypeRules[Role] = TypeRules()


def register_role_rule(module_type: type[nn.Module], rule: RoleRule) -> None:
    """Teach ``reinit`` what the parameters of a custom module type are.

    The rule receives the module and a parameter's local name and returns a `Role` or None
    (then base classes' rules are tried, and finally a registered fan rule, which makes the
    parameter ``dense``). A module whose parameter nobody covers is reported, never silently skipped.

    Example:
        >>> class Scale(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.gamma = nn.Parameter(torch.empty(8))
        >>> register_role_rule(Scale, lambda m, name: Role("norm_weight") if name == "gamma" else None)
    """
    _RULES.register(module_type, rule)


def role_of(module: nn.Module, name: str) -> Role | None:
    """The role of ``module``'s own parameter ``name``, or None when no rule covers it."""
    role = _RULES.first(module, name)
    if role is not None:
        return role
    fans = find_fans(module, name)
    return Role("dense", fans) if fans is not None else None


_BIAS = Role("bias")
_NORM = {"weight": Role("norm_weight"), "bias": Role("norm_bias")}


def _weight_and_bias(m: Any, name: str) -> Role | None:
    if name == "bias":
        return _BIAS
    fans = find_fans(m, name)
    return Role("dense", fans) if fans is not None else None


def _embedding(m: Any, name: str) -> Role | None:
    return Role("embedding", padding_idx=m.padding_idx) if name == "weight" else None


def _attention(m: Any, name: str) -> Role | None:
    if name == "in_proj_bias":
        return _BIAS
    if name in ("bias_k", "bias_v"):
        return Role("attention_kv", width=m.embed_dim)
    fans = find_fans(m, name)
    return Role("dense", fans) if fans is not None else None


_RNN_PARAM = re.compile(r"(weight|bias)_(ih|hh|hr)(_l\d+(_reverse)?)?")


def _recurrent(m: Any, name: str) -> Role | None:
    match = _RNN_PARAM.fullmatch(name)
    if match is None:
        return None
    kind, side = match.group(1), match.group(2)
    if kind == "bias":
        gates = getattr(m, name).shape[0] // m.hidden_size
        forget = 1 if gates == 4 else None  # LSTM gate order: input, forget, cell, output
        return Role("bias", chunks=gates, forget_chunk=forget, input_side=side == "ih")
    fans = find_fans(m, name)
    if fans is None:
        return None
    return Role("recurrent" if side == "hh" else "dense", fans)


def _norm(m: Any, name: str) -> Role | None:
    return _NORM.get(name)


def _prelu(m: Any, name: str) -> Role | None:
    return Role("prelu", value=float(m.init)) if name == "weight" else None


NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)

for _dense in (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd):
    register_role_rule(_dense, _weight_and_bias)
register_role_rule(nn.Embedding, _embedding)
register_role_rule(nn.EmbeddingBag, _embedding)
register_role_rule(nn.MultiheadAttention, _attention)
register_role_rule(nn.RNNBase, _recurrent)
register_role_rule(nn.RNNCellBase, _recurrent)
for _norm_type in NORMS:
    register_role_rule(_norm_type, _norm)
register_role_rule(nn.PReLU, _prelu)


# Built-in torch layers whose roles depend only on their scalar attributes and parameter shapes.
# While no rule has been registered since import, reinit may reuse one layer's plan for its twins.
PURE_TYPES: frozenset[type[nn.Module]] = frozenset(
    {nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
     nn.ConvTranspose3d, nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d,
     nn.BatchNorm3d}
)  # fmt: skip
_BUILT_IN_VERSIONS = (_RULES.version, _FANS.version)


def rules_pristine() -> bool:
    """Whether the role and fan registries are as torchinit left them at import."""
    return (_RULES.version, _FANS.version) == _BUILT_IN_VERSIONS
