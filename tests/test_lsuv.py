"""LSUV: every layer's output std on the batch ends within tolerance; modes, no_grad and errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchinit
from torchinit import InitError, LSUVScheme, reinit

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "none": nn.Identity}


def layer_output_stds(model: nn.Module, data: torch.Tensor) -> dict[str, float]:
    stds: dict[str, float] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: Any, out: torch.Tensor) -> None:
            stds[name] = float(out.std())  # returns None: the output itself is left alone

        return record

    hooks = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(data)
    for h in hooks:
        h.remove()
    return stds


@settings(max_examples=12)
@given(
    depth=st.integers(1, 8), width=st.integers(8, 48), activation=st.sampled_from(list(ACTIVATIONS)),
    conv=st.booleans(), center=st.booleans(), tol=st.sampled_from([0.02, 0.1]), seed=st.integers(0, 2**31),
)  # fmt: skip
def test_every_layer_ends_within_tolerance(
    depth: int, width: int, activation: str, conv: bool, center: bool, tol: float, seed: int
) -> None:
    torch.manual_seed(seed)
    act = ACTIVATIONS[activation]
    if conv:
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), act()]
        layers += [m for _ in range(depth) for m in (nn.Conv2d(width, width, 3, padding=1), act())]
        model, data = nn.Sequential(*layers), torch.randn(8, 3, 12, 12) * 3 + 1
    else:
        layers = [nn.Linear(20, width), act()] + [m for _ in range(depth) for m in (nn.Linear(width, width), act())]
        model, data = nn.Sequential(*layers), torch.randn(256, 20) * 3 + 1
    report = reinit(model, LSUVScheme(tol=tol, center=center, max_iter=20), data=data)
    stds = layer_output_stds(model, data)
    assert len(report.lsuv) == len(stds) == depth + 1
    for name, std in stds.items():
        assert abs(std - 1.0) <= tol, (name, std, report.lsuv)
    assert all(layer.converged for layer in report.lsuv)


def test_modes_restored_and_no_grad_safe() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.5), nn.BatchNorm1d(10), nn.Linear(10, 10))
    model[2].eval()  # a mixed-mode model: each module's flag must come back as it was
    modes = [m.training for m in model.modules()]
    with torch.no_grad():
        report = reinit(model, "lsuv", data=torch.randn(64, 10))
    assert [m.training for m in model.modules()] == modes
    assert [layer.path for layer in report.lsuv] == ["0", "3"]
    assert "lsuv 3: output std" in str(report)


def test_tuple_and_dict_batches() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, scale: float = 1.0) -> Any:
            return self.b(torch.relu(self.a(x * scale)))

    for data in ((torch.randn(32, 4), 2.0), {"x": torch.randn(32, 4), "scale": 2.0}):
        report = reinit(Two(), "lsuv", data=data)
        assert [layer.path for layer in report.lsuv] == ["a", "b"]


def test_lsuv_errors() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    before = model[0].weight.clone()
    with pytest.raises(
        InitError, match=r"lsuv needs a batch to measure activations on: reinit\(model, 'lsuv', data=batch\)"
    ):
        reinit(model, "lsuv")
    with pytest.raises(InitError, match="data= is only used by the lsuv scheme; got scheme='kaiming_relu'"):
        reinit(model, "kaiming_relu", data=torch.randn(2, 3))
    with pytest.raises(InitError, match="runs only through reinit"):
        torchinit.build(lambda: nn.Linear(3, 3), "lsuv")
    assert torch.equal(model[0].weight, before)
    with pytest.raises(InitError, match="tol must be a number in"):
        LSUVScheme(tol=0)
    with pytest.raises(InitError, match="max_iter must be a positive integer; got max_iter=0"):
        LSUVScheme(max_iter=0)
    with pytest.raises(InitError, match="base must be a Scheme; got base='orthogonal'"):
        LSUVScheme(base="orthogonal")  # type: ignore[arg-type]
    assert "lsuv" in torchinit.list_schemes()


def test_lsuv_warns_about_uncovered_parameters_like_every_scheme() -> None:
    class WithScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.scale = nn.Parameter(torch.full((8,), 2.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * self.scale

    model = WithScale()
    with pytest.warns(torchinit.UncoveredParameterWarning, match=r"scale \(8,\)"):
        report = reinit(model, "lsuv", data=torch.randn(64, 8))
    assert [e.path for e in report.skipped] == ["scale"]
    assert torch.equal(model.scale, torch.full((8,), 2.0))
