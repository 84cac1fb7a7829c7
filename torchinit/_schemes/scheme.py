"""Variance-scaling schemes: `Scheme`, what each parameter role gets (overrides in ``overrides``).

Small frozen values; names are registry keys for default instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from torch import nn

from torchinit._layers.rules import Role
from torchinit._maths.draw import Action, variance_std
from torchinit._maths.gains import exact_gain
from torchinit._model.residual import RESIDUAL_RULES, example_input, residual_branches, scale_residuals
from torchinit._model.walk import walk
from torchinit._schemes.overrides import Override, spelled
from torchinit._schemes.plan import Plan, plan_by_role
from torchinit._schemes.registry import BaseScheme, Call, register_scheme
from torchinit._types import (
    DISTRIBUTIONS,
    FAN_MODES,
    Distribution,
    FanMode,
    InitError,
    check_bool,
    check_finite,
    choice_error,
)


@dataclass(frozen=True, kw_only=True, repr=False)
class Scheme(BaseScheme):
    r"""What each parameter role gets.

    Dense weights (Linear, Conv, ConvTranspose, Bilinear, attention projections, RNN input and
    projection weights) draw zero-mean values with $\mathrm{Var}(w) = \mathrm{scale}/\mathrm{fan}$
    over the *true* fans (see `torchinit.fans_of`), or are orthogonal with gain
    $\sqrt{\mathrm{scale}}$ when ``distribution="orthogonal"``; packed weights are treated chunk by
    chunk. Recurrent weights are orthogonal per gate block (``recurrent="orthogonal"``) or dense.
    Biases get ``bias`` (an LSTM's input-side forget-gate block gets ``forget_bias``); norm layers
    weight 1 (the value that passes the normalized input unscaled, measured: 0 for a norm computing
    ``x_hat * (1 + w)`` such as Gemma's), bias 0 and fresh running statistics; embeddings N(0, 1) with the
    padding row zero; PReLU its ``init``; attention ``bias_k``/``bias_v`` N(0, 1/E), as torch does.

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
        delta: with ``distribution="orthogonal"``, convolution weights (3+ dims) get a delta-orthogonal kernel
            (Xiao et al. 2018, as `torchinit.delta_orthogonal_`): the orthogonal matrix at the centre tap, zeros
            elsewhere, so a stack of stride-1 ``padding="same"`` convolutions is an isometry (every singular
            value of its input-output Jacobian is the gain). Needs at least as many output as input channels;
            one matrix across the channels (for grouped convolutions call ``delta_orthogonal_(w, groups=g)``).
        bias: the constant for biases.
        forget_bias: the LSTM forget-gate bias (on ``bias_ih``; ``bias_hh`` keeps ``bias``).
        readout: ``"linear"`` (gain 1), ``"zero"`` (zeros, as timm's ViT ``jax`` mode; a tied readout then
            stays linear, since the embedding shares it), or a float: the std of a normal draw.
        token_std: the std (after truncation at $\pm 2\sigma$) of learned tokens and position tables.
        residual: scale the output layer of each residual branch (found by tracing one forward pass, see
            `torchinit.residual_branches`; of ``data=`` when given, else of a small input made for the model):
            ``"1/sqrt(2L)"`` (GPT-2: $1/\sqrt{2L}$ over $L$ blocks), ``"depth_init"`` (torchtitan:
            $1/\sqrt{2(\ell + 1)}$ in block $\ell$ from 0), ``"zero"`` (the branch starts as the identity, as
            ``zero_init_residual``), a float factor, or None. The factor multiplies the layer weight's std (a
            norm's weight: its value).
        overrides: `Override` values applied in order.

    Example:
        >>> Scheme.kaiming("gelu", mode="fan_out")
        Scheme(scale=2.351..., mode='fan_out')
    """

    by_role: ClassVar[bool] = True

    scale: float = 2.0
    mode: FanMode = "fan_in"
    distribution: Distribution = "normal"
    recurrent: Literal["orthogonal", "dense"] = "orthogonal"
    delta: bool = False
    bias: float = 0.0
    forget_bias: float = 0.0
    readout: Literal["linear", "zero"] | float = "linear"
    token_std: float = 0.02
    residual: Literal["1/sqrt(2L)", "depth_init", "zero"] | float | None = None
    overrides: tuple[Override, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_finite("scale", self.scale, minimum=0.0)
        if self.mode not in FAN_MODES:
            raise choice_error("mode", "mode", self.mode, FAN_MODES)
        if self.distribution not in DISTRIBUTIONS:
            raise choice_error("distribution", "distribution", self.distribution, DISTRIBUTIONS)
        if self.recurrent not in ("orthogonal", "dense"):
            raise choice_error("recurrent", "recurrent", self.recurrent, ("orthogonal", "dense"))
        if check_bool("delta", self.delta) and self.distribution != "orthogonal":
            raise InitError(
                f"delta=True makes convolution weights delta-orthogonal, so it needs distribution='orthogonal'; got "
                f"distribution={self.distribution!r}."
            )
        check_finite("bias", self.bias)
        check_finite("forget_bias", self.forget_bias)
        if self.readout not in ("linear", "zero"):
            if isinstance(self.readout, str):
                raise choice_error("readout", "readout", self.readout, ("linear", "zero"))
            check_finite("readout", self.readout, minimum=0.0)
        check_finite("token_std", self.token_std, minimum=0.0)
        if isinstance(self.residual, str) or self.residual is None:
            if self.residual not in RESIDUAL_RULES:
                raise choice_error("residual", "residual", self.residual, tuple(r for r in RESIDUAL_RULES if r))
        else:
            check_finite("residual", self.residual, minimum=0.0)
        overrides = tuple(self.overrides) if isinstance(self.overrides, (list, tuple)) else None
        if overrides is None or not all(isinstance(o, Override) for o in overrides):
            raise InitError(f"overrides must be a sequence of Override; got overrides={self.overrides!r}.")
        object.__setattr__(self, "overrides", overrides)

    __repr__ = spelled

    @property
    def takes_data(self) -> bool:  # type: ignore[override]
        """With ``residual``, ``data=`` is the input traced to find the residual branches."""
        return self.residual is not None

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
            if self.distribution == "orthogonal" and role.experts:  # no batched QR: each expert's element std
                std = self.gain / math.sqrt(max(fans.fan_in, fans.fan_out))
                return Action.with_std("normal", std, fans, "MoE experts: normal with an orthogonal matrix's std")
            if self.distribution == "orthogonal":
                formula = "delta orthogonal (conv), orthogonal" if self.delta and kind == "dense" else "orthogonal"
                delta = self.delta and kind == "dense"
                return Action("orthogonal", self.gain, chunks=fans.chunks, fans=fans, formula=formula, delta=delta)
            std = variance_std(self.scale, fans.fan(self.mode))
            return Action.with_std(self.distribution, std, fans, "variance scaling")
        if kind == "bias":
            if role.forget_chunk is not None and role.input_side and self.forget_bias != self.bias:
                values = [self.bias] * role.chunks
                values[role.forget_chunk] = self.forget_bias
                return Action("constant", self.bias, chunk_values=tuple(values), formula="forget-gate bias")
            return Action("constant", self.bias, formula="bias")
        if kind == "norm_weight":
            if role.value is not None and role.value != 1.0:  # a norm computing x_hat * (1 + w): neutral 0
                return Action("constant", role.value, formula=f"norm weight {role.value:g} ({role.via})")
            return Action("constant", 1.0, formula="norm weight")
        if kind == "norm_bias":
            return Action("constant", 0.0, formula="norm bias")
        if kind == "embedding":
            if role.fans is not None:  # a position or token-type table added to a tied token table: its rule
                token = self._readout(Role("readout", role.fans, via="tied"))
                return replace(token, zero_row=role.padding_idx, formula=f"the token table's rule ({role.via})")
            return Action("normal", 1.0, zero_row=role.padding_idx, formula="N(0, 1) as torch")
        if kind == "prelu":
            return Action("constant", float(role.value if role.value is not None else 0.25), formula="PReLU init")
        if kind == "token":
            return Action("truncated_normal", self.token_std, formula=f"token TN(std {self.token_std:g})")
        if kind == "state_space":
            return Action("keep", formula="state-space parameter: kept as its constructor computed it")
        if kind == "temperature":
            return Action("keep", formula="learned temperature: kept as constructed")
        if kind == "layer_scale":
            return Action("keep", formula="layer scale: kept as constructed")
        if kind == "attention_kv" and role.width is not None:
            return Action("normal", 1.0 / math.sqrt(role.width), formula="N(0, 1/E) as torch")
        raise InitError(f"Scheme has no rule for {role!r}; an attention_kv role needs width=.")

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
        # fan_out keeps backward variance through hidden layers; on a readout it would make the logits' std grow as
        # sqrt(in/out) (10 on a 512-feature, 10-class head): the readout keeps the forward scale, fan_in
        mode = "fan_in" if self.mode == "fan_out" else self.mode
        std = variance_std(1.0, fans.fan(mode))
        return Action.with_std(
            self.distribution, std, fans, f"{via}: linear, gain 1" + (", fan_in" if mode != self.mode else "")
        )

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """Every parameter by its role (`action`), the scheme's and the call's overrides layered on top."""
        if not all(isinstance(o, Override) for o in call.overrides):
            raise InitError(f"overrides must be a sequence of Override; got overrides={tuple(call.overrides)!r}.")
        overrides = tuple(
            o.seen_through(call.wrapper) if isinstance(o, Override) else o for o in (*self.overrides, *call.overrides)
        )
        plan = plan_by_role(walk(module, own_only=call.own_only), self.action, overrides)
        if self.residual is not None:
            if call.own_only:
                raise InitError(
                    f"residual={self.residual!r} is found from the whole model's forward pass, which a layer being "
                    "constructed does not have: use torchinit.build(factory, scheme) or reinit the built model."
                )
            if any(s.target.lazy or s.target.tensor.is_meta for s in plan.steps):
                return plan  # refused by Plan.check (lazy or meta parameters): a trace would materialize them
            data = call.data if call.data is not None else example_input(module)
            scale_residuals(plan.steps, residual_branches(module, data), self.residual)
        return plan

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
