"""Spectral norm on a written weight: its power-iteration buffers, backed up and refreshed after a write.

Both forms are handled: ``torch.nn.utils.parametrizations.spectral_norm`` (a parametrization with ``_u`` and
``_v`` buffers) and the older ``torch.nn.utils.spectral_norm`` (a forward pre-hook on ``weight_orig``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from torchinit._model.walk import Target


def refresh_spectral(target: Target, generator: torch.Generator | None) -> None:
    """After a spectral-normed weight is written, redraw its power-iteration vectors and iterate as torch's
    constructor does (15 steps), so eval-mode forwards divide by the new weight's spectral norm."""
    owner = target.owner
    if target.parametrized:
        for p in owner.parametrizations[target.name]:  # type: ignore[index]
            if type(p).__name__ == "_SpectralNorm" and "_u" in p._buffers:
                original = owner.parametrizations[target.name].original  # type: ignore[index, union-attr]
                _redraw_unit(p._u, p.eps, generator)
                _redraw_unit(p._v, p.eps, generator)
                matrix = p._reshape_weight_to_matrix(original)
                _converge(functools.partial(p._power_method, matrix, 5), p._u)
        return
    name = target.name[: -len("_orig")]
    hook: Any
    for hook in list(owner._forward_pre_hooks.values()):
        if type(hook).__name__ == "SpectralNorm" and getattr(hook, "name", None) == name:
            _redraw_unit(owner._buffers[name + "_u"], hook.eps, generator)  # type: ignore[arg-type]
            _redraw_unit(owner._buffers[name + "_v"], hook.eps, generator)  # type: ignore[arg-type]
            step = functools.partial(hook.compute_weight, owner, do_power_iteration=True)
            _converge(step, owner._buffers[name + "_u"])  # type: ignore[arg-type]
            setattr(owner, name, hook.compute_weight(owner, do_power_iteration=False))


def _converge(iterate: Callable[[], object], u: torch.Tensor, rounds: int = 100) -> None:
    """Power iterations until the left vector stops moving (torch's constructor stops after 15, which
    leaves the spectral norm estimate ~1% off on random matrices)."""
    for _ in range(rounds):
        before = u.clone()
        iterate()
        if float((u - before).abs().max()) <= 4 * torch.finfo(u.dtype).eps:
            return


def _redraw_unit(vector: torch.Tensor, eps: float, generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != vector.device.type:
        vector.copy_(
            torch.empty(vector.shape, dtype=vector.dtype, device=generator.device).normal_(0, 1, generator=generator)
        )
    else:
        vector.normal_(0, 1, generator=generator)
    vector.div_(vector.norm().clamp_min(eps))
