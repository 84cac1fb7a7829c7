"""torchvision and timm architectures under the built-in schemes: covered, sane logits, one draw in build.

Criteria: zero uncovered parameters under every generic scheme and legacy; logits in train mode on a batch of 4
unit-normal 3x224x224 images finite with std within [0.05, 5] (``legacy``, torch.nn's layer defaults by
definition, only finite: it gives MobileNet-V3-S logits of std 0.04); ``build(..., seed=0)`` leaves torch's
global RNG unchanged and equals ``reinit(factory(), seed=0)``; ``default_scheme`` on a model that
re-initializes itself warns.

Runs in the second pinned environment (torch 2.14.1, torchvision 0.29.1, timm) that `.ci/run` builds. Each
model is built once and reinitialized by every scheme in turn (each call writes every parameter it covers).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import torch
from torch import nn

import torchinit
from torchinit.testing import assert_std

if TYPE_CHECKING:
    from conftest import RNGWatch

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

pytestmark = pytest.mark.integration

SCHEMES = [
    s
    for s in torchinit.list_schemes()
    if s != "lsuv" and not isinstance(torchinit.get_scheme(s), torchinit.recipes.Recipe)
]


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet50": torchvision.models.resnet50,
    "vit_b_16": torchvision.models.vit_b_16,
    "convnext_tiny": torchvision.models.convnext_tiny,
    "swin_t": torchvision.models.swin_t,
    "efficientnet_b0": torchvision.models.efficientnet_b0,
    "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
    "timm_vit_small_patch16_224": _timm("vit_small_patch16_224"),
    "timm_convnext_atto": _timm("convnext_atto"),
    "timm_resnet18": _timm("resnet18"),
    "regnet_y_400mf": torchvision.models.regnet_y_400mf,
    "shufflenet_v2_x0_5": torchvision.models.shufflenet_v2_x0_5,
    "timm_efficientnet_b0": _timm("efficientnet_b0"),
    "timm_deit_tiny_distilled_patch16_224": _timm("deit_tiny_distilled_patch16_224"),
}
IMAGES = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _reinit(name: str, scheme: str) -> tuple[nn.Module, torchinit.InitReport]:
    torch.manual_seed(0)
    model = MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        report = torchinit.reinit(model, scheme, seed=None if scheme == "legacy" else 0)
    return model, report


@pytest.mark.parametrize("name", list(MODELS))
def test_covered_and_logits_are_sane_under_every_scheme(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().train()
    for scheme in SCHEMES:
        with warnings.catch_warnings():
            warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
            report = torchinit.reinit(model, scheme, seed=None if scheme == "legacy" else 0)
        assert not report.skipped, (scheme, [(e.path, e.skipped) for e in report.skipped])
        with torch.no_grad():
            logits = model(IMAGES)
        std = float(logits.std())
        assert math.isfinite(std), f"{scheme}: logits std {std}"
        if scheme != "legacy":
            assert 0.05 <= std <= 5, f"{scheme}: logits std {std:.4g}"


def test_the_group_spans_twelve_models() -> None:
    assert len(MODELS) >= 12


@pytest.mark.parametrize("name", list(MODELS))
def test_build_with_a_seed_draws_once_and_leaves_the_rng_alone(name: str, drew: RNGWatch) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    built, report = torchinit.build(drew(MODELS[name]), "kaiming_relu", seed=0)
    assert torch.equal(torch.get_rng_state(), before) and not report.skipped
    assert drew.draws == [False], "the model's own init drew during construction"
    reference, _ = _reinit(name, "kaiming_relu")
    for (key, a), b in zip(built.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


TORCH_DEFAULTS = {"shufflenet_v2_x0_5"}  # its constructor leaves torch's layer defaults: nothing re-initializes


@pytest.mark.parametrize("name", [n for n in MODELS if n not in TORCH_DEFAULTS])
def test_default_scheme_on_a_self_initializing_model_warns(name: str) -> None:
    with pytest.warns(torchinit.SchemeOverwrittenWarning), torchinit.default_scheme("lecun_normal"):
        MODELS[name]()


@pytest.mark.parametrize("name", sorted(TORCH_DEFAULTS))
def test_default_scheme_on_a_model_that_keeps_torchs_defaults_applies_silently(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.SchemeOverwrittenWarning)
        with torchinit.default_scheme("lecun_normal"):
            model = MODELS[name]()
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)
    fan_in = conv.weight[0].numel()
    assert_std(conv.weight, fan_in**-0.5, kurtosis="normal")  # LeCun normal ...
    with pytest.raises(AssertionError):
        assert_std(conv.weight, (3 * fan_in) ** -0.5, kurtosis="normal")  # ... not torch's own 1/sqrt(3 fan_in)


def test_keyed_chains_compile_silently_on_this_torch_too() -> None:
    # torch 2.14 turned torch.jit.script's deprecation notice into a FutureWarning: it must be filtered
    # there too, or under -W error the compile fails and keyed fills quietly run eager (same values, slower).
    import subprocess
    import sys

    code = (
        "import warnings, torch, torchinit, torchinit._maths.stream as s\n"
        "warnings.simplefilter('error')\n"
        "torchinit.reinit(torch.nn.Linear(300, 700), seed=1)\n"
        "assert set(s._compiled) == set(s.KERNELS)\n"
        "assert all(isinstance(f, torch.jit.ScriptFunction) for f in s._compiled.values())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_residual_branches_of_resnet50_are_its_bottlenecks_last_norms() -> None:
    model = torchvision.models.resnet50()
    found = [b.layer for b in torchinit.residual_branches(model, torch.randn(2, 3, 64, 64))]
    assert found == [f"layer{i}.{j}.bn3" for i, blocks in enumerate((3, 4, 6, 3), 1) for j in range(blocks)]
    report = torchinit.reinit(model, torchinit.Scheme(residual="zero"), seed=0)  # as zero_init_residual
    assert all(report[f"{layer}.weight"].param == 0.0 for layer in found)
    assert all(not block.bn3.weight.any() for block in model.layer3)
