r"""Recipes: the reference inits of the model families people train, by name (``reinit(model, "gpt2")``).

A recipe reads the model it is applied to (its layer types, names, depth and, for Hugging Face models,
``model.config``) and states one rule per parameter; what it leaves unstated falls to the base scheme
(biases 0, norms weight 1 / bias 0, layer scales kept). Each is tested against its reference library
initializing the same architecture (tests/integration). Every rule is a formula:

======================  ==================================================================================
``gpt2``                dense and embeddings $\mathcal N(0, r^2)$, residual projections (``c_proj``)
                        $\mathcal N(0, (r/\sqrt{2 n_\mathrm{layer}})^2)$, $r$ = ``initializer_range``
``bert``, ``llama``     dense and embeddings $\mathcal N(0, r^2)$, padding row 0 (HF's generic rule); norms at
                        their measured neutral weight (1; Gemma's $\hat x(1+w)$: 0)
``t5``                  $f$ = ``initializer_factor``: embeddings and untied head $\mathcal N(0, f^2)$; q
                        $\mathcal N(0, f^2/(d\,d_{kv}))$; k, v, wi $\mathcal N(0, f^2/d)$; o
                        $\mathcal N(0, f^2/(h\,d_{kv}))$; wo $\mathcal N(0, f^2/d_{ff})$; norms $f$
``llama_depth``         torchtitan: embeddings $\mathcal N(0, 1)$; q, k, v, gate
                        $\mathcal N(0, 0.02^2)$; o, up, down $\mathcal N(0, (0.02/\sqrt{2(\ell+1)})^2)$;
                        head truncated at $\pm 3\sigma$, $\sigma = d^{-1/2}$
``vit``                 timm ``''``: Linear $\mathcal N(0, 0.02^2)$; ``pos_embed`` 0.02; ``cls_token``
                        $10^{-6}$; patch conv torch's default
``vit_jax``             timm ``jax``: Linear Xavier-uniform (head 0, ``mlp`` biases
                        $\mathcal N(0, 10^{-12})$); conv LeCun truncated normal
``vit_moco``            timm ``moco``: Xavier-uniform, ``qkv`` per q/k/v block; patch conv torch's
``resnet``              torchvision: conv Kaiming normal, fan_out, torch's fans; norms 1/0; ``fc`` torch's
``clip``                HF: q, k, v $\mathcal N(0, f^2/(2dL))$; ``out_proj`` $f^2/d$; ``fc1`` $f^2/(2d)$; ``fc2``
                        $f^2/(2dL)$; embeddings $(0.02f)^2$; ``logit_scale`` kept
``siglip``              HF: embeddings $\mathcal N(0, 1/d)$; attention, MLP Xavier-uniform; other dense
                        ``lecun_normal_`` (cut $\pm 2$ absolute); ``logit_scale``, ``logit_bias`` 0
``whisper``, ``gemma``  HF's generic rule; Whisper's encoder sinusoids kept; Gemma's RMSNorm weights 0
``vit_hf``              HF: dense $\mathcal N(0, r^2)$; ``position_embeddings``, ``cls_token``
                        ``trunc_normal_(std=r)`` cut at $\pm 2$ absolute; ``mask_token`` 0
``timm_resnet``         timm: conv Kaiming normal, fan_out, torch's fans; the rest torch's default (conv
                        biases too); each block's last norm 0 (``zero_init_last``)
``torchvision_vit``     ``conv_proj`` trunc. normal $\sqrt{1/\mathrm{fan_{in}}}$; MLP Xavier-uniform, biases
                        $\mathcal N(0, 10^{-12})$; packed ``in_proj`` Xavier-uniform; head 0; class token 0
``convnext``            torchvision: Conv2d/Linear $\mathcal N(0, 0.02^2)$, biases 0; ``layer_scale``
                        $10^{-6}$
``swin``                torchvision: Linear $\mathcal N(0, 0.02^2)$, biases 0; position bias table 0.02;
                        v2 ``logit_scale`` $\ln 10$; patch conv torch's
``efficientnet``        torchvision: conv Kaiming normal, fan_out, torch's fans; Linear
                        $\mathcal U(\pm 1/\sqrt{\mathrm{out}})$; biases 0; norms 1/0
``mup(base)``           muP: hidden $\mathrm{Var} = g^2/\mathrm{fan_{in}}$, input-like weights at the base width's
                        std, readout 0; lr from ``report.param_groups`` (a function: it needs the base)
======================  ==================================================================================

Write a new recipe with `recipe`: a function from the model to ``{path: Action}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from torchinit._layers.rules import Role, role_of
from torchinit._maths.distributions import truncated_normal_std
from torchinit._maths.draw import Action
from torchinit._model.walk import one_walk, walk
from torchinit._schemes import fits
from torchinit._schemes.fits import Fit
from torchinit._schemes.overrides import Override
from torchinit._schemes.plan import Plan
from torchinit._schemes.registry import BaseScheme, Call, get_scheme, list_schemes, register_scheme
from torchinit._schemes.scheme import Scheme
from torchinit._types import InitError, RecipeMismatchWarning, check_finite, warn_at_caller

Rules = dict[str, Action]
"""What a recipe says: an `Action` per canonical parameter path; unlisted parameters get the base scheme."""


def block_index(path: str) -> int | None:
    """The index of the repeated block a path lies in: the first integer segment (``h.3.attn.c_proj.weight``
    -> 3, ``encoder.layer.0.output.dense.weight`` -> 0), or None outside blocks."""
    for part in path.split("."):
        if part.isdigit():
            return int(part)
    return None


def depth(model: nn.Module) -> int:
    """The number of repeated blocks: the longest ``nn.ModuleList``/``nn.Sequential`` of one block type."""
    best = 0
    for module in model.modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > best:
            kinds = {type(child) for child in module}
            if len(kinds) == 1 and any(True for _ in module[0].parameters()):
                best = len(module)
    return best


def _config(model: nn.Module, *names: str) -> Any:
    config = getattr(model, "config", None)
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def params(model: nn.Module) -> Iterator[tuple[str, str, nn.Module, torch.Tensor, Role | None]]:
    """(canonical path, local name, owner, parameter, its role in that owner) for every use of every parameter,
    as the walk found them (tied ones under each path, parametrized weights as themselves)."""
    for param in walk(model).params:
        for t in param.every:
            yield t.path, t.name, t.owner, t.tensor, role_of(t.owner, t.name)


def normal(std: float, formula: str, role: Role | None = None) -> Action:
    return Action("normal", std, zero_row=role.padding_idx if role is not None else None, formula=formula)


@dataclass(frozen=True, repr=False, eq=False)
class Recipe(BaseScheme):
    """A model family's reference init as a scheme: ``rules(model)`` gives an `Action` per parameter path.

    Args:
        name: the registered name.
        source: where the rules come from (paper, reference file).
        rules: the model to ``{canonical path: Action}``; parameters it omits get ``base``.
        text: one line stating the rules (``torchinit schemes`` prints it with the source).
        base: the scheme for everything else (biases 0, norms 1/0, tokens 0.02, layer scales kept).
        spelled: how to make it again (its repr; equal spellings are equal recipes).
        fits: the model -> None when the recipe is for it, else what it expected (`torchinit._schemes.fits`);
            None: any model.
        strict: refuse a model ``fits`` rejects (InitError naming the recipes that fit it); `anywhere` turns
            it off (a warning instead).
    """

    name: str
    source: str
    rules: Callable[[nn.Module], Rules]
    text: str
    base: Scheme = field(default_factory=Scheme)
    spelled: str = ""
    fits: Fit | None = None
    strict: bool = True

    def __repr__(self) -> str:
        return self.spelled or f"get_scheme({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    def anywhere(self) -> Recipe:
        """This recipe on any model: one it was not written for gets it with a `RecipeMismatchWarning`."""
        return replace(self, strict=False, spelled=f"{self!r}.anywhere()")

    def check_fits(self, module: nn.Module) -> None:
        """Refuse (``strict``) or warn about a model this recipe was not written for."""
        expected = self.fits(module) if self.fits is not None else None
        if expected is None:
            return
        fitting = [
            name for name in list_schemes()
            if isinstance(r := get_scheme(name), Recipe) and r.fits is not None and r.fits(module) is None
        ]  # fmt: skip
        instead = (
            f"recipes for this model: {', '.join(fitting)}" if fitting else "no recipe fits it: use a generic scheme"
        )
        message = f"the {self.name!r} recipe is for {expected}; {instead}."
        if self.strict:
            raise InitError(
                f"{message} To apply it anyway, pass torchinit.get_scheme({self.name!r}).anywhere() (it warns)."
            )
        warn_at_caller(RecipeMismatchWarning(message))

    def plan(self, module: nn.Module, call: Call) -> Plan:
        """The base scheme's plan with the recipe's per-path rules layered first (call overrides win)."""
        if not call.own_only:  # a layer being constructed (with_scheme) is a part of some model: no family
            self.check_fits(module)
        with one_walk(module):  # the rules and the base scheme read the same walk
            table = self.rules(module)
            rule = Override(rule=lambda path, owner, param: table.get(path))
            return self.base.plan(module, replace(call, overrides=(rule, *call.overrides)))

    def summary(self) -> str:
        """The rules and the source."""
        return f"{self.text} [{self.source}]"


def recipe(
    name: str, source: str, text: str, *, base: Scheme | None = None
) -> Callable[[Callable[[nn.Module], Rules]], Recipe]:
    """Register a function ``model -> {path: Action}`` as the recipe ``name`` (usable as ``reinit(m, name)``).

    Example:
        >>> from torchinit import reinit
        >>> from torchinit._schemes.registry import unregister_scheme
        >>> from torchinit.extend import Action
        >>> @recipe("tiny_normal", "an example", "every Linear weight N(0, 0.01^2)")
        ... def tiny(model):
        ...     linears = [p for p, m in model.named_modules() if isinstance(m, nn.Linear)]
        ...     return {f"{p}.weight": Action("normal", 0.01) for p in linears}
        >>> reinit(nn.Sequential(nn.Linear(4, 4)), "tiny_normal")["0.weight"].std
        0.01
        >>> unregister_scheme("tiny_normal")
    """

    def register(rules: Callable[[nn.Module], Rules]) -> Recipe:
        made = Recipe(name, source, rules, text, base or Scheme(), spelled=f"get_scheme({name!r})")
        register_scheme(name, made, overwrite=True)
        return made

    return register


def spelled_recipe(function: str, **given: object) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
    return f"recipes.{function}({args})"


# --- Hugging Face ---------------------------------------------------------------------------------------


def hf_rules(model: nn.Module, std: float) -> Rules:
    """Hugging Face's generic ``PreTrainedModel._init_weights``: dense weights (Linear/Conv/Conv1D, any layer
    described as dense) and embeddings $\\mathcal N(0, \\mathrm{std}^2)$ (the padding row 0), biases 0, norms 1/0."""
    rules: Rules = {}
    for path, _, _, _, role in params(model):
        if role is not None and role.kind == "dense":
            rules[path] = normal(std, f"HF: N(0, {std:g}^2)")
        elif role is not None and role.kind == "embedding":
            rules[path] = normal(std, f"HF embedding: N(0, {std:g}^2)", role)
    return rules


def _setting(model: nn.Module, name: str, given: float | None, default: float) -> float:
    """A recipe's hyper-parameter: the one given, else the model's config's (0.0 is a value), else ``default``;
    a finite number >= 0 (a bool or a string is refused, naming where it came from)."""
    configured = _config(model, name)
    value = given if given is not None else configured if configured is not None else default
    where = name if given is not None else f"config.{name}"
    return check_finite(where, value, minimum=0.0)


def _range(model: nn.Module, given: float | None) -> float:
    return _setting(model, "initializer_range", given, 0.02)


def gpt2(initializer_range: float | None = None, n_layer: int | None = None) -> Recipe:
    """Hugging Face's GPT-2 init (``GPT2PreTrainedModel._init_weights``): `hf_rules` with
    $r$ = ``initializer_range`` (the model's config, else 0.02), then every ``c_proj`` weight (the two
    residual projections per block) $\\mathcal N(0, (r/\\sqrt{2\\,n_\\mathrm{layer}})^2)$; ``n_layer`` from
    the config, else the number of blocks."""

    def rules(model: nn.Module) -> Rules:
        r = _range(model, initializer_range)
        table = hf_rules(model, r)
        residual = [path for path in table if path.endswith("c_proj.weight")]
        if not residual:
            return table
        configured = _config(model, "n_layer", "num_hidden_layers")
        layers = n_layer if n_layer is not None else configured if configured is not None else depth(model)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            where = "n_layer" if n_layer is not None else "config.n_layer" if configured is not None else None
            raise InitError(
                f"gpt2 scales {residual[0]} by the number of layers, and "
                + (f"{where}={layers!r} is not a positive int" if where else "this model has no config.n_layer "
                   "and no repeated blocks to count")
                + ": pass the count, reinit(model, torchinit.recipes.gpt2(n_layer=12))."
            )  # fmt: skip
        scaled = r / math.sqrt(2 * layers)
        for path in residual:
            table[path] = normal(scaled, f"GPT-2 residual: N(0, ({r:g}/sqrt(2*{layers}))^2)")
        return table

    return Recipe(
        "gpt2",
        "HF transformers GPT2PreTrainedModel._init_weights; Radford et al. 2019",
        rules,
        "dense/embeddings N(0, r^2), c_proj N(0, (r/sqrt(2 n_layer))^2)",
        spelled=spelled_recipe("gpt2", initializer_range=initializer_range, n_layer=n_layer),
        fits=fits.gpt2,
    )


def _hf_generic(name: str, model_class: str, text: str, initializer_range: float | None, fit: Fit) -> Recipe:
    return Recipe(
        name,
        f"HF transformers {model_class}._init_weights",
        lambda m: hf_rules(m, _range(m, initializer_range)),
        text,
        spelled=spelled_recipe(name, initializer_range=initializer_range),
        fits=fit,
    )


def bert(initializer_range: float | None = None) -> Recipe:
    """Hugging Face's BERT init (``BertPreTrainedModel._init_weights``): `hf_rules` with $r$ =
    ``initializer_range``; the LM head's bias 0."""
    return _hf_generic(
        "bert", "BertPreTrainedModel", "dense/embeddings N(0, r^2), padding row 0", initializer_range, fits.bert
    )


def llama(initializer_range: float | None = None) -> Recipe:
    """Hugging Face's Llama init: `hf_rules` with $r$ = ``initializer_range``; RMSNorm weights at their measured
    neutral value, 1 (on Gemma's $\\hat x\\,(1 + w)$ norms 0: there it equals HF's Gemma init, as `gemma` does)."""
    return _hf_generic(
        "llama", "LlamaPreTrainedModel", "dense/embeddings N(0, r^2), RMSNorm neutral (1)", initializer_range,
        fits.llama,
    )  # fmt: skip


def t5(initializer_factor: float | None = None) -> Recipe:
    """Hugging Face's T5 init (``T5PreTrainedModel._init_weights``, Mesh TensorFlow's): with
    $f$ = ``initializer_factor``, $d$ = ``d_model``, $d_{kv}$, $h$ heads, $d_{ff}$: the shared embedding and an
    untied ``lm_head`` $\\mathcal N(0, f^2)$; attention q $\\mathcal N(0, f^2/(d\\,d_{kv}))$, k and v
    $\\mathcal N(0, f^2/d)$, o $\\mathcal N(0, f^2/(h\\,d_{kv}))$, the relative position bias
    $\\mathcal N(0, f^2/d)$; feed-forward ``wi*`` $\\mathcal N(0, f^2/d)$, ``wo`` $\\mathcal N(0, f^2/d_{ff})$;
    T5LayerNorm weights $f$."""

    def rules(model: nn.Module) -> Rules:
        f = _setting(model, "initializer_factor", initializer_factor, 1.0)
        table = hf_rules(model, f)  # the generic pass first, as HF runs it
        module: Any
        for at, module in walk(model).modules:
            prefix = at[:-1]
            kind = type(module).__name__
            if kind == "T5Attention":
                d, dkv, heads = module.d_model, module.key_value_proj_dim, module.n_heads
                table[at + "q.weight"] = normal(f * (d * dkv) ** -0.5, "T5 q: N(0, f^2/(d d_kv))")
                table[at + "k.weight"] = normal(f * d**-0.5, "T5 k: N(0, f^2/d)")
                table[at + "v.weight"] = normal(f * d**-0.5, "T5 v: N(0, f^2/d)")
                table[at + "o.weight"] = normal(f * (heads * dkv) ** -0.5, "T5 o: N(0, f^2/(h d_kv))")
                if getattr(module, "has_relative_attention_bias", False):
                    table[at + "relative_attention_bias.weight"] = normal(f * d**-0.5, "T5 position bias: N(0, f^2/d)")
            elif kind in ("T5DenseActDense", "T5DenseGatedActDense"):
                for name, child in module.named_children():
                    if isinstance(child, nn.Linear):
                        fan = child.in_features  # wi*: d_model, wo: d_ff
                        table[f"{at}{name}.weight"] = normal(f * fan**-0.5, f"T5 {name}: N(0, f^2/{fan})")
            elif kind == "T5LayerNorm":
                table[at + "weight"] = Action("constant", f, formula="T5LayerNorm: f")
            elif hasattr(module, "shared") and isinstance(module.shared, nn.Embedding) and "." not in prefix:
                table[at + "shared.weight"] = normal(f, "T5 shared embedding: N(0, f^2)")
                head = getattr(module, "lm_head", None)
                if isinstance(head, nn.Linear) and head.weight is not module.shared.weight:
                    table[at + "lm_head.weight"] = normal(f, "T5 untied lm_head: N(0, f^2)")
        return table

    return Recipe(
        "t5",
        "HF transformers T5PreTrainedModel._init_weights (Mesh TensorFlow)",
        rules,
        "q N(0, f^2/(d d_kv)), k/v/wi N(0, f^2/d), o N(0, f^2/(h d_kv)), wo N(0, f^2/d_ff), embeddings N(0, f^2)",
        spelled=spelled_recipe("t5", initializer_factor=initializer_factor),
        fits=fits.t5,
    )


def llama_depth(init_std: float = 0.02, depth_init: bool = True) -> Recipe:
    """The depth-scaled Llama init of torchtitan (``Transformer.init_weights``), on Hugging Face Llama names:
    token embeddings $\\mathcal N(0, 1)$; q, k, v and gate projections $\\mathcal N(0, s^2)$, $s$ =
    ``init_std``; o, up and down projections of block $\\ell$ $\\mathcal N(0, (s/\\sqrt{2(\\ell+1)})^2)$
    (``depth_init``; else $s/\\sqrt{2 n_\\mathrm{layer}}$); norms 1; the output head a normal of
    $\\sigma = d^{-1/2}$ truncated at $\\pm 3\\sigma$. (torchtitan's ``trunc_normal_`` cut at $\\pm 2$ absolute
    is $\\pm 100\\sigma$ at std 0.02: a normal.)"""

    def rules(model: nn.Module) -> Rules:
        layers = depth(model)
        table: Rules = {}
        for path, name, module, param, _ in params(model):
            if isinstance(module, nn.Embedding) and name == "weight":
                table[path] = normal(1.0, "torchtitan embedding: N(0, 1)")
            elif isinstance(module, nn.Linear) and name == "weight":
                layer = block_index(path)
                leaf = path.split(".")[-2]
                if layer is None:  # the output head
                    sigma = param.shape[1] ** -0.5
                    std = sigma * truncated_normal_std(-3.0, 3.0)
                    table[path] = Action("truncated_normal", std, cut=3.0, formula="head: TN(+-3 sigma, sigma=d^-1/2)")
                elif leaf in ("o_proj", "up_proj", "down_proj"):
                    if not depth_init and not layers:
                        raise InitError(
                            f"llama_depth(depth_init=False) scales {path} by the number of layers, and this model "
                            "has no repeated blocks to count: use depth_init=True (the default)."
                        )
                    scaled = init_std / math.sqrt(2 * ((layer + 1) if depth_init else layers))
                    table[path] = normal(
                        scaled, f"depth-scaled: N(0, ({init_std:g}/sqrt(2*{layer + 1 if depth_init else layers}))^2)"
                    )
                else:
                    table[path] = normal(init_std, f"N(0, {init_std:g}^2)")
        return table

    return Recipe(
        "llama_depth",
        "torchtitan torchtitan/models/llama3/model.py Transformer.init_weights",
        rules,
        "q/k/v/gate N(0, 0.02^2); o/up/down N(0, (0.02/sqrt(2(l+1)))^2); head TN(+-3 sigma, d^-1/2)",
        spelled=spelled_recipe(
            "llama_depth", init_std=None if init_std == 0.02 else init_std, depth_init=None if depth_init else False
        ),
        fits=fits.llama_depth,
    )


for _made in (gpt2(), bert(), llama(), t5(), llama_depth()):
    register_scheme(_made.name, _made)
