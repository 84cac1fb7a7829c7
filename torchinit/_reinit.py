"""reinit: plan every parameter's write, validate the whole plan, then write."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchinit._actions import Action
from torchinit._legacy import LegacyPlanner
from torchinit._lsuv import LSUVScheme, lsuv_
from torchinit._plan import Step, Target, execute, execute_keyed, own_targets, problem
from torchinit._report import InitReport, ReportEntry
from torchinit._roles import NORMS, PURE_TYPES, Role, role_of, rules_pristine
from torchinit._schemes import AnyScheme, LegacyScheme, Override, Scheme, resolve_scheme
from torchinit._types import InitError, is_lazy


class UncoveredParameterWarning(UserWarning):
    """Some parameters have no rule and were left untouched (listed in the report)."""


class ShardedWithoutSeedWarning(UserWarning):
    """Sharded (DTensor / FSDP2) parameters drawn from torch's RNG: every rank draws whole tensors."""


def _is_sharded(tensor: torch.Tensor) -> bool:
    """A DTensor split over more than one rank (a Shard placement on a mesh dimension of size > 1)."""
    if type(tensor).__name__ != "DTensor":
        return False
    mesh, placements = tensor.device_mesh, tensor.placements  # type: ignore[attr-defined]
    return any(type(p).__name__ == "Shard" and mesh.size(i) > 1 for i, p in enumerate(placements))


def _unwrap(module: nn.Module) -> nn.Module:
    # torch.compile returns an OptimizedModule wrapping the real one; its parameters are shared.
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) and type(module).__name__ == "OptimizedModule" else module


def _scheme_plan(
    modules: Iterable[tuple[str, nn.Module]], scheme: Scheme
) -> tuple[list[Step], list[Target], list[tuple[str, nn.Module]]]:
    steps: list[Step] = []
    uncovered: list[Target] = []
    norms: list[tuple[str, nn.Module]] = []
    first: dict[int, Step] = {}
    overrides = tuple(reversed(scheme.overrides))  # the last matching override wins
    memo: dict[tuple[object, ...], tuple[Role | None, Action | None]] = {}
    pristine = rules_pristine()
    getters: dict[type, Callable[[dict[str, Any]], Any]] = {}
    for prefix, module in modules:
        prefix = f"{prefix}." if prefix else ""
        if isinstance(module, NORMS) and getattr(module, "track_running_stats", False):
            norms.append((prefix, module))
        twins = _twin_key(module, getters) if pristine else None
        for target in own_targets(module, prefix):
            key = target.key
            if key in first:  # tied: written once, under its first path
                first[key].aliases.append(target.path)
                continue
            if is_lazy(target.tensor):
                steps.append(Step(target, Action("normal", formula="lazy")))  # refused by validation
                continue
            role, planned = _role_and_action(module, target, scheme, memo, twins)
            frozen = not target.tensor.requires_grad if overrides else False
            chosen = None
            if overrides:
                chosen = next((o for o in overrides if o.selects(target.path, module, role, frozen)), None)
            if chosen is not None:
                action = chosen.action(role, target.path)
            elif target.tensor.numel() == 0:
                action = Action("skip", reason="zero elements: nothing to write")
            elif planned is not None:
                action = planned
            else:
                uncovered.append(target)
                action = Action("skip", reason="no rule covers it")
            step = Step(target, action, role=role)
            first[key] = step
            steps.append(step)
    return steps, uncovered, norms


def _twin_key(module: nn.Module, getters: dict[type, Callable[[dict[str, Any]], Any]]) -> object | None:
    """For a built-in layer: its type and scalar attributes (what its parameters' roles depend on)."""
    cls = type(module)
    if cls not in PURE_TYPES:
        return None
    getter = getters.get(cls)
    if getter is None:  # the scalar attributes of the first instance seen name them for its type
        names = [k for k, v in module.__dict__.items() if v is None or isinstance(v, (int, float, str, tuple))]
        getter = getters[cls] = operator.itemgetter(*names) if names else (lambda d: ())
    try:
        return (cls, getter(module.__dict__))
    except KeyError:  # an instance without one of them: plan it on its own
        return None


def _role_and_action(
    module: nn.Module,
    target: Target,
    scheme: Scheme,
    memo: dict[tuple[object, ...], tuple[Role | None, Action | None]],
    twins: object | None,
) -> tuple[Role | None, Action | None]:
    """The role and the scheme's action for one parameter; twins of a built-in layer share one answer."""
    key: tuple[object, ...] | None = None
    if twins is not None:
        key = (twins, target.name, target.tensor.shape)
        hit = memo.get(key)
        if hit is not None:
            return hit
    role = role_of(module, target.name)
    answer = (role, scheme.action(role) if role is not None else None)
    if key is not None:
        memo[key] = answer
    return answer


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
    """A validated plan: the writes in order, what no rule covers, and the norm layers to reset."""

    name: str
    steps: list[Step]
    uncovered: list[Target]
    norms: list[tuple[str, nn.Module]]

    def run(
        self,
        generator: torch.Generator | None,
        warn: bool = True,
        seed: int | None = None,
        threads: int | None = None,
    ) -> InitReport:
        """Write (keyed by ``seed`` when given), reset running statistics, and report."""
        if warn and self.uncovered:
            listing = ", ".join(f"{t.path} {tuple(t.tensor.shape)}" for t in self.uncovered)
            warnings.warn(
                UncoveredParameterWarning(
                    f"reinit left {len(self.uncovered)} parameter(s) untouched because no rule covers them: "
                    f"{listing}. Register a rule (torchinit.register_role_rule / register_fan_rule), add an "
                    "Override, or pass strict=True to make this an error."
                ),
                stacklevel=3,
            )
        if seed is None:
            sharded = [s.target.path for s in self.steps if s.action.draws and _is_sharded(s.target.tensor)]
            if warn and sharded:
                warnings.warn(
                    ShardedWithoutSeedWarning(
                        f"{len(sharded)} sharded parameter(s) (first: {sharded[0]}) drawn from torch's RNG: each "
                        "rank draws the whole tensor and keeps its shard, which is right only if all ranks share "
                        "the RNG state. Pass seed= to draw just the shard, from keyed, shard-invariant streams."
                    ),
                    stacklevel=3,
                )
            execute(self.steps, generator)
            drawn = sum(s.target.tensor.numel() for s in self.steps if s.action.draws)
        else:
            drawn = execute_keyed(self.steps, seed, threads)
        buffers = []
        for prefix, norm in self.norms:
            norm.reset_running_stats()  # type: ignore[operator]
            buffers += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
        steps = self.steps
        return InitReport(self.name, lambda: _entries(steps), buffers, drawn=drawn)


def prepare(
    module: nn.Module,
    scheme: str | AnyScheme,
    *,
    generator: torch.Generator | None = None,
    strict: bool = False,
    overrides: Sequence[Override] = (),
    own_only: bool = False,
    check: Callable[[list[Step]], list[str]] | None = None,
    seed: int | None = None,
) -> Plan:
    """Plan and validate; raise InitError listing every problem before anything is written."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InitError(f"seed must be a non-negative integer; got seed={seed!r}.")
        if generator is not None:
            raise InitError("pass either seed= (keyed, order-free streams) or generator=, not both.")
    if not isinstance(module, nn.Module):
        raise InitError(f"module must be an nn.Module; got {type(module).__name__}.")
    resolved = resolve_scheme(scheme)
    overrides = tuple(overrides)
    if not all(isinstance(o, Override) for o in overrides):
        raise InitError(f"overrides must be a sequence of Override; got overrides={overrides!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InitError(f"generator must be a torch.Generator or None; got generator={generator!r}.")
    root = _unwrap(module)
    if not isinstance(resolved, (Scheme, LegacyScheme)):
        raise InitError(
            f"scheme {scheme!r} calibrates on data and runs only through reinit(model, {scheme!r}, data=batch)."
        )
    if isinstance(resolved, LegacyScheme):
        if seed is not None:
            raise InitError(
                "legacy replays torch's constructors on torch's own RNG stream; it cannot be keyed by seed=. "
                "Call torch.manual_seed(seed) first instead."
            )
        if overrides:
            raise InitError(
                "legacy reproduces torch's defaults bit for bit and takes no overrides; got "
                f"overrides={overrides!r}. Run reinit(model, 'legacy') first, then reinit a second time "
                "with the overrides on a scheme."
            )
        planner = LegacyPlanner()
        if own_only:
            planner.own(root, "")
        else:
            planner.visit(root, "")
        steps, uncovered, norms = planner.steps, planner.uncovered, planner.norms
        skip = Action("skip", reason="no rule covers it")
        steps += [Step(t, skip, role=role_of(t.owner, t.name)) for t in uncovered]
        name = "legacy"
    else:
        resolved = resolved.with_overrides(*overrides) if overrides else resolved
        modules = [("", root)] if own_only else root.named_modules()
        steps, uncovered, norms = _scheme_plan(modules, resolved)
        name = scheme if isinstance(scheme, str) else repr(resolved)

    problems = [p for step in steps if (p := problem(step.target, step.action.draws)) is not None]
    if strict and uncovered:
        problems += [
            f"{t.path} ({type(t.owner).__name__}, shape {tuple(t.tensor.shape)}) has no rule; register one with "
            "torchinit.register_role_rule or register_fan_rule, or select it with an Override"
            for t in uncovered
        ]
    if check is not None:
        problems += check(steps)
    if problems:
        unique = list(dict.fromkeys(problems))
        raise InitError("reinit changed nothing; fix these first:\n  - " + "\n  - ".join(unique))
    return Plan(name, steps, uncovered, norms)


def reinit(
    module: nn.Module,
    scheme: str | AnyScheme = "kaiming_relu",
    *,
    generator: torch.Generator | None = None,
    strict: bool = False,
    overrides: Sequence[Override] = (),
    seed: int | None = None,
    threads: int | None = None,
    data: Any = None,
) -> InitReport:
    r"""Initialize every parameter of ``module`` in place by ``scheme``, with the true fans of each layer.

    Plans every write first and validates the whole plan (lazy or meta parameters, uncovered
    parameters under ``strict``, dtypes); on any error nothing has been written. Then writes in
    module order. Parameter identity, tying, dtype, device, ``requires_grad`` and memory format are
    kept, and nothing enters autograd. Tied parameters are written once and stay tied.
    Parametrized weights (weight_norm, spectral_norm, ...) are set through their ``right_inverse``,
    so the effective weight follows the scheme. A ``torch.compile``\ d module is reinitialized
    through the module it wraps. Norm layers' running statistics are reset.

    Args:
        module: the model.
        scheme: a registered name (``"kaiming_relu"``, ``"legacy"``, see `list_schemes`) or a
            `Scheme`.
        generator: the RNG for every draw; torch's default generator when None.
        strict: raise, naming each path and shape, when a parameter has no rule, instead of
            warning and leaving it untouched.
        overrides: `Override` values layered on the scheme (not with ``legacy``).
        seed: keyed generation: each parameter's values become a function of ``seed`` and its
            qualified name only, the same whatever the walk order, the other modules, the number of
            threads or the sharding (DTensor / FSDP2 parameters draw only the chunks their shard
            covers). Chunks are filled in parallel. Not with ``generator`` or ``legacy``.
        threads: worker threads for keyed fills; ``torch.get_num_threads()`` when None.
        data: for ``"lsuv"`` (an `LSUVScheme`): the batch the layers are calibrated on.

    Returns:
        An `InitReport`: per parameter its path, shape, role, rule, fans and target std.

    Raises:
        InitError: an unknown scheme, a bad override, an uninitialized lazy or meta parameter, or
            (with ``strict``) an uncovered parameter. The model is then bitwise unchanged.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
        >>> _ = model(torch.zeros(1, 3, 8, 8))
        >>> report = reinit(model, "kaiming_relu", generator=torch.Generator().manual_seed(0))
        >>> report["0.weight"].std == (2 / 27) ** 0.5
        True
    """
    lsuv = resolve_scheme(scheme)
    if isinstance(lsuv, LSUVScheme):
        plan = prepare(module, lsuv.base, generator=generator, strict=strict, overrides=overrides, seed=seed)
        reports: list[InitReport] = []
        layers = lsuv_(_unwrap(module), data, lsuv, lambda: reports.append(plan.run(generator, True, seed, threads)))
        report = reports[0]
        report.scheme = scheme if isinstance(scheme, str) else repr(lsuv)
        report.lsuv = layers
        return report
    if data is not None:
        raise InitError(f"data= is only used by the lsuv scheme; got scheme={scheme!r}.")
    plan = prepare(module, scheme, generator=generator, strict=strict, overrides=overrides, seed=seed)
    return plan.run(generator, seed=seed, threads=threads)
