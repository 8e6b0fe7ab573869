"""What a workflow's ``params`` schema may hold: the documented subset of JSON Schema.
Each test drives ``validate``, a real daemon's inbox or its HTTP API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import Daemons, drop, free_port, post_workflow, wait_result

TOKEN = "schema-t0ken"
Cli = Callable[..., Any]


def doc_with(schema: Any, **arguments: Any) -> dict[str, Any]:
    """A one-node workflow with ``schema`` as its ``params`` and ``arguments``."""
    return {
        "name": "s",
        "params": schema,
        "arguments": arguments,
        "nodes": [{"id": "n", "type": "echo"}],
    }


def exploding_schema(levels: int) -> dict[str, Any]:
    """A schema under 2 KB whose full check visits 2**levels branches for a bad value."""
    defs: dict[str, Any] = {"l0": {"type": "integer"}}
    for level in range(1, levels + 1):
        below = {"$ref": f"#/$defs/l{level - 1}"}
        defs[f"l{level}"] = {"anyOf": [below, below]}
    return {
        "type": "object",
        "$defs": defs,
        "properties": {"x": {"$ref": f"#/$defs/l{levels}"}},
    }


def test_validate_refuses_what_the_subset_leaves_out(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """A ``$ref`` web that would take minutes to check, a backtracking ``pattern``,
    combinators, ``patternProperties``, a non-boolean ``additionalProperties``, too many
    levels and another draft are each one ``params...`` line naming the keyword and why;
    nothing is checked against them, and the command answers at once."""
    cases: list[tuple[Any, str]] = [
        (exploding_schema(25), "params: '$defs' is not supported in params: write the schema"),
        (
            {"type": "object", "properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}},
            "params.properties.x: 'pattern' is not supported in params: a regular expression"
            ' can take unbounded time on a short value; use "enum" or "format" instead',
        ),
        (
            {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}]}}},
            "params.properties.x: 'oneOf' is not supported in params: a parameter has one shape",
        ),
        (
            {"type": "object", "patternProperties": {"(": {}}},
            "params: 'patternProperties' is not supported in params: a run's parameters are"
            " named values: list them in properties",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            "params.additionalProperties: must be true or false in params",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"items": {"items": {"items": {"items": {"items": {}}}}}}},
            },
            "params.properties.a.items.items.items.items.items: nested too deeply: at most 6"
            " levels",
        ),
        (
            {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"},
            "params.$schema: only 'https://json-schema.org/draft/2020-12/schema' is supported",
        ),
        (
            {"type": "object", "enum": list(range(20_000))},
            "params: too large: at most 10000 values in the schema",
        ),
    ]
    for schema, message in cases:
        done = run_cli("validate", write_workflow(doc_with(schema, x="a" * 27 + "!")))
        assert done.returncode == 2, (schema, done.stdout)
        assert "Traceback" not in done.stderr
        assert message in done.stderr, (message, done.stderr)


def test_malformed_schema_keywords_are_problems_not_tracebacks(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """A ``$schema`` that is an object or a number, and a keyword of the wrong type, make
    ``validate`` exit 2 with a ``params...`` line, never a traceback."""
    cases: list[tuple[Any, str]] = [
        ({"$schema": {}, "type": "object"}, "params.$schema: only"),
        ({"$schema": 5, "type": "object"}, "params.$schema: only"),
        ({"type": "object", "properties": {"x": {"minimum": "one"}}}, "params.properties.x"),
        ({"type": "object", "required": "x"}, "params.required: 'x' is not of type 'array'"),
        ({"type": "object", "properties": 3}, "params.properties: must be an object"),
    ]
    for schema, message in cases:
        done = run_cli("validate", write_workflow(doc_with(schema)))
        assert done.returncode == 2, (schema, done.stdout)
        assert "Traceback" not in done.stderr, done.stderr
        assert message in done.stderr, (message, done.stderr)


def test_the_subset_still_checks_values(run_cli: Cli, write_workflow: Callable[..., Path]) -> None:
    """Within the subset values are checked as before: bounds, lengths, items, ``const``,
    ``additionalProperties: false``; a good set of values validates."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "n": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.5},
            "code": {"type": "string", "minLength": 2, "maxLength": 3, "title": "Code"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "mode": {"const": "fast", "default": "fast"},
        },
    }
    done = run_cli(
        "validate", write_workflow(doc_with(schema, n=0, code="x", tags=["a", "a"], other=1))
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for message in (
        "arguments: Additional properties are not allowed ('other' was unexpected)",
        "arguments.code: 'x' is too short",
        "arguments.n: 0 is less than or equal to the minimum of 0",
        "arguments.tags: ['a', 'a'] has non-unique elements",
    ):
        assert message in done.stderr, (message, done.stderr)
    done = run_cli("validate", write_workflow(doc_with(schema, n=1.5, code="ab", tags=["a"])))
    assert done.returncode == 0, done.stderr


def post(port: int, doc: dict[str, Any]) -> tuple[int, Any]:
    """POST ``doc`` to the API with this module's token."""
    return post_workflow(port, doc, TOKEN)


def test_a_daemon_rejects_bad_schemas_and_keeps_serving(daemons: Daemons) -> None:
    """Files in the inbox with a malformed or exploding schema are REJECTED at once (not
    retried, not a hang), the API answers 422, and a good run goes through after them."""
    port = free_port()
    daemon = daemons.start(WFE_HTTP_PORT=str(port), WFE_API_TOKEN=TOKEN)
    drop(daemons.inbox, "bad-draft.json", doc_with({"$schema": 5, "type": "object"}))
    drop(daemons.inbox, "slow.json", doc_with(exploding_schema(25), x="no"))
    for stem, message in (("bad-draft", "params.$schema: only"), ("slow", "'$defs'")):
        result = wait_result(daemons.outbox, stem)
        assert result["status"] == "REJECTED"
        assert any(message in error for error in result["errors"]), result["errors"]
    status, answer = post(port, doc_with({"$schema": {}, "type": "object"}))
    assert status == 422, answer
    assert "params.$schema: only" in json.dumps(answer)
    drop(daemons.inbox, "good.json", doc_with({"type": "object"}) | {"name": "good"})
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    assert "workflow.error" not in daemon.output()
    assert "Traceback" not in daemon.output()


@pytest.mark.timeout(30)
def test_unique_items_over_thousands_of_objects_is_checked_at_once(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """``uniqueItems`` over ten thousand objects (a pairwise check would take minutes)
    finds the one repeated object, equal whatever its key order and number form."""
    schema = {
        "type": "object",
        "properties": {"rows": {"type": "array", "uniqueItems": True, "items": {}}},
    }
    rows: list[Any] = [{"id": i, "k": "v"} for i in range(10_000)]
    done = run_cli("validate", write_workflow(doc_with(schema, rows=rows)))
    assert done.returncode == 0, done.stderr
    rows.append({"k": "v", "id": 17.0})
    done = run_cli("validate", write_workflow(doc_with(schema, rows=rows)))
    assert done.returncode == 2
    assert "arguments.rows: [{'id': 0, 'k': 'v'}," in done.stderr
    assert "has non-unique elements" in done.stderr


@pytest.mark.timeout(60)
def test_enum_and_const_over_many_items_are_checked_as_json_schema_says(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """An ``enum`` of 1,000 values under ``items`` checks 20,000 items, finding the one
    not listed; ``1.0`` equals ``1`` and an object matches whatever its key order, but
    ``true`` is not ``1``; ``const`` likewise."""
    listed: list[Any] = [f"region-{i}" for i in range(997)] + [1, {"a": 1, "b": [2]}, None]
    schema = {
        "type": "object",
        "properties": {
            "picks": {"type": "array", "items": {"enum": listed}},
            "fixed": {"const": {"x": [1, "y"]}},
        },
    }
    picks: list[Any] = ["region-996"] * 20_000 + [1.0, {"b": [2.0], "a": 1}, None]
    fixed = {"x": [1.0, "y"]}
    done = run_cli("validate", write_workflow(doc_with(schema, picks=picks, fixed=fixed)))
    assert done.returncode == 0, done.stderr
    picks[12_345] = True
    done = run_cli("validate", write_workflow(doc_with(schema, picks=picks, fixed=[1, "y"])))
    assert done.returncode == 2
    assert "arguments.picks.12345: True is not one of ['region-0'," in done.stderr
    assert "arguments.fixed: {'x': [1, 'y']} was expected" in done.stderr


def test_an_overlong_enum_and_oversized_arguments_are_problems(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """An ``enum`` of more than 1,000 values, and ``arguments`` of more than 100,000 JSON
    values, are problems naming the limit, not a long check."""
    schema = {"type": "object", "properties": {"r": {"items": {"enum": list(range(1001))}}}}
    done = run_cli("validate", write_workflow(doc_with(schema, r=[1])))
    assert done.returncode == 2
    assert "params.properties.r.items.enum: too long: at most 1000 values" in done.stderr
    many = {"type": "object", "properties": {"r": {"type": "array"}}}
    done = run_cli("validate", write_workflow(doc_with(many, r=list(range(100_000)))))
    assert done.returncode == 2
    assert "arguments: too large: at most 100000 values in all" in done.stderr


def test_annotations_boolean_subschemas_and_lists_of_objects_of_lists(
    run_cli: Cli, write_workflow: Callable[..., Path]
) -> None:
    """``$comment``, ``deprecated``, ``readOnly`` and ``writeOnly`` are accepted, as are
    ``true`` and ``false`` schemas under ``properties`` and ``items``, and a list of
    objects holding lists (``targets[].ports[]``) is checked item by item."""
    schema = {
        "type": "object",
        "$comment": "ports per target",
        "properties": {
            "targets": {
                "type": "array",
                "deprecated": False,
                "items": {
                    "type": "object",
                    "properties": {
                        "host": {"type": "string", "readOnly": True, "writeOnly": False},
                        "ports": {"type": "array", "items": {"type": "integer", "maximum": 65535}},
                        "extra": True,
                        "never": False,
                    },
                },
            },
            "anything": True,
        },
    }
    good = [{"host": "a", "ports": [22, 80], "extra": {"k": [1]}}]
    done = run_cli("validate", write_workflow(doc_with(schema, targets=good, anything=[{}])))
    assert done.returncode == 0, done.stderr
    bad = [{"host": "a", "ports": [22, 70000]}, {"host": "b", "ports": [], "never": 1}]
    done = run_cli("validate", write_workflow(doc_with(schema, targets=bad)))
    assert done.returncode == 2
    assert "arguments.targets.0.ports.1: 70000 is greater than the maximum of 65535" in (
        done.stderr
    )
    assert "arguments.targets.1: False schema does not allow 1" in done.stderr
