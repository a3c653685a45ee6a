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


def first_difference(a, b, path="$") -> str | None:
    """Where two JSON values first differ under strict_equal's rules (a JSON path and both values),
    or None when they are equal."""
    if type(a) is not type(b):
        return f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        return next(filter(None, (first_difference(a[k], b[k], f"{path}.{k}") for k in a)), None)
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return next(filter(None, (first_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))), None)
    return None if strict_equal(a, b) else f"{path}: {a!r} != {b!r}"
