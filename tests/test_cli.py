"""The command line, driven in a subprocess as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchinit", *args], capture_output=True, text=True, timeout=120)


def test_demo_json_shows_default_collapsing_and_kaiming_holding() -> None:
    out = run("demo", "--json", "--depth", "12")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    mlp = result["mlp"]["std"]
    assert len(mlp["legacy"]) == 12
    assert mlp["legacy"][-1] < 0.05  # 0.41x per layer: only bias noise left
    assert 0.5 < mlp["kaiming_relu"][-1] < 2.0
    assert 0.5 < result["conv"]["std"]["kaiming_relu"][-1] < 2.0


def test_demo_table() -> None:
    out = run("demo", "--depth", "3")
    assert out.returncode == 0, out.stderr
    assert "3 x Linear(512, 512) + ReLU" in out.stdout and "kaiming_relu" in out.stdout


def test_bad_arguments_exit_2() -> None:
    out = run("demo", "--depth", "0")
    assert out.returncode == 2 and "--depth must be at least 1; got --depth=0" in out.stderr
    out = run("demoo")
    assert out.returncode == 2 and "invalid choice: 'demoo'" in out.stderr
