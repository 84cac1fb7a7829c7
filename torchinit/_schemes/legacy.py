"""``legacy``: torch's default initialization, reproduced bit for bit, without calling reset_parameters.

Each layer type's ``legacy`` rule (``_layers/torch_nn.py``) issues the draws its torch constructor makes,
in RNG order; the planner here walks the tree in registration order, replays tied parameters' wasted
draws into scratch, and copies deep-cloned stacks from their prototype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from torchinit._layers.rules import Role, describe, role_of
from torchinit._maths.draw import UNWRITTEN, Action, torch_fan_in
from torchinit._model.walk import Target, own_targets, target_named, walk
from torchinit._model.write import Step
from torchinit._schemes.plan import FROZEN, Plan
from torchinit._schemes.registry import BaseScheme, Call, register_scheme
from torchinit._types import InitError, TiedTableWarning


class LegacyPlanner:
    """Walks a module tree in registration order and records torch's default draws (a `LegacyDraws`)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.uncovered: list[Target] = []
        self.norms: list[tuple[str, nn.Module]] = []
        self._done: dict[int, Step] = {}
        self._drawn: set[tuple[int, str]] = set()  # (module id, local name) covered by a rule

    def draw(self, module: nn.Module, prefix: str, name: str, action: Action, *, rewrite: bool = False) -> None:
        """Record one draw; a tied parameter's second draw goes to scratch, as torch drew before tying."""
        target = target_named(module, prefix, name)
        self._drawn.add((id(module), name))
        frozen = not target.tensor.requires_grad and action.kind not in UNWRITTEN
        if frozen and action.draws:  # kept, yet torch's RNG advances as its constructor's draw did
            self.steps.append(Step(target, action, scratch=True))
        if rewrite:
            if not frozen:
                self.steps.append(Step(target, action, role=role_of(module, name)))
            return
        first = self._done.get(target.key)
        if first is not None:
            if target.path not in first.aliases and target.path != first.target.path:
                first.aliases += (target.path,)
            if not frozen:
                self.steps.append(Step(target, action, scratch=True))
            return
        step = Step(target, FROZEN if frozen else action, role=role_of(module, name))
        self._done[target.key] = step
        self.steps.append(step)

    def visit(self, module: nn.Module, prefix: str) -> None:
        """Record the draws of ``module`` and its subtree, in torch's order (paths as the walk found them)."""
        if id(module) in self._visited:
            return
        self._visited.add(id(module))
        prefix = self._prefixes.get(id(module), prefix)
        described = describe(module)
        if described.legacy is not None:
            described.legacy(self, module, prefix)
        for target in own_targets(module, prefix):
            if (id(module), target.name) not in self._drawn:
                self.uncovered.append(target)
        if described.clones is not None:
            self._clones(module, prefix, described.clones)
        for name, child in module._modules.items():
            if child is not None and name != "parametrizations":
                self.visit(child, f"{prefix}{name}.")

    def _clones(self, module: nn.Module, prefix: str, attribute: str) -> None:
        # Deep copies of one prototype: one set of draws (the prototype's), then equal values.
        layers: nn.ModuleList = getattr(module, attribute)
        if not len(layers):
            return
        base = f"{prefix}{attribute}."
        self.visit(layers[0], f"{base}0.")
        first = dict(layers[0].named_parameters())
        for i in range(1, len(layers)):
            self._visited.update(id(m) for m in layers[i].modules())
            for name, param in layers[i].named_parameters():
                source = Target(f"{base}0.{name}", layers[0], name, first[name])
                frozen = not param.requires_grad
                step = Step(Target(f"{base}{i}.{name}", layers[i], name, param),
                            FROZEN if frozen else Action("copy", formula="copy"),
                            copy_from=None if frozen else source)  # fmt: skip
                self.steps.append(step)
                self._done[id(param)] = step
        self._visited.add(id(layers))

    _visited: set[int]
    _prefixes: dict[int, str]

    def run(self, root: nn.Module, own_only: bool) -> Plan:
        """The plan for ``root`` (its own parameters only when ``own_only``): torch's draws in the order its
        constructors make them, which is registration order except where a layer's rule says otherwise."""
        walked = walk(root, own_only=own_only)
        self._visited = set()
        self._prefixes = {id(m): prefix for prefix, m in walked.modules}
        self.norms = walked.norms
        if own_only:
            self._visited.update(id(m) for m in root.children())
        self.visit(root, "")
        skip = Action("skip", reason="no rule covers it")
        self.steps += [Step(t, skip, role=role_of(t.owner, t.name)) for t in self.uncovered]
        return Plan(self.steps, self.uncovered, self.norms, notes=_tied_tables(walked.params, self._done))


def _tied_tables(params: list[Target], done: dict[int, Step]) -> list[tuple[str, Warning]]:
    """A warning (given when the plan runs) where torch's default draw of an input embedding tied to the output
    layer (nn.Embedding's N(0, 1)) makes the logits ~sqrt(d) times larger than a unit-variance readout would."""
    notes: list[tuple[str, Warning]] = []
    for param in params:
        role, step = param.role, done.get(param.key)
        if role is None or role.kind != "readout" or not (role.via or "").startswith("tied") or step is None:
            continue
        assert role.fans is not None
        std, fan = step.action.std, role.fans.fan_in
        if std is not None and std * math.sqrt(fan) > 3.0:
            notes.append((
                param.path,
                TiedTableWarning(
                    f"legacy draws {param.path} as torch's constructor does ({step.action.describe()}), and it is "
                    f"also the output layer ({role.via}): the logits' std is about {std * math.sqrt(fan):.3g} "
                    f"(std x sqrt({fan})), so the initial loss lies far above ln(vocab). Use the model's recipe or "
                    "a generic scheme, which draw a tied table by the readout's rule."
                ),
            ))  # fmt: skip
    return notes


@dataclass(frozen=True, repr=False)
class LegacyScheme(BaseScheme):
    """torch.nn's own layer defaults, reproduced bit for bit from the same RNG state (no overrides, no seed).

    Note what this means: the draws torch.nn's *layers* make in their constructors (``Linear``:
    $\\mathcal U(\\pm 1/\\sqrt{\\mathrm{fan\\_in}})$, ``Embedding``: N(0, 1), ...), in their RNG order.
    A model whose own constructor re-initializes its layers afterwards (torchvision's ResNet, Hugging
    Face's ``post_init``) produced other values; ``legacy`` does not replay that code.
    """

    torch_default: ClassVar[bool] = True

    def __repr__(self) -> str:
        return "LegacyScheme()"

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """torch's draws in torch's order; refuses ``seed=`` and overrides, which it cannot honour."""
        if call.seed is not None:
            raise InitError(
                "legacy replays torch's constructors on torch's own RNG stream; it cannot be keyed by seed=. "
                "Call torch.manual_seed(seed) first instead."
            )
        if call.overrides:
            raise InitError(
                "legacy reproduces torch's defaults bit for bit and takes no overrides; got "
                f"overrides={tuple(call.overrides)!r}. Run reinit(model, 'legacy') first, then reinit a second "
                "time with the overrides on a scheme."
            )
        return LegacyPlanner().run(module, call.own_only)

    def dense_std(self, module: nn.Module, role: Role) -> float | None:
        """torch's Linear/Conv default: $1/\\sqrt{3\\,\\mathrm{fan\\_in}}$ with torch's shape-based fan_in."""
        weight = module._parameters.get("weight")
        fan = torch_fan_in(weight) if weight is not None else 0
        return 1 / (3 * fan) ** 0.5 if fan else None

    def summary(self) -> str:
        """What legacy reproduces."""
        return "torch.nn's layer defaults bit for bit (Linear/Conv: U(+-1/sqrt(fan_in)) weights and biases, ...)"


register_scheme("legacy", LegacyScheme())
