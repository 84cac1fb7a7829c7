"""build()'s deferral of the model's own fills, and a per-block default dtype, as TorchFunctionModes.

While `torchinit.build` constructs a model, `SkipParameterFills` tapes the random fills model code makes
(Hugging Face ``_init_weights``, torchvision's and timm's init loops) instead of running them; the scheme
then draws what it writes once, and the tapes of what it leaves alone run afterwards. `DefaultDtype` gives
one thread's factories a default floating dtype without touching torch's process-wide one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchinit._api.context import Context
from torchinit._layers.rules import default_actions
from torchinit._maths.draw import write

_RANDOM_FILLS = frozenset({
    "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_",
    # torch.nn.init's fills that reach a mode as themselves (the others arrive as the tensor methods inside)
    "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_",
    "sparse_",
})  # fmt: skip
"""Random in-place fills, by name: Hugging Face wraps torch.nn.init's functions, so identity would miss them."""


class SkipParameterFills(TorchFunctionMode):
    """While build() constructs: random fills of parameters are deferred, and dropped where the scheme writes.

    Catches what model code draws after the layers' own defaults (Hugging Face ``_init_weights``,
    torchvision's and timm's init loops), whether it calls ``torch.nn.init`` or ``param.normal_()`` /
    ``param.data.normal_()``. A deferred fill starts a tape for that storage: later in-place ops on it
    (the rest of a multi-step fill such as timm's ``trunc_normal_``, a zeroed padding row) join the tape.
    Any op that reads the values first (torch's rejection-sampling ``trunc_normal_``, a copy) runs the
    tape for real there, so model code never sees unfilled memory. After construction the tapes of
    parameters the scheme does not write are run in order; the scheme draws the rest once.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.taped: set[int] = set()  # storages with a deferred fill
        self.skipped: dict[int, tuple[nn.Module, Callable[..., Any]]] = {}  # storages whose default was skipped
        self.versions: dict[int, int] = {}  # their parameters' versions when skipped, by id
        self.materializing = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        name = getattr(func, "__name__", "")
        if name in _RANDOM_FILLS and self.defer(func, target, args, kwargs):
            return target
        if (not self.taped and not self.skipped) or name in _NOT_VALUES:
            return func(*args, **kwargs)
        in_place = name == "__setitem__" or (name.endswith("_") and not name.endswith("__"))
        key = storage_key(target) if in_place and isinstance(target, torch.Tensor) else None
        if key is not None and key in self.taped:
            self._flush_read(func, args[1:], kwargs, key)
            self.ctx.fills.append((target, func, tuple(args), dict(kwargs)))
            return None if name == "__setitem__" else target
        watched = {k for k in map(storage_key, _tensors(args, kwargs)) if k in self.taped or k in self.skipped}
        if key is not None and name in _OVERWRITES:
            watched.discard(key)  # writing over skipped memory reads nothing of it
        if watched and name == "clone" and _in_deepcopy():
            watched &= self.taped  # a deep copy of a skipped layer is skipped too (TransformerEncoder's clones)
        if not watched:
            return func(*args, **kwargs)
        if in_place or name not in _METADATA:
            self._materialize(watched)
            return func(*args, **kwargs)
        result = func(*args, **kwargs)  # shape, dtype, .data, a view: no values read
        if isinstance(result, torch.Tensor) and storage_key(result) not in watched:  # it copied after all
            self._materialize(watched)
            result = func(*args, **kwargs)
        return result

    def note_skipped(self, module: nn.Module, reset: Callable[..., Any]) -> None:
        """``module``'s default ``reset`` was skipped: if model code reads its parameters while it is being
        built (a buffer computed from a weight), the default runs for real first."""
        for param in module._parameters.values():
            if param is not None and (key := storage_key(param)) > 0:
                self.skipped[key] = (module, reset)
                self.versions[id(param)] = param._version

    def _materialize(self, keys: set[int]) -> None:
        """Make these storages hold real values before they are read: run their deferred fills, or the
        skipped default of their module (keeping what model code wrote into its parameters since)."""
        filled = keys & self.taped
        if filled:
            self._flush(filled)
        for key in keys - filled:
            found = self.skipped.get(key)
            if found is None:
                continue
            module, reset = found
            params = {name: p for name, p in module._parameters.items() if p is not None}
            read = [name for name, p in params.items() if storage_key(p) == key]
            drawn = default_actions(module)
            self.materializing = True
            try:
                with torch.no_grad(), torch.random.fork_rng(devices=[]):  # torch's global RNG stays as it was
                    if all(name in drawn for name in read):  # just the parameters read, by torch's rule
                        torch.manual_seed(self._seed())
                        for name in read:
                            write(drawn[name], params[name], None)
                        done = [params[name] for name in read]
                    else:  # no per-parameter rule: the whole default, keeping what model code wrote since
                        torch.manual_seed(self._seed())
                        done = list(params.values())
                        written = [(p, p.detach().clone()) for p in done if p._version != self.versions.get(id(p))]
                        reset(module)
                        for param, value in written:
                            param.copy_(value)
            finally:
                self.materializing = False
            for param in done:
                self.skipped.pop(storage_key(param), None)
                self.ctx.pending.pop(id(param), None)  # it holds torch's default now, not garbage
        for key in filled:
            self.skipped.pop(key, None)

    def _seed(self) -> int:
        """Seeds for the draws that materialize skipped defaults: fixed by torch's initial seed, never
        taken from the global stream (build leaves it alone)."""
        self.draws = getattr(self, "draws", 0) + 1
        return (torch.initial_seed() * 1_000_003 + self.draws) % 2**63

    def defer(self, func: Any, target: Any, args: Any, kwargs: dict[str, Any]) -> bool:
        """Tape ``func(*args, **kwargs)``, a random fill of ``target``, until its values are read.

        Any tensor, not only parameters: ``nn.Parameter(torch.empty(n).normal_())`` fills before the
        tensor is a parameter. The tapes hold their tensors, so a storage is never freed and reused.
        """
        if self.materializing or not isinstance(target, torch.Tensor):
            return False
        key = storage_key(target)
        if key <= 0:
            return False
        self._flush_read(func, args[1:], kwargs, key)
        self.taped.add(key)
        self.ctx.fills.append((target, func, tuple(args), dict(kwargs)))
        return True

    def _flush_read(self, func: Any, args: Any, kwargs: dict[str, Any], own: int) -> None:
        read = {k for k in map(storage_key, _tensors(args, kwargs)) if k in self.taped and k != own}
        if read:
            self._flush(read)

    def _flush(self, keys: set[int]) -> None:
        """Run the deferred ops on these storages now, in order, and stop deferring them."""
        kept = []
        with torch.no_grad():
            for fill in self.ctx.fills:
                if storage_key(fill[0]) in keys:
                    fill[1](*fill[2], **fill[3])
                else:
                    kept.append(fill)
        self.ctx.fills[:] = kept
        self.taped -= keys


_NOT_VALUES = frozenset({"requires_grad_", "retain_grad", "share_memory_", "rename_", "detach_", "__get__"})
"""In-place by name but not on values (and attribute reads): never taped, never a read."""

_OVERWRITES = frozenset({"zero_", "fill_", "copy_", "__setitem__", "constant_", "zeros_", "ones_", "eye_", "dirac_"})
"""In-place writes that do not read the values they overwrite."""

_METADATA = frozenset({
    "__get__", "dim", "size", "numel", "nelement", "stride", "storage_offset", "untyped_storage", "data_ptr",
    "element_size", "is_contiguous", "is_floating_point", "is_complex", "__len__", "__getitem__", "detach",
    "view", "view_as", "reshape", "t", "transpose", "permute", "unsqueeze", "squeeze", "flatten", "narrow",
    "select", "unbind", "chunk", "split", "expand", "as_strided", "__hash__",
})  # fmt: skip
"""Ops that read a tensor's metadata or give a view of it, not its values (a copy is caught after the call)."""


class DefaultDtype(TorchFunctionMode):
    """``dtype`` as the default floating dtype of the tensors created in this thread, for the block only.

    torch's default dtype is process-wide (``torch.set_default_dtype``): setting it would change layers
    other threads build meanwhile. This mode gives the factories that would take the default floating
    dtype ``dtype`` instead, as ``torch.device(...)`` does for devices.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _FLOAT_FACTORIES and kwargs.get("dtype") is None:
            kwargs["dtype"] = self.dtype
        elif func in _INFERRING_FACTORIES and kwargs.get("dtype") is None:
            result = func(*args, **kwargs)
            if isinstance(result, torch.Tensor) and result.dtype == torch.get_default_dtype():
                return func(*args, **kwargs, dtype=self.dtype)  # made again: a float64 value keeps its digits
            return result
        return func(*args, **kwargs)


_FLOAT_FACTORIES = frozenset({
    torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.eye, torch.empty_strided,
    torch.linspace, torch.logspace,
})  # fmt: skip
"""Factories whose result has the default floating dtype unless told otherwise."""

_INFERRING_FACTORIES = frozenset({torch.full, torch.arange, torch.tensor, torch.as_tensor, torch.range})
"""Factories that infer the dtype from their values (an integer ``arange`` stays int64)."""


def _in_deepcopy() -> bool:
    """Whether a ``__deepcopy__`` (Parameter's, Tensor's) is among the few frames above the mode."""
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_code.co_name == "__deepcopy__":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _tensors(args: Any, kwargs: dict[str, Any]) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def storage_key(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # meta, or a tensor subclass without storage
        return -1
