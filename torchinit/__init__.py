"""torchinit: correct weight initialization for PyTorch, with the true fans of every layer.

The front door: what users call, the types they annotate with, the errors and warnings they catch.
What plug-in authors need (layer descriptions, scheme protocol, plan types) is in `torchinit.extend`.
"""

from torchinit import _import_torch as _import_torch  # first: torch without the NumPy warning
from torchinit import extend as extend
from torchinit import recipes as recipes  # registers the recipes (gpt2, resnet, ...) as scheme names
from torchinit._api.construct import build, default_scheme
from torchinit._api.mixin import SchemeMixin, with_scheme
from torchinit._api.reinit import reinit
from torchinit._layers import torch_nn as _torch_nn  # noqa: F401 (registers torch.nn's layer descriptions)
from torchinit._layers import zoo as _zoo  # noqa: F401 (and the model zoos' layers, by structure)
from torchinit._layers.rules import Role, fans_of, register_fan_rule, register_layer, register_role_rule
from torchinit._maths.fans import Fans, torch_fans
from torchinit._maths.gains import calculate_gain, exact_gain
from torchinit._maths.initializers import (
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    uniform_std_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
)
from torchinit._maths.keyed import keyed_
from torchinit._maths.orthogonal import delta_orthogonal_, orthogonal_
from torchinit._maths.torch_init import (
    constant,
    constant_,
    dirac,
    dirac_,
    eye,
    eye_,
    kaiming_normal,
    kaiming_uniform,
    normal,
    normal_,
    ones_,
    orthogonal,
    sparse,
    sparse_,
    uniform,
    uniform_,
    xavier_normal,
    xavier_uniform,
    zeros_,
)
from torchinit._maths.truncated import trunc_normal_, truncated_normal_
from torchinit._model.residual import residual_branches
from torchinit._schemes.legacy import LegacyScheme
from torchinit._schemes.lsuv import LSUVScheme
from torchinit._schemes.overrides import Override
from torchinit._schemes.registry import SchemeLike, get_scheme, list_schemes, register_scheme
from torchinit._schemes.report import InitReport, ReportEntry
from torchinit._schemes.scheme import Scheme
from torchinit._types import (
    Distribution,
    FanMode,
    InitError,
    RecipeMismatchWarning,
    SchemeOverwrittenWarning,
    ShardedWithoutSeedWarning,
    TiedTableWarning,
    UncoveredParameterWarning,
)

__version__ = "0.2.0"

__all__ = [
    "Distribution",
    "FanMode",
    "Fans",
    "InitError",
    "InitReport",
    "Override",
    "RecipeMismatchWarning",
    "Scheme",
    "SchemeLike",
    "SchemeMixin",
    "SchemeOverwrittenWarning",
    "ShardedWithoutSeedWarning",
    "TiedTableWarning",
    "UncoveredParameterWarning",
    "__version__",
    "build",
    "calculate_gain",
    "constant_",
    "default_scheme",
    "delta_orthogonal_",
    "dirac_",
    "exact_gain",
    "eye_",
    "fans_of",
    "kaiming_normal_",
    "kaiming_uniform_",
    "keyed_",
    "lecun_normal_",
    "lecun_uniform_",
    "list_schemes",
    "normal_",
    "ones_",
    "orthogonal_",
    "reinit",
    "residual_branches",
    "sparse_",
    "trunc_normal_",
    "truncated_normal_",
    "uniform_",
    "variance_scaling_",
    "with_scheme",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

# torch.nn.init's deprecated names (``uniform`` for ``uniform_``, ...): importable, warn FutureWarning, not in __all__.
_DEPRECATED = (constant, dirac, eye, kaiming_normal, kaiming_uniform, normal, orthogonal, sparse, uniform,
               xavier_normal, xavier_uniform)  # fmt: skip

# Backward-compatible aliases (0.1 showed these in the README and docs); their home is torchinit.extend.
_ALIASES = (
    LSUVScheme, LegacyScheme, ReportEntry, Role, get_scheme, register_fan_rule, register_layer, register_role_rule,
    register_scheme, torch_fans, uniform_std_,
)  # fmt: skip
