"""Recipes against torchvision's and timm's own init (the second, full-torch environment)."""

from __future__ import annotations

import math

import pytest
import torch

import torchinit
from conftest import assert_recipe_matches

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
pytestmark = pytest.mark.integration


@pytest.mark.parametrize("zero_init_residual", [False, True])
def test_resnet_reproduces_torchvisions_init(zero_init_residual: bool) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(zero_init_residual=zero_init_residual)
    recipe = torchinit.recipes.resnet(zero_init_residual=zero_init_residual)
    assert_recipe_matches(reference, recipe)
    model = torchvision.models.resnet50()
    report = torchinit.reinit(model, recipe, seed=0)
    # torch's fans on strided and downsample convs: fan_out = out_channels * k * k
    assert report["layer2.0.conv2.weight"].std == pytest.approx(math.sqrt(2 / (128 * 9)))
    assert report["layer2.0.downsample.0.weight"].std == pytest.approx(math.sqrt(2 / 512))
    if zero_init_residual:
        assert all(not b.bn3.weight.detach().any() for layer in (model.layer1, model.layer4) for b in layer)


@pytest.mark.parametrize(("mode", "recipe"), [("", "vit"), ("jax", "vit_jax"), ("moco", "vit_moco")])
def test_vit_reproduces_timms_init_modes(mode: str, recipe: str) -> None:
    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, weight_init=mode, num_classes=100)
    assert_recipe_matches(reference, recipe)


def test_the_comparison_rejects_the_wrong_vit_mode() -> None:
    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch16_224", pretrained=False, weight_init="jax", num_classes=100)
    with pytest.raises(AssertionError):
        assert_recipe_matches(reference, "vit")
