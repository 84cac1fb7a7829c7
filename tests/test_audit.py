"""The audit in process: flags and their reasons, raw parameters, inputs (tokens, keywords, seeds), every call
of a reused module, the scheme's columns, the figure and the HTML report."""

from __future__ import annotations

import io
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import audit_factories
import pytest
import torch
from torch import nn

from torchinit._tools import audit as _audit
from torchinit._tools import audit_format as _audit_format
from torchinit._tools import audit_inputs as _audit_inputs
from torchinit._tools import plot as _plot
from torchinit._tools.audit_inputs import AuditError, InputSpec
from torchinit.testing import assert_std

ROOT = Path(__file__).resolve().parents[1]


def run_audit(model: nn.Module, *inputs: InputSpec, scheme: str = "kaiming_relu", **options: Any) -> dict[str, Any]:
    return _audit.audit(model, "test:model", scheme, list(inputs), **options)


def by_path(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {layer["path"]: layer for layer in result["layers"]}


def test_layers_outside_the_band_are_flagged_with_the_reason() -> None:
    model = audit_factories.mixed_scales()
    layers = by_path(run_audit(model))
    flags = {path: layer["flag"] for path, layer in layers.items()}
    assert flags == {
        "layers.0": "too small", "layers.1": "too small", "layers.2": None, "layers.3": "too large",
        "default": "torch default", "scaled.fc": None,
    }  # fmt: skip
    weight = model.layers[0].weight.detach().double()
    assert layers["layers.0"]["ratio"] == pytest.approx(float(weight.square().mean().sqrt()) / math.sqrt(2 / 64))
    assert_std(weight, 0.22 * math.sqrt(2 / 64))  # the factory drew what it says: 0.22x the scheme's std
    assert layers["default"]["torch_default"] and not layers["layers.0"]["torch_default"]


@pytest.mark.parametrize(
    ("ratio", "torch_default", "flag"),
    [(None, True, None), (0.8, True, None), (1.25, False, None), (0.41, True, "torch default"),
     (0.41, False, "too small"), (2.0, False, "too large"), (2.0, True, "torch default")],
)  # fmt: skip
def test_flag_of(ratio: float | None, torch_default: bool, flag: str | None) -> None:
    assert _audit.flag_of(ratio, torch_default) == flag


def test_a_torch_default_layer_is_flagged_whatever_model_it_sits_in() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(128, 64)
            self.tiny = nn.Linear(4, 4)  # 16 elements: too few to recognize torch's law, still 0.41x

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    torch.manual_seed(0)
    alone = by_path(run_audit(nn.Sequential(nn.Linear(128, 64))))["0"]
    inside = by_path(run_audit(Custom()))
    assert alone["flag"] == inside["proj"]["flag"] == "torch default"
    assert inside["tiny"]["flag"] == "too small" and not inside["tiny"]["torch_default"]


def test_raw_parameters_are_listed() -> None:
    result = run_audit(audit_factories.mixed_scales())
    assert [(p["path"], p["type"], p["shape"]) for p in result["raw_parameters"]] == [("scaled.gain", "Scaled", [64])]
    assert result["raw_parameters"][0]["std"] == 1.0
    text = _audit_format.format_audit(result)
    assert "raw parameters (no rule covers them; reinit leaves them as they are and warns):" in text
    assert re.search(r"scaled\.gain\s+Scaled\s+64\s+1\b", text)


@pytest.mark.integration
def test_the_scheme_std_comes_from_the_scheme_s_plan() -> None:
    pytest.importorskip("transformers")
    model = audit_factories.tiny_gpt2()
    layers = by_path(run_audit(model))
    # the tied head is a readout: gain 1 under kaiming_relu, 1/sqrt(fan_in), not sqrt(2/fan_in)
    assert layers["lm_head"]["scheme_std"] == pytest.approx(1 / math.sqrt(32))
    assert layers["lm_head"]["tied_to"] == ["transformer.wte"] and layers["transformer.wte"]["tied_to"] == ["lm_head"]
    assert layers["transformer.h.0.mlp.c_fc"]["scheme_std"] == pytest.approx(math.sqrt(2 / 32))
    gpt2 = by_path(run_audit(model, scheme="gpt2"))  # HF's own init is the gpt2 recipe: nothing flagged
    assert all(layer["flag"] is None for layer in gpt2.values()), gpt2


@pytest.mark.integration
def test_an_lm_gets_token_inputs_and_activation_statistics() -> None:
    pytest.importorskip("transformers")
    model = audit_factories.tiny_gpt2()
    result = run_audit(model, InputSpec((2, 16), torch.long))
    assert result["inputs"] == ["x: integers in [0, 100), int64 2x16"]
    paths = [a["path"] for a in result["activations"]]
    assert paths[0] == "transformer.wte" and "lm_head" in paths and "transformer.h.1.mlp.c_proj" in paths
    assert result["loss"] == "out.logits.float().square().mean()"
    assert {g["path"] for g in result["gradients"]} >= {"lm_head", "transformer.h.0.attn.c_attn"}
    assert all(a["scheme_std"] is not None for a in result["activations"])
    text = _audit_format.format_audit(result)
    assert "backward: loss = out.logits.float().square().mean()" in text


def test_keyword_inputs_and_masks() -> None:
    spec = [InputSpec.parse("input_ids=3,8:long"), InputSpec.parse("attention_mask=3,8:long")]
    result = run_audit(audit_factories.keyword_only(), *spec)
    assert result["inputs"] == ["input_ids: integers in [0, 50), int64 3x8", "attention_mask: ones, int64 3x8"]
    assert [a["path"] for a in result["activations"]] == ["embed", "fc"]
    spec = [InputSpec.parse("input_ids=3,8:int32:0,10"), InputSpec.parse("attention_mask=3,8:bool")]
    assert "input_ids: integers in [0, 10), int32 3x8" in run_audit(audit_factories.keyword_only(), *spec)["inputs"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("input_ids", "--input must be NAME=SHAPE"),
        ("2x=3", "--input must be NAME=SHAPE"),
        ("ids=2,x", "--input ids's SHAPE must be positive integers"),
        ("ids=2:complex", "--input ids's DTYPE must be one of float32"),
        ("ids=2:long:5,1", "--input ids's LOW,HIGH must be two numbers LOW,HIGH with LOW < HIGH"),
    ],
)
def test_input_spec_errors(text: str, match: str) -> None:
    with pytest.raises(AuditError, match=match):
        InputSpec.parse(text)


def test_integer_input_without_an_embedding_needs_a_range() -> None:
    with pytest.raises(AuditError, match=r"integer input x needs a value range \(--input-range, e.g. 0,1000\)"):
        run_audit(nn.Linear(4, 4), InputSpec((2, 4), torch.long))


def test_seed_makes_the_factory_and_the_inputs_repeat() -> None:
    factory = "tests/audit_factories.py:unseeded"
    results = [
        run_audit(
            _audit_inputs.build_model(str(ROOT / factory.split(":")[0]) + ":unseeded", seed),
            InputSpec((4, 32)),
            seed=seed,
        )
        for seed in (3, 3, 4)
    ]
    assert results[0] == results[1]
    assert results[0]["layers"][0]["std"] != results[2]["layers"][0]["std"]
    assert results[0]["activations"][0]["std"] != results[2]["activations"][0]["std"]


def test_every_call_of_a_reused_module_is_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_audit(audit_factories.mixed_scales(), InputSpec((16, 64)), progress=True)
    relu = [a for a in result["activations"] if a["path"] == "act"]
    assert [(a["call"], a["calls"]) for a in relu] == [(k, 5) for k in range(1, 6)]
    assert result["reused"] == ["act"] and result["calls"] == 5 + 5 + 1  # the layers, the ReLU's 5 calls, scaled.fc
    err = capsys.readouterr().err
    counts = [(int(a), int(b)) for a, b in re.findall(r"\] (\d+)/(\d+)", err)]
    assert counts and all(done <= total for done, total in counts), err  # the bar never runs past its total
    text = _audit_format.format_audit(result)
    assert "every call recorded; 1 modules called more than once (call k/n): act" in text
    assert re.search(r"\nact\s+ReLU\s+3/5\s", text)


def test_no_progress_bar_when_not_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run_audit(audit_factories.mixed_scales(), InputSpec((16, 64)))
    assert capsys.readouterr().err == ""


def test_inputs_come_from_their_own_stream() -> None:
    # a factory seeded like the inputs would draw its first weight rows equal to the input: a pass on
    # correlated weights and inputs reports a std 1.4x too high
    model = nn.Linear(128, 128, bias=False)
    torch.manual_seed(0)  # what build_model does before a seed-0 factory runs
    weight = torch.randn(128, 128)
    (x,), _, _ = _audit_inputs.make_inputs(model, [InputSpec((64, 128))], seed=0)
    assert not torch.equal(x, weight[:64]) and _audit_inputs.stream_seed(0, "inputs") != 0
    recorded = run_audit(model, InputSpec((64, 128)), compare=False)["activations"][0]["std"]
    with torch.no_grad():
        assert recorded == float(model(x).float().std())  # the pass ran on exactly those inputs


def test_the_comparison_copy_leaves_the_model_alone() -> None:
    model = audit_factories.mixed_scales()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_audit(model, InputSpec((16, 64)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    first = {a["path"]: a for a in result["activations"] if a["call"] == 1}
    assert first["layers.0"]["std"] < 0.5 * first["layers.0"]["scheme_std"]  # 0.22x weights
    assert result["compare"] == "a copy of the model after reinit(model, 'kaiming_relu') (seed 0)"
    assert "scheme_std" not in run_audit(model, InputSpec((16, 64)), compare=False)["activations"][0]


def test_loss_of_names_what_it_reduces() -> None:
    t = torch.ones(2)
    assert _audit.loss_of(t)[1] == "out.float().square().mean()"
    assert _audit.loss_of({"a": 1, "b": t})[1] == "out['b'].float().square().mean()"
    assert _audit.loss_of((None, t))[1] == "out[1].float().square().mean()"
    assert _audit.loss_of([1])[0] is None


def test_block_labels_are_short_and_unique() -> None:
    paths = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer2.0.conv1", "fc"]
    assert _plot.groups(paths) == [("conv1", 0, 0), ("layer1", 1, 3), ("layer2", 4, 4), ("fc", 5, 5)]
    lm = [
        "transformer.wte",
        "transformer.h.0.attn.c_attn",
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.attn",
        "lm_head",
    ]
    assert [g[0] for g in _plot.groups(lm)] == ["wte", "h.0", "h.1", "lm_head"]
    twins = ["encoder.layers.0.fc", "decoder.layers.0.fc"]
    assert [g[0] for g in _plot.groups(twins)] == ["encoder.layers.0", "decoder.layers.0"]


def test_thinned_labels_never_overlap() -> None:
    centers = [0.0, 0.1, 0.5, 0.55, 1.0, 1.02]
    widths = [0.2] * 6
    kept = _plot._thin(centers, widths)
    assert kept[0] == 0 and kept[-1] == 5
    assert all(centers[j] - centers[i] >= 0.2 for i, j in itertools.pairwise(kept))


def test_figure_and_html_report() -> None:
    pytest.importorskip("matplotlib")
    result = run_audit(audit_factories.mixed_scales(), InputSpec((16, 64)))
    png = _plot.audit_figure(result)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib import image

    height, width, _ = image.imread(io.BytesIO(png)).shape
    assert width == 1500 and height < 1400  # 10 in at 150 dpi: a page's width
    assert _plot.audit_figure(result, everything=True)[:4] == b"\x89PNG"
    page = _audit_format.html_report(result, png)
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "http" not in page.replace("data:image/png;base64,", "")  # self-contained: nothing to fetch
    assert page.count('<tr class="flag">') == 4 and "scaled.gain" in page
    assert "No figure" in _audit_format.html_report(result, None, "No figure: plotting needs matplotlib.")


def test_plotting_is_the_only_thing_that_imports_matplotlib() -> None:
    code = (
        "import sys, torchinit, torchinit._tools.cli, torchinit._tools.audit, torchinit._tools.audit_format, "
        "torchinit._tools.plot; "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
