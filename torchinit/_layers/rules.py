"""What torchinit knows about a module type, described once and found by one MRO lookup.

A `LayerRule` says, for one module type, the true fans of its parameters, what each parameter is for
(its `Role`), the draws torch's own constructor makes (for ``legacy``), the method torch's
``__init__`` calls to draw them (replaced at construction time by `torchinit.default_scheme` and
`torchinit.build`), and which child list holds deep copies of one prototype. Each part may be left
out; then the rule of the next registered class along the MRO answers. torch.nn's own layers are
described in ``_layers/torch_nn.py``, through the same `register_layer` users call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from torch import nn

from torchinit._maths.fans import Fans
from torchinit._types import LAZY, InitError, is_lazy

if TYPE_CHECKING:
    from torchinit._maths.draw import Action

RoleName = Literal[
    "dense", "readout", "recurrent", "bias", "norm_weight", "norm_bias", "embedding", "prelu", "attention_kv",
    "token", "layer_scale", "temperature", "state_space",
]  # fmt: skip
"""What a parameter is for.

``dense``: a weight that maps inputs to outputs (Linear, Conv, ConvTranspose, Bilinear, HF ``Conv1D``,
attention projections, RNN input and projection weights); ``readout``: the dense weight that produces
the model's output (an LM head, a classifier), not followed by the activation a scheme is named for;
``recurrent``: an RNN's hidden-to-hidden weight; ``bias``; ``norm_weight`` and ``norm_bias`` of
normalization layers; ``embedding`` tables; ``prelu`` slopes; ``attention_kv``: MultiheadAttention's
learned ``bias_k``/``bias_v``; ``token``: learned tokens and position tables (``cls_token``,
``pos_embed``, ``relative_position_bias_table``, ...); ``layer_scale``: per-channel residual scales;
``temperature``: a learned logit scale or bias (CLIP's and SigLIP's ``logit_scale``, ``logit_bias``), whose
constructed value is the model's choice; ``state_space``: a selective state-space layer's structured parameters
(Mamba's ``A_log``, ``D``, ``dt_bias``), which its constructor computes (``A = 1..N``, ``D = 1``).
"""

ROLES: tuple[RoleName, ...] = (
    "dense", "readout", "recurrent", "bias", "norm_weight", "norm_bias", "embedding", "prelu", "attention_kv",
    "token", "layer_scale", "temperature", "state_space",
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
        value: the constant a ``prelu`` starts from; a ``norm_weight``'s neutral value when it is not 1.
        width: ``attention_kv`` embedding width (torch draws N(0, 1/width)).
        experts: for a ``dense`` weight, a batch of this many independent weights along dim 0 (a mixture of
            experts' stacked expert matrices); ``fans`` are one expert's.
        via: for a ``readout``, how it was found (tied to an input embedding, or its name).
    """

    kind: RoleName
    fans: Fans | None = None
    chunks: int = 1
    forget_chunk: int | None = None
    input_side: bool = False
    padding_idx: int | None = None
    value: float | None = None
    width: int | None = None
    experts: int | None = None
    via: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ROLES:
            raise InitError(f"kind must be one of {', '.join(map(repr, ROLES))}; got kind={self.kind!r}.")
        if self.kind in ("dense", "readout", "recurrent") and self.fans is None:
            raise InitError(f"a {self.kind} role needs fans=Fans(fan_in, fan_out); got fans=None.")


BIAS = Role("bias")
"""The one shared bias role (layer rules hand it out; planners memo actions by role identity)."""
NORM = {"weight": Role("norm_weight"), "bias": Role("norm_bias")}
"""A normalization layer's roles by parameter name."""


class LegacyDraws(Protocol):
    """What a legacy rule talks to: the planner that records torch's default draws in RNG order."""

    def draw(self, module: nn.Module, prefix: str, name: str, action: Action, *, rewrite: bool = False) -> None:
        """Record one draw into ``module``'s own parameter ``name`` (``rewrite``: a later write to it)."""

    def visit(self, module: nn.Module, prefix: str) -> None:
        """Record the draws of a submodule, by its own rule, now."""


FanRule = Callable[[nn.Module, str], "Fans | None"]
"""``(module, local name) -> Fans | None``: the true fans of a weight, None for a parameter without fans."""
RoleRule = Callable[[nn.Module, str], "Role | None"]
"""``(module, local name) -> Role | None``: what the parameter is for, None to defer to the fans rule or a base."""
LegacyRule = Callable[[LegacyDraws, nn.Module, str], None]
"""``(draws, module, prefix) -> None``: record torch's default draws for the module's own parameters, in
RNG order (and visit children out of order where torch's constructor draws them so)."""


@dataclass(frozen=True)
class LayerRule:
    """Everything torchinit knows about one module type; a part left as None defers to base classes.

    Attributes:
        fans: the true fans of each weight (a parameter with fans and no role is ``dense``).
        roles: the role of parameters that are not plain dense weights (biases, norms, tables, gates).
        legacy: torch's default draws, in torch's RNG order, for ``reinit(model, "legacy")``.
        reset: the method torch's ``__init__`` calls to draw the defaults (``"reset_parameters"``);
            `torchinit.default_scheme` and `torchinit.build` replace what it does while they are active.
        clones: the name of a child ``ModuleList`` whose entries are deep copies of one prototype
            (``TransformerEncoder.layers``): ``legacy`` copies the prototype's values into them, and a
            construction-time scheme draws each copy anew.
    """

    fans: FanRule | None = None
    roles: RoleRule | None = None
    legacy: LegacyRule | None = None
    reset: str | None = None
    clones: str | None = None


_REGISTRY: dict[type, LayerRule] = {}


def _check_type(module_type: object) -> None:
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise InitError(f"module_type must be an nn.Module subclass; got module_type={module_type!r}.")


def register_layer(
    module_type: type[nn.Module],
    *,
    fans: FanRule | None = None,
    roles: RoleRule | None = None,
    legacy: LegacyRule | None = None,
    reset: str | None = None,
    clones: str | None = None,
) -> None:
    """Describe a module type to torchinit: its parameters' fans and roles, torch's default draws, its reset.

    Replaces any earlier description of ``module_type``. Rules apply to subclasses too: for each part,
    the most derived registered class answers first, and a None (or an absent part) falls through
    to its base classes. Every part is optional; a type described by none of them is a container.

    Args:
        module_type: the layer class.
        fans: ``(module, name) -> Fans | None``; the parameter is then ``dense`` unless ``roles`` says otherwise.
        roles: ``(module, name) -> Role | None``.
        legacy: ``(draws, module, prefix) -> None`` calling ``draws.draw(module, prefix, name, action)``.
        reset: the method name torch's ``__init__`` calls to draw defaults.
        clones: the child ``ModuleList`` holding deep copies of one prototype.

    Example:
        >>> class Gate(nn.Module):  # y = x @ w with w of shape (in, 2 * out): two packed halves; a scale
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.empty(8, 2 * 16))
        ...         self.gain = nn.Parameter(torch.empty(16))
        ...         self.reset_parameters()
        ...     def reset_parameters(self) -> None:
        ...         nn.init.normal_(self.w)
        ...         nn.init.ones_(self.gain)
        >>> register_layer(
        ...     Gate,
        ...     fans=lambda m, name: Fans(8, 16) if name == "w" else None,
        ...     roles=lambda m, name: torchinit.extend.Role("norm_weight") if name == "gain" else None,
        ...     reset="reset_parameters",
        ... )
        >>> fans_of(Gate(), "w"), reinit(Gate())["gain"].rule
        (Fans(fan_in=8, fan_out=16), 'constant(1)')
    """
    _check_type(module_type)
    rule = LayerRule(fans=fans, roles=roles, legacy=legacy, reset=reset, clones=clones)
    for f in fields(rule):
        value = getattr(rule, f.name)
        if f.name in ("reset", "clones"):
            if value is not None and not (isinstance(value, str) and value.isidentifier()):
                raise InitError(f"{f.name} must be an attribute name; got {f.name}={value!r}.")
        elif value is not None and not callable(value):
            raise InitError(f"{f.name} must be callable as {f.name}(module, name); got {f.name}={value!r}.")
    _REGISTRY[module_type] = rule
    _CHAINS.clear()


def _update(module_type: type[nn.Module], **parts: object) -> None:
    _check_type(module_type)
    current = _REGISTRY.get(module_type, LayerRule())
    register_layer(module_type, **{**{f.name: getattr(current, f.name) for f in fields(current)}, **parts})


def register_fan_rule(module_type: type[nn.Module], rule: FanRule) -> None:
    """Set only the fans part of ``module_type``'s description (see `register_layer`).

    Example:
        >>> class Packed(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.empty(8, 2 * 16))
        >>> register_fan_rule(Packed, lambda m, name: Fans(8, 16) if name == "w" else None)
        >>> fans_of(Packed(), "w")
        Fans(fan_in=8, fan_out=16)
    """
    if not callable(rule):
        raise InitError(f"rule must be callable as rule(module, name); got rule={rule!r}.")
    _update(module_type, fans=rule)


def register_role_rule(module_type: type[nn.Module], rule: RoleRule) -> None:
    """Set only the roles part of ``module_type``'s description (see `register_layer`).

    A parameter no role rule answers for is ``dense`` when a fan rule covers it, and otherwise
    reported as uncovered, never silently skipped.
    """
    if not callable(rule):
        raise InitError(f"rule must be callable as rule(module, name); got rule={rule!r}.")
    _update(module_type, roles=rule)


@dataclass(frozen=True, slots=True)
class Described:
    """A module type's description resolved along its MRO: rules to ask in order, and the first answers."""

    fans: tuple[FanRule, ...]
    roles: tuple[RoleRule, ...]
    legacy: LegacyRule | None
    clones: str | None


_CHAINS: dict[type, Described] = {}  # a pure function of the registry, cleared when it changes


def _chain(cls: type) -> Described:
    found = _CHAINS.get(cls)
    if found is not None:
        return found
    rules = [_REGISTRY[c] for c in cls.__mro__ if c in _REGISTRY]
    found = _CHAINS[cls] = Described(
        fans=tuple(r.fans for r in rules if r.fans is not None),
        roles=tuple(r.roles for r in rules if r.roles is not None),
        legacy=next((r.legacy for r in rules if r.legacy is not None), None),
        clones=next((r.clones for r in rules if r.clones is not None), None),
    )
    return found


def describe(module: nn.Module) -> Described:
    """The resolved description of ``module``'s type."""
    return _chain(type(module))


def resets() -> list[tuple[type[nn.Module], str]]:
    """Every registered type that defines its own default-draw method, with the method's name."""
    return [(cls, rule.reset) for cls, rule in _REGISTRY.items() if rule.reset is not None and rule.reset in vars(cls)]


def registered() -> dict[type, LayerRule]:
    """A copy of the registry (tests restore it with `restore`)."""
    return dict(_REGISTRY)


def restore(saved: dict[type, LayerRule]) -> None:
    """Put back a registry saved by `registered`."""
    _REGISTRY.clear()
    _REGISTRY.update(saved)
    _CHAINS.clear()


def own_parameter(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module``'s own parameter ``name`` as the layer uses it: through its parametrization (weight_norm,
    spectral_norm, ...) when it has one, so a parametrized layer is described as the plain one is."""
    param: torch.Tensor | None = module._parameters.get(name)
    plists = module._modules.get("parametrizations") if param is None else None
    if plists is not None and name in plists._modules:
        param = getattr(module, name)  # role_of reads it with the parametrizations quiet: no power iteration
    return param


def find_fans(module: nn.Module, name: str, described: Described | None = None) -> Fans | None:
    """The fans of ``module``'s own parameter ``name`` by the registered rules, or None if none covers it.

    A zero-element or lazy (shapeless) parameter has no fans.
    """
    rules = (described or _chain(type(module))).fans
    if not rules:
        return None
    param: torch.Tensor | None = module._parameters.get(name)
    if param is None:  # a parametrized one: read through its owner
        param = own_parameter(module, name)
    if isinstance(param, LAZY) or (isinstance(param, torch.Tensor) and param.numel() == 0):
        return None
    for rule in rules:
        fans = rule(module, name)
        if fans is not None:
            return fans
    return None


def _hooked_original(module: nn.Module, name: str) -> str:
    """``weight`` for ``weight_orig`` under torch.nn.utils.spectral_norm's hook (the rules describe the weight)."""
    if name.endswith("_orig") and module._forward_pre_hooks:
        base = name[: -len("_orig")]
        if any(type(h).__name__ == "SpectralNorm" and getattr(h, "name", None) == base
               for h in module._forward_pre_hooks.values()):  # fmt: skip
            return base
    return name


@contextlib.contextmanager
def quiet_parametrizations(module: nn.Module) -> Iterator[None]:
    """``module``'s parametrizations in eval mode for the block, so that reading a parametrized weight changes
    nothing (in training mode a spectral norm's read runs a power-iteration step, moving ``_u`` and ``_v``)."""
    plists = module._modules.get("parametrizations")
    if plists is None:
        yield
        return
    modes = [(m, m.training) for m in plists.modules()]
    try:
        for m, _ in modes:
            m.training = False
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def role_of(module: nn.Module, name: str) -> Role | None:
    """The role of ``module``'s own parameter ``name``, or None when no rule covers it."""
    if "parametrizations" in module._modules:
        with quiet_parametrizations(module):
            return plain_role_of(module, name)
    return plain_role_of(module, name)


def plain_role_of(module: nn.Module, name: str) -> Role | None:
    """`role_of` for a module without parametrizations (nothing to keep quiet): the walk's common case."""
    if module._forward_pre_hooks and name.endswith("_orig"):
        name = _hooked_original(module, name)
    described = _CHAINS.get(type(module)) or _chain(type(module))
    for rule in described.roles:
        role = rule(module, name)
        if role is not None:
            return role
    fans = find_fans(module, name, described)
    return _dense(fans) if fans is not None else None


_DENSE: dict[int, tuple[Fans, Role]] = {}  # by the identity of the (shared, cached) Fans instance


def _dense(fans: Fans) -> Role:
    # frozen: one shared instance per Fans instance; the entry keeps the Fans alive, so its id is not reused
    found = _DENSE.get(id(fans))
    if found is None:
        if len(_DENSE) >= 4096:
            _DENSE.clear()
        found = _DENSE[id(fans)] = (fans, Role("dense", fans))
    return found[1]


def fans_of(module: nn.Module, name: str) -> Fans:
    """The true fans of a parameter, from its module's layout rather than its shape alone.

    Args:
        module: the module that owns the parameter, or any ancestor of it.
        name: the parameter's name relative to ``module`` (``"weight"``, ``"0.conv.weight"``).

    Returns:
        The parameter's `Fans`; packed weights (attention ``in_proj_weight``, RNN gates) get
        per-chunk fans with ``chunks`` > 1. See the fan table in the docs for every rule.

    Raises:
        InitError: no such parameter, an uninitialized lazy parameter, or no rule covers it.

    Example:
        >>> fans_of(nn.ConvTranspose2d(64, 32, 4, stride=2), "weight")
        Fans(fan_in=256, fan_out=512)
        >>> fans_of(nn.LSTM(128, 256), "weight_ih_l0")
        Fans(fan_in=128, fan_out=256, chunks=4)
    """
    owner_path, _, local = name.rpartition(".")
    try:
        owner = module.get_submodule(owner_path) if owner_path else module
    except AttributeError:
        owner = None
    param = getattr(owner, local, None) if owner is not None else None
    if not isinstance(param, torch.Tensor):
        raise InitError(f"{type(module).__name__} has no parameter {name!r}.")
    if is_lazy(param):
        raise InitError(
            f"parameter {name!r} of {type(owner).__name__} is an uninitialized lazy parameter; "
            "run a forward pass first so it gets its shape."
        )
    assert owner is not None
    fans = find_fans(owner, local)
    if fans is None:
        raise InitError(
            f"no fan rule covers parameter {name!r} of {type(owner).__name__} (shape "
            f"{tuple(param.shape)}). Biases and scales have no fans; for a custom layout pass "
            "fans=Fans(...) explicitly or describe the layer with torchinit.register_layer."
        )
    return fans


class _Recorder:
    """Collects a legacy rule's actions by parameter name (the LegacyDraws protocol, without a plan)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.actions: dict[str, Action] = {}

    def draw(self, module: nn.Module, prefix: str, name: str, action: Action, *, rewrite: bool = False) -> None:
        if module is self.module and not rewrite:
            self.actions.setdefault(name, action)

    def visit(self, module: nn.Module, prefix: str) -> None:
        pass


def default_actions(module: nn.Module) -> dict[str, Action]:
    """torch's default draw of each of ``module``'s own parameters, by its registered legacy rule."""
    rule = describe(module).legacy
    recorder = _Recorder(module)
    if rule is not None:
        try:
            rule(recorder, module, "")
        except AttributeError:  # a rule that needs a planner's state: fall back to the whole reset
            return {}
    return recorder.actions
