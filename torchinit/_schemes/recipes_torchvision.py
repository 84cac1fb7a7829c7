r"""Recipes of torchvision's own inits: VisionTransformer, ConvNeXt, SwinTransformer (v1 and v2), EfficientNet
(v1 and v2), each read from ``torchvision/models/*.py`` (0.29). Their ResNet is `recipes_vision.resnet`.

Each states every parameter: what the library's constructor writes, and torch's default where the library leaves
a layer as torch built it (`torch_default`). torch's ``trunc_normal_(t, std=s)`` cuts at $\pm 2$ absolute, that is
$\pm 2/s$ sigmas: a truncated normal of that cut (`trunc_normal`), a normal once the cut is 10 sigmas or more.
"""

from __future__ import annotations

import math

from torch import nn

from torchinit._maths.draw import Action
from torchinit._model.walk import walk
from torchinit._schemes import fits
from torchinit._schemes.recipes import Recipe, Rules, normal, params, spelled_recipe
from torchinit._schemes.recipes_vision import torch_default
from torchinit._schemes.registry import register_scheme
from torchinit._schemes.torch_draws import kaiming_fan_out, trunc_normal_abs, xavier_uniform
from torchinit._types import check_finite

ZERO = Action("constant", 0.0, formula="zeros_")


def trunc_normal(std: float, what: str) -> Action:
    r"""torch's ``trunc_normal_(t, std=std)`` (`trunc_normal_abs`: cut at $\pm 2$ absolute, $c = 2/s$ sigmas), a
    normal from $c = 10$ (the mass past $10\sigma$ is $1.5 \times 10^{-23}$): ``std=0.02`` is $\pm 100\sigma$."""
    cut = 2.0 / std
    if cut >= 10.0:
        return normal(std, f"{what}: trunc_normal_(std={std:.4g}) at +-2 = +-{cut:.3g} sigma: N(0, {std:.4g}^2)")
    return trunc_normal_abs(std, f"{what}: trunc_normal_(std={std:.4g}), cut at +-2 = +-{cut:.3g} sigma")


# --- VisionTransformer ----------------------------------------------------------------------------------


def _is_vit(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("conv_proj", "class_token", "encoder", "heads"))


def _vit_root(at: str, vit: nn.Module) -> Rules:
    """The stem, the tokens and the heads, as ``VisionTransformer.__init__`` writes them."""
    table: Rules = {f"{at}class_token": Action("constant", 0.0, formula="class_token: zeros")}
    table[f"{at}encoder.pos_embedding"] = normal(0.02, "pos_embedding: normal_(std=0.02)")
    stem = vit.conv_proj
    if isinstance(stem, nn.Conv2d):
        fan_in = stem.in_channels * stem.kernel_size[0] * stem.kernel_size[1]
        table[f"{at}conv_proj.weight"] = trunc_normal(math.sqrt(1.0 / fan_in), "conv_proj, std sqrt(1/fan_in)")
        if stem.bias is not None:
            table[f"{at}conv_proj.bias"] = ZERO
    elif isinstance(stem, nn.Module):  # a conv stem (Xiao et al. 2021): conv-BN layers torch's, the last 1x1 written
        for sub, module in stem.named_modules(prefix=f"{at}conv_proj"):
            for name, _ in module.named_parameters(recurse=False):
                table[f"{sub}.{name}"] = torch_default(module, name, f"{sub}.{name}")
        last = getattr(stem, "conv_last", None)
        if isinstance(last, nn.Conv2d):
            std = math.sqrt(2.0 / last.out_channels)
            table[f"{at}conv_proj.conv_last.weight"] = normal(std, "conv_last: normal_(std=sqrt(2/out_channels))")
            if last.bias is not None:
                table[f"{at}conv_proj.conv_last.bias"] = ZERO
    pre_logits = getattr(vit.heads, "pre_logits", None)
    if isinstance(pre_logits, nn.Linear):
        std = math.sqrt(1.0 / pre_logits.in_features)
        table[f"{at}heads.pre_logits.weight"] = trunc_normal(std, "pre_logits, std sqrt(1/fan_in)")
        table[f"{at}heads.pre_logits.bias"] = ZERO
    if isinstance(getattr(vit.heads, "head", None), nn.Linear):
        table[f"{at}heads.head.weight"] = Action("constant", 0.0, formula="head: zeros")
        table[f"{at}heads.head.bias"] = ZERO
    return table


def _attention(at: str, attention: nn.MultiheadAttention) -> Rules:
    """torch's ``MultiheadAttention._reset_parameters``: in_proj Xavier-uniform over the packed (3E, E) matrix,
    in_proj and out_proj biases 0; out_proj's weight is its Linear's default."""
    table = {f"{at}{name}": torch_default(attention, name) for name, _ in attention.named_parameters(recurse=False)}
    out = attention.out_proj
    table[f"{at}out_proj.weight"] = torch_default(out, "weight")
    if out.bias is not None:
        table[f"{at}out_proj.bias"] = ZERO if attention.in_proj_bias is not None else torch_default(out, "bias")
    return table


def torchvision_vit() -> Recipe:
    r"""torchvision's ViT init (``torchvision/models/vision_transformer.py``).

    ``conv_proj`` torch's ``trunc_normal_`` with std $\sqrt{1/\mathrm{fan_{in}}}$, $\mathrm{fan_{in}} = c_\mathrm{in}
    k_h k_w$ (cut at $\pm 2$ absolute), bias 0; with a conv stem, its conv-BN layers torch's default and
    ``conv_last`` $\mathcal N(0, 2/c_\mathrm{out})$, bias 0. ``class_token`` 0; ``pos_embedding``
    $\mathcal N(0, 0.02^2)$. Attention (``nn.MultiheadAttention``): ``in_proj_weight`` Xavier-uniform over the
    packed matrix, $\mathcal U(\pm\sqrt{6/(E + 3E)})$; ``out_proj.weight`` torch's Linear default
    $\mathcal U(\pm 1/\sqrt E)$; biases 0. MLP Linear weights Xavier-uniform, biases $\mathcal N(0, 10^{-12})$.
    LayerNorms 1/0. ``heads.pre_logits`` ``trunc_normal_`` std $\sqrt{1/\mathrm{fan_{in}}}$, bias 0;
    ``heads.head`` weight and bias 0.
    """

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for at, module in walk(model).modules:
            if isinstance(module, nn.MultiheadAttention):
                table.update(_attention(at, module))
            elif type(module).__name__ == "MLPBlock":
                for name, child in module.named_children():
                    if isinstance(child, nn.Linear):
                        table[f"{at}{name}.weight"] = xavier_uniform(child.weight, "MLPBlock: xavier_uniform_")
                        if child.bias is not None:
                            table[f"{at}{name}.bias"] = normal(1e-6, "MLPBlock bias: normal_(std=1e-6)")
            elif _is_vit(module):
                table.update(_vit_root(at, module))
        for path, name, module, _, _ in params(model):
            if path not in table:  # LayerNorms
                table[path] = torch_default(module, name, path)
        return table

    return Recipe(
        "torchvision_vit",
        "torchvision VisionTransformer.__init__, MLPBlock, nn.MultiheadAttention._reset_parameters",
        rules,
        "conv_proj trunc_normal(sqrt(1/fan_in)), head 0, MLP xavier_uniform (biases 1e-6), in_proj xavier_uniform, "
        "pos_embedding 0.02, class_token 0",
        spelled=spelled_recipe("torchvision_vit"),
        fits=fits.torchvision_vit,
    )


# --- ConvNeXt, Swin, EfficientNet -----------------------------------------------------------------------


def convnext(layer_scale: float | None = 1e-6) -> Recipe:
    r"""torchvision's ConvNeXt init (``torchvision/models/convnext.py``): every Conv2d and Linear weight torch's
    ``trunc_normal_(std=0.02)`` ($\pm 100\sigma$: $\mathcal N(0, 0.02^2)$), biases 0; LayerNorms 1/0; each
    block's ``layer_scale`` the constant ``layer_scale`` (torchvision's default $10^{-6}$; None keeps the
    constructed value: the model does not record the one it was built with)."""
    if layer_scale is not None:
        layer_scale = check_finite("layer_scale", layer_scale)

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, _, _ in params(model):
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                table[path] = trunc_normal(0.02, "ConvNeXt") if name == "weight" else ZERO
            elif name == "layer_scale" and type(module).__name__ == "CNBlock":
                if layer_scale is not None:
                    table[path] = Action("constant", layer_scale, formula=f"layer_scale: {layer_scale:g}")
            else:
                table[path] = torch_default(module, name, path)
        return table

    return Recipe(
        "convnext",
        "torchvision ConvNeXt.__init__",
        rules,
        "Conv2d/Linear N(0, 0.02^2) (trunc_normal_ at +-2), biases 0, layer_scale 1e-6",
        spelled="recipes.convnext(layer_scale=None)"
        if layer_scale is None
        else spelled_recipe("convnext", layer_scale=None if layer_scale == 1e-6 else layer_scale),
        fits=fits.convnext,
    )


def swin() -> Recipe:
    r"""torchvision's Swin Transformer init, v1 and v2 (``torchvision/models/swin_transformer.py``): every Linear
    weight torch's ``trunc_normal_(std=0.02)`` ($\mathcal N(0, 0.02^2)$), bias 0 (``SwinTransformer.__init__``
    runs last, so it also decides the MLPs' weights and v2's ``cpb_mlp``); v1's ``relative_position_bias_table``
    $\mathcal N(0, 0.02^2)$; v2's ``logit_scale`` $\ln 10$; the patch-embedding conv torch's default
    ($\mathcal U(\pm 1/\sqrt{\mathrm{fan_{in}}})$ weight and bias); LayerNorms 1/0."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, _, _ in params(model):
            if isinstance(module, nn.Linear):
                table[path] = trunc_normal(0.02, "Swin Linear") if name == "weight" else ZERO
            elif name == "relative_position_bias_table":
                table[path] = trunc_normal(0.02, "relative_position_bias_table")
            elif name == "logit_scale":
                table[path] = Action("constant", math.log(10.0), formula="logit_scale: log(10)")
            else:
                table[path] = torch_default(module, name, path)
        return table

    return Recipe(
        "swin",
        "torchvision SwinTransformer.__init__, ShiftedWindowAttention(V2)",
        rules,
        "Linear N(0, 0.02^2) (trunc_normal_ at +-2), biases 0, position bias table 0.02, patch conv torch default",
        spelled=spelled_recipe("swin"),
        fits=fits.swin,
    )


def efficientnet() -> Recipe:
    r"""torchvision's EfficientNet init, v1 and v2 (``torchvision/models/efficientnet.py``): every Conv2d weight
    ``kaiming_normal_(mode="fan_out")`` with torch's fans, $\mathcal N(0, 2/(c_\mathrm{out} k_h k_w))$ (depthwise
    and squeeze-excitation convs included), biases 0; BatchNorm/GroupNorm 1/0; the Linear classifier
    $\mathcal U(\pm 1/\sqrt{\mathrm{out\_features}})$, bias 0."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Conv2d):
                table[path] = kaiming_fan_out(param) if name == "weight" else ZERO
            elif isinstance(module, nn.Linear) and name == "weight":
                bound = 1.0 / math.sqrt(module.out_features)
                table[path] = Action("uniform", bound, formula="uniform_(+-1/sqrt(out_features))")
            elif isinstance(module, nn.Linear):
                table[path] = ZERO
            else:
                table[path] = torch_default(module, name, path)  # norms 1/0, as torchvision writes BN/GroupNorm
        return table

    return Recipe(
        "efficientnet",
        "torchvision EfficientNet.__init__",
        rules,
        "conv kaiming_normal(fan_out) with torch fans, norms 1/0, Linear U(+-1/sqrt(out_features)), biases 0",
        spelled=spelled_recipe("efficientnet"),
        fits=fits.efficientnet,
    )


for _made in (torchvision_vit(), convnext(), swin(), efficientnet()):
    register_scheme(_made.name, _made)
