r"""muP, the Maximal Update Parametrization (Yang et al. 2021, Tensor Programs V), on an unmodified model.

muP makes each layer's update size independent of width, so the learning rate tuned on a narrow model transfers
to a wide one. It is stated against a *base* model (the same architecture at the width the learning rate was
tuned at): a dimension whose size differs from the base's is a width dimension (``_schemes/width.py``). With
$m_\mathrm{in} = \mathrm{fan\_in}/\mathrm{base\_fan\_in}$ and $m_\mathrm{out}$ likewise:

- **hidden** weights ($m_\mathrm{in} \ne 1$, $m_\mathrm{out} \ne 1$): the scheme's variance over the base's fan,
  times $1/m_\mathrm{in}$: under a fan_in scheme exactly its $\mathrm{Var} = g^2/\mathrm{fan\_in}$;
- **input-like** weights (the fan-in does not grow: the first layer; embeddings, which have no fan-in): the
  scheme's rule at the base width, so their entries do not change with width;
- **output-like** weights (the fan-in grows, the fan-out does not: the readout, also the walk's readout at the
  base width): 0, or for ``readout=m`` std $m\sqrt{\mathrm{base\_fan\_in}}/\mathrm{fan\_in}$;
- biases, norms, tokens: the scheme's (0; the norm's measured neutral weight and 0; ...).

The learning rates are the report's `param_groups`. What an init cannot do is left to the model, and warned
about where it can be seen: attention logits scaled $1/d_\mathrm{head}$ instead of $1/\sqrt{d_\mathrm{head}}$,
and a readout tied to the input embedding, whose logits need the factor $1/m_\mathrm{in}$ in the forward pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from torchinit._layers.rules import Role
from torchinit._maths.draw import Action, variance_std
from torchinit._maths.fans import Fans
from torchinit._model.walk import Walk, one_walk
from torchinit._schemes.overrides import Override
from torchinit._schemes.plan import Plan
from torchinit._schemes.registry import BaseScheme, Call, SchemeLike, resolve_scheme
from torchinit._schemes.scheme import Scheme
from torchinit._schemes.width import BaseShapes, Width, base_shapes, built, is_table, widths
from torchinit._types import InitError, RecipeMismatchWarning, check_finite

SCALED_FIX = (
    "An init cannot change this: for nn.MultiheadAttention (and the nn.Transformer layers built on it) use an "
    "attention that calls F.scaled_dot_product_attention(q, k, v, scale=base_head_dim**0.5 / head_dim); on a "
    "Hugging Face attention set each layer's .scaling = base_head_dim**0.5 / head_dim (it multiplies q.k by it). "
    "Both equal 1/sqrt(head_dim) at the base width."
)


@dataclass(frozen=True, repr=False)
class Mup(BaseScheme):
    """muP against a base model: made by `mup`; see the module docstring for the rules.

    Args:
        base: the base model's parameters: (path, shape, true fans or None), tied ones under each path.
        base_name: the base model's class, for the repr.
        readout: ``"zero"``, or ``m``: the readout's std is $m\\sqrt{\\mathrm{base\\_fan\\_in}}/\\mathrm{fan\\_in}$.
        scheme: the variance-scaling scheme the rules are stated in (its gain, fan mode, distribution, and what
            it gives biases, norms, embeddings and tokens).
        scheme_text: how the scheme was given, for the repr.
    """

    base: tuple[tuple[str, tuple[int, ...], Fans | None], ...]
    base_name: str
    readout: str | float
    scheme: Scheme
    scheme_text: str = ""

    def __repr__(self) -> str:
        scheme = f", scheme={self.scheme_text}" if self.scheme_text else ""
        return f"recipes.mup(<{self.base_name}: {len(self.base)} parameters>, readout={self.readout!r}{scheme})"

    @functools.cached_property
    def shapes(self) -> BaseShapes:
        """The base as a mapping: path -> (shape, fans)."""
        return {path: (shape, fans) for path, shape, fans in self.base}

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """The scheme's plan with muP's rule for every weight with fans layered first (call overrides win), the
        width multipliers of every parameter attached for the report's ``param_groups``."""
        if call.own_only:
            raise InitError(
                "recipes.mup plans a whole model against its base, and a layer being constructed is a part of one: "
                "use reinit(model, recipes.mup(base)) or build(factory, recipes.mup(base))."
            )
        with one_walk(module) as walked:
            found = widths(walked, self.shapes)
            table = self.rules(walked, found)
            rule = Override(rule=lambda path, owner, param: table.get(path))
            plan = self.scheme.plan(module, replace(call, overrides=(rule, *call.overrides)))
        plan.widths = found
        plan.notes += notes(walked, found)
        return plan

    def rules(self, walked: Walk, found: dict[str, Width]) -> dict[str, Action]:
        """muP's write for every weight with fans whose rule differs from the scheme's own (path -> Action)."""
        table: dict[str, Action] = {}
        for param in walked.params:
            role = param.role
            if param.lazy or role is None or role.fans is None or role.kind == "recurrent":
                continue  # recurrent weights: the scheme's orthogonal blocks already have entries ~ 1/sqrt(width)
            base_fans = self.shapes[param.path][1]
            if base_fans is not None:
                action = self.action_for(role, base_fans, found[param.path])
                if action is not None:
                    table[param.path] = action
        return table

    def action_for(self, role: Role, base_fans: Fans, width: Width) -> Action | None:
        """muP's write for a weight of ``role`` whose base has ``base_fans``; None: the scheme's own rule."""
        fans = role.fans
        assert fans is not None
        if is_table(role):  # shared with the input embedding (or added to one): its entries must not grow with width
            at_base = self.scheme.action(replace(role, fans=base_fans))
            return replace(at_base, fans=fans, formula=f"muP: {at_base.formula}, at the base width")
        if width.fan_out == 1.0 and (width.fan_in != 1.0 or role.kind == "readout"):
            if self.readout == "zero":
                return Action("constant", 0.0, fans=fans, formula="muP readout: zero")
            m = float(self.readout)
            std = m * math.sqrt(base_fans.fan_in) / fans.fan_in
            formula = f"muP readout: {m:g} sqrt({base_fans.fan_in:g}) / fan_in"
            return Action.with_std(self.scheme.distribution, std, fans, formula)
        if fans == base_fans:
            return None  # the base width: the scheme's own rule, exactly
        mode = self.scheme.mode
        if width.hidden:  # the base's fan, grown as fan_in: Var = scale / fan_in under fan_in
            fan = base_fans.fan(mode) * fans.fan_in / base_fans.fan_in
            grown = "fan_in" if mode == "fan_in" else f"(base {mode}) fan_in / (base fan_in)"
            formula = f"muP hidden: Var = scale / {grown}"
        else:
            fan = base_fans.fan(mode)
            formula = "muP input-like: the base width's std"
        return Action.with_std(self.scheme.distribution, variance_std(self.scheme.scale, fan), fans, formula)

    def summary(self) -> str:
        """The rules in one line."""
        return (
            "muP: hidden Var = g^2/fan_in, input-like weights at the base width's std, readout "
            + ("0" if self.readout == "zero" else f"std {self.readout:g} sqrt(base fan_in)/fan_in")
            + "; learning rates from report.param_groups"
        )


def notes(walked: Walk, found: dict[str, Width]) -> list[tuple[str, Warning]]:
    """Warnings about what muP needs of the model beyond its init, each attached to a parameter path: attention
    logits scaled 1/sqrt(head_dim), a readout tied to the input embedding (neither at the base width, where muP and
    the standard parametrization are the same model); at the base width, a readout it cannot find."""
    if all(w == Width() for w in found.values()):
        return _unnamed_readout(walked)
    made: list[tuple[str, Warning]] = []
    scaled = [(prefix, module) for prefix, module in walked.modules if _sqrt_scaled(module)]
    if scaled:
        names = ", ".join(prefix.rstrip(".") or "the model" for prefix, _ in scaled[:3])
        more = f", ... ({len(scaled)} in all)" if len(scaled) > 3 else ""
        first = scaled[0][0]
        path = next((t.path for t in walked.params if t.path.startswith(first)), walked.params[0].path)
        made.append((path, RecipeMismatchWarning(
            f"recipes.mup: {len(scaled)} attention layer(s) scale their logits by 1/sqrt(head_dim) ({names}{more}); "
            "muP needs 1/head_dim, or the attention logits grow with width and the learning rate stops "
            f"transferring. {SCALED_FIX}"
        )))  # fmt: skip
    for param in walked.params:
        role = param.role
        if role is not None and role.kind == "readout" and is_table(role):
            made.append((param.path, RecipeMismatchWarning(
                f"recipes.mup: the readout {' = '.join(u.path for u in param.every)} is tied to the input embedding, "
                "so it keeps the table's width-independent "
                "std and the embedding's learning rate; muP then needs the logits multiplied by base_width / width "
                "in the forward pass (mup's MuSharedReadout does this), or they grow with width. Untie the head to "
                "get muP from the init alone."
            )))  # fmt: skip
            break
    return made


def _unnamed_readout(walked: Walk) -> list[tuple[str, Warning]]:
    """At the base width no dimension differs, so only the walk's readout (by name, or tied) is the readout: when
    there is none, the last dense layer is initialized as a hidden one here, and zeroed at every other width if it
    is the output layer. Say so, and how to name it."""
    roles = [(t.path, t.role.kind) for t in walked.params if t.role is not None]
    dense = [path for path, kind in roles if kind == "dense"]
    if not dense or any(kind == "readout" for _, kind in roles):
        return []
    last = dense[-1]
    return [(last, RecipeMismatchWarning(
        f"recipes.mup: the model has the base's shapes, so muP tells its readout by name only, and no layer has a "
        f"readout's name: {last} (the last dense layer) gets the scheme's init here, while at any other width the "
        "layer whose fan-in grows and fan-out does not is the readout, zeroed. If it is the output layer, name it "
        "head (or fc, classifier, lm_head, ...: the names torchinit reads as a readout) so that it is the readout at "
        "every width."
    ))]  # fmt: skip


def _sqrt_scaled(module: nn.Module) -> bool:
    """An attention layer that multiplies q.k by 1/sqrt(head_dim): torch's MultiheadAttention, or a layer with a
    ``scaling`` of ``head_dim ** -0.5`` (Hugging Face's attention classes keep both)."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    own = vars(module)
    scaling = own.get("scaling")
    head = own.get("head_dim", own.get("attention_head_size"))
    if type(scaling) is not float or type(head) is not int or head <= 0:
        return False
    return math.isclose(scaling, head**-0.5, rel_tol=1e-6)


def mup(
    base: nn.Module | Callable[[], nn.Module],
    *,
    readout: str | float = "zero",
    scheme: SchemeLike = "lecun_normal",
) -> Mup:
    r"""muP (Yang et al. 2021, Tensor Programs V) against ``base``: ``reinit(model, recipes.mup(base))``, then
    ``torch.optim.Adam(report.param_groups(lr))``.

    Which dimensions are width is read off the shapes (a dimension whose size differs from the base's; muP's
    infshape). With $m = \mathrm{fan}/\mathrm{base\_fan}$: hidden weights (both fans grow) get the scheme's
    variance over the base's fan times $1/m_\mathrm{in}$, which under a fan_in scheme is its own
    $\mathrm{Var} = g^2/\mathrm{fan\_in}$; input-like weights (the first layer, embeddings) the scheme's rule at
    the base width, so their entries do not change with width; the readout (fan-in grows, fan-out does not; at
    the base width the walk's readout, a layer named ``head``, ``fc``, ``lm_head``, ...) 0, or for a float
    ``m`` a std of $m\sqrt{\mathrm{base\_fan\_in}}/\mathrm{fan\_in}$ ($m$ times the gain-1 std at the base
    width); biases 0 and norms at their measured neutral weight and 0. At the base width every rule but the
    readout's is the scheme's own init.

    The default scheme is ``lecun_normal`` ($\mathcal N(0, 1/\mathrm{fan\_in})$), what ``mup``'s MLP example
    draws (``kaiming_normal_(a=1)``, gain 1); ``scheme="kaiming_relu"`` puts ReLU's gain on hidden and input
    weights. A base wider than the model is allowed. An attention layer scaling its logits by
    $1/\sqrt{d_\mathrm{head}}$ and a readout tied to the embedding are warned about (`RecipeMismatchWarning`):
    muP needs $1/d_\mathrm{head}$ and a $1/m$ logit multiplier there, which no init can give.

    Args:
        base: the same architecture at the base width (the width the learning rate was tuned at), or a
            zero-argument factory of it. A factory is built on the meta device with torch's RNG state restored
            (no memory, no draws): both give bitwise the same result.
        readout: ``"zero"`` or a float ``m >= 0``.
        scheme: a variance-scaling `Scheme` or the name of one (normal, uniform or truncated normal).

    Raises:
        InitError: a bad ``base``, ``readout`` or ``scheme``. Applied to a model whose parameter names differ
            from the base's, reinit raises naming the first mismatch, and changes nothing.

    Example:
        >>> def mlp(width):
        ...     return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        ...                          nn.Linear(width, 10))
        >>> model = mlp(256)
        >>> report = reinit(model, torchinit.recipes.mup(mlp(64)))
        >>> tuple(round(report[p].std, 4) for p in ("0.weight", "2.weight", "4.weight"))
        (0.3536, 0.0625, 0.0)
        >>> tuple(sorted({g["lr"] for g in report.param_groups(0.01)}))
        (0.0025, 0.01)
    """
    if readout != "zero":
        if isinstance(readout, str):
            raise InitError(
                f"readout must be 'zero' or a float m (the readout's std is then m sqrt(base_fan_in) / fan_in); got "
                f"readout={readout!r}."
            )
        readout = check_finite("readout", readout, minimum=0.0)
    resolved = resolve_scheme(scheme)
    if not isinstance(resolved, Scheme) or resolved.distribution == "orthogonal":
        raise InitError(
            "scheme must be a variance-scaling Scheme (normal, uniform or truncated_normal), in which muP's rules "
            f"are stated; got scheme={scheme!r}. The default is 'lecun_normal'; 'kaiming_relu' adds ReLU's gain."
        )
    made = base if isinstance(base, nn.Module) else built(base)
    shapes = base_shapes(made)
    spelled = "" if scheme == "lecun_normal" else repr(scheme)
    return Mup(tuple((p, s, f) for p, (s, f) in shapes.items()), type(made).__name__, readout, resolved, spelled)
