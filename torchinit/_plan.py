"""Plans: the ordered writes of one reinit call, built and validated before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._actions import Action, write
from torchinit._keyed import KeyedWriter, Region, local_block
from torchinit._roles import Role
from torchinit._types import is_lazy


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


def _region(tensor: torch.Tensor) -> tuple[torch.Tensor, Region | None]:
    """The local tensor to write and, for a sharded DTensor, where it sits in the global tensor."""
    if type(tensor).__name__ != "DTensor":
        return tensor, None
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = tensor.to_local()  # type: ignore[attr-defined]
    _, offset = compute_local_shape_and_global_offset(tensor.shape, tensor.device_mesh, tensor.placements)  # type: ignore[attr-defined]
    return local, Region(tuple(tensor.shape), tuple(offset))


def execute_keyed(steps: list[Step], seed: int, threads: int | None) -> int:
    """Carry out validated steps with keyed streams (see ``_keyed``); returns the elements drawn."""
    writer = KeyedWriter(seed, threads)
    later: list[tuple[Target, torch.Tensor]] = []
    with torch.no_grad():
        for step in steps:
            target = step.target
            if target.parametrized:
                value = torch.empty(target.tensor.shape, dtype=target.tensor.dtype, device=target.tensor.device)
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


def execute(steps: list[Step], generator: torch.Generator | None) -> None:
    """Carry out validated steps in order."""
    with torch.no_grad():
        for step in steps:
            target = step.target
            if step.copy_from is not None:
                target.tensor.copy_(step.copy_from.tensor)
            elif step.scratch:
                write(step.action, torch.empty_like(target.tensor), generator)
            elif target.parametrized:
                value = torch.empty(target.tensor.shape, dtype=target.tensor.dtype, device=target.tensor.device)
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
