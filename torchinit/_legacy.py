"""legacy: torch's default initialization, reproduced bit for bit, without calling reset_parameters.

Each rule issues the draws torch's constructors make, in their RNG order (REFERENCE.md section 2),
so ``torch.manual_seed(s); ref = build()`` equals ``m = build(); torch.manual_seed(s); reinit(m, "legacy")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from torchinit._actions import Action, torch_fan_in
from torchinit._plan import Step, Target, own_targets, target_named
from torchinit._roles import NORMS, role_of

_SQRT5_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # calculate_gain("leaky_relu", sqrt(5))


def _kaiming_sqrt5(target: Target) -> Action:
    fan = torch_fan_in(target.tensor)
    bound = math.sqrt(3.0) * (_SQRT5_GAIN / math.sqrt(fan)) if fan else 0.0
    return Action("uniform", bound, formula="kaiming_uniform_(a=sqrt(5))")


def _fan_in_bound(fan_in: int) -> Action:
    return Action("uniform", 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0, formula="U(+-1/sqrt(fan_in))")


def _xavier(target: Target, distribution: str) -> Action:
    t = target.tensor
    receptive = math.prod(t.shape[2:])
    std = math.sqrt(2.0 / float(t.shape[1] * receptive + t.shape[0] * receptive))
    if distribution == "uniform":
        return Action("uniform", math.sqrt(3.0) * std, formula="xavier_uniform_")
    return Action("normal", std, formula="xavier_normal_")


class LegacyPlanner:
    """Walks a module tree in registration order and issues torch's default draws."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.uncovered: list[Target] = []
        self.norms: list[tuple[str, nn.Module]] = []
        self._done: dict[int, Step] = {}

    def add(self, target: Target, action: Action) -> None:
        first = self._done.get(target.key)
        if first is not None:  # tied: torch drew for both modules before tying; so do we, into scratch
            if target.path not in first.aliases and target.path != first.target.path:
                first.aliases.append(target.path)
            self.steps.append(Step(target, action, scratch=True))
            return
        step = Step(target, action, role=role_of(target.owner, target.name))
        self._done[target.key] = step
        self.steps.append(step)

    def visit(self, module: nn.Module, prefix: str) -> None:
        """Issue the draws of ``module`` and its subtree."""
        for cls in type(module).__mro__:
            special = _SPECIAL.get(cls)
            if special is not None:
                special(self, module, prefix)
                return
        self.own(module, prefix)
        for name, child in module._modules.items():
            if child is not None and name != "parametrizations":
                self.visit(child, f"{prefix}{name}.")

    def own(self, module: nn.Module, prefix: str) -> None:
        """The module's own parameters, by its type's rule; others are uncovered."""
        rule = next((_RULES[c] for c in type(module).__mro__ if c in _RULES), None)
        covered: set[str] = set()
        if rule is not None:
            for name, action in rule(module, prefix):
                covered.add(name)
                self.add(target_named(module, prefix, name), action)
        if isinstance(module, NORMS) and getattr(module, "track_running_stats", False):
            self.norms.append((prefix, module))
        for target in own_targets(module, prefix):
            if target.name not in covered:
                self.uncovered.append(target)


Rule = Callable[[nn.Module, str], list[tuple[str, Action]]]


def _weight_bias(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    weight = target_named(m, prefix, "weight")
    out = [("weight", _kaiming_sqrt5(weight))]
    if getattr(m, "bias", None) is not None:
        out.append(("bias", _fan_in_bound(torch_fan_in(weight.tensor))))
    return out


def _bilinear(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    action = _fan_in_bound(target_named(m, prefix, "weight").tensor.shape[1])
    return [("weight", action)] + ([("bias", action)] if m.bias is not None else [])


def _embedding(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    return [("weight", Action("normal", 1.0, zero_row=m.padding_idx, formula="normal_"))]  # type: ignore[arg-type]


def _recurrent(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    hidden: int = m.hidden_size  # type: ignore[assignment]
    action = Action("uniform", 1.0 / math.sqrt(hidden) if hidden > 0 else 0, formula="U(+-1/sqrt(hidden))")
    names = m._flat_weights_names if isinstance(m, nn.RNNBase) else [n for n, _ in m.named_parameters(recurse=False)]
    return [(name, action) for name in names]


def _norm(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    out = []
    if getattr(m, "weight", None) is not None:
        out.append(("weight", Action("constant", 1.0, formula="ones_")))
    if getattr(m, "bias", None) is not None:
        out.append(("bias", Action("constant", 0.0, formula="zeros_")))
    return out


def _prelu(m: nn.Module, prefix: str) -> list[tuple[str, Action]]:
    return [("weight", Action("constant", float(m.init), formula="constant_(init)"))]  # type: ignore[arg-type]


_RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: _weight_bias,
    nn.modules.conv._ConvNd: _weight_bias,
    nn.Bilinear: _bilinear,
    nn.Embedding: _embedding,
    nn.EmbeddingBag: _embedding,
    nn.RNNBase: _recurrent,
    nn.RNNCellBase: _recurrent,
    nn.PReLU: _prelu,
    **{norm: _norm for norm in NORMS},
}


def _attention(p: LegacyPlanner, m: nn.Module, prefix: str) -> None:
    # out_proj is built (and drawn) inside __init__ before _reset_parameters runs.
    p.visit(m.out_proj, f"{prefix}out_proj.")  # type: ignore[arg-type]
    names = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    for name in names:
        target = target_named(m, prefix, name)
        p.add(target, _xavier(target, "uniform"))
    if m.in_proj_bias is not None:
        p.add(target_named(m, prefix, "in_proj_bias"), Action("constant", 0.0, formula="constant_(0)"))
        out_bias = target_named(m.out_proj, f"{prefix}out_proj.", "bias")  # type: ignore[arg-type]
        p.steps.append(Step(out_bias, Action("constant", 0.0, formula="constant_(0)"), role=None, scratch=False))
    for name in ("bias_k", "bias_v"):
        if getattr(m, name) is not None:
            target = target_named(m, prefix, name)
            p.add(target, _xavier(target, "normal"))
    covered = {*names, "in_proj_bias", "bias_k", "bias_v"}
    p.uncovered.extend(t for t in own_targets(m, prefix) if t.name not in covered)


def _stack(p: LegacyPlanner, m: nn.Module, prefix: str) -> None:
    # TransformerEncoder/Decoder deep-copy one prototype layer: one set of draws, N equal layers.
    layers: nn.ModuleList = m.layers  # type: ignore[assignment]
    if len(layers):
        p.visit(layers[0], f"{prefix}layers.0.")
        first = dict(layers[0].named_parameters())
        for i in range(1, len(layers)):
            for name, param in layers[i].named_parameters():
                source = Target(f"{prefix}layers.0.{name}", layers[0], name, first[name])
                p.steps.append(Step(Target(f"{prefix}layers.{i}.{name}", layers[i], name, param),
                                    Action("skip", formula="copy"), copy_from=source))  # fmt: skip
                p._done[id(param)] = p.steps[-1]
    if m.norm is not None:
        p.visit(m.norm, f"{prefix}norm.")  # type: ignore[arg-type]


def _transformer(p: LegacyPlanner, m: nn.Module, prefix: str) -> None:
    p.visit(m.encoder, f"{prefix}encoder.")  # type: ignore[arg-type]
    p.visit(m.decoder, f"{prefix}decoder.")  # type: ignore[arg-type]
    for name, param in m.named_parameters():
        if param.dim() > 1:
            owner_path, _, local = name.rpartition(".")
            owner = m.get_submodule(owner_path)
            target = Target(prefix + name, owner, local, param)
            p.steps.append(Step(target, _xavier(target, "uniform"), role=role_of(owner, local)))


_SPECIAL: dict[type[nn.Module], Callable[[LegacyPlanner, nn.Module, str], None]] = {
    nn.MultiheadAttention: _attention,
    nn.TransformerEncoder: _stack,
    nn.TransformerDecoder: _stack,
    nn.Transformer: _transformer,
}
