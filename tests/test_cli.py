"""The command line, driven in a subprocess as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = str(ROOT / "examples" / "models.py")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchinit", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_demo_json_shows_default_collapsing_and_kaiming_holding() -> None:
    out = run("demo", "--json", "--depth", "12")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    mlp = result["mlp"]["std"]
    assert len(mlp["legacy"]) == 12
    assert mlp["legacy"][-1] < 0.05  # 0.41x per layer: only bias noise left
    assert 0.5 < mlp["kaiming_relu"][-1] < 2.0
    assert 0.5 < result["conv"]["std"]["kaiming_relu"][-1] < 2.0


def test_demo_table_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "demo.png"
    out = run("demo", "--depth", "3", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    assert "3 x Linear(512, 512) + ReLU" in out.stdout and "kaiming_relu" in out.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_flags_torch_defaults_and_measures_the_pass(tmp_path: Path) -> None:
    png = tmp_path / "audit.png"
    out = run("audit", f"{MODELS}:small_cnn", "--input-shape", "4,3,32,32", "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    depthwise = next(layer for layer in result["layers"] if layer["path"] == "2")
    assert (depthwise["fan_in"], depthwise["fan_out"]) == (9, 9)
    assert all(layer["torch_default"] for layer in result["layers"])
    assert all(0.35 < layer["ratio"] < 0.47 for layer in result["layers"])  # 1/sqrt(6) = 0.408
    assert [a["path"] for a in result["activations"]][:2] == ["0", "1"]
    assert {g["path"] for g in result["gradients"]} == {"0", "2", "4", "8"}
    assert png.exists()


def test_audit_after_reinit_is_not_flagged(tmp_path: Path) -> None:
    module = tmp_path / "fixed.py"
    module.write_text(
        "import torchinit\n"
        f"import sys; sys.path.insert(0, {str(ROOT / 'examples')!r})\n"
        "from models import deep_mlp\n"
        "def fixed():\n"
        "    m = deep_mlp(4, 128)\n"
        "    torchinit.reinit(m, 'kaiming_relu')\n"
        "    return m\n"
    )
    out = run("audit", f"{module}:fixed", "--input-shape", "64,128", "--no-backward")
    assert out.returncode == 0, out.stderr
    assert "0 of 4 layers still look like torch's default init" in out.stdout
    assert "weight grad std" in out.stdout


def test_audit_on_an_importable_module() -> None:
    out = run("audit", "torch.nn:Identity")
    assert out.returncode == 0 and "0 of 0 layers" in out.stdout


def test_schemes_lists_formulas() -> None:
    out = run("schemes")
    assert out.returncode == 0
    assert "kaiming_relu          dense weights N(0, s^2), s = sqrt(2 / fan_in)" in out.stdout
    assert "legacy" in out.stdout and "lsuv" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "examples/models.py"], "TARGET must be 'package.module:factory' or 'path/to/file.py:factory'"),
        (["audit", "nope/missing.py:f"], "no such file: nope/missing.py"),
        (["audit", "not_a_module_xyz:f"], "cannot import 'not_a_module_xyz': ModuleNotFoundError"),
        (["audit", f"{MODELS}:nothing"], "has no callable 'nothing'"),
        (["audit", f"{MODELS}:broken"], "failed: RuntimeError: this factory always fails"),
        (["audit", "torch:zeros"], "failed: TypeError"),
        (["audit", "math:pi"], "has no callable 'pi'"),
        (["audit", f"{MODELS}:small_cnn", "--input-shape", "4,3,x"], "--input-shape must be positive integers"),
        (
            ["audit", f"{MODELS}:small_cnn", "--input-shape", "4,5,32,32"],
            "input shape 4,5,32,32 does not fit the model",
        ),
        (["audit", f"{MODELS}:small_cnn", "--scheme", "kaiming"], "got scheme='kaiming'"),
        (["audit", f"{MODELS}:small_cnn", "--plot", "x.png"], "--plot draws the forward pass: give --input-shape too"),
    ],
)
def test_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert out.stdout == ""


def test_usage_errors_exit_2() -> None:
    out = run("demo", "--depth", "0")
    assert out.returncode == 2 and "--depth must be at least 1; got --depth=0" in out.stderr
    out = run("demoo")
    assert out.returncode == 2 and "invalid choice: 'demoo'" in out.stderr


def test_plot_without_matplotlib_says_how_to_get_it() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from torchinit._cli import main\n"
        "sys.exit(main(['demo', '--depth', '2', '--plot', 'never.png']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 2
    assert "plotting needs matplotlib: pip install 'torchinit[plot]'" in out.stderr


def test_console_script_is_declared() -> None:
    assert 'torchinit = "torchinit._cli:main"' in (ROOT / "pyproject.toml").read_text()
