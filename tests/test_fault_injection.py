"""Property: a fault in any kind of write, anywhere in a call, leaves the model, its buffers and the RNGs bitwise
as they were, whenever the writer has said a write can still fail (and so backed everything up).

Hypothesis builds a small model from layers that exercise every kind of write (in place, a channels_last
temporary, through a parametrization's right_inverse, spectral-norm buffers, packed RNN gates with a forget
bias, a padding row, half precision), picks a scheme, keyed or not, and breaks one write primitive at its k-th
call with RuntimeError, MemoryError or KeyboardInterrupt. A weight-normed layer is always present, so the plan
is fallible and backed up (plain plans prove every write before the first and hold Ctrl-C instead: see
docs/guides/reinit.md).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrizations

import torchinit
from torchinit._maths import keyed as _keyed
from torchinit._model import write as _write

LAYERS: dict[str, Callable[[], nn.Module]] = {
    "linear": lambda: nn.Linear(6, 5),
    "channels_last_conv": lambda: nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last),
    "lstm": lambda: nn.LSTM(4, 3),
    "embedding": lambda: nn.Embedding(7, 4, padding_idx=2),
    "weight_norm": lambda: parametrizations.weight_norm(nn.Linear(4, 4)),
    "spectral_norm": lambda: parametrizations.spectral_norm(nn.Linear(4, 5)),
    "batch_norm": lambda: nn.BatchNorm1d(4),
    "half_linear": lambda: nn.Linear(4, 4).half(),
    "attention": lambda: nn.MultiheadAttention(8, 2, add_bias_kv=True),
}
SCHEMES = ["kaiming_relu", "orthogonal", "xavier_uniform", "lecun_normal", "kaiming_relu_uniform"]
FAULTS: list[type[BaseException]] = [RuntimeError, MemoryError, KeyboardInterrupt]
HIT: list[tuple[str, str]] = []  # (primitive, fault) of the examples whose fault was reached


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _primitives(keyed: bool) -> list[tuple[object, str]]:
    """The write primitives a fault can hit: (owner, attribute)."""
    found: list[tuple[object, str]] = [(_write, "_assign"), (_write, "refresh_spectral")]
    found.append((_keyed.KeyedWriter, "run") if keyed else (_write, "write"))
    return found


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=4),
    scheme=st.sampled_from(SCHEMES),
    keyed=st.booleans(),
    which=st.integers(min_value=0, max_value=2),
    at=st.integers(min_value=1, max_value=6),
    fault=st.sampled_from(FAULTS),
)
def test_a_fault_in_any_write_leaves_everything_bitwise_unchanged(
    names: list[str], scheme: str, keyed: bool, which: int, at: int, fault: type[BaseException]
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*(LAYERS[n]() for n in names), LAYERS["weight_norm"]())
    before, rng = _state(model), torch.get_rng_state()
    generator = None if keyed else torch.Generator().manual_seed(1)
    gen_state = None if generator is None else generator.get_state()
    owner, name = _primitives(keyed)[which]
    real = getattr(owner, name)
    calls = {"n": 0}

    def broken(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == at:
            raise fault(f"injected into {name}, call {at}")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owner, name, broken)
        try:
            torchinit.reinit(model, scheme, seed=0 if keyed else None, generator=generator)
        except fault:
            HIT.append((name, fault.__name__))
            after = _state(model)
            assert after.keys() == before.keys()
            for key, value in before.items():  # parameters and buffers (spectral _u/_v, BN statistics)
                assert torch.equal(value, after[key]), (key, names, scheme, keyed, name, at)
            assert torch.equal(torch.get_rng_state(), rng)
            if generator is not None:
                assert torch.equal(generator.get_state(), gen_state)  # type: ignore[arg-type]
            return
    assert calls["n"] < at  # no fault was reached: the call went through


def test_the_property_sees_a_half_written_model() -> None:
    # The check above can fail: with the writer's backups switched off, a fault on the second write leaves the
    # first one in place, and the same comparison finds it.
    from torchinit._model import transaction

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), LAYERS["weight_norm"]())
    before = _state(model)
    calls = {"n": 0}
    real = _write.write

    def broken(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_write, "write", broken)
        patch.setattr(transaction.Undo, "save_target", lambda self, target: None)  # no backups taken
        with pytest.raises(RuntimeError):
            torchinit.reinit(model, "kaiming_relu")
    after = _state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_faults_reached_every_primitive_and_kind() -> None:
    # runs after the property (file order): its examples hit each primitive with each kind of fault
    if not HIT:
        pytest.skip("the property test did not run in this session")
    assert {name for name, _ in HIT} == {"_assign", "refresh_spectral", "run", "write"}, sorted(set(HIT))
    assert {kind for _, kind in HIT} == {f.__name__ for f in FAULTS}
