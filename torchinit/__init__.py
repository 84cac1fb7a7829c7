"""torchinit: correct weight initialization for PyTorch, with the true fans of every layer."""

from torchinit._fans import FanRule, Fans, fans_of, register_fan_rule, torch_fans
from torchinit._gains import ACTIVATIONS, calculate_gain, exact_gain
from torchinit._initializers import (
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    orthogonal_,
    trunc_normal_,
    truncated_normal_,
    uniform_std_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
)
from torchinit._types import Distribution, FanMode, InitError

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Distribution",
    "FanMode",
    "FanRule",
    "Fans",
    "InitError",
    "__version__",
    "calculate_gain",
    "exact_gain",
    "fans_of",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "orthogonal_",
    "register_fan_rule",
    "torch_fans",
    "trunc_normal_",
    "truncated_normal_",
    "uniform_std_",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
]
