"""The subset of JSON Schema a workflow's ``params`` may use. Pure.

A run's parameters are a handful of flat values, so ``params`` takes the keywords that
describe one value each (types, bounds, ``enum``, ``format``...) and none whose cost can
grow without bound: ``$ref`` and the combinators (``anyOf``, ``oneOf``, ``allOf``,
``not``, ``if``) multiply the work at each level of nesting, and ``pattern`` runs the
writer's regular expression, which can backtrack for minutes on a short value. What is
left checks a value in time linear in the schema and the value, so a small document
can never stall the daemon. The schema's size and depth are bounded too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from wfe_daemon.core.strictjson import show

__all__ = [
    "DRAFT_2020_12",
    "MAX_ARGUMENT_VALUES",
    "MAX_DEPTH",
    "MAX_ENUM",
    "MAX_NODES",
    "SUPPORTED",
    "arguments_problem",
    "schema_problems",
]

DRAFT_2020_12: Final = "https://json-schema.org/draft/2020-12/schema"
"""The one ``$schema`` a ``params`` may name (or leave out)."""

SUPPORTED: Final = frozenset(
    {
        "type",
        "properties",
        "required",
        "default",
        "enum",
        "const",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "additionalProperties",
        "title",
        "description",
        "examples",
        "$schema",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
"""The keywords a ``params`` schema may use."""

MAX_DEPTH: Final = 6
"""Schemas nested in ``params`` (through ``properties`` and ``items``), itself included:
a list of objects holding lists (``targets[].ports[]``) is 5."""
MAX_NODES: Final = 10_000
"""The most JSON values (objects, lists, scalars, keys) a ``params`` schema may hold."""
MAX_ENUM: Final = 1_000
"""The most values one ``enum`` may list."""
MAX_ARGUMENT_VALUES: Final = 100_000
"""The most JSON values (counted as in the schema) a run's ``arguments`` may hold."""

_ALTERNATIVE: Final = 'use "enum" or "format" instead'
_WHY: Final[Mapping[str, str]] = {
    "$ref": "write the schema out in place",
    "$defs": "write the schema out in place",
    "definitions": "write the schema out in place",
    "$dynamicRef": "write the schema out in place",
    "anyOf": f"a parameter has one shape; {_ALTERNATIVE}",
    "oneOf": f"a parameter has one shape; {_ALTERNATIVE}",
    "allOf": "a parameter has one shape; list its keywords in one schema",
    "not": f"a parameter has one shape; {_ALTERNATIVE}",
    "if": f"a parameter has one shape; {_ALTERNATIVE}",
    "then": f"a parameter has one shape; {_ALTERNATIVE}",
    "else": f"a parameter has one shape; {_ALTERNATIVE}",
    "pattern": f"a regular expression can take unbounded time on a short value; {_ALTERNATIVE}",
    "patternProperties": "a run's parameters are named values: list them in properties",
}
_GENERIC: Final = (
    "a run's parameters are flat values, checked with a small part of JSON Schema (see"
    " the README's 'Parameters and secrets')"
)


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Every way ``schema`` leaves the supported subset, as ``params...: ...`` problems.

    An empty list means the schema is safe to hand to a JSON Schema validator: no
    references, no combinators, no regular expressions, at most :data:`MAX_DEPTH` levels
    and :data:`MAX_NODES` values.
    """
    size = _count(schema, MAX_NODES + 1)
    if size > MAX_NODES:
        return [f"params: too large: at most {MAX_NODES} values in the schema"]
    problems: list[str] = []
    declared = schema.get("$schema", DRAFT_2020_12)
    if declared not in (DRAFT_2020_12, DRAFT_2020_12 + "#"):
        problems.append(
            f"params.$schema: only {DRAFT_2020_12!r} is supported (or leave it out),"
            f" got {show(declared)}"
        )
    _check(schema, "params", 1, problems)
    return problems


def arguments_problem(arguments: Any) -> str | None:
    """Why ``arguments`` is too large to check (more than :data:`MAX_ARGUMENT_VALUES`
    JSON values), or None."""
    if _count(arguments, MAX_ARGUMENT_VALUES + 1) > MAX_ARGUMENT_VALUES:
        return f"arguments: too large: at most {MAX_ARGUMENT_VALUES} values in all"
    return None


def _check(schema: Any, where: str, depth: int, problems: list[str]) -> None:
    if isinstance(schema, bool) and depth > 1:  # true: anything; false: nothing
        return
    if not isinstance(schema, Mapping):
        problems.append(f"{where}: must be a schema object, got {show(schema)}")
        return
    if depth > MAX_DEPTH:
        problems.append(f"{where}: nested too deeply: at most {MAX_DEPTH} levels of schemas")
        return
    _keyword_problems(schema, where, depth, problems)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, prop in properties.items():
            _check(prop, f"{where}.properties.{name}", depth + 1, problems)
    elif "properties" in schema:
        problems.append(f"{where}.properties: must be an object of schemas")
    if "items" in schema:
        _check(schema["items"], f"{where}.items", depth + 1, problems)


def _keyword_problems(
    schema: Mapping[str, Any], where: str, depth: int, problems: list[str]
) -> None:
    """The problems of ``schema``'s own keywords (not of the schemas nested in it)."""
    for key in schema:
        if key not in SUPPORTED or (key == "$schema" and depth > 1):
            why = _WHY.get(key, _GENERIC)
            problems.append(f"{where}: {show(key)} is not supported in params: {why}")
    enum = schema.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM:
        problems.append(f"{where}.enum: too long: at most {MAX_ENUM} values")
    extra = schema.get("additionalProperties", False)
    if not isinstance(extra, bool):
        problems.append(f"{where}.additionalProperties: must be true or false in params")


def _count(value: Any, limit: int) -> int:
    """How many JSON values ``value`` holds, counting keys; stops past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, Mapping):
            count += len(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return count
