"""Schemes at construction time: a thread-local scheme context and build() without double init.

torch's layers draw their defaults in ``reset_parameters`` (``_reset_parameters`` for attention and
Transformer), called from ``__init__``. Those methods are wrapped once, on first use; the wrapper
reads this thread's innermost context: none (torch's behaviour), a scheme (applied to the module's
own parameters instead of torch's draws), or "skip" (no draws at all; build() initializes later).
Other threads see no context and behave as torch does.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchinit._context import Context, current, pushed
from torchinit._draw import write
from torchinit._layers import default_actions, describe, registered, resets
from torchinit._plan import Step
from torchinit._registry import SchemeLike, resolve_scheme, scheme_name
from torchinit._reinit import apply_own, check_threads, prepare, refuse_data_schemes
from torchinit._report import InitReport
from torchinit._types import InitError, SchemeOverwrittenWarning

if TYPE_CHECKING:
    from torchinit._schemes import Override

M = TypeVar("M", bound=nn.Module)


def _wrap_reset(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reset(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None:
            ctx = self.__dict__.pop("_torchinit_lazy", None)  # a lazy layer made under default_scheme
            if ctx is None:
                return original(self, *args, **kwargs)
        if ctx.scheme is not None and ctx.scheme.torch_default:
            return original(self, *args, **kwargs)
        if ctx.scheme is None and ctx.deferrer is not None:
            ctx.deferrer.note_skipped(self, original)
        apply_own(self, ctx)
        return None

    reset.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return reset


def _wrap_clones_init(original: Callable[..., None]) -> Callable[..., None]:
    # Stacks that deep-copy one prototype layer (TransformerEncoder/Decoder). Under a scheme the copies
    # get independent draws (as reinit would give them); under build() they are pending like the prototype.
    @functools.wraps(original)
    def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        ctx = current()
        clones = describe(self).clones
        if ctx is None or clones is None or (ctx.scheme is not None and ctx.scheme.torch_default):
            return
        for layer in list(getattr(self, clones))[1:]:
            for module in layer.modules():
                if ctx.scheme is None:
                    ctx.mark(module)
                elif any(p is not None for p in module._parameters.values()):
                    apply_own(module, ctx)

    init.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return init


def _wrap_lazy_init(original: Callable[..., None]) -> Callable[..., None]:
    # A lazy layer draws when its first forward materializes it, usually after the default_scheme block:
    # it remembers the scheme it was made under and applies it then, once.
    @functools.wraps(original)
    def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        ctx = current()
        if ctx is not None and ctx.scheme is not None and not ctx.scheme.torch_default:
            self.__dict__["_torchinit_lazy"] = Context(ctx.scheme, ctx.generator)

    init.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return init


_install_lock = threading.Lock()


_RANDOM_FILLS = frozenset({
    "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_", "log_normal_", "cauchy_",
    # torch.nn.init's fills that reach a mode as themselves (the others arrive as the tensor methods inside)
    "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_",
    "sparse_",
})  # fmt: skip
"""Random in-place fills, by name: Hugging Face wraps torch.nn.init's functions, so identity would miss them."""


class _SkipParameterFills(TorchFunctionMode):
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
        key = _storage(target) if in_place and isinstance(target, torch.Tensor) else None
        if key is not None and key in self.taped:
            self._flush_read(func, args[1:], kwargs, key)
            self.ctx.fills.append((target, func, tuple(args), dict(kwargs)))
            return None if name == "__setitem__" else target
        watched = {k for k in map(_storage, _tensors(args, kwargs)) if k in self.taped or k in self.skipped}
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
        if isinstance(result, torch.Tensor) and _storage(result) not in watched:  # it copied after all
            self._materialize(watched)
            result = func(*args, **kwargs)
        return result

    def note_skipped(self, module: nn.Module, reset: Callable[..., Any]) -> None:
        """``module``'s default ``reset`` was skipped: if model code reads its parameters while it is being
        built (a buffer computed from a weight), the default runs for real first."""
        for param in module._parameters.values():
            if param is not None and (key := _storage(param)) > 0:
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
            read = [name for name, p in params.items() if _storage(p) == key]
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
                self.skipped.pop(_storage(param), None)
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
        key = _storage(target)
        if key <= 0:
            return False
        self._flush_read(func, args[1:], kwargs, key)
        self.taped.add(key)
        self.ctx.fills.append((target, func, tuple(args), dict(kwargs)))
        return True

    def _flush_read(self, func: Any, args: Any, kwargs: dict[str, Any], own: int) -> None:
        read = {k for k in map(_storage, _tensors(args, kwargs)) if k in self.taped and k != own}
        if read:
            self._flush(read)

    def _flush(self, keys: set[int]) -> None:
        """Run the deferred ops on these storages now, in order, and stop deferring them."""
        kept = []
        with torch.no_grad():
            for fill in self.ctx.fills:
                if _storage(fill[0]) in keys:
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


_UNDISPATCHED_FILLS = (
    "trunc_normal_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
    "sparse_",
)
"""torch.nn.init's random fills that do not dispatch to a mode as themselves (torch's trunc_normal_ even reads
its draws to reject some): install() wraps them so that build can defer them whole."""


def _wrap_init_fill(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    @functools.wraps(original)
    def fill(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        ctx = current()
        if (
            ctx is not None
            and ctx.deferrer is not None
            and ctx.deferrer.defer(original, tensor, (tensor, *args), kwargs)
        ):
            return tensor
        return original(tensor, *args, **kwargs)

    fill.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return fill


class _DefaultDtype(TorchFunctionMode):
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


def _storage(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # meta, or a tensor subclass without storage
        return -1


def install() -> None:
    """Wrap the default-draw methods of every described layer type (idempotent, thread-safe).

    Also wraps torch.nn.init's fills that never reach a TorchFunctionMode as themselves
    (`_UNDISPATCHED_FILLS`), so build can defer them. Without a context the wrapped methods and
    functions behave exactly as before. Types described after the first call are
    wrapped on the next one.
    """
    with _install_lock:
        lazy = nn.modules.lazy.LazyModuleMixin
        if not hasattr(lazy.__init__, "__torchinit_wrapped__"):
            lazy.__init__ = _wrap_lazy_init(lazy.__init__)  # type: ignore[method-assign]
        for name in _UNDISPATCHED_FILLS:
            function = getattr(nn.init, name)
            if not hasattr(function, "__torchinit_wrapped__"):
                setattr(nn.init, name, _wrap_init_fill(function))
        for cls, name in resets():
            method = cls.__dict__[name]
            if not hasattr(method, "__torchinit_wrapped__"):
                setattr(cls, name, _wrap_reset(method))
        for cls, rule in registered().items():
            init = cls.__dict__.get("__init__")
            if rule.clones is not None and init is not None and not hasattr(init, "__torchinit_wrapped__"):
                cls.__init__ = _wrap_clones_init(init)  # type: ignore[method-assign]


@contextlib.contextmanager
def _pushed(ctx: Context) -> Iterator[Context]:
    install()
    with pushed(ctx):
        yield ctx


@contextlib.contextmanager
def default_scheme(scheme: SchemeLike, *, generator: torch.Generator | None = None) -> Iterator[None]:
    """Make torch.nn modules constructed in this block (in this thread) use ``scheme`` instead of torch's default.

    torch's default draws are skipped, not overwritten: each layer's ``reset_parameters`` applies the
    scheme to its own parameters, with true fans. Contexts nest (the innermost wins), other threads
    are unaffected, and after the block (also after an exception) modules behave as torch's again.
    Stacked Transformer layers get independent draws. Modules that initialize parameters in their
    own ``__init__`` with plain tensor ops keep doing so. Path-based overrides see local names
    (``"weight"``) here, since a module being constructed has no place in a model yet.

    Args:
        scheme: a registered name or a `Scheme`; ``"legacy"`` gives torch's own draws.
        generator: the RNG for the draws; torch's default generator when None.

    Example:
        >>> with default_scheme("kaiming_relu"):
        ...     layer = nn.Linear(512, 256)
        >>> round(layer.weight.std().item() / (2 / 512) ** 0.5, 1), layer.bias.abs().max().item()
        (1.0, 0.0)
    """
    resolved = resolve_scheme(scheme)
    refuse_data_schemes(scheme, resolved)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InitError(f"generator must be a torch.Generator or None; got generator={generator!r}.")
    ctx = Context(resolved, generator)
    with _pushed(ctx):
        yield
    overwritten = sum(1 for param, version in ctx.written if param._version != version)
    if overwritten:
        warnings.warn(
            SchemeOverwrittenWarning(
                f"{overwritten} of the {len(ctx.written)} parameters that default_scheme({scheme!r}) wrote were "
                "overwritten afterwards by the model's own init code (torchvision's and timm's init loops and Hugging "
                "Face's post_init re-initialize their models), so the scheme did not take effect there. Use "
                "torchinit.build(lambda: Model(...), scheme) or torchinit.reinit(model, scheme) after construction."
            ),
            stacklevel=3,
        )


def build(
    factory: Callable[[], M],
    scheme: SchemeLike = "kaiming_relu",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
    overrides: Sequence[Override] = (),
    strict: bool = False,
    seed: int | None = None,
    threads: int | None = None,
) -> tuple[M, InitReport]:
    """Construct ``factory()`` with torch's default init skipped, on ``device`` in ``dtype``, then apply ``scheme``.

    Every parameter is allocated once, directly on the target device (no meta round trip, so
    buffers computed in ``__init__`` such as positional tables, rotary caches and masks keep their
    values), never drawn twice, and never held in two copies. Equivalent to
    ``reinit(factory(), scheme)`` in distribution, and for ``"legacy"`` bit for bit from the same
    RNG state (for models built in registration order).

    Args:
        factory: a zero-argument callable returning the model (``lambda: GPT(config)``).
        scheme: a registered name or a `Scheme`.
        device: where to allocate (``"cuda"``); the current default when None.
        dtype: a floating dtype for the parameters; the current default when None.
        generator: the RNG for the scheme's draws.
        overrides: `Override` values layered on the scheme.
        strict: raise on parameters no rule covers, as in `reinit`.
        seed: keyed, parallel generation as in `reinit` (not with ``generator`` or ``legacy``).
        threads: worker threads for keyed fills.

    Returns:
        The model and the `InitReport` of the scheme pass.

    Raises:
        InitError: a parameter whose default draw was skipped but which the scheme does not write
            (it would hold uninitialized memory), named with its path and shape; a meta device; a
            factory that returns no module.

    Example:
        >>> model, report = build(lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU()), "kaiming_relu")
        >>> report["0.weight"].std == (2 / 64) ** 0.5
        True
    """
    if isinstance(factory, nn.Module):
        raise InitError(
            f"build takes a factory that constructs the model, not a model; got the module {type(factory).__name__}. "
            f"Pass build(lambda: {type(factory).__name__}(...), scheme), or reinit(model, scheme) for a built one."
        )
    if not callable(factory):
        raise InitError(f"factory must be a zero-argument callable returning an nn.Module; got {factory!r}.")
    check_threads(threads)
    if device is not None and torch.device(device).type == "meta":
        raise InitError("device must hold real storage to be initialized; got device='meta'.")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InitError(f"dtype must be a floating-point torch.dtype; got dtype={dtype!r}.")
    resolved = resolve_scheme(scheme)  # fail on a bad name before constructing anything
    refuse_data_schemes(scheme, resolved)
    ctx = Context(None)
    rng = torch.get_rng_state() if seed is not None else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(_pushed(ctx))
        ctx.deferrer = stack.enter_context(_SkipParameterFills(ctx))
        stack.callback(setattr, ctx, "deferrer", None)  # no ctx <-> mode cycle keeping the model alive
        if device is not None:
            stack.enter_context(torch.device(device))
        if dtype is not None:
            stack.enter_context(_DefaultDtype(dtype))
        model = factory()
    if not isinstance(model, nn.Module):
        raise InitError(f"factory must return an nn.Module; got {type(model).__name__}.")
    if dtype is not None:  # parameters made with an explicit dtype=torch.get_default_dtype() (HF does)
        with torch.no_grad():
            for param in model.parameters():
                if param.is_floating_point() and param.dtype != dtype:
                    param.data = param.data.to(dtype)

    def unwritten(steps: list[Step]) -> list[str]:
        # A skipped default draw must be replaced by the scheme, or the parameter holds garbage.
        written = _written(steps)
        return [
            f"{path} (shape {tuple(param.shape)}) had its default init skipped but the scheme does not write "
            "it, so it would hold uninitialized memory; add a rule or an Override that writes it"
            for path, param in model.named_parameters(remove_duplicate=False)
            if id(param) in ctx.pending and id(param) not in written
        ]

    resolved, _, _, plan = prepare(
        model, resolved, generator=generator, strict=strict, overrides=overrides, check=unwritten, seed=seed
    )
    written = _written(plan.steps)
    storages = {_storage(p) for p in model.parameters() if id(p) in written}
    with torch.no_grad():
        for target, func, args, kwargs in ctx.fills:  # what the model's code drew for what the scheme leaves alone
            if id(target) not in written and _storage(target) not in storages:
                func(*args, **kwargs)
    if rng is not None:
        torch.set_rng_state(rng)  # with seed=, construction leaves torch's global RNG as it found it
    return model, plan.run(scheme_name(scheme, resolved), generator, seed=seed, threads=threads)


def _written(steps: list[Step]) -> set[int]:
    """Ids of the parameters a plan writes (a parametrization's originals count for its weight)."""
    written: set[int] = set()
    for step in steps:
        if step.action.kind in ("skip", "keep") and step.copy_from is None:
            continue
        target = step.target
        if target.parametrized:
            written |= {id(p) for p in target.owner.parametrizations[target.name].parameters()}  # type: ignore[index, union-attr]
        else:
            written.add(id(target.tensor))
    return written
