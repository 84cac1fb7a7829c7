"""Recipes: reference inits of model families by name, with their hyper-parameters.

``reinit(model, "gpt2")`` uses the reference defaults (read from ``model.config`` where the reference
does); ``reinit(model, torchinit.recipes.gpt2(initializer_range=0.01))`` changes them. See the Recipes
page of the docs for every rule and what it was verified against.
"""

from torchinit._schemes.mup import Mup, mup
from torchinit._schemes.recipes import (
    Recipe,
    Rules,
    bert,
    block_index,
    depth,
    gpt2,
    hf_rules,
    llama,
    llama_depth,
    recipe,
    t5,
)
from torchinit._schemes.recipes_hf import clip, gemma, siglip, vit_hf, whisper
from torchinit._schemes.recipes_torchvision import convnext, efficientnet, swin, torchvision_vit
from torchinit._schemes.recipes_vision import resnet, timm_resnet, vit

__all__ = [
    "Mup",
    "Recipe",
    "Rules",
    "bert",
    "block_index",
    "clip",
    "convnext",
    "depth",
    "efficientnet",
    "gemma",
    "gpt2",
    "hf_rules",
    "llama",
    "llama_depth",
    "mup",
    "recipe",
    "resnet",
    "siglip",
    "swin",
    "t5",
    "timm_resnet",
    "torchvision_vit",
    "vit",
    "vit_hf",
    "whisper",
]
