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


def assert_recipe_matches(reference: nn.Module, recipe: object) -> None:
    """``reinit(copy, recipe)`` against the reference library's own init of the same architecture.

    For every parameter (each path of a tied one): a constant in the reference is the same constant
    here; a random one follows the recipe's stated law in both, by a Kolmogorov-Smirnov test
    (alpha = 1e-6) against the family and std the report states, and a std test at the same alpha. The
    same tying, no parameter uncovered. So the reference agrees with the formula, and torchinit draws it.
    """
    import copy
    import warnings

    import torchinit
    from torchinit.testing import MIN_SAMPLES, assert_distribution, assert_std

    ours = copy.deepcopy(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torchinit.UncoveredParameterWarning)
        report = torchinit.reinit(ours, recipe, seed=1)  # type: ignore[arg-type]
    assert not report.skipped, report.skipped
    ref_params = dict(reference.named_parameters(remove_duplicate=False))
    our_params = dict(ours.named_parameters(remove_duplicate=False))
    ids = {id(p): path for path, p in ref_params.items()}
    for path, ref in ref_params.items():
        mine = our_params[path]
        tied_to = ids[id(ref)]
        assert mine is our_params[tied_to], f"{path}: tying differs"
        entry = report[path]
        r, o = ref.detach().double().reshape(-1), mine.detach().double().reshape(-1)
        if bool((r == r[0]).all()):
            assert torch.equal(r, o), f"{path}: reference constant {float(r[0])}, ours {entry.rule}"
            continue
        zero_rows_ref = (ref.detach() == 0).all(dim=-1) if ref.dim() == 2 else None
        if zero_rows_ref is not None and bool(zero_rows_ref.any()):
            assert torch.equal(zero_rows_ref, (mine.detach() == 0).all(dim=-1)), f"{path}: padding rows differ"
        assert entry.std is not None and entry.distribution in ("normal", "uniform", "truncated_normal"), entry
        if r.numel() < MIN_SAMPLES:
            continue
        # timm's inverse-CDF trunc_normal_ turns a uniform draw of exactly +-1 into +-inf and clamps it to
        # +-2 (100 sigma at std 0.02): about one element in 2^24. An artifact of float32, not the law.
        artifacts = r.abs() >= 50 * entry.std
        assert int(artifacts.sum()) <= max(2, r.numel() >> 22), f"{path}: {int(artifacts.sum())} outliers"
        r = r[~artifacts]
        family = entry.distribution
        cut = entry.cut if entry.cut is not None else 2.0  # the report's truncation, in sigmas
        for name, values in (("reference", r), ("torchinit", o)):
            msg = f"{path} ({name}) vs the recipe's {entry.rule}"
            assert_std(values, entry.std, kurtosis=family if cut == 2.0 else "normal", msg=msg)
            assert_distribution(values, family, entry.std, a=-cut, b=cut, msg=msg)
