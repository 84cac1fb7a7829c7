"""LSUV (Mishkin & Matas 2015): orthonormal init, then rescale each layer to unit output std on a batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._layers.rules import role_of
from torchinit._maths.draw import rms
from torchinit._model.walk import walk
from torchinit._progress import Progress
from torchinit._schemes.plan import Plan
from torchinit._schemes.registry import BaseScheme, Call, register_scheme
from torchinit._schemes.scheme import Scheme
from torchinit._types import InitError, check_bool, check_int

if TYPE_CHECKING:
    from torchinit._schemes.report import InitReport


@dataclass(frozen=True, kw_only=True)
class LSUVScheme(BaseScheme):
    r"""Layer-sequential unit-variance init: ``reinit(model, "lsuv", data=batch)``.

    First every parameter gets ``base`` (orthogonal by default: Saxe et al. 2014); then, layer by
    layer in forward order, each dense weight is divided by its layer's output std on ``data`` until
    $|\mathrm{std} - 1| \le$ ``tol`` or ``max_iter`` rescalings. With ``center`` the bias also
    absorbs the output's per-channel mean (the channels: a convolution's dim 1, any other layer's last dim, as
    a sequence model's features), if the call writes that bias (not a skipped, frozen or outside-``only`` one).
    The model runs in eval mode during the passes and each module's train/eval flag is restored afterwards.

    One calibrating forward pass does it: when a layer's first call returns, the layers before it are
    final, so the layer alone is re-run on that call's input while it is rescaled, and the pass goes on
    with its new output: about 5 forward passes' worth in all on ResNet-18 and ViT-S/16, with the data check
    and a last measuring pass, where 0.2 ran one pass up to each layer per rescaling (29x and 61x). A module
    called several times is solved on its first call. A weight tied between modules is solved once, at its
    first use in forward order, and the report says which modules share it; a table tied between an input
    embedding and the output layer is solved at the output layer (unit-std logits: as an embedding, unit-std
    outputs would make the logits ~sqrt(d) times larger). The layers between are solved before the head sets
    the table's scale: behind a norm (every transformer) that changes nothing; without one their std moves,
    and the report, measured on the final model, says so. The report's entries give each weight its final std and scale.

    Args:
        tol: allowed deviation of each layer's output std from 1.
        max_iter: rescalings per layer at most.
        center: also shift each layer's bias so its output has zero mean per channel.
        base: the scheme applied before the rescaling.
        progress: a progress bar on stderr: None shows it when stderr is a terminal (after a second),
            True always, False never.
    """

    tol: float = 0.1
    max_iter: int = 10
    center: bool = False
    base: Scheme = field(default_factory=Scheme.orthogonal)
    progress: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise InitError(f"tol must be a number in (0, 1); got tol={self.tol!r}.")
        check_int("max_iter", self.max_iter, minimum=1)
        if not isinstance(self.base, Scheme):
            raise InitError(f"base must be a Scheme; got base={self.base!r}.")
        check_bool("progress", self.progress, optional=True)

    uses_data: ClassVar[bool] = True

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """The base scheme's plan; the rescaling runs afterwards, in `finish`."""
        if call.data is None:
            raise InitError(
                "lsuv needs a batch to measure activations on: reinit(model, 'lsuv', data=batch), where model(batch) "
                "(or model(*batch) for a tuple, model(**batch) for a dict) runs a forward pass."
            )
        return self.base.plan(module, call)

    def validate(self, module: nn.Module, call: Call) -> None:
        """The batch: tensors (alone, in a tuple/list, or a dict) with finite values, on which one forward
        pass of ``module`` runs; checked before anything is written."""
        leaves = _tensors(call.data)
        if leaves is None or not leaves:
            raise InitError(
                f"lsuv's data must be a tensor, or a tuple/list/dict of tensors, passed to model(data) / "
                f"model(*data) / model(**data); got data={call.data!r:.80}."
            )
        for where, tensor in leaves:
            if tensor.is_floating_point() or tensor.is_complex():
                bad = int((~torch.isfinite(tensor)).sum())
                if bad:
                    raise InitError(
                        f"lsuv's data{where} has {bad} non-finite value(s) of {tensor.numel()}; every layer's "
                        "std (and with center=True every bias) would become NaN. Clean the batch first."
                    )
        modes = {m: m.training for m in module.modules()}
        buffers = [(b, b.detach().clone()) for m in module.modules() for b in m._buffers.values() if b is not None]
        try:
            module.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a dry run: the RNG and buffers put back
                _call(module, call.data)
        except Exception as error:
            raise InitError(
                f"lsuv's forward pass on data failed before anything was written ({type(error).__name__}: "
                f"{error}); data must be a batch that model(data) (or model(*data), model(**data)) accepts."
            ) from error
        finally:
            for m, mode in modes.items():
                m.training = mode
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)

    def finish(self, module: nn.Module, report: InitReport, call: Call) -> None:
        """Rescale layer by layer in forward order; ``report.lsuv`` gets what each layer reached.

        A failure here (a forward hook that raises, a forward path that changes between calls) is
        raised as an `InitError`; reinit has then restored the model and the RNG states.
        """
        try:
            solved = lsuv_(module, call.data, self, report)
            report.lsuv = [layer for layer, _ in solved]
            _annotate(report, solved, self)
        except InitError:
            raise
        except Exception as error:
            raise InitError(
                f"lsuv failed during its rescaling passes ({type(error).__name__}: {error}); the model and the RNG "
                "states were restored to what they were before the call."
            ) from error

    def summary(self) -> str:
        """The base and the tolerance."""
        return f"orthogonal, then each layer scaled to output std 1 +- {self.tol:g} on a batch (Mishkin & Matas 2015)"


@dataclass(frozen=True)
class LSUVLayer:
    """What LSUV did to one layer (one weight), in the order the forward pass first finished each.

    Attributes:
        path: the module where the weight was solved: its first use in forward order (the output layer for a
            table tied between it and an input embedding).
        std: the layer's output std on the batch at that first call, measured again on the final model.
        iterations: rescalings used.
        converged: ``std`` is within the scheme's tolerance of 1.
        scale: the factor the weight was multiplied by, all rescalings together.
        calls: how many times the forward pass called the module (it is solved on its first call).
        shared_with: the other modules that use this same (tied) weight; it was not rescaled for them (a tied
            input embedding and LM head are solved once, at the head).
    """

    path: str
    std: float
    iterations: int
    converged: bool
    scale: float = 1.0
    calls: int = 1
    shared_with: tuple[str, ...] = ()


def _tensors(data: Any) -> list[tuple[str, torch.Tensor]] | None:
    """The tensors of a batch with where they sit (``""``, ``[0]``, ``['ids']``), or None if it is not one."""
    if isinstance(data, torch.Tensor):
        return [("", data)]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (tuple, list)) else None
    if items is None:
        return None
    found = [(f"[{k!r}]", v) for k, v in items if isinstance(v, torch.Tensor)]
    return found


def _call(model: nn.Module, data: Any) -> Any:
    """``model`` on a copy of the batch (a model that edits its input in place leaves the caller's alone)."""

    def copy(value: Any) -> Any:
        return value.clone() if isinstance(value, torch.Tensor) else value

    if isinstance(data, dict):
        return model(**{key: copy(value) for key, value in data.items()})
    if isinstance(data, (tuple, list)):
        return model(*map(copy, data))
    return model(copy(data))


@dataclass(frozen=True)
class _Watched:
    """A layer LSUV calibrates: where it is, the dense weight it scales, and the bias it centers."""

    path: str  # the module's canonical path
    weight: str  # the local name of its dense weight (whatever the layer calls it)
    key: int  # the weight's identity, shared by every module that holds it (a tied LM head and embedding)
    bias: str | None
    also: tuple[str, ...] = ()  # modules sharing the weight that are not watched (a tied input embedding)
    spatial: int = 0  # a convolution's spatial dims, after its channels in the output (N, C, *spatial)


def _weights(model: nn.Module, report: InitReport | None = None) -> dict[nn.Module, _Watched]:
    """The modules LSUV watches, from the walk: each one holding a dense weight (its first, if several), and
    every other module holding the same tensor (the input embedding an LM head is tied to); not a weight the
    call skipped or kept, and a bias to center only if the call wrote it (``report``'s entries say which)."""
    walked = walk(model)
    watched: dict[nn.Module, _Watched] = {}
    for param in walked.params:
        if param.role is None or param.role.kind not in ("dense", "readout"):
            continue
        if not _written(report, param.path):
            continue  # skipped means untouched, by every pass; no entry: outside the call's only=
        uses = param.every
        also: tuple[str, ...] = ()
        if param.role.kind == "readout" and (param.role.via or "").startswith("tied"):
            # a table tied to the output layer is calibrated there (unit-std logits), not as an embedding,
            # whose unit-std output would make the logits sqrt(d) times too large
            dense = [t for t in uses if (own := role_of(t.owner, t.name)) is not None and own.kind == "dense"]
            if dense:
                also = tuple(t.path.rpartition(".")[0] for t in uses if t not in dense)
                uses = dense
        for t in uses:
            if t.owner not in watched:
                path = t.path.rpartition(".")[0]
                bias = next((n for n in t.owner._parameters if _centerable(t.owner, path, n, report)), None)
                spatial = t.tensor.dim() - 2 if isinstance(t.owner, nn.modules.conv._ConvNd) else 0
                watched[t.owner] = _Watched(path, t.name, param.key, bias, also, spatial)
    order = {id(m): i for i, (_, m) in enumerate(walked.modules)}
    return dict(sorted(watched.items(), key=lambda item: order.get(id(item[0]), 0)))


def _written(report: InitReport | None, path: str) -> bool:
    """Whether the call wrote the parameter at ``path`` (any of its tied paths); every parameter without a report.
    A skipped or kept (frozen) one, or one outside the call's ``only=`` (no entry), is untouched by every pass."""
    if report is None:
        return True
    entry = report.get(path)
    return entry is not None and entry.skipped is None and entry.distribution != "keep"


def _centerable(module: nn.Module, path: str, name: str, report: InitReport | None) -> bool:
    """Whether ``center=True`` may shift ``module``'s parameter ``name``: a 1-D bias the call wrote."""
    param = module._parameters[name]
    if param is None or param.dim() != 1:
        return False
    role = role_of(module, name)
    return role is not None and role.kind == "bias" and _written(report, f"{path}.{name}" if path else name)


def _channels(layer: _Watched, output: torch.Tensor, bias: torch.Tensor) -> int:
    """The dim of ``output`` that holds the layer's channels, one per bias element: the one before the spatial
    dims for a convolution (``(N, C, *spatial)``), the last for every other layer (``(..., tokens, features)``).

    Raises:
        InitError: that dim does not have one element per bias element (a layer laid out otherwise).
    """
    dim = output.dim() - 1 - layer.spatial
    if output.dim() == 0 or dim < 0 or output.shape[dim] != bias.numel():
        raise InitError(
            f"lsuv center=True: {layer.path or 'the model'}'s output has shape {tuple(output.shape)}, and its dim "
            f"{dim} does not hold one channel per element of its bias {layer.bias!r} ({bias.numel()}); "
            "center=False calibrates without shifting biases."
        )
    return dim


def _scale_weight(layer: nn.Module, name: str, factor: float) -> None:
    weight: torch.Tensor = getattr(layer, name)
    if parametrize.is_parametrized(layer, name):
        setattr(layer, name, weight * factor)  # through right_inverse
    else:
        weight.mul_(factor)


def _path_changed(path: str) -> InitError:
    return InitError(
        f"lsuv: {path or 'the model'} was called in one forward pass but not in a later one (or returned no tensor); "
        "the model's forward path changes between calls (random depth, data-dependent branches), which LSUV "
        "cannot calibrate. Make it deterministic in eval mode."
    )


@dataclass
class _Solved:
    module: nn.Module
    layer: _Watched
    std: float
    iterations: int
    scale: float
    shared_with: list[str] = field(default_factory=list)


class _Solver:
    """One forward pass that calibrates every watched layer on the spot, in the order the pass finishes them.

    A pre-hook keeps each layer's arguments of its first call; when that call returns, the earlier layers are
    already final, so its input is the final one: the layer alone is re-run on those arguments while its weight
    is rescaled, and the pass continues with the rescaled layer's output. Total work: one forward pass plus a
    few calls of each layer by itself, instead of one pass up to each layer per rescaling.
    """

    def __init__(self, scheme: LSUVScheme, watched: dict[nn.Module, _Watched], progress: Progress) -> None:
        self.scheme, self.watched, self.progress = scheme, watched, progress
        self.pending: dict[nn.Module, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.calls: dict[nn.Module, int] = {}
        self.solved: dict[int, _Solved] = {}  # by weight identity
        self.busy = 0  # > 0 while a layer is re-run by itself: its hooks stay out of the way

    def before(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.busy:
            return
        self.calls[module] = self.calls.get(module, 0) + 1
        if self.calls[module] == 1:
            self.pending[module] = (args, kwargs)

    def after(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        if self.busy or module not in self.pending:
            return None
        first_args, first_kwargs = self.pending.pop(module)
        if not isinstance(output, torch.Tensor):
            return None  # not a layer LSUV can calibrate (as before: tensor outputs only)
        layer = self.watched[module]
        path, key = layer.path, layer.key
        if key in self.solved:  # a tied weight, solved at its first use
            self.solved[key].shared_with.append(path)
            return None
        out, result = self._solve(module, layer, first_args, first_kwargs, output)
        result.shared_with.extend(layer.also)
        self.solved[key] = result
        self.progress.step(path)
        return out

    def _rerun(self, module: nn.Module, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        self.busy += 1
        try:
            out = module(*args, **kwargs)
        finally:
            self.busy -= 1
        if not isinstance(out, torch.Tensor):
            raise _path_changed(path)
        return out

    def _solve(
        self, module: nn.Module, layer: _Watched, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor
    ) -> tuple[torch.Tensor, _Solved]:
        scheme, scale, path = self.scheme, 1.0, layer.path
        bias = module._parameters.get(layer.bias) if layer.bias is not None else None
        iterations, std = 0, math.nan
        for iterations in range(scheme.max_iter + 1):
            if iterations:
                out = self._rerun(module, path, args, kwargs)
            if scheme.center and bias is not None:
                flat = out.float()
                channel = _channels(layer, flat, bias)
                bias.sub_(flat.mean(dim=[d for d in range(flat.dim()) if d != channel]).to(bias.dtype))
                out = self._rerun(module, path, args, kwargs)
            std = float(out.float().std())
            if abs(std - 1.0) <= scheme.tol or iterations == scheme.max_iter or not std > 0:
                break
            _scale_weight(module, layer.weight, 1.0 / std)
            scale /= std
        return out, _Solved(module, layer, std, iterations, scale)


def _first_output_stds(model: nn.Module, data: Any, modules: list[nn.Module]) -> dict[nn.Module, float]:
    """Each module's output std at its first call in one pass (a module not called, or without a tensor
    output, is missing)."""
    stds: dict[nn.Module, float] = {}

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if module not in stds and isinstance(output, torch.Tensor):
            stds[module] = float(output.float().std())

    handles = [m.register_forward_hook(record) for m in modules]
    try:
        _call(model, data)
    finally:
        for h in handles:
            h.remove()
    return stds


def lsuv_(
    model: nn.Module, data: Any, scheme: LSUVScheme, report: InitReport | None = None
) -> list[tuple[LSUVLayer, _Solved]]:
    """Rescale each layer on its first call in one calibrating pass (the base scheme already written), then
    measure every layer once more on the final model; return what each layer got, in forward order.

    Equivalent to calibrating layer by layer with a forward pass per measurement (each layer's input is
    computed by earlier layers that are already final), at the cost of two forward passes and a few re-runs of
    each layer by itself.
    """
    modes = {m: m.training for m in model.modules()}
    watched = _weights(model, report)
    progress = Progress(len({layer.key for layer in watched.values()}), "lsuv", show=scheme.progress)
    solver = _Solver(scheme, watched, progress)
    handles = []
    try:
        model.eval()
        with torch.no_grad():
            for m in watched:
                handles.append(m.register_forward_pre_hook(solver.before, with_kwargs=True, prepend=True))
                handles.append(m.register_forward_hook(solver.after, with_kwargs=True))
            try:
                _call(model, data)
            finally:
                for h in handles:
                    h.remove()
            solved = list(solver.solved.values())
            final = _first_output_stds(model, data, [r.module for r in solved])
    finally:
        progress.close(f"{len(solver.solved)} layers")
        for module, mode in modes.items():
            module.training = mode
    results = []
    for r in solved:
        if r.module not in final:
            raise _path_changed(r.layer.path)
        std = final[r.module]
        converged = abs(std - 1.0) <= scheme.tol
        calls = solver.calls[r.module]
        layer = LSUVLayer(r.layer.path, std, r.iterations, converged, r.scale, calls, tuple(r.shared_with))
        results.append((layer, r))
    return results


def _annotate(report: InitReport, solved: list[tuple[LSUVLayer, _Solved]], scheme: LSUVScheme) -> None:
    """Make the report's entries the final word: each calibrated weight (and centered bias) gets its final
    std, the scale LSUV applied, and where a tied weight was solved."""
    for layer, r in solved:
        module, watched = r.module, r.layer
        prefix = f"{layer.path}." if layer.path else ""
        state = f"output std {layer.std:.3f}" + ("" if layer.converged else f", NOT within {scheme.tol:g} of 1")
        where = f"lsuv at {layer.path or 'the root'}: {state}"
        if layer.shared_with:
            where += f"; tied, solved once here (shared with {', '.join(layer.shared_with)})"
        if (prefix + watched.weight) in report:
            weight = report[prefix + watched.weight]
            std = rms(getattr(module, watched.weight))
            report.revise(weight.path, rule=f"{weight.rule}, then x{layer.scale:.4g} by lsuv", std=std, source=where)
        if scheme.center and watched.bias is not None and (prefix + watched.bias) in report:
            bias = report[prefix + watched.bias]
            std = rms(module._parameters[watched.bias])  # type: ignore[arg-type]
            report.revise(bias.path, rule=f"{bias.rule}, then centered by lsuv", std=std, source=where)


register_scheme("lsuv", LSUVScheme())
