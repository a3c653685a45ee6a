"""Type-strict JSON equality for lossless-forwarding tests."""

from __future__ import annotations

import math


def strict_equal(a, b) -> bool:
    """JSON equality that also compares types: 1 != 1.0, 0 != False, key sets must match."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b
