"""Floats rounded to 40 significant bits (about 12 digits): two computations or two spellings of one value, which differ
in their last bits only, become the same value, except within a few ulps of a rounding boundary.

Training sums a history window incrementally (pandas), serving exactly (`math.fsum`), and a tree splits between any
two distinct training values, however close: rounded, a served prediction and the rebuilt training row take the same
branches. Likewise a client's float parser may print `-0.0446416365069891` where the export said
`-0.044641636506989144`: for drift, a numeric column of few values is compared value by value, and such a difference
made every value new.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_BITS = 2.0**40


def settled(values: Any) -> Any:
    """`values` (an array or a Series of floats) rounded to 40 significant bits, half to even; NaN and ±inf stay."""
    mantissa, exponent = np.frexp(values)
    return np.ldexp(np.round(mantissa * _BITS) / _BITS, exponent)


def settled_number(value: float) -> float:
    """`settled` of one float without numpy's per-scalar cost: serving rounds a few window statistics on every request."""
    if not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * _BITS) / _BITS, exponent)
