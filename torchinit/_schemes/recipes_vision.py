"""Recipes of vision families: timm's ViT (``""``, ``"jax"``, ``"moco"``), torchvision's and timm's ResNet."""

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
from torchinit._schemes.torch_draws import kaiming_fan_out
from torchinit._types import InitError

# --- timm ViT -------------------------------------------------------------------------------------------


def _vit_tokens(model: nn.Module, table: Rules) -> None:
    for name, std in (("pos_embed", 0.02), ("cls_token", 1e-6), ("reg_token", 1e-6)):
        if isinstance(getattr(model, name, None), torch.Tensor):
            table[name] = normal(std, f"timm {name}: N(0, {std:g}^2)")


def torch_default(module: nn.Module, name: str, path: str = "") -> Action:
    """torch's own draw of ``module.<name>`` (what a library that leaves a layer alone keeps); InitError if unknown."""
    found = default_actions(module).get(name)
    if found is None:
        kind = type(module).__name__
        shape = tuple(getattr(module, name).shape)
        raise InitError(
            f"{path or name} ({kind}, shape {shape}) keeps what its layer's constructor drew under this recipe, and "
            f"no torch default is known for {kind}.{name}: describe the layer with "
            f"torchinit.register_layer({kind}, legacy=...)."
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
                table[path] = torch_default(module, name, path)
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


_LAST_NORM = {"BasicBlock": "bn2", "Bottleneck": "bn3"}  # each block's last norm: what zero_init_* zeroes


def _zero_last_norms(model: nn.Module, table: Rules, formula: str, kind: type) -> None:
    """Each Basic/Bottleneck block's last norm weight 0, where that norm is a ``kind`` with a weight."""
    for at, module in walk(model).modules:
        name = _LAST_NORM.get(type(module).__name__)
        norm = getattr(module, name, None) if name is not None else None
        if isinstance(norm, kind) and isinstance(getattr(norm, "weight", None), torch.Tensor):
            table[f"{at}{name}.weight"] = Action("constant", 0.0, formula=formula)


def resnet(zero_init_residual: bool = False) -> Recipe:
    """torchvision's ResNet init (``torchvision/models/resnet.py``): every Conv2d Kaiming normal for ReLU
    with torch's shape-based fan_out, $\\mathcal N(0, 2/(c_\\mathrm{out} k_h k_w))$ (also on strided,
    downsample and grouped convs, which torch's fans count so); BatchNorm/GroupNorm weight 1, bias 0; the
    ``fc`` classifier torch's default. ``zero_init_residual`` (Goyal et al. 2017): each block's last norm
    weight 0 (``bn3`` in Bottleneck, ``bn2`` in BasicBlock). On a timm ResNet this is torchvision's rule; timm's
    own is `timm_resnet`."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Conv2d) and name == "weight":
                table[path] = kaiming_fan_out(param)
            elif isinstance(module, nn.Linear):
                table[path] = torch_default(module, name, path)
        if zero_init_residual:
            _zero_last_norms(model, table, "zero_init_residual", nn.modules.batchnorm._BatchNorm)
        return table

    return Recipe(
        "resnet",
        "torchvision ResNet.__init__; zero_init_residual: Goyal et al. 2017",
        rules,
        "conv kaiming_normal(fan_out, relu) with torch fans, norms 1/0, fc torch default",
        spelled=spelled_recipe("resnet", zero_init_residual=zero_init_residual or None),
        fits=fits.torchvision_resnet,
    )


def timm_resnet(zero_init_last: bool = True) -> Recipe:
    """timm's ResNet init (``ResNet.init_weights`` in ``timm/models/resnet.py``): every Conv2d weight Kaiming
    normal for ReLU with torch's fan_out, $\\mathcal N(0, 2/(c_\\mathrm{out} k_h k_w))$ (squeeze-excitation convs
    included); every other parameter as its constructor drew it, torch's default (``fc`` and conv biases
    $\\mathcal U(\\pm 1/\\sqrt{\\mathrm{fan_{in}}})$, an ECA ``Conv1d`` ``kaiming_uniform_(a=sqrt(5))``, norms 1/0).
    ``zero_init_last`` (timm's default): each block's last norm weight 0 (``bn2`` of BasicBlock, ``bn3`` of
    Bottleneck), whatever the norm's class.

    Unlike `resnet` (torchvision's), a conv bias keeps torch's draw instead of 0, and the last norm is zeroed by
    default."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Conv2d) and name == "weight":
                table[path] = kaiming_fan_out(param)
            else:
                table[path] = torch_default(module, name, path)
        if zero_init_last:
            _zero_last_norms(model, table, "zero_init_last", nn.Module)  # whatever the norm's class
        return table

    return Recipe(
        "timm_resnet",
        "timm ResNet.init_weights(zero_init_last)",
        rules,
        "conv kaiming_normal(fan_out, relu) with torch fans, the rest torch default, last norm of each block 0",
        spelled=spelled_recipe("timm_resnet", zero_init_last=None if zero_init_last else False),
        fits=fits.timm_resnet,
    )


for _made in (vit(), vit("jax"), vit("moco"), resnet(), timm_resnet()):
    register_scheme(_made.name, _made)
