"""Doctest namespace: docstring examples may use torch, nn, math and every public torchinit name."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import torchinit


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, Any]) -> None:
    doctest_namespace.update({"torch": torch, "nn": nn, "math": math, "torchinit": torchinit})
    doctest_namespace.update({name: getattr(torchinit, name) for name in torchinit.__all__})
    torch.manual_seed(0)
