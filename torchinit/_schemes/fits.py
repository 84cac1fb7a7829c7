"""Which models a recipe is for: one predicate per recipe, read from the model's structure and config.

A recipe states its reference model family's init; on another family it is silently wrong (the ``t5`` rules on
GPT-2, the timm ViT rules on torchvision's ViT, whose fused ``in_proj_weight`` they never name). Each predicate
returns None when the model is one the recipe was written for, else what it expected. Hugging Face models
are recognized by ``config.model_type`` (a family list) or, without a config, by their layer names.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

Fit = Callable[[nn.Module], "str | None"]
"""A model -> None when the recipe is for it, else a phrase saying what it expects."""

GPT2_TYPES = frozenset({"gpt2"})
BERT_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "megatron-bert", "ernie", "mpnet",
     "data2vec-text", "roformer", "xlm-roberta-xl", "nezha", "rembert"}
)  # fmt: skip
LLAMA_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo", "olmo2", "granite",
     "granitemoe", "cohere", "starcoder2", "smollm3", "gemma", "gemma2", "gemma3_text", "helium", "glm", "exaone4"}
)  # fmt: skip
# Gemma is a Llama-family model too: the llama recipe leaves norms to the base scheme, which measures their
# neutral weight (0 for Gemma's x_hat * (1 + w)), so it equals HF's Gemma init; the gemma recipe states the 0.
T5_TYPES = frozenset({"t5", "mt5", "umt5", "longt5"})
CLIP_TYPES = frozenset({"clip", "clip_text_model", "clip_vision_model"})
SIGLIP_TYPES = frozenset({"siglip", "siglip_text_model", "siglip_vision_model"})
WHISPER_TYPES = frozenset({"whisper"})
GEMMA_TYPES = frozenset({"gemma", "gemma2", "gemma3_text"})
VIT_HF_TYPES = frozenset({"vit"})
_LLAMA_NAMES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def model_type(model: nn.Module) -> str | None:
    """A Hugging Face model's ``config.model_type`` (a submodel's text config included), or None."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    return kind if isinstance(kind, str) else None


def _names(model: nn.Module) -> set[str]:
    return {path.rsplit(".", 1)[-1] for path, _ in model.named_modules()}


def _types(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def _hf(family: str, kinds: frozenset[str], by_structure: Callable[[nn.Module], bool]) -> Fit:
    def fits(model: nn.Module) -> str | None:
        kind = model_type(model)
        if kind in kinds or (kind is None and by_structure(model)):
            return None
        found = f"config.model_type {kind!r}" if kind else "a model without a Hugging Face config"
        return f"a {family} model (config.model_type one of {', '.join(sorted(kinds))}); got {found}"

    return fits


gpt2 = _hf("GPT-2", GPT2_TYPES, lambda m: "Conv1D" in _types(m) and {"c_attn", "c_proj"} <= _names(m))
bert = _hf("BERT-family", BERT_TYPES, lambda m: {"query", "key", "value", "word_embeddings"} <= _names(m))
llama = _hf("Llama-family", LLAMA_TYPES, lambda m: _names(m) >= _LLAMA_NAMES)
t5 = _hf("T5", T5_TYPES, lambda m: "T5Attention" in _types(m))
clip = _hf("CLIP", CLIP_TYPES, lambda m: "CLIPAttention" in _types(m))
siglip = _hf("SigLIP", SIGLIP_TYPES, lambda m: "SiglipAttention" in _types(m))
whisper = _hf("Whisper", WHISPER_TYPES, lambda m: bool({"WhisperEncoder", "WhisperDecoder"} & _types(m)))
gemma = _hf("Gemma", GEMMA_TYPES, lambda m: bool({"GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"} & _types(m)))
vit_hf = _hf("Hugging Face ViT", VIT_HF_TYPES, lambda m: "ViTEmbeddings" in _types(m))


def llama_depth(model: nn.Module) -> str | None:
    """torchtitan's Llama: the Llama layer names and an output head of its own (not tied to the embedding)."""
    kind = model_type(model)
    if (kind is not None and kind not in LLAMA_TYPES) or not _names(model) >= _LLAMA_NAMES:
        return f"a Llama-architecture model (q/k/v/o, gate/up/down projections); got {kind or type(model).__name__}"
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    if any(isinstance(m, nn.Linear) and id(m.weight) in embeddings for m in model.modules()):
        return "an untied output head (torchtitan's Llama; its N(0, 1) embedding would be the readout); got a tied one"
    return None


def timm_vit(model: nn.Module) -> str | None:
    """timm's VisionTransformer: ``patch_embed``, ``blocks`` of ``qkv`` attention, ``pos_embed``."""
    names = _names(model)
    if {"patch_embed", "blocks", "qkv"} <= names and hasattr(model, "pos_embed"):
        return None
    return f"a timm VisionTransformer (patch_embed, blocks, qkv, pos_embed); got {type(model).__name__}"


def torchvision_resnet(model: nn.Module) -> str | None:
    """torchvision's (or timm's) ResNet: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of Basic/Bottleneck blocks."""
    names = _names(model)
    if {"conv1", "bn1", "layer1", "layer4"} <= names and {"BasicBlock", "Bottleneck"} & _types(model):
        return None
    return f"a ResNet (conv1, bn1, layer1..layer4 of BasicBlock/Bottleneck); got {type(model).__name__}"


def timm_resnet(model: nn.Module) -> str | None:
    """timm's ResNet (``timm/models/resnet.py``): ``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``global_pool``, of
    timm's BasicBlock/Bottleneck, the blocks with a ``zero_init_last`` method (torchvision's have none)."""
    names = _names(model)
    lasts = {type(m).__name__ for m in model.modules() if callable(getattr(m, "zero_init_last", None))}
    if {"conv1", "bn1", "layer1", "layer4", "global_pool"} <= names and lasts and lasts <= {"BasicBlock", "Bottleneck"}:
        return None
    return f"a timm ResNet (layer1..layer4 of timm's BasicBlock/Bottleneck, global_pool); got {type(model).__name__}"


def torchvision_vit(model: nn.Module) -> str | None:
    """torchvision's VisionTransformer: ``conv_proj``, ``class_token``, an ``encoder`` of EncoderBlocks, ``heads``."""
    if {"conv_proj", "encoder", "heads"} <= _names(model) and "EncoderBlock" in _types(model):
        return None
    return f"a torchvision VisionTransformer (conv_proj, encoder of EncoderBlock, heads); got {type(model).__name__}"


def _torchvision(family: str, blocks: frozenset[str], names: frozenset[str]) -> Fit:
    def fits(model: nn.Module) -> str | None:
        if names <= _names(model) and blocks & _types(model):
            return None
        return f"a torchvision {family}; got {type(model).__name__}"

    return fits


convnext = _torchvision(
    "ConvNeXt (features of CNBlock, classifier)", frozenset({"CNBlock"}), frozenset({"features", "classifier"})
)
swin = _torchvision(
    "SwinTransformer (features of ShiftedWindowAttention or V2, norm, head)",
    frozenset({"ShiftedWindowAttention", "ShiftedWindowAttentionV2"}),
    frozenset({"features", "norm", "head"}),
)
efficientnet = _torchvision(
    "EfficientNet (features of MBConv/FusedMBConv, classifier)",
    frozenset({"MBConv", "FusedMBConv"}),
    frozenset({"features", "classifier"}),
)
