"""Audit a model: per-layer weight std vs a scheme's, torch-default detection, activation and gradient std."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchinit._draw import torch_fan_in
from torchinit._layers import role_of
from torchinit._registry import resolve_scheme
from torchinit._types import InitError
from torchinit.testing import MIN_SAMPLES, std_tolerance


class AuditError(Exception):
    """A problem with the audit's inputs; the CLI prints it on one line and exits with status 2."""


def load_factory(target: str) -> Callable[[], nn.Module]:
    """``package.module:factory`` or ``path/to/file.py:factory`` -> the factory callable."""
    source, sep, name = target.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise AuditError(f"TARGET must be 'package.module:factory' or 'path/to/file.py:factory'; got {target!r}")
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise AuditError(f"no such file: {source} (from TARGET {target!r})")
        spec = importlib.util.spec_from_file_location(f"_torchinit_audit_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise AuditError(f"importing {source} failed: {type(error).__name__}: {error}") from error
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(source)
        except Exception as error:
            raise AuditError(f"cannot import {source!r}: {type(error).__name__}: {error}") from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise AuditError(f"{source} has no callable {name!r}")
    return factory  # type: ignore[no-any-return]


def build_model(target: str) -> nn.Module:
    """Call the target's factory and check it returned a module."""
    factory = load_factory(target)
    try:
        model = factory()
    except Exception as error:
        raise AuditError(f"factory {target} failed: {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise AuditError(f"factory {target} must return an nn.Module; it returned {type(model).__name__}")
    return model


def parse_shape(text: str) -> tuple[int, ...]:
    """``"2,3,224,224"`` -> (2, 3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise AuditError(f"--input-shape must be positive integers separated by commas, like 2,3,224,224; got {text!r}")
    return shape


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


class Progress:
    """A one-line progress bar on stderr, shown only once a step has taken more than a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.start = time.perf_counter()
        self.shown = False

    def step(self) -> None:
        self.done += 1
        if self.shown or time.perf_counter() - self.start > 1.0:
            self.shown = True
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def audit(
    model: nn.Module, target: str, scheme_name: str, input_shape: tuple[int, ...] | None, backward: bool
) -> dict[str, Any]:
    """Everything ``torchinit audit`` reports, as a JSON-ready dict."""
    try:
        scheme = resolve_scheme(scheme_name)
    except InitError as error:
        raise AuditError(str(error)) from error
    layers = []
    for path, module in model.named_modules():
        weight = module._parameters.get("weight")
        role = role_of(module, "weight") if weight is not None else None
        if weight is None or role is None or role.kind != "dense" or weight.numel() == 0:
            continue
        std = float(weight.detach().double().square().mean().sqrt())
        reference = scheme.dense_std(module, role)
        fans = role.fans
        layers.append({
            "path": path, "type": type(module).__name__, "shape": list(weight.shape),
            "fan_in": fans.fan_in if fans else None, "fan_out": fans.fan_out if fans else None,
            "chunks": fans.chunks if fans else 1, "std": std, "scheme_std": reference,
            "ratio": std / reference if reference else None, "torch_default": _looks_like_torch_default(weight),
        })  # fmt: skip
    result: dict[str, Any] = {"target": target, "scheme": scheme_name, "layers": layers}
    if input_shape is not None:
        result.update(_passes(model, input_shape, backward))
    return result


def _passes(model: nn.Module, shape: tuple[int, ...], backward: bool) -> dict[str, Any]:
    leaves = [(p, m) for p, m in model.named_modules() if not any(True for _ in m.children())]
    progress = Progress(len(leaves) * (2 if backward else 1), "forward/backward" if backward else "forward")
    activations: dict[str, dict[str, Any]] = {}

    def hook(path: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.is_floating_point() and path not in activations:
                activations[path] = {
                    "path": path,
                    "type": type(module).__name__,
                    "std": float(out.detach().float().std()),
                }
            progress.step()

        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in leaves]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype if param.is_floating_point() else x.dtype)
    try:
        with torch.set_grad_enabled(backward):
            out = model(x)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AuditError(f"input shape {','.join(map(str, shape))} does not fit the model: {first}") from error
    finally:
        for h in handles:
            h.remove()
    result: dict[str, Any] = {"input_shape": list(shape), "activations": list(activations.values())}
    if backward and isinstance(out, torch.Tensor) and out.requires_grad:
        model.zero_grad(set_to_none=True)
        out.float().square().mean().backward()  # type: ignore[no-untyped-call]
        grads = []
        for path, module in leaves:
            weight = module._parameters.get("weight")
            if weight is not None and weight.grad is not None:
                grads.append({"path": path, "type": type(module).__name__, "std": float(weight.grad.float().std())})
            progress.step()
        result["gradients"] = grads
    progress.close()
    return result


def format_audit(result: dict[str, Any]) -> str:
    """The audit as fixed-width tables."""
    lines = [f"audit of {result['target']}, compared with scheme {result['scheme']}", ""]
    head = (
        f"{'layer':<32}{'type':<18}{'shape':<18}{'fans (in, out)':<18}{'std':>10}{'scheme std':>12}{'ratio':>8}  flag"
    )
    lines += [head, "-" * len(head)]
    for layer in result["layers"]:
        fans = f"{layer['fan_in']:g}, {layer['fan_out']:g}" + (f" x{layer['chunks']}" if layer["chunks"] > 1 else "")
        ref = f"{layer['scheme_std']:.4g}" if layer["scheme_std"] else "-"
        ratio = f"{layer['ratio']:.3f}" if layer["ratio"] else "-"
        flag = "torch default init" if layer["torch_default"] else ""
        shape = "x".join(map(str, layer["shape"]))
        row = f"{layer['path']:<32}{layer['type']:<18}{shape:<18}{fans:<18}{layer['std']:>10.4g}{ref:>12}{ratio:>8}"
        lines.append(f"{row}  {flag}".rstrip())
    flagged = sum(layer["torch_default"] for layer in result["layers"])
    lines.append(
        f"{flagged} of {len(result['layers'])} layers still look like torch's default init (U(+-1/sqrt(fan_in)))."
    )
    if "activations" in result:
        grads = {g["path"]: g["std"] for g in result.get("gradients", [])}
        lines += ["", f"one pass on N(0, 1) input of shape {tuple(result['input_shape'])}:"]
        lines.append(f"{'module':<32}{'type':<18}{'activation std':>16}{'weight grad std':>18}")
        for act in result["activations"]:
            grad = f"{grads[act['path']]:.4g}" if act["path"] in grads else "-"
            lines.append(f"{act['path']:<32}{act['type']:<18}{act['std']:>16.4g}{grad:>18}")
    return "\n".join(lines)
