"""Extending torchinit: describe new layer types, write new schemes, read plans and reports.

- **Layers.** `register_layer` describes a module type once: its parameters' fans and roles, torch's
  default draws (for ``legacy``), the method its constructor draws defaults in, and cloned stacks.
  `register_fan_rule` and `register_role_rule` set one part of that description.
- **Schemes.** Every scheme is a `BaseScheme`: `BaseScheme.plan` turns a model into a `Plan` of
  `Step`\\ s, each an `Action` on a `Target`; `plan_by_role` is the walk role-based schemes share.
  `register_scheme` makes a scheme available by name.
- **Draws.** `draw_` is the one function every random write goes through.
"""

from torchinit._layers.rules import (
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
from torchinit._maths.draw import Action, draw_
from torchinit._maths.fans import torch_fans
from torchinit._maths.gains import ACTIVATIONS
from torchinit._maths.initializers import uniform_std_
from torchinit._model.walk import Target
from torchinit._model.write import Step
from torchinit._schemes.legacy import LegacyScheme
from torchinit._schemes.lsuv import LSUVLayer, LSUVScheme
from torchinit._schemes.plan import Plan, plan_by_role
from torchinit._schemes.registry import BaseScheme, Call, get_scheme, register_scheme
from torchinit._schemes.report import ReportEntry

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
