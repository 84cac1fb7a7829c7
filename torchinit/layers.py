"""Ready-made layers that initialize with ``kaiming_relu`` (true fans, gain sqrt 2, zero bias).

Drop-in subclasses of the torch layers of the same name: ``from torchinit.layers import Conv2d``.
For another scheme, subclass with `torchinit.SchemeMixin` or call `torchinit.with_scheme`.
"""

from __future__ import annotations

from torch import nn

from torchinit._api.mixin import SchemeMixin

__all__ = [
    "Bilinear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Linear",
]


class Linear(SchemeMixin, nn.Linear):
    """``nn.Linear`` initialized by ``kaiming_relu``."""

    init_scheme = "kaiming_relu"


class Bilinear(SchemeMixin, nn.Bilinear):
    """``nn.Bilinear`` initialized by ``kaiming_relu`` (fan_in = in1 * in2)."""

    init_scheme = "kaiming_relu"


class Conv1d(SchemeMixin, nn.Conv1d):
    """``nn.Conv1d`` initialized by ``kaiming_relu``."""

    init_scheme = "kaiming_relu"


class Conv2d(SchemeMixin, nn.Conv2d):
    """``nn.Conv2d`` initialized by ``kaiming_relu``."""

    init_scheme = "kaiming_relu"


class Conv3d(SchemeMixin, nn.Conv3d):
    """``nn.Conv3d`` initialized by ``kaiming_relu``."""

    init_scheme = "kaiming_relu"


class ConvTranspose1d(SchemeMixin, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` initialized by ``kaiming_relu`` (true transposed fans)."""

    init_scheme = "kaiming_relu"


class ConvTranspose2d(SchemeMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` initialized by ``kaiming_relu`` (true transposed fans)."""

    init_scheme = "kaiming_relu"


class ConvTranspose3d(SchemeMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` initialized by ``kaiming_relu`` (true transposed fans)."""

    init_scheme = "kaiming_relu"
