"""Masking: every secret value the process has read shows as ``***`` wherever it would
appear. Pure (no I/O); the one process-wide :data:`MASKER` is the labelled global state.

A secret's value is learned when it is read (``{{ secrets.NAME }}`` resolved as a node
starts), and from then on each exact occurrence of it is replaced, as CI systems do, in
node outputs and errors before they are stored, in log lines, and so in summaries, API
answers and ``execute``'s output, which all come from those. A multi-line value is
masked whole and line by line (a task may print it reformatted, one line at a time).

Values shorter than :data:`MIN_MASKED` characters are not masked: replacing every
``"no"`` or ``"1"`` in all text would make logs and outputs unreadable and hide nothing
a reader could not guess; such a secret is reported when read (see the secrets store).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["MASK", "MASKER", "MIN_MASKED", "Masker", "holds_mask"]

MASK: Final = "***"
_JSON_ESCAPED: Final = re.compile(r'["\\\x00-\x1f]')
"""What JSON text shows escaped (``orjson`` writes the rest of Unicode as it is)."""
MIN_MASKED: Final = 4
"""The fewest characters a secret value needs to be masked."""


class Masker:
    """The secret values seen so far, and their replacement by ``***`` in text and JSON."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.same_in_json = True
        """Whether every value reads the same inside JSON text (nothing in it is escaped),
        so masking the encoded text is enough (a log line: one pass, not a walk)."""

    def __bool__(self) -> bool:
        """Whether there is anything to mask (callers skip the walk when not)."""
        return self._pattern is not None

    def learn(self, value: str) -> bool:
        """Mask ``value`` (and each of its lines) from now on; whether it is long enough."""
        pieces = [value, *(line.strip() for line in value.splitlines())]
        new = {p for p in pieces if len(p) >= MIN_MASKED} - self._values
        if new:
            self._compile(self._values | new)
        return len(value) >= MIN_MASKED

    def forget(self, values: Iterable[str] | None = None) -> None:
        """Stop masking ``values`` (all, when None); for tests that reuse the process."""
        self._compile(set() if values is None else self._values - set(values))

    def _compile(self, values: set[str]) -> None:
        self._values = values
        # Longest first: a value that contains another is replaced whole.
        ordered = sorted(values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.same_in_json = not any(_JSON_ESCAPED.search(value) for value in values)

    def text(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string, keys included, masked; what holds no
        secret is returned as it is, not copied: treat the result as read-only."""
        if self._pattern is None:
            return value
        return self._walk(value, 0)

    def _walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, Mapping):
            items = {
                self.text(k) if isinstance(k, str) else k: self._walk(v, depth + 1)
                for k, v in value.items()
            }
            same = len(items) == len(value) and all(
                k in items and items[k] is v for k, v in value.items()
            )
            return value if same else items
        if isinstance(value, list | tuple):
            walked = [self._walk(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(walked, value, strict=True)):
                return value
            return walked
        return value


def holds_mask(value: Any) -> bool:
    """Whether a string somewhere in ``value`` (JSON-like, keys included) shows ``***``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if MASK in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


_MAX_DEPTH: Final = 200
"""Deeper than any JSON the strict loader takes (100 levels): a guard, not a limit."""

MASKER: Final = Masker()
"""The process's masker: the secrets store teaches it, logs and the engine apply it."""
