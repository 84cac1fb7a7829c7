"""Output heads, tied embeddings and the model zoos' layers (recognized by structure, never imported)."""

from __future__ import annotations

import gc
import math
import warnings
import weakref

import pytest
import torch
from torch import nn

import torchinit
from torchinit import Fans, InitError, Scheme, reinit
from torchinit._layers import rules
from torchinit.testing import assert_distribution, assert_std


class Conv1D(nn.Module):  # the layout of transformers.pytorch_utils.Conv1D: y = x @ W + b, W stored (in, out)
    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)


class LlamaRMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((d,), 7.0))


class LayerScale(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((d,), 1e-5))


class TinyViT(nn.Module):
    def __init__(self, d: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 17, d))
        self.proj = Conv1D(d, d)
        self.norm = LlamaRMSNorm(d)
        self.ls = LayerScale(d)
        self.head = nn.Linear(d, classes)


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 500, d: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.block = nn.Linear(d, d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight


def test_a_tied_embedding_is_drawn_once_by_the_readout_rule(gen: torch.Generator) -> None:
    model = TiedLM()
    report = reinit(model, "kaiming_gelu", generator=gen)
    entry = report["lm_head.weight"]
    assert entry is report["wte.weight"] and entry.role == "readout"
    assert entry.source == "readout (tied to the input embedding wte.weight): linear, gain 1"
    assert entry.std == math.sqrt(1 / 64)  # gain 1 over the head's fan_in, not the GELU gain
    assert_std(model.wte.weight.detach(), math.sqrt(1 / 64))
    with pytest.raises(AssertionError):  # and not torch's N(0, 1) embedding rule
        assert_std(model.wte.weight.detach(), 1.0)
    assert model.lm_head.weight is model.wte.weight


def test_a_tied_readout_stays_linear_under_readout_zero(gen: torch.Generator) -> None:
    report = reinit(TiedLM(), Scheme.kaiming("gelu", readout="zero"), generator=gen)
    assert report["wte.weight"].std == math.sqrt(1 / 64)


def test_a_named_last_layer_is_the_readout_and_schemes_choose_its_rule(gen: torch.Generator) -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Linear(32, 64))
    model.add_module("fc", nn.Linear(64, 10))
    report = reinit(model, "kaiming_relu", generator=gen)
    assert report["fc.weight"].role == "readout" and report["fc.weight"].std == math.sqrt(1 / 64)
    assert "named 'fc', the last dense layer" in report["fc.weight"].source
    assert report["body.weight"].role == "dense" and report["body.weight"].std == math.sqrt(2 / 32)
    reinit(model, Scheme.kaiming("relu", readout="zero"), generator=gen)
    assert not model.fc.weight.any()
    report = reinit(model, Scheme.kaiming("relu", readout=0.01), generator=gen)
    assert report["fc.weight"].std == 0.01
    # selectable like any role
    report = reinit(model, "kaiming_relu", overrides=[torchinit.Override(role="readout", constant=0.5)])
    assert torch.equal(model.fc.weight, torch.full((10, 64), 0.5))


def test_an_unnamed_last_layer_keeps_the_scheme(gen: torch.Generator) -> None:
    report = reinit(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)), "kaiming_relu", generator=gen)
    assert report["2.weight"].role == "dense"


def test_readout_validation() -> None:
    with pytest.raises(InitError, match="readout must be one of 'linear', 'zero'; got readout='zeros'"):
        Scheme(readout="zeros")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="readout must be a finite number >= 0; got readout=-1"):
        Scheme(readout=-1)
    with pytest.raises(InitError, match="token_std must be a finite number >= 0; got token_std=nan"):
        Scheme(token_std=math.nan)


def test_zoo_layers_by_structure(gen: torch.Generator) -> None:
    model = TinyViT()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing uncovered
        report = reinit(model, "kaiming_relu", generator=gen)
    assert torchinit.fans_of(model, "proj.weight") == Fans(64, 64)
    assert {e.path: e.role for e in report} == {
        "cls_token": "token", "pos_embed": "token", "proj.weight": "dense", "proj.bias": "bias",
        "norm.weight": "norm_weight", "ls.gamma": "layer_scale", "head.weight": "readout", "head.bias": "bias",
    }  # fmt: skip
    assert torch.equal(model.norm.weight, torch.ones(64))
    assert torch.equal(model.ls.gamma, torch.full((64,), 1e-5)) and report["ls.gamma"].skipped is None
    assert report["ls.gamma"].rule == "kept as constructed"
    tokens = torch.cat([model.cls_token.flatten(), model.pos_embed.flatten()]).detach()
    assert_std(tokens, 0.02, kurtosis="truncated_normal")
    assert float(tokens.abs().max()) <= 2 * 0.02 / 0.8796256610 * (1 + 1e-6)


def test_legacy_replays_conv1d_and_keeps_tokens() -> None:
    torch.manual_seed(3)
    reference = TinyViT()
    model = TinyViT()
    with torch.no_grad():
        model.cls_token.fill_(0.5)  # tokens are model-set: legacy keeps what is there
    torch.manual_seed(3)
    report = reinit(model, "legacy")
    assert torch.equal(model.proj.weight, reference.proj.weight)  # normal_(std=0.02), same RNG order
    assert torch.equal(model.norm.weight, torch.ones(64)) and not report.skipped
    assert torch.equal(model.cls_token, torch.full((1, 1, 64), 0.5))


def test_a_more_specific_registration_wins_over_the_zoo_fallback() -> None:
    torchinit.extend.register_role_rule(
        LlamaRMSNorm, lambda m, name: torchinit.extend.Role("prelu", value=0.5) if name == "weight" else None
    )
    model = LlamaRMSNorm(8)
    reinit(model, "kaiming_relu")
    assert torch.equal(model.weight, torch.full((8,), 0.5))


def test_uncovered_warning_groups_by_module_type_and_name() -> None:
    class Raw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i in range(2000):
                self.register_parameter(f"p{i}", nn.Parameter(torch.zeros(3)))

    model = nn.Sequential(*[Raw() for _ in range(2)])
    with pytest.warns(torchinit.UncoveredParameterWarning) as record:
        reinit(model, "kaiming_relu")
    text = str(record[0].message)
    assert text.startswith(
        "reinit left 4000 parameter(s) untouched because no rule covers them:\n  Raw.p0 x 2: 0.p0 (3,), 1.p0"
    )
    assert "... and 1988 more kinds (3976 parameters)" in text and len(text) < 1500
    assert "torchinit.extend.register_layer" in text


def timm_style_trunc_normal_(tensor: torch.Tensor, std: float, a: float, b: float) -> torch.Tensor:
    """timm's truncated normal: in-place ops on the tensor only (inverse CDF), none that reads it."""
    low, high = ((1 + math.erf(x / std / math.sqrt(2))) / 2 for x in (a, b))
    with torch.no_grad():
        tensor.uniform_(2 * low - 1, 2 * high - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        return tensor.clamp_(min=a, max=b)


class SelfInit(nn.Module):
    """A model with its own init loop after construction, as torchvision, timm and Hugging Face models have."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 64)
        self.extra = nn.Parameter(torch.empty(5, 3))  # uncovered: only the model's own code sets it
        self.codebook = nn.Parameter(torch.empty(100, 50))  # uncovered, set by a multi-step fill
        self.bank = nn.Parameter(torch.empty(100, 50))  # uncovered, set by an in-place multi-step fill
        state = torch.get_rng_state()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                m.bias.data.normal_(std=0.02)  # through .data, as older HF code does
        nn.init.uniform_(self.extra)
        timm_style_trunc_normal_(self.bank, std=0.5, a=-1.0, b=1.0)
        self.pos_embed = nn.Parameter(torch.empty(1, 8, 64).normal_(std=0.02))  # filled before it is a parameter
        self.register_buffer("noise", torch.empty(4096).normal_())  # not read here: filled after construction
        self.init_loop_drew = not torch.equal(state, torch.get_rng_state())
        # torch's trunc_normal_ draws and then reads the values (rejection sampling): build runs it for real
        nn.init.trunc_normal_(self.codebook, a=-2.0, b=2.0)
        self.codebook.data[0] = 0.0  # and edits it afterwards, as HF zeroes a padding row
        self.register_buffer("scaled", torch.empty(4096).normal_() * 3)  # read at once: drawn right there


def test_default_scheme_warns_when_the_model_overwrites_it() -> None:
    # the weight is overwritten through nn.init (its version counter moves); a write through .data is not seen
    overwritten = pytest.warns(torchinit.SchemeOverwrittenWarning, match=r"1 of the 2 parameters that default_scheme")
    with overwritten, torchinit.default_scheme("kaiming_relu"):
        SelfInit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torchinit.default_scheme("kaiming_relu"):
            nn.Linear(4, 4)  # nothing overwrites it: no warning


def test_build_skips_the_models_own_fills_and_leaves_the_rng_alone() -> None:
    assert SelfInit().init_loop_drew  # eagerly, the model's init loop draws
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with pytest.warns(torchinit.UncoveredParameterWarning, match="SelfInit.extra x 1"):
        model, report = torchinit.build(SelfInit, "kaiming_relu", seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert not model.init_loop_drew  # under build, none of its fills ran during construction
    assert_std(model.body.weight.detach(), math.sqrt(2 / 64))  # the scheme's draw, not the model's 0.02
    assert not model.body.bias.any()
    # the parameter the scheme leaves alone keeps what the model's code gives it: U(0, 1), replayed
    extra = model.extra.detach()
    assert float(extra.min()) >= 0 and float(extra.max()) <= 1 and float(extra.std()) > 0.1
    assert report["extra"].skipped == "no rule covers it"
    # a multi-step fill is replayed whole, with the edit after it: truncated N(0, 1) at +-2, row 0 zero
    codebook = model.codebook.detach()
    assert not codebook[0].any() and float(codebook.abs().max()) <= 2.0
    cut = 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2))
    assert_distribution(codebook[1:], "truncated_normal", math.sqrt(1 - cut))
    assert_distribution(model.bank.detach(), "truncated_normal", 0.5 * math.sqrt(1 - cut))  # deferred, replayed
    assert_std(model.noise, 1.0)  # buffers get the model's values
    assert_std(model.scaled, 3.0)
    assert report["pos_embed"].role == "token"
    edge = (1 + math.erf(2 / math.sqrt(2))) / 2  # replaying only its uniform_ gave U(-0.95, 0.95): rejected
    with pytest.raises(AssertionError):
        assert_distribution(
            torch.empty_like(codebook[1:]).uniform_(1 - 2 * edge, 2 * edge - 1), "truncated_normal", math.sqrt(1 - cut)
        )
    reference = SelfInit()
    with pytest.warns(torchinit.UncoveredParameterWarning):
        torchinit.reinit(reference, "kaiming_relu", seed=0)
    assert torch.equal(model.body.weight, reference.body.weight)  # build == reinit(factory()), keyed


def test_build_leaves_no_reference_cycle_holding_the_model() -> None:
    # a cycle would keep every built model (and its parameters) alive until the garbage collector runs
    gc.collect()
    gc.disable()
    try:
        model, report = torchinit.build(lambda: nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), "kaiming_relu")
        refs = [weakref.ref(model), weakref.ref(model[0].weight)]
        del model, report
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()


class TopKRouter(nn.Module):  # Mixtral's router: F.linear(x, weight), weight (experts, d)
    def __init__(self, experts: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, d))


class MoeExperts(nn.Module):  # Mixtral stores (E, out, in) for F.linear; GPT-OSS (E, in, out) for x @ W, with biases
    def __init__(self, experts: int, d: int, inner: int, matmul: bool) -> None:
        super().__init__()
        self.hidden_dim = d
        up, down = ((d, 2 * inner), (inner, d)) if matmul else ((2 * inner, d), (d, inner))
        self.gate_up_proj = nn.Parameter(torch.empty(experts, *up))
        self.down_proj = nn.Parameter(torch.empty(experts, *down))
        self.gate_up_proj_bias = nn.Parameter(torch.empty(experts, 2 * inner))


@pytest.mark.parametrize("matmul", [False, True], ids=["mixtral-layout", "gpt-oss-layout"])
def test_mixture_of_experts_weights_get_one_experts_fans(matmul: bool) -> None:
    model = nn.ModuleDict({"router": TopKRouter(4, 48), "experts": MoeExperts(4, 48, 80, matmul)})
    report = reinit(model, "kaiming_silu", seed=0)
    assert report["router.weight"].fans == Fans(48, 4)
    assert report["experts.gate_up_proj"].fans == Fans(48, 80, chunks=2)  # d -> intermediate, gate and up
    assert report["experts.down_proj"].fans == Fans(80, 48)
    assert report["experts.gate_up_proj_bias"].role == "bias" and not model["experts"].gate_up_proj_bias.any()
    gain = torchinit.get_scheme("kaiming_silu").gain  # type: ignore[union-attr]
    assert report["experts.down_proj"].std == pytest.approx(gain / math.sqrt(80))
    assert_std(model["experts"].down_proj, gain / math.sqrt(80), kurtosis="normal")
    with pytest.raises(AssertionError):  # the test rejects the fans of the whole stacked tensor
        assert_std(model["experts"].down_proj, gain / math.sqrt(4 * 80), kurtosis="normal")
    report = reinit(model, "orthogonal", seed=0)  # no batched QR: each expert at an orthogonal matrix's std
    assert report["experts.down_proj"].std == pytest.approx(1 / math.sqrt(80))
    assert "MoE experts" in report["experts.down_proj"].source


def test_legacy_keeps_what_moe_code_sets_and_an_unknown_layout_is_uncovered() -> None:
    model = nn.ModuleDict({"router": TopKRouter(4, 48), "experts": MoeExperts(4, 48, 80, False)})
    report = reinit(model, "legacy")
    assert not report.skipped and {e.distribution for e in report if e.role == "dense"} == {"keep"}
    model["experts"].hidden_dim = 50  # matches neither dimension: no guess
    with pytest.warns(torchinit.UncoveredParameterWarning, match="experts.gate_up_proj"):
        reinit(model, "kaiming_silu")


class BeitLayer(nn.Module):  # BEiT / data2vec-vision layer scales, PoolFormer's, ConvNeXt-V2's response norm
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.full((d,), 0.1))
        self.layer_scale_2 = nn.Parameter(torch.full((d,), 1e-5))
        self.grn = GlobalResponseNorm(d)


class GlobalResponseNorm(nn.Module):  # x + weight * (x * N(x)) + bias: the identity at 0, not at weight 1
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nx = x.norm(dim=0, keepdim=True)
        return x + self.weight * (x * nx / (nx.mean() + 1e-6)) + self.bias


def test_more_layer_scale_spellings_and_response_norms_are_kept() -> None:
    model = BeitLayer(8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        report = reinit(model, "kaiming_relu")
    assert {e.role for e in report} == {"layer_scale"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # GRN at 1 would not be its identity


class Attention(nn.Module):  # timm's BEiT/EVA: a qkv Linear without bias, separate q and v biases; LeViT's table
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))
        self.attention_biases = nn.Parameter(torch.ones(2, 9))


def test_separate_attention_biases_are_biases() -> None:
    model = Attention(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        report = reinit(model, "kaiming_relu")
    assert {report[n].role for n in ("q_bias", "v_bias", "attention_biases")} == {"bias"}
    assert not model.q_bias.any() and not model.attention_biases.any()


class _Doubled(nn.Module):
    """A parametrization: the layer uses twice the stored tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x / 2


def test_zoo_layers_under_a_parametrization_keep_their_rules() -> None:
    # a parametrized router weight or 1-D bias raised KeyError; parametrized experts, norms and Conv1D were uncovered
    layers = {"router": TopKRouter(4, 48), "experts": MoeExperts(4, 48, 80, False)}
    model = nn.ModuleDict({**layers, "norm": LlamaRMSNorm(8), "conv": Conv1D(16, 8)})
    plain = reinit(model, "kaiming_silu", seed=0)
    for path in ("router.weight", "experts.gate_up_proj", "experts.down_proj", "experts.gate_up_proj_bias",
                 "norm.weight", "conv.weight", "conv.bias"):  # fmt: skip
        owner, name = path.split(".")
        nn.utils.parametrize.register_parametrization(model[owner], name, _Doubled())
    report = reinit(model, "kaiming_silu", seed=0, strict=True)
    for entry in plain:
        assert (report[entry.path].role, report[entry.path].fans) == (entry.role, entry.fans), entry.path
    gain = torchinit.get_scheme("kaiming_silu").gain  # type: ignore[union-attr]
    assert_std(model["experts"].down_proj.detach(), gain / math.sqrt(80), kurtosis="normal")  # the effective weight
    assert torch.equal(model["norm"].weight.detach(), torch.ones(8))


def test_a_rule_that_fails_is_an_init_error_naming_the_parameter() -> None:
    model = nn.ModuleDict({"router": TopKRouter(4, 48), "experts": MoeExperts(4, 48, 0, False)})  # no experts' width
    report = reinit(model, "kaiming_silu")  # zero elements: nothing to write (it raised Fans' error, without a path)
    assert report["experts.down_proj"].skipped == "zero elements: nothing to write"

    class Broken(nn.Linear):
        pass

    def rule(module: nn.Module, name: str) -> Fans:
        raise KeyError(name)

    saved = rules.registered()
    try:
        torchinit.register_fan_rule(Broken, rule)
        model = nn.Sequential(nn.Linear(4, 4), Broken(4, 4))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(InitError, match=r"the layer rules for 1.weight \(Broken, shape \(4, 4\)\) raised KeyError"):
            reinit(model, "kaiming_relu")
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    finally:
        rules.restore(saved)


class MambaMixer(nn.Module):  # its constructor computes A (1..N) and D (ones): the layer's own choice, kept
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        self.in_proj = nn.Linear(d, 2 * d)


def test_a_state_space_layer_keeps_its_structured_parameters() -> None:
    model = MambaMixer(8, 4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        report = reinit(model, "kaiming_relu")
    assert report["A_log"].role == report["D"].role == "state_space"
    assert torch.equal(model.A_log, before["A_log"]) and torch.equal(model.D, before["D"])

    class Other(nn.Module):  # a D elsewhere is not one
        def __init__(self) -> None:
            super().__init__()
            self.D = nn.Parameter(torch.ones(3))

    with pytest.warns(torchinit.UncoveredParameterWarning, match="Other.D"):
        reinit(Other(), "kaiming_relu")
