"""The writer's proof: before the first write, why some planned write cannot succeed, and whether a write
can still fail after that (so that backups are taken).

`refusals` checks each action against its tensor (chunks, rows, the generator's device, values the dtype can
hold), each tensor's writability (not lazy, meta, inference-only, sparse or self-overlapping), that no two
parameters share memory unless they are one, every parametrization's ``right_inverse`` (a dry run on a copy),
and makes each distinct kind of write (type, dtype, device, action kind, keyed or not) once on a small tensor
made like the target, with the RNG states forked. `torchinit._model.write` then carries the writes out.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchinit._maths import draw as _draw
from torchinit._maths import workspace as _workspace
from torchinit._maths.distributions import check_cutoffs
from torchinit._maths.draw import DRAWN, UNWRITTEN, Action, check_draw
from torchinit._maths.keyed import KeyedWriter
from torchinit._model.walk import Target
from torchinit._model.write import Step, local_of
from torchinit._types import LAZY, InitError


def problem(target: Target, needs_values: bool) -> str | None:
    """Why this target cannot be written, or None."""
    t = target.tensor
    if isinstance(t, LAZY):
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
    if t.layout != torch.strided:
        return (
            f"{target.where} has layout {t.layout}; reinit writes dense (strided) tensors. Convert it with "
            f".to_dense() first, or skip it with Override(path={target.path!r}, skip=True)."
        )
    if not t.is_contiguous() and t.numel() > 1 and _extent(t) < t.numel() * t.element_size():
        return (
            f"{target.where} has stride {tuple(t.stride())}: its elements share memory (an expanded or as_strided "
            "view), so no write can give them different values. Give it its own storage (nn.Parameter(t.clone())), "
            f"or skip it with Override(path={target.path!r}, skip=True)."
        )
    if t.is_inference() and not torch.is_inference_mode_enabled():
        return (
            f"{target.path} ({type(target.owner).__name__}, shape {tuple(t.shape)}) was created under "
            "torch.inference_mode() and cannot be written outside it; call reinit inside torch.inference_mode(), "
            "or build the model outside it."
        )
    return None


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
"""The buffers a norm's ``reset_running_stats`` resets (torch's ``_NormBase``)."""

_TORCH_RESET = nn.modules.batchnorm._NormBase.reset_running_stats


def statistics_refusals(norms: Sequence[tuple[str, nn.Module]]) -> tuple[list[str], bool]:
    """Why the running statistics of ``norms`` (prefix, norm) cannot be reset after the writes (a buffer made
    under ``torch.inference_mode()``), and whether a reset can still fail after that: a norm with its own
    ``reset_running_stats`` (code of yours, so its norm is backed up and a failure undone)."""
    found: list[str] = []
    inference = torch.is_inference_mode_enabled()
    for prefix, norm in norms:
        for name in STATISTICS:
            buffer = norm._buffers.get(name)
            if buffer is not None and buffer.is_inference() and not inference:
                found.append(
                    f"{prefix}{name} ({type(norm).__name__}, shape {tuple(buffer.shape)}) was created under "
                    "torch.inference_mode(), and reinit resets running statistics; give it a normal tensor "
                    f"({prefix}{name} = {prefix}{name}.clone()), call reinit inside torch.inference_mode(), or "
                    f"skip the norm with Override(path={prefix + '*'!r}, skip=True)."
                )
    fallible = any(getattr(type(norm), "reset_running_stats", None) is not _TORCH_RESET for _, norm in norms)
    return found, fallible


def inverse_problem(target: Target) -> str | None:
    """A dry run of a parametrized target's ``right_inverse`` on its current value (nothing is written)."""
    plist = target.owner.parametrizations[target.name]  # type: ignore[index]
    value = target.tensor.detach()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a dry run: on copies, RNG put back
            for parametrization in reversed(list(plist)):
                parametrization = copy.deepcopy(parametrization)  # right_inverse may set state (orthogonal's base)
                inverse = getattr(parametrization, "right_inverse", None)
                if inverse is None:
                    raise NotImplementedError(f"{type(parametrization).__name__} has no right_inverse")
                value = inverse(value)
                if isinstance(value, (tuple, list)):
                    break  # a multi-tensor original: the first inverse in the chain that splits is the last
    except Exception as error:  # any failure of third-party code is the problem to report
        return (
            f"{target.path} ({type(target.owner).__name__}, parametrized by "
            f"{', '.join(type(p).__name__ for p in plist)}) cannot be assigned: its right_inverse fails "
            f"({type(error).__name__}: {error}). Give the parametrization a right_inverse, skip it with "
            f"Override(path={target.path!r}, skip=True), or reinit before parametrizing."
        )
    return None


def draw_problem(step: Step) -> str | None:
    """Why this step's draw cannot give finite values of its tensor's dtype (a negative or non-finite std,
    bound, gain, value or chunk value; a truncation without mass), or None: `check_draw`, before any write."""
    a, t = step.action, step.target.tensor
    try:
        if a.chunk_values is not None:
            for value in a.chunk_values:
                check_draw(t, "constant", value)
        else:
            check_draw(t, a.kind, a.param, a=-a.cut, b=a.cut)  # type: ignore[arg-type]
        if a.kind == "truncated_normal":
            check_cutoffs(-a.cut, a.cut)
    except (InitError, ValueError) as error:
        return str(error)
    return None


def _value_problem(known: dict[tuple[int, torch.dtype], str | None], step: Step, dtype: torch.dtype) -> str | None:
    """`draw_problem` of ``step``, named by its path, asked once per (action, dtype) (``known`` remembers)."""
    key = (id(step.action), dtype)
    if key not in known:
        known[key] = draw_problem(step)
    found = known[key]
    return None if found is None else f"{step.target.path} ({type(step.target.owner).__name__}): {found}"


def action_problem(step: Step, generator: torch.Generator | None) -> str | None:
    """Why this step's action cannot be carried out on its target (index ranges, chunks, generator), or None."""
    a = step.action
    if a.chunks == 1 and a.chunk_values is None and a.zero_row is None and generator is None and not a.delta:
        return None  # the common case: nothing to check
    t, path = step.target.tensor, step.target.path
    if a.kind in ("skip", "keep") or step.copy_from is not None or t.numel() == 0:
        return None
    where = f"{path} ({type(step.target.owner).__name__}, shape {tuple(t.shape)})"
    chunks = len(a.chunk_values) if a.chunk_values is not None else a.chunks
    if chunks < 1 or (chunks > 1 and (t.dim() == 0 or t.shape[0] % chunks)):
        return (
            f"{where}: the rule splits it into {chunks} chunks along dim 0, which do not divide "
            f"{t.shape[0] if t.dim() else 'a 0-d tensor'}; fix the rule's chunk count."
        )
    if a.delta and t.dim() > 2 and t.shape[0] // chunks < t.shape[1]:
        return (
            f"{where}: a delta-orthogonal kernel needs at least as many output as input channels (an orthogonal "
            f"{t.shape[0] // chunks} x {t.shape[1]} centre tap cannot have orthonormal columns); use "
            "Scheme(distribution='orthogonal') without delta for this layer (an Override), or widen it."
        )
    if a.zero_row is not None and not (t.dim() >= 1 and -t.shape[0] <= a.zero_row < t.shape[0]):
        rows = t.shape[0] if t.dim() else 0
        return f"{where}: the rule zeroes row {a.zero_row}, outside its {rows} rows (a padding_idx out of range?)."
    if generator is not None and a.draws:
        device = local_of(t).device
        if generator.device.type != device.type:
            return (
                f"{where} is on {device} but generator= draws on {generator.device}; pass a "
                f"torch.Generator(device={device.type!r})."
            )
    return None


Filed = dict[int, list[tuple[torch.Tensor, Step, bool]]]
"""Tensors by their storage's address (unique; CUDA's addresses are unified), with their step and whether it writes."""

_PROVEN: set[tuple[Any, ...]] = set()  # kinds of write that went through once (a pure fact of torch's kernels)


def refusals(steps: Sequence[Step], *, keyed: bool, generator: torch.Generator | None = None) -> tuple[list[str], bool]:
    """Why some write of ``steps`` cannot succeed, before any is made (one message per parameter), and whether
    a write can still fail after that, so that a failure must be undone from backups (``fallible``).

    Each action must fit its tensor (`action_problem`: chunks, rows, the generator's device) and give values
    its dtype holds (`draw_problem`, once per action and dtype); every tensor must be writable (`problem`);
    two parameters may not share memory unless they are one
    (tied) parameter; each parametrized target's ``right_inverse`` must run (`inverse_problem`); and each
    distinct kind of write (tensor type, dtype, device, action kind, keyed or not) is made once on a small
    tensor made like the target (``new_empty``), with the RNG states forked (nothing observable).

    Fallible writes: code of a parametrization, orthogonal QR temporaries, a DTensor write, or a temporary
    for a tensor that is not contiguous (channels_last) or whose dtype is drawn in a wider one (a truncated
    normal in half precision).
    """
    found: list[str] = []
    fallible = strided = False
    by_storage: Filed = {}
    shared: set[int] = set()  # storages filed more than once
    setting = (keyed, torch.get_default_dtype(), torch.is_inference_mode_enabled())
    inference = setting[2]
    proven_here: set[tuple[Any, ...]] = set()  # (action id, type, dtype, device): plans share Action instances
    # action id -> (writes, draws, needs a wider temporary, fits only some shapes, has values to check)
    kinds: dict[int, tuple[bool, bool, bool, bool, bool]] = {}
    writes = draws = temporary = shaped = has_values = False
    valued: dict[tuple[int, torch.dtype], str | None] = {}  # (action id, dtype) -> draw_problem's answer
    plain_types = (torch.Tensor, nn.Parameter)  # hoisted: the loop runs per parameter
    last_action: Action | None = None
    # action id -> the (dtype, type) of its last proven plain CPU write: no tuple built per parameter
    seen_on_cpu: dict[int, tuple[torch.dtype, type]] = {}
    bases: list[int] = []  # storage addresses of the plain steps, filed only if two are equal
    for step in steps:
        action = step.action
        if action is not last_action:  # plans share Action instances: consecutive steps often share one
            last_action = action
            known = kinds.get(id(action))
            if known is None:
                kind = action.kind
                known = kinds[id(action)] = (
                    kind not in UNWRITTEN,
                    kind in DRAWN,
                    kind in ("orthogonal", "truncated_normal"),
                    (
                        kind not in UNWRITTEN
                        and (action.chunks != 1 or action.chunk_values is not None or action.zero_row is not None)
                    )
                    or action.delta
                    or (generator is not None and kind in DRAWN),
                    kind in DRAWN or (kind == "constant" and (action.param != 0.0 or bool(action.chunk_values))),
                )
            writes, draws, temporary, shaped, has_values = known
        target = step.target
        t = target.tensor
        kind_of_t = type(t)
        if shaped and (message := action_problem(step, generator)) is not None:
            found.append(message)
            continue
        if (
            writes
            and kind_of_t in plain_types  # not lazy, storage of its own kind
            and not target.parametrized
            and not step.scratch
            and t.is_contiguous()  # False for sparse layouts
            and ((dtype := t.dtype).is_floating_point or not draws)
            and (inference or not t.is_inference())
        ):  # the common case: a plain dense tensor written in place (a meta one has no address: `problem`)
            base = t.untyped_storage().data_ptr()
            if base:
                seen = seen_on_cpu.get(id(action))
                if seen is None or seen[0] is not dtype or seen[1] is not kind_of_t or not t.is_cpu:
                    if has_values and (message := _value_problem(valued, step, dtype)) is not None:
                        found.append(message)
                        continue
                    device = t.device
                    if (message := _prove_kind(step, kind_of_t, t, proven_here, setting)) is not None:
                        found.append(message)
                        continue
                    if device.type == "cpu":
                        seen_on_cpu[id(action)] = (dtype, kind_of_t)
                    if temporary and (action.kind == "orthogonal" or dtype not in (torch.float32, torch.float64)):
                        fallible = True  # QR temporaries, or a truncated normal drawn in a wider dtype
                bases.append(base)
                continue
        message = problem(target, draws)
        if message is None and has_values:
            message = _value_problem(valued, step, t.dtype)
        if message is not None:
            found.append(message)
            continue
        if step.scratch or not t.numel():
            continue
        if not writes:  # kept or skipped: a write elsewhere must not reach its memory either
            _file(by_storage, shared, t, step, False)
            continue
        if target.parametrized:
            fallible = True
            message = inverse_problem(target)
            if message is not None:
                found.append(message)
            continue
        local = t
        if kind_of_t not in plain_types:
            local = local_of(t)
            fallible = fallible or type(local) not in plain_types  # a subclass's own ops: no probe speaks for them
        if temporary or local is not t:  # QR or truncation temporaries, a DTensor write
            wide = local.dtype in (torch.float32, torch.float64)
            fallible = fallible or local is not t or action.kind == "orthogonal" or not wide
        if (message := _prove_kind(step, kind_of_t, local, proven_here, setting)) is not None:
            found.append(message)
            continue
        strided = strided or not local.is_contiguous()
        _file(by_storage, shared, local, step, True)
    distinct = set(bases)
    if len(distinct) < len(bases) or not distinct.isdisjoint(by_storage):  # some storage is shared: file the rest
        filed = {id(entry[1]) for entries in by_storage.values() for entry in entries}
        for step in steps:
            t, kind = step.target.tensor, step.action.kind
            plain = type(t) in plain_types and not step.target.parametrized and not step.scratch
            if plain and id(step) not in filed and kind not in UNWRITTEN:
                _file(by_storage, shared, t, step, True)
    return found + _overlaps([by_storage[base] for base in shared]), fallible or strided


def _prove_kind(
    step: Step, kind_of_t: type, local: torch.Tensor, proven: set[tuple[Any, ...]], setting: tuple[Any, ...]
) -> str | None:
    """Why this step's kind of write (action, tensor type, the local tensor's type, dtype and device; ``setting``:
    keyed, default dtype, inference mode) fails on a small tensor like ``local``, or None; each kind is probed
    once per call (``proven``) and once per process once it went through (``_PROVEN``)."""
    action = step.action
    here = (id(action), kind_of_t, local.dtype, local.device)
    if here in proven:
        return None
    how = (kind_of_t, type(local), local.dtype, local.device, action.kind, action.chunk_values is None)
    message = _probe(step, local, (how, setting)) if (how, setting) not in _PROVEN else None
    if message is None:
        proven.add(here)
    return message


def _file(by_storage: Filed, shared: set[int], t: torch.Tensor, step: Step, writes: bool) -> None:
    """File ``t`` under its storage's address (a tensor subclass without storage is not filed); ``shared``
    collects the addresses filed more than once."""
    try:
        base = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return
    filed = by_storage.get(base)
    if filed is None:
        by_storage[base] = [(t, step, writes)]
    elif base:
        filed.append((t, step, writes))
        shared.add(base)


def _probe(step: Step, local: torch.Tensor, key: tuple[Any, ...]) -> str | None:
    """Make the step's kind of write on a small tensor like its target (``local``: the tensor this process
    holds); why it fails, or None. ``key`` names the kind of write: remembered once it went through."""
    t, a, keyed = step.target.tensor, step.action, key[1][0]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[local.device.index or 0] if local.is_cuda else []):
            probe = local.new_empty((2, 2) if a.kind == "orthogonal" else (2,))
            if a.kind == "copy":
                source = step.copy_from.tensor if step.copy_from is not None else local
                probe.copy_(source.detach().reshape(-1)[:2].expand(2) if source.numel() else probe)
            else:
                small = (
                    Action(a.kind, a.param, cut=a.cut)
                    if a.chunk_values is None
                    else Action("constant", max(a.chunk_values, key=abs))
                )
                if keyed:
                    with _workspace.isolated():
                        writer = KeyedWriter(0, 1)
                        writer.add(small, probe, "probe")
                        writer.run()
                else:
                    _draw.write(small, probe, None)  # through _draw: a probe is not one of the plan's writes
    except Exception as error:  # whatever the kernel, subclass or device raises is the reason to report
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (
            f"{step.target.where}: a {a.kind} write {'(keyed) ' if keyed else ''}into a {local.dtype} "
            f"{type(t).__name__} on {local.device} fails ({type(error).__name__}: {first}). Skip it with "
            f"Override(path={step.target.path!r}, skip=True), or convert the tensor to a dtype and type torch can "
            "draw into before reinit."
        )
    if len(_PROVEN) < 1024:
        _PROVEN.add(key)
    return None


def _overlaps(groups: list[list[tuple[torch.Tensor, Step, bool]]]) -> list[str]:
    """Parameters whose memory overlaps without being one parameter (views of one tensor), where at least one
    is written: the write would change the other behind the report's back (a kept or skipped one too). Only a
    storage that more than one parameter uses has its byte ranges compared."""
    found = []
    for sharing in groups:
        sharing = [entry for entry in sharing if entry[0].numel()]  # an empty view overlaps nothing
        if not any(writes for _, _, writes in sharing):
            continue  # kept or skipped views of one another change nothing
        spans = sorted(
            ((t.data_ptr(), t.data_ptr() + (t.nbytes if t.is_contiguous() else _extent(t)), id(t), step, writes)
             for t, step, writes in sharing),
            key=lambda span: span[:2],
        )  # fmt: skip
        reach = spans[0]
        for span in spans[1:]:
            # the same tensor twice is legacy's rewrites; two untouched ones change nothing
            if span[0] < reach[1] and span[2] != reach[2] and (span[4] or reach[4]):
                first, second = reach[3].target.path, span[3].target.path
                untouched_one = next((p for p, w in ((first, reach[4]), (second, span[4])) if not w), None)
                what = (
                    f" ({untouched_one} is kept or skipped, yet the other's write would change it)"
                    if (untouched_one)
                    else ": writing one would change the other"
                )
                found.append(
                    f"{first} and {second} are different parameters that share memory (views of one tensor){what}. "
                    "Make them one parameter (tie them), give each its own storage (.clone()), or skip both with "
                    "Overrides."
                )
            if span[1] > reach[1]:
                reach = span
    return found


def _extent(t: torch.Tensor) -> int:
    """Bytes from a strided tensor's first element to just past its last."""
    return (sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True)) + 1) * t.element_size()
