"""Recipes of vision families: timm's ViT (``""``, ``"jax"``, ``"moco"``) and torchvision's ResNet."""

from __future__ import annotations

import math

import torch
from torch import nn

from torchinit._layers.rules import default_actions
from torchinit._maths.draw import Action, xavier_std
from torchinit._maths.fans import torch_fans
from torchinit._model.walk import walk
from torchinit._schemes import fits
from torchinit._schemes.recipes import Recipe, Rules, normal, params, spelled_recipe
from torchinit._schemes.registry import register_scheme
from torchinit._types import InitError

# --- timm ViT -------------------------------------------------------------------------------------------


def _vit_tokens(model: nn.Module, table: Rules) -> None:
    for name, std in (("pos_embed", 0.02), ("cls_token", 1e-6), ("reg_token", 1e-6)):
        if isinstance(getattr(model, name, None), torch.Tensor):
            table[name] = normal(std, f"timm {name}: N(0, {std:g}^2)")


def _torch_default(module: nn.Module, name: str) -> Action:
    found = default_actions(module).get(name)
    if found is None:
        raise InitError(
            f"no torch default is known for {type(module).__name__}.{name}; describe it with register_layer."
        )
    return found


def vit(mode: str = "") -> Recipe:
    """timm's ``VisionTransformer.init_weights(mode)`` (``timm/models/vision_transformer.py``).

    ``""``: every Linear weight $\\mathcal N(0, 0.02^2)$ (timm's ``trunc_normal_(std=.02)`` cuts at $\\pm 2$
    absolute, $\\pm 100\\sigma$), biases 0, other layers torch's default (the patch-embedding conv), norms 1/0.
    ``"jax"``: Linear Xavier-uniform with biases 0, except ``head*`` (weight and bias 0) and ``*mlp*`` biases
    $\\mathcal N(0, 10^{-12})$; convs LeCun normal (truncated at $\\pm 2\\sigma$, std $\\sqrt{1/\\mathrm{fan_{in}}}$).
    ``"moco"``: Linear Xavier-uniform, a ``qkv`` weight per q/k/v block
    ($\\pm\\sqrt{6/(\\mathrm{out}/3 + \\mathrm{in})}$), biases 0, patch conv torch's default.
    All modes: ``pos_embed`` $\\mathcal N(0, 0.02^2)$, ``cls_token`` and ``reg_token`` $\\mathcal N(0, 10^{-12})$.
    """
    if mode not in ("", "jax", "moco"):
        raise InitError(f"mode must be '', 'jax' or 'moco' (timm's ViT init modes); got mode={mode!r}.")

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Linear):
                if name == "bias":
                    bias_std = 1e-6 if mode == "jax" and "mlp" in path and not path.startswith("head") else 0.0
                    table[path] = (
                        normal(bias_std, "jax: mlp bias N(0, 1e-12)")
                        if bias_std
                        else Action("constant", 0.0, formula="bias 0")
                    )
                elif mode == "":
                    table[path] = normal(0.02, "timm: N(0, 0.02^2)")
                elif mode == "jax" and path.startswith("head"):
                    table[path] = Action("constant", 0.0, formula="jax head: 0")
                else:
                    rows = param.shape[0] // 3 if mode == "moco" and "qkv" in path else param.shape[0]
                    std = xavier_std(1.0, param.shape[1], rows)
                    table[path] = Action(
                        "uniform",
                        math.sqrt(3.0) * std,
                        formula="xavier_uniform" + (" per q/k/v" if rows != param.shape[0] else ""),
                    )
            elif isinstance(module, nn.Conv2d) and mode == "jax":
                if name == "weight":
                    table[path] = Action("truncated_normal", torch_fans(param).fan_in ** -0.5, formula="lecun_normal")
                else:
                    table[path] = Action("constant", 0.0, formula="bias 0")
            elif isinstance(module, nn.Conv2d):
                table[path] = _torch_default(module, name)
        _vit_tokens(model, table)
        return table

    label = {"": "vit", "jax": "vit_jax", "moco": "vit_moco"}[mode]
    text = {
        "": "Linear N(0, 0.02^2), patch conv torch default, pos_embed 0.02, cls_token 1e-6",
        "jax": "Linear xavier_uniform (head 0, mlp biases 1e-6), conv lecun_normal",
        "moco": "Linear xavier_uniform (qkv per block), patch conv torch default",
    }[mode]
    return Recipe(label, f"timm VisionTransformer.init_weights(mode={mode!r})", rules, text,
                  spelled=spelled_recipe("vit", mode=mode or None), fits=fits.timm_vit)  # fmt: skip


# --- torchvision ResNet ---------------------------------------------------------------------------------


def resnet(zero_init_residual: bool = False) -> Recipe:
    """torchvision's ResNet init (``torchvision/models/resnet.py``): every Conv2d Kaiming normal for ReLU
    with torch's shape-based fan_out, $\\mathcal N(0, 2/(c_\\mathrm{out} k_h k_w))$ (also on strided,
    downsample and grouped convs, which torch's fans count so); BatchNorm/GroupNorm weight 1, bias 0; the
    ``fc`` classifier torch's default. ``zero_init_residual`` (Goyal et al. 2017): each block's last norm
    weight 0 (``bn3`` in Bottleneck, ``bn2`` in BasicBlock)."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Conv2d) and name == "weight":
                table[path] = normal(
                    math.sqrt(2.0 / torch_fans(param).fan_out), "kaiming_normal_(fan_out, relu), torch fans"
                )
            elif isinstance(module, nn.Linear):
                table[path] = _torch_default(module, name)
        if zero_init_residual:
            for at, module in walk(model).modules:
                last = {"Bottleneck": "bn3", "BasicBlock": "bn2"}.get(type(module).__name__)
                if last is not None and isinstance(getattr(module, last, None), nn.modules.batchnorm._BatchNorm):
                    table[f"{at}{last}.weight"] = Action("constant", 0.0, formula="zero_init_residual")
        return table

    return Recipe(
        "resnet",
        "torchvision ResNet.__init__; zero_init_residual: Goyal et al. 2017",
        rules,
        "conv kaimingnormal(fan_out, relu) with torch fans, norms 1/0, fc torch default",
        spelled=spelled_recipe("resnet", zero_init_residual=zero_init_residual or None),
        fits=fits.torchvision_resnet,
    )


for _made in (vit(), vit("jax"), vit("moco"), resnet()):
    register_scheme(_made.name, _made)
