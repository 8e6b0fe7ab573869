"""References between nodes: ``{{ node_id.path.to.value }}`` in string params. Pure.

A reference names a node and a dotted path into that node's output; whole numbers index
lists (``{{ fetch.items.0.name }}``) and an empty path means the whole output
(``{{ fetch }}``). Spaces or tabs are allowed just inside the braces. Anything between
``{{`` and ``}}`` that does not fit this syntax is left alone as literal text.

A string that, once leading and trailing whitespace is stripped, is exactly one reference
resolves to the referenced value with its JSON type; references inside a longer string are
interpolated as text (strings as they are, anything else as compact JSON).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wfe_daemon.core.strictjson import compact
from wfe_daemon.errors import ParamsError

__all__ = ["RESERVED", "Ref", "contains_ref", "find_refs", "lookup", "only_refs", "resolve"]

RESERVED = frozenset({"params", "run", "secrets"})
"""Roots that name what a run is given, not a node: ``{{ params.X }}``, ``{{ run.id }}``,
``{{ run.scheduled_for }}``, ``{{ secrets.NAME }}``; no node may take these ids."""

_REF = re.compile(r"\{\{[ \t]*([A-Za-z0-9_-]{1,64})((?:\.[^.\s{}]+)*)[ \t]*\}\}")


@dataclass(frozen=True, slots=True)
class Ref:
    """One reference found in a string: ``{{ node_id.path }}``."""

    node_id: str
    path: tuple[str, ...]
    text: str
    """The reference as written, braces included."""


def _ref(match: re.Match[str]) -> Ref:
    root, path = match.group(1), match.group(2)
    if root == "secrets" and path:  # a secret's name may hold dots: it is one key
        return Ref(root, (path[1:],), match.group(0))
    return Ref(root, tuple(path[1:].split(".")) if path else (), match.group(0))


def contains_ref(s: str) -> bool:
    """Return whether the string ``s`` holds at least one reference."""
    return "{{" in s and _REF.search(s) is not None


_SCHEME_AROUND_REFS = re.compile(
    r"\s*(?:(?:Bearer|Basic|Token|Bot|Digest|ApiKey|Key|Negotiate)\s+)?[\s:@/._-]*", re.I
)
"""What may stand beside references in a value that still holds no literal secret: an
authorization scheme (``Bearer ``) and separators (``{{ a }}:{{ b }}``)."""


def only_refs(s: str) -> bool:
    """Whether ``s`` holds references and, besides them, at most an authorization scheme
    word and separators: nothing that could be a secret written out (``Bearer {{
    secrets.api }}`` is such a value, ``hunter2 {{ secrets.api }}`` is not)."""
    if "{{" not in s:
        return False
    rest, found = _REF.subn(" ", s)
    return found > 0 and _SCHEME_AROUND_REFS.fullmatch(rest) is not None


def find_refs(value: Any) -> list[Ref]:
    """Return every reference in the string values nested in ``value``, in document order.

    Args:
        value: a JSON-like structure of dicts, lists and scalars; dict keys are not searched.
    """
    refs: list[Ref] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "{{" in item:
                refs.extend(map(_ref, _REF.finditer(item)))
        elif isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, Mapping):  # last: the ABC check is slow, and every scalar gets it
            stack.extend(reversed(list(item.values())))
    return refs


def resolve(value: Any, outputs: Mapping[str, Any]) -> Any:
    """Return ``value`` with every reference replaced from ``outputs``.

    A string that is exactly one reference (after stripping surrounding whitespace) becomes
    the referenced value, keeping its JSON type; references inside a longer string are
    interpolated as text, non-strings as compact JSON. Sub-structures holding no reference
    are shared with ``value``, not copied: treat the result as read-only.

    Args:
        value: the node's params (or any JSON-like structure).
        outputs: node id to that node's output.

    Raises:
        ParamsError: a referenced node has no output, or the path does not exist in it.
    """
    if isinstance(value, str):
        return _resolve_string(value, outputs) if "{{" in value else value
    if isinstance(value, dict | Mapping):
        items = {key: resolve(item, outputs) for key, item in value.items()}
        changed = any(items[key] is not item for key, item in value.items())
        return items if changed else value
    if isinstance(value, list):
        resolved = [resolve(item, outputs) for item in value]
        changed = any(new is not old for new, old in zip(resolved, value, strict=True))
        return resolved if changed else value
    return value


def _resolve_string(s: str, outputs: Mapping[str, Any]) -> Any:
    whole = _REF.fullmatch(s.strip())
    if whole is not None:
        return lookup(_ref(whole), outputs)
    return _REF.sub(lambda m: _as_text(lookup(_ref(m), outputs)), s)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return compact(value)


def lookup(ref: Ref, outputs: Mapping[str, Any]) -> Any:
    """Return the value ``ref`` points at in ``outputs``.

    Raises:
        ParamsError: the node has no output, or the path does not exist in it.
    """
    if ref.node_id not in outputs:
        raise ParamsError(f"{ref.text}: no output from node '{ref.node_id}'")
    value = outputs[ref.node_id]
    for depth, segment in enumerate(ref.path):
        value = _step(value, segment, ref, depth)
    return value


def _where(ref: Ref, depth: int) -> str:
    if depth == 0:
        return f"'{ref.node_id}'" if ref.node_id in RESERVED else f"output of '{ref.node_id}'"
    return "'" + ".".join((ref.node_id, *ref.path[:depth])) + "'"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def _step(value: Any, segment: str, ref: Ref, depth: int) -> Any:
    """Index ``value`` by the path segment at ``depth``, or raise a ParamsError saying why."""
    if isinstance(value, Mapping):
        if segment not in value:
            raise ParamsError(f"{ref.text}: {_where(ref, depth)} has no key '{segment}'")
        return value[segment]
    if isinstance(value, list):
        if not (segment.isascii() and segment.isdigit()):
            raise ParamsError(
                f"{ref.text}: {_where(ref, depth)} is a list; '{segment}' is not an index"
            )
        if int(segment) >= len(value):
            raise ParamsError(
                f"{ref.text}: {_where(ref, depth)}: index {segment} out of range"
                f" (length {len(value)})"
            )
        return value[int(segment)]
    raise ParamsError(
        f"{ref.text}: cannot index {_kind(value)} ({_where(ref, depth)}) with '{segment}'"
    )
