"""The one walk over a model: every parameter once, under its canonical path, with its role and its ties.

Every reader of a model's structure (the role-based planner, ``legacy``, recipes, LSUV, the audit) reads a
`Walk`; none walks the model on its own. A walk knows:

- **paths**: canonical (torch's wrappers ``_orig_mod``, ``_fsdp_wrapped_module``,
  ``_checkpoint_wrapped_module`` dropped), so overrides and keyed streams see the model's own names;
- **ties**: a tensor used under several paths (a tied LM head, a module reused at two positions) is one
  `Target`: its first use, with the others as ``uses``;
- **parametrizations**: a parametrized weight is one target (its originals are not listed apart), and a
  legacy ``spectral_norm`` hook's ``weight_orig`` is described as the weight it stands for;
- **roles and fans**: each use's role from the layer descriptions (``register_layer``), and the readout:
  a dense weight tied to an input embedding, or else the last dense layer when its name is a conventional
  output name (`READOUT_NAMES`);
- **norms** whose running statistics a reinit resets.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._layers.rules import Role, plain_role_of, quiet_parametrizations, role_of
from torchinit._types import LAZY, InitError

WRAPPER_NAMES = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")
"""Attribute names under which torch's wrappers (torch.compile, FSDP1, activation checkpointing) hold the
wrapped module: dropped from paths, so overrides and keyed streams see the model's own names."""

READOUT_NAMES = frozenset(
    {"lm_head", "head", "heads", "fc", "classifier", "logits", "score", "readout", "output_layer"}
)
"""Module names that mark the model's output layer when it is also the last dense layer registered."""

ADDED_TABLES = re.compile(
    r"wpe|w?pos(ition)?(al)?_?emb(ed|edding|eddings|s)?|embed_positions|position_embeddings?|"
    r"(token_)?type_embeddings?|segment_embeddings?|embed_(token_)?types?"
)
"""Names of the tables a transformer adds to its token embedding (positions, token types, segments)."""


def canonical(path: str) -> str:
    """``path`` without wrapper segments: ``_orig_mod.h.0._checkpoint_wrapped_module.mlp`` -> ``h.0.mlp``."""
    if "_orig_mod" not in path and "_wrapped_module" not in path:
        return path
    return ".".join(part for part in path.split(".") if part not in WRAPPER_NAMES)


@dataclass(slots=True)
class Target:
    """A parameter as torchinit sees it: its path, owner, local name and (effective) tensor.

    A parametrized weight (weight_norm, spectral_norm, any ``register_parametrization``) is one
    target whose value is written through the parametrization's ``right_inverse``. The walk lists each
    distinct parameter once, as the target of its first use, with its role (the readout found), its other
    uses (ties) and whether it is an uninitialized lazy parameter.
    """

    path: str
    owner: nn.Module
    name: str
    tensor: torch.Tensor
    parametrized: bool = False
    role: Role | None = None
    uses: list[Target] | None = None
    lazy: bool = False

    @property
    def key(self) -> int:
        """Identity used to find tied parameters."""
        return id(self.owner.parametrizations[self.name]) if self.parametrized else id(self.tensor)  # type: ignore[index]

    @property
    def where(self) -> str:
        """``path (Owner, shape (..))``: how messages name the parameter."""
        return f"{self.path} ({type(self.owner).__name__}, shape {tuple(self.tensor.shape)})"

    @property
    def every(self) -> list[Target]:
        """Every use, the first one first."""
        return [self, *self.uses] if self.uses else [self]


@dataclass
class Walk:
    """A model as one pass found it: modules, distinct parameters in module order, norms with statistics."""

    modules: list[tuple[str, nn.Module]]
    """(canonical prefix, ``""`` or ending in ``"."``, module), in module order, each module once."""
    params: list[Target]
    norms: list[tuple[str, nn.Module]]

    def weights(self, kinds: Iterable[str]) -> Iterator[tuple[str, Target, Role, Target]]:
        """Every use of a parameter whose own role (in its owning module, before the readout is found) is one
        of ``kinds``, in module order: (the owner's canonical path, the use, that role, the parameter). A tied
        weight appears once per module that holds it; a layer described with `register_layer` is found whatever
        its parameters are called."""
        wanted = frozenset(kinds)
        for param in self.params:
            if param.lazy:
                continue
            for target in param.every:
                role = role_of(target.owner, target.name)
                if role is not None and role.kind in wanted:
                    yield target.path.rpartition(".")[0], target, role, param


def tracks_running_stats(module: nn.Module) -> bool:
    """A norm layer with running statistics to reset (BatchNorm, SyncBatchNorm, InstanceNorm(track=True))."""
    return hasattr(type(module), "reset_running_stats") and bool(getattr(module, "track_running_stats", False))


def _parametrized(module: nn.Module) -> bool:
    # parametrize.is_parametrized() looks the attribute up through Module.__getattr__, whose miss
    # raises and formats an AttributeError: ~10 us per module. The ModuleDict lives in _modules.
    return "parametrizations" in module._modules


def target_named(module: nn.Module, prefix: str, name: str) -> Target:
    """The target of ``module``'s own parameter ``name`` (plain or parametrized)."""
    if _parametrized(module) and name in module.parametrizations:  # type: ignore[operator]
        return Target(prefix + name, module, name, parametrized_value(module, name), parametrized=True)
    return Target(prefix + name, module, name, module._parameters[name])  # type: ignore[arg-type]


def parametrized_value(module: nn.Module, name: str) -> torch.Tensor:
    """A parametrized weight's value as the layer uses it in eval mode: reading it changes nothing."""
    with quiet_parametrizations(module):
        return getattr(module, name)  # type: ignore[no-any-return]


def own_targets(module: nn.Module, prefix: str) -> list[Target]:
    """The module's own parameters (parametrized ones through their owner), in registration order."""
    if isinstance(module, parametrize.ParametrizationList):
        return []  # its `original*` tensors are reached through the parametrized owner
    found = []
    if _parametrized(module):
        found = [target_named(module, prefix, name) for name in module.parametrizations]  # type: ignore[union-attr]
    found += [Target(prefix + n, module, n, p) for n, p in module._parameters.items() if p is not None]
    return found


_ONE_WALK: contextvars.ContextVar[tuple[int, bool, Walk] | None] = contextvars.ContextVar(
    "torchinit_one_walk", default=None
)


@contextlib.contextmanager
def one_walk(root: nn.Module, *, own_only: bool = False) -> Iterator[Walk]:
    """Within the block, `walk` of ``root`` gives this one walk: a plan that reads the model in two places (a
    recipe's rules, then its base scheme) walks it once."""
    walked = walk(root, own_only=own_only)
    token = _ONE_WALK.set((id(root), own_only, walked))
    try:
        yield walked
    finally:
        _ONE_WALK.reset(token)


def walk(root: nn.Module, *, own_only: bool = False) -> Walk:
    """Walk ``root`` once (only its own parameters when ``own_only``: a layer being constructed).

    A module reused at several positions is walked at its first; its parameters are tied there, so an
    override of any of its paths selects them.
    """
    reused = _ONE_WALK.get()
    if reused is not None and reused[0] == id(root) and reused[1] == own_only:
        return reused[2]
    if own_only:
        return walk_modules([("", root)])
    pairs: list[tuple[str, nn.Module]] = []
    _tree(root, "", pairs)
    return walk_modules(pairs)


def _tree(module: nn.Module, path: str, out: list[tuple[str, nn.Module]]) -> None:
    """``module.named_modules(remove_duplicate=False)`` into ``out``, in its order (each node, then its children),
    without a generator per level: on 5,000 small modules this was a fifth of the walk."""
    out.append((path, module))
    for name, child in module._modules.items():
        if child is not None:
            _tree(child, f"{path}.{name}" if path else name, out)


_FACTS: dict[type, tuple[bool, bool]] = {}
"""Module type -> (is a ParametrizationList, has ``reset_running_stats``): facts of the class, looked up once."""


def _facts(kind: type) -> tuple[bool, bool]:
    found = _FACTS[kind] = (issubclass(kind, parametrize.ParametrizationList), hasattr(kind, "reset_running_stats"))
    return found


def walk_modules(pairs: Iterable[tuple[str, nn.Module]]) -> Walk:
    """The walk of these (path, module) pairs, in order (see `walk`)."""
    params: list[Target] = []
    norms: list[tuple[str, nn.Module]] = []
    modules: list[tuple[str, nn.Module]] = []
    by_key: dict[int, Target] = {}
    tied_readout: Target | None = None
    last_dense: Target | None = None
    seen: set[int] = set()
    for path, module in pairs:
        again = id(module) in seen
        own = module._parameters
        facts = _FACTS.get(type(module)) or _facts(type(module))
        plists = facts[0] or "parametrizations" in module._modules
        if again and not own and not plists:
            continue
        if "_orig_mod" in path or "_wrapped_module" in path:
            path = canonical(path)
        prefix = f"{path}." if path else ""
        if not again:
            seen.add(id(module))
            modules.append((prefix, module))
            if facts[1] and getattr(module, "track_running_stats", False):
                norms.append((prefix, module))
        if not own and not plists:
            continue  # a container
        if plists:
            targets = own_targets(module, prefix)
        else:  # the common case
            targets = [Target(prefix + n, module, n, p) for n, p in own.items() if p is not None]
        for target in targets:
            key = target.key if plists else id(target.tensor)
            known = by_key.get(key)
            if known is not None:  # tied: one parameter, this is another use
                if all(u.path != target.path for u in known.every):
                    known.uses = [*(known.uses or ()), target]
                if tied_readout is None and known.role is not None and not again:
                    tied_readout = _tied_readout(known, target)
                continue
            if isinstance(target.tensor, LAZY):
                target.lazy = True
            else:
                try:  # inline, not a call per parameter: free in the common case
                    role = target.role = role_of(module, target.name) if plists else plain_role_of(module, target.name)
                except Exception as error:
                    raise _rule_error(target, error) from error
                if role is not None and role.kind == "dense":
                    last_dense = target
            by_key[key] = target
            params.append(target)
    if tied_readout is not None:
        _added_tables(params, tied_readout)
    if tied_readout is None and last_dense is not None:
        parts = last_dense.path.split(".")
        name = next((n for n in parts if n in READOUT_NAMES), None)
        if name is not None:
            assert last_dense.role is not None
            last_dense.role = Role("readout", last_dense.role.fans, via=f"named {name!r}, the last dense layer")
    return Walk(modules, params, norms)


def _described(target: Target, *, quiet: bool) -> Role | None:
    """``target``'s role by the layer rules (``quiet``: its owner's parametrizations read in eval mode).

    Raises:
        InitError: a rule raised (a registered rule that fails on this parameter): the path, shape and error.
    """
    try:
        return role_of(target.owner, target.name) if quiet else plain_role_of(target.owner, target.name)
    except Exception as error:
        raise _rule_error(target, error) from error


def _rule_error(target: Target, error: Exception) -> InitError:
    return InitError(
        f"the layer rules for {target.path} ({type(target.owner).__name__}, shape {tuple(target.tensor.shape)}) "
        f"raised {type(error).__name__}: {error}. A rule (register_layer, register_fan_rule, register_role_rule) "
        "must return None for a parameter it does not describe."
    )


def _added_tables(params: list[Target], token: Target) -> None:
    """Tables added to a tied token embedding (positions, token types) get its std: role ``embedding`` with
    the token table's fans, so that a scheme draws them as it draws the token table (not N(0, 1), which is
    sqrt(d) times larger). Recognized by name (`ADDED_TABLES`) and width (the token table's)."""
    assert token.role is not None
    width = token.tensor.shape[-1]
    for param in params:
        role = param.role
        if role is None or role.kind != "embedding" or param is token or param.tensor.shape[-1] != width:
            continue
        owner = param.path.rsplit(".", 2)[-2] if param.path.count(".") else ""
        if ADDED_TABLES.fullmatch(owner):
            param.role = Role(
                "embedding",
                token.role.fans,
                padding_idx=role.padding_idx,
                via=f"added to the token table: {token.role.via}",
            )


def _tied_readout(known: Target, alias: Target) -> Target | None:
    """A weight shared by an input embedding and a dense layer is the readout (drawn by the dense use's fans)."""
    assert known.role is not None
    other = _described(alias, quiet=True)
    if other is None:
        return None
    kinds = {known.role.kind, other.kind}
    if kinds != {"embedding", "dense"}:
        return None
    dense, embedding = (other, known.path) if other.kind == "dense" else (known.role, alias.path)
    known.role = Role("readout", dense.fans, padding_idx=None, via=f"tied to the input embedding {embedding}")
    return known


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
