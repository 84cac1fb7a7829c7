"""The layers of the model zoos (Hugging Face, timm, torchvision), recognized by structure, never imported.

One description on ``nn.Module`` itself, so it is the last rule every module type's MRO reaches: a
more specific registration always wins. It recognizes:

- Hugging Face ``Conv1D`` (GPT-2's ``c_attn``/``c_proj``/``c_fc``): ``y = x @ W + b`` with W stored
  (in, out), so ``fan_in = W.size(0)``; its constructor draws ``normal_(std=0.02)`` (replayed by legacy).
- Norms from any library (``LlamaRMSNorm``, ``T5LayerNorm``, ``LayerNorm2d``, ...): a class whose name
  contains ``Norm`` with 1-D ``weight``/``bias``: ``norm_weight`` at its neutral value, ``norm_bias`` 0. The
  neutral value is measured by running the layer (`torchinit._layers.measure`): 1 for ``x_hat * w``, 0 for
  Gemma's ``x_hat * (1 + w)``.
- Learned tokens and position tables (``cls_token``, ``class_token``, ``dist_token``, ``distillation_token``,
  ``register_tokens``, ``mask_token``, ``pos_embed``, ``pos_embedding``, ``absolute_pos_embed``,
  ``relative_position_bias_table``, HF's raw ``position_embeddings`` and CLIP's ``class_embedding``, SigLIP's
  pooling ``probe``, GPT-OSS's per-head attention ``sinks``): role ``token``.
- Learned temperatures (CLIP's and SigLIP's ``logit_scale``, ``logit_bias``): role ``temperature``, kept.
- Selective state-space layers (a ``*Mamba*`` or ``*Mixer`` module's ``A_log``, ``D``, ``dt_bias``): role
  ``state_space``, kept as the constructor computed them.
- A 1-D parameter named ``bias`` on any module (BERT's ``BertLMPredictionHead.bias``), timm's BEiT/EVA attention
  ``q_bias``/``k_bias``/``v_bias`` and LeViT's ``attention_biases``: role ``bias``.
- Mixtures of experts (Mixtral, Qwen-MoE, GPT-OSS, ...): a ``*Router``'s raw 2-D ``weight`` (E, d) used as
  ``F.linear(x, weight)`` is dense with fans (d, E); an ``*Experts`` module's stacked 3-D weights are ``dense``
  with one expert's fans and ``experts=E``: ``gate_up_proj`` (d -> 2 x intermediate, two chunks), ``up_proj``,
  ``gate_proj``, ``w1``, ``w3`` (d -> intermediate), ``down_proj``, ``w2`` (intermediate -> d), whichever way the
  matrix is stored (the module's ``hidden_dim``/``hidden_size`` names d); their 2-D ``*_bias`` are biases.
- Layer-scale vectors (``gamma`` of a ``*Scale`` or ``*Block`` module, as timm's ``LayerScale`` and
  ``ConvNeXtBlock``; ``gamma_1``/``gamma_2``, ``layer_scale``, ``layer_scale_1``,
  ``layer_scale_parameter``, Dinov2's ``lambda1``, BEiT's ``lambda_1``), and the weight and bias of ConvNeXt-V2's
  global response norm (``*GRN``, ``GlobalResponseNorm``: ``x + w * (x * N(x)) + b``, the identity at 0):
  role ``layer_scale``, kept at the constructed value.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from torch import nn

from torchinit._layers.measure import norm_role
from torchinit._layers.rules import BIAS, LegacyDraws, Role, own_parameter, register_layer
from torchinit._maths.draw import Action
from torchinit._maths.fans import Fans, cached_fans

_TOKEN = re.compile(
    r"(cls|class|dist|distillation|reg|register|mask)_tokens?|pos_embed(ding)?s?|absolute_pos_embed|"
    r"relative_position_bias_table|position_embeddings?|class_embedding|probe|sinks"
)
_LAYER_SCALE = re.compile(r"gamma_\d|layer_scale(_parameter|_?\d)?|lambda_?\d")
_TEMPERATURE = re.compile(r"logit_(scale|bias)")
_TOKEN_ROLE = Role("token")
_LAYER_SCALE_ROLE = Role("layer_scale")
_TEMPERATURE_ROLE = Role("temperature")
_ATTENTION_BIASES = frozenset({"q_bias", "k_bias", "v_bias", "attention_biases"})  # BEiT/EVA qkv, LeViT
_STATE_SPACE = frozenset({"A_log", "D", "dt_bias"})  # Mamba's: A = -exp(A_log) from 1..N, the skip D, dt's bias
_STATE_SPACE_ROLE = Role("state_space")
_CONV1D = frozenset({"Conv1D", "ParametrizedConv1D"})


def _is_conv1d(m: Any) -> bool:
    # transformers.pytorch_utils.Conv1D: attributes nf (out) and nx (in), weight (nx, nf); parametrized, torch
    # swaps its class for a subclass named ParametrizedConv1D
    if type(m).__name__ not in _CONV1D or "nf" not in m.__dict__ or "nx" not in m.__dict__:
        return False
    weight = own_parameter(m, "weight")
    return weight is not None and tuple(weight.shape) == (m.nx, m.nf)


def _is_norm(m: Any, name: str) -> bool:
    if "Norm" not in type(m).__name__:
        return False
    param = own_parameter(m, name)
    return param is not None and param.dim() == 1


def _fans(m: Any, name: str) -> Fans | None:
    if name == "weight" and _is_conv1d(m):
        return cached_fans(m.nx, m.nf)
    if name == "weight" and type(m).__name__.endswith("Router"):  # F.linear(x, weight): (experts, d)
        weight = own_parameter(m, "weight")
        if weight is not None and weight.dim() == 2:
            return cached_fans(weight.shape[1], weight.shape[0])
    return None


_EXPERTS_IN = {"gate_up_proj": 2, "up_proj": 1, "gate_proj": 1, "w1": 1, "w3": 1}  # d -> intermediate (chunks)
_EXPERTS_OUT = frozenset({"down_proj", "w2"})  # intermediate -> d
_EXPERT_NAMES = frozenset({*_EXPERTS_IN, *_EXPERTS_OUT, *(f"{n}_bias" for n in (*_EXPERTS_IN, *_EXPERTS_OUT))})


def _experts(m: Any, name: str) -> Role | None:
    """A stacked expert weight (experts, ., .) of an ``*Experts`` module: one expert's fans, by its name and d."""
    if not type(m).__name__.endswith("Experts"):
        return None
    param = own_parameter(m, name)
    if param is None or not param.numel():  # zero elements: nothing to describe (nor to write)
        return None
    if name.endswith("_bias"):
        return BIAS if param.dim() == 2 else None
    hidden = next((v for a in ("hidden_dim", "hidden_size") if type(v := m.__dict__.get(a)) is int), None)
    if param.dim() != 3 or hidden is None or hidden not in param.shape[1:]:
        return None
    count, rows, cols = param.shape
    other = cols if rows == hidden else rows  # stored (out, in) for F.linear or (in, out) for x @ W alike
    chunks = _EXPERTS_IN.get(name)
    if chunks is not None:
        if other % chunks:
            return None
        fans = Fans(hidden, other // chunks, chunks=chunks)
    else:
        fans = Fans(other, hidden)
    return Role("dense", fans, experts=count, via=f"{count} stacked MoE experts: fans of one")


@functools.lru_cache(maxsize=4096)
def _by_name(name: str) -> Role | None:
    """The role a parameter name alone gives (tokens, layer scales), matched once per distinct name."""
    if _TOKEN.fullmatch(name):
        return _TOKEN_ROLE
    if _TEMPERATURE.fullmatch(name):
        return _TEMPERATURE_ROLE
    return _LAYER_SCALE_ROLE if _LAYER_SCALE.fullmatch(name) else None


def _possible(cls: type, name: str) -> bool:
    """Whether some rule of `_roles` can describe a parameter ``name`` of a ``cls``, by the names alone: the
    name tests of `_roles`, in its order (a rule added there needs its name test here)."""
    kind = cls.__name__
    if name in _EXPERT_NAMES:
        return kind.endswith("Experts")
    if name in _STATE_SPACE:
        return "Mamba" in kind or kind.endswith("Mixer")
    if name in ("weight", "bias") and ("GRN" in kind or "ResponseNorm" in kind or "Norm" in kind):
        return True
    return (
        name == "bias"
        or name in _ATTENTION_BIASES
        or _by_name(name) is not None
        or (name == "gamma" and ("Scale" in kind or "Block" in kind))
    )


_POSSIBLE: dict[tuple[type, str], bool] = {}  # (class, parameter name) -> _possible: a Linear's weight is not


def _roles(m: Any, name: str) -> Role | None:
    key = (type(m), name)
    possible = _POSSIBLE.get(key)
    if possible is None:
        if len(_POSSIBLE) >= 4096:
            _POSSIBLE.clear()
        possible = _POSSIBLE[key] = _possible(type(m), name)
    if not possible:
        return None
    if name in _EXPERT_NAMES:
        return _experts(m, name)
    if name in _STATE_SPACE:
        return _STATE_SPACE_ROLE
    if name in ("weight", "bias"):
        kind = type(m).__name__
        if "GRN" in kind or "ResponseNorm" in kind:  # ConvNeXt-V2's x + w * (x * N(x)) + b: 0 is the identity
            return _LAYER_SCALE_ROLE
        if _is_norm(m, name):
            return norm_role(m, name)
    if name == "bias" and (_is_conv1d(m) or ((bias := own_parameter(m, "bias")) is not None and bias.dim() == 1)):
        return BIAS  # a 1-D parameter named bias is one, whatever module holds it (BERT's LM head)
    if name in _ATTENTION_BIASES:
        return BIAS
    role = _by_name(name)
    if role is None and name == "gamma" and ("Scale" in type(m).__name__ or "Block" in type(m).__name__):
        return _LAYER_SCALE_ROLE
    return role


def _legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    # What these constructors set: Conv1D draws normal_(std=0.02) and zeros its bias; norms are 1/0;
    # tokens and layer scales are set by model code legacy cannot replay, so they are kept.
    for name in m._parameters:
        role = _roles(m, name)
        if name == "weight" and _is_conv1d(m):
            d.draw(m, prefix, name, Action("normal", 0.02, formula="Conv1D: normal_(std=0.02)"))
        elif role is BIAS:
            d.draw(m, prefix, name, Action("constant", 0.0, formula="Conv1D: zeros"))
        elif role is not None and role.kind in ("norm_weight", "norm_bias"):
            value = (1.0 if role.value is None else role.value) if role.kind == "norm_weight" else 0.0
            d.draw(m, prefix, name, Action("constant", value, formula="ones/zeros" if value in (0.0, 1.0) else "norm"))
        elif role is not None or _fans(m, name) is not None:  # a router's raw weight too
            d.draw(m, prefix, name, Action("keep", formula="set by the model's own code: kept"))


register_layer(nn.Module, fans=_fans, roles=_roles, legacy=_legacy)
