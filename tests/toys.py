"""Helpers for tests that apply schemes to toy models."""

from __future__ import annotations

import torchinit


def any_model(scheme: str) -> torchinit.SchemeLike:
    """``scheme`` applied to a toy model: a recipe (written for one model family) as ``.anywhere()``, whose
    mismatch warning the caller expects."""
    resolved = torchinit.get_scheme(scheme)
    return resolved.anywhere() if hasattr(resolved, "anywhere") else scheme  # type: ignore[no-any-return]
