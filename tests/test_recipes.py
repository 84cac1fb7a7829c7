"""The Override pieces recipes are made of, and recipes on torch.nn models (the reference comparisons
against Hugging Face, timm and torchvision are in tests/integration)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from toys import any_model

import torchinit
from torchinit import InitError, Override, get_scheme, reinit
from torchinit._schemes.recipes_hf import hf_walk, lecun_normal
from torchinit._schemes.torch_draws import trunc_normal_abs
from torchinit.extend import Action
from torchinit.recipes import block_index, depth, recipe
from torchinit.testing import assert_std


def test_scale_multiplies_the_schemes_rule() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    report = reinit(model, "kaiming_relu", overrides=[Override(path="1.weight", scale=0.5)])
    assert report["1.weight"].std == pytest.approx(0.5 * math.sqrt(2 / 256))
    assert_std(model[1].weight.detach(), 0.5 * math.sqrt(2 / 256))
    with pytest.raises(AssertionError):
        assert_std(model[1].weight.detach(), math.sqrt(2 / 256))  # unscaled is rejected
    assert report["0.weight"].std == pytest.approx(math.sqrt(2 / 256))


def test_torch_fans_for_one_rule() -> None:
    conv = nn.Conv2d(64, 64, 3, groups=64)  # depthwise: true fan_out 9, torch's 64 * 9
    true = reinit(conv, "kaiming_relu_fan_out")["weight"].std
    torchs = reinit(conv, "kaiming_relu_fan_out", overrides=[Override(fans="torch")])["weight"].std
    assert true == pytest.approx(math.sqrt(2 / 9)) and torchs == pytest.approx(math.sqrt(2 / (64 * 9)))


def test_chunks_treat_a_fused_projection_block_by_block() -> None:
    qkv = nn.Linear(64, 3 * 64)  # fused q, k, v in a plain Linear
    whole = reinit(qkv, "xavier_uniform")["weight"].std
    per_block = reinit(qkv, "xavier_uniform", overrides=[Override(path="weight", chunks=3)])["weight"].std
    assert whole == pytest.approx(math.sqrt(2 / (64 + 192))) and per_block == pytest.approx(math.sqrt(2 / 128))


def test_keep_and_torch_default_for_a_layer_type() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 10))
    before = model[1].weight.detach().clone()
    reinit(model, "kaiming_relu", overrides=[Override(path="1.weight", keep=True)])
    assert torch.equal(model[1].weight, before)
    report = reinit(model, "kaiming_relu", overrides=[Override(path="1.*", scheme="legacy")])
    assert report["1.weight"].source == "kaiming_uniform_(a=sqrt(5))" or "kaiming" in report["1.weight"].source
    assert report["1.weight"].std == pytest.approx(1 / math.sqrt(3 * 64))  # torch's Linear default
    assert report["1.bias"].distribution == "uniform"


def test_a_callable_rule_is_the_escape_hatch() -> None:
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))

    def rule(path: str, module: nn.Module, param: torch.Tensor) -> float | None:
        return 0.01 * (1 + block_index(path)) if path.endswith("weight") else None  # type: ignore[operator]

    report = reinit(model, "kaiming_relu", overrides=[Override(rule=rule)])
    assert [report["0.weight"].std, report["2.weight"].std] == pytest.approx([0.01, 0.03])
    assert report["0.bias"].rule == "constant(0)"  # None: the scheme's rule
    with pytest.raises(InitError, match="rule must be a callable"):
        Override(rule=3)  # type: ignore[arg-type]


def test_a_new_recipe_in_a_few_lines() -> None:
    @recipe("depth_scaled_test", "this test", "Linear weights N(0, (0.02 / sqrt(block + 1))^2)")
    def rules(model: nn.Module) -> dict[str, Action]:
        return {
            f"{path}.weight": Action("normal", 0.02 / math.sqrt(1 + (block_index(path) or 0)))
            for path, m in model.named_modules()
            if isinstance(m, nn.Linear)
        }

    try:
        model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(4)])
        report = reinit(model, "depth_scaled_test")
        assert report["3.weight"].std == pytest.approx(0.01) and depth(model) == 4
        assert "[this test]" in torchinit.get_scheme("depth_scaled_test").summary()
    finally:
        from torchinit._schemes.registry import unregister_scheme

        unregister_scheme("depth_scaled_test")


def test_recipes_are_listed_with_their_sources() -> None:
    hugging_face = ("clip", "siglip", "whisper", "gemma", "vit_hf")
    torchvision = ("timm_resnet", "torchvision_vit", "convnext", "swin", "efficientnet")
    for name in ("gpt2", "bert", "llama", "t5", "llama_depth", "vit", "vit_jax", "vit_moco", "resnet", *hugging_face,
                 *torchvision):  # fmt: skip
        assert name in torchinit.list_schemes()
        assert "[" in torchinit.get_scheme(name).summary()
    with pytest.raises(InitError, match="mode must be '', 'jax' or 'moco'"):
        torchinit.recipes.vit("moco_v2")
    with pytest.raises(InitError, match=r"layer_scale must be a finite number; got layer_scale=nan"):
        torchinit.recipes.convnext(layer_scale=math.nan)
    keeping = torchinit.recipes.convnext(layer_scale=None)  # keeps the constructed layer scales
    assert repr(keeping) == "recipes.convnext(layer_scale=None)" and keeping != torchinit.get_scheme("convnext")


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # toy models
def test_depth_scaled_recipes_without_a_layer_count_say_so_and_write_nothing() -> None:
    # A c_proj with no config.n_layer and no repeated blocks used to divide by zero.
    model = nn.ModuleDict({"c_proj": nn.Linear(8, 8), "fc": nn.Linear(8, 8)})
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(InitError, match=r"gpt2 scales c_proj.weight by the number of layers, and this model has no"):
        reinit(model, any_model("gpt2"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for bad in (0, -1, 2.5, "12", True):
        with pytest.raises(InitError, match=f"n_layer={bad!r} is not a positive int: pass the count"):
            reinit(model, torchinit.recipes.gpt2(n_layer=bad).anywhere())  # type: ignore[arg-type]
    report = reinit(model, torchinit.recipes.gpt2(n_layer=4).anywhere())
    assert report["c_proj.weight"].std == pytest.approx(0.02 / math.sqrt(8))
    assert reinit(nn.Linear(8, 8), any_model("gpt2"))["weight"].std == pytest.approx(
        0.02
    )  # no c_proj: nothing to count
    blocks = nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(8, 8)]), "o_proj": nn.Linear(8, 8)})
    blocks["layers"][0].o_proj = nn.Linear(8, 8)  # type: ignore[index]
    assert reinit(blocks, torchinit.recipes.llama_depth(depth_init=False).anywhere())["layers.0.o_proj.weight"].std > 0


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # toy models
def test_a_recipe_takes_its_setting_as_given_even_zero_and_refuses_a_bool() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    model.config = SimpleNamespace(initializer_range=0.0)  # type: ignore[assignment]
    report = reinit(model, any_model("bert"))
    assert report["0.weight"].std == 0.0  # the config's 0.0, not the 0.02 default
    with pytest.raises(InitError, match="initializer_range must be a finite number >= 0; got initializer_range=True"):
        reinit(model, torchinit.recipes.gpt2(initializer_range=True, n_layer=1).anywhere())  # type: ignore[arg-type]
    model.config = SimpleNamespace(initializer_range="0.02")  # type: ignore[assignment]
    with pytest.raises(InitError, match=r"config.initializer_range must be a finite number"):
        reinit(model, any_model("bert"))


def test_an_override_s_chunks_must_divide_the_rows() -> None:
    model = nn.Sequential(nn.Linear(4, 12))
    before = model[0].weight.detach().clone()
    with pytest.raises(InitError, match=r"0.weight \(Linear, shape \(12, 4\)\) has 12 rows .* 7 chunks do not divide"):
        reinit(model, overrides=[Override(path="0.weight", chunks=7)])
    assert torch.equal(model[0].weight, before)
    reinit(model, overrides=[Override(path="0.weight", chunks=3)])


def test_hugging_face_recipes_take_their_settings_and_refuse_bad_ones() -> None:
    assert repr(torchinit.recipes.gemma(initializer_range=0.01)) == "recipes.gemma(initializer_range=0.01)"
    assert repr(torchinit.recipes.siglip()) == "recipes.siglip()"
    assert torchinit.recipes.whisper() == get_scheme("whisper")
    with pytest.raises(InitError, match=r"init_std must be a finite number >= 0; got init_std=-1.0"):
        torchinit.recipes.whisper(init_std=-1.0)
    with pytest.raises(InitError, match=r"initializer_range must be a finite number >= 0; got initializer_range=True"):
        torchinit.recipes.vit_hf(initializer_range=True)  # type: ignore[arg-type]


def test_hugging_faces_trunc_normal_cuts_at_2_absolute_and_its_lecun_normal_keeps_the_factor() -> None:
    wide, narrow = trunc_normal_abs(0.02, "ViT tokens"), trunc_normal_abs(1.0, "at 1: +-2 sigma")
    assert (wide.kind, wide.param, wide.cut) == ("truncated_normal", pytest.approx(0.02), pytest.approx(100.0))
    assert (narrow.param, narrow.cut) == (pytest.approx(0.8796256610), 2.0)
    assert trunc_normal_abs(0.0, "std 0").describe() == "constant(0)"
    x = torch.nn.init.trunc_normal_(torch.empty(200, 200), std=1.0, generator=torch.Generator().manual_seed(0))
    assert_std(x, narrow.param, kurtosis="truncated_normal")  # torch's draw has the std stated
    lecun = lecun_normal(torch.empty(32, 64))  # sigma = 64^-1/2 / 0.8796, cut at +-2 absolute = +-14 sigma
    assert lecun.param == pytest.approx(0.125 / 0.87962566103423978)
    assert lecun.cut == pytest.approx(16 * 0.8796, rel=1e-4)


class _Tower(nn.Module):
    """A Hugging Face model as hf_walk sees one: a config and an _init_weights."""

    def __init__(self, initializer_range: float) -> None:
        super().__init__()
        self.config = SimpleNamespace(initializer_range=initializer_range)
        self.proj = nn.Linear(4, 4)

    def _init_weights(self, module: nn.Module) -> None:
        raise AssertionError("never called: torchinit reads, it does not run HF's init")


def test_hf_walk_visits_children_first_each_with_its_own_models_config() -> None:
    model = nn.ModuleDict({"text": _Tower(0.1), "vision": _Tower(0.3), "head": nn.Linear(4, 4)})
    found = hf_walk(model)
    order = [at for at, _, _ in found]
    assert order.index("text.proj.") < order.index("text.") < order.index("")  # HF's: a module after its children
    config = {at: owner for at, _, owner in found}
    assert config["text.proj."].initializer_range == 0.1 and config["vision.proj."].initializer_range == 0.3
    assert config["head."] is None and config[""] is None  # outside an HF model: the base scheme's


VISION_FAMILIES = {
    "timm_resnet": r"a timm ResNet \(layer1..layer4 of timm's BasicBlock/Bottleneck, global_pool\); got Sequential",
    "torchvision_vit": r"a torchvision VisionTransformer \(conv_proj, encoder of EncoderBlock, heads\); got Sequential",
    "convnext": r"a torchvision ConvNeXt \(features of CNBlock, classifier\); got Sequential",
    "swin": r"a torchvision SwinTransformer \(features of ShiftedWindowAttention or V2, norm, head\); got Sequential",
    "efficientnet": r"a torchvision EfficientNet \(features of MBConv/FusedMBConv, classifier\); got Sequential",
}


@pytest.mark.parametrize(("name", "family"), VISION_FAMILIES.items(), ids=VISION_FAMILIES)
def test_a_vision_recipe_names_the_family_it_is_for(name: str, family: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    with pytest.raises(InitError, match=rf"the '{name}' recipe is for {family}.*no recipe fits it"):
        reinit(model, name)


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")  # a toy model
@pytest.mark.parametrize("name", ["timm_resnet", "torchvision_vit", "convnext", "swin", "efficientnet"])
def test_a_layer_left_to_torch_whose_default_is_unknown_is_named(name: str) -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.alpha = nn.Parameter(torch.full((3,), 0.5))

    model = nn.Sequential(nn.Linear(4, 4), Gate())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(InitError, match=r"1.alpha \(Gate, shape \(3,\)\) keeps what its layer's constructor drew .* "
                       r"no torch default is known for Gate.alpha: describe the layer with "
                       r"torchinit.register_layer\(Gate, legacy=...\)"):  # fmt: skip
        reinit(model, any_model(name))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
