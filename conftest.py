"""Doctest namespace (torch, nn, math and every public torchinit name) and registries restored after each test."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import torchinit
from torchinit._layers import rules as _layers
from torchinit._schemes import registry as _registry


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace.update({"torch": torch, "nn": nn, "math": math, "torchinit": torchinit})
    doctest_namespace.update({name: getattr(torchinit, name) for name in torchinit.__all__})
    doctest_namespace.update({name: getattr(torchinit.extend, name) for name in torchinit.extend.__all__})
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_registries() -> Iterator[None]:
    """Every test (and docstring example) leaves the layer and scheme registries as it found them."""
    layers = _layers.registered()
    schemes = {name: torchinit.extend.get_scheme(name) for name in torchinit.list_schemes()}
    yield
    _layers.restore(layers)
    for name in torchinit.list_schemes():
        if name not in schemes:
            _registry.unregister_scheme(name)
    for name, scheme in schemes.items():
        torchinit.extend.register_scheme(name, scheme, overwrite=True)
