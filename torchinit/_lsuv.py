"""LSUV (Mishkin & Matas 2015): orthonormal init, then rescale each layer to unit output std on a batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._layers import role_of
from torchinit._plan import Plan
from torchinit._registry import BaseScheme, Call, register_scheme
from torchinit._schemes import Scheme
from torchinit._types import InitError

if TYPE_CHECKING:
    from torchinit._report import InitReport


@dataclass(frozen=True, kw_only=True)
class LSUVScheme(BaseScheme):
    r"""Layer-sequential unit-variance init: ``reinit(model, "lsuv", data=batch)``.

    First every parameter gets ``base`` (orthogonal by default: Saxe et al. 2014); then, layer by
    layer in forward order, each dense weight is divided by its layer's output std on ``data`` until
    $|\mathrm{std} - 1| \le$ ``tol`` or ``max_iter`` rescalings. With ``center`` the bias also
    absorbs the output's per-channel mean. The model runs in eval mode during the passes and each
    module's train/eval flag is restored afterwards.

    Args:
        tol: allowed deviation of each layer's output std from 1.
        max_iter: rescalings per layer at most.
        center: also shift each layer's bias so its output has zero mean per channel.
        base: the scheme applied before the rescaling.
    """

    tol: float = 0.1
    max_iter: int = 10
    center: bool = False
    base: Scheme = field(default_factory=Scheme.orthogonal)

    def __post_init__(self) -> None:
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise InitError(f"tol must be a number in (0, 1); got tol={self.tol!r}.")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise InitError(f"max_iter must be a positive integer; got max_iter={self.max_iter!r}.")
        if not isinstance(self.base, Scheme):
            raise InitError(f"base must be a Scheme; got base={self.base!r}.")

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
        try:
            module.eval()
            with torch.no_grad():
                _layers(module, call.data)
        except Exception as error:
            raise InitError(
                f"lsuv's forward pass on data failed before anything was written ({type(error).__name__}: "
                f"{error}); data must be a batch that model(data) (or model(*data), model(**data)) accepts."
            ) from error
        finally:
            for m, mode in modes.items():
                m.training = mode

    def finish(self, module: nn.Module, report: InitReport, call: Call) -> None:
        """Rescale layer by layer in forward order; ``report.lsuv`` gets what each layer reached.

        A failure here (a forward hook that raises, a forward path that changes between calls) is
        raised as an `InitError`; reinit has then restored the model and the RNG states.
        """
        try:
            report.lsuv = lsuv_(module, call.data, self)
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
    """What LSUV did to one layer: final output std, rescalings, whether it met the tolerance."""

    path: str
    std: float
    iterations: int
    converged: bool


class _ReachedError(Exception):
    """Raised from a hook to end a forward pass once the watched layer has produced its output."""


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
    if isinstance(data, dict):
        return model(**data)
    if isinstance(data, (tuple, list)):
        return model(*data)
    return model(data)


def _layers(model: nn.Module, data: Any) -> list[tuple[str, nn.Module]]:
    """Layers with a dense weight and a tensor output, in the order a forward pass first calls them."""
    candidates = {
        m: name
        for name, m in model.named_modules()
        if "weight" in m._parameters and (role := role_of(m, "weight")) is not None and role.kind == "dense"
    }
    order: dict[nn.Module, str] = {}  # first call order; a module called twice counts once

    def record(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and module not in order:
            order[module] = candidates[module]

    handles = [m.register_forward_hook(record) for m in candidates]
    try:
        _call(model, data)
    finally:
        for h in handles:
            h.remove()
    return [(name, module) for module, name in order.items()]


def _output_of(model: nn.Module, layer: nn.Module, data: Any) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def grab(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output)
        raise _ReachedError

    handle = layer.register_forward_hook(grab)
    try:
        _call(model, data)
    except _ReachedError:
        pass
    finally:
        handle.remove()
    if not captured:
        raise InitError(
            f"lsuv: {type(layer).__name__} was called in the first forward pass but not in a later one; the "
            "model's forward path changes between calls (random depth, data-dependent branches), which LSUV "
            "cannot calibrate. Make it deterministic in eval mode."
        )
    return captured[0]


def _scale_weight(layer: nn.Module, factor: float) -> None:
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    if parametrize.is_parametrized(layer, "weight"):
        setattr(layer, "weight", weight * factor)  # through right_inverse  # noqa: B010
    else:
        weight.mul_(factor)


def lsuv_(model: nn.Module, data: Any, scheme: LSUVScheme) -> list[LSUVLayer]:
    """Rescale layer by layer (the base scheme already written); return what each layer got."""
    modes = {m: m.training for m in model.modules()}
    results: list[LSUVLayer] = []
    try:
        model.eval()
        with torch.no_grad():
            for path, layer in _layers(model, data):
                iterations, std = 0, math.nan
                for iterations in range(scheme.max_iter + 1):
                    out = _output_of(model, layer, data).float()
                    bias = layer._parameters.get("bias")
                    if scheme.center and bias is not None:
                        channel = 1 if out.dim() > 2 else out.dim() - 1
                        bias.sub_(out.mean(dim=[d for d in range(out.dim()) if d != channel]).to(bias.dtype))
                        out = _output_of(model, layer, data).float()
                    std = float(out.std())
                    if abs(std - 1.0) <= scheme.tol or iterations == scheme.max_iter or not std > 0:
                        break
                    _scale_weight(layer, 1.0 / std)
                results.append(LSUVLayer(path, std, iterations, abs(std - 1.0) <= scheme.tol))
    finally:
        for module, mode in modes.items():
            module.training = mode
    return results


register_scheme("lsuv", LSUVScheme())
