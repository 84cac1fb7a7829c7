"""Audit a model: each weight-bearing layer's std against a scheme's (flagged outside a band, with the reason),
raw parameters no rule covers, and activation and gradient std in one seeded forward/backward pass, under the
model's current init and under the scheme's."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from torchinit._api.reinit import reinit
from torchinit._maths.draw import rms, torch_fan_in
from torchinit._model.walk import one_walk, walk
from torchinit._progress import Progress
from torchinit._schemes.registry import BaseScheme, Call, resolve_scheme
from torchinit._tools.audit_inputs import AuditError, InputSpec, make_inputs, stream_seed
from torchinit._types import InitError, UncoveredParameterWarning
from torchinit.testing import MIN_SAMPLES, std_tolerance

BAND = (0.8, 1.25)
"""Weight std / scheme std outside this band is flagged (``--band``)."""

WEIGHT_KINDS = ("dense", "embedding")
"""The roles whose ``weight`` makes a module a weight-bearing layer in the audit."""


def _looks_like_torch_default(weight: torch.Tensor) -> bool:
    """Std and support consistent with U(+-1/sqrt(torch fan_in)) at alpha=1e-6 (needs >= 100 elements)."""
    fan = torch_fan_in(weight)
    n = weight.numel()
    if n < MIN_SAMPLES or not fan:
        return False
    bound = 1 / math.sqrt(fan)
    w = weight.detach().double()
    rms = float(w.square().mean().sqrt())
    within = float(w.abs().max()) <= bound * (1 + 1e-6)
    return within and abs(math.log(rms / (bound / math.sqrt(3)))) <= std_tolerance(n, "uniform")


def flag_of(ratio: float | None, torch_default: bool, band: tuple[float, float] = BAND) -> str | None:
    """Why a layer is flagged: its weight std / scheme std is outside ``band`` (torch default, too small, too
    large), or None. A layer inside the band is never flagged, whatever it looks like."""
    if ratio is None or band[0] <= ratio <= band[1]:
        return None
    if torch_default:
        return "torch default"
    return "too small" if ratio < band[0] else "too large"


def _scheme_stds(model: nn.Module, scheme: BaseScheme) -> dict[str, float | None]:
    """Each parameter's element std under ``scheme`` by its paths (tied aliases too), from the scheme's plan:
    readouts, overrides and recipes included; empty where the scheme cannot plan without data."""
    try:
        plan = scheme.plan(model, Call())
    except InitError:
        return {}
    stds: dict[str, float | None] = {}
    for step in plan.steps:
        if step.scratch or step.copy_from is not None or step.action.kind == "skip":
            continue
        std = step.effective if step.effective is not None else step.action.std
        if step.action.kind == "orthogonal" and step.role is not None:
            std = scheme.dense_std(step.target.owner, step.role) if step.role.kind == "dense" else None
        for path in (step.target.path, *step.aliases):
            stds[path] = std
    return stds


def weight_layers(
    model: nn.Module, scheme: BaseScheme, band: tuple[float, float] = BAND
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The weight-bearing layers (dense and embedding weights, whatever the layer calls them) against the
    scheme, and the raw parameters no rule covers; both from the walk."""
    with one_walk(model) as walked:  # the scheme's plan reads the same walk
        planned = _scheme_stds(model, scheme)
    found = [row for row in walked.weights(WEIGHT_KINDS) if row[1].tensor.numel()]
    owners: dict[int, list[str]] = {}
    for path, _, _, param in found:
        owners.setdefault(id(param), []).append(path)
    layers = []
    for path, target, role, param in found:
        tensor = target.tensor
        std = rms(tensor)
        reference = planned.get(target.path) if planned else None
        if reference is None and role.kind == "dense" and not planned:
            reference = scheme.dense_std(target.owner, role)
        ratio = std / reference if reference else None
        torch_default = role.kind == "dense" and _looks_like_torch_default(tensor)
        fans = role.fans
        layers.append({
            "path": path, "param": target.name, "type": type(target.owner).__name__, "kind": role.kind,
            "shape": list(tensor.shape), "fan_in": fans.fan_in if fans else None,
            "fan_out": fans.fan_out if fans else None, "chunks": fans.chunks if fans else 1, "std": std,
            "scheme_std": reference, "ratio": ratio, "torch_default": torch_default,
            "flag": flag_of(ratio, torch_default, band), "tied_to": [p for p in owners[id(param)] if p != path],
        })  # fmt: skip
    raw = []
    for param in walked.params:
        t = param
        if param.role is not None:
            continue
        lazy = param.lazy
        raw.append({
            "path": t.path, "type": type(t.owner).__name__,
            "shape": None if lazy else list(t.tensor.shape),  # None: an uninitialized lazy parameter
            "std": rms(t.tensor) if not lazy and t.tensor.numel() and t.tensor.is_floating_point() else None,
        })  # fmt: skip
    return layers, raw


def audit(
    model: nn.Module,
    target: str,
    scheme_name: str,
    inputs: list[InputSpec] | None = None,
    backward: bool = True,
    *,
    band: tuple[float, float] = BAND,
    seed: int = 0,
    compare: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Everything ``torchinit audit`` reports, as a JSON-ready dict.

    With ``inputs``, one forward (and backward) pass on tensors drawn with ``seed``; with ``compare``, the same
    pass on a copy of the model initialized by the scheme (seeded), so each activation and gradient has the
    scheme's value beside it.
    """
    try:
        scheme = resolve_scheme(scheme_name)
    except InitError as error:
        raise AuditError(str(error)) from error
    layers, raw = weight_layers(model, scheme, band)
    result: dict[str, Any] = {
        "target": target, "scheme": scheme_name, "seed": seed, "band": list(band), "model": type(model).__name__,
        "layers": layers, "raw_parameters": raw,
    }  # fmt: skip
    if not inputs:
        return result
    args, kwargs, described = make_inputs(model, inputs, seed)
    weighted = {layer["path"]: layer["param"] for layer in layers}
    watched = {m: prefix[:-1] for prefix, m in walk(model).modules if prefix[:-1] in weighted or not m._modules}
    result["inputs"] = described
    result["mode"] = "train" if model.training else "eval"
    result.update(_passes(model, watched, weighted, args, kwargs, backward, "forward (current init)", progress))
    if compare:
        twin = _initialized_copy(model, scheme, seed, args, kwargs)
        if twin is None:
            result["compare"] = "not compared: the model could not be copied (copy.deepcopy failed)"
        else:
            twins = dict(zip(model.modules(), twin.modules(), strict=True))
            other = _passes(
                twin, {twins[m]: p for m, p in watched.items()}, weighted, args, kwargs, backward,
                f"forward ({scheme_name})", progress,
            )  # fmt: skip
            result["compare"] = f"a copy of the model after reinit(model, {scheme_name!r}) (seed {seed})"
            for key in ("activations", "gradients"):
                theirs = {(e["path"], e.get("call", 1)): e["std"] for e in other.get(key, [])}
                for entry in result.get(key, []):
                    entry["scheme_std"] = theirs.get((entry["path"], entry.get("call", 1)))
    return result


def _initialized_copy(
    model: nn.Module, scheme: BaseScheme, seed: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> nn.Module | None:
    try:
        twin = copy.deepcopy(model)
    except Exception:
        return None
    data = None
    if scheme.uses_data:  # lsuv calibrates on the audit's own batch
        data = kwargs if kwargs and not args else args[0] if len(args) == 1 and not kwargs else args
    param = next(twin.parameters(), None)
    generator = torch.Generator(param.device if param is not None else "cpu").manual_seed(stream_seed(seed, "scheme"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncoveredParameterWarning)  # the audit lists raw parameters itself
        try:
            reinit(twin, scheme, generator=generator, data=data)
        except InitError as error:
            raise AuditError(f"reinit(model, {scheme!r}) for the comparison failed: {error}") from error
    return twin


def loss_of(out: Any) -> tuple[torch.Tensor | None, str]:
    """The tensor the backward pass reduces (the output, or its ``logits``, or the first tensor in it) and
    the loss as code."""
    if isinstance(out, torch.Tensor):
        return out, "out.float().square().mean()"
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits, "out.logits.float().square().mean()"
    items = list(out.items()) if isinstance(out, Mapping) else list(enumerate(out)) if isinstance(out, tuple) else []
    for key, value in items:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value, f"out[{key!r}].float().square().mean()"
    return None, f"no backward: the model returned {type(out).__name__} with no floating-point tensor"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _passes(
    model: nn.Module,
    watched: dict[nn.Module, str],
    weighted: dict[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    backward: bool,
    label: str,
    progress: bool | None,
) -> dict[str, Any]:
    bar = Progress(len(watched), label, show=progress)
    activations: list[dict[str, Any]] = []
    calls: dict[str, int] = {}

    def record(module: nn.Module, inputs: Any, out: Any) -> None:
        path = watched[module]
        calls[path] = calls.get(path, 0) + 1
        if calls[path] == 1:
            bar.step(f"{sum(calls.values())} calls")
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel() > 1:
            activations.append({
                "path": path, "type": type(module).__name__, "call": calls[path], "layer": path in weighted,
                "std": float(out.detach().float().std()),
            })  # fmt: skip

    handles = [m.register_forward_hook(record) for m in watched]
    try:
        with torch.set_grad_enabled(backward):
            out = model(*args, **kwargs)
    except Exception as error:
        raise AuditError(f"the input does not fit the model: {type(error).__name__}: {_first_line(error)}") from error
    finally:
        for h in handles:
            h.remove()
        bar.close(f"{sum(calls.values())} calls")
    for entry in activations:
        entry["calls"] = calls[entry["path"]]
    reused = sorted({e["path"] for e in activations if e["calls"] > 1})
    result: dict[str, Any] = {"activations": activations, "calls": sum(calls.values()), "reused": reused}
    tensor, loss = loss_of(out)
    if backward and tensor is not None and tensor.requires_grad:
        model.zero_grad(set_to_none=True)
        try:
            tensor.float().square().mean().backward()  # type: ignore[no-untyped-call]
        except Exception as error:
            raise AuditError(
                f"the backward pass failed ({type(error).__name__}: {error}); try --no-backward"
            ) from error
        grads = []
        for module, path in watched.items():
            weight = getattr(module, weighted[path], None) if path in weighted else None
            if weight is not None and weight.grad is not None:
                grads.append({"path": path, "type": type(module).__name__, "std": float(weight.grad.float().std())})
        result["gradients"] = grads
        model.zero_grad(set_to_none=True)
    elif backward and tensor is not None:
        loss = "no backward: the output does not require grad (frozen parameters?)"
    result["loss"] = loss if backward else "no backward (--no-backward)"
    return result
