"""The package surface: exports, import footprint, version, typing marker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torchinit
import torchinit.layers
import torchinit.testing
from torchinit.testing import strategies

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_complete() -> None:
    for module in (torchinit, torchinit.testing, strategies, torchinit.layers):
        assert module.__all__ == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)


def test_public_api() -> None:
    assert set(torchinit.__all__) == {
        "ACTIVATIONS", "Distribution", "FanMode", "FanRule", "Fans", "InitError", "__version__",
        "calculate_gain", "exact_gain", "fans_of", "kaiming_normal_", "kaiming_uniform_", "lecun_normal_",
        "lecun_uniform_", "orthogonal_", "register_fan_rule", "torch_fans", "trunc_normal_", "truncated_normal_",
        "uniform_std_", "variance_scaling_", "xavier_normal_", "xavier_uniform_",
        # reinit
        "InitReport", "LegacyScheme", "Override", "ROLES", "ReportEntry", "Role", "RoleName", "RoleRule", "Scheme",
        "SchemeDistribution", "UncoveredParameterWarning", "get_scheme", "list_schemes", "register_role_rule",
        "register_scheme", "reinit",
        # construction time
        "SchemeMixin", "build", "default_scheme", "with_scheme",
        # lsuv
        "LSUVLayer", "LSUVScheme", "ShardedWithoutSeedWarning",
    }  # fmt: skip


def test_public_callables_have_docstrings() -> None:
    for name in torchinit.__all__:
        obj = getattr(torchinit, name)
        if callable(obj) and not name[0].isupper():
            assert obj.__doc__ and len(obj.__doc__) > 40, name


def test_import_torchinit_imports_nothing_but_torch() -> None:
    code = (
        "import sys, torch; before = set(sys.modules); import torchinit; "
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith('torchinit')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    code = "import sys, torchinit.testing; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the assertions need only torch


def test_version_and_changelog() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", torchinit.__version__)
    assert f"## {torchinit.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    assert (ROOT / "torchinit" / "py.typed").exists()
    assert "MIT License" in (ROOT / "LICENSE").read_text()
