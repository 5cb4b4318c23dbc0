"""Integer arguments and indices, read one way everywhere: token positions, layers, counts.

    index(-1, 8, "token")              -> 7        (negative counts from the end)
    indices("0,3,-1", 8, "token")      -> [0, 3, 7]
    integer(np.int64(4), "k", low=1)   -> 4        (numpy / torch integer scalars are integers)

Python ints, numpy integer scalars and 0-d integer torch tensors are accepted; bools, floats (even 2.0)
and strings that are not integers are refused with a ValueError naming the argument, so that no value
is silently truncated (issue: `[2.9, 651.7]` used to mean `[2, 651]`).  Tests: tests/test_indices.py.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["integer", "index", "indices", "is_integer", "finite"]


def integer(value: Any, what: str, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as a Python int, refusing bools and non-integral numbers; optionally low <= value <= high."""
    if not is_integer(value):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        bound = f"at least {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{what} must be {bound}, got {v}")
    if high is not None and v > high:
        bound = f"at most {high}" if low is None else f"in {low}..{high}"
        raise ValueError(f"{what} must be {bound}, got {v}")
    return v


def finite(value: Any, what: str, *, bound: float) -> float:
    """`value` as a float, refusing bools, non-numbers, NaN, ±inf and |value| > bound (naming the bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (type(value).__module__.startswith("torch") and getattr(value, "numel", lambda: 0)() == 1):
            raise ValueError(f"{what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or abs(v) > bound:
        raise ValueError(f"{what} must be a finite number with |{what}| ≤ {bound:g}, got {v!r}")
    return v


def is_integer(value: Any) -> bool:
    """True for Python / numpy integer scalars and one-element integer torch tensors (not bools)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):  # int, numpy integer scalars
        return True
    if type(value).__module__.startswith("torch") and hasattr(value, "dtype"):
        return value.numel() == 1 and not value.dtype.is_floating_point and not value.dtype.is_complex
    return False


def index(value: Any, length: int, what: str) -> int:
    """One index into a sequence of `length` items (negative from the end), checked against the range."""
    i = integer(value, f"{what} index")
    j = i + length if i < 0 else i
    if not 0 <= j < length:
        raise ValueError(f"{what} index {i} is out of range for {length} {what}s (-{length}..{length - 1})")
    return j


def indices(values: Any, length: int, what: str, *, unique: bool = True) -> list[int]:
    """Several indices: an iterable of integers, one integer, or a comma-separated string like '0,3,-1'."""
    items = _items(values, what)
    if not items:
        raise ValueError(f"the {what} list is empty")
    out = [index(v, length, what) for v in items]
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{what} indices repeat: {list(items)}")
    return out


def _items(values: Any, what: str) -> list[Any]:
    if isinstance(values, str):
        parts = [p.strip() for p in values.split(",") if p.strip()]
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"cannot read {what} indices {values!r}; expected integers like '0,3,-1'"
            ) from None
    if is_integer(values):
        return [values]
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):
        values = values.tolist()
        return values if isinstance(values, list) else [values]
    if isinstance(values, Iterable):
        return list(values)
    raise ValueError(f"{what} indices must be integers or a list of integers, got {values!r}")
