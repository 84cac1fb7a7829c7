"""Gains: torch's calculate_gain value for value; exact_gain against closed forms and REFERENCE.md section 4."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from torchinit import InitError, calculate_gain, exact_gain
from torchinit._maths.gains import second_moment
from torchinit.extend import ACTIVATIONS

TORCH_NAMES = [
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "sigmoid", "tanh", "relu", "leaky_relu", "selu",
]  # fmt: skip


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_calculate_gain_is_torchs(name: str) -> None:
    assert calculate_gain(name) == nn.init.calculate_gain(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("param", [0, 0.2, 1, 3.5])
def test_calculate_gain_leaky_param(param: float) -> None:
    assert calculate_gain("leaky_relu", param) == nn.init.calculate_gain("leaky_relu", param)


def test_calculate_gain_signature_matches_torch() -> None:
    ours = inspect.signature(calculate_gain).parameters
    theirs = inspect.signature(nn.init.calculate_gain).parameters
    assert [(p.name, p.default, p.kind) for p in ours.values()] == [
        (p.name, p.default, p.kind) for p in theirs.values()
    ]


def test_calculate_gain_errors() -> None:
    with pytest.raises(InitError, match="nonlinearity must be one of .* got nonlinearity='rleu'. Did you mean 'relu'"):
        calculate_gain("rleu")
    with pytest.raises(InitError, match="leaky_relu's negative slope must be a number; got param=True"):
        calculate_gain("leaky_relu", True)
    with pytest.raises(ValueError):  # still a ValueError, as torch raises
        calculate_gain("gelu")


def test_relu_exact_to_1e12() -> None:
    assert abs(exact_gain("relu") - math.sqrt(2)) < 1e-12
    assert abs(exact_gain(nn.ReLU()) - math.sqrt(2)) < 1e-12
    assert abs(exact_gain(torch.relu) - math.sqrt(2)) < 1e-12
    assert abs(exact_gain("linear") - 1.0) < 1e-12


@given(st.floats(0.0, 5.0))
def test_leaky_relu_closed_form(slope: float) -> None:
    expected = math.sqrt(2 / (1 + slope**2))
    assert abs(exact_gain("leaky_relu", slope) - expected) < 1e-12
    assert abs(exact_gain(nn.LeakyReLU(slope)) - expected) < 1e-12


# REFERENCE.md section 4, to 1e-4.
TABLE = [
    ("relu", None, 1.4142),
    ("leaky_relu", 0.01, 1.4141),
    ("leaky_relu", 0.2, 1.3868),
    ("tanh", None, 1.5925),
    ("sigmoid", None, 1.8462),
    ("gelu", None, 1.5335),
    ("gelu_tanh", None, 1.5336),
    ("silu", None, 1.6765),
    ("mish", None, 1.4868),
    ("elu", None, 1.2452),
    ("selu", None, 1.0000),
    ("softplus", None, 1.0419),
]


@pytest.mark.parametrize(("name", "param", "value"), TABLE)
def test_reference_table(name: str, param: float | None, value: float) -> None:
    assert abs(exact_gain(name, param) - value) < 1e-4


@pytest.mark.parametrize(
    ("module", "name"),
    [(nn.GELU(approximate="tanh"), "gelu_tanh"), (nn.GELU(), "gelu"), (nn.SiLU(), "silu"), (nn.ELU(), "elu"),
     (nn.SELU(), "selu"), (nn.Tanh(), "tanh"), (nn.Mish(), "mish"), (nn.Softplus(), "softplus")],
)  # fmt: skip
def test_modules_match_names(module: nn.Module, name: str) -> None:
    assert exact_gain(module) == pytest.approx(exact_gain(name), rel=1e-14)


def test_selu_is_self_normalizing() -> None:
    # SELU's constants make E[selu(z)^2] = 1 exactly; the kink in f'' at 0 is what the
    # Richardson step of second_moment is for.
    assert abs(exact_gain("selu") - 1.0) < 1e-8


def test_quadrature_against_closed_forms() -> None:
    # E[z^4] = 3, E[exp(z/2)^2] = e^(1/2), E[cos(z)^2] = (1 + e^-2)/2, E[relu(z)^2] = 1/2.
    assert second_moment(lambda z: z**2) == pytest.approx(3.0, rel=1e-12)
    assert second_moment(lambda z: torch.exp(z / 2)) == pytest.approx(math.exp(0.5), rel=1e-12)
    assert second_moment(torch.cos) == pytest.approx((1 + math.exp(-2)) / 2, rel=1e-12)
    assert second_moment(F.relu) == pytest.approx(0.5, rel=1e-14)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_named_activation_has_a_gain(name: str) -> None:
    assert 0.5 < exact_gain(name) < 4.0


def test_exact_gain_errors() -> None:
    with pytest.raises(InitError, match="activation must be one of .* got activation='glu'. Did you mean 'gelu'"):
        exact_gain("glu")
    with pytest.raises(InitError, match="activation 'relu' takes no parameter; got param=0.1"):
        exact_gain("relu", 0.1)
    with pytest.raises(InitError, match="param must be a number; got param='a'"):
        exact_gain("leaky_relu", "a")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="param is only for named activations; got param=0.2"):
        exact_gain(nn.LeakyReLU(), 0.2)
    with pytest.raises(InitError, match="activation must be a name, an nn.Module or a callable; got activation=3"):
        exact_gain(3)  # type: ignore[arg-type]
    with pytest.raises(
        InitError,
        match=r"elementwise to a tensor of the same shape \(an activation name, .*\); got Tensor of shape \(\)",
    ):
        exact_gain(torch.sum)
    with pytest.raises(InitError, match=r"elementwise to a tensor of the same shape \(.*\); got float"):
        exact_gain(lambda z: 1.0)  # type: ignore[arg-type, return-value]
    with pytest.raises(InitError, match=r"has E\[f\(z\)\^2\]=0.0 .* positive finite second moment"):
        exact_gain(torch.zeros_like)
