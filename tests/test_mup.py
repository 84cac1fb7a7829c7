"""recipes.mup and report.param_groups: against Microsoft's mup package, by coordinate checks, and their errors.

The package (``pip install --no-deps mup==1.0.0``: it imports with torch and pyyaml alone) is only a reference
here. Its ``MuReadout`` divides the readout's input by the width multiplier c = fan_in / base_fan_in, so its
weight W acts as W/c on an unmodified ``nn.Linear``: the comparisons read std(W)/c, and the learning rate that
moves W/c as the optimizer moves W. Adam's update does not depend on the gradient's scale, so d(W/c) = lr_W u / c
(an effective lr of lr_W / c); SGD's gradient of W is 1/c times that of W/c, so d(W/c) = lr_W g / c^2 (an
effective lr of lr_W / c^2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from mup_models import BASE, LM, MLP
from torch import nn

import torchinit
from torchinit import InitError, RecipeMismatchWarning, reinit
from torchinit.recipes import mup
from torchinit.testing import CoordCheck, assert_std, coord_check


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = _state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _lrs(model: nn.Module, groups: list[dict[str, object]]) -> dict[str, float]:
    names = {id(p): n for n, p in model.named_parameters()}
    found = {names[id(p)]: float(g["lr"]) for g in groups for p in g["params"]}  # type: ignore[attr-defined, arg-type]
    assert sorted(found) == sorted(names.values()) == sorted(n for n, _ in model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(found)  # type: ignore[arg-type]  # each exactly once
    return found


# --- against the mup package ------------------------------------------------------------------------------

MUP_INITS = {  # our scheme -> mup's μP-aware initializer for the same weights (the example uses a=1: gain 1)
    "lecun_normal": lambda mup_init, w: mup_init.kaiming_normal_(w, a=1, mode="fan_in"),
    "kaiming_relu": lambda mup_init, w: mup_init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier_normal": lambda mup_init, w: mup_init.xavier_normal_(w),
}


def _mup_mlp(package: object, width: int, scheme: str, seed: int) -> nn.Module:
    """The mup package's MLP at ``width``: set_base_shapes against the base, its init of the hidden and input
    weights, MuReadout's (torch's Linear default, then rescaled by set_base_shapes)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the package draws from torch's global RNG only
        model = MLP(width, head=package.MuReadout)  # type: ignore[attr-defined]
        package.set_base_shapes(model, MLP(BASE, head=package.MuReadout))  # type: ignore[attr-defined]
        for layer in (model.fc_1, model.fc_2):
            MUP_INITS[scheme](package.init, layer.weight)  # type: ignore[attr-defined]
    return model


@pytest.mark.parametrize("width", [128, 256])
@pytest.mark.parametrize("scheme", sorted(MUP_INITS))
def test_init_std_and_learning_rates_equal_the_mup_package(width: int, scheme: str, seed: int) -> None:
    package = pytest.importorskip("mup")
    theirs = _mup_mlp(package, width, scheme, seed)
    ours = MLP(width)
    m = 3**-0.5  # MuReadout keeps torch's Linear default, std 1/sqrt(3 fan_in) at the base width: m = 1/sqrt(3)
    report = reinit(ours, mup(MLP(BASE), readout=m, scheme=scheme), generator=torch.Generator().manual_seed(seed))
    c = theirs.head.width_mult()
    assert c == width / BASE
    kurtosis = {"fc_1.weight": "normal", "fc_2.weight": "normal", "head.weight": "uniform"}
    for name, shape in kurtosis.items():
        tensor = theirs.get_parameter(name).detach() / (c if name == "head.weight" else 1.0)
        expected = report[name].std
        assert expected is not None
        assert_std(tensor, expected, kurtosis=shape, msg=f"mup's {name} at width {width}, seed {seed}")
        assert_std(ours.get_parameter(name).detach(), expected, msg=f"ours {name}")
    # the rules themselves, at this width: hidden Var = scale/fan_in, readout m sqrt(base)/fan_in
    assert report["head.weight"].std == pytest.approx(m * math.sqrt(BASE) / width, rel=1e-12)
    if scheme != "xavier_normal":
        gain2 = 2.0 if scheme == "kaiming_relu" else 1.0
        assert report["fc_2.weight"].std == pytest.approx(math.sqrt(gain2 / width), rel=1e-12)

    lr = 1e-2
    for optimizer, make, readout_power in (("adam", package.MuAdam, 1), ("sgd", package.MuSGD, 2)):
        by_param = {id(p): g["lr"] for g in make(theirs.parameters(), lr=lr).param_groups for p in g["params"]}
        expected_lrs = {
            name: by_param[id(p)] / (c**readout_power if name == "head.weight" else 1.0)
            for name, p in theirs.named_parameters()
        }
        got = _lrs(ours, report.param_groups(lr, optimizer))
        assert got.keys() == expected_lrs.keys()
        for name, value in expected_lrs.items():
            assert got[name] == pytest.approx(value, rel=1e-12), (optimizer, name, got[name], value)
    adam = _lrs(ours, report.param_groups(lr))  # muP's Adam table, stated
    assert adam["fc_2.weight"] == adam["head.weight"] == pytest.approx(lr * BASE / width)
    assert adam["fc_1.weight"] == adam["fc_1.bias"] == adam["fc_2.bias"] == adam["head.bias"] == lr


# --- the rules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["lecun_normal", "kaiming_relu", "xavier_uniform"])
def test_at_the_base_width_only_the_readout_differs_from_the_standard_init(scheme: str, seed: int) -> None:
    standard, ours = MLP(BASE), MLP(BASE)
    reinit(standard, scheme, generator=torch.Generator().manual_seed(seed))
    report = reinit(ours, mup(MLP(BASE), scheme=scheme), generator=torch.Generator().manual_seed(seed))
    for name, param in ours.named_parameters():
        if name != "head.weight":
            assert torch.equal(param, standard.get_parameter(name)), name
    assert torch.equal(ours.head.weight, torch.zeros(10, BASE))
    assert {float(g["lr"]) for g in report.param_groups(0.1, "sgd")} == {0.1}  # every multiplier is 1


def test_a_model_and_its_factory_give_bitwise_the_same_result(seed: int) -> None:
    from_model, from_factory = MLP(256), MLP(256)
    reinit(from_model, mup(MLP(BASE), readout=0.5), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    before = torch.get_rng_state()
    recipe = mup(lambda: MLP(BASE), readout=0.5)
    assert torch.equal(torch.get_rng_state(), before)  # the factory drew nothing from torch's RNG
    reinit(from_factory, recipe, generator=torch.Generator().manual_seed(seed))
    _assert_same(_state(from_model), from_factory)
    assert repr(recipe) == "recipes.mup(<MLP: 6 parameters>, readout=0.5)"


def test_a_factory_that_reads_values_is_built_on_the_cpu_with_the_rng_restored() -> None:
    def reads_values() -> nn.Module:
        model = MLP(BASE)
        assert float(model.fc_1.weight.abs().sum()) > 0  # a value: impossible on the meta device
        return model

    before = torch.get_rng_state()
    recipe = mup(reads_values)
    assert torch.equal(torch.get_rng_state(), before)
    assert recipe.shapes == mup(MLP(BASE)).shapes


def test_a_base_wider_than_the_model(seed: int) -> None:
    model = MLP(64)
    report = reinit(model, mup(MLP(256), readout=1.0), generator=torch.Generator().manual_seed(seed))
    assert report["fc_2.weight"].std == 1 / 8  # hidden: the standard 1/sqrt(fan_in), at any width
    assert report["head.weight"].std == math.sqrt(256) / 64  # m sqrt(base_fan_in) / fan_in
    lrs = _lrs(model, report.param_groups(1.0))
    assert lrs["fc_2.weight"] == lrs["head.weight"] == 4.0 and lrs["fc_1.weight"] == 1.0


def test_the_readout_is_found_by_widths_without_a_name(seed: int) -> None:
    def plain(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))

    model = plain(128)
    report = reinit(model, mup(plain(32)), generator=torch.Generator().manual_seed(seed))
    assert [report[p].rule for p in ("0.weight", "2.weight", "4.weight")] == [
        "normal(std=0.353553)", "normal(std=0.0883883)", "constant(0)",
    ]  # fmt: skip
    assert report["0.weight"].source == "muP input-like: the base width's std"


def test_an_unnamed_readout_at_the_base_width_is_warned(seed: int) -> None:
    def plain(width: int) -> nn.Module:
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3))

    with pytest.warns(RecipeMismatchWarning, match=r"no layer has a readout's name: 2.weight \(the last dense layer\) "
                                                   r"gets the scheme's init here"):  # fmt: skip
        report = reinit(plain(32), mup(plain(32)))
    assert report["2.weight"].rule != "constant(0)"  # what the warning is about
    named = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
    named.add_module("head", nn.Linear(32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reinit(named, mup(named))["head.weight"].rule == "constant(0)"  # named: zero, and nothing to say


def test_a_tied_readout_keeps_the_tables_scale_and_warns(seed: int) -> None:
    class TiedLM(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, width)
            self.mix = nn.Linear(width, width)
            self.lm_head = nn.Linear(width, 50, bias=False)
            self.lm_head.weight = self.embed.weight

    model = TiedLM(256)
    with pytest.warns(
        RecipeMismatchWarning, match=r"the readout embed.weight = lm_head.weight is tied to the input embedding"
    ):
        report = reinit(model, mup(TiedLM(64)), generator=torch.Generator().manual_seed(seed))
    assert report["embed.weight"].std == 1 / 8  # the gain-1 readout std at the base width, 64: not 1/16
    lrs = _lrs(model, report.param_groups(1.0))
    assert lrs == {"embed.weight": 1.0, "mix.weight": 0.25, "mix.bias": 1.0}  # the table once, as an embedding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reinit(TiedLM(64), mup(TiedLM(64)))  # at the base width muP is the standard model: nothing to warn


def test_attention_scaled_by_one_over_sqrt_d_is_warned_once() -> None:
    def encoder(width: int) -> nn.Module:
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, batch_first=True)
        return nn.Sequential(nn.Linear(4, width), nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))

    with pytest.warns(RecipeMismatchWarning, match=r"2 attention layer\(s\) .* 1/sqrt\(head_dim\)") as caught:
        reinit(encoder(64), mup(encoder(32)))
    assert len([w for w in caught if issubclass(w.category, RecipeMismatchWarning)]) == 1
    assert "scaled_dot_product_attention(q, k, v, scale=base_head_dim**0.5 / head_dim)" in str(caught[0].message)


def test_hugging_face_attention_scaling_is_warned() -> None:
    transformers = pytest.importorskip("transformers")

    def llama(width: int) -> nn.Module:
        config = transformers.LlamaConfig(
            vocab_size=64, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
        )  # fmt: skip
        return transformers.LlamaForCausalLM(config)

    model = llama(64)
    with pytest.warns(RecipeMismatchWarning, match=r"model.layers.0.self_attn\); muP needs 1/head_dim") as caught:
        report = reinit(model, mup(lambda: llama(32)))
    assert "set each layer's .scaling = base_head_dim**0.5 / head_dim" in str(caught[0].message)
    assert report["lm_head.weight"].rule == "constant(0)" and report["model.norm.weight"].rule == "constant(1)"
    for layer in model.model.layers:
        layer.self_attn.scaling = 32**0.5 / 64  # the fix the warning names: no warning then
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reinit(model, mup(lambda: llama(32)))


def test_param_groups_of_other_schemes_and_through_build_seed_and_only() -> None:
    tied = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10))
    tied[1].weight = tied[0].weight
    groups = reinit(tied, "kaiming_relu").param_groups(0.5)
    assert len(groups) == 1 and groups[0]["lr"] == 0.5 and len(groups[0]["params"]) == 2  # the table once
    torch.optim.Adam(groups)
    built, report = torchinit.build(lambda: MLP(128), mup(MLP(BASE)))
    assert _lrs(built, report.param_groups(1.0))["fc_2.weight"] == 0.5
    keyed = reinit(MLP(128), mup(MLP(BASE)), seed=3)
    assert keyed.widths["fc_2.weight"].fan_in == 2.0
    part = MLP(128)
    only = reinit(part, mup(MLP(BASE)), only="head")
    assert len(only) == 2 and _lrs(part, only.param_groups(1.0))["fc_2.weight"] == 0.5  # groups of the whole model


# --- errors: named, and nothing written ---------------------------------------------------------------------


def test_a_base_with_other_names_is_refused_naming_the_first_mismatch() -> None:
    model = MLP(128)
    before = _state(model)
    renamed = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10))
    with pytest.raises(InitError, match=r"the model's parameter fc_1.weight \(Linear, shape \(128, 32\)\) is not in "
                                        r"the base model \(nearest name there: '1.weight'\)"):  # fmt: skip
        reinit(model, mup(renamed))
    _assert_same(before, model)

    class Extra(MLP):
        def __init__(self, width: int) -> None:
            super().__init__(width)
            self.gate = nn.Linear(width, 1)

    with pytest.raises(InitError, match=r"the base's parameter gate.weight is not in the model"):
        reinit(model, mup(Extra(BASE)))
    flat = MLP(128)
    flat.fc_2 = nn.Conv1d(128, 128, 1)  # type: ignore[assignment]
    with pytest.raises(InitError, match=r"fc_2.weight \(Conv1d, shape \(128, 128, 1\)\) has 3 dimensions and the "):
        reinit(flat, mup(MLP(BASE)))
    _assert_same(before, model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"readout": "linear"}, r"readout must be 'zero' or a float m .*got readout='linear'"),
        ({"readout": -1.0}, r"readout must be a finite number >= 0; got readout=-1.0"),
        ({"readout": True}, r"readout must be a finite number >= 0; got readout=True"),
        ({"scheme": "orthogonal"}, r"scheme must be a variance-scaling Scheme .*got scheme='orthogonal'"),
        ({"scheme": "gpt2"}, r"scheme must be a variance-scaling Scheme .*got scheme='gpt2'"),
        ({"scheme": "lecun_nromal"}, r"scheme='lecun_nromal'. Did you mean 'lecun_normal'"),
    ],
)
def test_bad_arguments_of_mup(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InitError, match=match):
        mup(MLP(BASE), **kwargs)  # type: ignore[arg-type]


def test_a_bad_base_is_refused() -> None:
    with pytest.raises(InitError, match=r"base must be the model at its base width or a zero-argument factory"):
        mup(64)  # type: ignore[arg-type]
    with pytest.raises(InitError, match=r"base must return an nn.Module when called; it returned dict"):
        mup(lambda: {})  # type: ignore[arg-type, return-value]
    lazy = nn.Sequential(nn.LazyLinear(8))
    with pytest.raises(InitError, match=r"its 0.weight \(LazyLinear\) is an uninitialized lazy parameter"):
        mup(lazy)
    with (
        pytest.raises(InitError, match=r"a layer being constructed is a part of one"),
        torchinit.default_scheme(mup(MLP(BASE))),
    ):
        nn.Linear(4, 4)


@pytest.mark.parametrize(
    ("lr", "optimizer", "match"),
    [
        (-0.1, "adam", r"lr must be a finite number >= 0; got lr=-0.1"),
        (math.nan, "adam", r"lr must be a finite number >= 0; got lr=nan"),
        ("1e-3", "adam", r"lr must be a finite number >= 0; got lr='1e-3'"),
        (1e-3, "adma", r"optimizer must be one of 'adam', 'adamw', 'sgd'; got optimizer='adma'. Did you mean 'adam'"),
        (1e-3, "Adam", r"optimizer must be one of .*got optimizer='Adam'"),
    ],
)
def test_bad_arguments_of_param_groups(lr: object, optimizer: str, match: str) -> None:
    model = MLP(128)
    report = reinit(model, mup(MLP(BASE)))
    with pytest.raises(InitError, match=match):
        report.param_groups(lr, optimizer)  # type: ignore[arg-type]
    with pytest.raises(InitError, match=match):
        reinit(model, "kaiming_relu").param_groups(lr, optimizer)  # type: ignore[arg-type]


def test_param_groups_needs_the_model_as_planned() -> None:
    model = MLP(128)
    report = reinit(model, mup(MLP(BASE)))
    model.extra = nn.Linear(128, 2)
    with pytest.raises(InitError, match=r"extra.weight \(shape \(2, 128\)\) is not among the parameters recipes.mup"):
        report.param_groups(1e-3)
    gone = reinit(MLP(128), mup(MLP(BASE)))  # nothing keeps that model alive
    with pytest.raises(InitError, match=r"this report's model no longer exists"):
        gone.param_groups(1e-3)


# --- coordinate checks ---------------------------------------------------------------------------------------
#
# Criterion. In the small-update regime (a few Adam steps at lr 3e-4), theory gives the log-log slope of each
# activation's change against width: 0 under muP, 1 under the standard parametrization with one learning rate
# (every coordinate of an update dW x sums n correlated terms). A measured slope is accepted within
# log(2) / log(512 / 64) = 1/3 of the prediction: over the 8x range of widths, the measured growth is within a
# factor 2 of the predicted one. So muP must show |slope| < 1/3, and SP, whose claim is that it grows, > 2/3.

WIDTHS = (64, 128, 256, 512)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The models are small: one intra-op thread is fastest, and much faster on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WITHIN = math.log(2) / math.log(WIDTHS[-1] / WIDTHS[0])
LR = 3e-4


def _check(
    build: Callable[[int], nn.Module],
    base: Callable[[], nn.Module],
    mu: bool,
    seed: int,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    layers: list[str],
) -> CoordCheck:
    def setup(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = build(width)
        generator = torch.Generator().manual_seed(seed + width)
        if mu:
            report = reinit(model, mup(base), generator=generator)
            return model, torch.optim.Adam(report.param_groups(LR))
        reinit(model, "lecun_normal", generator=generator)  # the standard parametrization, one learning rate
        return model, torch.optim.Adam(model.parameters(), lr=LR)

    return coord_check(setup, WIDTHS, inputs, loss, steps=3, layers=layers)


def _assert_slopes(mu: CoordCheck, sp: CoordCheck, seed: int) -> None:
    shown = f"\nmuP:\n{mu}\nSP:\n{sp}\nallowed: muP |slope| < {WITHIN:.3f}, SP slope > {1 - WITHIN:.3f}; seed {seed}"
    for layer in mu.layers:
        assert abs(mu.slope(layer)) < WITHIN, f"muP {layer!r} changes with width" + shown
        assert sp.slope(layer) > 1 - WITHIN, f"SP {layer!r} does not grow with width" + shown


@pytest.mark.usefixtures("one_thread")
def test_coordinate_check_mlp(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    layers = ["act", ""]  # the last hidden activations, the logits
    mu = _check(MLP, lambda: MLP(BASE), True, seed, x, loss, layers)
    sp = _check(MLP, lambda: MLP(BASE), False, seed, x, loss, layers)
    _assert_slopes(mu, sp, seed)


@pytest.mark.usefixtures("one_thread")
def test_coordinate_check_transformer(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    tokens, targets = (torch.randint(0, 64, (4, 16), generator=generator) for _ in range(2))

    def loss(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.flatten(0, 1), targets.flatten())

    layers = ["blocks.1", ""]  # the last block's output (the residual stream before ln_f), the logits
    mu = _check(LM, lambda: LM(BASE), True, seed, tokens, loss, layers)
    sp = _check(lambda w: LM(w, mu=False), lambda: LM(BASE), False, seed, tokens, loss, layers)
    _assert_slopes(mu, sp, seed)
