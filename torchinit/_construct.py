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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from torchinit._plan import Step
from torchinit._reinit import prepare
from torchinit._report import InitReport
from torchinit._roles import NORMS
from torchinit._schemes import AnyScheme, LegacyScheme, Override, resolve_scheme
from torchinit._types import InitError

M = TypeVar("M", bound=nn.Module)


@dataclass
class _Context:
    scheme: AnyScheme | None  # None: skip every default draw (build)
    generator: torch.Generator | None = None
    pending: dict[int, torch.Tensor] = field(default_factory=dict)  # skipped parameters, by id

    def mark(self, module: nn.Module) -> None:
        for param in module._parameters.values():
            if param is not None:
                self.pending[id(param)] = param


_local = threading.local()


def _stack() -> list[_Context]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    stack: list[_Context] = _local.stack
    return stack


def current() -> _Context | None:
    """This thread's innermost construction context, if any."""
    stack = _stack()
    return stack[-1] if stack else None


def apply_own(module: nn.Module, ctx: _Context) -> None:
    """What a wrapped reset does under a context: skip (and remember) or apply the scheme to own params."""
    if ctx.scheme is None:
        ctx.mark(module)
        return
    plan = prepare(module, ctx.scheme, generator=ctx.generator, own_only=True)
    plan.run(ctx.generator, warn=False)


def _wrap_reset(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reset(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None or isinstance(ctx.scheme, LegacyScheme):
            return original(self, *args, **kwargs)
        apply_own(self, ctx)
        return None

    reset.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return reset


def _wrap_stack_init(original: Callable[..., None]) -> Callable[..., None]:
    # TransformerEncoder/Decoder deep-copy one prototype layer. Under a scheme the copies get
    # independent draws (as reinit would give them); under build() they are pending like the prototype.
    @functools.wraps(original)
    def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        ctx = current()
        if ctx is None or isinstance(ctx.scheme, LegacyScheme):
            return
        for layer in list(self.layers)[1:]:  # type: ignore[arg-type]
            for module in layer.modules():
                if ctx.scheme is None:
                    ctx.mark(module)
                elif any(p is not None for p in module._parameters.values()):
                    apply_own(module, ctx)

    init.__torchinit_wrapped__ = original  # type: ignore[attr-defined]
    return init


_RESETS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "reset_parameters"),
    (nn.Bilinear, "reset_parameters"),
    (nn.modules.conv._ConvNd, "reset_parameters"),
    (nn.Embedding, "reset_parameters"),
    (nn.EmbeddingBag, "reset_parameters"),
    (nn.RNNBase, "reset_parameters"),
    (nn.RNNCellBase, "reset_parameters"),
    (nn.PReLU, "reset_parameters"),
    (nn.MultiheadAttention, "_reset_parameters"),
    (nn.Transformer, "_reset_parameters"),
    *((norm, "reset_parameters") for norm in NORMS),
)
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Wrap torch's reset methods once (idempotent, thread-safe). Without a context they behave as before."""
    global _installed
    with _install_lock:
        if _installed:
            return
        for cls, name in _RESETS:
            method = cls.__dict__[name]
            if not hasattr(method, "__torchinit_wrapped__"):
                setattr(cls, name, _wrap_reset(method))
        for cls in (nn.TransformerEncoder, nn.TransformerDecoder):
            init = cls.__dict__["__init__"]
            if not hasattr(init, "__torchinit_wrapped__"):
                cls.__init__ = _wrap_stack_init(init)  # type: ignore[method-assign]
        _installed = True


@contextlib.contextmanager
def _pushed(ctx: _Context) -> Iterator[_Context]:
    install()
    stack = _stack()
    stack.append(ctx)
    try:
        yield ctx
    finally:
        stack.pop()


@contextlib.contextmanager
def default_scheme(scheme: str | AnyScheme, *, generator: torch.Generator | None = None) -> Iterator[None]:
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
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InitError(f"generator must be a torch.Generator or None; got generator={generator!r}.")
    with _pushed(_Context(resolved, generator)):
        yield


def build(
    factory: Callable[[], M],
    scheme: str | AnyScheme = "kaiming_relu",
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
    resolve_scheme(scheme)  # fail on a bad name before constructing anything
    ctx = _Context(None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_pushed(ctx))
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
        written: set[int] = set()
        for step in steps:
            if step.action.kind == "skip" and step.copy_from is None:
                continue
            target = step.target
            if target.parametrized:
                written |= {id(p) for p in target.owner.parametrizations[target.name].parameters()}  # type: ignore[index, union-attr]
            else:
                written.add(id(target.tensor))
        return [
            f"{path} (shape {tuple(param.shape)}) had its default init skipped but the scheme does not write "
            "it, so it would hold uninitialized memory; add a rule or an Override that writes it"
            for path, param in model.named_parameters(remove_duplicate=False)
            if id(param) in ctx.pending and id(param) not in written
        ]

    plan = prepare(model, scheme, generator=generator, strict=strict, overrides=overrides, check=unwritten, seed=seed)
    return model, plan.run(generator, seed=seed, threads=threads)
