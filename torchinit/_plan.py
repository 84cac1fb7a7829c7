"""Plans: the ordered writes of one reinit call, built, validated as a whole, then carried out.

A scheme turns a model into a `Plan` (see ``_registry.BaseScheme``); `plan_by_role` is the walk that
role-based schemes share. Nothing is written before `Plan.check` has passed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._draw import Action, write
from torchinit._keyed import KeyedWriter, Region, local_block
from torchinit._layers import Role, role_of
from torchinit._report import InitReport, ReportEntry
from torchinit._types import InitError, ShardedWithoutSeedWarning, UncoveredParameterWarning, is_lazy

if TYPE_CHECKING:
    from torchinit._schemes import Override


@dataclass(slots=True)
class Target:
    """A parameter as reinit sees it: its path, owner, local name and (effective) tensor.

    A parametrized weight (weight_norm, spectral_norm, any ``register_parametrization``) is one
    target whose value is written through the parametrization's ``right_inverse``.
    """

    path: str
    owner: nn.Module
    name: str
    tensor: torch.Tensor
    parametrized: bool = False

    @property
    def key(self) -> int:
        """Identity used to find tied parameters."""
        return id(self.owner.parametrizations[self.name]) if self.parametrized else id(self.tensor)  # type: ignore[index]


@dataclass(slots=True)
class Step:
    """One write: an action on a target, a copy from another target, or a draw that is thrown away."""

    target: Target
    action: Action
    role: Role | None = None
    copy_from: Target | None = None
    scratch: bool = False
    aliases: list[str] = field(default_factory=list)


def _parametrized(module: nn.Module) -> bool:
    # parametrize.is_parametrized() looks the attribute up through Module.__getattr__, whose miss
    # raises and formats an AttributeError: ~10 us per module. The ModuleDict lives in _modules.
    return "parametrizations" in module._modules


def own_targets(module: nn.Module, prefix: str) -> Iterator[Target]:
    """The module's own parameters (parametrized ones through their owner), in registration order."""
    if isinstance(module, parametrize.ParametrizationList):
        return  # its `original*` tensors are reached through the parametrized owner
    if _parametrized(module):
        for name in module.parametrizations:  # type: ignore[union-attr]
            yield target_named(module, prefix, name)
    for name, param in module._parameters.items():
        if param is not None:
            yield Target(prefix + name, module, name, param)


def target_named(module: nn.Module, prefix: str, name: str) -> Target:
    """The target of ``module``'s own parameter ``name`` (plain or parametrized)."""
    if _parametrized(module) and name in module.parametrizations:  # type: ignore[operator]
        return Target(prefix + name, module, name, getattr(module, name), parametrized=True)
    return Target(prefix + name, module, name, module._parameters[name])  # type: ignore[arg-type]


def tracks_running_stats(module: nn.Module) -> bool:
    """A norm layer with running statistics to reset (BatchNorm, SyncBatchNorm, InstanceNorm(track=True))."""
    return hasattr(type(module), "reset_running_stats") and bool(getattr(module, "track_running_stats", False))


def problem(target: Target, needs_values: bool) -> str | None:
    """Why this target cannot be written, or None."""
    t = target.tensor
    if is_lazy(t):
        return (
            f"{target.path} ({type(target.owner).__name__}, shape uninitialized) is an uninitialized lazy "
            "parameter; run one forward pass first so it has a shape."
        )
    if t.is_meta:
        return (
            f"{target.path} ({type(target.owner).__name__}, shape {tuple(t.shape)}) is on the meta device and has "
            "no storage; materialize it first with module.to_empty(device=...)."
        )
    if needs_values and not t.is_floating_point():
        return (
            f"{target.path} ({type(target.owner).__name__}, shape {tuple(t.shape)}) has dtype {t.dtype}; random "
            "draws need a floating-point parameter."
        )
    return None


def uncovered_message(uncovered: Sequence[Target], groups: int = 12) -> str:
    """The uncovered-parameter warning: grouped by module type and parameter name, with counts and examples."""
    by_kind: dict[str, list[Target]] = {}
    for t in uncovered:
        by_kind.setdefault(f"{type(t.owner).__name__}.{t.name}", []).append(t)
    lines = []
    for kind, targets in list(by_kind.items())[:groups]:
        examples = ", ".join(f"{t.path} {tuple(t.tensor.shape)}" for t in targets[:2])
        more = f", ... ({len(targets) - 2} more)" if len(targets) > 2 else ""
        lines.append(f"  {kind} x {len(targets)}: {examples}{more}")
    if len(by_kind) > groups:
        rest = sum(len(targets) for targets in list(by_kind.values())[groups:])
        lines.append(f"  ... and {len(by_kind) - groups} more kinds ({rest} parameters)")
    return (
        f"reinit left {len(uncovered)} parameter(s) untouched because no rule covers them:\n" + "\n".join(lines) + "\n"
        "Fix: describe their module types with torchinit.extend.register_layer(cls, fans=..., roles=...), select "
        "them with an Override (path=, module=), or pass strict=True to make this an error."
    )


def _is_sharded(tensor: torch.Tensor) -> bool:
    """A DTensor split over more than one rank (a Shard placement on a mesh dimension of size > 1)."""
    if type(tensor).__name__ != "DTensor":
        return False
    mesh, placements = tensor.device_mesh, tensor.placements  # type: ignore[attr-defined]
    return any(type(p).__name__ == "Shard" and mesh.size(i) > 1 for i, p in enumerate(placements))


def _region(tensor: torch.Tensor) -> tuple[torch.Tensor, Region | None]:
    """The local tensor to write and, for a sharded DTensor, where it sits in the global tensor."""
    if type(tensor).__name__ != "DTensor":
        return tensor, None
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = tensor.to_local()  # type: ignore[attr-defined]
    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)  # type: ignore[attr-defined]
    return local, Region(tuple(tensor.shape), tuple(offset))


def _fresh(target: Target) -> torch.Tensor:
    return torch.empty(target.tensor.shape, dtype=target.tensor.dtype, device=target.tensor.device)


def _execute(steps: list[Step], generator: torch.Generator | None) -> None:
    with torch.no_grad():
        for step in steps:
            target = step.target
            if step.copy_from is not None:
                target.tensor.copy_(step.copy_from.tensor)
            elif step.scratch:
                write(step.action, torch.empty_like(target.tensor), generator)
            elif target.parametrized:
                value = _fresh(target)
                write(step.action, value, generator)
                setattr(target.owner, target.name, value)
                target.tensor = getattr(target.owner, target.name)
            elif type(target.tensor).__name__ == "DTensor":
                # Every rank draws the whole tensor from its (shared) RNG state and keeps its block,
                # so the gathered result is the unsharded draw. seed= draws only the block instead.
                local, region = _region(target.tensor)
                full = torch.empty(target.tensor.shape, dtype=local.dtype, device=local.device)
                write(step.action, full, generator)
                assert region is not None
                local.copy_(local_block(full.reshape(-1), 0, local, region))
            else:
                write(step.action, target.tensor, generator)


def _execute_keyed(steps: list[Step], seed: int, threads: int | None) -> int:
    writer = KeyedWriter(seed, threads)
    later: list[tuple[Target, torch.Tensor]] = []
    with torch.no_grad():
        for step in steps:
            target = step.target
            if target.parametrized:
                value = _fresh(target)
                writer.add(step.action, value, target.path)
                later.append((target, value))
            else:
                local, region = _region(target.tensor)
                writer.add(step.action, local, target.path, region)
        writer.run()
        for target, value in later:
            setattr(target.owner, target.name, value)
            target.tensor = getattr(target.owner, target.name)
    return writer.drawn


def _entries(steps: list[Step]) -> list[ReportEntry]:
    latest: dict[str, ReportEntry] = {}
    for step in steps:
        if step.scratch:
            continue
        t = step.target
        a = step.action
        if step.copy_from is not None:
            rule, std, fans, kind = f"copy of {step.copy_from.path}", None, None, None
        else:
            rule, std, fans, kind = a.describe(), a.std, a.fans, None if a.kind == "skip" else a.kind
        entry = ReportEntry(
            path=t.path,
            shape=tuple(t.tensor.shape),
            role=step.role.kind if step.role else None,
            rule=rule,
            distribution=kind,
            fans=fans,
            std=std,
            aliases=tuple(step.aliases),
            skipped=a.reason if a.kind == "skip" and step.copy_from is None else None,
            source="legacy copy" if step.copy_from is not None else a.formula,
        )
        latest.pop(t.path, None)  # a later write to the same parameter replaces the earlier one
        latest[t.path] = entry
    return list(latest.values())


@dataclass
class Plan:
    """The writes of one call in order, what no rule covers, and the norm layers whose statistics reset."""

    steps: list[Step]
    uncovered: list[Target]
    norms: list[tuple[str, nn.Module]]

    def check(self, *, strict: bool = False, extra: Callable[[list[Step]], list[str]] | None = None) -> None:
        """Raise one InitError listing every problem (lazy, meta, dtype, uncovered under ``strict``, ``extra``)."""
        problems = [p for step in self.steps if (p := problem(step.target, step.action.draws)) is not None]
        if strict and self.uncovered:
            problems += [
                f"{t.path} ({type(t.owner).__name__}, shape {tuple(t.tensor.shape)}) has no rule; describe its "
                "module with torchinit.register_layer, or select it with an Override"
                for t in self.uncovered
            ]
        if extra is not None:
            problems += extra(self.steps)
        if problems:
            unique = list(dict.fromkeys(problems))
            raise InitError("reinit changed nothing; fix these first:\n  - " + "\n  - ".join(unique))

    def run(
        self,
        name: str,
        generator: torch.Generator | None,
        *,
        warn: bool = True,
        seed: int | None = None,
        threads: int | None = None,
    ) -> InitReport:
        """Write (keyed by ``seed`` when given), reset running statistics, and report under ``name``."""
        if warn and self.uncovered:
            warnings.warn(UncoveredParameterWarning(uncovered_message(self.uncovered)), stacklevel=4)
        if seed is None:
            sharded = [s.target.path for s in self.steps if s.action.draws and _is_sharded(s.target.tensor)]
            if warn and sharded:
                warnings.warn(
                    ShardedWithoutSeedWarning(
                        f"{len(sharded)} sharded parameter(s) (first: {sharded[0]}) drawn from torch's RNG: each "
                        "rank draws the whole tensor and keeps its shard, which is right only if all ranks share "
                        "the RNG state. Pass seed= to draw just the shard, from keyed, shard-invariant streams."
                    ),
                    stacklevel=4,
                )
            _execute(self.steps, generator)
            drawn = sum(s.target.tensor.numel() for s in self.steps if s.action.draws)
        else:
            drawn = _execute_keyed(self.steps, seed, threads)
        buffers = []
        for prefix, norm in self.norms:
            norm.reset_running_stats()  # type: ignore[operator]
            buffers += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
        steps = self.steps
        return InitReport(name, lambda: _entries(steps), buffers, drawn=drawn)


READOUT_NAMES = frozenset(
    {"lm_head", "head", "heads", "fc", "classifier", "logits", "score", "readout", "output_layer"}
)
"""Module names that mark the model's output layer when it is also the last dense layer registered."""


def plan_by_role(
    modules: Iterable[tuple[str, nn.Module]],
    action_of: Callable[[Role], Action],
    overrides: Sequence[Override] = (),
) -> Plan:
    """The plan of a role-based scheme: each parameter gets ``action_of(role)`` unless an override selects it.

    The last matching override wins; tied parameters are written once, under their first path. The
    readout is found first: a dense weight tied to an input embedding, or else the last dense layer
    registered when its name is a conventional output name (`READOUT_NAMES`: ``lm_head``, ``fc``, ...).
    """
    steps: list[Step] = []
    uncovered: list[Target] = []
    norms: list[tuple[str, nn.Module]] = []
    first: dict[int, Step] = {}
    tied_readout: Step | None = None
    last_dense: Step | None = None
    for prefix, module in modules:
        prefix = f"{prefix}." if prefix else ""
        if tracks_running_stats(module):
            norms.append((prefix, module))
        if "parametrizations" in module._modules or isinstance(module, parametrize.ParametrizationList):
            targets: Iterable[Target] = own_targets(module, prefix)
        else:  # the common case, without the generator
            targets = [Target(prefix + n, module, n, p) for n, p in module._parameters.items() if p is not None]
        for target in targets:
            key = id(target.tensor) if not target.parametrized else target.key
            known = first.get(key)
            if known is not None:  # tied: written once, under its first path
                known.aliases.append(target.path)
                if tied_readout is None and known.role is not None:
                    tied_readout = _tied_readout(known, target)
                continue
            if is_lazy(target.tensor):
                steps.append(Step(target, Action("normal", formula="lazy")))  # refused by Plan.check
                continue
            step = Step(target, _UNDECIDED, role=role_of(module, target.name))
            if step.role is not None and step.role.kind == "dense":
                last_dense = step
            first[key] = step
            steps.append(step)
    if (
        tied_readout is None
        and last_dense is not None
        and READOUT_NAMES.intersection(last_dense.target.path.split("."))
    ):
        assert last_dense.role is not None
        name = next(n for n in last_dense.target.path.split(".") if n in READOUT_NAMES)
        last_dense.role = Role("readout", last_dense.role.fans, via=f"named {name!r}, the last dense layer")
    # Decide every action, now that the readout is known. action_of is a pure function of the (frozen)
    # role, and rules hand out shared role instances: memo by identity, keeping each role alive in the
    # value so its id cannot be reused during the walk.
    chosen_from = tuple(reversed(overrides))
    actions: dict[int, tuple[Role, Action]] = {}
    for step in steps:
        if step.action is not _UNDECIDED:
            continue
        target, role = step.target, step.role
        chosen = None
        if chosen_from:
            frozen = not target.tensor.requires_grad
            chosen = next((o for o in chosen_from if o.selects(target.path, target.owner, role, frozen)), None)
        if chosen is not None:
            step.action = chosen.action(role, target.path)
        elif target.tensor.numel() == 0:
            step.action = Action("skip", reason="zero elements: nothing to write")
        elif role is not None:
            known_action = actions.get(id(role))
            if known_action is None:
                known_action = actions[id(role)] = (role, action_of(role))
            step.action = known_action[1]
        else:
            uncovered.append(target)
            step.action = Action("skip", reason="no rule covers it")
    return Plan(steps, uncovered, norms)


_UNDECIDED = Action("skip", reason="undecided")


def _tied_readout(known: Step, alias: Target) -> Step | None:
    """A weight shared by an input embedding and a dense layer is the readout (drawn by the dense use's fans)."""
    assert known.role is not None
    other = role_of(alias.owner, alias.name)
    if other is None:
        return None
    kinds = {known.role.kind, other.kind}
    if kinds != {"embedding", "dense"}:
        return None
    dense, embedding = (other, known.target.path) if other.kind == "dense" else (known.role, alias.path)
    known.role = Role("readout", dense.fans, padding_idx=None, via=f"tied to the input embedding {embedding}")
    return known


def modules_of(root: nn.Module, own_only: bool) -> Iterable[tuple[str, nn.Module]]:
    """What a plan walks: the root alone (a layer being constructed) or every module, in module order."""
    return [("", root)] if own_only else root.named_modules()
