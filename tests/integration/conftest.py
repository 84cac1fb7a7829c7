"""Integration tests: torchinit on real third-party architectures built from configs (never downloaded weights).

The transformers tests run in the main test environment; the torchvision/timm tests in the second pinned
environment that `.ci/run` builds (torchvision's wheels need the full torch build). Each module skips itself
when its library is absent. Nothing here is registered globally.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn


class RNGWatch:
    """Wraps a factory to record whether constructing the model moved torch's global RNG."""

    def __init__(self) -> None:
        self.draws: list[bool] = []

    def __call__(self, factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        def watched() -> nn.Module:
            state = torch.get_rng_state()
            model = factory()
            self.draws.append(not torch.equal(state, torch.get_rng_state()))
            return model

        return watched


@pytest.fixture
def drew() -> RNGWatch:
    return RNGWatch()
