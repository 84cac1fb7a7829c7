"""reinit: resolve the scheme once, let it plan every write, validate the whole plan, then write."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from torchinit._model.transaction import Undo, guarded, hold_interrupts
from torchinit._model.write import Step
from torchinit._schemes.plan import Plan, only_part
from torchinit._schemes.registry import BaseScheme, Call, SchemeLike, resolve_scheme, scheme_name
from torchinit._schemes.report import InitReport
from torchinit._types import InitError, check_bool, check_generator, check_int

if TYPE_CHECKING:
    from torchinit._schemes.overrides import Override


def unwrap(module: nn.Module) -> nn.Module:
    """The model a wrapper stands for (``torch.compile``'s ``OptimizedModule``, ``nn.DataParallel``,
    ``DistributedDataParallel``, nested): its parameters are shared, and paths and keyed streams then use
    the model's own names."""
    return unwrapped(module)[0]


def unwrapped(module: nn.Module) -> tuple[nn.Module, str]:
    """`unwrap`'s model, and the prefix the wrappers put before its paths in ``state_dict`` names
    (``"module."`` for ``nn.DataParallel``, ``"module._orig_mod."`` for one around a compiled model)."""
    prefix = ""
    while True:
        inner = getattr(module, "_orig_mod", None) if type(module).__name__ == "OptimizedModule" else None
        if isinstance(inner, nn.Module):
            module, prefix = inner, prefix + "_orig_mod."
        elif isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module, prefix = module.module, prefix + "module."
        else:
            return module, prefix


def check_threads(threads: object) -> None:
    """``threads`` is None or a positive int."""
    check_int("threads", threads, minimum=1, optional=True)


def prepare(
    module: nn.Module,
    scheme: SchemeLike,
    *,
    generator: torch.Generator | None = None,
    strict: bool = False,
    overrides: Sequence[Override] = (),
    seed: int | None = None,
    data: object = None,
    check: Callable[[list[Step]], list[str]] | None = None,
    only: str | Sequence[str] | None = None,
) -> tuple[BaseScheme, Call, nn.Module, Plan]:
    """Check the arguments, resolve the scheme (once), plan and validate; nothing is written.

    Raises:
        InitError: listing every problem, before anything is written.
    """
    if seed is not None:
        check_int("seed", seed, minimum=0)
        if generator is not None:
            raise InitError("pass either seed= (keyed, order-free streams) or generator=, not both.")
    if not isinstance(module, nn.Module):
        raise InitError(f"module must be an nn.Module; got {type(module).__name__}.")
    resolved = resolve_scheme(scheme)
    if not isinstance(overrides, (list, tuple)):
        raise InitError(
            f"overrides must be a list or tuple of Override; got overrides={overrides!r}. Wrap one in a list: "
            "overrides=[Override(...)]."
        )
    check_generator(generator)
    if data is not None and not (resolved.uses_data or resolved.takes_data):
        raise InitError(f"data= is only used by the lsuv scheme; got scheme={scheme!r}.")
    root, wrapper = unwrapped(module)
    call = Call(overrides=tuple(overrides), seed=seed, data=data, generator=generator, wrapper=wrapper)
    plan = resolved.plan(root, call)
    if only is not None:
        plan = only_part(plan, only, wrapper)
    plan.check(strict=strict, extra=check, generator=generator, overrides_must_match=True, seed=seed)
    resolved.validate(root, call)
    return resolved, call, root, plan


def reinit(
    module: nn.Module,
    scheme: SchemeLike = "kaiming_relu",
    *,
    generator: torch.Generator | None = None,
    strict: bool = False,
    overrides: Sequence[Override] = (),
    seed: int | None = None,
    threads: int | None = None,
    data: object = None,
    atomic: bool = True,
    only: str | Sequence[str] | None = None,
) -> InitReport:
    r"""Initialize every parameter of ``module`` in place by ``scheme``, with the true fans of each layer.

    Plans every write first and validates the whole plan (lazy or meta parameters, uncovered
    parameters under ``strict``, dtypes); on any error nothing has been written. Then writes in
    module order. Parameter identity, tying, dtype, device, ``requires_grad`` and memory format are
    kept, and nothing enters autograd. Tied parameters are written once and stay tied.
    Parametrized weights (weight_norm, spectral_norm, ...) are set through their ``right_inverse``,
    so the effective weight follows the scheme. A ``torch.compile``\ d module is reinitialized
    through the module it wraps. Norm layers' running statistics are reset.

    Args:
        module: the model.
        scheme: a registered name (``"kaiming_relu"``, ``"legacy"``, see `list_schemes`) or a
            scheme object (`Scheme`, ``LegacyScheme``, ``LSUVScheme``, any ``torchinit.extend.BaseScheme``).
        generator: the RNG for every draw; torch's default generator when None.
        strict: raise, naming each path and shape, when a parameter has no rule, instead of
            warning and leaving it untouched.
        overrides: `Override` values layered on the scheme (not with ``legacy``).
        seed: keyed generation: each parameter's values become a function of ``seed`` and its
            qualified name only, the same whatever the walk order, the other modules, the number of
            threads, the sharding (a DTensor / FSDP2 shard computes only its own elements) or the device
            (see ``docs/guides/distributed.md``). Blocks are filled in parallel. Not with ``generator``
            or ``legacy``.
        threads: worker threads for keyed fills; ``torch.get_num_threads()`` when None. While they run,
            torch's intra-op thread count is 1 (process-wide; restored afterwards), so the workers do not
            oversubscribe the cores.
        data: for ``"lsuv"``: the batch the layers are calibrated on.
        atomic: where a write can still fail after validation (a parametrization's ``right_inverse``,
            orthogonal draws, DTensor writes, an LSUV pass), back up each tensor before writing it, so
            that any failure, Ctrl-C included, leaves the model and the RNG states as they were. Costs
            up to one copy of the written parameters while the call runs; plans of plain draws never
            copy. False skips the copies (a failure then may leave the model partly written). Keyed
            draws (``seed=``) of plain tensors need no copies either: their scratch buffers are all
            allocated before the first write. A Ctrl-C during plain draws is held until they are
            written (in the main thread, under Python's default SIGINT handler; a handler of your own
            is left to run).
        only: a module or parameter path (``"lm_head"``, ``"classifier.weight"``), or a list of them:
            write only the parameters under it, and reset only the norms under it; everything else is
            untouched. The plan is made on the whole model, so a new head gets the role it has there
            (the readout, not a hidden layer, as ``reinit(model.lm_head)`` would see it), its
            whole-model path in the report, and with ``seed`` the very values a whole-model call writes.
            A tied parameter is written if any of its paths is under ``only``. With torch's RNG the
            values differ from a whole-model call's (fewer draws come first).

    Returns:
        An `InitReport`: per parameter its path, shape, role, rule, fans and target std.

    Raises:
        InitError: an unknown scheme, a bad or unmatched override, an uninitialized lazy, meta or
            inference parameter, a parametrization without a working ``right_inverse``, a rule's
            index out of range, bad LSUV data, or (with ``strict``) an uncovered parameter; all found
            before the first write. The model is then bitwise unchanged, as after any later failure.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
        >>> _ = model(torch.zeros(1, 3, 8, 8))
        >>> report = reinit(model, "kaiming_relu", generator=torch.Generator().manual_seed(0))
        >>> report["0.weight"].std == (2 / 27) ** 0.5
        True
    """
    check_threads(threads)
    check_bool("atomic", atomic)
    with gc_paused():
        resolved, call, root, plan = prepare(
            module, scheme, generator=generator, strict=strict, overrides=overrides, seed=seed, data=data, only=only
        )
    passes = type(resolved).finish is not BaseScheme.finish  # a pass after the writes (LSUV's) can fail too
    undo = Undo(generator, backup=atomic and (resolved.uses_data or passes or plan.fallible))
    name = scheme_name(scheme, resolved)
    if not undo.backup:  # plain draws cannot fail once checked: a Ctrl-C during them waits for a whole model
        with hold_interrupts(), guarded(undo), gc_paused():
            report = plan.run(name, generator, seed=seed, threads=threads, undo=undo, model=root)
        if passes:  # atomic=False: a failing pass is not undone
            resolved.finish(root, report, call)
        return report
    # Backed up, anything that raises is undone: a Ctrl-C stops the writes at once (keyed writes, whose worker
    # threads cannot be stopped mid-job, hold it to their end).
    with guarded(undo):
        with hold_interrupts() if seed is not None else contextlib.nullcontext(), gc_paused():
            report = plan.run(name, generator, seed=seed, threads=threads, undo=undo, model=root)
        if passes:
            if resolved.uses_data:
                undo.save_buffers(root)  # the passes run the model: its buffers may change
            resolved.finish(root, report, call)  # interruptible: a forward pass that blocks still sees Ctrl-C
    return report


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a plan is made and written, then on again.

    Planning a model allocates a few small objects per parameter, and every so many allocations the
    collector walks every object alive, the model's modules included: on 5,000 small modules that doubled
    the time of a keyed reinit (benchmarks/bench_keyed.py). Nothing cyclic is made here; reference counting
    frees the rest as usual.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def refuse_data_schemes(scheme: SchemeLike, resolved: BaseScheme) -> None:
    """Construction-time helpers cannot run a scheme that calibrates on data."""
    if resolved.uses_data:
        raise InitError(
            f"scheme {scheme!r} calibrates on data and runs only through reinit(model, {scheme!r}, data=batch); "
            "it cannot be used while a model is being constructed."
        )
