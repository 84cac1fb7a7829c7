"""torchinit: correct weight initialization for PyTorch, with the true fans of every layer."""

from torchinit._construct import build, default_scheme
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
from torchinit._lsuv import LSUVLayer, LSUVScheme
from torchinit._mixin import SchemeMixin, with_scheme
from torchinit._reinit import ShardedWithoutSeedWarning, UncoveredParameterWarning, reinit
from torchinit._report import InitReport, ReportEntry
from torchinit._roles import ROLES, Role, RoleName, RoleRule, register_role_rule
from torchinit._schemes import (
    LegacyScheme,
    Override,
    Scheme,
    SchemeDistribution,
    get_scheme,
    list_schemes,
    register_scheme,
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
    "InitReport",
    "LSUVLayer",
    "LSUVScheme",
    "LegacyScheme",
    "Override",
    "ROLES",
    "ReportEntry",
    "Role",
    "RoleName",
    "RoleRule",
    "Scheme",
    "SchemeDistribution",
    "SchemeMixin",
    "ShardedWithoutSeedWarning",
    "UncoveredParameterWarning",
    "__version__",
    "build",
    "calculate_gain",
    "default_scheme",
    "exact_gain",
    "fans_of",
    "get_scheme",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lecun_normal_",
    "lecun_uniform_",
    "list_schemes",
    "orthogonal_",
    "register_fan_rule",
    "register_role_rule",
    "register_scheme",
    "reinit",
    "torch_fans",
    "trunc_normal_",
    "truncated_normal_",
    "uniform_std_",
    "variance_scaling_",
    "with_scheme",
    "xavier_normal_",
    "xavier_uniform_",
]
