"""Strict JSON for workflow files and node outputs: UTF-8, no duplicate keys or NaN,
integers within 64 bits, bounded depth. Pure."""

from __future__ import annotations

import codecs
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Mapping
from functools import partial
from itertools import accumulate
from typing import Any

from wfe_daemon.errors import WorkflowRejected

MAX_OUTPUT_DEPTH = 250
"""The deepest nesting an output may have (orjson, which encodes outputs, stops at 255)."""

_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def compact(value: Any) -> str:
    """``value`` as strict, compact JSON text (no NaN or Infinity: raises ValueError).

    Raises:
        TypeError: a value JSON cannot hold.
        ValueError: NaN or Infinity.
    """
    return _COMPACT.encode(value)


def unfit(value: Any, where: str = "output") -> str | None:
    """Where the first value in ``value`` that JSON cannot carry without loss is, and why.

    That is an integer beyond 64 bits, a string or key with a lone surrogate, NaN or
    Infinity, a key that is not a string, or a value that is not JSON at all; the answer
    is one line with a dotted path from ``where``, e.g.
    ``output.json.a: integer 1267... does not fit in 64 bits`` (or :func:`too_deep`, when
    it nests deeper than :data:`MAX_OUTPUT_DEPTH` first). ``None`` when all fit.
    """
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if depth > MAX_OUTPUT_DEPTH:  # named at the top: a path 250 levels long says nothing
            return too_deep(where)
        problem = _unfit_scalar(item)
        if problem is not None:
            return f"{path}: {problem}"
        if isinstance(item, Mapping):
            for key in item:
                if not isinstance(key, str):
                    return f"{path}: key {show(key)} is not a string"
                if _SURROGATE.search(key):
                    return f"{path}: key {show(key)} holds a lone surrogate"
            stack.extend(
                (_join(path, key), sub, depth + 1) for key, sub in reversed(list(item.items()))
            )
        elif isinstance(item, list | tuple):
            stack.extend(
                (f"{path}.{i}", sub, depth + 1) for i, sub in reversed(list(enumerate(item)))
            )
    return None


def too_deep(where: str = "output") -> str:
    """The problem of a value nested deeper than :data:`MAX_OUTPUT_DEPTH`, or holding itself."""
    return f"{where}: nested deeper than {MAX_OUTPUT_DEPTH} levels (or it holds itself)"


def _unfit_scalar(item: Any) -> str | None:
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, str):
        # repr shows a lone surrogate as an escape: the message itself stays valid UTF-8
        return f"string {show(item)} holds a lone surrogate" if _SURROGATE.search(item) else None
    if isinstance(item, int):
        fits = INT_MIN <= item <= INT_MAX
        return None if fits else f"integer {show(item)} does not fit in 64 bits"
    if isinstance(item, float):
        return None if math.isfinite(item) else f"number {item} is not a JSON number"
    if isinstance(item, Mapping | list | tuple):
        return None
    return f"{type(item).__name__} is not a JSON value"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


MAX_DEPTH = 100
"""Deepest nesting of arrays and objects a workflow file may use."""

# The depth pre-scan works on bytes: in UTF-8 the bytes of '"', '\\' and brackets never
# occur inside a multi-byte character. An unterminated string runs to the end of the
# text ('"?'), so the scan stays linear whatever the input.
_STRING_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
_OPENS = bytes.maketrans(b"[{]}", b"\x01\x01\x00\x00")
_CLOSES = bytes.maketrans(b"[{]}", b"\x00\x00\x01\x01")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Only a file with a run of 19 or more digits can hold an integer beyond 64 bits. Digits
# become b"1" and the rest b"0", then one substring search (a regex took 40 ms a MB).
_DIGIT_MARKS = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_LONG_DIGITS = b"1" * 19

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""The integers JSON here carries (orjson's range: it encodes summaries and outputs)."""


def load_json(data: bytes) -> Any:
    """Parse a workflow file's bytes as strict JSON.

    A UTF-8 byte-order mark is tolerated. Numbers that are not finite, duplicate keys, lone
    surrogates and nesting deeper than :data:`MAX_DEPTH` are refused. The depth is checked
    by a linear pre-scan, so hostile input cannot exhaust the stack.

    Raises:
        WorkflowRejected: with one message saying why the bytes are not acceptable JSON.
            No other exception escapes, whatever the bytes.
    """
    body = bytes(data).removeprefix(codecs.BOM_UTF8)
    text = _decode(body)
    if not text.strip():
        raise WorkflowRejected(["invalid JSON: the file is empty"])
    if _too_deep(body):
        raise WorkflowRejected([f"invalid JSON: nesting deeper than {MAX_DEPTH} levels"])
    # The integer hook costs a call per number: only a file with a long one needs it.
    parse_int = partial(_int, text) if _LONG_DIGITS in body.translate(_DIGIT_MARKS) else None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=parse_int,
        )
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise WorkflowRejected([message]) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer with too many digits
        raise WorkflowRejected([f"invalid JSON: {str(exc).split(';')[0]}"]) from exc
    if _SURROGATE_ESCAPE.search(body) and _has_surrogate(value):
        raise WorkflowRejected(["invalid JSON: a string holds a lone surrogate (\\ud800-\\udfff)"])
    return value


def _decode(body: bytes) -> str:
    """Decode UTF-8, naming UTF-16 and UTF-32 when the bytes look like them."""
    if body.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        found = "UTF-32 (it starts with a UTF-32 byte-order mark)"
    elif body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        found = "UTF-16 (it starts with a UTF-16 byte-order mark)"
    elif b"\x00" in body[:2]:
        # JSON starts with an ASCII character, so a NUL in the first two bytes means
        # a wider encoding without a byte-order mark.
        wide = "UTF-32" if body[:4].count(0) == 3 else "UTF-16"
        found = f"{wide} (NUL bytes between its characters)"
    else:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = exc.start
            message = f"not UTF-8: invalid byte 0x{body[at]:02x} at offset {at}"
            raise WorkflowRejected([message]) from exc
    raise WorkflowRejected([f"not UTF-8: the file looks like {found}; save it as UTF-8"])


def _too_deep(body: bytes) -> bool:
    """Whether arrays and objects nest deeper than MAX_DEPTH, strings ignored."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    if b"\\" in body:
        brackets = _STRING_TOKEN.sub(b"", body).translate(None, _NOT_BRACKETS)
    else:
        # Without escapes a string runs from one quote to the next: keep the quotes and
        # brackets alone (in C), then every other piece between quotes, the ones outside
        # strings. Four times faster than the scan above, which takes a regex match a string.
        pieces = body.translate(None, _NOT_QUOTES_OR_BRACKETS).split(b'"')
        brackets = b"".join(pieces[::2])
    opened = accumulate(brackets.translate(_OPENS))
    closed = accumulate(brackets.translate(_CLOSES))
    # accumulate, map and filter run in C, lazily: the scan stops at the first level too deep
    depths = map(operator.sub, opened, closed)
    return next(filter(partial(operator.lt, MAX_DEPTH), depths), None) is not None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        key = next(k for k, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise WorkflowRejected([f"invalid JSON: duplicate key {show(key)}"])
    return obj


def _constant(name: str) -> Any:
    raise WorkflowRejected([f"invalid JSON: {name} is not a JSON number"])


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WorkflowRejected([f"invalid JSON: number {show(text)} is out of range"])
    return value


def _int(text: str, digits: str) -> int:
    value = int(digits)
    if not INT_MIN <= value <= INT_MAX:
        at = text.find(digits)
        line = text.count("\n", 0, at) + 1
        column = at - text.rfind("\n", 0, at)
        raise WorkflowRejected(
            [
                f"invalid JSON: integer {show(value)} at line {line}, column"
                f" {column} does not fit in 64 bits"
            ]
        )
    return value


def _has_surrogate(value: Any) -> bool:
    """Whether any string (key or value) nested in ``value`` holds a surrogate code point."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def show(value: Any) -> str:
    """A short, one-line rendering of a JSON value for a problem message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
