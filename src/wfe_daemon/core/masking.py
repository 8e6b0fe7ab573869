"""Masking: every secret value the process has read shows as ``***`` wherever it would
appear. Pure (no I/O); the one process-wide :data:`MASKER` is the labelled global state.

A secret's value is learned when it is read (``{{ secrets.NAME }}`` resolved as a node
starts), and from then on each exact occurrence of it is replaced, as CI systems do, in
node outputs and errors before they are stored, in log lines, and so in summaries, API
answers and ``execute``'s output, which all come from those. A multi-line value is
masked whole and line by line (a task may print it reformatted, one line at a time), and
each in the forms messages and tools give it: inside a ``repr()``, JSON-escaped, and
percent-encoded. In JSON text (a log line) only strings are masked, so the line still
parses whatever the secret looks like.

Values shorter than :data:`MIN_MASKED` characters are not masked: replacing every
``"no"`` or ``"1"`` in all text would make logs and outputs unreadable and hide nothing
a reader could not guess; such a secret is reported when read (see the secrets store).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MASKER", "MIN_MASKED", "Masker", "holds_mask"]

MASK: Final = "***"
MIN_MASKED: Final = 4
"""The fewest characters a secret value needs to be masked."""
_STRING_TOKEN: Final = re.compile(r'"(?:[^"\\]++|\\.)*+"')
"""A string in JSON text, quotes included."""


def _variants(piece: str) -> set[str]:
    """The forms ``piece`` takes when a message or a tool reshapes it: as written, inside
    a ``repr()``, inside JSON text (with and without ``\\uXXXX`` escapes), and
    percent-encoded (a URL's path and its query)."""
    forms = {
        piece,
        repr(piece)[1:-1],
        json.dumps(piece, ensure_ascii=False)[1:-1],
        json.dumps(piece)[1:-1],
        quote(piece),
        quote(piece, safe=""),
        quote_plus(piece),
    }
    return {form for form in forms if len(form) >= MIN_MASKED}


def _alternation(values: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``values``, the longest where several start at one
    place (a value that contains another is replaced whole).

    Built as a trie (``ab(?:c|d(?:e)?)``), so a search tries one branch per character
    rather than every value at every position: hundreds of values (each line of a key
    file, in each of its forms) cost about what one does.
    """
    trie: dict[str, Any] = {}
    for value in values:
        node = trie
        for char in value:
            node = node.setdefault(char, {})
        node[""] = {}
    return re.compile(_trie_regex(trie)) if trie else None


def _trie_regex(node: dict[str, Any]) -> str:
    run = []
    while len(node) == 1 and "" not in node:  # a chain: no branch, no value ends here
        [(char, node)] = node.items()
        run.append(re.escape(char))
    branches = [re.escape(char) + _trie_regex(child) for char, child in node.items() if char]
    if not branches:
        return "".join(run)
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a value ends here: the longer ones are tried first (greedy)
        body = f"(?:{body})?"
    return "".join(run) + body


class Masker:
    """The secret values seen so far, and their replacement by ``***`` in text and JSON."""

    def __init__(self) -> None:
        self._learned: set[str] = set()
        self._lock = threading.Lock()  # secrets are read, and learned, in worker threads
        self._pattern: re.Pattern[str] | None = None
        self._encoded: re.Pattern[str] | None = None
        """Each form of each value as it reads inside a JSON string: a line holding none
        of them needs no masking (one search decides)."""

    def __bool__(self) -> bool:
        """Whether there is anything to mask (callers skip the walk when not)."""
        return self._pattern is not None

    def learn(self, value: str) -> bool:
        """Mask ``value`` (each of its lines, and the forms a message or a tool gives them)
        from now on; whether it is long enough to be masked."""
        with self._lock:
            new = set(_pieces(value)) - self._learned
            if new:
                self._compile(self._learned | new)
        return len(value) >= MIN_MASKED

    def forget(self, values: Iterable[str] | None = None) -> None:
        """Stop masking ``values`` (all, when None); for tests that reuse the process."""
        with self._lock:
            if values is None:
                self._compile(set())
            else:
                self._compile(self._learned - {p for value in values for p in _pieces(value)})

    def _compile(self, learned: set[str]) -> None:
        self._learned = learned
        forms = {form for piece in learned for form in _variants(piece)}
        self._pattern = _alternation(forms)
        self._encoded = _alternation(json.dumps(form, ensure_ascii=False)[1:-1] for form in forms)

    def text(self, text: str) -> str:
        """``text`` with every known secret value (in each of its forms) shown as ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def json_text(self, line: str) -> str:
        """``line`` (JSON text) with every secret inside its strings shown as ``***``.

        Only string contents change, so the result parses as ``line`` did: a secret of
        digits never touches a number (``"run_id":2026``) or the syntax.
        """
        encoded = self._encoded
        if encoded is None or encoded.search(line) is None:
            return line
        return _STRING_TOKEN.sub(self._json_string, line)

    def _json_string(self, match: re.Match[str]) -> str:
        token = match.group()
        assert self._encoded is not None
        if self._encoded.search(token) is None:
            return token
        text = json.loads(token)
        masked = self.text(text)
        return token if masked == text else json.dumps(masked, ensure_ascii=False)

    def value(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string, keys included, masked; what holds no
        secret is returned as it is, not copied: treat the result as read-only."""
        encoded = self._encoded
        if encoded is None or isinstance(value, int | float | bool) or value is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        try:  # one search over the encoded value decides, most of the time
            clean = encoded.search(json.dumps(value, ensure_ascii=False, default=repr)) is None
        except (TypeError, ValueError, RecursionError):  # not JSON-like: walk it
            clean = False
        return value if clean else self._walk(value, 0)

    def _walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if depth > _MAX_DEPTH:
            return value
        if isinstance(value, Mapping):
            changed: dict[Any, Any] | None = None
            for key, item in value.items():
                new_key = self.text(key) if isinstance(key, str) else key
                new = self._walk(item, depth + 1)
                if changed is None and (new is not item or new_key != key):
                    changed = dict(_until(value, key))
                if changed is not None:
                    changed[new_key] = new
            return value if changed is None else changed
        if isinstance(value, list | tuple):
            walked = [self._walk(item, depth + 1) for item in value]
            if all(new is old for new, old in zip(walked, value, strict=True)):
                return value
            return walked
        return value


def _pieces(value: str) -> list[str]:
    """What of ``value`` is masked: the whole and each line (a task may print it
    reformatted, a line at a time), those long enough."""
    pieces = [value, *(line.strip() for line in value.splitlines())]
    return [piece for piece in pieces if len(piece) >= MIN_MASKED]


def _until(mapping: Mapping[Any, Any], stop: Any) -> Iterable[tuple[Any, Any]]:
    """The items of ``mapping`` before the key ``stop``."""
    for key, item in mapping.items():
        if key == stop:
            return
        yield key, item


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
