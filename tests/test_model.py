"""Tests for strict JSON loading, workflow validation and secret redaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from scaling import LINEAR, growth
from wfe_daemon.core.model import (
    NodeDef,
    TriggerRule,
    WorkflowDef,
    is_secret_key,
    parse_workflow,
    public_definition,
    redact_secrets,
)
from wfe_daemon.core.refs import Ref
from wfe_daemon.core.strictjson import load_json
from wfe_daemon.errors import WorkflowRejected


class FakeCatalog:
    """Two task types: ``echo`` takes anything, ``sleep`` needs a numeric ``seconds``."""

    def __contains__(self, task_type: object) -> bool:
        return task_type in ("echo", "sleep")

    def refusal(self, task_type: str) -> str | None:
        return None

    def check_params(self, task_type: str, params: Mapping[str, Any]) -> list[str]:
        if task_type != "sleep":
            return []
        seconds = params.get("seconds")
        if isinstance(seconds, str) and "{{" in seconds:
            return []
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return ["seconds: must be a number"]
        return []


CATALOG = FakeCatalog()


def _doc(*nodes: Any, **top: Any) -> dict[str, Any]:
    return {"name": "wf", "nodes": list(nodes), **top}


def _problems(data: bytes | Mapping[str, Any]) -> list[str]:
    with pytest.raises(WorkflowRejected) as caught:
        parse_workflow(data, CATALOG)
    problems: list[str] = caught.value.problems
    return problems


def _load_problem(data: bytes) -> str:
    with pytest.raises(WorkflowRejected) as caught:
        load_json(data)
    [problem] = caught.value.problems
    assert isinstance(problem, str)
    return problem


# --- load_json: hostile bytes


def test_load_json_parses_plain_json() -> None:
    """Valid UTF-8 JSON loads as usual."""
    assert load_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


def test_utf8_bom_is_tolerated() -> None:
    """A UTF-8 byte-order mark before the JSON is accepted."""
    assert load_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_deep_nesting_is_rejected_without_recursion_error() -> None:
    """100,000 nested brackets are rejected with a clear message, in time linear in the size."""
    assert "nesting deeper than 100" in _load_problem(b"[" * 100_000 + b"]" * 100_000)
    assert "nesting deeper than 100" in _load_problem(b"[" * 100_000)

    def rejecting(n: int) -> Callable[[], Any]:
        data = b"[" * n + b"]" * n
        return lambda: _load_problem(data)

    assert growth(rejecting, 25_000) <= LINEAR


def test_nesting_limit_is_exactly_100() -> None:
    """100 levels load; 101 levels are rejected."""
    assert load_json(b"[" * 100 + b"]" * 100) is not None
    assert "nesting deeper" in _load_problem(b"{" + b'"a":[' * 100 + b"]" * 100 + b"}")


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    """Brackets inside strings, escaped quotes included, do not count towards the depth."""
    value = "[{" * 500 + '\\"' + "[" * 500
    assert load_json(json.dumps({"a": value}).encode())["a"] == value


def test_nesting_is_counted_outside_strings_with_and_without_escapes() -> None:
    """Strings full of brackets between the levels neither add nor hide depth, whether or
    not the file holds an escape (a file without one is scanned another way)."""
    for escape in ("", "\\n"):
        level = '{"k": "]]]}}' + escape + '", "v": [ "[[{", '
        deep = (level * 101).encode() + b"1" + b"]}" * 101
        assert "nesting deeper than 100" in _load_problem(deep)
        fits = (level * 50).encode() + b"1" + b"]}" * 50
        assert load_json(fits)["v"][1]["k"] == "]]]}}" + escape.replace("\\n", "\n")


def test_depth_prescan_stays_linear_on_a_large_file() -> None:
    """A file of many small strings and arrays is pre-scanned and parsed in time linear in
    its size (1 MB here; the default max_file_size is 10 MB)."""
    row = '["abc \\" [ def", 1, {"k": ["v"]}],'

    def loading(size: int) -> Callable[[], Any]:
        data = ("[" + row * (size // len(row)) + "0]").encode()
        return lambda: load_json(data)

    assert len(loading(1_000_000)()) == 1_000_000 // len(row) + 1
    assert growth(loading, 125_000) <= LINEAR


def test_unterminated_escaped_strings_stay_linear() -> None:
    """A hostile run of escaped quotes does not make the depth pre-scan quadratic."""

    def rejecting(n: int) -> Callable[[], Any]:
        data = b'["' + b'\\"[' * n
        return lambda: _load_problem(data)

    assert "invalid JSON" in rejecting(1_000_000)()
    assert growth(rejecting, 125_000) <= LINEAR


def test_duplicate_keys_are_rejected() -> None:
    """An object with a key twice is rejected, naming the key."""
    assert _load_problem(b'{"name": "a", "x": 1, "name": "b"}') == (
        "invalid JSON: duplicate key 'name'"
    )


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_rejected(literal: str) -> None:
    """NaN, Infinity and -Infinity are not JSON numbers."""
    assert literal in _load_problem(f'{{"a": {literal}}}'.encode())


def test_overflowing_numbers_are_rejected() -> None:
    """A number too large for a float would become infinity, so it is rejected."""
    assert "out of range" in _load_problem(b'{"a": 1e999}')


def test_integer_beyond_64_bits_is_rejected_naming_where() -> None:
    """An integer no summary could carry is rejected at validation, with its line and column."""
    assert _load_problem(b'{"name": "w",\n "n": 1267650600228229401496703205376}') == (
        "invalid JSON: integer 1267650600228229401496703205376 at line 2, column 7"
        " does not fit in 64 bits"
    )


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("-9223372036854775808", True),
        ("18446744073709551615", True),
        ("-9223372036854775809", False),
        ("18446744073709551616", False),
        ("1" + "0" * 70, False),
        ("0.00000000000000000001", True),
    ],
)
def test_integers_are_accepted_exactly_within_64_bits(text: str, fits: bool) -> None:
    """The accepted range is -2**63 to 2**64-1, at both ends; long fractions are no integers."""
    data = f'{{"a": [1, {text}]}}'.encode()
    if fits:
        assert load_json(data) == {"a": [1, json.loads(text)]}
    else:
        assert "does not fit in 64 bits" in _load_problem(data)


def test_execute_rejects_an_echo_param_beyond_64_bits(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """A file whose echo params hold a too large integer is REJECTED by execute, no traceback."""
    path = write_workflow(
        {"name": "big", "nodes": [{"id": "a", "type": "echo", "params": {"n": 2**100}}]}
    )
    result = run_cli("execute", path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2
    assert json.loads(result.stdout)["errors"] == [
        "invalid JSON: integer 1267650600228229401496703205376 at line 1, column 71"
        " does not fit in 64 bits"
    ]


def test_lone_surrogate_escape_is_rejected() -> None:
    """A \\ud800 escape with no partner is rejected, in values and in keys."""
    assert "lone surrogate" in _load_problem(b'{"a": "x\\ud800"}')
    assert "lone surrogate" in _load_problem(b'{"\\udc00": 1}')


def test_surrogate_pairs_are_accepted() -> None:
    """A proper surrogate pair escape is one character and is accepted."""
    assert load_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_utf16_with_bom_is_rejected_by_name() -> None:
    """UTF-16 with a byte-order mark is rejected with a message naming UTF-16."""
    problem = _load_problem('{"a": 1}'.encode("utf-16"))
    assert problem.startswith("not UTF-8") and "UTF-16" in problem


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_rejected_by_name(codec: str) -> None:
    """UTF-16 without a byte-order mark is recognised by its NUL bytes and named."""
    problem = _load_problem('{"a": 1}'.encode(codec))
    assert problem.startswith("not UTF-8") and "UTF-16" in problem


def test_utf32_is_rejected_by_name() -> None:
    """UTF-32 is rejected with a message naming UTF-32."""
    assert "UTF-32" in _load_problem('{"a": 1}'.encode("utf-32"))


def test_invalid_utf8_bytes_are_rejected() -> None:
    """Bytes that are not UTF-8 are rejected, naming the byte and its offset."""
    assert _load_problem(b'{"a": "\xff"}') == "not UTF-8: invalid byte 0xff at offset 7"


def test_invalid_json_names_line_and_column() -> None:
    """A syntax error names its line and column."""
    assert "at line 2, column 7" in _load_problem(b'{"a": 1,\n "b": }')


def test_empty_file_is_rejected() -> None:
    """An empty or blank file is rejected as such."""
    assert "empty" in _load_problem(b" \n")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\xfe", b"[", b'"\\', b"1" * 5000, b"\xef\xbb\xbf", b"]]]", b'{"a"}', b"\x80"],
)
def test_no_other_exception_escapes(data: bytes) -> None:
    """Odd inputs raise only WorkflowRejected."""
    with pytest.raises(WorkflowRejected):
        load_json(data)


# --- parse_workflow: the rules of "The workflow file"


def test_valid_workflow_becomes_a_typed_definition() -> None:
    """A valid file becomes a WorkflowDef with nodes in file order and defaults filled in."""
    data = json.dumps(
        _doc(
            {"id": "fetch", "type": "echo", "params": {"url": "u"}},
            {
                "id": "load",
                "type": "sleep",
                "depends_on": ["fetch"],
                "params": {"seconds": "{{ fetch.n }}"},
                "retries": 2,
                "retry_delay": 0,
                "timeout": 60,
                "trigger_rule": "all_done",
            },
            timeout=600,
            idempotency_key="k1",
            description="d",
        )
    ).encode()
    assert parse_workflow(data, CATALOG) == WorkflowDef(
        name="wf",
        nodes=(
            NodeDef(id="fetch", type="echo", params={"url": "u"}),
            NodeDef(
                id="load",
                type="sleep",
                params={"seconds": "{{ fetch.n }}"},
                depends_on=("fetch",),
                timeout=60.0,
                retries=2,
                retry_delay=0.0,
                trigger_rule=TriggerRule.ALL_DONE,
                refs=(Ref("fetch", ("n",), "{{ fetch.n }}"),),
            ),
        ),
        timeout=600.0,
        idempotency_key="k1",
    )


def test_top_level_must_be_an_object() -> None:
    """A file whose JSON is not an object is rejected."""
    assert _problems(b"[1, 2]") == ["workflow: must be a JSON object, got a list"]


def test_missing_name_and_nodes() -> None:
    """name and nodes are both required, and both are reported."""
    assert _problems({}) == ["name: required", "nodes: required"]


@pytest.mark.parametrize("nodes", [[], {}, "a", None])
def test_nodes_must_be_a_non_empty_list(nodes: Any) -> None:
    """nodes must be a non-empty list."""
    [problem] = _problems({"name": "wf", "nodes": nodes})
    assert problem.startswith("nodes: must be a non-empty list")


@pytest.mark.parametrize("name", ["", "  ", 3, None])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    """name must be a non-empty string."""
    [problem] = _problems(_doc({"id": "a", "type": "echo"}, name=name))
    assert problem.startswith("name: must be a non-empty string")


def test_bad_optional_top_level_fields() -> None:
    """timeout, idempotency_key and description are checked when present."""
    doc = _doc({"id": "a", "type": "echo"}, timeout=0, idempotency_key="", description=5)
    assert _problems(doc) == [
        "idempotency_key: must be a non-empty string, got ''",
        "description: must be a string, got 5",
        "timeout: must be a number > 0 and at most 2592000, got 0",
    ]


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    """Misspelt keys at the top level and in a node are problems that name the key."""
    doc = _doc({"id": "a", "type": "echo", "dependson": []}, timout=5)
    assert _problems(doc) == [
        "unknown key 'timout' (did you mean 'timeout'?)",
        "node 'a': unknown key 'dependson' (did you mean 'depends_on'?)",
    ]


def test_node_must_be_an_object() -> None:
    """Each entry of nodes must be an object."""
    assert _problems(_doc("a")) == ["nodes[0]: must be an object, got 'a'"]


@pytest.mark.parametrize("node_id", ["a b", "", "x" * 65, "ü", "a.b"])
def test_malformed_id(node_id: str) -> None:
    """An id must be 1 to 64 characters of [A-Za-z0-9_-]."""
    [problem] = _problems(_doc({"id": "ok", "type": "echo"}, {"id": node_id, "type": "echo"}))
    assert problem.startswith("nodes[1].id: ")
    assert problem.endswith("must be 1 to 64 characters of [A-Za-z0-9_-]")


def test_missing_or_non_string_id() -> None:
    """An id is required and must be a string; other problems name the node by position."""
    assert _problems(_doc({"type": "echo"}, {"id": 7, "type": "nope"})) == [
        "nodes[0].id: required",
        "nodes[1].id: must be a string, got 7",
        "nodes[1]: unknown type 'nope'",
    ]


def test_duplicate_id() -> None:
    """Two nodes with the same id are rejected."""
    doc = _doc(
        {"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}, {"id": "b", "type": "echo"}
    )
    assert _problems(doc) == ["node 'b': duplicate id"]


def test_unknown_and_missing_type() -> None:
    """A type must be given, be a string, and be known to the catalog."""
    doc = _doc({"id": "x", "type": "htp_get"}, {"id": "y"}, {"id": "z", "type": 1})
    assert _problems(doc) == [
        "node 'x': unknown type 'htp_get'",
        "node 'y': type: required",
        "node 'z': type: must be a string, got 1",
    ]


def test_depends_on_rules() -> None:
    """depends_on is a list of known ids, each named once."""
    doc = _doc(
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "echo", "depends_on": "a"},
        {"id": "c", "type": "echo", "depends_on": ["a", "a", 3, "zz"]},
    )
    assert _problems(doc) == [
        "node 'b': depends_on: must be a list of node ids, got 'a'",
        "node 'c': depends_on names 'a' twice",
        "node 'c': depends_on[2]: must be a node id, got 3",
        "node 'c': depends_on names unknown node 'zz'",
    ]


def test_cycle_is_named_once() -> None:
    """A cycle is reported once, as a closed path of ids."""
    doc = _doc(
        {"id": "a", "type": "echo", "depends_on": ["c"]},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
        {"id": "c", "type": "echo", "depends_on": ["b"]},
    )
    assert _problems(doc) == ["cycle: a -> c -> b -> a"]


def test_self_dependency_is_a_cycle() -> None:
    """A node that depends on itself is the cycle a -> a."""
    assert _problems(_doc({"id": "a", "type": "echo", "depends_on": ["a"]})) == ["cycle: a -> a"]


def test_a_tangle_of_cycles_names_twenty_then_says_there_are_more() -> None:
    """25 self-loops name the first 20 cycles and one line saying more remain."""
    doc = _doc(
        *({"id": f"n{i:02d}", "type": "echo", "depends_on": [f"n{i:02d}"]} for i in range(25))
    )
    problems = _problems(doc)
    assert problems[:20] == [f"cycle: n{i:02d} -> n{i:02d}" for i in range(20)]
    assert problems[20:] == ["cycle: more than 20; fix those named and validate again"]


def test_cycle_is_found_beside_unknown_dependencies() -> None:
    """Unknown dependencies do not hide a cycle."""
    doc = _doc(
        {"id": "a", "type": "echo", "depends_on": ["b", "zz"]},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
    )
    assert _problems(doc) == ["node 'a': depends_on names unknown node 'zz'", "cycle: a -> b -> a"]


def test_params_rules() -> None:
    """params must be an object, and the catalog's messages are prefixed with the node."""
    doc = _doc(
        {"id": "a", "type": "echo", "params": [1]},
        {"id": "b", "type": "sleep", "params": {"seconds": "soon"}},
        {"id": "c", "type": "sleep", "params": {"seconds": 1}},
    )
    assert _problems(doc) == [
        "node 'a': params: must be an object, got a list",
        "node 'b': params: seconds: must be a number",
    ]


def test_params_are_not_checked_for_unknown_types() -> None:
    """Only known types have their params checked."""
    assert _problems(_doc({"id": "a", "type": "nope", "params": {"x": 1}})) == [
        "node 'a': unknown type 'nope'"
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", 0, "timeout: must be a number > 0 and at most 2592000, got 0"),
        ("timeout", True, "timeout: must be a number > 0 and at most 2592000, got true"),
        ("timeout", "5", "timeout: must be a number > 0 and at most 2592000, got '5'"),
        ("retries", -1, "retries: must be a whole number from 0 to 100, got -1"),
        ("retries", 1.5, "retries: must be a whole number from 0 to 100, got 1.5"),
        ("retries", True, "retries: must be a whole number from 0 to 100, got true"),
        ("retry_delay", -0.5, "retry_delay: must be a number >= 0 and at most 3600, got -0.5"),
        ("retry_delay", None, "retry_delay: must be a number >= 0 and at most 3600, got null"),
    ],
)
def test_numeric_node_fields(field: str, value: Any, message: str) -> None:
    """timeout, retries and retry_delay are numbers in range, and booleans are not numbers."""
    assert _problems(_doc({"id": "a", "type": "echo", field: value})) == [f"node 'a': {message}"]


def test_validate_bounds_retries_where_the_backoff_would_overflow(
    run_cli: Callable[..., Any], write_workflow: Callable[..., Path]
) -> None:
    """`"retries": 1100` is refused by validate with the allowed range, not run to an overflow."""
    path = write_workflow(_doc({"id": "a", "type": "echo", "retries": 1100}))
    result = run_cli("validate", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "node 'a': retries: must be a whole number from 0 to 100, got 1100"
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"retry_delay": 1e308}, "retry_delay: must be a number >= 0 and at most 3600, got 1e+308"),
        ({"retry_delay": 3601}, "retry_delay: must be a number >= 0 and at most 3600, got 3601"),
        ({"timeout": 1e300}, "timeout: must be a number > 0 and at most 2592000, got 1e+300"),
        ({"retries": 101}, "retries: must be a whole number from 0 to 100, got 101"),
    ],
)
def test_node_timing_fields_have_a_maximum(fields: dict[str, Any], message: str) -> None:
    """Values too large for timers and backoff are refused with the bound they passed."""
    assert _problems(_doc({"id": "a", "type": "echo", **fields})) == [f"node 'a': {message}"]


def test_the_largest_timing_values_are_accepted() -> None:
    """The maxima themselves are valid, for a node and for the workflow's timeout."""
    doc = _doc({"id": "a", "type": "echo", "retries": 100, "retry_delay": 3600, "timeout": 2592000})
    doc["timeout"] = 2592000
    workflow = parse_workflow(doc, CATALOG)
    assert (workflow.timeout, workflow.nodes[0].retries) == (2592000, 100)
    doc["timeout"] = 2592001
    assert _problems(doc) == ["timeout: must be a number > 0 and at most 2592000, got 2592001"]


def test_trigger_rule_lists_the_allowed_values() -> None:
    """An unknown trigger_rule is rejected with the allowed values listed."""
    [problem] = _problems(_doc({"id": "a", "type": "echo", "trigger_rule": "any"}))
    assert problem == (
        "node 'a': trigger_rule: must be one of all_success, all_done, all_failed,"
        " one_success, one_failed, none_failed, got 'any'"
    )


def test_reference_to_an_unknown_node() -> None:
    """A reference naming no node is rejected."""
    doc = _doc({"id": "c", "type": "echo", "params": {"p": "{{ q.x }}"}})
    assert _problems(doc) == ["node 'c': reference {{ q.x }} names unknown node 'q'"]


def test_reference_to_a_non_ancestor() -> None:
    """A reference to a node that is not an ancestor through depends_on is rejected."""
    doc = _doc(
        {"id": "d", "type": "echo"},
        {"id": "c", "type": "echo", "params": {"p": ["x {{ d.path }}"]}},
    )
    assert _problems(doc) == [
        "node 'c': reference {{ d.path }} names 'd', which is not an ancestor of 'c'"
    ]


def test_reference_to_a_transitive_ancestor_is_allowed() -> None:
    """A node may reference any ancestor, not only a direct dependency."""
    doc = _doc(
        {"id": "a", "type": "echo"},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
        {"id": "c", "type": "echo", "depends_on": ["b"], "params": {"p": "{{ a }}"}},
    )
    assert parse_workflow(doc, CATALOG).node("c").params == {"p": "{{ a }}"}


def test_every_problem_is_reported() -> None:
    """Problems in many places of one file are all reported, not just the first."""
    doc = {
        "nodes": [
            {"id": "a b", "type": "echo"},
            {"id": "x", "type": "htp_get", "retries": -1},
            {"id": "y", "type": "echo", "depends_on": ["zz"], "params": {"v": "{{ x.out }}"}},
        ],
        "extra": 1,
    }
    assert _problems(doc) == [
        "unknown key 'extra'",
        "name: required",
        "nodes[0].id: 'a b' must be 1 to 64 characters of [A-Za-z0-9_-]",
        "node 'x': unknown type 'htp_get'",
        "node 'x': retries: must be a whole number from 0 to 100, got -1",
        "node 'y': depends_on names unknown node 'zz'",
        "node 'y': reference {{ x.out }} names 'x', which is not an ancestor of 'y'",
    ]


def test_problems_from_bytes_are_one_line_each() -> None:
    """Problems are single lines even when values hold newlines."""
    data = b'{"name": "wf", "nodes": [{"id": "a\\nb", "type": "echo"}]}'
    assert all("\n" not in problem for problem in _problems(data))


def _chain(n: int, ref: Callable[[int], str]) -> list[dict[str, Any]]:
    """``n0 -> n1 -> ...``, node ``i`` holding the reference ``ref(i)`` in its params."""
    return [{"id": "n0", "type": "echo"}] + [
        {"id": f"n{i}", "type": "echo", "depends_on": [f"n{i - 1}"], "params": {"v": ref(i)}}
        for i in range(1, n)
    ]


def test_long_chain_validates_without_recursion_in_linear_time() -> None:
    """A 10,000-node chain, each node referencing its parent, validates without recursion,
    in time linear in its length."""

    def parsing(n: int) -> Callable[[], Any]:
        data = json.dumps(_doc(*_chain(n, lambda i: f"{{{{ n{i - 1}.v }}}}"))).encode()
        return lambda: parse_workflow(data, CATALOG)

    assert len(parsing(10_000)().nodes) == 10_000
    assert growth(parsing, 500) <= LINEAR


def test_long_chain_of_far_references_validates_in_linear_time() -> None:
    """A chain whose nodes all reference the root (a far ancestor) validates in time linear
    in its length, not one ancestor search per reference."""

    def parsing(n: int) -> Callable[[], Any]:
        doc = _doc(*_chain(n, lambda i: "{{ n0 }}"))
        return lambda: parse_workflow(doc, CATALOG)

    assert len(parsing(10_000)().nodes) == 10_000
    assert growth(parsing, 500) <= LINEAR


def test_wide_fan_out_validates_in_linear_time() -> None:
    """Nodes depending on one root, each referencing it, validate in time linear in their
    number (the shape of the 100,000-node benchmark)."""

    def parsing(n: int) -> Callable[[], Any]:
        nodes = [{"id": "root", "type": "echo"}] + [
            {
                "id": f"n{i}",
                "type": "sleep",
                "depends_on": ["root"],
                "params": {"seconds": "{{ root.s }}"},
            }
            for i in range(n)
        ]
        data = json.dumps(_doc(*nodes)).encode()
        return lambda: parse_workflow(data, CATALOG)

    assert len(parsing(10_000)().nodes) == 10_001
    assert growth(parsing, 500) <= LINEAR


# --- secrets


def test_is_secret_key_ignores_case() -> None:
    """Secret key words match in any case, and hyphens count as underscores."""
    for key in ("password", "DB_PASSWORD", "Token", "client_secret", "Authorization", "X-Api-Key"):
        assert is_secret_key(key), key
    for key in ("url", "path", "keys", "author"):
        assert not is_secret_key(key), key


def test_redact_secrets_walks_nested_structures() -> None:
    """Secret-keyed values become "***" at any depth, and the input is left unchanged."""
    params: dict[str, Any] = {
        "url": "u",
        "headers": {"Authorization": "Bearer x", "Accept": "json"},
        "logins": [{"user": "a", "Password": {"nested": 1}}],
        "API_KEY": None,
    }
    assert redact_secrets(params) == {
        "url": "u",
        "headers": {"Authorization": "***", "Accept": "json"},
        "logins": [{"user": "a", "Password": "***"}],
        "API_KEY": "***",
    }
    assert params["headers"]["Authorization"] == "Bearer x"


def test_public_definition_keeps_the_text_unless_a_secret_key_may_be_in_it() -> None:
    """The stored definition is the file's own text, or a redacted re-encoding of it."""
    plain = '{"name": "w", "nodes": [{"id": "a", "type": "echo"}]}'
    assert public_definition(plain, json.loads(plain)) is plain
    secret = '{"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {"Api-Key": "k"}}]}'
    stored = json.loads(public_definition(secret, json.loads(secret)))
    assert stored["nodes"][0]["params"] == {"Api-Key": "***"}
    in_a_value = '{"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {"m": "TOKEN"}}]}'
    assert public_definition(in_a_value, json.loads(in_a_value)) is in_a_value
    upper = '{"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {"X-APIKEY": "k"}}]}'
    assert json.loads(public_definition(upper, json.loads(upper)))["nodes"][0]["params"] == {
        "X-APIKEY": "***"
    }


def test_redact_secrets_leaves_scalars_alone() -> None:
    """Scalars and structures without secrets come back equal."""
    assert redact_secrets("token") == "token"
    assert redact_secrets([1, {"a": 2}]) == [1, {"a": 2}]


def test_public_definition_catches_a_secret_key_written_with_escapes() -> None:
    """A key spelt with JSON escapes is judged decoded, so its value is still redacted."""
    text = (
        '{"name": "w", "nodes": [{"id": "a", "type": "echo", "params": {"pass\\u0077ord": "x"}}]}'
    )
    stored = public_definition(text, json.loads(text))
    assert "x" not in json.loads(stored)["nodes"][0]["params"].values()
    assert json.loads(stored)["nodes"][0]["params"] == {"password": "***"}
