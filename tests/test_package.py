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
    for module in (torchinit, torchinit.extend, torchinit.testing, strategies, torchinit.layers):
        assert module.__all__ == sorted(module.__all__)
        assert all(hasattr(module, name) for name in module.__all__)


def test_public_api() -> None:
    assert set(torchinit.__all__) == {
        "__version__",
        # initializers, gains, fans
        "kaiming_normal_", "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "orthogonal_", "trunc_normal_",
        "truncated_normal_", "variance_scaling_", "xavier_normal_", "xavier_uniform_", "calculate_gain",
        "exact_gain", "Fans", "fans_of", "delta_orthogonal_",
        # the rest of torch.nn.init (its deprecated aliases import too, outside __all__)
        "uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_", "sparse_",
        # reinit and schemes
        "reinit", "InitReport", "Scheme", "Override", "list_schemes", "residual_branches",
        # the keyed stream (what reinit(seed=) draws), for any tensor or shard
        "keyed_",
        # construction time
        "SchemeMixin", "build", "default_scheme", "with_scheme",
        # types, errors and warnings
        "Distribution", "FanMode", "SchemeLike", "InitError", "UncoveredParameterWarning", "ShardedWithoutSeedWarning",
        "RecipeMismatchWarning", "TiedTableWarning",
        "SchemeOverwrittenWarning",
    }  # fmt: skip
    assert set(torchinit.extend.__all__) == {
        "ACTIVATIONS", "Action", "BaseScheme", "Call", "FanRule", "LSUVLayer", "LSUVScheme", "LayerRule",
        "LegacyDraws", "LegacyRule", "LegacyScheme", "Plan", "ROLES", "ReportEntry", "Role", "RoleName", "RoleRule",
        "Step", "Target", "draw_", "get_scheme", "plan_by_role", "register_fan_rule", "register_layer",
        "register_role_rule", "register_scheme", "torch_fans", "uniform_std_",
    }  # fmt: skip


def test_aliases_shown_in_the_0_1_docs_still_import() -> None:
    for name in ("LSUVScheme", "LegacyScheme", "ReportEntry", "Role", "get_scheme", "register_fan_rule",
                 "register_layer", "register_role_rule", "register_scheme", "torch_fans", "uniform_std_"):  # fmt: skip
        assert getattr(torchinit, name) is getattr(torchinit.extend, name)


def test_no_private_name_is_imported_across_modules() -> None:
    import ast

    for path in (ROOT / "torchinit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchinit"):
                package = ROOT / (node.module or "").replace(".", "/")
                private = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__" and not (package / f"{a.name}.py").exists()
                ]  # a private *module* is fine; a private name inside one is not
                assert not private, f"{path.name} imports {private} from {node.module}"


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


def test_ci_runs_the_readme_test_command_exactly() -> None:
    readme = (ROOT / "README.md").read_text()
    command = next(
        line for line in readme.splitlines() if line.startswith('pip install torch==2.13.0 && pip install -e ".[test')
    )
    assert "NO_MKDOCS_2_WARNING=1 mkdocs build --strict" in command  # no mkdocs-material banner for a newcomer
    # tests/test_mup.py compares against Microsoft's mup; its declared dependencies would replace the CPU torch
    assert "&& pip install --no-deps mup==1.0.0 &&" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
