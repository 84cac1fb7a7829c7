"""torch's default-draw methods, replaced only while a construction context is open.

`torchinit.default_scheme` and `torchinit.build` need torch's layers to ask them before drawing their
defaults. `patched()` puts wrappers in place when the first such context opens (in any thread) and puts
torch's own objects back when the last one closes, so outside those blocks torch is exactly torch:
every attribute holds the object it held before (`touched` lists them). A wrapper called with no
context in its thread (another thread constructing meanwhile) calls torch's method unchanged.

What is replaced: the default-draw method (``reset_parameters``, ...) of every registered layer type
that defines one, ``__init__`` of types whose children are deep copies of one prototype
(``TransformerEncoder``), ``LazyModuleMixin.__init__`` (a lazy layer made under a scheme applies it when
its first forward materializes it, after the block: through a hook on that instance, not a patch), and
torch.nn.init's fills that never reach a ``TorchFunctionMode`` as themselves (`UNDISPATCHED_FILLS`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from torchinit._api.context import Context, current
from torchinit._layers.rules import describe, registered, resets
from torchinit._schemes.registry import Call

UNDISPATCHED_FILLS = (
    "trunc_normal_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
    "sparse_",
)
"""torch.nn.init's random fills that do not dispatch to a mode as themselves (torch's trunc_normal_ even reads
its draws to reject some): wrapped while build may defer them whole."""


def apply_own(module: nn.Module, ctx: Context, *, warn: bool = True) -> None:
    """What a replaced default-draw method does under a context: skip (and remember), or apply the scheme
    to the module's own parameters (warning about those no rule covers unless ``warn`` is False)."""
    if ctx.scheme is None:
        ctx.mark(module)
        return
    if any(p is not None and p.is_meta for p in module._parameters.values()):
        return  # as torch's own reset on the meta device: there is nothing to draw into
    plan = ctx.scheme.plan(module, Call(own_only=True, generator=ctx.generator))
    plan.check()
    plan.run(repr(ctx.scheme), ctx.generator, warn=warn)  # warns of a raw parameter the scheme cannot set
    for step in plan.steps:  # remembered so default_scheme can tell when model code overwrites them
        if step.action.kind not in ("skip", "keep") and not step.scratch and not step.target.parametrized:
            ctx.written.append((step.target.tensor, step.target.tensor._version))


def _wrap_reset(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reset(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if ctx is None or (ctx.scheme is not None and ctx.scheme.torch_default):
            return original(self, *args, **kwargs)
        if ctx.scheme is None and ctx.deferrer is not None:
            ctx.deferrer.note_skipped(self, original)
        apply_own(self, ctx)
        return None

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

    return init


def _wrap_lazy_init(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        ctx = current()
        if ctx is not None and ctx.scheme is not None and not ctx.scheme.torch_default:
            apply_when_materialized(self, Context(ctx.scheme, ctx.generator))

    return init


def apply_when_materialized(module: nn.Module, ctx: Context) -> None:
    """A lazy layer made under a scheme applies it when its first forward materializes it (usually after the
    block, when torch is unpatched): a forward pre-hook put before torch's own lazy hook gives the instance,
    for that one call, a ``reset_parameters`` that applies the scheme; the materializing call uses it."""
    handles: list[Any] = []
    lazy = nn.modules.lazy.LazyModuleMixin.has_uninitialized_params  # after materializing, the class is Linear's

    def scheme_reset(self: nn.Module) -> None:
        if lazy(self):  # type: ignore[arg-type]
            return
        self.__dict__.pop("reset_parameters", None)
        apply_own(self, ctx)

    def before(self: nn.Module, args: Any) -> None:
        self.__dict__["reset_parameters"] = types.MethodType(scheme_reset, self)

    def after(self: nn.Module, args: Any) -> None:
        self.__dict__.pop("reset_parameters", None)
        if not lazy(self):  # type: ignore[arg-type]
            for handle in handles:
                handle.remove()

    handles.append(module.register_forward_pre_hook(before, prepend=True))
    handles.append(module.register_forward_pre_hook(after))


def _wrap_init_fill(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def fill(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        ctx = current()
        if (
            ctx is not None
            and ctx.deferrer is not None
            and ctx.deferrer.defer(original, tensor, (tensor, *args), kwargs)
        ):
            return tensor
        return original(tensor, *args, **kwargs)

    return fill


_lock = threading.Lock()
_users = 0
_replaced: dict[tuple[int, str], tuple[Any, str, Any, Any]] = {}  # (owner id, name) -> (owner, name, original, ours)


def _replace(owner: Any, name: str, original: Any, wrap: Callable[[Any], Any]) -> None:
    if (id(owner), name) not in _replaced:
        ours = wrap(original)
        setattr(owner, name, ours)
        _replaced[id(owner), name] = (owner, name, original, ours)


def _install() -> None:
    # Idempotent: a type registered while a context is open is wrapped by the next context that opens.
    lazy = nn.modules.lazy.LazyModuleMixin
    _replace(lazy, "__init__", lazy.__dict__["__init__"], _wrap_lazy_init)
    for name in UNDISPATCHED_FILLS:
        _replace(nn.init, name, getattr(nn.init, name), _wrap_init_fill)
    for cls, name in resets():
        _replace(cls, name, cls.__dict__[name], _wrap_reset)
    for cls, rule in registered().items():
        init = cls.__dict__.get("__init__")
        if rule.clones is not None and init is not None:
            _replace(cls, "__init__", init, _wrap_clones_init)


def _uninstall() -> None:
    for owner, name, original, ours in reversed(list(_replaced.values())):
        current_value = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if current_value is ours:  # another library's patch on top of ours stays its own business
            setattr(owner, name, original)
    _replaced.clear()


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """torch's default-draw methods wrapped for the block; restored when the last open block (any thread) exits."""
    global _users
    with _lock:
        _install()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _uninstall()


def touched() -> list[tuple[Any, str]]:
    """Every (owner, attribute) that `patched` replaces now: what tests compare before and after."""
    lazy = nn.modules.lazy.LazyModuleMixin
    found: list[tuple[Any, str]] = [(lazy, "__init__"), *((nn.init, n) for n in UNDISPATCHED_FILLS)]
    found += resets()
    found += [(cls, "__init__") for cls, rule in registered().items() if rule.clones and "__init__" in cls.__dict__]
    return found
