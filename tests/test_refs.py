"""Tests for {{ node.path }} references: finding and resolving them."""

from __future__ import annotations

import pytest

from wfe_daemon.core.refs import Ref, contains_ref, find_refs, resolve
from wfe_daemon.errors import ParamsError

OUTPUTS = {
    "fetch": {"path": "raw/sales.csv", "status_code": 200, "items": [{"name": "x"}, 2]},
    "count": 7,
    "nothing": None,
}


def test_find_refs_walks_nested_values_in_order() -> None:
    """find_refs reports every reference in nested string values, in document order."""
    params = {"a": "{{ fetch.path }}", "b": [1, {"c": "x {{count}} y {{ fetch }}"}]}
    assert find_refs(params) == [
        Ref("fetch", ("path",), "{{ fetch.path }}"),
        Ref("count", (), "{{count}}"),
        Ref("fetch", (), "{{ fetch }}"),
    ]


def test_find_refs_ignores_keys_and_malformed_braces() -> None:
    """Dict keys are not searched, and text that is not a valid reference is left alone."""
    params = {"{{ fetch.path }}": "plain", "x": "{{ not valid }}", "y": "{{ a..b }}"}
    assert find_refs(params) == []


def test_contains_ref() -> None:
    """contains_ref tells strings with a reference from those without."""
    assert contains_ref("see {{ a.b }}")
    assert not contains_ref("see {{ a b }}")
    assert not contains_ref("plain")


def test_whole_reference_keeps_its_json_type() -> None:
    """A string that is exactly one reference becomes the value itself, not text."""
    assert resolve("{{ fetch.status_code }}", OUTPUTS) == 200
    assert resolve("  {{fetch.items}} ", OUTPUTS) == [{"name": "x"}, 2]
    assert resolve("{{ nothing }}", OUTPUTS) is None


def test_whole_output_with_an_empty_path() -> None:
    """{{ node }} with no path is the node's whole output."""
    assert resolve("{{ count }}", OUTPUTS) == 7


def test_references_inside_text_are_interpolated() -> None:
    """References inside a longer string become text: strings as-is, others as compact JSON."""
    text = "{{ fetch.path }} has {{ fetch.status_code }} {{ fetch.items }} {{ nothing }}"
    assert resolve(text, OUTPUTS) == 'raw/sales.csv has 200 [{"name":"x"},2] null'


def test_list_indexing_with_whole_numbers() -> None:
    """Whole-number path segments index lists."""
    assert resolve("{{ fetch.items.0.name }}", OUTPUTS) == "x"
    assert resolve("{{ fetch.items.1 }}", OUTPUTS) == 2


def test_resolve_rebuilds_nested_structures() -> None:
    """resolve replaces references at any depth and leaves other values alone."""
    params = {"src": "{{ fetch.path }}", "n": [1, "{{ count }}"], "keep": {"k": True}}
    assert resolve(params, OUTPUTS) == {"src": "raw/sales.csv", "n": [1, 7], "keep": {"k": True}}
    assert params["src"] == "{{ fetch.path }}"


def test_resolve_without_references_returns_the_same_object() -> None:
    """A structure with no reference is returned as is, not copied."""
    params = {"a": [1, "b", {"c": None}]}
    assert resolve(params, OUTPUTS) is params


def test_missing_node_is_a_params_error() -> None:
    """A reference to a node without output raises ParamsError naming it."""
    with pytest.raises(ParamsError, match=r"\{\{ q\.x \}\}: no output from node 'q'"):
        resolve("{{ q.x }}", OUTPUTS)


def test_missing_key_is_a_params_error() -> None:
    """A path through a missing key raises ParamsError naming the key and where."""
    with pytest.raises(ParamsError, match="output of 'fetch' has no key 'body'"):
        resolve("{{ fetch.body.x }}", OUTPUTS)
    with pytest.raises(ParamsError, match=r"'fetch\.items\.0' has no key 'age'"):
        resolve("x {{ fetch.items.0.age }}", OUTPUTS)


def test_index_out_of_range_is_a_params_error() -> None:
    """An index past the end of a list raises ParamsError."""
    with pytest.raises(ParamsError, match="index 5 out of range"):
        resolve("{{ fetch.items.5 }}", OUTPUTS)


def test_non_numeric_index_into_a_list_is_a_params_error() -> None:
    """A list can only be indexed by a whole number."""
    with pytest.raises(ParamsError, match="'first' is not an index"):
        resolve("{{ fetch.items.first }}", OUTPUTS)


def test_indexing_a_scalar_is_a_params_error() -> None:
    """Indexing into a string or number raises ParamsError saying so."""
    with pytest.raises(ParamsError, match="cannot index a string"):
        resolve("{{ fetch.path.0 }}", OUTPUTS)
    with pytest.raises(ParamsError, match="cannot index a number"):
        resolve("{{ count.x }}", OUTPUTS)
