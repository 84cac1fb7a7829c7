"""torchinit.testing.coord_check: what it records, its slope, its table and plot, its errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from torchinit import InitError
from torchinit.testing import CoordCheck, coord_check


def _linear(width: int, lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(2, width, bias=False), nn.Linear(width, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(1.0 / width)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def test_the_change_is_measured_exactly_on_a_model_solved_by_hand() -> None:
    # x = ((1, 0), (0, 2)), W1 = 1, W2 = 1/w, loss = sum(y). One SGD step at lr: W2 -= 3 lr, W1 -= lr (1, 2) / w, so
    # the hidden rows move by -lr/w and -4 lr/w (std 1.5 lr/w: slope -1) and y_b becomes (1 - 3 lr w) h_b'.
    lr, widths = 0.01, (4, 16, 64)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    check = coord_check(lambda w: _linear(w, lr), widths, x, lambda out: out.sum(), steps=1)
    assert check.layers == ("0", "1", "")
    assert check.init["0"] == (0.5,) * 3 and check.init[""] == (0.5,) * 3  # rows 1 and 2: std 0.5
    assert check.change["0"][0] == pytest.approx([1.5 * lr / w for w in widths], rel=1e-12)
    assert check.slope("0") == pytest.approx(-1.0, abs=1e-12)
    moved = [((1 - 3 * lr * w) * (1 - lr / w) - 1, (1 - 3 * lr * w) * (2 - 4 * lr / w) - 2) for w in widths]
    assert check.change[""][0] == pytest.approx([abs(a - b) / 2 for a, b in moved], rel=1e-12)
    assert check.change["1"] == check.change[""]  # the last layer's output is the model's


def test_the_slope_is_the_least_squares_fit_in_log_log() -> None:
    widths = (64, 128, 256, 512)
    check = CoordCheck(widths, ("a", "b"), {"a": (1.0,) * 4, "b": (1.0,) * 4},
                       {"a": (tuple(3 * w**0.5 for w in widths),), "b": ((2.0, 1.0, 2.0, 1.0),)})  # fmt: skip
    assert check.steps == 1
    assert check.slope("a") == pytest.approx(0.5, abs=1e-12)
    xs = [math.log(w) for w in widths]
    mean = sum(xs) / 4
    expected = sum((x - mean) * math.log(v) for x, v in zip(xs, (2.0, 1.0, 2.0, 1.0), strict=True)) / sum(
        (x - mean) ** 2 for x in xs
    )
    assert check.slope("b") == pytest.approx(expected, abs=1e-12)
    text = str(check)
    assert text.splitlines()[1].split() == ["layer", "w=64", "w=128", "w=256", "w=512", "slope"]
    assert text.splitlines()[2].split()[-1] == "+0.50"
    with pytest.raises(InitError, match=r"layer must be one of the recorded \['a', 'b'\]; got layer='c'"):
        check.slope("c")


def test_outputs_in_tuples_and_mappings_and_the_mode_restored() -> None:
    class Wrapped(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, width), nn.Dropout(0.5), nn.Linear(width, 2))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loss": x.sum(), "logits": self.body(x)}

    seen: list[bool] = []

    def setup(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(width)
        model = Wrapped(width)
        model.register_forward_pre_hook(lambda m, _: seen.append(m.training))
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)

    x = torch.ones(4, 3)
    check = coord_check(setup, [8, 16], x, lambda out: out["logits"].square().mean(), steps=2, layers=["body", ""])
    assert check.layers == ("body", "") and check.change["body"] == check.change[""]  # the logits were recorded
    assert all(v > 0 for step in check.change[""] for v in step)
    assert seen == [False, True, False, True, False] * 2  # recorded in eval mode, trained in train mode


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    check = coord_check(_linear, [4, 8], x, lambda out: out.square().sum(), steps=2)
    figure = check.plot(str(tmp_path / "coord.png"))
    assert len(figure.axes) == 2 and (tmp_path / "coord.png").stat().st_size > 1000


def test_plot_without_matplotlib_and_layers_without_a_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    check = coord_check(_linear, [4, 8], x, lambda out: out.square().sum(), steps=1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib then raises ImportError
    with pytest.raises(InitError, match=r"CoordCheck.plot needs matplotlib: pip install torchinit\[plot\]"):
        check.plot()

    class Shapes(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[int, ...]:
            return tuple(x.shape)

    def setup(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, optimizer = _linear(width)
        model.add_module("shapes", Shapes())
        return model, optimizer

    with pytest.raises(InitError, match=r"coord_check records tensors; a layer returned a tuple without one"):
        coord_check(setup, [4, 8], x, lambda out: out[0].sum(), layers=["shapes"])

    def spare(width: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model, optimizer = _linear(width)
        model[0].add_module("spare", nn.Linear(2, 2))  # a child Linear.forward never calls
        return model, optimizer

    with pytest.raises(InitError, match=r"layers \['0.spare'\] did not run in the model's forward pass"):
        coord_check(spare, [4, 8], x, lambda out: out.sum(), layers=["0.spare", ""])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": [8]}, r"widths must hold at least two distinct positive ints; got widths=\[8\]"),
        ({"widths": [8, 8]}, r"widths must hold at least two distinct positive ints; got widths=\[8, 8\]"),
        ({"widths": [8, 0]}, r"got widths=\[8, 0\]"),
        ({"widths": [8, 16.0]}, r"got widths=\[8, 16.0\]"),
        ({"widths": 8}, r"got widths=\[8\]"),
        ({"steps": 0}, r"steps must be a positive integer; got steps=0"),
        ({"layers": ["0", "2"]}, r"layers must be a list of the model's module paths .*got \['2'\]"),
        ({"layers": "0"}, r"layers must be a list of the model's module paths"),
        ({"setup": lambda w: nn.Linear(2, w)}, r"setup\(width\) must return \(model, optimizer\); setup\(4\) returned"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"setup": _linear, "widths": [4, 8], "steps": 1, "layers": None, **kwargs}
    with pytest.raises(InitError, match=match):
        setup, widths = arguments.pop("setup"), arguments.pop("widths")
        coord_check(setup, widths, torch.ones(1, 2, dtype=torch.float64), lambda o: o.sum(), **arguments)  # type: ignore[arg-type]
