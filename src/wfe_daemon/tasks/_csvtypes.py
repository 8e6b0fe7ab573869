"""Cell values of the CSV tasks: type checks, canonical casts and filter comparisons.

Each works a column of a batch at a time through C callables (``map`` over compiled
regexes), which keeps a million rows to about a second per pass.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from itertools import repeat
from typing import Any

TYPE_NAMES = ("int", "float", "str", "bool", "date")
ARTICLE = {"int": "an", "float": "a", "str": "a", "bool": "a", "date": "a"}

_INT = re.compile(r"[+-]?[0-9]+").fullmatch
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch
_NUMBER = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*").fullmatch
_BOOL = re.compile(r"true|false|yes|no|1|0", re.IGNORECASE).fullmatch
_BOOL_TEXT = {"true": "true", "yes": "true", "1": "true",
              "false": "false", "no": "false", "0": "false"}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch


@functools.lru_cache(maxsize=4096)  # dates repeat a lot in real files; the cache stays small
def _is_date(text: str) -> bool:
    if _DATE(text) is None:
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


CHECKS: Mapping[str, Callable[[str], object]] = {
    "int": _INT, "float": _FLOAT, "str": lambda _: True, "bool": _BOOL, "date": _is_date,
}
"""Per type, a callable that is truthy for a valid cell (``""`` is valid only as ``str``)."""


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}
OPS = (*_COMPARE, "in", "contains")


def _number(value: object) -> float | None:
    """``value`` as a number when it reads as one (a JSON number or numeric text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _NUMBER(value) is not None:
        return float(value)
    return None


def _text(value: object) -> str:
    """A JSON scalar as the text a CSV cell would hold (``10`` -> ``"10"``)."""
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else str(value)


Test = Callable[[Sequence[str]], Iterable[bool]]
"""A filter over one column of a batch: one verdict per cell."""


def _numbers(cells: Sequence[str]) -> Iterable[float] | None:
    """Every cell as a float when they all read as numbers (the common, C-speed case)."""
    return map(float, cells) if all(map(_NUMBER, cells)) else None


def predicate(op: str, value: Any) -> Test:
    """The test one filter applies: numeric when both sides read as numbers, else textual."""
    if op == "contains":
        return lambda cells: map(operator.contains, cells, repeat(_text(value)))
    if op == "in":
        numbers = {n for n in map(_number, value) if n is not None}
        texts = {_text(v) for v in value if _number(v) is None}
        if not numbers:
            return lambda cells: map(texts.__contains__, cells)
        return lambda cells: [c in texts or _number(c) in numbers for c in cells]
    compare, text, number = _COMPARE[op], _text(value), _number(value)
    if number is None:
        return lambda cells: map(compare, cells, repeat(text))

    def test(cells: Sequence[str]) -> Iterable[bool]:
        numbers = _numbers(cells)
        if numbers is not None:
            return map(compare, numbers, repeat(number))
        return [compare(n, number) if (n := _number(c)) is not None else compare(c, text)
                for c in cells]

    return test


def cast_column(values: Sequence[str], type_name: str) -> Sequence[str] | int:
    """The column cast to canonical text, or the position of the first bad value."""
    if type_name in _CANONICAL and all(map(_CANONICAL[type_name], values)):
        return values  # already as the cast would write them
    check = CHECKS[type_name]
    if not all(map(check, values)):
        return next(i for i, v in enumerate(values) if not check(v))
    if type_name == "int":
        return list(map(str, map(int, values)))
    if type_name == "float":
        floats = list(map(float, values))
        if not all(map(math.isfinite, floats)):
            return next(i for i, f in enumerate(floats) if not math.isfinite(f))
        return list(map(repr, floats))
    if type_name == "bool":
        return list(map(_BOOL_TEXT.__getitem__, map(str.lower, values)))
    return values  # str and date: a valid value is canonical


_CANONICAL: Mapping[str, Callable[[str], object]] = {
    "int": re.compile(r"0|-?[1-9][0-9]*").fullmatch,
    # Up to 15 significant digits and no exponent: repr(float(text)) == text.
    "float": re.compile(r"-?(?:[1-9][0-9]{0,6}|0(?!\.0000))\.(?:0|[0-9]{0,7}[1-9])").fullmatch,
    "bool": re.compile(r"true|false").fullmatch,
}
