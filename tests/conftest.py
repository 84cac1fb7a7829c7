"""Shared test set-up: Hypothesis profiles and a reproducible seed fixture."""

from __future__ import annotations

import os
import zlib

import pytest
import torch
from hypothesis import HealthCheck, settings

# "ci" is derandomized: the same examples on every run, so a statistical test can't flake in CI.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
# Derandomized by default everywhere; HYPOTHESIS_PROFILE=dev or thorough explores new examples.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed: stable (a hash of the test id) unless TORCHINIT_TEST_SEED pins it; printed on failure."""
    pinned = os.environ.get("TORCHINIT_TEST_SEED")
    value = int(pinned) if pinned else zlib.crc32(request.node.nodeid.encode())
    print(f"seed={value} (set TORCHINIT_TEST_SEED={value} to reproduce)")
    return value


@pytest.fixture
def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded from the ``seed`` fixture."""
    return torch.Generator().manual_seed(seed)
