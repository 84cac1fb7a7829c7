"""The one writer: how each planned write reaches its tensor, and the transaction around all of them.

Planning (``_schemes.plan``) decides *what* each parameter gets; this module decides *how* it is written (in
place, through a contiguous temporary, into a DTensor shard, through a parametrization's
``right_inverse``, keyed or from torch's RNG, with spectral-norm buffers refreshed after) and owns the
transaction:

- before the first write, `torchinit._model.proof.refusals` proves every distinct kind of write can succeed
  (each tensor writable, no two parameters sharing memory, every parametrization's ``right_inverse``, each
  distinct kind of write made once on a small tensor like the target);
- during the writes, Ctrl-C (and any Python-level SIGINT handler) is held to the end (`hold_interrupts`);
- after any failure, `Undo` puts back the RNG states and every tensor it backed up.

``keep`` and ``skip`` steps never reach the writer: `write_steps` drops them first.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._layers.rules import Role
from torchinit._maths.draw import DRAWN, UNWRITTEN, Action, write
from torchinit._maths.keyed import KeyedWriter
from torchinit._maths.keyed_jobs import Region, local_block
from torchinit._model.spectral import refresh_spectral
from torchinit._model.transaction import Undo
from torchinit._model.walk import Target, parametrized_value, spectral_buffers


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


def local_of(t: torch.Tensor) -> torch.Tensor:
    """The tensor this process holds: a DTensor's local shard, any other tensor itself."""
    return t.to_local() if type(t).__name__ == "DTensor" else t  # type: ignore[attr-defined]


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
    forget_cached(target)
    target.tensor = getattr(target.owner, target.name)


def forget_cached(target: Target) -> None:
    """Drop a parametrized weight's value from ``parametrize.cached()``'s cache (torch keeps it by (module id,
    name) and does not drop it on assignment): inside that context the layer and the report then see the value
    just written, not the one read before."""
    parametrize._cache.pop((id(target.owner), target.name), None)


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
    plain_types = (torch.Tensor, nn.Parameter)
    try:
        with torch.no_grad():
            for step in steps:
                target = step.target
                t = target.tensor
                if (
                    not backup
                    and type(t) in plain_types
                    and not target.parametrized
                    and step.copy_from is None
                    and not step.scratch
                    and not target.owner._forward_pre_hooks
                ):  # the common case: a plain tensor written in place, nothing to save or refresh
                    write(step.action, t, generator)
                    if step.action.kind in DRAWN:
                        drawn += t.numel()
                    continue
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
    plain_types = (torch.Tensor, nn.Parameter)
    with torch.no_grad():
        for step in steps:
            target = step.target
            t = target.tensor
            if not backup and type(t) in plain_types and not target.parametrized:
                writer.add(step.action, t, target.path)  # the common case: a plain tensor, no region
                if target.owner._forward_pre_hooks:
                    hooked.append(step)
                continue
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
            done = step.target
            if spectral_buffers(done):
                refresh_spectral(done, _keyed_generator(seed, done.path))  # power-iteration vectors keyed too
            if done.parametrized and step.action.draws:
                step.effective = _effective_std(done)
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
