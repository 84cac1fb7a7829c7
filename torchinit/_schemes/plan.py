"""Plans: the ordered writes of one reinit call, built from the walk, validated as a whole, then handed to the writer.

A scheme turns a model into a `Plan` (see ``registry.BaseScheme``); `plan_by_role` plans role-based schemes from
the walk (``_model.walk``). Nothing is written before `Plan.check` (and the writer's proof) has passed.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import nn

from torchinit._layers.rules import Role
from torchinit._maths.draw import UNWRITTEN, Action
from torchinit._model.proof import STATISTICS, refusals, statistics_refusals
from torchinit._model.transaction import Undo
from torchinit._model.walk import Target, Walk, canonical, walk, walk_modules
from torchinit._model.write import Step, is_sharded, write_steps
from torchinit._schemes.report import InitReport, ReportEntry
from torchinit._schemes.width import Width
from torchinit._types import InitError, ShardedWithoutSeedWarning, UncoveredParameterWarning, warn_at_caller


class Selector(Protocol):
    """What the planner needs of an override (`torchinit.Override` is one): whether it selects a parameter,
    and the action it gives one (None: pass to the next)."""

    @property
    def path(self) -> str:
        """The glob over parameter paths."""
        ...

    @property
    def skip(self) -> bool:
        """Whether it leaves what it selects untouched."""
        ...

    @property
    def frozen(self) -> bool | None:
        """True: it selects only frozen parameters, and may write them (they are kept otherwise)."""
        ...

    def selects(self, path: str, owner: nn.Module, role: Role | None, frozen: bool) -> bool:
        """Whether this override applies to the parameter at ``path`` of ``owner``."""
        ...

    def action(self, role: Role | None, target: Target, base: Callable[[Role], Action]) -> Action | None:
        """The write for ``target`` (``base``: the scheme's own rule), or None to pass it on."""
        ...


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
            if step.effective is not None:
                names = ", ".join(type(p).__name__ for p in t.owner.parametrizations[t.name])  # type: ignore[index]
                rule += f" -> std {step.effective:.6g} after its parametrization ({names})"
                std = step.effective
        drawn = step.copy_from is None and a.kind not in ("skip", "keep")
        entry = ReportEntry(
            path=t.path,
            shape=tuple(t.tensor.shape),
            role=step.role.kind if step.role else None,
            rule=rule,
            distribution=kind,
            fans=fans,
            std=std,
            aliases=step.aliases,
            skipped=a.reason if a.kind == "skip" and step.copy_from is None else None,
            source="legacy copy" if step.copy_from is not None else a.formula,
            param=a.param if drawn and a.chunk_values is None else None,
            cut=a.cut if drawn and a.kind == "truncated_normal" else None,
            chunks=a.chunks if drawn else 1,
            chunk_values=a.chunk_values if drawn else None,
            zero_row=a.zero_row if drawn else None,
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
    unmatched: list[str] = field(default_factory=list)
    """Why each override that selected nothing did not (checked when the call says overrides must match)."""
    fallible: bool = True
    """Whether a write can still fail once `check` has passed (it says): backups are then taken."""
    notes: list[tuple[str, Warning]] = field(default_factory=list)
    """Warnings about the writes to parameters (by path), given when the plan runs (and only if a cut-down plan
    still writes the parameter)."""
    widths: dict[str, Width] = field(default_factory=dict)
    """Under ``recipes.mup``: every parameter path's width multipliers against the base model (the report's
    ``param_groups`` reads them); empty for other schemes."""

    def check(
        self,
        *,
        strict: bool = False,
        extra: Callable[[list[Step]], list[str]] | None = None,
        generator: torch.Generator | None = None,
        overrides_must_match: bool = False,
        seed: int | None = None,
    ) -> None:
        """Raise one InitError listing every problem, before anything is written.

        Checked here: uncovered parameters under ``strict``, unmatched overrides, and ``extra``; and by the
        writer's proof (`torchinit._model.proof.refusals`): each action's index ranges, chunk counts and values
        against its tensor's dtype, the generator's device, every tensor writable, no two parameters sharing
        memory, every parametrization's ``right_inverse``, and each distinct kind of write (keyed when ``seed``
        is given); and every norm's running statistics resettable (`torchinit._model.proof.statistics_refusals`).
        """
        problems: list[str] = []
        refused, self.fallible = refusals(self.steps, keyed=seed is not None, generator=generator)
        resets, custom = statistics_refusals(self.norms)
        problems += refused + resets
        self.fallible = self.fallible or custom
        if overrides_must_match:
            problems += self.unmatched
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
        undo: Undo | None = None,
        model: nn.Module | None = None,
    ) -> InitReport:
        """Write (keyed by ``seed`` when given), reset running statistics, and report under ``name``.

        With ``undo``, every tensor is backed up before its write when ``undo.backup`` is set; the
        caller restores on failure (see `guarded`). ``model``: the model planned, which the report refers to
        (weakly) for its ``param_groups``.
        """
        if warn and self.uncovered:
            warn_at_caller(UncoveredParameterWarning(uncovered_message(self.uncovered)))
        for _, note in self.notes if warn else ():
            warn_at_caller(note)
        if seed is None:
            sharded = [s.target.path for s in self.steps if is_sharded(s.target.tensor) and s.action.draws]
            if warn and sharded:
                warn_at_caller(
                    ShardedWithoutSeedWarning(
                        f"{len(sharded)} sharded parameter(s) (first: {sharded[0]}) drawn from torch's RNG: each "
                        "rank draws the whole tensor and keeps its shard, which is right only if all ranks share "
                        "the RNG state. Pass seed= to draw just the shard, from keyed, shard-invariant streams."
                    )
                )
        drawn = write_steps(self.steps, generator, seed=seed, threads=threads, undo=undo)
        buffers = []
        for prefix, norm in self.norms:
            if undo is not None:  # every buffer of the norm: its own reset_running_stats may change others
                for value in norm._buffers.values():
                    if value is not None:
                        undo.save(value)
            norm.reset_running_stats()  # type: ignore[operator]
            buffers += [prefix + b for b in STATISTICS]
        steps = self.steps
        return InitReport(name, lambda: _entries(steps), buffers, drawn=drawn, model=model, widths=self.widths)


def only_part(plan: Plan, only: str | Sequence[str], wrapper: str = "") -> Plan:
    """``plan`` cut down to the parameters (any path of a tied one) and norms under the module or parameter paths
    ``only``: everything else untouched. The plan was made on the whole model, so what is kept has the
    whole model's roles (a head is the readout), paths and keyed values. A path may carry the ``wrapper`` prefix
    (``module.`` under DataParallel), as a ``state_dict`` name does.

    Raises:
        InitError: ``only`` is not a path or a list of paths, or a path selects nothing (the nearest is named).
    """
    given = [only] if isinstance(only, str) else only
    if not isinstance(given, (list, tuple)) or not given or not all(isinstance(p, str) and p for p in given):
        raise InitError(
            f"only= takes a module or parameter path (e.g. only='lm_head') or a list of them; got only={only!r}. "
            "Omit it to reinitialize the whole model."
        )
    prefix = canonical(wrapper)
    paths = [canonical(p) for p in given]
    paths = [p[len(prefix) :] if prefix and p.startswith(prefix) and p != prefix else p for p in paths]

    def under(path: str, part: str) -> bool:
        return path == part or path.startswith(part + ".")

    def inside(path: str) -> bool:
        return any(under(path, p) for p in paths)

    steps = [s for s in plan.steps if inside(s.target.path) or any(inside(a) for a in s.aliases)]
    norms = [(at, norm) for at, norm in plan.norms if at and inside(at[:-1])]
    known = {p for s in plan.steps for p in (s.target.path, *s.aliases)} | {at[:-1] for at, _ in plan.norms if at}
    modules = {q.rpartition(".")[0] for q in known} - {""}
    for part in paths:
        if not any(under(q, part) for q in known):
            raise _selects_nothing(part, known, modules)
    uncovered = [t for t in plan.uncovered if any(inside(u.path) for u in t.every)]
    written = {p for s in steps for p in (s.target.path, *s.aliases)}
    notes = [(path, note) for path, note in plan.notes if path in written]
    return replace(plan, steps=steps, uncovered=uncovered, norms=norms, notes=notes)


def _selects_nothing(part: str, known: set[str], modules: set[str]) -> InitError:
    """The error for an ``only=`` path under which no parameter is: a pattern is not a path; else the nearest path."""
    if any(c in part for c in "*?["):
        return InitError(
            f"only={part!r} is a pattern; only= takes paths. Select by pattern with a list of them: "
            f"only=[n for n, _ in model.named_modules() if fnmatch.fnmatch(n, {part!r})]."
        )
    near = [q for q in sorted(known) if q.startswith(part)][:1]  # "0.weight" of a hooked "0.weight_orig"
    near = near or difflib.get_close_matches(part, sorted(known | modules), n=1, cutoff=0.0)
    return InitError(
        f"only={part!r} selects no parameter of {len(known)}"
        + (f" (nearest path: {near[0]!r})" if near else "")
        + "; pass a module or parameter path of the model (its named_parameters names)."
    )


FROZEN = Action(
    "keep",
    formula="frozen (requires_grad=False): kept as it is; Override(frozen=True) writes frozen parameters by the scheme",
)
"""What a frozen parameter gets unless an override with ``frozen=True`` selects it: pretrained, sinusoidal or
rotary tables are never redrawn silently."""


def plan_by_role(
    model: nn.Module | Walk | Iterable[tuple[str, nn.Module]],
    action_of: Callable[[Role], Action],
    overrides: Sequence[Selector] = (),
) -> Plan:
    """The plan of a role-based scheme: each parameter gets ``action_of(role)`` unless an override selects it.

    ``model`` is a module (walked whole), a `Walk`, or (path, module) pairs to walk. The last matching
    override wins; an override selects a tied parameter through any of its paths and owners. Tied
    parameters are written once, under their first path; the readout is the walk's (see `torchinit._model.walk`).
    A norm whose parameters an override skips keeps its running statistics (skipped means untouched).
    A frozen parameter (``requires_grad=False``) is kept, and its norm's statistics with it, unless an
    override with ``frozen=True`` selects it (`FROZEN`).
    """
    walked = model if isinstance(model, Walk) else walk(model) if isinstance(model, nn.Module) else walk_modules(model)
    steps: list[Step] = []
    uncovered: list[Target] = []
    # action_of is a pure function of the (frozen) role, and rules hand out shared role instances: memo by
    # identity, keeping each role alive in the value so its id cannot be reused during the walk.
    chosen_from = tuple(reversed(overrides))
    matched: set[int] = set()
    actions: dict[int, tuple[Role, Action]] = {}
    skipped_owners: set[int] = set()
    for param in walked.params:
        target, role = param, param.role
        if param.lazy:
            steps.append(Step(target, _LAZY, role=role))  # refused by Plan.check
            continue
        chosen = None
        frozen = not target.tensor.requires_grad
        if chosen_from:
            every = param.every
            for o in chosen_from:  # the last matching override wins (a rule returning None passes it on)
                if any(o.selects(t.path, t.owner, role, frozen) for t in every):
                    matched.add(id(o))
                    if chosen is None:
                        chosen = o.action(role, target, action_of)
                        if frozen and chosen is not None and o.frozen is not True and chosen.kind not in UNWRITTEN:
                            chosen = FROZEN  # only an override that says frozen=True writes a frozen parameter
        if chosen is None and frozen:
            chosen = FROZEN
        if chosen is not None:
            if chosen.kind == "skip" or chosen is FROZEN:
                skipped_owners.update(id(t.owner) for t in param.every)
        elif target.tensor.numel() == 0:
            chosen = Action("skip", reason="zero elements: nothing to write")
        elif role is not None:
            known_action = actions.get(id(role))
            if known_action is None:
                known_action = actions[id(role)] = (role, action_of(role))
            chosen = known_action[1]
        else:
            uncovered.append(target)
            chosen = Action("skip", reason="no rule covers it")
        if param.uses:
            steps.append(Step(target, chosen, role, aliases=tuple(u.path for u in param.uses)))
        else:
            steps.append(Step(target, chosen, role))  # the common case: no keyword, no generator
    norms = walked.norms
    if chosen_from or skipped_owners:
        kept = []
        for prefix, norm in norms:
            if id(norm) in skipped_owners:
                continue  # its parameters are skipped or frozen: its statistics are left alone too
            if not any(p is not None for p in norm._parameters.values()):  # affine=False: select by its buffers
                skips = [o for o in chosen_from if o.skip and o.selects(prefix + "running_mean", norm, None, True)]
                matched.update(id(o) for o in skips)
                if skips:
                    continue
            kept.append((prefix, norm))
        norms = kept
    unmatched = [_unmatched(o, steps) for o in overrides if id(o) not in matched]
    return Plan(steps, uncovered, norms, unmatched)


def _unmatched(override: Selector, steps: list[Step]) -> str:
    """Why ``override`` selected nothing, with the nearest path of the model when its path glob is to blame
    (a state_dict name of a parametrized weight, ``0.parametrizations.weight.original0``, points to ``0.weight``;
    a weight under torch's older spectral_norm hook to its ``weight_orig``)."""
    paths = [p for s in steps for p in (s.target.path, *s.aliases)]
    by_path = [p for p in paths if fnmatch.fnmatchcase(p, override.path)]
    if not by_path:
        named = re.sub(r"parametrizations\.([^.]+)\.original\d*$", r"\1", override.path)
        if named == override.path and override.path + "_orig" in paths:
            named = override.path + "_orig"
        near = (
            [named]
            if named != override.path and named in paths
            else difflib.get_close_matches(override.path, paths, n=1, cutoff=0.0)
        )
        hint = f"no parameter path matches {override.path!r}" + (f" (nearest: {near[0]!r})" if near else "")
    else:
        hint = f"{len(by_path)} path(s) match {override.path!r} but the module=/role=/frozen= filters exclude them all"
    return f"{override!r} selects nothing: {hint}. Fix the override or remove it."


_LAZY = Action("normal", formula="lazy")  # an uninitialized lazy parameter: Plan.check refuses it
