"""torchinit's warnings name the user's line: the call to reinit or build, the end of a default_scheme block."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import torchinit
from torchinit._schemes import plan as _plan


class Scaled(nn.Module):
    """A raw parameter no rule covers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.ones(4))


def caught(category: type[Warning]) -> Callable[[list[warnings.WarningMessage]], warnings.WarningMessage]:
    def one(record: list[warnings.WarningMessage]) -> warnings.WarningMessage:
        (found,) = [w for w in record if issubclass(w.category, category)]
        return found

    return one


def recording() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


record_warnings = pytest.fixture(recording)


def test_an_uncovered_parameter_warns_at_the_reinit_call(record_warnings: list[warnings.WarningMessage]) -> None:
    model = Scaled()
    line = sys._getframe().f_lineno + 1
    torchinit.reinit(model, "kaiming_relu")
    found = caught(torchinit.UncoveredParameterWarning)(record_warnings)
    assert (found.filename, found.lineno) == (__file__, line)


def test_a_keyed_reinit_warns_at_its_call_too(record_warnings: list[warnings.WarningMessage]) -> None:
    line = sys._getframe().f_lineno + 1
    torchinit.reinit(Scaled(), "kaiming_relu", seed=0)
    found = caught(torchinit.UncoveredParameterWarning)(record_warnings)
    assert (found.filename, found.lineno) == (__file__, line)


def test_build_warns_at_its_call(record_warnings: list[warnings.WarningMessage]) -> None:
    line = sys._getframe().f_lineno + 1
    torchinit.build(Scaled, "kaiming_relu")
    found = caught(torchinit.UncoveredParameterWarning)(record_warnings)
    assert (found.filename, found.lineno) == (__file__, line)


def test_sharded_without_seed_warns_at_the_reinit_call(
    record_warnings: list[warnings.WarningMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_plan, "is_sharded", lambda tensor: True)  # as a DTensor parameter would be
    line = sys._getframe().f_lineno + 1
    torchinit.reinit(nn.Linear(4, 4), "kaiming_relu")
    found = caught(torchinit.ShardedWithoutSeedWarning)(record_warnings)
    assert (found.filename, found.lineno) == (__file__, line)


def test_default_scheme_warns_where_its_block_ends(record_warnings: list[warnings.WarningMessage]) -> None:
    line = sys._getframe().f_lineno + 1
    with torchinit.default_scheme("kaiming_relu"):  # its __exit__ runs at this line
        layer = nn.Linear(4, 4)
        with torch.no_grad():
            layer.weight.zero_()  # the model's own init code overwriting the scheme's draw
    found = caught(torchinit.SchemeOverwrittenWarning)(record_warnings)
    assert (found.filename, found.lineno) == (__file__, line)
