"""Schemes at construction time: `default_scheme` and `build` (construction without double init).

torch's layers draw their defaults in ``reset_parameters`` (``_reset_parameters`` for attention and
Transformer), called from ``__init__``. While one of these blocks is open those methods ask the innermost
context of the caller's thread or task (``_patches.patched``): none (torch's behaviour), a scheme (applied
to the module's own parameters instead of torch's draws), or "skip" (no draws at all; build() initializes
later). When the last block closes, torch's own methods are back in place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from torchinit._api.context import Context, pushed
from torchinit._api.defer import DefaultDtype, SkipParameterFills, storage_key
from torchinit._api.patches import patched
from torchinit._api.reinit import check_threads, prepare, refuse_data_schemes
from torchinit._model.write import Step
from torchinit._schemes.registry import SchemeLike, resolve_scheme, scheme_name
from torchinit._schemes.report import InitReport
from torchinit._types import InitError, SchemeOverwrittenWarning, check_generator, warn_at_caller

if TYPE_CHECKING:
    from torchinit._schemes.overrides import Override

M = TypeVar("M", bound=nn.Module)


@contextlib.contextmanager
def _pushed(ctx: Context) -> Iterator[Context]:
    with patched(), pushed(ctx):
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
    check_generator(generator)
    ctx = Context(resolved, generator)
    with _pushed(ctx):
        yield
    overwritten = sum(1 for param, version in ctx.written if param._version != version)
    if overwritten:
        warn_at_caller(
            SchemeOverwrittenWarning(
                f"{overwritten} of the {len(ctx.written)} parameters that default_scheme({scheme!r}) wrote were "
                "overwritten afterwards by the model's own init code (torchvision's and timm's init loops and Hugging "
                "Face's post_init re-initialize their models), so the scheme did not take effect there. Use "
                "torchinit.build(lambda: Model(...), scheme) or torchinit.reinit(model, scheme) after construction."
            )
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
        ctx.deferrer = stack.enter_context(SkipParameterFills(ctx))
        stack.callback(setattr, ctx, "deferrer", None)  # no ctx <-> mode cycle keeping the model alive
        if device is not None:
            stack.enter_context(torch.device(device))
        if dtype is not None:
            stack.enter_context(DefaultDtype(dtype))
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

    resolved, _, root, plan = prepare(
        model, resolved, generator=generator, strict=strict, overrides=overrides, check=unwritten, seed=seed
    )
    written = _written(plan.steps)
    storages = {storage_key(p) for p in model.parameters() if id(p) in written}
    with torch.no_grad():
        for target, func, args, kwargs in ctx.fills:  # what the model's code drew for what the scheme leaves alone
            if id(target) not in written and storage_key(target) not in storages:
                func(*args, **kwargs)
    if rng is not None:
        torch.set_rng_state(rng)  # with seed=, construction leaves torch's global RNG as it found it
    return model, plan.run(scheme_name(scheme, resolved), generator, seed=seed, threads=threads, model=root)


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
