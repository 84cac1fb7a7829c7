"""The one writer: how each planned write reaches its tensor, and the transaction around all of them.

Planning (``_schemes.plan``) decides *what* each parameter gets; this module decides *how* it is written (in
place, through a contiguous temporary, into a DTensor shard, through a parametrization's
``right_inverse``, keyed or from torch's RNG, with spectral-norm buffers refreshed after) and owns the
transaction:

- before the first write, `refusals` proves every distinct kind of write can succeed: each tensor is
  writable (not lazy, meta, inference-only, sparse or self-overlapping; no two parameters share memory),
  every parametrization's ``right_inverse`` runs on a copy, and one small tensor made like the target
  (same type, dtype, layout and device) takes each distinct (kind of tensor, kind of action) write;
- during the writes, Ctrl-C (and any Python-level SIGINT handler) is held to the end (`hold_interrupts`);
- after any failure, `Undo` puts back the RNG states and every tensor it backed up.

``keep`` and ``skip`` steps never reach the writer: `write_steps` drops them first.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchinit._layers.rules import Role
from torchinit._maths import draw as _draw
from torchinit._maths import workspace as _workspace
from torchinit._maths.draw import DRAWN, UNWRITTEN, Action, write
from torchinit._maths.keyed import KeyedWriter, Region, local_block
from torchinit._model.spectral import refresh_spectral
from torchinit._model.transaction import Undo
from torchinit._model.walk import Target, parametrized_value, spectral_buffers
from torchinit._types import LAZY


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
    if isinstance(t, LAZY):
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
    if t.layout != torch.strided:
        return (
            f"{target.where} has layout {t.layout}; reinit writes dense (strided) tensors. Convert it with "
            f".to_dense() first, or skip it with Override(path={target.path!r}, skip=True)."
        )
    if not t.is_contiguous() and t.numel() > 1 and _extent(t) < t.numel() * t.element_size():
        return (
            f"{target.where} has stride {tuple(t.stride())}: its elements share memory (an expanded or as_strided "
            "view), so no write can give them different values. Give it its own storage (nn.Parameter(t.clone())), "
            f"or skip it with Override(path={target.path!r}, skip=True)."
        )
    if t.is_inference() and not torch.is_inference_mode_enabled():
        return (
            f"{target.path} ({type(target.owner).__name__}, shape {tuple(t.shape)}) was created under "
            "torch.inference_mode() and cannot be written outside it; call reinit inside torch.inference_mode(), "
            "or build the model outside it."
        )
    return None


def local_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor this process holds: a DTensor's local shard, any other tensor itself."""
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


def is_sharded(tensor: torch.Tensor) -> bool:
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
    value = parametrized_value(target.owner, target.name).detach()
    return float(value.float().std()) if value.numel() > 1 else 0.0


def _fresh(target: Target) -> torch.Tensor:
    return torch.empty(target.tensor.shape, dtype=target.tensor.dtype, device=target.tensor.device)


def _execute(steps: list[Step], generator: torch.Generator | None, undo: Undo | None = None) -> int:
    backup = undo is not None and undo.backup
    drawn = 0
    step: Step | None = None
    try:
        with torch.no_grad():
            for step in steps:
                target = step.target
                if backup and not step.scratch:
                    undo.save_target(step.target)  # type: ignore[union-attr]
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
                if hooked and spectral_buffers(target):
                    refresh_spectral(target, generator)
                if step.action.kind in DRAWN:
                    drawn += target.tensor.numel()
                    if target.parametrized:
                        step.effective = _effective_std(target)
    except Exception as error:  # say which parameter; the caller restores what was backed up
        if step is not None:
            _note(error, step.target)
        raise
    return drawn


def _note(error: BaseException, target: Target) -> None:
    """Add to ``error`` which parameter was being written (its type and message stay the user's)."""
    if hasattr(error, "add_note"):  # Python 3.11+
        error.add_note(f"torchinit: raised while writing {target.where}; what was backed up has been restored.")


def _execute_keyed(steps: list[Step], seed: int, threads: int | None, undo: Undo | None = None) -> int:
    writer = KeyedWriter(seed, threads)
    later: list[tuple[Step, torch.Tensor]] = []
    hooked: list[Step] = []  # parametrized, or with forward pre-hooks (a legacy spectral norm): after the writes
    backup = undo is not None and undo.backup
    with torch.no_grad():
        for step in steps:
            target = step.target
            if backup:
                undo.save_target(step.target)  # type: ignore[union-attr]
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


def write_steps(
    steps: Sequence[Step],
    generator: torch.Generator | None,
    *,
    seed: int | None,
    threads: int | None,
    undo: Undo | None,
) -> int:
    """Carry out every step that writes (keep and skip are dropped here, before any tensor is touched), keyed
    by ``seed`` when given; back up before each write when ``undo.backup``. Returns the random elements drawn."""
    writes = [s for s in steps if s.action.kind not in UNWRITTEN]
    if seed is not None:
        return _execute_keyed(writes, seed, threads, undo)
    return _execute(writes, generator, undo)


Filed = dict[int, list[tuple[torch.Tensor, Step, bool]]]
"""Tensors by their storage's address (unique; CUDA's addresses are unified), with their step and whether it writes."""

_PROVEN: set[tuple[Any, ...]] = set()  # kinds of write that went through once (a pure fact of torch's kernels)


def refusals(steps: Sequence[Step], *, keyed: bool) -> tuple[list[str], bool]:
    """Why some write of ``steps`` cannot succeed, before any is made (one message per parameter), and whether
    a write can still fail after that, so that a failure must be undone from backups (``fallible``).

    Every tensor must be writable (`problem`); two parameters may not share memory unless they are one
    (tied) parameter; each parametrized target's ``right_inverse`` must run (`inverse_problem`); and each
    distinct kind of write (tensor type, dtype, device, action kind, keyed or not) is made once on a small
    tensor made like the target (``new_empty``), with the RNG states forked (nothing observable).

    Fallible writes: code of a parametrization, orthogonal QR temporaries, a DTensor write, or a temporary
    for a tensor that is not contiguous (channels_last) or whose dtype is drawn in a wider one (a truncated
    normal in half precision).
    """
    found: list[str] = []
    fallible = strided = False
    by_storage: Filed = {}
    shared: set[int] = set()  # storages filed more than once
    setting = (keyed, torch.get_default_dtype(), torch.is_inference_mode_enabled())
    inference = setting[2]
    proven_here: set[tuple[Any, ...]] = set()  # (action id, type, dtype, on CUDA): plans share Action instances
    last: tuple[Any, ...] = ()
    kinds: dict[int, tuple[bool, bool, bool]] = {}  # action id -> (writes, draws, needs a wider temporary)
    facts: tuple[bool, bool, bool] | None = None
    plain_types, dense = (torch.Tensor, nn.Parameter), torch.strided  # hoisted: the loop runs per parameter
    last_action: Action | None = None
    for step in steps:
        target, action = step.target, step.action
        t = target.tensor
        facts = facts if action is last_action else kinds.get(id(action))  # plans share Action instances
        last_action = action
        if facts is None:
            kind = action.kind
            facts = kinds[id(action)] = (
                kind not in UNWRITTEN,
                kind in DRAWN,
                kind in ("orthogonal", "truncated_normal"),
            )
        # one quick test for the common tensor; `problem` says why when it fails
        contiguous = not isinstance(t, LAZY) and not t.is_meta and t.is_contiguous()
        if (
            not contiguous
            or t.layout is not dense
            or (facts[1] and not t.is_floating_point())
            or (not inference and t.is_inference())
        ):
            message = problem(target, facts[1])
            if message is not None:
                found.append(message)
                continue
        if step.scratch or not t.numel():
            continue
        if not facts[0]:  # kept or skipped: a write elsewhere must not reach its memory either
            _file(by_storage, shared, t, step, False)
            continue
        if target.parametrized:
            fallible = True
            message = inverse_problem(target)
            if message is not None:
                found.append(message)
            continue
        kind_of_t = type(t)
        local = t
        if kind_of_t not in plain_types:
            local = local_of(t)
            fallible = fallible or type(local) not in plain_types  # a subclass's own ops: no probe speaks for them
        if facts[2] or local is not t:  # QR or truncation temporaries, a DTensor write
            wide = local.dtype in (torch.float32, torch.float64)
            fallible = fallible or local is not t or action.kind == "orthogonal" or not wide
        here = (id(action), kind_of_t, local.dtype, local.is_cuda)
        if here != last and here not in proven_here:
            how = (kind_of_t, type(local), local.dtype, local.device, action.kind, action.chunk_values is None)
            message = _probe(step, local, (how, setting)) if (how, setting) not in _PROVEN else None
            if message is not None:
                found.append(message)
                continue
            proven_here.add(here)
        last = here
        strided = strided or not contiguous
        _file(by_storage, shared, local, step, True)
    return found + _overlaps([by_storage[base] for base in shared]), fallible or strided


def _file(by_storage: Filed, shared: set[int], t: torch.Tensor, step: Step, writes: bool) -> None:
    """File ``t`` under its storage's address (a tensor subclass without storage is not filed); ``shared``
    collects the addresses filed more than once."""
    try:
        base = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return
    filed = by_storage.get(base)
    if filed is None:
        by_storage[base] = [(t, step, writes)]
    elif base:
        filed.append((t, step, writes))
        shared.add(base)


def _probe(step: Step, local: torch.Tensor, key: tuple[Any, ...]) -> str | None:
    """Make the step's kind of write on a small tensor like its target (``local``: the tensor this process
    holds); why it fails, or None. ``key`` names the kind of write: remembered once it went through."""
    t, a, keyed = step.target.tensor, step.action, key[1][0]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[local.device.index or 0] if local.is_cuda else []):
            probe = local.new_empty((2, 2) if a.kind == "orthogonal" else (2,))
            if a.kind == "copy":
                source = step.copy_from.tensor if step.copy_from is not None else local
                probe.copy_(source.detach().reshape(-1)[:2].expand(2) if source.numel() else probe)
            else:
                small = (
                    Action(a.kind, a.param, cut=a.cut)
                    if a.chunk_values is None
                    else Action("constant", max(a.chunk_values, key=abs))
                )
                if keyed:
                    with _workspace.isolated():
                        writer = KeyedWriter(0, 1)
                        writer.add(small, probe, "probe")
                        writer.run()
                else:
                    _draw.write(small, probe, None)  # through _draw: a probe is not one of the plan's writes
    except Exception as error:  # whatever the kernel, subclass or device raises is the reason to report
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (
            f"{step.target.where}: a {a.kind} write {'(keyed) ' if keyed else ''}into a {local.dtype} "
            f"{type(t).__name__} on {local.device} fails ({type(error).__name__}: {first}). Skip it with "
            f"Override(path={step.target.path!r}, skip=True), or convert the tensor to a dtype and type torch can "
            "draw into before reinit."
        )
    if len(_PROVEN) < 1024:
        _PROVEN.add(key)
    return None


def _overlaps(groups: list[list[tuple[torch.Tensor, Step, bool]]]) -> list[str]:
    """Parameters whose memory overlaps without being one parameter (views of one tensor), where at least one
    is written: the write would change the other behind the report's back (a kept or skipped one too). Only a
    storage that more than one parameter uses has its byte ranges compared."""
    found = []
    for sharing in groups:
        if not any(writes for _, _, writes in sharing):
            continue  # kept or skipped views of one another change nothing
        spans = sorted(
            ((t.data_ptr(), t.data_ptr() + (t.nbytes if t.is_contiguous() else _extent(t)), id(t), step, writes)
             for t, step, writes in sharing),
            key=lambda span: span[:2],
        )  # fmt: skip
        reach = spans[0]
        for span in spans[1:]:
            # the same tensor twice is legacy's rewrites; two untouched ones change nothing
            if span[0] < reach[1] and span[2] != reach[2] and (span[4] or reach[4]):
                first, second = reach[3].target.path, span[3].target.path
                untouched_one = next((p for p, w in ((first, reach[4]), (second, span[4])) if not w), None)
                what = (
                    f" ({untouched_one} is kept or skipped, yet the other's write would change it)"
                    if (untouched_one)
                    else ": writing one would change the other"
                )
                found.append(
                    f"{first} and {second} are different parameters that share memory (views of one tensor){what}. "
                    "Make them one parameter (tie them), give each its own storage (.clone()), or skip both with "
                    "Overrides."
                )
            if span[1] > reach[1]:
                reach = span
    return found


def _extent(t: torch.Tensor) -> int:
    """Bytes from a strided tensor's first element to just past its last."""
    return (sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True)) + 1) * t.element_size()
