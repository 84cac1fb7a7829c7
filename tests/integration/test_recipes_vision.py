"""Recipes against torchvision's and timm's own init (the second, full-torch environment)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable

import pytest
import torch

import torchinit
from conftest import assert_recipe_matches
from torchinit.extend import Action

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


# --- timm's ResNet, torchvision's ViT, ConvNeXt, Swin, EfficientNet (small configs of the libraries' classes) ---


def _timm_resnet(attn: str | None = None, block: str = "Bottleneck", **extra: object) -> torch.nn.Module:
    resnet = timm.models.resnet
    return resnet.ResNet(  # type: ignore[no-any-return]
        getattr(resnet, block), (1, 1, 1, 1), channels=(32, 64, 128, 256), num_classes=100,
        block_args={"attn_layer": attn} if attn else None, **extra,
    )  # fmt: skip


def _vit(**extra: object) -> torch.nn.Module:
    vt = torchvision.models.vision_transformer
    size = {"image_size": 32, "patch_size": 4, "num_layers": 2, "num_heads": 4, "hidden_dim": 64, "mlp_dim": 128}
    return vt.VisionTransformer(**{**size, "num_classes": 100, **extra})  # type: ignore[arg-type]


def _vit_conv_stem() -> torch.nn.Module:
    vt = torchvision.models.vision_transformer
    stem = [vt.ConvStemConfig(32, 3, 2), vt.ConvStemConfig(64, 3, 2)]
    return _vit(patch_size=4, image_size=16, conv_stem_configs=stem, representation_size=48)


def _convnext() -> torch.nn.Module:
    cn = torchvision.models.convnext
    return cn.ConvNeXt([cn.CNBlockConfig(32, 64, 2), cn.CNBlockConfig(64, None, 2)], num_classes=100)


def _swin(v2: bool = False) -> torch.nn.Module:
    sw = torchvision.models.swin_transformer
    extra = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} if v2 else {}
    return sw.SwinTransformer([4, 4], 128, [2, 2], [4, 8], [4, 4], num_classes=100, **extra)  # type: ignore[arg-type]


def _efficientnet_v2() -> torch.nn.Module:
    ef = torchvision.models.efficientnet
    setting = [ef.FusedMBConvConfig(1, 3, 1, 24, 24, 2), ef.FusedMBConvConfig(4, 3, 2, 24, 48, 1),
               ef.MBConvConfig(4, 3, 2, 48, 64, 2)]  # fmt: skip
    norm = functools.partial(torch.nn.BatchNorm2d, eps=1e-3)
    return ef.EfficientNet(setting, dropout=0.2, norm_layer=norm, last_channel=256, num_classes=100)


LIBRARY_INITS = {
    "timm-resnet18": (lambda: timm.create_model("resnet18", pretrained=False), "timm_resnet"),
    "timm-seresnet-bottleneck": (lambda: _timm_resnet("se"), "timm_resnet"),
    "timm-ecaresnet-basic": (lambda: _timm_resnet("eca", "BasicBlock"), "timm_resnet"),
    "timm-resnet-no-zero-init-last": (
        lambda: _timm_resnet(zero_init_last=False),
        torchinit.recipes.timm_resnet(zero_init_last=False),
    ),
    "tv-vit": (_vit, "torchvision_vit"),
    "tv-vit-patch2-pre-logits": (lambda: _vit(patch_size=2, image_size=16, representation_size=48), "torchvision_vit"),
    "tv-vit-conv-stem": (_vit_conv_stem, "torchvision_vit"),
    "tv-convnext": (_convnext, "convnext"),
    "tv-swin": (_swin, "swin"),
    "tv-swin-v2": (lambda: _swin(v2=True), "swin"),
    "tv-efficientnet-b0": (torchvision.models.efficientnet_b0, "efficientnet"),
    "tv-efficientnet-v2": (_efficientnet_v2, "efficientnet"),
}


@pytest.mark.parametrize(("factory", "recipe"), LIBRARY_INITS.values(), ids=LIBRARY_INITS)
def test_recipe_reproduces_the_librarys_own_init(factory: Callable[[], torch.nn.Module], recipe: object) -> None:
    torch.manual_seed(0)
    assert_recipe_matches(factory(), recipe)


def test_timm_resnet_is_timms_reading_of_a_resnet() -> None:
    torch.manual_seed(0)
    model = _timm_resnet("se")
    report = torchinit.reinit(copy.deepcopy(model), "timm_resnet", seed=0)
    assert report["layer1.0.bn3.weight"].rule == "constant(0)" and report["layer1.0.bn2.weight"].rule == "constant(1)"
    assert report["layer1.0.se.fc1.bias"].distribution == "uniform"  # kept torch's draw; torchvision's rule says 0
    kept = torchinit.reinit(copy.deepcopy(model), torchinit.recipes.timm_resnet(zero_init_last=False), seed=0)
    assert kept["layer1.0.bn3.weight"].rule == "constant(1)"
    assert repr(torchinit.recipes.timm_resnet(zero_init_last=False)) == "recipes.timm_resnet(zero_init_last=False)"


def test_convnext_resets_trained_layer_scales_unless_asked_to_keep_them() -> None:
    model = _convnext()
    with torch.no_grad():
        for block in model.features[1]:
            block.layer_scale.fill_(0.5)  # as after training
    torchinit.reinit(model, torchinit.recipes.convnext(layer_scale=None), seed=0)
    assert all(bool((block.layer_scale == 0.5).all()) for block in model.features[1])
    torchinit.reinit(model, "convnext", seed=0)
    assert all(bool((block.layer_scale == torch.tensor(1e-6)).all()) for block in model.features[1])


def _one_rule_changed(name: str, change: Callable[[str, torch.Tensor, Action], Action | None]) -> object:
    """The recipe ``name`` with ``change(path, parameter, action)`` replacing the rules it returns an Action for."""
    recipe = torchinit.get_scheme(name)
    assert isinstance(recipe, torchinit.recipes.Recipe)

    def rules(model: torch.nn.Module) -> dict[str, Action]:
        table = recipe.rules(model)
        named = dict(model.named_parameters())
        return {path: change(path, named[path], action) or action for path, action in table.items()}

    return dataclasses.replace(recipe, rules=rules, spelled=f"mutant of {name}")


def _xavier(param: torch.Tensor, rows: int) -> Action:
    return Action("uniform", math.sqrt(6 / (param.shape[1] + rows)))


WRONG = {
    # torchvision's own resnet on a timm ResNet: the last BN of each block is 1, not timm's 0 ...
    "timm-resnet18-vs-torchvision-resnet": (
        lambda: timm.create_model("resnet18", pretrained=False),
        torchinit.recipes.resnet(),
        r"layer1.0.bn2.weight",
    ),
    # ... and with zero_init_residual, a squeeze-excitation conv bias is 0, where timm keeps torch's draw
    "timm-seresnet-vs-torchvision-resnet-zero-init": (
        lambda: _timm_resnet("se"),
        torchinit.recipes.resnet(zero_init_residual=True),
        r"layer1.0.se.fc1.bias",
    ),
    # torchinit's own reading of a packed in_proj (Xavier per q/k/v block, E x E) instead of torch's (3E x E)
    "tv-vit-in-proj-per-block": (
        _vit,
        _one_rule_changed("torchvision_vit", lambda p, w, a: _xavier(w, w.shape[0] // 3) if "in_proj_w" in p else None),
        r"in_proj_weight \(reference\)",
    ),
    "tv-vit-vs-timm-vit": (_vit, torchinit.get_scheme("vit").anywhere(), r"class_token: reference constant 0.0"),
    # trunc_normal_(std=0.02) read as cut at +-2 sigma (std-corrected) instead of +-2 absolute
    "tv-convnext-cut-at-2-sigma": (
        _convnext,
        _one_rule_changed("convnext", lambda p, w, a: Action("truncated_normal", 0.02) if a.std == 0.02 else None),
        r"features.0.0.weight \(reference\) .* truncated_normal",
    ),
    "tv-convnext-other-layer-scale": (_convnext, torchinit.recipes.convnext(layer_scale=1e-5), r"layer_scale"),
    # the Swin block's own MLP weight init (Xavier), which SwinTransformer.__init__ then overwrites
    "tv-swin-block-mlp-init": (
        _swin,
        _one_rule_changed("swin", lambda p, w, a: _xavier(w, w.shape[0]) if ".mlp." in p and w.dim() == 2 else None),
        r"features.1.0.mlp.0.weight \(reference\)",
    ),
    # the generic fan_out scheme counts true fans: the stride-2 stem conv's fan_out 24 * 9 / 4, torch's 24 * 9
    "tv-efficientnet-vs-true-fan-out": (
        _efficientnet_v2,
        "kaiming_relu_fan_out",
        r"features.0.0.weight \(reference\)",
    ),
    # the classifier bound from in_features (torch's Linear default) instead of out_features
    "tv-efficientnet-classifier-by-fan-in": (
        _efficientnet_v2,
        _one_rule_changed(
            "efficientnet",
            lambda p, w, a: Action("uniform", w.shape[1] ** -0.5) if p == "classifier.1.weight" else None,
        ),
        r"classifier.1.weight \(reference\)",
    ),
}


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # timm's vit on torchvision's, on purpose
@pytest.mark.parametrize(("factory", "wrong", "where"), WRONG.values(), ids=WRONG)
def test_the_comparison_rejects_a_wrong_rule(factory: Callable[[], torch.nn.Module], wrong: object, where: str) -> None:
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match=where):
        assert_recipe_matches(factory(), wrong)


REFUSED = {
    "timm_resnet": (lambda: torchvision.models.resnet18(), "recipes for this model: resnet"),
    "torchvision_vit": (lambda: timm.create_model("vit_tiny_patch16_224"), "recipes for this model: vit, vit_jax"),
    "convnext": (_swin, "recipes for this model: swin"),
    "swin": (_convnext, "recipes for this model: convnext"),
    "efficientnet": (lambda: torchvision.models.mobilenet_v3_small(), "no recipe fits it"),
}


@pytest.mark.parametrize(("recipe", "factory", "instead"), [(k, *v) for k, v in REFUSED.items()], ids=REFUSED)
def test_a_recipe_refuses_a_model_it_is_not_for(
    recipe: str, factory: Callable[[], torch.nn.Module], instead: str
) -> None:
    model = factory()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(torchinit.InitError, match=rf"the '{recipe}' recipe is for a (timm|torchvision) .*{instead}"):
        torchinit.reinit(model, recipe)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
