"""Variance-scaling schemes (`Scheme`: what each parameter role gets) and `Override` (a change layered on one).

Small frozen values; names are registry keys for default instances.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from torchinit._draw import Action, variance_std
from torchinit._fans import Fans, torch_fans
from torchinit._gains import exact_gain
from torchinit._layers import ROLES, Role, RoleName, default_actions
from torchinit._plan import Plan, Target, canonical, modules_of, plan_by_role
from torchinit._registry import BaseScheme, Call, get_scheme, register_scheme
from torchinit._types import (
    DISTRIBUTIONS,
    FAN_MODES,
    VARIANCE_DISTRIBUTIONS,
    Distribution,
    FanMode,
    InitError,
    check_finite,
    choice_error,
)


def _type_name(t: type) -> str:
    module = t.__module__
    return f"nn.{t.__name__}" if module.startswith("torch.nn") else f"{module}.{t.__qualname__}"


def _repr(obj: object) -> str:
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
            value = getattr(self, flag)
            if not (isinstance(value, bool) or (flag == "frozen" and value is None)):
                raise InitError(f"{flag} must be True or False; got {flag}={value!r}.")
        object.__setattr__(self, "_glob", canonical(self.path))
        types = self.module if isinstance(self.module, tuple) else (self.module,) if self.module else ()
        if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise InitError(f"module must be an nn.Module type or a tuple of them; got module={self.module!r}.")
        if self.role is not None and self.role not in ROLES:
            raise choice_error("role", "role", self.role, ROLES)
        actions = [self.skip, self.keep, self.constant is not None, self.std is not None, self.scheme is not None,
                   self.rule is not None]  # fmt: skip
        modifiers = [self.scale is not None, self.fans != "true", self.chunks is not None]
        if sum(actions) > 1 or (sum(actions) == 0 and not any(modifiers)):
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
        if self.chunks is not None and (
            isinstance(self.chunks, bool) or not isinstance(self.chunks, int) or self.chunks < 1
        ):
            raise InitError(
                f"chunks must be a positive int (the fused blocks along dim 0); got chunks={self.chunks!r}."
            )
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
        if resolved is not None and not (isinstance(resolved, Scheme) or resolved.torch_default):
            kind = (
                "calibrates on data in a pass of its own" if resolved.uses_data else "is not a variance-scaling Scheme"
            )
            raise InitError(
                f"Override(scheme={self.scheme!r}): {self.scheme!r} {kind}, so it has no per-parameter rule to "
                "layer; an Override takes a variance-scaling scheme (a Scheme or its name, e.g. 'lecun_normal') or "
                "'legacy' (torch's default for the layer), or use skip=True, constant= or std=."
            )
        object.__setattr__(self, "_scheme", resolved)

    __repr__ = _repr

    def selects(self, path: str, owner: nn.Module, role: Role | None, frozen: bool) -> bool:
        """Whether this override applies to the parameter at ``path``."""
        if not fnmatch.fnmatchcase(path, self._glob):  # type: ignore[attr-defined]
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
            made = self.rule(path, target.owner, target.tensor)
            if made is None:
                return None
            if isinstance(made, Action):
                return made
            check_finite("the std a rule returned", made, minimum=0.0)
            return Action("normal", float(made), formula=f"override rule: std {float(made):g}")
        if self.std is not None:
            action = Action.with_std(self.distribution, float(self.std), None, f"override std {self.std:g}")
            return _scaled(action, self.scale) if self.scale is not None else action
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
                fans = Fans(fans.fan_in, fans.fan_out / self.chunks, chunks=self.chunks)
            role = replace(role, fans=fans)
        action = scheme.action(role) if isinstance(scheme, Scheme) else base(role)
        return _scaled(action, self.scale) if self.scale is not None else action


def _scaled(action: Action, scale: float) -> Action:
    """``action`` with its std (orthogonal: gain) multiplied by ``scale``."""
    if scale == 1.0 or action.kind in ("skip", "keep", "constant"):
        return action
    return replace(action, param=action.param * scale, formula=f"{action.formula} x {scale:.6g}")


@dataclass(frozen=True, kw_only=True, repr=False)
class Scheme(BaseScheme):
    r"""What each parameter role gets.

    Dense weights (Linear, Conv, ConvTranspose, Bilinear, attention projections, RNN input and
    projection weights) draw zero-mean values with $\mathrm{Var}(w) = \mathrm{scale}/\mathrm{fan}$
    over the *true* fans (see `torchinit.fans_of`), or are orthogonal with gain
    $\sqrt{\mathrm{scale}}$ when ``distribution="orthogonal"``; packed weights are treated chunk by
    chunk. Recurrent weights are orthogonal per gate block (``recurrent="orthogonal"``) or dense.
    Biases get ``bias`` (an LSTM's input-side forget-gate block gets ``forget_bias``); norm layers
    weight 1, bias 0 and fresh running statistics; embeddings N(0, 1) with the padding row zero;
    PReLU its ``init``; attention ``bias_k``/``bias_v`` N(0, 1/E), as torch does.

    The readout (the layer producing the model's output: an LM head, a classifier) feeds a loss, not
    the activation the scheme is named for: by default it gets the linear rule, gain 1
    ($\mathrm{Var}(w) = 1/\mathrm{fan}$ in the scheme's mode and distribution). A readout tied to the
    input embedding is drawn once, by the readout's rule, so the table is never N(0, 1) there.
    Learned tokens and position tables get a truncated normal of std ``token_std`` (as timm and Hugging
    Face do); layer-scale vectors keep their constructed value.

    Args:
        scale: the variance numerator: $\mathrm{gain}^2$, 2 for ReLU.
        mode: the fan to divide by: ``fan_in``, ``fan_out``, ``fan_avg`` or ``fan_geo_avg``
            ($\sqrt{\mathrm{fan\_in}\cdot\mathrm{fan\_out}}$).
        distribution: ``normal``, ``uniform``, ``truncated_normal`` (std-corrected) or ``orthogonal``.
        recurrent: ``orthogonal`` or ``dense`` for ``weight_hh``.
        bias: the constant for biases.
        forget_bias: the LSTM forget-gate bias (on ``bias_ih``; ``bias_hh`` keeps ``bias``).
        readout: ``"linear"`` (gain 1), ``"zero"`` (zeros, as timm's ViT ``jax`` mode; a tied readout then
            stays linear, since the embedding shares it), or a float: the std of a normal draw.
        token_std: the std (after truncation at $\pm 2\sigma$) of learned tokens and position tables.
        overrides: `Override` values applied in order.

    Example:
        >>> Scheme.kaiming("gelu", mode="fan_out")
        Scheme(scale=2.351..., mode='fan_out')
    """

    scale: float = 2.0
    mode: FanMode = "fan_in"
    distribution: Distribution = "normal"
    recurrent: Literal["orthogonal", "dense"] = "orthogonal"
    bias: float = 0.0
    forget_bias: float = 0.0
    readout: Literal["linear", "zero"] | float = "linear"
    token_std: float = 0.02
    overrides: tuple[Override, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_finite("scale", self.scale, minimum=0.0)
        if self.mode not in FAN_MODES:
            raise choice_error("mode", "mode", self.mode, FAN_MODES)
        if self.distribution not in DISTRIBUTIONS:
            raise choice_error("distribution", "distribution", self.distribution, DISTRIBUTIONS)
        if self.recurrent not in ("orthogonal", "dense"):
            raise choice_error("recurrent", "recurrent", self.recurrent, ("orthogonal", "dense"))
        check_finite("bias", self.bias)
        check_finite("forget_bias", self.forget_bias)
        if self.readout not in ("linear", "zero"):
            if isinstance(self.readout, str):
                raise choice_error("readout", "readout", self.readout, ("linear", "zero"))
            check_finite("readout", self.readout, minimum=0.0)
        check_finite("token_std", self.token_std, minimum=0.0)
        overrides = tuple(self.overrides) if isinstance(self.overrides, (list, tuple)) else None
        if overrides is None or not all(isinstance(o, Override) for o in overrides):
            raise InitError(f"overrides must be a sequence of Override; got overrides={self.overrides!r}.")
        object.__setattr__(self, "overrides", overrides)

    __repr__ = _repr

    @property
    def gain(self) -> float:
        """$\\sqrt{\\mathrm{scale}}$."""
        return math.sqrt(self.scale)

    @classmethod
    def kaiming(
        cls,
        nonlinearity: str | nn.Module | Any = "relu",
        param: float | None = None,
        *,
        mode: FanMode = "fan_in",
        distribution: Distribution = "normal",
        **options: Any,
    ) -> Scheme:
        r"""He et al. (2015) for any activation: ``scale = exact_gain(nonlinearity, param) ** 2``.

        ReLU gives exactly 2, leaky ReLU $2/(1+a^2)$, linear 1; others come from quadrature
        (gelu 2.3517, silu 2.8108, tanh 2.5361).
        """
        if nonlinearity == "relu" and param is None:
            scale = 2.0
        elif nonlinearity == "leaky_relu":
            slope = 0.01 if param is None else param
            check_finite("param", slope)
            scale = 2.0 / (1.0 + slope**2)
        elif nonlinearity == "linear" and param is None:
            scale = 1.0
        else:
            scale = exact_gain(nonlinearity, param) ** 2
        return cls(scale=scale, mode=mode, distribution=distribution, **options)

    @classmethod
    def lecun(cls, distribution: Distribution = "normal", **options: Any) -> Scheme:
        """LeCun et al. (1998): ``Var(w) = 1/fan_in``."""
        return cls(scale=1.0, mode="fan_in", distribution=distribution, **options)

    @classmethod
    def xavier(cls, distribution: Distribution = "uniform", gain: float = 1.0, **options: Any) -> Scheme:
        """Glorot & Bengio (2010): ``Var(w) = gain**2 / fan_avg = 2 gain**2 / (fan_in + fan_out)``."""
        check_finite("gain", gain, minimum=0.0)
        return cls(scale=gain**2, mode="fan_avg", distribution=distribution, **options)

    @classmethod
    def orthogonal(cls, gain: float = 1.0, **options: Any) -> Scheme:
        """Saxe et al. (2014): every dense weight (semi-)orthogonal times ``gain``, chunk by chunk."""
        check_finite("gain", gain, minimum=0.0)
        return cls(scale=gain**2, distribution="orthogonal", **options)

    def with_overrides(self, *overrides: Override) -> Scheme:
        """A copy with ``overrides`` appended (they win over earlier ones)."""
        return replace(self, overrides=(*self.overrides, *overrides))

    def action(self, role: Role) -> Action:
        """The write this scheme makes for a parameter of the given role (overrides not applied)."""
        kind = role.kind
        if kind == "recurrent" and self.recurrent == "orthogonal":
            assert role.fans is not None
            return Action("orthogonal", 1.0, chunks=role.fans.chunks, fans=role.fans, formula="orthogonal per gate")
        if kind == "readout":
            return self._readout(role)
        if kind in ("dense", "recurrent"):
            fans = role.fans
            assert fans is not None
            if self.distribution == "orthogonal":
                return Action("orthogonal", self.gain, chunks=fans.chunks, fans=fans, formula="orthogonal")
            std = variance_std(self.scale, fans.fan(self.mode))
            return Action.with_std(self.distribution, std, fans, "variance scaling")
        if kind == "bias":
            if role.forget_chunk is not None and role.input_side and self.forget_bias != self.bias:
                values = [self.bias] * role.chunks
                values[role.forget_chunk] = self.forget_bias
                return Action("constant", self.bias, chunk_values=tuple(values), formula="forget-gate bias")
            return Action("constant", self.bias, formula="bias")
        if kind == "norm_weight":
            return Action("constant", 1.0, formula="norm weight")
        if kind == "norm_bias":
            return Action("constant", 0.0, formula="norm bias")
        if kind == "embedding":
            return Action("normal", 1.0, zero_row=role.padding_idx, formula="N(0, 1) as torch")
        if kind == "prelu":
            return Action("constant", float(role.value if role.value is not None else 0.25), formula="PReLU init")
        if kind == "token":
            return Action("truncated_normal", self.token_std, formula=f"token TN(std {self.token_std:g})")
        if kind == "layer_scale":
            return Action("keep", formula="layer scale: kept as constructed")
        assert kind == "attention_kv" and role.width is not None
        return Action("normal", 1.0 / math.sqrt(role.width), formula="N(0, 1/E) as torch")

    def _readout(self, role: Role) -> Action:
        fans = role.fans
        assert fans is not None
        via = f"readout ({role.via})" if role.via else "readout"
        tied = bool(role.via and role.via.startswith("tied"))
        if self.readout == "zero" and not tied:
            return Action("constant", 0.0, fans=fans, formula=f"{via}: zero")
        if isinstance(self.readout, (int, float)) and not isinstance(self.readout, bool):
            return Action("normal", float(self.readout), fans=fans, formula=f"{via}: N(0, {self.readout:g}^2)")
        if self.distribution == "orthogonal":
            return Action("orthogonal", 1.0, chunks=fans.chunks, fans=fans, formula=f"{via}: orthogonal, gain 1")
        std = variance_std(1.0, fans.fan(self.mode))
        return Action.with_std(self.distribution, std, fans, f"{via}: linear, gain 1")

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """Every parameter by its role (`action`), the scheme's and the call's overrides layered on top."""
        if not all(isinstance(o, Override) for o in call.overrides):
            raise InitError(f"overrides must be a sequence of Override; got overrides={tuple(call.overrides)!r}.")
        overrides = (*self.overrides, *call.overrides)
        return plan_by_role(modules_of(module, call.own_only), self.action, overrides)

    def dense_std(self, module: nn.Module, role: Role) -> float | None:
        r"""The element std of a dense weight: $\sqrt{\mathrm{scale}/\mathrm{fan}}$, or the orthogonal one."""
        if role.fans is None:
            return None
        if self.distribution == "orthogonal":
            weight = module._parameters.get("weight")
            if weight is None:
                return None
            rows, cols = weight.shape[0] // role.fans.chunks, weight[0].numel()
            return self.gain / math.sqrt(max(rows, cols))
        return self.action(role).std

    def summary(self) -> str:
        """The dense-weight formula and the bias."""
        if self.distribution == "orthogonal":
            return f"dense weights orthogonal, gain {self.gain:.4g}; biases {self.bias:g}"
        shape = {"normal": "N(0, s^2)", "uniform": "U(+-sqrt(3) s)", "truncated_normal": "TN(+-2 sigma, std s)"}
        return (
            f"dense weights {shape[self.distribution]}, s = sqrt({self.scale:.4g} / {self.mode}); biases {self.bias:g}"
        )


_BUILT_IN: dict[str, Scheme] = {
    "kaiming_relu": Scheme.kaiming("relu"),
    "kaiming_relu_uniform": Scheme.kaiming("relu", distribution="uniform"),
    "kaiming_relu_fan_out": Scheme.kaiming("relu", mode="fan_out"),
    "kaiming_gelu": Scheme.kaiming("gelu"),
    "kaiming_silu": Scheme.kaiming("silu"),
    "kaiming_tanh": Scheme.kaiming("tanh"),
    "lecun_normal": Scheme.lecun("normal"),
    "lecun_uniform": Scheme.lecun("uniform"),
    "xavier_uniform": Scheme.xavier("uniform"),
    "xavier_normal": Scheme.xavier("normal"),
    "orthogonal": Scheme.orthogonal(),
}
for _name, _scheme in _BUILT_IN.items():
    register_scheme(_name, _scheme)
