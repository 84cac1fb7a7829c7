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
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchinit._context import Context, current, pushed
from torchinit._layers import describe, registered, resets
from torchinit._plan import Step
from torchinit._registry import SchemeLike, resolve_scheme, scheme_name
from torchinit._reinit import apply_own, prepare, refuse_data_schemes
from torchinit._report import InitReport
from torchinit._types import InitError, SchemeOverwrittenWarning

if TYPE_CHECKING:
    from torchinit._schemes import Override

M = TypeVar("M", bound=nn.Module)


def _wrap_reset(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reset(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None or (ctx.scheme is not None and ctx.scheme.torch_default):
            return original(self, *args, **kwargs)
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


_install_lock = threading.Lock()


_RANDOM_FILLS = frozenset({
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.Tensor.bernoulli_,
    torch.Tensor.exponential_, torch.Tensor.geometric_, torch.Tensor.log_normal_, torch.Tensor.cauchy_,
})  # fmt: skip


class _SkipParameterFills(TorchFunctionMode):
    """While build() constructs: random in-place fills of parameters are recorded, not run.

    Catches what model code draws after the layers' own defaults (Hugging Face ``_init_weights``,
    torchvision's and timm's init loops), whether it calls ``torch.nn.init`` or ``param.normal_()`` /
    ``param.data.normal_()``. The scheme then draws once; a recorded fill of a parameter the scheme
    does not write is replayed, so such values stay what the model's code gives them.
    """

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _RANDOM_FILLS and args and isinstance(args[0], torch.Tensor):
            target = args[0]
            if isinstance(target, nn.Parameter) or _storage(target) in self.ctx.storages:
                self.ctx.fills.append((target, func, tuple(args), dict(kwargs)))
                return target
        return func(*args, **kwargs)


def _storage(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # meta, or a tensor subclass without storage
        return -1


def _record_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    # A global registration hook, a no-op outside build(): remembers where parameters' storage is, so
    # fills through `.data` views are recognized.
    ctx = current()
    if ctx is not None and ctx.scheme is None and param is not None:
        ctx.storages.add(_storage(param))


_hook_installed = False


def install() -> None:
    """Wrap the default-draw methods of every described layer type (idempotent, thread-safe).

    Without a context the wrapped methods behave exactly as before. Types described after the first
    call are wrapped on the next one.
    """
    global _hook_installed
    with _install_lock:
        if not _hook_installed:
            nn.modules.module.register_module_parameter_registration_hook(_record_parameter)
            _hook_installed = True
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
    if not callable(factory):
        raise InitError(f"factory must be a zero-argument callable returning an nn.Module; got {factory!r}.")
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
        stack.enter_context(_SkipParameterFills(ctx))
        if device is not None:
            stack.enter_context(torch.device(device))
        if dtype is not None:
            previous = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            stack.callback(torch.set_default_dtype, previous)
        model = factory()
    if not isinstance(model, nn.Module):
        raise InitError(f"factory must return an nn.Module; got {type(model).__name__}.")

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
