"""Layer classes whose reset_parameters applies a scheme: SchemeMixin and with_scheme()."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import nn

from torchinit._api.context import Context, current
from torchinit._api.patches import apply_own
from torchinit._api.reinit import refuse_data_schemes
from torchinit._schemes.plan import uncovered_message
from torchinit._schemes.registry import BaseScheme, Call, SchemeLike, get_scheme, list_schemes, resolve_scheme
from torchinit._types import InitError, UncoveredParameterWarning, warn_at_caller

M = TypeVar("M", bound=nn.Module)


class SchemeMixin:
    """Put first in the bases of a torch layer to make its ``reset_parameters`` apply ``init_scheme``.

    The layer's constructor calls ``reset_parameters``, which now applies the scheme to the layer's
    own parameters (true fans, exact gains) with no torch default drawn first; every later
    ``reset_parameters()`` does the same. Under `torchinit.build` the draw is deferred like any
    other layer's. The result is a true subclass: ``isinstance`` holds and ``state_dict`` keys are
    unchanged.

    Example:
        >>> class Conv2d(SchemeMixin, nn.Conv2d):
        ...     init_scheme = "kaiming_relu"
        >>> conv = Conv2d(64, 64, 3, groups=64)          # depthwise: true fan_in 9
        >>> isinstance(conv, nn.Conv2d), round(conv.weight.std().item() / (2 / 9) ** 0.5, 1)
        (True, 1.0)
    """

    init_scheme: ClassVar[SchemeLike] = "kaiming_relu"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:  # a layer of the user's own: it may register parameters after reset_parameters ran
            cls.__init__ = _checked_init(init)  # type: ignore[method-assign]

    def reset_parameters(self) -> None:
        """Apply ``init_scheme`` to this layer's own parameters (torch's RNG)."""
        module: nn.Module = self  # type: ignore[assignment]
        ctx = current()
        if ctx is not None and ctx.scheme is None:  # inside build(): defer, like every other layer
            apply_own(module, ctx)
            return
        # during construction the constructor warns once, at its end, of every parameter no rule covers
        apply_own(module, Context(resolve_scheme(type(self).init_scheme)), warn=id(self) not in _constructing())


_LOCAL = threading.local()


def _constructing() -> set[int]:
    """Ids of the SchemeMixin layers this thread is constructing."""
    ids: set[int] | None = getattr(_LOCAL, "ids", None)
    if ids is None:
        ids = _LOCAL.ids = set()
    return ids


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that, once the outermost constructor returns, warns (`UncoveredParameterWarning`, at the line
    that constructed the layer) of the layer's own parameters no rule of its scheme covers: a raw
    ``nn.Parameter`` registered after ``super().__init__()`` never met the scheme, and would pass silently."""

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        constructing = _constructing()
        if id(self) in constructing:  # super().__init__() of a subclass's constructor
            init(self, *args, **kwargs)
            return
        constructing.add(id(self))
        try:
            init(self, *args, **kwargs)
        finally:
            constructing.discard(id(self))
        _warn_uncovered(self)

    return __init__


def _warn_uncovered(layer: nn.Module) -> None:
    ctx = current()
    own = [p for p in layer._parameters.values() if p is not None]
    if (ctx is not None and ctx.scheme is None) or any(p.is_meta for p in own):
        return  # build() plans (and warns for) the whole model; nothing is drawn on the meta device
    plan = resolve_scheme(type(layer).init_scheme).plan(layer, Call(own_only=True))  # type: ignore[attr-defined]
    if plan.uncovered:
        warn_at_caller(UncoveredParameterWarning(uncovered_message(plan.uncovered)))


_CACHE: dict[tuple[type[nn.Module], BaseScheme], type[nn.Module]] = {}
_LOCK = threading.Lock()


def _rebuild(base: type[nn.Module], scheme: SchemeLike) -> nn.Module:
    # pickle then restores the instance's state through nn.Module.__setstate__
    cls = with_scheme(base, scheme)
    return cls.__new__(cls)


def _pickled(scheme: BaseScheme) -> SchemeLike:
    """How a pickle names ``scheme``: its registered name when it is a registered scheme (a recipe such as
    ``gpt2`` holds local functions that cannot be pickled; its name can), else the scheme object itself."""
    return next((name for name in list_schemes() if get_scheme(name) is scheme), scheme)


def with_scheme(cls: type[M], scheme: SchemeLike) -> type[M]:
    """A subclass of the layer class ``cls`` whose ``reset_parameters`` applies ``scheme``.

    ``KConv2d = with_scheme(nn.Conv2d, "kaiming_relu")`` is a true subclass (``isinstance`` holds,
    ``state_dict`` keys unchanged). The same (class, scheme) pair always gives the same class, and its
    instances pickle and deepcopy (they are rebuilt through this function), alone or inside a model: a
    registered scheme (``"gpt2"``, even given as the object) travels by its name, another scheme object
    by pickling it.

    Raises:
        InitError: ``cls`` is not an nn.Module subclass with ``reset_parameters``, or an unknown scheme.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and hasattr(cls, "reset_parameters")):
        raise InitError(f"cls must be an nn.Module subclass with reset_parameters; got cls={cls!r}.")
    resolved = resolve_scheme(scheme)
    refuse_data_schemes(scheme, resolved)
    with _LOCK:
        made = _CACHE.get((cls, resolved))
        if made is None:

            def __reduce_ex__(self: nn.Module, protocol: Any) -> Any:  # noqa: N807
                return (_rebuild, (cls, _pickled(resolved)), self.__getstate__())  # type: ignore[no-untyped-call]

            name = f"{cls.__name__}"
            made = type(
                name,
                (SchemeMixin, cls),
                {"init_scheme": resolved, "__module__": __name__, "__qualname__": f"with_scheme({cls.__name__})",
                 "__reduce_ex__": __reduce_ex__},
            )  # fmt: skip
            _CACHE[cls, resolved] = made
    return made  # type: ignore[return-value]
