"""Statistical assertions for initialized tensors, and the coordinate check of muP (`coord_check`); Hypothesis
strategies live in ``torchinit.testing.strategies``.

The assertions need only torch; ``torchinit.testing.strategies`` needs hypothesis
(``pip install torchinit[testing]``).
"""

from torchinit.testing._assertions import (
    ASYMPTOTIC_MIN_SAMPLES,
    DEFAULT_ALPHA,
    MIN_SAMPLES,
    assert_distribution,
    assert_mean,
    assert_std,
    assert_uniform_support,
    std_tolerance,
)
from torchinit.testing._coord import CoordCheck, coord_check
from torchinit.testing._kurtosis import assert_kurtosis

__all__ = [
    "ASYMPTOTIC_MIN_SAMPLES",
    "CoordCheck",
    "DEFAULT_ALPHA",
    "MIN_SAMPLES",
    "assert_distribution",
    "assert_kurtosis",
    "assert_mean",
    "assert_std",
    "assert_uniform_support",
    "coord_check",
    "std_tolerance",
]
