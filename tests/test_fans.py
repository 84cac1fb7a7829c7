"""Fans: exact values from REFERENCE.md section 3, closed forms against brute-force connection counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from torch import nn

import torchinit
from torchinit import Fans, InitError, fans_of, register_fan_rule, torch_fans
from torchinit._maths.fans import resolve_fan
from torchinit.testing import strategies as tst

# (module, parameter, torch's (fan_in, fan_out), true Fans) -- REFERENCE.md section 3.
TABLE = [
    (lambda: nn.Conv2d(64, 128, 3), "weight", (576, 1152), Fans(576, 1152)),
    (lambda: nn.Conv2d(64, 128, 3, stride=2), "weight", (576, 1152), Fans(576, 288)),
    (lambda: nn.Conv2d(64, 128, 3, groups=4), "weight", (144, 1152), Fans(144, 288)),
    (lambda: nn.Conv2d(64, 64, 3, groups=64), "weight", (9, 576), Fans(9, 9)),
    (lambda: nn.Conv2d(64, 64, 3, stride=2, groups=64), "weight", (9, 576), Fans(9, 2.25)),
    (lambda: nn.ConvTranspose2d(64, 32, 3), "weight", (288, 576), Fans(576, 288)),
    (lambda: nn.ConvTranspose2d(64, 32, 4, stride=2), "weight", (512, 1024), Fans(256, 512)),
    (lambda: nn.ConvTranspose2d(64, 32, 4, stride=2, groups=4), "weight", (128, 1024), Fans(64, 128)),
    (lambda: nn.MultiheadAttention(512, 8), "in_proj_weight", (512, 1536), Fans(512, 512, chunks=3)),
    (lambda: nn.LSTM(128, 256), "weight_ih_l0", (128, 1024), Fans(128, 256, chunks=4)),
    (lambda: nn.LSTM(128, 256, proj_size=64), "weight_hh_l0", (64, 1024), Fans(64, 256, chunks=4)),
    (lambda: nn.Bilinear(20, 30, 40), "weight", (600, 1200), Fans(600, 40)),
    (lambda: nn.Embedding(10000, 300), "weight", (300, 10000), Fans(10000, 300)),
    (lambda: nn.Linear(20, 30), "weight", (20, 30), Fans(20, 30)),
    (lambda: nn.Conv1d(8, 16, 5, dilation=3), "weight", (40, 80), Fans(40, 80)),
    (lambda: nn.EmbeddingBag(50, 7), "weight", (7, 50), Fans(50, 7)),
    (lambda: nn.MultiheadAttention(16, 4, kdim=5, vdim=7), "k_proj_weight", (5, 16), Fans(5, 16)),
    (lambda: nn.MultiheadAttention(16, 4, kdim=5, vdim=7), "v_proj_weight", (7, 16), Fans(7, 16)),
    (lambda: nn.MultiheadAttention(16, 4, kdim=5, vdim=7), "q_proj_weight", (16, 16), Fans(16, 16)),
    (lambda: nn.LSTM(10, 20, num_layers=2, bidirectional=True, proj_size=5), "weight_ih_l1_reverse", (10, 80),
     Fans(10, 20, chunks=4)),
    (lambda: nn.LSTM(10, 20, proj_size=5), "weight_hr_l0", (20, 5), Fans(20, 5)),
    (lambda: nn.GRU(10, 20), "weight_hh_l0", (20, 60), Fans(20, 20, chunks=3)),
    (lambda: nn.GRUCell(10, 20), "weight_ih", (10, 60), Fans(10, 20, chunks=3)),
    (lambda: nn.RNN(10, 20, num_layers=2, bidirectional=True), "weight_ih_l1", (40, 20), Fans(40, 20)),
]  # fmt: skip


@pytest.mark.parametrize(("build", "name", "torch_pair", "true"), TABLE)
def test_reference_table(build, name, torch_pair, true) -> None:
    module = build()
    assert fans_of(module, name) == true
    param = getattr(module, name)
    assert (torch_fans(param).fan_in, torch_fans(param).fan_out) == torch_pair
    assert nn.init._calculate_fan_in_and_fan_out(param) == torch_pair


def test_dotted_paths_and_packed_shapes() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Conv2d(4, 8, 3, stride=2)))
    assert fans_of(model, "1.0.weight") == Fans(36, 18)
    assert fans_of(model, "0.weight") == Fans(3, 4)


# --- brute-force counting -------------------------------------------------------------------------


def _window(margin: int, stride: int, periods: int = 2) -> slice:
    return slice(margin, margin + stride * periods)


def _conv_counts(module: nn.Module) -> Fans:
    """Count connections with all-ones weights: forward for fan_in, autograd for fan_out."""
    m: nn.modules.conv._ConvNd = module  # type: ignore[assignment]
    with torch.no_grad():
        m.weight.fill_(1.0)
    k, s, d = m.kernel_size, m.stride, m.dilation
    reach = [dd * (kk - 1) for kk, dd in zip(k, d, strict=True)]
    if m.transposed:
        length = [r + ss * 2 + 2 for r, ss in zip(reach, s, strict=True)]
    else:
        length = [2 * (r + 1) + ss * 3 for r, ss in zip(reach, s, strict=True)]
    x = torch.ones(1, m.in_channels, *length, dtype=torch.float64, requires_grad=True)
    y = m._conv_forward(x, m.weight, None) if not m.transposed else _transposed(m, x)
    y.sum().backward()
    assert x.grad is not None
    if m.transposed:
        # Outputs: every interior position o in [reach, reach + 2s) is fed from all its taps.
        out_window = (slice(None), slice(None), *[_window(r, ss) for r, ss in zip(reach, s, strict=True)])
        fan_in = float(y.detach()[out_window].mean())
        fan_out = float(x.grad.mean())  # every input scatters to all its taps
    else:
        fan_in = float(y.detach().mean())  # valid conv: every output sees its whole window
        in_window = (slice(None), slice(None), *[_window(r + 1, ss) for r, ss in zip(reach, s, strict=True)])
        fan_out = float(x.grad[in_window].mean())
    return Fans(fan_in, fan_out)


def _transposed(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[len(m.kernel_size)]
    return fn(x, m.weight, None, m.stride, 0, 0, m.groups, m.dilation)


def _close(a: Fans, b: Fans) -> bool:
    return math.isclose(a.fan_in, b.fan_in, rel_tol=1e-12) and math.isclose(a.fan_out, b.fan_out, rel_tol=1e-12)


@given(tst.conv_layers())
def test_conv_fans_match_connection_counts(spec: tst.LayerSpec) -> None:
    module = spec.build(dtype=torch.float64)
    counted = _conv_counts(module)
    closed = fans_of(module, "weight")
    assert _close(counted, closed), (spec, counted, closed)


@given(tst.linear_layers())
def test_linear_fans_match_counts(spec: tst.LayerSpec) -> None:
    m = spec.build(dtype=torch.float64)
    w = torch.ones_like(m.weight)
    x = torch.ones(m.in_features, dtype=torch.float64, requires_grad=True)
    y = F.linear(x, w)
    y.sum().backward()
    assert x.grad is not None
    assert fans_of(m, "weight") == Fans(float(y[0].detach()), float(x.grad[0]))


@given(tst.bilinear_layers())
def test_bilinear_is_linear_in_the_outer_product(spec: tst.LayerSpec) -> None:
    m = spec.build(dtype=torch.float64)
    x1 = torch.randn(3, m.in1_features, dtype=torch.float64)
    x2 = torch.randn(3, m.in2_features, dtype=torch.float64)
    outer = torch.einsum("bi,bj->bij", x1, x2).reshape(3, -1)
    flat = m.weight.reshape(m.out_features, -1)
    torch.testing.assert_close(m(x1, x2), outer @ flat.T + m.bias, rtol=1e-12, atol=1e-12)
    z = torch.ones(flat.shape[1], dtype=torch.float64, requires_grad=True)
    y = F.linear(z, torch.ones_like(flat))
    y.sum().backward()
    assert z.grad is not None
    assert fans_of(m, "weight") == Fans(float(y[0].detach()), float(z.grad[0]))


def test_embedding_is_one_hot_matmul() -> None:
    m = nn.Embedding(11, 5).double()
    idx = torch.tensor([0, 3, 10])
    torch.testing.assert_close(m(idx), F.one_hot(idx, 11).double() @ m.weight)
    x = torch.ones(11, dtype=torch.float64, requires_grad=True)
    y = x @ torch.ones_like(m.weight)
    y.sum().backward()
    assert x.grad is not None
    assert fans_of(m, "weight") == Fans(float(y[0].detach()), float(x.grad[0]))


@given(tst.attention_layers())
def test_attention_projection_blocks(spec: tst.LayerSpec) -> None:
    m = spec.build()
    e = m.embed_dim
    if m._qkv_same_embed_dim:
        fans = fans_of(m, "in_proj_weight")
        assert m.in_proj_weight.shape == (fans.chunks * fans.fan_out, fans.fan_in) == (3 * e, e)
    else:
        for name, width in (("q_proj_weight", e), ("k_proj_weight", m.kdim), ("v_proj_weight", m.vdim)):
            fans = fans_of(m, name)
            assert getattr(m, name).shape == (fans.fan_out, fans.fan_in) == (e, width)
    assert fans_of(m, "out_proj.weight") == Fans(e, e)


@given(tst.recurrent_layers())
def test_recurrent_gate_blocks(spec: tst.LayerSpec) -> None:
    m = spec.build()
    gates = {"RNN": 1, "RNNCell": 1, "LSTM": 4, "LSTMCell": 4, "GRU": 3, "GRUCell": 3}[type(m).__name__]
    h = m.hidden_size
    proj = getattr(m, "proj_size", 0)
    dirs = 2 if getattr(m, "bidirectional", False) else 1
    for name, param in m.named_parameters():
        if name.startswith("bias"):
            with pytest.raises(InitError, match="no fan rule covers"):
                fans_of(m, name)
            continue
        fans = fans_of(m, name)
        if name.startswith("weight_hr"):
            assert fans == Fans(h, proj)
            continue
        layer = int(name.split("_l")[1][0]) if "_l" in name else 0
        if name.startswith("weight_ih"):
            expected_in = m.input_size if layer == 0 else (proj or h) * dirs
        else:
            expected_in = proj or h
        assert fans == Fans(expected_in, h, chunks=gates)
        assert param.shape == (gates * h, expected_in)


# --- errors and custom rules ----------------------------------------------------------------------


def test_fans_validation() -> None:
    with pytest.raises(InitError, match="fan_in must be a positive finite number; got fan_in=0"):
        Fans(0, 3)
    with pytest.raises(InitError, match="fan_out must be a positive finite number; got fan_out=nan"):
        Fans(3, math.nan)
    with pytest.raises(InitError, match="fan_in must be a positive finite number; got fan_in=True"):
        Fans(True, 3)
    with pytest.raises(InitError, match="chunks must be a positive integer; got chunks=0"):
        Fans(3, 3, chunks=0)
    with pytest.raises(InitError, match="mode must be one of .* got mode='fan_inn'. Did you mean 'fan_in'"):
        Fans(3, 3).fan("fan_inn")  # type: ignore[arg-type]
    assert Fans(3, 5).fan("fan_avg") == 4.0
    assert repr(Fans(3.0, 2.5, chunks=2)) == "Fans(fan_in=3, fan_out=2.5, chunks=2)"


def test_torch_fans_errors() -> None:
    with pytest.raises(InitError, match=r"at least 2 dimensions; got shape=\(5,\). Pass fans="):
        torch_fans(torch.empty(5))
    with pytest.raises(InitError, match=r"zero-element tensor .* shape=\(0, 3\)"):
        torch_fans(torch.empty(0, 3))


def test_fans_of_errors() -> None:
    with pytest.raises(InitError, match="Linear has no parameter 'wieght'"):
        fans_of(nn.Linear(2, 3), "wieght")
    with pytest.raises(InitError, match="Sequential has no parameter '5.weight'"):
        fans_of(nn.Sequential(nn.Linear(2, 3)), "5.weight")
    with pytest.raises(InitError, match="uninitialized lazy parameter; run a forward pass first"):
        fans_of(nn.LazyLinear(3), "weight")
    with pytest.raises(InitError, match=r"no fan rule covers parameter 'bias' of Linear \(shape \(3,\)\)"):
        fans_of(nn.Linear(2, 3), "bias")


def test_lazy_after_forward() -> None:
    m = nn.LazyConv2d(8, 3, stride=2)
    m(torch.zeros(1, 4, 9, 9))
    assert fans_of(m, "weight") == Fans(36, 18)


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(8, 32))
        self.scale = nn.Parameter(torch.ones(8))


class PackedChild(Packed):
    pass


def test_register_fan_rule_with_fall_through() -> None:
    register_fan_rule(Packed, lambda m, name: Fans(8, 16, chunks=2) if name == "w" else None)
    register_fan_rule(PackedChild, lambda m, name: None)  # covers nothing: falls through
    assert fans_of(PackedChild(), "w") == Fans(8, 16, chunks=2)
    with pytest.raises(InitError, match="no fan rule covers parameter 'scale' of Packed"):
        fans_of(Packed(), "scale")
    with pytest.raises(InitError, match="module_type must be an nn.Module subclass; got module_type=<class 'int'>"):
        register_fan_rule(int, lambda m, n: None)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="rule must be callable as rule"):
        register_fan_rule(Packed, 3)  # type: ignore[arg-type]


def test_resolve_fan() -> None:
    t = torch.empty(6, 4, 3)
    assert resolve_fan(t, "fan_in", None, None, None) == 12
    assert resolve_fan(t, "fan_out", None, 100, None) == 18  # shape supplies what is missing
    assert resolve_fan(t, "fan_avg", (10, 30), None, None) == 20
    assert resolve_fan(torch.empty(5), "fan_in", None, 7, None) == 7  # 1-d is fine with the fan it needs
    with pytest.raises(InitError, match="pass either fans= or fan_in=/fan_out=, not both"):
        resolve_fan(t, "fan_in", Fans(1, 2), 3, None)
    with pytest.raises(InitError, match=r"fans must be a Fans or a \(fan_in, fan_out\) tuple; got fans=\[1, 2\]"):
        resolve_fan(t, "fan_in", [1, 2], None, None)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="fan_out must be a positive finite number; got fan_out=-1"):
        resolve_fan(t, "fan_in", None, None, -1)
    with pytest.raises(InitError, match=r"at least 2 dimensions; got shape=\(5,\)"):
        resolve_fan(torch.empty(5), "fan_avg", None, 7, None)
    with pytest.raises(InitError, match="mode must be one of"):
        resolve_fan(t, "fan", None, None, None)  # type: ignore[arg-type]
    assert torchinit.fans_of is fans_of
