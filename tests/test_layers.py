"""One registration describes a layer type: fans, roles, legacy draws and construction-time behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import torchinit
from torchinit import Fans, InitError
from torchinit.extend import Action, LegacyDraws, Role, register_layer
from torchinit.testing import assert_std


class GatedLinear(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(d_in, 2 * d_out))
        self.scale = nn.Parameter(torch.empty(d_out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.w.shape[0])
        nn.init.uniform_(self.w, -bound, bound)
        nn.init.ones_(self.scale)


def _legacy(draws: LegacyDraws, m: nn.Module, prefix: str) -> None:
    bound = 1 / math.sqrt(m.w.shape[0])  # type: ignore[union-attr, index]
    draws.draw(m, prefix, "w", Action("uniform", bound))
    draws.draw(m, prefix, "scale", Action("constant", 1.0))


@pytest.fixture
def registered() -> None:
    register_layer(
        GatedLinear,
        fans=lambda m, name: Fans(m.w.shape[0], m.w.shape[1] // 2) if name == "w" else None,  # type: ignore[union-attr, index]
        roles=lambda m, name: Role("norm_weight") if name == "scale" else None,
        legacy=_legacy,
        reset="reset_parameters",
    )


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 64), GatedLinear(64, 32), nn.Linear(32, 4))


def test_one_registration_gives_fans_roles_legacy_and_construction(registered: None, gen: torch.Generator) -> None:
    model = _net()
    assert torchinit.fans_of(model, "1.w") == Fans(64, 32)
    report = torchinit.reinit(model, "kaiming_relu", generator=gen)
    assert report["1.w"].role == "dense" and report["1.w"].std == math.sqrt(2 / 64)
    assert report["1.scale"].role == "norm_weight" and torch.equal(model[1].scale, torch.ones(32))
    assert not report.skipped

    # legacy: bit-exact against construction from the same seed, RNG state included
    torch.manual_seed(5)
    reference = _net()
    after_reference = torch.get_rng_state()
    torch.manual_seed(5)
    torchinit.reinit(model, "legacy")
    assert torch.equal(torch.get_rng_state(), after_reference)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    # construction time: the registered reset is replaced by the scheme; build never draws twice
    with torchinit.default_scheme("kaiming_relu", generator=torch.Generator().manual_seed(1)):
        layer = GatedLinear(256, 128)
    assert_std(layer.w.detach(), math.sqrt(2 / 256))  # the scheme's std, with the true fan_in 256
    with pytest.raises(AssertionError):  # and not the author's U(+-1/sqrt(d_in)), std 1/sqrt(3 d_in)
        assert_std(layer.w.detach(), 1 / math.sqrt(3 * 256), kurtosis="uniform")
    state = torch.get_rng_state()
    built, report = torchinit.build(lambda: GatedLinear(64, 32), "kaiming_relu", seed=0)
    assert torch.equal(torch.get_rng_state(), state) and not report.skipped
    assert torch.equal(built.scale, torch.ones(32)) and report["w"].std == math.sqrt(2 / 64)


def test_without_a_description_the_custom_parameters_are_uncovered() -> None:
    with pytest.warns(
        torchinit.UncoveredParameterWarning,
        match=r"GatedLinear\.w x 1: 1\.w \(64, 64\)\n  GatedLinear\.scale x 1: 1\.scale \(32,\)",
    ):
        report = torchinit.reinit(_net(), "kaiming_relu")
    assert [e.path for e in report.skipped] == ["1.w", "1.scale"]


def test_fixtures_restore_the_registry() -> None:
    # runs after the registering test in file order: the description is gone again
    assert torchinit.extend.LayerRule is not None
    from torchinit._layers import rules as _layers

    assert GatedLinear not in _layers.registered()


def test_register_layer_validation() -> None:
    with pytest.raises(InitError, match="module_type must be an nn.Module subclass; got module_type=<class 'int'>"):
        register_layer(int)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="fans must be callable as fans\\(module, name\\); got fans=3"):
        register_layer(GatedLinear, fans=3)  # type: ignore[arg-type]
    with pytest.raises(InitError, match="reset must be an attribute name; got reset='not a name'"):
        register_layer(GatedLinear, reset="not a name")


def test_a_subclass_part_falls_through_to_its_base() -> None:
    class Wide(nn.Linear):
        pass

    torchinit.extend.register_role_rule(Wide, lambda m, name: None)  # answers nothing: the Linear rules answer
    layer = Wide(16, 8)
    assert torchinit.fans_of(layer, "weight") == Fans(16, 8)
    report = torchinit.reinit(layer, "kaiming_relu")
    assert report["bias"].role == "bias" and report["weight"].role == "dense"
