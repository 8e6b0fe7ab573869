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

_PATTERNS = {
    "int": r"[+-]?[0-9]+",
    "float": r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
    "bool": r"[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0",  # ASCII only
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
}
"""What a valid cell of each type looks like, in the syntax both Python's ``re`` and
Arrow's RE2 read the same way (ASCII digits, no look-around)."""

_INT, _FLOAT, _BOOL, _DATE = (
    re.compile(_PATTERNS[t]).fullmatch for t in ("int", "float", "bool", "date")
)
_NUMBER = re.compile(r"\s*" + _PATTERNS["float"] + r"\s*").fullmatch
_BOOL_TEXT = {
    "true": "true",
    "yes": "true",
    "1": "true",
    "false": "false",
    "no": "false",
    "0": "false",
}

ARROW_CHECKS = {
    **{t: f"^(?:{p})$" for t, p in _PATTERNS.items()},
    # A real day, February 29th aside (leap years are for Python to tell); not year 0.
    "date": "^(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-(?:"
    "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))$",
}
"""The same checks for Arrow's ``match_substring_regex`` (``February 29th`` excepted)."""
LEAP_DAY = "^[0-9]{4}-02-29$"


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
    "int": _INT,
    "float": _FLOAT,
    "str": lambda _: True,
    "bool": _BOOL,
    "date": _is_date,
}
"""Per type, a callable that is truthy for a valid cell (``""`` is valid only as ``str``)."""


_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
OPS = (*_COMPARE, "in", "contains")


def number(value: object) -> float | None:
    """``value`` as a number when it reads as one (a JSON number or numeric text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _NUMBER(value) is not None:
        try:
            return float(value)
        except ValueError:  # whitespace that re's \s knows and float() does not (\x1c)
            return None
    return None


def text(value: object) -> str:
    """A JSON scalar as the text a CSV cell would hold (``10`` -> ``"10"``)."""
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else str(value)


Test = Callable[[Sequence[str]], Iterable[bool]]
"""A filter over one column of a batch: one verdict per cell."""


def _numbers(cells: Sequence[str]) -> Iterable[float] | None:
    """Every cell as a float when they all read as numbers (the common, C-speed case)."""
    if not all(map(_NUMBER, cells)):
        return None
    try:
        return list(map(float, cells))
    except ValueError:  # see number()
        return None


def predicate(op: str, value: Any) -> Test:
    """The test one filter applies: numeric when both sides read as numbers, else textual."""
    if op == "contains":
        return lambda cells: map(operator.contains, cells, repeat(text(value)))
    if op == "in":
        numbers = {n for n in map(number, value) if n is not None}
        texts = {text(v) for v in value if number(v) is None}
        if not numbers:
            return lambda cells: map(texts.__contains__, cells)
        return lambda cells: [c in texts or number(c) in numbers for c in cells]
    compare, as_text, as_number = _COMPARE[op], text(value), number(value)
    if as_number is None:
        return lambda cells: map(compare, cells, repeat(as_text))

    def test(cells: Sequence[str]) -> Iterable[bool]:
        numbers = _numbers(cells)
        if numbers is not None:
            return map(compare, numbers, repeat(as_number))
        return [
            compare(n, as_number) if (n := number(c)) is not None else compare(c, as_text)
            for c in cells
        ]

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


_CANONICAL_PATTERNS = {
    "int": r"0|-?[1-9][0-9]*",
    # Up to 15 significant digits and no exponent: repr(float(text)) == text, except
    # below 0.0001 (repr writes 1e-05), which Python's pattern refuses by a look-ahead.
    "float": r"-?(?:[1-9][0-9]{0,6}|0)\.(?:0|[0-9]{0,7}[1-9])",
    "bool": r"true|false",
}
_CANONICAL: Mapping[str, Callable[[str], object]] = {
    **{t: re.compile(p).fullmatch for t, p in _CANONICAL_PATTERNS.items()},
    "float": re.compile(r"-?(?:[1-9][0-9]{0,6}|0(?!\.0000))\.(?:0|[0-9]{0,7}[1-9])").fullmatch,
}

ARROW_CANONICAL = {t: f"^(?:{p})$" for t, p in _CANONICAL_PATTERNS.items()}
"""Cells already written as a cast writes them (for floats, also not ``-?0.0000...``)."""
