"""Schemes and their registry, overrides and roles: values, validation and every error."""

from __future__ import annotations

import math

import pytest
from torch import nn

import torchinit
from torchinit import InitError, LegacyScheme, Override, Role, Scheme, get_scheme, list_schemes, register_scheme

BUILT_IN = {
    "kaiming_relu": Scheme(scale=2.0),
    "kaiming_relu_uniform": Scheme(scale=2.0, distribution="uniform"),
    "kaiming_relu_fan_out": Scheme(scale=2.0, mode="fan_out"),
    "lecun_normal": Scheme(scale=1.0),
    "lecun_uniform": Scheme(scale=1.0, distribution="uniform"),
    "xavier_uniform": Scheme(scale=1.0, mode="fan_avg", distribution="uniform"),
    "xavier_normal": Scheme(scale=1.0, mode="fan_avg"),
    "orthogonal": Scheme(scale=1.0, distribution="orthogonal"),
    "legacy": LegacyScheme(),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_schemes(name: str) -> None:
    assert name in list_schemes()
    assert get_scheme(name) == BUILT_IN[name]


@pytest.mark.parametrize("name", list_schemes())
def test_repr_pastes_back(name: str) -> None:
    scheme = get_scheme(name)
    names = {"Scheme": Scheme, "LegacyScheme": LegacyScheme, "Override": Override, "LSUVScheme": torchinit.LSUVScheme,
             "recipes": torchinit.recipes}  # fmt: skip
    assert eval(repr(scheme), names) == scheme


def test_parameterized_forms_use_exact_gains() -> None:
    assert Scheme.kaiming("relu").scale == 2.0
    assert Scheme.kaiming("leaky_relu", 0.2).scale == pytest.approx(2 / 1.04, rel=1e-15)
    assert Scheme.kaiming("leaky_relu").scale == pytest.approx(2 / (1 + 0.01**2), rel=1e-15)
    assert Scheme.kaiming("linear").scale == 1.0
    assert Scheme.kaiming("gelu").scale == pytest.approx(torchinit.exact_gain("gelu") ** 2, rel=1e-15)
    assert Scheme.kaiming(nn.SiLU()).scale == pytest.approx(1.6765**2, rel=1e-4)
    assert Scheme.kaiming("tanh", mode="fan_out", distribution="uniform") == Scheme(
        scale=torchinit.exact_gain("tanh") ** 2, mode="fan_out", distribution="uniform"
    )
    assert Scheme.xavier("normal", gain=2.0) == Scheme(scale=4.0, mode="fan_avg")
    assert Scheme.lecun("truncated_normal").distribution == "truncated_normal"
    assert Scheme.orthogonal(math.sqrt(2)).gain == pytest.approx(math.sqrt(2))
    assert get_scheme("kaiming_gelu") == Scheme.kaiming("gelu")


def test_roles_get_what_the_scheme_says() -> None:
    s = Scheme(bias=0.1, forget_bias=1.0)
    fans = torchinit.Fans(100, 50, chunks=4)
    assert s.action(Role("dense", fans)).param == pytest.approx(math.sqrt(2 / 100))
    assert s.action(Role("recurrent", fans)).kind == "orthogonal"
    assert Scheme(recurrent="dense").action(Role("recurrent", fans)).kind == "normal"
    assert s.action(Role("bias")).param == 0.1
    assert s.action(Role("bias", chunks=4, forget_chunk=1, input_side=True)).chunk_values == (0.1, 1.0, 0.1, 0.1)
    assert s.action(Role("bias", chunks=4, forget_chunk=1, input_side=False)).chunk_values is None
    assert s.action(Role("norm_weight")).param == 1.0 and s.action(Role("norm_bias")).param == 0.0
    assert s.action(Role("embedding", padding_idx=3)).zero_row == 3
    assert s.action(Role("prelu", value=0.1)).param == 0.1
    assert s.action(Role("attention_kv", width=64)).param == pytest.approx(1 / 8)


def test_registry() -> None:
    mine = Scheme.kaiming("leaky_relu", 0.1, mode="fan_out")
    register_scheme("my_leaky", mine)
    assert get_scheme("my_leaky") is mine
    with pytest.raises(InitError, match="scheme 'my_leaky' is already registered; pass overwrite=True"):
        register_scheme("my_leaky", mine)
    register_scheme("my_leaky", Scheme(), overwrite=True)
    assert get_scheme("my_leaky") == Scheme()
    with pytest.raises(InitError, match="name must be an identifier-like string; got name='my scheme'"):
        register_scheme("my scheme", mine)
    with pytest.raises(InitError, match="scheme must be a Scheme; got scheme='kaiming_relu'"):
        register_scheme("alias", "kaiming_relu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"got scheme='xavier'. Did you mean 'xavier_normal'\?.*Registered: "):
        get_scheme("xavier")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": -1.0}, "scale must be a finite number >= 0; got scale=-1.0"),
        ({"scale": math.inf}, "scale must be a finite number >= 0; got scale=inf"),
        ({"mode": "fan"}, "mode must be one of 'fan_in', 'fan_out', 'fan_avg', 'fan_geo_avg'; got mode='fan'"),
        ({"distribution": "gaussian"}, "distribution must be one of .* got distribution='gaussian'"),
        ({"recurrent": "identity"}, "recurrent must be one of 'orthogonal', 'dense'; got recurrent='identity'"),
        ({"bias": "0"}, "bias must be a finite number; got bias='0'"),
        ({"forget_bias": math.nan}, "forget_bias must be a finite number; got forget_bias=nan"),
        ({"overrides": ("*.weight",)}, r"overrides must be a sequence of Override; got overrides=\('\*.weight',\)"),
    ],
)
def test_scheme_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InitError, match=match):
        Scheme(**kwargs)  # type: ignore[arg-type]


def test_factory_validation() -> None:
    with pytest.raises(InitError, match="gain must be a finite number >= 0; got gain=-1"):
        Scheme.xavier(gain=-1)
    with pytest.raises(InitError, match="gain must be a finite number >= 0; got gain=nan"):
        Scheme.orthogonal(gain=math.nan)
    with pytest.raises(InitError, match="param must be a finite number; got param=inf"):
        Scheme.kaiming("leaky_relu", math.inf)
    with pytest.raises(InitError, match="activation must be one of"):
        Scheme.kaiming("relu6x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "an Override needs exactly one action among skip=True, keep=True, constant=, std=, scheme= and rule="),
        ({"skip": True, "std": 0.1}, "needs exactly one action"),
        ({"path": 3, "skip": True}, "path must be a glob string; got path=3"),
        (
            {"module": int, "skip": True},
            "module must be an nn.Module type or a tuple of them; got module=<class 'int'>",
        ),
        ({"role": "weight", "skip": True}, "role must be one of .* got role='weight'"),
        ({"constant": math.inf}, "constant must be a finite number; got constant=inf"),
        ({"std": -0.1}, "std must be a finite number >= 0; got std=-0.1"),
        ({"std": 0.1, "distribution": "laplace"}, "distribution must be one of .* got distribution='laplace'"),
        ({"scheme": "kaiming"}, "scheme must be a registered name; got scheme='kaiming'"),
        ({"scheme": 3}, "scheme must be a Scheme or a registered name; got scheme=3"),
    ],
)
def test_override_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InitError, match=match):
        Override(**kwargs)  # type: ignore[arg-type]


def test_override_repr_and_selection() -> None:
    o = Override(path="*.c_proj.weight", module=(nn.Linear,), role="dense", frozen=False, std=0.02)
    assert repr(o) == "Override(path='*.c_proj.weight', module=(nn.Linear,), role='dense', frozen=False, std=0.02)"
    lin = nn.Linear(2, 2)
    dense = Role("dense", torchinit.Fans(2, 2))
    assert o.selects("h.0.c_proj.weight", lin, dense, False)
    assert not o.selects("h.0.c_fc.weight", lin, dense, False)
    assert not o.selects("h.0.c_proj.weight", nn.Conv1d(2, 2, 1), dense, False)
    assert not o.selects("h.0.c_proj.weight", lin, Role("bias"), False)
    assert not o.selects("h.0.c_proj.weight", lin, dense, True)
    assert repr(Override(module=nn.Embedding, skip=True)) == "Override(module=nn.Embedding, skip=True)"


def test_role_validation_and_rule_registration() -> None:
    with pytest.raises(InitError, match="kind must be one of .* got kind='weight'"):
        Role("weight")  # type: ignore[arg-type]
    with pytest.raises(InitError, match="a dense role needs fans=Fans"):
        Role("dense")
    with pytest.raises(InitError, match="module_type must be an nn.Module subclass; got module_type=3"):
        torchinit.register_role_rule(3, lambda m, n: None)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="rule must be callable as rule"):
        torchinit.register_role_rule(nn.Linear, "dense")  # type: ignore[arg-type]


def test_legacy_repr() -> None:
    assert repr(get_scheme("legacy")) == "LegacyScheme()"
    assert Scheme().with_overrides(Override(skip=True)).overrides == (Override(skip=True),)
