"""The writer: skip and keep never reach a tensor, every kind of write is proven before the first one, the
transaction holds interrupts and undoes failures."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import torchinit
from torchinit import InitError, Override, reinit
from torchinit._model.transaction import hold_interrupts


@contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """The model's parameters and buffers bitwise the same after the block, and torch's RNG too."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    yield
    after = model.state_dict()
    assert state.keys() == after.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(torch.get_rng_state(), rng)


def _weight_normed() -> nn.Sequential:
    return nn.Sequential(parametrizations.weight_norm(nn.Linear(64, 64)), nn.ReLU(), nn.Linear(64, 4))


@pytest.mark.parametrize("seed", [None, 5])
@pytest.mark.parametrize("how", [{"skip": True}, {"keep": True}])
def test_skip_and_keep_leave_a_parametrized_weight_untouched(how: dict[str, bool], seed: int | None) -> None:
    model = _weight_normed()
    originals = [p.detach().clone() for p in model[0].parametrizations.weight.parameters()]
    report = reinit(model, "kaiming_relu", overrides=[Override(path="0.weight", **how)], seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(model[0].parametrizations.weight.parameters(), originals, strict=True))
    assert bool(torch.isfinite(model[0].weight).all())
    assert (report["0.weight"].skipped is not None) == ("skip" in how)


def test_frozen_spectral_norm_skipped_keeps_its_power_iteration_buffers() -> None:
    layer = parametrizations.spectral_norm(nn.Linear(16, 16))
    layer.requires_grad_(False)
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(16, 2))
    spectral = model[0].parametrizations.weight[0]
    u, v = spectral._u.clone(), spectral._v.clone()
    original = model[0].parametrizations.weight.original.detach().clone()
    reinit(model, "kaiming_relu", overrides=[Override(frozen=True, skip=True)])
    assert torch.equal(spectral._u, u) and torch.equal(spectral._v, v)
    assert torch.equal(model[0].parametrizations.weight.original, original)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_an_uncovered_parametrized_raw_parameter_is_left_as_it_was() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.full((8,), 3.0))

    model = nn.Sequential(nn.Linear(8, 8), Scale())
    parametrize.register_parametrization(model[1], "gain", _Identity())
    with pytest.warns(torchinit.UncoveredParameterWarning, match="1.gain"):
        reinit(model, "kaiming_relu")
    assert torch.equal(model[1].gain, torch.full((8,), 3.0))


def test_a_float8_parameter_is_refused_before_any_write_where_torch_cannot_draw_into_it() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    model[1].to(torch.float8_e4m3fn)
    with (
        unchanged(model),
        pytest.raises(InitError, match=r"1.weight \(Linear, shape \(8, 8\)\): a normal write .*float8"),
    ):
        reinit(model, "kaiming_relu")
    reinit(model, "kaiming_relu", seed=0)  # keyed draws compute in float32 and convert: that kind of write works
    assert model[1].weight.float().abs().max() > 0


def test_a_sparse_parameter_is_refused_naming_its_layout() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(torch.eye(4).to_sparse())
    with pytest.raises(InitError, match=r"1.weight .* has layout torch.sparse_coo; .*to_dense\(\)"):
        reinit(model, "kaiming_relu")


def test_an_expanded_parameter_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
    model[0].weight = nn.Parameter(torch.zeros(4).expand(3, 4))
    with unchanged(model), pytest.raises(InitError, match=r"0.weight .* has stride \(0, 1\): its elements share"):
        reinit(model, "kaiming_relu")


def test_parameters_that_share_memory_are_refused_naming_both() -> None:
    base = torch.zeros(8, 4)
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    a.weight, b.weight = nn.Parameter(base[:4]), nn.Parameter(base[2:6])
    model = nn.Sequential(a, b)
    with unchanged(model), pytest.raises(InitError, match="0.weight and 1.weight are different parameters that share"):
        reinit(model, "kaiming_relu")
    a.weight, b.weight = nn.Parameter(base[:4]), nn.Parameter(base[4:])  # disjoint views of one tensor are fine
    reinit(model, "kaiming_relu")
    assert bool((base != 0).all())


def test_a_fault_in_the_last_write_restores_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    # A MemoryError from the contiguous temporary of a channels_last weight: after the probes passed.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).to(memory_format=torch.channels_last)
    from torchinit._maths import draw as _draw

    real = torch.empty_like
    calls = []

    def failing(t: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:  # the second layer's temporary
            raise MemoryError("no memory for the temporary")
        return real(t, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_draw.torch, "empty_like", failing)
    with unchanged(model), pytest.raises(MemoryError):
        reinit(model, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2


def test_a_custom_sigint_handler_is_held_until_the_block_ends() -> None:
    seen: list[str] = []

    def handler(signum: int, frame: object) -> None:
        seen.append("handled")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with hold_interrupts():
            signal.raise_signal(signal.SIGINT)
            seen.append("block done")
        assert seen == ["block done", "handled"]
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_default_sigint_becomes_a_keyboard_interrupt_after_the_block() -> None:
    assert threading.current_thread() is threading.main_thread()
    done = []
    with pytest.raises(KeyboardInterrupt), hold_interrupts():
        signal.raise_signal(signal.SIGINT)
        done.append(True)
    assert done == [True]


def test_a_plug_in_scheme_whose_finish_raises_leaves_the_model_as_it_was() -> None:
    from torchinit.extend import BaseScheme, Call, Plan

    class Failing(BaseScheme):
        def plan(self, module: nn.Module, call: Call) -> Plan:
            return torchinit.get_scheme("kaiming_relu").plan(module, call)

        def finish(self, module: nn.Module, report: object, call: Call) -> None:
            raise RuntimeError("the pass after the writes fails")

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with unchanged(model), pytest.raises(RuntimeError, match="the pass after the writes fails"):
        reinit(model, Failing())


def test_ctrl_c_during_a_pass_after_the_writes_is_not_held_and_undoes_the_call() -> None:
    class Blocking(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Blocking.calls += 1
            if Blocking.calls == 2:  # the first is the check before any write; the second LSUV's own pass
                signal.raise_signal(signal.SIGINT)  # a forward pass the user interrupts
            return x

    model = nn.Sequential(nn.Linear(8, 8), Blocking(), nn.Linear(8, 2))
    batch = torch.randn(32, 8)
    with unchanged(model), pytest.raises(KeyboardInterrupt):
        reinit(model, "lsuv", data=batch)
    assert Blocking.calls == 2  # interrupted inside the pass, not held to its end


class _Refusing(nn.Parameter):
    """A Parameter subclass whose own draws fail: a plain probe tensor cannot speak for it."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def, override]
        if getattr(func, "__name__", "") in ("normal_", "uniform_"):
            raise RuntimeError("this subclass refuses draws")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_tensor_subclass_that_fails_mid_write_is_undone_and_named() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    model[2].weight = _Refusing(torch.zeros(8, 8))
    with unchanged(model), pytest.raises(RuntimeError, match="refuses draws") as caught:
        reinit(model, "kaiming_relu", generator=torch.Generator().manual_seed(0))
    if hasattr(caught.value, "__notes__"):
        assert "2.weight (Linear, shape (8, 8))" in caught.value.__notes__[0]


@pytest.mark.parametrize("how", [{"skip": True}, {"keep": True}])
def test_a_write_that_would_reach_a_skipped_parameter_s_memory_is_refused(how: dict[str, bool]) -> None:
    base = torch.randn(12, 8)
    a, b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    a.weight, b.weight = nn.Parameter(base[:8]), nn.Parameter(base[4:])
    model = nn.Sequential(a, b)
    with unchanged(model), pytest.raises(InitError, match=r"\(1.weight is kept or skipped, yet the other's write"):
        reinit(model, "kaiming_relu", overrides=[Override(path="1.weight", **how)])


def test_a_self_overlapping_view_is_refused() -> None:
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32))
    model[1].weight = nn.Parameter(torch.zeros(64).as_strided((32, 32), (1, 1)))
    with unchanged(model), pytest.raises(InitError, match=r"1.weight .* stride \(1, 1\): its elements share memory"):
        reinit(model, "kaiming_relu")


def test_an_override_written_as_a_state_dict_name_points_to_the_parameter() -> None:
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 4)), nn.Linear(4, 4))
    with pytest.raises(InitError, match=r"nearest: '0.weight'"):
        reinit(model, "kaiming_relu", overrides=[Override(path="0.parametrizations.weight.original0", skip=True)])
    hooked = nn.Sequential(nn.Linear(4, 4), nn.utils.spectral_norm(nn.Linear(4, 4)))
    with pytest.raises(InitError, match=r"nearest: '1.weight_orig'"):
        reinit(hooked, "kaiming_relu", overrides=[Override(path="1.weight", skip=True)])
