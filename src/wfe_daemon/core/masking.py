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

__all__ = ["MASK", "MASKER", "MIN_MASKED", "Masker", "MaskingFailed", "holds_mask"]

MASK: Final = "***"
MIN_MASKED: Final = 4
"""The fewest characters a secret value needs to be masked."""
_STRING_TOKEN: Final = re.compile(r'"(?:[^"\\]++|\\.)*+"')
"""A string in JSON text, quotes included."""


LONG_PIECE: Final = 4096
"""Above this many characters a piece is masked in its raw form only: a long value is
rarely reshaped, and each extra form would cost as much again to learn and to search."""
_MAX_NESTING: Final = 100
"""The deepest trie pattern compiled (the regex parser recurses once per group); a deeper
one (values that extend each other, ``aaaa``, ``aaaaa``...) is a longest-first list."""


class MaskingFailed(Exception):
    """A value could not be learned: it is not masked, so it must not be used."""


def _variants(piece: str) -> set[str]:
    """The forms ``piece`` takes when a message or a tool reshapes it: as written, inside
    a ``repr()``, inside JSON text (with and without ``\\uXXXX`` escapes), and
    percent-encoded (a URL's path and its query); only as written above
    :data:`LONG_PIECE` characters."""
    if len(piece) > LONG_PIECE:
        return {piece}
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


def _alternation(values: Iterable[str]) -> re.Pattern[str]:
    """One pattern matching any of ``values``, the longest where several start at one
    place (a value that contains another is replaced whole).

    Short values are built as a trie (``ab(?:c|d(?:e)?)``), so a search tries one branch
    per character rather than every value at every position: hundreds of values (each
    line of a key file, in each of its forms) cost about what one does. Long ones, and a
    trie too deep to compile, are listed longest first.
    """
    values = set(values)
    long = sorted((value for value in values if len(value) > LONG_PIECE), key=len, reverse=True)
    trie: dict[str, Any] = {}
    for value in values:
        if len(value) <= LONG_PIECE:
            node = trie
            for char in value:
                node = node.setdefault(char, {})
            node[""] = {}
    short, nesting = _trie_regex(trie)
    if nesting > _MAX_NESTING:
        ordered = sorted(values - set(long), key=len, reverse=True)
        short = "|".join(re.escape(value) for value in ordered)
    branches = [re.escape(value) for value in long] + ([short] if short else [])
    return re.compile("|".join(branches))


def _trie_regex(root: dict[str, Any]) -> tuple[str, int]:
    """The pattern of ``root``'s trie, and how deeply its groups nest (built without
    recursion: a trie is as deep as its longest value)."""
    out: list[str] = []
    depth = deepest = 0
    stack: list[str | dict[str, Any]] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            depth += item.count("(") - item.count(")")
            deepest = max(deepest, depth)
            continue
        node = item
        while len(node) == 1 and "" not in node:  # a chain: no branch, no value ends here
            [(char, node)] = node.items()
            out.append(re.escape(char))
        branches = [(char, child) for char, child in node.items() if char]
        if not branches:
            continue
        opens, closes = [], []
        if "" in node:  # a value ends here: the longer ones are tried first (greedy)
            opens.append("(?:")
            closes.append(")?")
        if len(branches) > 1:
            opens.append("(?:")
            closes.insert(0, ")")
        work: list[str | dict[str, Any]] = ["".join(opens)] if opens else []
        for index, (char, child) in enumerate(branches):
            work.append(("|" if index else "") + re.escape(char))
            work.append(child)
        if closes:
            work.append("".join(closes))
        stack.extend(reversed(work))
    return "".join(out), deepest


class _Group:
    """The patterns of the pieces learned together (one secret's value)."""

    __slots__ = ("encoded", "pattern", "pieces")

    def __init__(self, pieces: frozenset[str]) -> None:
        forms = {form for piece in pieces for form in _variants(piece)}
        self.pieces = pieces
        self.pattern = _alternation(forms)
        self.encoded = _alternation(json.dumps(form, ensure_ascii=False)[1:-1] for form in forms)
        """Each form as it reads inside a JSON string: a line holding none of them needs
        no masking (one search decides)."""


class Masker:
    """The secret values seen so far, and their replacement by ``***`` in text and JSON.

    Each value learned keeps its own patterns, built once: learning one more secret costs
    what that secret does, not what all of them do.
    """

    def __init__(self) -> None:
        self._learned: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # secrets are read, and learned, in worker threads
        self._groups: tuple[_Group, ...] = ()

    def __bool__(self) -> bool:
        """Whether there is anything to mask (callers skip the walk when not)."""
        return bool(self._groups)

    def learn(self, value: str) -> bool:
        """Mask ``value`` (each of its lines, and the forms a message or a tool gives them)
        from now on; whether it is long enough to be masked.

        Raises:
            MaskingFailed: its pattern could not be built; nothing was learned, and the
                value must not be used.
        """
        with self._lock:
            new = frozenset(_pieces(value)) - self._learned
            if new:
                group = _build(new)
                self._groups = (*self._groups, group)
                self._learned = self._learned | new
        return len(value) >= MIN_MASKED

    def forget(self, values: Iterable[str] | None = None) -> None:
        """Stop masking ``values`` (all, when None); for tests that reuse the process."""
        with self._lock:
            if values is None:
                self._groups, self._learned = (), frozenset()
                return
            gone = {piece for value in values for piece in _pieces(value)}
            groups = []
            for group in self._groups:
                if group.pieces & gone:
                    if kept := group.pieces - gone:
                        groups.append(_build(kept))
                else:
                    groups.append(group)
            self._groups, self._learned = tuple(groups), self._learned - gone

    def _search(self, text: str) -> bool:
        """Whether ``text`` (JSON text) holds a form of a learned value."""
        return any(group.encoded.search(text) is not None for group in self._groups)

    def text(self, text: str) -> str:
        """``text`` with every known secret value (in each of its forms) shown as ``***``."""
        groups = self._groups
        if not groups or not text:
            return text
        if len(groups) == 1:
            return groups[0].pattern.sub(MASK, text)
        spans = sorted(m.span() for group in groups for m in group.pattern.finditer(text))
        if not spans:
            return text
        parts, done = [], 0  # overlapping occurrences of two values are masked as one
        for begin, end in spans:
            if end <= done:
                continue
            if begin >= done:
                parts.append(text[done:begin])
                parts.append(MASK)
            done = end
        parts.append(text[done:])
        return "".join(parts)

    def json_text(self, line: str) -> str:
        """``line`` (JSON text) with every secret inside its strings shown as ``***``.

        Only string contents change, so the result parses as ``line`` did: a secret of
        digits never touches a number (``"run_id":2026``) or the syntax.
        """
        if not self._groups or not self._search(line):
            return line
        return _STRING_TOKEN.sub(self._json_string, line)

    def _json_string(self, match: re.Match[str]) -> str:
        token = match.group()
        if not self._search(token):
            return token
        text = json.loads(token)
        masked = self.text(text)
        return token if masked == text else json.dumps(masked, ensure_ascii=False)

    def value(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string, keys included, masked; what holds no
        secret is returned as it is, not copied: treat the result as read-only."""
        if not self._groups or isinstance(value, int | float | bool) or value is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        try:  # one search over the encoded value decides, most of the time
            clean = not self._search(json.dumps(value, ensure_ascii=False, default=repr))
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


def _build(pieces: frozenset[str]) -> _Group:
    """The patterns of ``pieces``; :class:`MaskingFailed` when they cannot be built."""
    try:
        return _Group(pieces)
    except (RecursionError, MemoryError, OverflowError, re.error) as exc:
        raise MaskingFailed(f"its masking pattern cannot be built ({type(exc).__name__})") from None


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
