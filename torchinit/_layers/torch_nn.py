"""torch.nn's layers, each described once: true fans, roles, torch's default draws (RNG order), reset method.

Adding a torch layer type means one `register_layer` call here. The legacy parts issue the draws
torch's constructors make, in their RNG order, so ``torch.manual_seed(s); ref = build()`` equals
``m = build(); torch.manual_seed(s); reinit(m, "legacy")``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import nn

from torchinit._layers.measure import norm_role
from torchinit._layers.rules import BIAS, NORM, LegacyDraws, Role, register_layer
from torchinit._maths.draw import Action, gain_std, torch_fan_in, xavier_std
from torchinit._maths.fans import Fans, cached_fans

_RESET = "reset_parameters"
_SQRT5_GAIN = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # calculate_gain("leaky_relu", sqrt(5))


def _bias(m: Any, name: str) -> Role | None:
    return BIAS if name == "bias" else None


def _kaiming_sqrt5(weight: Any) -> Action:
    fan = torch_fan_in(weight)
    bound = math.sqrt(3.0) * gain_std(_SQRT5_GAIN, fan) if fan else 0.0
    return Action("uniform", bound, formula="kaiming_uniform_(a=sqrt(5))")


def _fan_in_bound(fan_in: int) -> Action:
    return Action("uniform", 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0, formula="U(+-1/sqrt(fan_in))")


def _torch_xavier(tensor: Any, distribution: str) -> Action:
    receptive = math.prod(tensor.shape[2:])
    std = xavier_std(1.0, tensor.shape[1] * receptive, tensor.shape[0] * receptive)
    if distribution == "uniform":
        return Action("uniform", math.sqrt(3.0) * std, formula="xavier_uniform_")
    return Action("normal", std, formula="xavier_normal_")


def _weight_bias_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    weight = m.weight
    d.draw(m, prefix, "weight", _kaiming_sqrt5(weight))
    if m.bias is not None:
        d.draw(m, prefix, "bias", _fan_in_bound(torch_fan_in(weight)))


# --- Linear, Bilinear, Conv / ConvTranspose ----------------------------------------------------------


def _linear_fans(m: Any, name: str) -> Fans | None:
    if name != "weight":
        return None
    weight = m._parameters.get("weight")
    out_features, in_features = (m.weight if weight is None else weight).shape  # parametrized: through the owner
    return cached_fans(in_features, out_features)


def _bilinear_fans(m: Any, name: str) -> Fans | None:
    # y_k = sum_ij W_kij x1_i x2_j is linear in the outer product x1 (x) x2 (in1 * in2 features).
    if name != "weight":
        return None
    out_features, in1, in2 = m.weight.shape
    return Fans(in1 * in2, out_features)


def _bilinear_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    action = _fan_in_bound(m.weight.shape[1])  # torch uses in1 only
    d.draw(m, prefix, "weight", action)
    if m.bias is not None:
        d.draw(m, prefix, "bias", action)


def _conv_fans(m: Any, name: str) -> Fans | None:
    if name != "weight":
        return None
    kernel = math.prod(m.kernel_size)
    stride = math.prod(m.stride)
    per_group_in = m.in_channels // m.groups
    per_group_out = m.out_channels // m.groups
    if m.transposed:
        return cached_fans(per_group_in * kernel / stride, per_group_out * kernel)
    return cached_fans(per_group_in * kernel, per_group_out * kernel / stride)


register_layer(nn.Linear, fans=_linear_fans, roles=_bias, legacy=_weight_bias_legacy, reset=_RESET)
register_layer(nn.Bilinear, fans=_bilinear_fans, roles=_bias, legacy=_bilinear_legacy, reset=_RESET)
register_layer(nn.modules.conv._ConvNd, fans=_conv_fans, roles=_bias, legacy=_weight_bias_legacy, reset=_RESET)


# --- Embedding, EmbeddingBag ------------------------------------------------------------------------


def _embedding_fans(m: Any, name: str) -> Fans | None:
    # Used as one_hot(x) @ W: rows are inputs, columns outputs.
    return Fans(m.num_embeddings, m.embedding_dim) if name == "weight" else None


def _embedding_roles(m: Any, name: str) -> Role | None:
    return Role("embedding", padding_idx=m.padding_idx) if name == "weight" else None


def _embedding_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    d.draw(m, prefix, "weight", Action("normal", 1.0, zero_row=m.padding_idx, formula="normal_"))


for _table in (nn.Embedding, nn.EmbeddingBag):
    register_layer(_table, fans=_embedding_fans, roles=_embedding_roles, legacy=_embedding_legacy, reset=_RESET)


# --- MultiheadAttention -----------------------------------------------------------------------------


def _attention_fans(m: Any, name: str) -> Fans | None:
    e = m.embed_dim
    if name == "in_proj_weight":
        return Fans(e, e, chunks=3)
    if name == "q_proj_weight":
        return Fans(e, e)
    if name == "k_proj_weight":
        return Fans(m.kdim, e)
    if name == "v_proj_weight":
        return Fans(m.vdim, e)
    return None


def _attention_roles(m: Any, name: str) -> Role | None:
    if name == "in_proj_bias":
        return BIAS
    if name in ("bias_k", "bias_v"):
        return Role("attention_kv", width=m.embed_dim)
    return None


def _attention_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    # out_proj is built (and drawn) inside __init__ before _reset_parameters runs.
    d.visit(m.out_proj, f"{prefix}out_proj.")
    names = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    for name in names:
        d.draw(m, prefix, name, _torch_xavier(getattr(m, name), "uniform"))
    if m.in_proj_bias is not None:
        zero = Action("constant", 0.0, formula="constant_(0)")
        d.draw(m, prefix, "in_proj_bias", zero)
        d.draw(m.out_proj, f"{prefix}out_proj.", "bias", zero, rewrite=True)  # its draw above is consumed, then zeroed
    for name in ("bias_k", "bias_v"):
        if getattr(m, name) is not None:
            d.draw(m, prefix, name, _torch_xavier(getattr(m, name), "normal"))


register_layer(
    nn.MultiheadAttention,
    fans=_attention_fans,
    roles=_attention_roles,
    legacy=_attention_legacy,
    reset="_reset_parameters",
)


# --- RNN, LSTM, GRU and their cells -----------------------------------------------------------------

_RNN_PARAM = re.compile(r"(weight|bias)_(ih|hh|hr)(_l\d+(_reverse)?)?")


def _rnn_fans(m: Any, name: str) -> Fans | None:
    match = _RNN_PARAM.fullmatch(name)
    if match is None or match.group(1) != "weight":
        return None
    rows, inputs = getattr(m, name).shape
    if match.group(2) == "hr":  # LSTM projection: hidden -> proj_size
        return Fans(inputs, rows)
    return Fans(inputs, m.hidden_size, chunks=rows // m.hidden_size)


def _rnn_roles(m: Any, name: str) -> Role | None:
    match = _RNN_PARAM.fullmatch(name)
    if match is None:
        return None
    kind, side = match.group(1), match.group(2)
    if kind == "bias":
        gates = getattr(m, name).shape[0] // m.hidden_size
        forget = 1 if gates == 4 else None  # LSTM gate order: input, forget, cell, output
        return Role("bias", chunks=gates, forget_chunk=forget, input_side=side == "ih")
    if side != "hh":
        return None  # input and projection weights: dense, by their fans
    fans = _rnn_fans(m, name)
    return Role("recurrent", fans) if fans is not None and getattr(m, name).numel() else None


def _rnn_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    hidden: int = m.hidden_size
    action = Action("uniform", 1.0 / math.sqrt(hidden) if hidden > 0 else 0, formula="U(+-1/sqrt(hidden))")
    names = m._flat_weights_names if isinstance(m, nn.RNNBase) else [n for n, _ in m.named_parameters(recurse=False)]
    for name in names:
        d.draw(m, prefix, name, action)


for _rnn in (nn.RNNBase, nn.RNNCellBase):
    register_layer(_rnn, fans=_rnn_fans, roles=_rnn_roles, legacy=_rnn_legacy, reset=_RESET)


# --- norms and PReLU --------------------------------------------------------------------------------


def _norm_roles(m: Any, name: str) -> Role | None:
    if name not in NORM:
        return None
    if type(m).__module__.startswith("torch."):
        return NORM[name]
    return norm_role(m, name)  # a subclass may compute otherwise (Nemotron's LayerNorm1P: weight + 1): measured


def _norm_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    if getattr(m, "weight", None) is not None:
        d.draw(m, prefix, "weight", Action("constant", 1.0, formula="ones_"))
    if getattr(m, "bias", None) is not None:
        d.draw(m, prefix, "bias", Action("constant", 0.0, formula="zeros_"))


for _norm in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm):
    register_layer(_norm, roles=_norm_roles, legacy=_norm_legacy, reset=_RESET)


def _prelu_roles(m: Any, name: str) -> Role | None:
    return Role("prelu", value=float(m.init)) if name == "weight" else None


def _prelu_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    d.draw(m, prefix, "weight", Action("constant", float(m.init), formula="constant_(init)"))


register_layer(nn.PReLU, roles=_prelu_roles, legacy=_prelu_legacy, reset=_RESET)


# --- Transformer stacks -----------------------------------------------------------------------------


def _transformer_legacy(d: LegacyDraws, m: Any, prefix: str) -> None:
    # Transformer.__init__ builds encoder and decoder, then xavier_uniform_ on every p with dim > 1.
    d.visit(m.encoder, f"{prefix}encoder.")
    d.visit(m.decoder, f"{prefix}decoder.")
    for name, param in m.named_parameters():
        if param.dim() > 1:
            owner_path, _, local = name.rpartition(".")
            owner = m.get_submodule(owner_path)
            d.draw(owner, f"{prefix}{owner_path}." if owner_path else prefix, local, _torch_xavier(param, "uniform"),
                   rewrite=True)  # fmt: skip


# TransformerEncoder/Decoder deep-copy one prototype layer: one set of draws, N equal layers.
register_layer(nn.TransformerEncoder, clones="layers")
register_layer(nn.TransformerDecoder, clones="layers")
register_layer(nn.Transformer, legacy=_transformer_legacy, reset="_reset_parameters")
