"""What a layer's weight means, found by running the layer: the neutral value of a norm's weight.

Structure says a parameter is a norm's weight; it cannot say what value leaves the normalized input
unscaled. Most norms compute ``x_hat * w`` (neutral 1), but Gemma's RMSNorm (and others) compute
``x_hat * (1 + w)`` and start at ``w = 0``: setting 1 there doubles every norm's output. So the layer is run
on a small probe input with its own weight replaced by 0, 1 and 2 (bias 0), on CPU float32 copies of its own
parameters and buffers (`torch.func.functional_call`: the layer's tensors are untouched), on CPU whatever the
default device, with torch's RNG forked (a forward that draws, as dropout in training mode, leaves it as it was).
When the output is ``x_hat * (k + w)`` elementwise, the neutral weight is ``1 - k``. The answer is cached per
class and settings (flags, sizes, a config object's own plain values), so a model pays for one probe per kind of
norm; a layer with a setting of another kind (a function, a tensor, a list) is measured on its own.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from torchinit._layers.rules import NORM, Role

_CACHE: dict[tuple[Any, ...], tuple[float, str] | None] = {}
_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _plain(value: object) -> bool:
    return type(value) in _PLAIN or (type(value) is tuple and all(type(v) in _PLAIN for v in value))


def _setting(module: nn.Module) -> tuple[Any, ...] | None:
    """What can set apart what two instances of one norm class compute: its plain settings (flags, sizes, eps,
    shapes), and a settings object it holds (a config) by that object's own plain values. None when a public
    attribute is anything else (a function, a tensor, a list): then the layer is not cached."""
    found: list[tuple[Any, ...]] = []
    for name, value in sorted(vars(module).items()):
        if name == "training" or (name.startswith("_") and not _plain(value)):
            continue  # nn.Module's own bookkeeping (parameters, buffers, hooks)
        if _plain(value):
            found.append((name, value))
        elif hasattr(value, "__dict__") and not callable(value) and not isinstance(value, (nn.Module, torch.Tensor)):
            found.append((name, type(value), tuple((k, v) for k, v in sorted(vars(value).items()) if _plain(v))))
        else:
            return None
    return tuple(found)


def neutral_norm_weight(module: nn.Module, name: str) -> tuple[float, str] | None:
    """The weight value at which ``module`` (a norm) passes its normalized input unscaled, and how it was
    found, when that value is not 1; None when it is 1 or cannot be measured (then 1 is assumed, as for
    every norm torch and most libraries define).

    Example: for Gemma's RMSNorm (``x_hat * (1 + w)``) this is ``(0.0, "measured: output x_hat * (1 + w)")``.
    """
    setting = _setting(module)
    if setting is None:
        return _measure(module, name)
    key = (type(module), name, setting)
    if key not in _CACHE:
        if len(_CACHE) > 1024:
            _CACHE.clear()
        _CACHE[key] = _measure(module, name)
    return _CACHE[key]


def _outputs(module: nn.Module, name: str, x: torch.Tensor, state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The module's output for the weight set to 0, 1 and 2 (bias 0), on copies of its own tensors."""
    found = []
    for value in (0.0, 1.0, 2.0):
        tensors = dict(state)
        tensors[name] = torch.full_like(state[name], value)
        if "bias" in tensors and name != "bias":
            tensors["bias"] = torch.zeros_like(tensors["bias"])
        out = torch.func.functional_call(module, tensors, (x,))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError("the output is not a tensor shaped like the input")
        found.append(out.detach().double())
    return found


def _measure(module: nn.Module, name: str) -> tuple[float, str] | None:
    """`_probe` on CPU (the default device may be meta) with torch's RNG put back (a forward may draw)."""
    with torch.device("cpu"), torch.random.fork_rng(devices=[]):
        return _probe(module, name)


def _probe(module: nn.Module, name: str) -> tuple[float, str] | None:
    weight = module._parameters.get(name)
    if weight is None or weight.dim() != 1 or not weight.numel():
        return None
    width = weight.numel()
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
        for k, v in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if v is not None and not v.is_meta
    }
    if name not in state:
        state[name] = torch.zeros(width)
    generator = torch.Generator().manual_seed(0)
    for shape in ((4, width), (2, width, 3), (2, width, 3, 3)):
        x = torch.randn(shape, generator=generator)
        try:
            with torch.no_grad():
                out0, out1, out2 = _outputs(module, name, x, state)
        except Exception:  # third-party forward code: a shape it refuses is just not this layer's
            continue
        unit = out1 - out0  # x_hat, when the output is x_hat * (k + w)
        scale = float(unit.square().mean().sqrt())
        if not math.isfinite(scale) or scale == 0.0:
            return None
        if not torch.allclose(out2 - out1, unit, rtol=1e-4, atol=1e-6 * scale):
            return None  # not affine in the weight: nothing to say
        k = float((out0 * unit).sum() / unit.square().sum())
        if not torch.allclose(out0, k * unit, rtol=1e-4, atol=1e-5 * scale) or abs(k) < 1e-6:
            return None  # offset 0 (the usual x_hat * w), or not an offset of x_hat
        neutral = round(1.0 - k, 6)
        return neutral, f"measured: output x_hat * ({k:g} + w), so w = {neutral:g} passes x_hat unscaled"
    return None


_CENTRED: dict[tuple[float, str], Role] = {}  # one shared role per measured neutral value


def norm_role(module: nn.Module, name: str) -> Role:
    """A norm's role for ``weight`` or ``bias``; the weight's neutral value measured (`neutral_norm_weight`)
    when it is not 1."""
    measured = neutral_norm_weight(module, name) if name == "weight" else None
    if measured is None:
        return NORM[name]
    role = _CENTRED.get(measured)
    if role is None:
        role = _CENTRED[measured] = Role("norm_weight", value=measured[0], via=measured[1])
    return role
