"""Argument checks of the data layer: each bad value gives one ``LayerinfError`` that names it and the fix.

Valid values come back unchanged (a whole-number float such as ``100.0`` becomes ``100``, as in the config).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from layerinf.errors import LayerinfError


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def count_arg(name: str, value: Any, *, minimum: int = 1, allow_none: bool = True, example: str = "") -> int | None:
    """``value`` as an ``int`` ≥ ``minimum`` (or None when ``allow_none``); bools, fractions and text are refused."""
    such = f" such as {example}" if example else ""
    wanted = f"a whole number ≥ {minimum}{such}" + (", or None" if allow_none else "")
    if value is None:
        if allow_none:
            return None
        raise LayerinfError(f"{name} is missing", f"give {wanted}")
    if _is_bool(value):
        raise LayerinfError(f"{name}={value!r} is a bool, not a number", f"give {wanted}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise LayerinfError(f"{name}={value!r} is not a whole number", f"give {wanted}")
    if number < minimum:
        raise LayerinfError(f"{name}={number} is below {minimum}", f"give {wanted}")
    return number


def fraction_arg(name: str, value: Any, *, lo_open: bool, hi_open: bool, example: str) -> float:
    """``value`` as a finite ``float`` in [0, 1] with the given open ends; bools and text are refused."""
    lo, hi = "(" if lo_open else "[", ")" if hi_open else "]"
    interval = f"{lo}0, 1{hi}"
    if _is_bool(value) or not isinstance(value, (numbers.Real, np.floating)):
        raise LayerinfError(f"{name}={value!r} is not a number", f"give a fraction in {interval}, e.g. {example}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > 1 or (lo_open and number == 0) or (hi_open and number == 1):
        raise LayerinfError(f"{name}={number} is outside {interval}", f"give a fraction in {interval}, e.g. {example}")
    return number


def seed_arg(value: Any, name: str = "seed") -> Any:
    """A non-negative integer seed (a ``numpy.random.Generator`` passes through)."""
    if isinstance(value, np.random.Generator):
        return value
    return count_arg(name, value, minimum=0, allow_none=False, example="0")


def bool_arg(name: str, value: Any) -> bool:
    if not _is_bool(value):
        raise LayerinfError(f"{name}={value!r} is not true or false", f"pass {name}=True or {name}=False")
    return bool(value)


def column_arg(name: str, value: Any) -> str | None:
    """A column name: a non-empty string or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LayerinfError(f"{name}={value!r} is not a column name",
                            f"give the column's name as text, or leave {name} out")
    return value


def names_arg(value: Any) -> list[str] | None:
    """``label_names``: None or a list of names (a single string is refused: it is not a list of names)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        raise LayerinfError(f"label_names={value!r} is not a list of names",
                            "give one name per class in class order, e.g. label_names=['negative', 'positive']")
    return [str(n) for n in value]
