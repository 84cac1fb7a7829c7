"""Extending torchinit: describe new layer types, write new schemes, read plans and reports.

- **Layers.** `register_layer` describes a module type once: its parameters' fans and roles, torch's
  default draws (for ``legacy``), the method its constructor draws defaults in, and cloned stacks.
  `register_fan_rule` and `register_role_rule` set one part of that description.
- **Schemes.** Every scheme is a `BaseScheme`: `BaseScheme.plan` turns a model into a `Plan` of
  `Step`\\ s, each an `Action` on a `Target`; `plan_by_role` is the walk role-based schemes share.
  `register_scheme` makes a scheme available by name.
- **Draws.** `draw_` is the one function every random write goes through.
"""

from torchinit._draw import Action, draw_
from torchinit._fans import torch_fans
from torchinit._gains import ACTIVATIONS
from torchinit._initializers import uniform_std_
from torchinit._layers import (
    ROLES,
    FanRule,
    LayerRule,
    LegacyDraws,
    LegacyRule,
    Role,
    RoleName,
    RoleRule,
    register_fan_rule,
    register_layer,
    register_role_rule,
)
from torchinit._legacy import LegacyScheme
from torchinit._lsuv import LSUVLayer, LSUVScheme
from torchinit._plan import Plan, plan_by_role
from torchinit._registry import BaseScheme, Call, get_scheme, register_scheme
from torchinit._report import ReportEntry
from torchinit._walk import Target
from torchinit._write import Step

__all__ = [
    "ACTIVATIONS",
    "Action",
    "BaseScheme",
    "Call",
    "FanRule",
    "LSUVLayer",
    "LSUVScheme",
    "LayerRule",
    "LegacyDraws",
    "LegacyRule",
    "LegacyScheme",
    "Plan",
    "ROLES",
    "ReportEntry",
    "Role",
    "RoleName",
    "RoleRule",
    "Step",
    "Target",
    "draw_",
    "get_scheme",
    "plan_by_role",
    "register_fan_rule",
    "register_layer",
    "register_role_rule",
    "register_scheme",
    "torch_fans",
    "uniform_std_",
]
