"""Plans: the ordered writes of one reinit call, built, validated as a whole, then carried out.

A scheme turns a model into a `Plan` (see ``_registry.BaseScheme``); `plan_by_role` is the walk that
role-based schemes share. Nothing is written before `Plan.check` has passed.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import fnmatch
import functools
import signal
import threading
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchinit._distributions import check_cutoffs
from torchinit._draw import DRAWN, Action, check_draw, write
from torchinit._keyed import KeyedWriter, Region, local_block
from torchinit._layers import Role
from torchinit._report import InitReport, ReportEntry
from torchinit._types import InitError, ShardedWithoutSeedWarning, UncoveredParameterWarning, is_lazy
from torchinit._walk import Target, Walk, walk, walk_modules

if TYPE_CHECKING:
    from torchinit._schemes import Override


@dataclass(slots=True)
class Step:
    """One write: an action on a target, a copy from another target, or a draw that is thrown away."""

    target: Target
    action: Action
    role: Role | None = None
    copy_from: Target | None = None
    scratch: bool = False
    aliases: tuple[str, ...] = ()  # the other paths of a tied parameter
    effective: float | None = None  # a parametrized weight's std after its parametrization


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
    if t.is_inference() and not torch.is_inference_mode_enabled():
        return (
            f"{target.path} ({type(target.owner).__name__}, shape {tuple(t.shape)}) was created under "
            "torch.inference_mode() and cannot be written outside it; call reinit inside torch.inference_mode(), "
            "or build the model outside it."
        )
    return None


_VALUED = frozenset({*DRAWN, "constant"})  # the kinds whose param check_draw checks (zeros always pass)


def draw_problem(step: Step) -> str | None:
    """Why this step's draw cannot give finite values of its tensor's dtype (a negative or non-finite std,
    bound, gain or value; a truncation without mass), or None: `check_draw`, before any write."""
    a = step.action
    try:
        check_draw(step.target.tensor, a.kind, a.param, a=-a.cut, b=a.cut)  # type: ignore[arg-type]
        if a.kind == "truncated_normal":
            check_cutoffs(-a.cut, a.cut)
    except (InitError, ValueError) as error:
        return str(error)
    return None


def action_problem(step: Step, generator: torch.Generator | None) -> str | None:
    """Why this step's action cannot be carried out on its target (index ranges, chunks, generator), or None."""
    a = step.action
    if a.chunks == 1 and a.chunk_values is None and a.zero_row is None and generator is None:
        return None  # the common case: nothing to check
    t, path = step.target.tensor, step.target.path
    if a.kind in ("skip", "keep") or step.copy_from is not None or t.numel() == 0:
        return None
    where = f"{path} ({type(step.target.owner).__name__}, shape {tuple(t.shape)})"
    chunks = len(a.chunk_values) if a.chunk_values is not None else a.chunks
    if chunks < 1 or (chunks > 1 and (t.dim() == 0 or t.shape[0] % chunks)):
        return (
            f"{where}: the rule splits it into {chunks} chunks along dim 0, which do not divide "
            f"{t.shape[0] if t.dim() else 'a 0-d tensor'}; fix the rule's chunk count."
        )
    if a.zero_row is not None and not (t.dim() >= 1 and -t.shape[0] <= a.zero_row < t.shape[0]):
        rows = t.shape[0] if t.dim() else 0
        return f"{where}: the rule zeroes row {a.zero_row}, outside its {rows} rows (a padding_idx out of range?)."
    if generator is not None and a.draws:
        device = _local(t).device
        if generator.device.type != device.type:
            return (
                f"{where} is on {device} but generator= draws on {generator.device}; pass a "
                f"torch.Generator(device={device.type!r})."
            )
    return None


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if type(t).__name__ == "DTensor" else t  # type: ignore[attr-defined]


def inverse_problem(target: Target) -> str | None:
    """A dry run of a parametrized target's ``right_inverse`` on its current value (nothing is written)."""
    plist = target.owner.parametrizations[target.name]  # type: ignore[index]
    value = target.tensor.detach()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a dry run: on copies, RNG put back
            for parametrization in reversed(list(plist)):
                parametrization = copy.deepcopy(parametrization)  # right_inverse may set state (orthogonal's base)
                inverse = getattr(parametrization, "right_inverse", None)
                if inverse is None:
                    raise NotImplementedError(f"{type(parametrization).__name__} has no right_inverse")
                value = inverse(value)
                if isinstance(value, (tuple, list)):
                    break  # a multi-tensor original: the first inverse in the chain that splits is the last
    except Exception as error:  # any failure of third-party code is the problem to report
        return (
            f"{target.path} ({type(target.owner).__name__}, parametrized by "
            f"{', '.join(type(p).__name__ for p in plist)}) cannot be assigned: its right_inverse fails "
            f"({type(error).__name__}: {error}). Give the parametrization a right_inverse, skip it with "
            f"Override(path={target.path!r}, skip=True), or reinit before parametrizing."
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


class Undo:
    """What a failing write phase puts back: the RNG states always, and every written tensor when asked.

    Backups (``backup=True``) are taken step by step just before each write, on the tensor's own device,
    and cost up to one copy of the written parameters until the call returns. They are taken only where
    a write can still fail after `Plan.check` (a parametrization's code, orthogonal QR temporaries, a
    DTensor write, an LSUV pass); plain in-place draws into validated tensors, keyed ones included (whose
    scratch buffers are allocated before the first write), cannot, so a plan made only of those runs
    without copies.
    """

    def __init__(self, generator: torch.Generator | None, *, backup: bool) -> None:
        self.backup = backup
        self.generator = generator
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
        self.generator_state = generator.get_state() if generator is not None else None
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.buffers: list[tuple[nn.Module, str, torch.Tensor | None]] = []
        self.seen: set[int] = set()

    def save(self, tensor: torch.Tensor) -> None:
        """Back up ``tensor`` (once) if backups are on."""
        if self.backup and id(tensor) not in self.seen:
            self.seen.add(id(tensor))
            self.tensors.append((tensor, tensor.detach().clone()))

    def save_step(self, step: Step) -> None:
        """Back up what ``step`` writes: its tensor, or a parametrization's originals and buffers."""
        if not self.backup:
            return
        target = step.target
        if target.parametrized:
            plist: nn.Module = target.owner.parametrizations[target.name]  # type: ignore[index, assignment]
            for param in plist.parameters():
                self.save(param)
            for module in plist.modules():
                for name, buffer in module._buffers.items():
                    self.buffers.append((module, name, None if buffer is None else buffer.detach().clone()))
        else:
            self.save(target.tensor)
        for buffer in spectral_buffers(target):
            self.save(buffer)

    def restore(self) -> None:
        """Put every backed-up tensor and the RNG states back, newest first."""
        with torch.no_grad():
            for module, name, value in reversed(self.buffers):
                module._buffers[name] = value
            for tensor, saved in reversed(self.tensors):
                if tensor.shape == saved.shape and tensor.dtype == saved.dtype:
                    tensor.copy_(saved)
                else:  # a right_inverse that replaced the storage
                    tensor.set_(saved)  # type: ignore[call-overload]
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if self.generator is not None and self.generator_state is not None:
            self.generator.set_state(self.generator_state)


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during the block and raise it at the end (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def fallible(steps: Sequence[Step]) -> bool:
    """Whether a write can still fail after validation (so that a failure must be undone)."""
    return any(
        s.target.parametrized or s.action.kind == "orthogonal" or type(s.target.tensor).__name__ == "DTensor"
        for s in steps
        if s.action.kind not in ("skip", "keep")
    )


def spectral_buffers(target: Target) -> list[torch.Tensor]:
    """The power-iteration vectors of a spectral norm on ``target`` (parametrization or legacy hook)."""
    owner = target.owner
    if target.parametrized:
        return [
            b for p in owner.parametrizations[target.name] if type(p).__name__ == "_SpectralNorm"  # type: ignore[index]
            for b in (p._buffers.get("_u"), p._buffers.get("_v")) if b is not None
        ]  # fmt: skip
    if owner._forward_pre_hooks and target.name.endswith("_orig"):
        name = target.name[: -len("_orig")]
        return [
            b
            for hook in owner._forward_pre_hooks.values()
            if type(hook).__name__ == "SpectralNorm" and getattr(hook, "name", None) == name
            for b in (owner._buffers.get(name + "_u"), owner._buffers.get(name + "_v"))
            if b is not None
        ]
    return []


def refresh_spectral(target: Target, generator: torch.Generator | None) -> None:
    """After a spectral-normed weight is written, redraw its power-iteration vectors and iterate as torch's
    constructor does (15 steps), so eval-mode forwards divide by the new weight's spectral norm."""
    owner = target.owner
    if target.parametrized:
        for p in owner.parametrizations[target.name]:  # type: ignore[index]
            if type(p).__name__ == "_SpectralNorm" and "_u" in p._buffers:
                original = owner.parametrizations[target.name].original  # type: ignore[index, union-attr]
                _redraw_unit(p._u, p.eps, generator)
                _redraw_unit(p._v, p.eps, generator)
                matrix = p._reshape_weight_to_matrix(original)
                _converge(functools.partial(p._power_method, matrix, 5), p._u)
        return
    name = target.name[: -len("_orig")]
    hook: Any
    for hook in list(owner._forward_pre_hooks.values()):
        if type(hook).__name__ == "SpectralNorm" and getattr(hook, "name", None) == name:
            _redraw_unit(owner._buffers[name + "_u"], hook.eps, generator)  # type: ignore[arg-type]
            _redraw_unit(owner._buffers[name + "_v"], hook.eps, generator)  # type: ignore[arg-type]
            step = functools.partial(hook.compute_weight, owner, do_power_iteration=True)
            _converge(step, owner._buffers[name + "_u"])  # type: ignore[arg-type]
            setattr(owner, name, hook.compute_weight(owner, do_power_iteration=False))


def _converge(iterate: Callable[[], object], u: torch.Tensor, rounds: int = 100) -> None:
    """Power iterations until the left vector stops moving (torch's constructor stops after 15, which
    leaves the spectral norm estimate ~1% off on random matrices)."""
    for _ in range(rounds):
        before = u.clone()
        iterate()
        if float((u - before).abs().max()) <= 4 * torch.finfo(u.dtype).eps:
            return


def _redraw_unit(vector: torch.Tensor, eps: float, generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != vector.device.type:
        vector.copy_(torch.empty(vector.shape, dtype=vector.dtype).normal_(0, 1, generator=generator))
    else:
        vector.normal_(0, 1, generator=generator)
    vector.div_(vector.norm().clamp_min(eps))


def _keyed_generator(seed: int, path: str) -> torch.Generator:
    """A CPU generator for the few draws a keyed call makes outside the keyed streams, from (seed, path)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(path.encode())) % 2**63)


def _assign(target: Target, value: torch.Tensor, generator: torch.Generator | None) -> None:
    """Set a parametrized weight through its right_inverse without touching torch's global RNG: code in a
    right_inverse that draws (orthogonal's completion of a non-square Q) draws from a fork seeded by
    ``generator`` (or by the global RNG's current state, which is then left as it was)."""
    devices = [value.device.index or 0] if value.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=value.device.type if devices else "cuda"):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))
        setattr(target.owner, target.name, value)
    target.tensor = getattr(target.owner, target.name)


def _effective_std(target: Target) -> float:
    """The std of a parametrized weight as the layer uses it, computed in eval mode (no power iteration)."""
    plist = target.owner.parametrizations[target.name]  # type: ignore[index]
    modes = [(m, m.training) for m in plist.modules()]  # type: ignore[union-attr]
    try:
        for m, _ in modes:
            m.training = False
        value = getattr(target.owner, target.name).detach()
    finally:
        for m, mode in modes:
            m.training = mode
    return float(value.float().std()) if value.numel() > 1 else 0.0


def _fresh(target: Target) -> torch.Tensor:
    return torch.empty(target.tensor.shape, dtype=target.tensor.dtype, device=target.tensor.device)


def _execute(steps: list[Step], generator: torch.Generator | None, undo: Undo | None = None) -> None:
    backup = undo is not None and undo.backup
    with torch.no_grad():
        for step in steps:
            target = step.target
            if backup and not step.scratch and step.action.kind not in ("skip", "keep"):
                undo.save_step(step)  # type: ignore[union-attr]
            if step.copy_from is not None:
                target.tensor.copy_(step.copy_from.tensor)
            elif step.scratch:
                write(step.action, torch.empty_like(target.tensor), generator)
            elif target.parametrized:
                value = _fresh(target)
                write(step.action, value, generator)
                _assign(target, value, generator)
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
            hooked = target.parametrized or target.owner._forward_pre_hooks
            if hooked and step.action.kind not in ("skip", "keep") and spectral_buffers(target):
                refresh_spectral(target, generator)
            if target.parametrized and step.action.draws:
                step.effective = _effective_std(target)


def _execute_keyed(steps: list[Step], seed: int, threads: int | None, undo: Undo | None = None) -> int:
    writer = KeyedWriter(seed, threads)
    later: list[tuple[Step, torch.Tensor]] = []
    hooked: list[Step] = []  # parametrized, or with forward pre-hooks (a legacy spectral norm): after the writes
    backup = undo is not None and undo.backup
    with torch.no_grad():
        for step in steps:
            target = step.target
            if step.action.kind in ("skip", "keep"):
                continue
            if backup:
                undo.save_step(step)  # type: ignore[union-attr]
            if target.parametrized:
                value = _fresh(target)
                writer.add(step.action, value, target.path)
                later.append((step, value))
            else:
                local, region = _region(target.tensor)
                writer.add(step.action, local, target.path, region)
            if target.parametrized or target.owner._forward_pre_hooks:
                hooked.append(step)
        writer.run()
        for step, value in later:
            _assign(step.target, value, _keyed_generator(seed, step.target.path))
        for step in hooked:
            t = step.target
            if spectral_buffers(t):
                refresh_spectral(t, _keyed_generator(seed, t.path))  # power-iteration vectors keyed too
            if t.parametrized and step.action.draws:
                step.effective = _effective_std(t)
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

    def check(
        self,
        *,
        strict: bool = False,
        extra: Callable[[list[Step]], list[str]] | None = None,
        generator: torch.Generator | None = None,
        overrides_must_match: bool = False,
    ) -> None:
        """Raise one InitError listing every problem, before anything is written.

        Checked: lazy, meta and inference tensors, dtypes, each action's index ranges and chunk counts,
        the generator's device, a dry run of every parametrization's ``right_inverse``, uncovered
        parameters under ``strict``, and ``extra``.
        """
        problems = []
        checked: dict[int, tuple[torch.dtype, str | None]] = {}  # rules share Action instances: check each once
        for step in self.steps:
            a = step.action
            kind = a.kind
            found = problem(step.target, kind in DRAWN)
            if found is None and (a.chunks != 1 or a.chunk_values is not None or a.zero_row is not None or generator):
                found = action_problem(step, generator)
            if found is None and kind in _VALUED and (kind != "constant" or a.param != 0.0) and a.chunk_values is None:
                dtype = step.target.tensor.dtype
                known = checked.get(id(a))
                if known is None or known[0] is not dtype:
                    known = checked[id(a)] = (dtype, draw_problem(step))
                if known[1] is not None and step.copy_from is None:
                    found = f"{step.target.path} ({type(step.target.owner).__name__}): {known[1]}"
            if found is None and step.target.parametrized and kind not in ("skip", "keep"):
                found = inverse_problem(step.target)
            if found is not None:
                problems.append(found)
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
    ) -> InitReport:
        """Write (keyed by ``seed`` when given), reset running statistics, and report under ``name``.

        With ``undo``, every tensor is backed up before its write when ``undo.backup`` is set; the
        caller restores on failure (see `guarded`).
        """
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
            _execute(self.steps, generator, undo)
            drawn = sum(s.target.tensor.numel() for s in self.steps if s.action.draws)
        else:
            drawn = _execute_keyed(self.steps, seed, threads, undo)
        buffers = []
        for prefix, norm in self.norms:
            if undo is not None:
                for stat in ("running_mean", "running_var", "num_batches_tracked"):
                    if isinstance(value := norm._buffers.get(stat), torch.Tensor):
                        undo.save(value)
            norm.reset_running_stats()  # type: ignore[operator]
            buffers += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
        steps = self.steps
        return InitReport(name, lambda: _entries(steps), buffers, drawn=drawn)


@contextlib.contextmanager
def guarded(undo: Undo) -> Iterator[None]:
    """The write phase: Ctrl-C held to the end, and on any exception everything `undo` saved is put back."""
    with hold_interrupts():
        try:
            yield
        except BaseException:
            undo.restore()
            raise


def plan_by_role(
    model: nn.Module | Walk | Iterable[tuple[str, nn.Module]],
    action_of: Callable[[Role], Action],
    overrides: Sequence[Override] = (),
) -> Plan:
    """The plan of a role-based scheme: each parameter gets ``action_of(role)`` unless an override selects it.

    ``model`` is a module (walked whole), a `Walk`, or (path, module) pairs to walk. The last matching
    override wins; an override selects a tied parameter through any of its paths and owners. Tied
    parameters are written once, under their first path; the readout is the walk's (see `torchinit._walk`).
    A norm whose parameters an override skips keeps its running statistics (skipped means untouched).
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
        target, role = param.target, param.role
        step = Step(target, _LAZY if param.lazy else _UNDECIDED, role=role, aliases=tuple(u.path for u in param.uses))
        steps.append(step)
        if param.lazy:
            continue  # refused by Plan.check
        chosen = None
        if chosen_from:
            frozen = not target.tensor.requires_grad
            every = param.every
            for o in chosen_from:  # the last matching override wins (a rule returning None passes it on)
                if any(o.selects(t.path, t.owner, role, frozen) for t in every):
                    matched.add(id(o))
                    if chosen is None:
                        chosen = o.action(role, target, action_of)
        if chosen is not None:
            step.action = chosen
            if chosen.kind == "skip":
                skipped_owners.update(id(t.owner) for t in param.every)
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
    norms = walked.norms
    if chosen_from:
        kept = []
        for prefix, norm in norms:
            if id(norm) in skipped_owners:
                continue  # its parameters are skipped: so are its statistics
            if not any(p is not None for p in norm._parameters.values()):  # affine=False: select by its buffers
                skips = [o for o in chosen_from if o.skip and o.selects(prefix + "running_mean", norm, None, True)]
                matched.update(id(o) for o in skips)
                if skips:
                    continue
            kept.append((prefix, norm))
        norms = kept
    unmatched = [_unmatched(o, steps) for o in overrides if id(o) not in matched]
    return Plan(steps, uncovered, norms, unmatched)


def _unmatched(override: Override, steps: list[Step]) -> str:
    """Why ``override`` selected nothing, with the nearest path of the model when its path glob is to blame."""
    paths = [p for s in steps for p in (s.target.path, *s.aliases)]
    by_path = [p for p in paths if fnmatch.fnmatchcase(p, override.path)]
    if not by_path:
        near = difflib.get_close_matches(override.path, paths, n=1, cutoff=0.0)
        hint = f"no parameter path matches {override.path!r}" + (f" (nearest: {near[0]!r})" if near else "")
    else:
        hint = f"{len(by_path)} path(s) match {override.path!r} but the module=/role=/frozen= filters exclude them all"
    return f"{override!r} selects nothing: {hint}. Fix the override or remove it."


_UNDECIDED = Action("skip", reason="undecided")
_LAZY = Action("normal", formula="lazy")  # an uninitialized lazy parameter: Plan.check refuses it
