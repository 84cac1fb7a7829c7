"""torchinit as a drop-in for torch.nn.init: every public name, its signature, its values and its errors.

Every public function of torch.nn.init (torch 2.13) is compared bit for bit with torchinit's on the same generator
(and global RNG) state, over fp32, fp64, fp16 and bf16. What torch's own test/nn/test_init.py checks for uniform_,
normal_, constant_, ones_, zeros_, eye_, dirac_, sparse_ and the deprecated aliases is asked here of torchinit's
functions (``init`` below is torchinit); its checks of calculate_gain, kaiming_*, xavier_*, trunc_normal_ and
orthogonal_ are in test_torch_parity.py.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import torchinit as init
from torchinit._maths.torch_init import DEPRECATED
from torchinit.testing import assert_distribution, assert_mean, assert_std, assert_uniform_support
from torchinit.testing import strategies as tst

TORCH_NAMES = sorted(
    name
    for name in dir(nn.init)
    if not name.startswith("_")
    and inspect.isfunction(getattr(nn.init, name))
    and getattr(nn.init, name).__module__ == "torch.nn.init"
)
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_IDS = [str(d).removeprefix("torch.") for d in FLOATS]


def test_every_public_torch_init_function_is_here() -> None:
    assert len(TORCH_NAMES) == 26  # torch 2.13: 15 functions and 11 deprecated aliases
    assert set(TORCH_NAMES) == set(nn.init.__all__)
    missing = [name for name in TORCH_NAMES if not callable(getattr(init, name, None))]
    assert not missing
    in_place = {name for name in TORCH_NAMES if name.endswith("_") or name == "calculate_gain"}
    assert in_place <= set(init.__all__)
    assert {f.__name__ for f in DEPRECATED} == set(TORCH_NAMES) - in_place
    assert not set(init.__all__) & {f.__name__ for f in DEPRECATED}  # importable, not star-exported


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_signature_extends_torchs(name: str) -> None:
    ours = list(inspect.signature(getattr(init, name)).parameters.values())
    theirs = list(inspect.signature(getattr(nn.init, name)).parameters.values())
    assert [(p.name, p.default, p.kind) for p in ours[: len(theirs)]] == [(p.name, p.default, p.kind) for p in theirs]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(theirs) :])


# --- bit-exact against torch.nn.init, for every function that writes ----------------------------------

# name -> (arguments after the tensor, the shapes it takes: a strategy)
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("uniform_", {}),
    ("uniform_", {"a": -0.3, "b": 0.7}),
    ("normal_", {}),
    ("normal_", {"mean": 1.5, "std": 0.02}),
    ("trunc_normal_", {}),
    ("trunc_normal_", {"std": 0.5, "a": -0.1, "b": 1.0}),
    ("constant_", {"val": 0.3}),
    ("ones_", {}),
    ("zeros_", {}),
    ("eye_", {}),
    ("dirac_", {}),
    ("dirac_", {"groups": 2}),
    ("xavier_uniform_", {}),
    ("xavier_uniform_", {"gain": 2.0}),
    ("xavier_normal_", {"gain": 0.5}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {}),
    ("kaiming_normal_", {"a": 0.2, "mode": "fan_out"}),
    ("orthogonal_", {}),
    ("orthogonal_", {"gain": 3.0}),
    ("sparse_", {"sparsity": 0.3}),
    ("sparse_", {"sparsity": 0.0, "std": 0.5}),
]
TAKES_GENERATOR = {n for n in TORCH_NAMES if "generator" in inspect.signature(getattr(nn.init, n)).parameters}


def _shapes(name: str, kwargs: dict[str, Any]) -> st.SearchStrategy[tuple[int, ...]]:
    if name in ("eye_", "sparse_"):
        return tst.weight_shapes(min_dims=2, max_dims=2, max_side=12)
    if name == "dirac_":
        groups = kwargs.get("groups", 1)
        return st.tuples(
            st.integers(1, 4).map(lambda k: k * groups), st.integers(1, 5), *[st.integers(1, 4)] * 1
        ) | st.tuples(
            st.integers(1, 3).map(lambda k: k * groups), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)
        )
    if name in ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_"):
        return st.lists(st.integers(1, 6), min_size=0, max_size=4).map(tuple)
    return tst.weight_shapes(max_dims=4, max_side=10)


def _call(fn: Callable[..., torch.Tensor], name: str, t: torch.Tensor, kwargs: dict[str, Any], gen: Any) -> Any:
    extra = {"generator": gen} if name in TAKES_GENERATOR else {}
    return fn(t, **kwargs, **extra)


@pytest.mark.parametrize(("name", "kwargs"), CALLS, ids=[f"{n}{k}" for n, k in CALLS])
@pytest.mark.parametrize("dtype", FLOATS, ids=DTYPE_IDS)
@given(data=st.data(), seed=tst.seeds())
def test_bitwise_equal_to_torch(
    name: str, kwargs: dict[str, Any], dtype: torch.dtype, data: st.DataObject, seed: int
) -> None:
    shape = data.draw(_shapes(name, kwargs), "shape")
    torch_gen, our_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed + 1)  # sparse_ draws its zero pattern from the global RNG, in torch as here
    expected = torch.full(shape, 7.0, dtype=dtype)
    try:
        _call(getattr(nn.init, name), name, expected, kwargs, torch_gen)
    except RuntimeError:  # torch's QR has no half-precision kernel: torchinit's orthogonal_ is an extension there
        assert name == "orthogonal_" and dtype in (torch.float16, torch.bfloat16)
        return
    global_after = torch.get_rng_state()
    torch.manual_seed(seed + 1)
    actual = _call(getattr(init, name), name, torch.full(shape, 7.0, dtype=dtype), kwargs, our_gen)
    assert actual.dtype == dtype and actual.shape == shape
    assert torch.equal(actual, expected), f"{name}{kwargs} shape={shape} dtype={dtype}"
    assert torch.equal(our_gen.get_state(), torch_gen.get_state())  # the same generator consumption
    assert torch.equal(torch.get_rng_state(), global_after)  # and the same global one


@pytest.mark.parametrize("name", ["uniform_", "normal_", "xavier_normal_", "kaiming_uniform_", "sparse_"])
def test_global_rng_equal_to_torch(name: str, seed: int) -> None:
    kwargs = {"sparsity": 0.5} if name == "sparse_" else {}
    torch.manual_seed(seed)
    expected = getattr(nn.init, name)(torch.empty(9, 7), **kwargs)
    after = torch.rand(1)
    torch.manual_seed(seed)
    assert torch.equal(getattr(init, name)(torch.empty(9, 7), **kwargs), expected)
    assert torch.equal(torch.rand(1), after)


@pytest.mark.parametrize("name", ["constant_", "ones_", "zeros_", "eye_", "dirac_"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_fills_take_non_float_tensors_as_torch_does(name: str, dtype: torch.dtype) -> None:
    shape = {"eye_": (3, 4), "dirac_": (4, 3, 3)}.get(name, (2, 3))
    args = (1,) if name == "constant_" else ()
    assert torch.equal(getattr(init, name)(torch.zeros(shape, dtype=dtype), *args),
                       getattr(nn.init, name)(torch.zeros(shape, dtype=dtype), *args))  # fmt: skip


def test_writes_into_parameters_without_recording_grad(gen: torch.Generator) -> None:
    for name, kwargs in CALLS:
        p = nn.Parameter(torch.empty(6, 4, 3) if name == "dirac_" else torch.empty(6, 4))
        out = _call(getattr(init, name), name, p, kwargs, gen)
        assert out is p and out.grad_fn is None and p.requires_grad


# --- the deprecated aliases ------------------------------------------------------------------------


@pytest.mark.parametrize("alias", DEPRECATED, ids=lambda f: f.__name__)
def test_deprecated_alias_warns_and_matches_torchs(alias: Callable[..., torch.Tensor], seed: int) -> None:
    name = alias.__name__
    args: tuple[Any, ...] = {"constant": (0.25,), "sparse": (0.4,)}.get(name, ())
    shape = (4, 3, 3) if name == "dirac" else (5, 4)
    torch.manual_seed(seed)
    with pytest.warns(FutureWarning, match=rf"`nn.init.{name}` is now deprecated in favor of `nn.init.{name}_`"):
        expected = getattr(nn.init, name)(torch.empty(shape), *args)
    torch.manual_seed(seed)
    with pytest.warns(FutureWarning, match=rf"`torchinit.{name}` is now deprecated in favor of `torchinit.{name}_`"):
        actual = alias(torch.empty(shape), *args)
    assert torch.equal(actual, expected)
    assert alias is getattr(init, name)
    assert f"{name}_" in (alias.__doc__ or "")


# --- the laws, with calibrated assertions ----------------------------------------------------------

BIG = tst.weight_shapes(min_dims=2, max_dims=4, max_side=60, min_numel=2000, max_numel=20_000)


@given(shape=BIG, gen=tst.generators(), a=st.floats(-3, 3), width=st.floats(0.01, 4))
def test_uniform_law(shape: tuple[int, ...], gen: torch.Generator, a: float, width: float) -> None:
    w = init.uniform_(torch.empty(shape, dtype=torch.float64), a, a + width, generator=gen)
    label = f"uniform_({a}, {a + width}) shape={shape}"
    assert float(w.min()) >= a and float(w.max()) < a + width, label
    assert_distribution(w, "uniform", width / math.sqrt(12), mean=a + width / 2, msg=label)
    assert_uniform_support(w - (a + width / 2), width / 2, msg=label)  # reaches near both ends


@given(shape=BIG, gen=tst.generators(), mean=st.floats(-3, 3), std=st.floats(0.01, 4))
def test_normal_law(shape: tuple[int, ...], gen: torch.Generator, mean: float, std: float) -> None:
    w = init.normal_(torch.empty(shape, dtype=torch.float64), mean, std, generator=gen)
    label = f"normal_({mean}, {std}) shape={shape}"
    assert_distribution(w, "normal", std, mean=mean, msg=label)
    assert_std(w, std, mean=mean, msg=label)
    assert_mean(w, mean, std=std, msg=label)


def test_constant_ones_zeros() -> None:
    for dims in range(1, 6):
        shape = tuple(range(2, 2 + dims))
        assert bool((init.constant_(torch.empty(shape), 0.7) == torch.tensor(0.7)).all())
        assert bool((init.ones_(torch.empty(shape)) == 1).all())
        assert bool((init.zeros_(torch.empty(shape)) == 0).all())


@pytest.mark.parametrize("shape", [(4, 4), (3, 7), (7, 3)])
def test_eye(shape: tuple[int, int]) -> None:
    w = init.eye_(torch.empty(shape))
    assert torch.equal(w, torch.eye(*shape))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_eye_only_on_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"eye_ fills 2-D tensors only .*; got shape={re_shape(shape)}"):
        init.eye_(torch.empty(shape))


def re_shape(shape: tuple[int, ...]) -> str:
    return "\\" + str(shape).replace(")", "\\)")


@pytest.mark.parametrize("dims", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_dirac_properties(dims: int, groups: int) -> None:
    out_per_group, in_channels = 4, 3
    shape = (out_per_group * groups, in_channels, *[3] * (dims - 2))
    w = init.dirac_(torch.empty(shape), groups)
    assert int((w == 1).sum()) == groups * min(out_per_group, in_channels)
    assert int((w != 0).sum()) == int((w == 1).sum())


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_dirac_is_the_identity(dims: int, groups: int, gen: torch.Generator) -> None:
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    in_channels, out_channels = 2 * groups, 4 * groups
    x = torch.randn(2, in_channels, *[5] * dims, generator=gen)
    w = init.dirac_(torch.empty(out_channels, in_channels // groups, *[3] * dims), groups)
    y = conv(x, w, padding=1, groups=groups)
    per_in, per_out = in_channels // groups, out_channels // groups
    for g in range(groups):
        block = y[:, g * per_out : (g + 1) * per_out]
        assert torch.equal(block[:, :per_in], x[:, g * per_in : (g + 1) * per_in])  # passed through exactly
        assert bool((block[:, per_in:] == 0).all())


@pytest.mark.parametrize("shape", [(4, 3), (4,), (2, 2, 2, 2, 2, 2)])
def test_dirac_only_on_3_4_5d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"dirac_ fills 3-, 4- or 5-D convolution weights only .*{re_shape(shape)}"):
        init.dirac_(torch.empty(shape))


@pytest.mark.parametrize("groups", [0, -1, 5, 1.5, "2"], ids=repr)
def test_dirac_groups_must_divide(groups: object) -> None:
    with pytest.raises(ValueError, match=r"groups must be a positive integer dividing dim 0 \(size 4\)"):
        init.dirac_(torch.empty(4, 2, 3), groups)  # type: ignore[arg-type]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_sparse_zeros_per_column_and_std(sparsity: float, gen: torch.Generator) -> None:
    rows, cols = 200, 60
    w = init.sparse_(torch.empty(rows, cols), sparsity, std=0.01, generator=gen)
    zeros = math.ceil(sparsity * rows)
    assert (w == 0).sum(dim=0).tolist() == [zeros] * cols
    if sparsity < 1:
        assert_std(w[w != 0], 0.01, msg=f"sparsity={sparsity}")  # the default std, 0.01


@pytest.mark.parametrize("shape", [(3, 4, 5), (5,)])
def test_sparse_only_on_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"sparse_ fills 2-D tensors only; got shape={re_shape(shape)}"):
        init.sparse_(torch.empty(shape), 0.1)


@pytest.mark.parametrize("sparsity", [-0.5, 1.5, math.nan])
def test_sparse_refuses_a_sparsity_outside_0_1(sparsity: float) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be a fraction in \[0, 1\]"):
        init.sparse_(torch.empty(4, 4), sparsity)


def test_meta_tensors_draw_nothing() -> None:
    for name, kwargs in CALLS:
        t = torch.empty((6, 4, 3) if name == "dirac_" else (6, 4), device="meta")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _call(getattr(init, name), name, t, kwargs, None) is t
