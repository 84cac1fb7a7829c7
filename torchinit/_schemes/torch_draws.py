r"""What ``torch.nn.init``'s functions draw, as Actions: the pieces a recipe states when it transcribes a library's
init (Hugging Face's, torchvision's, timm's), each with torch's shape-based fans as those libraries call them."""

from __future__ import annotations

import math

import torch

from torchinit._maths.distributions import SQRT3, truncated_normal_std
from torchinit._maths.draw import Action, xavier_std
from torchinit._maths.fans import torch_fans


def xavier_uniform(param: torch.Tensor, formula: str) -> Action:
    r"""torch's ``xavier_uniform_``: $\mathcal U(\pm\sqrt{6/(\mathrm{fan_{in}} + \mathrm{fan_{out}})})$, torch's
    shape-based fans."""
    fans = torch_fans(param)
    return Action("uniform", SQRT3 * xavier_std(1.0, fans.fan_in, fans.fan_out), formula=formula)


def kaiming_fan_out(param: torch.Tensor) -> Action:
    r"""torch's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``: $\mathcal N(0, 2/\mathrm{fan_{out}})$ with
    torch's fans ($c_\mathrm{out} k_h k_w$: groups and stride not counted)."""
    return Action(
        "normal", math.sqrt(2.0 / torch_fans(param).fan_out), formula="kaiming_normal_(fan_out, relu), torch fans"
    )


def trunc_normal_abs(sigma: float, formula: str) -> Action:
    r"""torch's ``trunc_normal_(std=sigma)``: $\mathcal N(0, \sigma^2)$ cut at $\pm 2$ *absolute*, so at
    $\pm 2/\sigma$ sigmas ($\pm 100\sigma$ at 0.02); the std after the cut is $\sigma\,\mathrm{sd}(Z \mid |Z| <
    2/\sigma)$. $\sigma = 0$: zeros."""
    if sigma == 0.0:
        return Action("constant", 0.0, formula=formula)
    cut = 2.0 / sigma
    return Action("truncated_normal", sigma * truncated_normal_std(-cut, cut), cut=cut, formula=formula)
