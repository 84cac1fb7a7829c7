"""Schemes at construction time: SchemeMixin / with_scheme, the default_scheme context, build()."""

from __future__ import annotations

import copy
import io
import math
import pickle
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchinit
from torchinit import InitError, Override, build, default_scheme, with_scheme
from torchinit._api import patches as _patches
from torchinit.layers import Bilinear, Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, Linear
from torchinit.testing import assert_std

KConv2d = with_scheme(nn.Conv2d, "kaiming_relu")


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- subclasses -----------------------------------------------------------------------------------


def test_with_scheme_is_a_true_subclass() -> None:
    conv = KConv2d(64, 64, 3, groups=64)
    assert isinstance(conv, nn.Conv2d) and type(conv) is with_scheme(nn.Conv2d, "kaiming_relu")
    assert list(conv.state_dict()) == list(nn.Conv2d(64, 64, 3, groups=64).state_dict())
    assert_std(conv.weight, math.sqrt(2 / 9))  # depthwise: true fan_in 9
    assert bool((conv.bias == 0).all())


def test_constructor_draws_only_the_scheme() -> None:
    # No torch default is drawn first: the RNG advances by exactly the scheme's one normal_ draw.
    torch.manual_seed(0)
    KConv2d(8, 16, 3)
    after_construction = torch.get_rng_state()
    torch.manual_seed(0)
    expected = torch.empty(16, 8, 3, 3).normal_(0, math.sqrt(2 / 72))
    assert torch.equal(torch.get_rng_state(), after_construction)
    torch.manual_seed(0)
    assert torch.equal(KConv2d(8, 16, 3).weight, expected)


def test_later_reset_parameters_applies_the_scheme_again() -> None:
    layer = Linear(512, 256)
    before = layer.weight.clone()
    with torch.no_grad():
        layer.bias.fill_(5.0)
    layer.reset_parameters()
    assert not torch.equal(layer.weight, before) and bool((layer.bias == 0).all())
    assert_std(layer.weight, math.sqrt(2 / 512))


def test_mixin_subclass_with_its_own_scheme() -> None:
    class GeluLinear(torchinit.SchemeMixin, nn.Linear):
        init_scheme = torchinit.Scheme.kaiming("gelu", distribution="uniform")

    layer = GeluLinear(1024, 512)
    assert_std(layer.weight, torchinit.exact_gain("gelu") / math.sqrt(1024), kurtosis="uniform")


class Gated(torchinit.SchemeMixin, nn.Linear):
    """A layer of one's own: a raw parameter, registered after the scheme ran, that no rule covers."""

    def __init__(self, n: int) -> None:
        super().__init__(n, n)
        self.gate = nn.Parameter(torch.ones(n))


class Wide(torchinit.SchemeMixin, nn.Linear):
    """A constructor of one's own registering nothing uncovered."""

    def __init__(self, n: int) -> None:
        super().__init__(n, 2 * n)


def test_a_scheme_mixin_layer_warns_of_a_raw_parameter_no_rule_covers() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        layer = Gated(16)
        Wide(16)  # covered: silent
        uncovered = [w for w in record if issubclass(w.category, torchinit.UncoveredParameterWarning)]
        assert len(uncovered) == 1 and "Gated.gate x 1: gate (16,)" in str(uncovered[0].message)
        assert (uncovered[0].filename, uncovered[0].lineno) == (__file__, line)  # the line that made it
        layer.reset_parameters()  # as before: a later reset warns too
        assert len([w for w in record if issubclass(w.category, torchinit.UncoveredParameterWarning)]) == 2
        record.clear()
        build(lambda: nn.Sequential(Gated(8)))  # build warns once, for the whole model
        assert [str(w.message).count("gate (8,)") for w in record] == [1]
    assert_std(layer.weight, math.sqrt(2 / 16))  # the scheme still drew the covered weight


def test_legacy_subclass_equals_torch() -> None:
    torch.manual_seed(4)
    ref = nn.Linear(5, 7)
    torch.manual_seed(4)
    assert same_state(ref, with_scheme(nn.Linear, "legacy")(5, 7))


@pytest.mark.parametrize("layer", [KConv2d(3, 4, 3), Conv2d(3, 4, 3)], ids=["with_scheme", "ready-made"])
def test_pickle_deepcopy_and_weights_only_load(layer: nn.Module) -> None:
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert type(clone) is type(layer) and same_state(clone, layer)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = type(layer)(3, 4, 3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert same_state(fresh, layer)


def test_a_with_scheme_layer_of_a_recipe_pickles_and_unpickles_in_a_fresh_process(tmp_path: Path) -> None:
    gpt2_linear = with_scheme(nn.Linear, "gpt2")  # the gpt2 recipe holds local functions: pickled by its name
    layer = gpt2_linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU())
    for clone in (pickle.loads(pickle.dumps(layer)), pickle.loads(pickle.dumps(model))[0]):
        assert type(clone) is gpt2_linear and same_state(clone, layer)
    saved = tmp_path / "model.pt"
    torch.save(model, saved)
    code = (
        "import torch, torchinit\n"
        f"model = torch.load({str(saved)!r}, weights_only=False)\n"
        "assert type(model[0]) is torchinit.with_scheme(torch.nn.Linear, 'gpt2'), type(model[0])\n"
        "print(model[0].weight.sum().item())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(layer.weight.sum().item())


def test_torch_compile() -> None:
    layer = KConv2d(3, 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own imports under torch.compile
        compiled = torch.compile(layer, backend="eager")
        x = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(compiled(x), layer(x))


@pytest.mark.parametrize(
    ("cls", "args", "fan_in"),
    [
        (Linear, (300, 20), 300), (Bilinear, (10, 20, 5), 200), (Conv1d, (4, 8, 5), 20), (Conv2d, (4, 8, 3), 36),
        (Conv3d, (2, 4, 3), 54), (ConvTranspose1d, (8, 4, 4, 2), 16), (ConvTranspose2d, (8, 4, 4, 2), 32),
        (ConvTranspose3d, (4, 2, 2, 2), 4),
    ],
)  # fmt: skip
def test_ready_made_layers(cls: type[nn.Module], args: tuple[int, ...], fan_in: int) -> None:
    layer = cls(*args)
    assert isinstance(layer, cls.__mro__[2])
    assert torchinit.fans_of(layer, "weight").fan_in == fan_in
    report = torchinit.reinit(layer, "kaiming_relu")
    assert report["weight"].std == pytest.approx(math.sqrt(2 / fan_in))


def test_with_scheme_errors() -> None:
    with pytest.raises(
        InitError, match="cls must be an nn.Module subclass with reset_parameters; got cls=<class 'int'>"
    ):
        with_scheme(int, "kaiming_relu")  # type: ignore[type-var]
    with pytest.raises(
        InitError, match="cls must be an nn.Module subclass with reset_parameters; got cls=<class .*ReLU"
    ):
        with_scheme(nn.ReLU, "kaiming_relu")
    with pytest.raises(InitError, match="got scheme='kaiming'"):
        with_scheme(nn.Linear, "kaiming")


# --- the context ----------------------------------------------------------------------------------


def test_context_applies_the_scheme_and_then_ends() -> None:
    with default_scheme("kaiming_relu", generator=torch.Generator().manual_seed(0)):
        layer = nn.Linear(1024, 256)
        lstm = nn.LSTM(8, 16)
        norm = nn.LayerNorm(4)
    assert_std(layer.weight, math.sqrt(2 / 1024))
    assert bool((layer.bias == 0).all()) and bool((lstm.bias_ih_l0 == 0).all())
    assert torch.equal(norm.weight, torch.ones(4))
    torch.manual_seed(1)
    outside = nn.Linear(5, 7)
    torch.manual_seed(1)
    assert same_state(outside, nn.Linear(5, 7)) and bool((outside.bias != 0).all())


def test_context_generator_makes_construction_reproducible() -> None:
    def make() -> nn.Module:
        with default_scheme("lecun_normal", generator=torch.Generator().manual_seed(3)):
            return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 8))

    assert same_state(make(), make())


def test_context_gives_stacked_transformer_layers_independent_draws() -> None:
    with default_scheme("kaiming_relu"):
        stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64), 3, enable_nested_tensor=False)
    w = [layer.linear1.weight for layer in stack.layers]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    for layer in stack.layers:
        assert bool((layer.linear1.bias == 0).all())


def test_nested_contexts_and_exceptions() -> None:
    with default_scheme("kaiming_relu"):
        with default_scheme(torchinit.Scheme(bias=0.5)):
            inner = nn.Linear(4, 4)
        middle = nn.Linear(4, 4)
        with pytest.raises(RuntimeError, match="boom"), default_scheme("xavier_uniform"):
            raise RuntimeError("boom")
        after_error = nn.Linear(4, 4)
    assert torch.equal(inner.bias, torch.full((4,), 0.5))
    assert bool((middle.bias == 0).all()) and bool((after_error.bias == 0).all())
    assert bool((nn.Linear(4, 4).bias != 0).all())  # all contexts closed


def test_context_is_per_thread() -> None:
    entered, built = threading.Event(), threading.Event()
    other: list[nn.Module] = []

    def worker() -> None:
        entered.wait()
        other.append(nn.Linear(64, 64))  # while the main thread is inside its context
        built.set()

    thread = threading.Thread(target=worker)
    thread.start()
    with default_scheme("kaiming_relu"):
        entered.set()
        assert built.wait(timeout=30)
        mine = nn.Linear(64, 64)
    thread.join()
    assert bool((other[0].bias != 0).all())  # torch's default: U(+-1/8) biases
    assert float(other[0].weight.detach().abs().max()) <= 1 / 8
    assert bool((mine.bias == 0).all())


def _torch_objects() -> dict[tuple[int, str], object]:
    """Every torch attribute construction contexts replace, by (owner, name), with the object it holds now."""
    return {
        (id(owner), name): owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        for owner, name in _patches.touched()
    }


def test_torch_is_torch_again_after_every_context() -> None:
    original = _torch_objects()
    assert (id(nn.Linear), "reset_parameters") in original and (id(nn.init), "trunc_normal_") in original
    with default_scheme("kaiming_relu"):
        inside = _torch_objects()
        nn.Linear(2, 2)
    assert all(inside[key] is not value for key, value in original.items())  # the check can fail: all replaced
    assert _torch_objects() == original and all(_torch_objects()[k] is v for k, v in original.items())
    with pytest.raises(RuntimeError, match="boom"), default_scheme("xavier_uniform"):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="factory"):
        build(lambda: (_ for _ in ()).throw(RuntimeError("factory")))
    build(
        lambda: nn.Sequential(
            nn.Linear(4, 4), nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, batch_first=True), 2)
        )
    )
    assert all(_torch_objects()[k] is v for k, v in original.items())


def test_torch_is_restored_when_the_last_context_of_any_thread_closes() -> None:
    original = _torch_objects()
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with default_scheme("kaiming_relu"):
                entered.set()
                assert release.wait(timeout=30)
                raise ValueError("worker fails inside its block")
        except ValueError:
            pass
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(timeout=30)
    with default_scheme("lecun_normal"):
        pass
    assert _torch_objects()[id(nn.Linear), "reset_parameters"] is not original[id(nn.Linear), "reset_parameters"]
    release.set()  # the worker's block is the last one open
    thread.join()
    assert not errors
    assert all(_torch_objects()[k] is v for k, v in original.items())


def test_contexts_are_per_asyncio_task() -> None:
    import asyncio

    async def make(scheme: str, other_entered: asyncio.Event, mine_entered: asyncio.Event) -> nn.Linear:
        with default_scheme(torchinit.Scheme(bias=1.0) if scheme == "ones" else scheme):
            mine_entered.set()
            await other_entered.wait()  # both blocks open at once, interleaved in one thread
            return nn.Linear(4, 4)

    async def main() -> tuple[nn.Linear, nn.Linear]:
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(make("ones", b, a), make("kaiming_relu", a, b))  # type: ignore[return-value]

    ones, zeros = asyncio.run(main())
    assert torch.equal(ones.bias, torch.ones(4)) and torch.equal(zeros.bias, torch.zeros(4))


def test_a_lazy_layer_gets_its_scheme_after_torch_is_restored() -> None:
    with default_scheme(torchinit.Scheme(bias=0.25)):
        lazy = nn.LazyLinear(3)
    torch_reset = nn.Linear.__dict__["reset_parameters"]
    lazy(torch.zeros(2, 5))
    assert torch.equal(lazy.bias, torch.full((3,), 0.25))
    assert nn.Linear.__dict__["reset_parameters"] is torch_reset and "reset_parameters" not in lazy.__dict__
    assert not lazy._forward_pre_hooks  # its hooks are gone once materialized
    lazy.reset_parameters()  # later resets are torch's again, as for any layer made under a block
    assert not torch.equal(lazy.bias, torch.full((3,), 0.25))


def test_legacy_context_is_torchs_default() -> None:
    torch.manual_seed(2)
    ref = nn.MultiheadAttention(8, 2)
    torch.manual_seed(2)
    with default_scheme("legacy"):
        got = nn.MultiheadAttention(8, 2)
    assert same_state(ref, got)


def test_modules_filling_their_own_parameters_keep_doing_so() -> None:
    class Own(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((3,), 7.0))
            self.proj = nn.Linear(3, 3)

    with default_scheme("kaiming_relu"):
        own = Own()
    assert torch.equal(own.scale, torch.full((3,), 7.0)) and bool((own.proj.bias == 0).all())


def test_context_errors() -> None:
    with pytest.raises(InitError, match="got scheme='kaiming'"), default_scheme("kaiming"):
        pass
    with (
        pytest.raises(InitError, match="generator must be a torch.Generator or None; got generator=1"),
        default_scheme("kaiming_relu", generator=1),  # type: ignore[arg-type]
    ):
        pass


# --- build ----------------------------------------------------------------------------------------


class Positional(nn.Module):
    """Buffers computed in __init__ (a sinusoidal table, a rotary cache, a mask): build must keep them."""

    def __init__(self, length: int = 32, width: int = 16) -> None:
        super().__init__()
        position = torch.arange(length).unsqueeze(1)
        freq = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
        table = torch.zeros(length, width)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("table", table)
        self.register_buffer("rotary", torch.polar(torch.ones(length, 4), position * freq[:4]), persistent=False)
        self.register_buffer("mask", torch.tril(torch.ones(length, length, dtype=torch.bool)))
        self.proj = nn.Linear(width, width)
        self.rnn = nn.LSTM(width, width, batch_first=True)


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
    "conv": lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 4, 4, stride=2)),
    "attention": lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32), 2, enable_nested_tensor=False),
    "transformer": lambda: nn.Transformer(16, 2, 1, 1, 32),
    "positional": Positional,
    "embedding": lambda: nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.GRU(4, 5)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_build_legacy_is_eager_construction(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's nested-tensor notice for nn.Transformer
        torch.manual_seed(10)
        ref = MODELS[name]()
        after = torch.get_rng_state()
        torch.manual_seed(10)
        model, _ = build(MODELS[name], "legacy")
    assert same_state(ref, model)
    assert torch.equal(torch.get_rng_state(), after)


@pytest.mark.parametrize("name", list(MODELS))
def test_build_with_a_scheme_matches_reinit(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        built, report = build(MODELS[name], "kaiming_relu", generator=g1)
        eager = MODELS[name]()
        expected = torchinit.reinit(eager, "kaiming_relu", generator=g2)
    assert [(e.path, e.rule) for e in report] == [(e.path, e.rule) for e in expected]
    assert same_state(built, eager)  # same plan, same generator: the same values


def test_build_statistics_on_a_large_layer() -> None:
    model, _ = build(lambda: nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, groups=4)), "kaiming_relu_fan_out")
    assert_std(model[0].weight, math.sqrt(2 / (32 * 9 / 4)))  # true fan_out (C_out/g) k / stride


def test_build_keeps_buffers_computed_in_init() -> None:
    eager = Positional()
    model, _ = build(Positional, "kaiming_relu")
    for name in ("table", "rotary", "mask"):
        assert torch.equal(getattr(model, name), getattr(eager, name)), name


def test_build_dtype_and_device() -> None:
    before = torch.get_default_dtype()
    model, _ = build(MODELS["conv"], "kaiming_relu", dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == before

    def broken() -> nn.Module:
        raise RuntimeError("factory failed")

    with pytest.raises(RuntimeError, match="factory failed"):
        build(broken, dtype=torch.float64)
    assert torch.get_default_dtype() == before
    assert bool((nn.Linear(3, 3).bias != 0).all())  # no context left behind


class Gained(nn.Linear):
    """A torch-layer subclass with a parameter no rule covers, reset through the (skipped) torch method."""

    def __init__(self) -> None:
        super().__init__(4, 4)
        self.gain = nn.Parameter(torch.empty(4))
        self.reset_parameters()


def test_build_refuses_to_leave_uninitialized_memory() -> None:
    with pytest.raises(
        InitError, match=r"gain \(shape \(4,\)\) had its default init skipped but the scheme does not write"
    ):
        build(lambda: nn.Sequential(Gained()), "kaiming_relu")
    model, _ = build(lambda: nn.Sequential(Gained()), "kaiming_relu", overrides=[Override(path="*.gain", constant=1.0)])
    assert torch.equal(model[0].gain, torch.ones(4))


def test_build_errors() -> None:
    with pytest.raises(InitError, match="factory must be a zero-argument callable returning an nn.Module; got 3"):
        build(3)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="factory must return an nn.Module; got int"):
        build(lambda: 3)  # type: ignore[arg-type, return-value]
    with pytest.raises(InitError, match="device must hold real storage to be initialized; got device='meta'"):
        build(MODELS["mlp"], device="meta")
    with pytest.raises(InitError, match="dtype must be a floating-point torch.dtype; got dtype=torch.int32"):
        build(MODELS["mlp"], dtype=torch.int32)
    with pytest.raises(InitError, match="got scheme='nope'"):
        build(MODELS["mlp"], "nope")
