"""The command line, driven in a subprocess as a user would run it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from torchinit._tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = str(ROOT / "examples" / "models.py")
FACTORIES = str(ROOT / "tests" / "audit_factories.py")


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
    assert all(layer["torch_default"] and layer["flag"] == "torch default" for layer in result["layers"])
    assert all(0.35 < layer["ratio"] < 0.47 for layer in result["layers"])  # 1/sqrt(6) = 0.408
    assert result["loss"] == "out.float().square().mean()" and result["seed"] == 0
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
    assert "flagged 0 of 4 layers (weight std outside 0.8x-1.25x the scheme's)" in out.stdout
    assert "no backward (--no-backward)" in out.stdout
    first = [line.split() for line in out.stdout.splitlines() if line.startswith("0 ")][-1]  # the pass's row
    assert first[:2] == ["0", "Linear"] and all(float(v) > 0 for v in first[2:4])  # current and scheme columns


def test_audit_on_an_importable_module() -> None:
    out = run("audit", "torch.nn:Identity")
    assert out.returncode == 0 and "flagged 0 of 0 layers" in out.stdout


@pytest.mark.integration
def test_audit_of_a_hugging_face_lm_with_token_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    page = tmp_path / "lm.html"  # in process: importing transformers in a subprocess costs seconds
    assert (
        main(["audit", f"{FACTORIES}:tiny_gpt2", "--input", "input_ids=2,16:long", "--json", "--html", str(page)]) == 0
    )
    out = capsys.readouterr()
    assert out.err == ""
    result = json.loads(out.out)
    assert result["inputs"] == ["input_ids: integers in [0, 100), int64 2x16"]
    assert result["loss"] == "out.logits.float().square().mean()"
    assert {a["path"] for a in result["activations"]} >= {"transformer.wte", "transformer.h.1.mlp.c_proj", "lm_head"}
    assert page.read_text().startswith("<!doctype html>")


def test_audit_of_token_ids_as_a_positional_input(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", f"{FACTORIES}:token_mlp", "--input-shape", "2,16", "--input-dtype", "long", "--input-range", "0,9"]
    assert main([*args, "--no-compare", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "on x: integers in [0, 9), int64 2x16 (seed 1)" in out and "backward: loss = out.float()" in out


def test_plot_of_the_weights_alone_without_an_input(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "weights.png"
    out = run("audit", f"{MODELS}:small_cnn", "--plot", str(png), "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


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
            "the input does not fit the model: RuntimeError: Given groups=1, weight of size [32, 3, 3, 3]",
        ),
        (["audit", f"{MODELS}:small_cnn", "--scheme", "kaiming"], "got scheme='kaiming'"),
        (
            ["audit", f"{MODELS}:small_cnn", "--plot", "missing/dir/a.png"],
            "--plot missing/dir/a.png: folder missing/dir",
        ),
    ],
)
def test_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["audit", f"{MODELS}:small_cnn", "--html", "missing/a.html"],
            "--html missing/a.html: folder missing does not",
        ),
        (["audit", f"{MODELS}:small_cnn", "--html", "tests"], "--html tests: is a folder; give a file name"),
        (["audit", f"{MODELS}:small_cnn", "--input-dtype", "long"], "--input-dtype and --input-range describe"),
        (["audit", f"{MODELS}:small_cnn", "--input", "x"], "--input must be NAME=SHAPE[:DTYPE[:LOW,HIGH]]"),
        (["audit", f"{MODELS}:small_cnn", "--band", "2,1"], "--band must be two numbers LOW,HIGH with LOW < HIGH"),
        (["audit", f"{MODELS}:small_cnn", "--band", "0,1"], "--band must be two positive numbers LOW,HIGH"),
        (
            ["audit", f"{MODELS}:small_cnn", "--input-shape", "2,3", "--input-dtype", "long"],
            "integer input x needs a value range (--input-range, e.g. 0,1000)",
        ),
        (["demo", "--plot", "missing/dir/demo.png"], "--plot missing/dir/demo.png: folder missing/dir does not exist"),
        (
            ["audit", f"{MODELS}:small_cnn", "--seed", "100000000000000000000"],
            "--seed must be an integer from -2**63 to 2**64 - 1 (torch's seed range); got 100000000000000000000",
        ),
        (["demo", "--seed", "-100000000000000000000"], "--seed must be an integer from -2**63 to 2**64 - 1"),
        (
            ["audit", f"{MODELS}:small_cnn", "--input-shape", "8,1000000,1000000"],
            "--input-shape 8,1000000,1000000: 8,000,000,000,000 elements of float32 need 32.0 TB, more than the ",
        ),
        (
            ["audit", f"{MODELS}:small_cnn", "--input-shape", "4000000,1000000,1000000,1000000"],
            "elements of float32 need 16000000000.0 PB",
        ),
        (
            [
                "audit",
                f"{FACTORIES}:token_mlp",
                "--input-shape",
                "2,8",
                "--input-dtype",
                "long",
                "--input-range",
                "0,1e30",
            ],
            "--input-range 0,1e+30: int64 integers need whole numbers LOW,HIGH with -9223372036854775808 <= LOW < ",
        ),
        (
            ["audit", f"{FACTORIES}:token_mlp", "--input", "ids=2,8:uint8:0,1000"],
            "--input ids's LOW,HIGH 0,1000: uint8 integers need whole numbers LOW,HIGH with 0 <= LOW < HIGH <= 256",
        ),
        (
            ["audit", f"{MODELS}:small_cnn", "--input-shape", "2,3,8,8", "--input-range", "0,1e300"],
            "--input-range 0,1e+300: a float32 input needs finite bounds within +-3.40282e+38",
        ),
    ],
)
def test_more_errors_exit_2_with_one_line_in_process(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(args) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and message in out.err and out.out == "", out.err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder no one can write into")
def test_an_output_the_permission_bits_allow_but_the_system_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", f"{MODELS}:small_cnn", "--html", "/proc/torchinit-audit.html"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1
    assert "--html /proc/torchinit-audit.html: cannot be written (" in out.err and "choose another path" in out.err


def test_the_output_probe_leaves_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "a.html"
    assert main(["audit", f"{MODELS}:nothing", "--html", str(page)]) == 2  # fails after the probe
    assert not page.exists() and "has no callable 'nothing'" in capsys.readouterr().err


def test_a_failed_write_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    assert main(["audit", f"{MODELS}:small_cnn", "--html", str(tmp_path / "a.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--html {tmp_path / 'a.html'}: writing it failed (No space left on device)" in err


def test_usage_errors_exit_2() -> None:
    out = run("demo", "--depth", "0")
    assert out.returncode == 2 and "--depth must be at least 1; got --depth=0" in out.stderr
    out = run("demoo")
    assert out.returncode == 2 and "invalid choice: 'demoo'" in out.stderr


@pytest.mark.parametrize("command", ["demo --depth 2", f"audit {MODELS}:small_cnn --input-shape 2,3,8,8"])
def test_plot_without_matplotlib_says_how_to_get_it_before_any_work(command: str) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from torchinit._tools.cli import main\n"
        f"sys.exit(main({command.split()!r} + ['--plot', 'never.png']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 2
    assert out.stdout == ""  # nothing measured, nothing printed
    assert "plotting needs matplotlib: pip install 'torchinit[plot]'" in out.stderr


def test_html_without_matplotlib_still_writes_the_tables(tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from torchinit._tools.cli import main\n"
        f"sys.exit(main(['audit', {MODELS + ':small_cnn'!r}, '--html', {str(page)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "No figure: plotting needs matplotlib" in page.read_text()


def test_the_first_run_prints_no_numpy_warning() -> None:
    # torch warns at import when NumPy is missing (a fresh venv with only torch): the demo must not show it
    code = (
        "import sys; sys.modules['numpy'] = None; sys.argv = ['torchinit', 'demo', '--depth', '2']\n"
        "import runpy; runpy.run_module('torchinit', run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and out.stdout.startswith("2 x Linear(512, 512) + ReLU")


def test_console_script_is_declared() -> None:
    assert 'torchinit = "torchinit._tools.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_plot_and_html_of_a_model_with_an_inf_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png, page = tmp_path / "a.png", tmp_path / "a.html"
    args = ["audit", f"{FACTORIES}:inf_weight", "--plot", str(png), "--html", str(page)]
    assert main(args) == 0, capsys.readouterr().err  # the weights alone: an inf ratio
    assert main([*args, "--input-shape", "2,16"]) == 0, capsys.readouterr().err  # NaN and inf activations too
    assert capsys.readouterr().err == ""
    assert png.read_bytes()[:4] == b"\x89PNG" and "<img alt='audit figure'" in page.read_text()


def test_json_is_strict_with_inf_and_nan_as_strings(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    assert main(["audit", f"{FACTORIES}:inf_weight", "--input-shape", "2,16", "--json"]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    first = result["layers"][0]
    assert first["std"] == first["ratio"] == "Infinity" and float(first["std"]) == math.inf
    assert result["activations"][0]["std"] == "NaN"
    assert isinstance(result["layers"][1]["std"], float)  # finite numbers stay numbers


def _factory_file(folder: Path, name: str = "model.py") -> Path:
    source = folder / name
    source.write_text("from torch import nn\n\ndef make():\n    return nn.Linear(4, 4)\n")
    return source


def test_an_output_naming_the_target_s_source_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _factory_file(tmp_path)
    code = source.read_text()
    assert main(["audit", f"{source}:make", "--html", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--html {source}: is TARGET's source file {source.resolve()}" in err
    monkeypatch.syspath_prepend(str(tmp_path))  # a module TARGET (pkg.mod:fn) too, its file found without running it
    monkeypatch.chdir(tmp_path)
    _factory_file(tmp_path, "torchinit_audit_target_mod.py")
    assert main(["audit", "torchinit_audit_target_mod:make", "--plot", "torchinit_audit_target_mod.py"]) == 2
    assert "--plot torchinit_audit_target_mod.py: is TARGET's source file" in capsys.readouterr().err
    assert source.read_text() == code


def test_two_outputs_naming_one_file_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page, link = tmp_path / "a.html", tmp_path / "link.html"
    link.symlink_to(page)
    for plot in (page, link):  # the same spelling, or one through a symlink
        assert main(["audit", f"{MODELS}:small_cnn", "--plot", str(plot), "--html", str(page)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--plot {plot} and --html {page} name the same file ({page})" in err
    assert not page.exists()


def test_a_dangling_symlink_output_is_followed_and_the_probe_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    real, link = tmp_path / "out" / "real.html", tmp_path / "link.html"
    link.symlink_to(real)  # dangling until the report is written
    assert main(["audit", f"{MODELS}:nothing", "--html", str(link)]) == 2  # fails after the probe
    assert "has no callable 'nothing'" in capsys.readouterr().err
    assert not real.exists() and link.is_symlink()  # no stray file at the target, the link left as it was
    assert main(["audit", f"{MODELS}:small_cnn", "--html", str(link)]) == 0
    assert link.is_symlink() and real.read_text().startswith("<!doctype html>")


def test_a_factory_file_with_future_annotations_and_a_dataclass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "configured.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from torch import nn\n\n"
        "@dataclass\n"
        "class Config:\n"
        "    width: int = 8\n\n"
        "def make() -> nn.Module:\n"
        "    return nn.Linear(Config().width, 4)\n"
    )
    assert main(["audit", f"{source}:make"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "configured.py:make (Linear)" in out and " 4x8 " in out


def test_the_console_script_imports_a_module_target_from_the_current_folder(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "torchinit"
    if not script.is_file():
        pytest.skip("the torchinit console script is not installed next to this Python")
    package = tmp_path / "my_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    _factory_file(package, "nets.py")
    out = subprocess.run([str(script), "audit", "my_models.nets:make"], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "audit of my_models.nets:make (Linear)" in out.stdout
