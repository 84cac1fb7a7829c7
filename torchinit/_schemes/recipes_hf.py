r"""Recipes of the Hugging Face families with an ``_init_weights`` of their own: CLIP, SigLIP, Whisper, Gemma, ViT.

Each transcribes ``<Family>PreTrainedModel._init_weights`` (transformers 5.x,
``transformers/models/<family>/modeling_<family>.py``) on top of HF's generic ``PreTrainedModel._init_weights``
(`hf_generic`), in HF's order: ``initialize_weights`` runs ``_init_weights`` on each module after its children,
so a rule an enclosing module states (CLIP's attention on its ``q_proj``) overwrites the generic rule of that
child, and a sub-model (CLIP's ``text_model``) runs its own, with its own config (`hf_walk`). Norms are left
to the base scheme (weight 1, bias 0: HF's generic rule) except where a family says otherwise (Gemma: 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from torchinit._maths.draw import Action
from torchinit._maths.fans import torch_fans
from torchinit._model.walk import walk
from torchinit._schemes import fits
from torchinit._schemes.fits import Fit
from torchinit._schemes.recipes import Recipe, Rules, normal, spelled_recipe
from torchinit._schemes.registry import register_scheme
from torchinit._schemes.torch_draws import trunc_normal_abs, xavier_uniform
from torchinit._types import check_finite

FamilyRule = Callable[[str, Any, Any, Rules], None]
"""(module prefix, module, the config of the HF model that initializes it, the table) -> the family's writes."""

HF_DENSE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
"""The layer types HF's generic rule draws $\\mathcal N(0, \\mathrm{std}^2)$ into (their biases 0)."""

LECUN_TRUNCATION = 0.87962566103423978
"""HF's literal for the std of N(0, 1) cut at +-2 (``transformers.initialization._variance_scaling``)."""

ZERO = Action("constant", 0.0, formula="HF: 0")


def hf_walk(model: nn.Module) -> list[tuple[str, Any, Any]]:
    """(prefix, module, config) for every module, each after all of its descendants (the order in which HF's
    ``initialize_weights`` lets an enclosing module's rule overwrite its children's). ``config`` is that of the
    nearest enclosing HF model (the module itself included: one with ``config`` and ``_init_weights``), whose
    ``_init_weights`` HF runs on it; None outside any (the base scheme's)."""
    owners: dict[str, Any] = {}
    found: list[tuple[str, Any, Any]] = []
    for at, module in walk(model).modules:
        parent = at[:-1].rpartition(".")[0]
        inherited = owners.get(f"{parent}." if parent else "") if at else None
        own = getattr(module, "config", None) if callable(getattr(module, "_init_weights", None)) else None
        owners[at] = config = own if own is not None else inherited
        found.append((at, module, config))
    return found[::-1]


_CLASS_NAMES: dict[type, frozenset[str]] = {}


def kinds(obj: object) -> frozenset[str]:
    """The class names of ``obj``'s type and its bases: HF's ``isinstance`` tests without importing HF."""
    kind = type(obj)
    names = _CLASS_NAMES.get(kind)
    if names is None:
        names = _CLASS_NAMES[kind] = frozenset(c.__name__ for c in kind.__mro__)
    return names


def setting(config: Any, name: str) -> float:
    """``config.<name>`` as a finite number >= 0 (an InitError naming it otherwise)."""
    return check_finite(f"config.{name}", getattr(config, name, None), minimum=0.0)


def hf_std(config: Any) -> float:
    """The std of HF's generic rule: ``config.initializer_range`` (0 or None: 0.02), else ``init_std``, else
    ``initializer_factor``, else the text config's ``initializer_range``, else 0.02."""
    if hasattr(config, "initializer_range"):
        return check_finite("config.initializer_range", config.initializer_range or 0.02, minimum=0.0)
    for name in ("init_std", "initializer_factor"):
        if hasattr(config, name):
            return setting(config, name)
    text = config.get_text_config() if callable(getattr(config, "get_text_config", None)) else None
    return check_finite("text_config.initializer_range", getattr(text, "initializer_range", 0.02), minimum=0.0)


def lecun_normal(param: Any) -> Action:
    """HF's ``lecun_normal_``: ``trunc_normal_(std=sqrt(1/fan_in) / 0.8796)``, whose cut is $\\pm 2$ absolute
    (`trunc_normal_abs`; at fan_in 64 that is $\\pm 14\\sigma$, so the std is $1.137/\\sqrt{\\mathrm{fan_{in}}}$,
    not the $1/\\sqrt{\\mathrm{fan_{in}}}$ the name promises)."""
    sigma = math.sqrt(1.0 / torch_fans(param).fan_in) / LECUN_TRUNCATION
    return trunc_normal_abs(sigma, "HF lecun_normal_: trunc_normal_(std=fan_in^-1/2 / 0.8796), cut +-2 absolute")


def child_weight(table: Rules, at: str, module: Any, child: str, action: Action) -> None:
    """HF's ``_init_child_weight``: ``action`` on ``module.<child>.weight`` when that child has a weight."""
    if isinstance(getattr(getattr(module, child, None), "weight", None), nn.Parameter):
        table[f"{at}{child}.weight"] = action


def hf_generic(at: str, module: Any, std: float, table: Rules) -> None:
    """HF's ``PreTrainedModel._init_weights``: Linear and Conv weights $\\mathcal N(0, \\mathrm{std}^2)$, their
    biases 0; embeddings $\\mathcal N(0, \\mathrm{std}^2)$ with the padding row 0 (norms: the base scheme's 1/0).
    HF's branches for ``nn.MultiheadAttention`` (torch's own reset) and ``nn.LSTM`` are not transcribed: the one
    such layer in these families, SigLIP's pooling attention, is stated whole by the SigLIP rule."""
    if isinstance(module, HF_DENSE):
        if isinstance(module.weight, nn.Parameter):
            table[at + "weight"] = normal(std, f"HF: N(0, {std:g}^2)")
        if isinstance(module.bias, nn.Parameter):
            table[at + "bias"] = ZERO
    elif isinstance(module, nn.Embedding):
        formula = f"HF embedding: N(0, {std:g}^2)"
        table[at + "weight"] = Action("normal", std, zero_row=module.padding_idx, formula=formula)


def hf_recipe(name: str, family: str, text: str, rule: FamilyRule, fit: Fit, spelled: str, std: float | None) -> Recipe:
    """A recipe that runs, on each module inside an HF model in HF's order (`hf_walk`), `hf_generic` (with
    ``std``, else the owning config's `hf_std`) and then the family's ``rule``."""

    def rules(model: nn.Module) -> Rules:
        table: Rules = {}
        for at, module, config in hf_walk(model):
            if config is not None:
                hf_generic(at, module, std if std is not None else hf_std(config), table)
                rule(at, module, config, table)
        return table

    source = f"HF transformers {family}PreTrainedModel._init_weights"
    return Recipe(name, source, rules, text, spelled=spelled, fits=fit)


# --- CLIP -----------------------------------------------------------------------------------------------


def clip(initializer_factor: float | None = None) -> Recipe:
    """Hugging Face's CLIP init (``CLIPPreTrainedModel._init_weights``, ``models/clip/modeling_clip.py``).

    With $f$ = ``initializer_factor`` (each tower's config, else the one given), $L$ the tower's
    ``num_hidden_layers``, $d$ its width, $r$ the vision config's ``initializer_range``: token and position
    embeddings of the text tower $\\mathcal N(0, (0.02 f)^2)$; the vision ``class_embedding``
    $\\mathcal N(0, f^2/d)$, patch conv and position embedding $\\mathcal N(0, (r f)^2)$; attention q, k, v
    $\\mathcal N(0, f^2/(2 d L))$, ``out_proj`` $\\mathcal N(0, f^2/d)$; MLP ``fc1`` $\\mathcal N(0, f^2/(2d))$,
    ``fc2`` $\\mathcal N(0, f^2/(2 d L))$; ``text_projection``/``visual_projection`` and a classifier
    $\\mathcal N(0, f^2/d_\\mathrm{in})$; biases 0, LayerNorms 1/0; ``logit_scale`` kept as constructed
    ($\\log(1/0.07)$ = ``config.logit_scale_init_value``: HF's init leaves it).
    """

    def rule(at: str, module: Any, config: Any, table: Rules) -> None:
        names = kinds(module)
        if not names & _CLIP_KINDS:
            return
        f = initializer_factor if initializer_factor is not None else setting(config, "initializer_factor")
        if "CLIPTextEmbeddings" in names:
            for child in ("token_embedding", "position_embedding"):
                child_weight(table, at, module, child, normal(f * 0.02, "CLIP text embedding: N(0, (0.02 f)^2)"))
        elif "CLIPVisionEmbeddings" in names:
            table[at + "class_embedding"] = normal(module.embed_dim**-0.5 * f, "CLIP class_embedding: N(0, f^2/d)")
            r = setting(module.config, "initializer_range")
            for child in ("patch_embedding", "position_embedding"):
                child_weight(table, at, module, child, normal(r * f, "CLIP vision embedding: N(0, (r f)^2)"))
        elif "CLIPAttention" in names:
            d, layers = module.embed_dim, module.config.num_hidden_layers
            inner = normal(d**-0.5 * (2 * layers) ** -0.5 * f, "CLIP q/k/v: N(0, f^2/(2dL))")
            for child in ("q_proj", "k_proj", "v_proj"):
                child_weight(table, at, module, child, inner)
            child_weight(table, at, module, "out_proj", normal(d**-0.5 * f, "CLIP out_proj: N(0, f^2/d)"))
        elif "CLIPMLP" in names:
            d, layers = module.config.hidden_size, module.config.num_hidden_layers
            child_weight(table, at, module, "fc1", normal((2 * d) ** -0.5 * f, "CLIP fc1: N(0, f^2/(2d))"))
            fc2 = normal(d**-0.5 * (2 * layers) ** -0.5 * f, "CLIP fc2: N(0, f^2/(2dL))")
            child_weight(table, at, module, "fc2", fc2)
        elif "CLIPModel" in names:
            widths = {"text_projection": module.text_embed_dim, "visual_projection": module.vision_embed_dim}
            for child, d in widths.items():
                child_weight(table, at, module, child, normal(d**-0.5 * f, "CLIP projection: N(0, f^2/d)"))
            if isinstance(getattr(module, "logit_scale", None), nn.Parameter):
                table[at + "logit_scale"] = Action("keep", formula="CLIP logit_scale: log(1/0.07) as constructed")
        elif "CLIPForImageClassification" in names:
            d = config.vision_config.hidden_size
            child_weight(table, at, module, "classifier", normal(d**-0.5 * f, "CLIP classifier: N(0, f^2/d)"))
        else:  # CLIPVisionModelWithProjection, CLIPTextModelWithProjection
            child = "visual_projection" if "CLIPVisionModelWithProjection" in names else "text_projection"
            child_weight(table, at, module, child, normal(config.hidden_size**-0.5 * f, "CLIP projection: N(0, f^2/d)"))

    return hf_recipe(
        "clip", "CLIP", "attention/MLP N(0, f^2/(2dL)), out_proj N(0, f^2/d), fc1 N(0, f^2/(2d)), logit_scale kept",
        rule, fits.clip, spelled_recipe("clip", initializer_factor=initializer_factor), None,
    )  # fmt: skip


_CLIP_KINDS = frozenset(
    {"CLIPTextEmbeddings", "CLIPVisionEmbeddings", "CLIPAttention", "CLIPMLP", "CLIPModel",
     "CLIPForImageClassification", "CLIPVisionModelWithProjection", "CLIPTextModelWithProjection"}
)  # fmt: skip


# --- SigLIP ---------------------------------------------------------------------------------------------


def _siglip_rule(at: str, module: Any, config: Any, table: Rules) -> None:
    names = kinds(module)
    if "SiglipVisionEmbeddings" in names:
        width = config.vision_config.hidden_size if "SiglipConfig" in kinds(config) else config.hidden_size
        child_weight(table, at, module, "position_embedding", normal(width**-0.5, "SigLIP position: N(0, 1/width)"))
    elif isinstance(module, nn.Embedding):
        table[at + "weight"] = normal(torch_fans(module.weight).fan_in ** -0.5, "flax embed init: N(0, 1/d)")
    elif "SiglipAttention" in names:
        for child in ("q_proj", "k_proj", "v_proj", "out_proj"):
            layer = getattr(module, child)
            table[f"{at}{child}.weight"] = xavier_uniform(layer.weight, "SigLIP attention: xavier_uniform_")
            table[f"{at}{child}.bias"] = ZERO
    elif "SiglipMLP" in names:
        for child in ("fc1", "fc2"):
            table[f"{at}{child}.weight"] = xavier_uniform(getattr(module, child).weight, "SigLIP MLP: xavier_uniform_")
            table[f"{at}{child}.bias"] = normal(1e-6, "SigLIP MLP bias: N(0, 1e-12)")
    elif "SiglipMultiheadAttentionPoolingHead" in names:
        table[at + "probe"] = xavier_uniform(module.probe, "SigLIP probe: xavier_uniform_ (torch fans)")
        attention = at + "attention."
        table[attention + "in_proj_weight"] = xavier_uniform(module.attention.in_proj_weight, "xavier_uniform_")
        table[attention + "in_proj_bias"] = ZERO
    elif "SiglipModel" in names:
        for name in ("logit_scale", "logit_bias"):
            table[at + name] = Action("constant", 0.0, formula=f"HF SigLIP {name}: 0")
    elif "SiglipForImageClassification" in names:
        std = config.vision_config.hidden_size**-0.5 * setting(config, "initializer_factor")
        child_weight(table, at, module, "classifier", normal(std, "SigLIP classifier: N(0, f^2/d)"))
    elif isinstance(module, (nn.Linear, nn.Conv2d)):
        table[at + "weight"] = lecun_normal(module.weight)
        if isinstance(module.bias, nn.Parameter):
            table[at + "bias"] = ZERO


def siglip() -> Recipe:
    """Hugging Face's SigLIP init (``SiglipPreTrainedModel._init_weights``, ``models/siglip/modeling_siglip.py``).

    Embeddings $\\mathcal N(0, 1/d)$ (flax's default; the vision position table $1/\\mathrm{width}$); attention
    q, k, v, out Xavier-uniform with biases 0; MLP ``fc1``/``fc2`` Xavier-uniform with biases
    $\\mathcal N(0, 10^{-12})$; the pooling head's ``probe`` and ``in_proj_weight`` Xavier-uniform (torch's
    fans; the probe's $(1, 1, d)$ gives $\\pm\\sqrt{3/d}$), ``in_proj_bias`` 0; every other Linear and Conv2d
    (patch conv, text ``head``, ``out_proj``) HF's ``lecun_normal_`` (`lecun_normal`), biases 0; a classifier
    $\\mathcal N(0, f^2/d)$; ``logit_scale`` and ``logit_bias`` 0 (HF's; the paper's $\\log 10$ and $-10$ are not
    what transformers sets); LayerNorms 1/0.
    """
    text = "embeddings N(0, 1/d), attention/MLP xavier_uniform, other dense lecun_normal_, logit_scale/bias 0"
    return hf_recipe("siglip", "Siglip", text, _siglip_rule, fits.siglip, spelled_recipe("siglip"), None)


# --- Whisper, Gemma, ViT: the generic rule and a few tensors ---------------------------------------------


def _whisper_rule(at: str, module: Any, config: Any, table: Rules) -> None:
    names = kinds(module)
    if "WhisperEncoder" in names:
        table[at + "embed_positions.weight"] = Action(
            "keep", formula="Whisper sinusoids: kept (the constructor's table is the one HF writes)"
        )
    elif "WhisperForAudioClassification" in names and getattr(config, "use_weighted_layer_sum", False):
        value = 1.0 / (config.num_hidden_layers + 1)
        table[at + "layer_weights"] = Action("constant", value, formula="Whisper layer_weights: 1/(L+1)")


def whisper(init_std: float | None = None) -> Recipe:
    """Hugging Face's Whisper init (``WhisperPreTrainedModel._init_weights``, ``models/whisper/modeling_whisper.py``):
    `hf_generic` with std = ``init_std`` (the config's, else the one given): conv, Linear and embeddings
    (decoder tokens and positions) $\\mathcal N(0, \\mathrm{std}^2)$, padding row 0, biases 0, LayerNorms 1/0.
    The encoder's ``embed_positions`` (frozen) is kept bitwise: HF copies ``sinusoids(length, d)`` into it, the
    table the constructor already holds (one you changed stays changed; torchinit writes no computed tables).
    ``WhisperForAudioClassification`` with ``use_weighted_layer_sum``: ``layer_weights`` $1/(L+1)$."""
    return hf_recipe(
        "whisper", "Whisper", "conv/dense/embeddings N(0, std^2), encoder sinusoids kept", _whisper_rule,
        fits.whisper, spelled_recipe("whisper", init_std=init_std),
        None if init_std is None else check_finite("init_std", init_std, minimum=0.0),
    )  # fmt: skip


def _gemma_rule(at: str, module: Any, config: Any, table: Rules) -> None:
    if "RMSNorm" in type(module).__name__ and isinstance(getattr(module, "weight", None), nn.Parameter):
        table[at + "weight"] = Action("constant", 0.0, formula="Gemma RMSNorm x_hat * (1 + w): 0")


def gemma(initializer_range: float | None = None) -> Recipe:
    """Hugging Face's Gemma init (``GemmaPreTrainedModel._init_weights``, the same in Gemma2 and Gemma3's text
    model): `hf_generic` with $r$ = ``initializer_range``: dense and embeddings $\\mathcal N(0, r^2)$, padding
    row 0; every RMSNorm weight 0 (it computes $\\hat x\\,(1 + w)$, so 0 is the identity)."""
    return hf_recipe(
        "gemma", "Gemma", "dense/embeddings N(0, r^2), RMSNorm (x_hat * (1 + w)) 0", _gemma_rule, fits.gemma,
        spelled_recipe("gemma", initializer_range=initializer_range),
        None if initializer_range is None else check_finite("initializer_range", initializer_range, minimum=0.0),
    )  # fmt: skip


def vit_hf(initializer_range: float | None = None) -> Recipe:
    """Hugging Face's ViT init (``ViTPreTrainedModel._init_weights``, ``models/vit/modeling_vit.py``):
    `hf_generic` with $r$ = ``initializer_range``: Linear and the patch conv $\\mathcal N(0, r^2)$, biases 0,
    LayerNorms 1/0; ``position_embeddings`` and ``cls_token`` ``trunc_normal_(std=r)`` (`trunc_normal_abs`:
    cut at $\\pm 2$ absolute, $\\pm 100\\sigma$ at 0.02); ``mask_token`` 0. (transformers 4.x drew the Linear
    and conv weights with the same ``trunc_normal_``: the same law.)"""
    given = None if initializer_range is None else check_finite("initializer_range", initializer_range, minimum=0.0)

    def rule(at: str, module: Any, config: Any, table: Rules) -> None:
        if "ViTEmbeddings" not in kinds(module):
            return
        r = given if given is not None else setting(config, "initializer_range")
        for name in ("position_embeddings", "cls_token"):
            if isinstance(getattr(module, name, None), nn.Parameter):
                table[at + name] = trunc_normal_abs(r, f"HF ViT {name}: trunc_normal_(std={r:g}), cut +-2 absolute")
        if isinstance(getattr(module, "mask_token", None), nn.Parameter):
            table[at + "mask_token"] = Action("constant", 0.0, formula="HF ViT mask_token: 0")

    text = "dense N(0, r^2), position_embeddings/cls_token trunc_normal_(r) cut +-2 absolute, mask_token 0"
    spelled = spelled_recipe("vit_hf", initializer_range=initializer_range)
    return hf_recipe("vit_hf", "ViT", text, rule, fits.vit_hf, spelled, given)


for _made in (clip(), siglip(), whisper(), gemma(), vit_hf()):
    register_scheme(_made.name, _made)
