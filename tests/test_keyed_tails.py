"""The keyed normal's tails, as stated in keyed_'s docstring, the README and the distributed guide.

Exact facts of the stream's table, computed over every tail word that can reach past 5 sigma (the mapping is
monotone in the word's low 31 bits V, so the small V are the whole tail).
"""

from __future__ import annotations

import math

import torch

import torchinit
from torchinit._maths import stream as _stream

TAIL_WORDS = 1 << 12  # |z| > 5 needs V < 2^32 Phi(-5) = 1232


def _magnitudes() -> torch.Tensor:
    return _stream.unit_normal(torch.arange(TAIL_WORDS, dtype=torch.int32)).abs()


def test_tail_cap_is_6_338_sigma() -> None:
    z = _magnitudes()
    assert float(z.max()) == float(z[0])  # V = 0, t = 2^-33, the farthest value
    assert 6.3379 < float(z.max()) <= 6.338
    assert math.isclose(
        float(z.max()), -float(torch.special.ndtri(torch.tensor(2.0**-33, dtype=torch.float64))), rel_tol=1e-6
    )
    assert bool((z[1:] <= z[:-1]).all())  # monotone: nothing past the first words is farther out


def test_four_magnitudes_above_6_sigma() -> None:
    z = _magnitudes()
    above = sorted(set(z[z > 6].tolist()))
    assert [round(v, 4) for v in above] == [6.031, 6.0851, 6.1664, 6.338]
    assert len(set(z[(z > 5) & (z <= 6)].tolist())) == 1227
    # per element: 4 magnitudes x 2 signs out of 2^32 words, against the normal's 2 Phi(-6)
    assert 8 / 2**32 == 2.0**-29 and math.isclose(math.erfc(6 / math.sqrt(2)), 1.97e-9, rel_tol=1e-2)


def test_keyed_draws_respect_the_cap() -> None:
    w = torchinit.keyed_(torch.empty(1 << 20), "normal", 1.0, seed=0, name="tails")
    assert float(w.abs().max()) <= 6.338
