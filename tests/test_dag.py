"""Tests for the pure graph algorithms of wfe_daemon.core.dag."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scaling import LINEAR, growth
from wfe_daemon.core import dag


def test_find_cycle_returns_none_for_a_dag() -> None:
    """An acyclic graph has no cycle."""
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_find_cycle_names_a_two_node_cycle() -> None:
    """A two-node cycle is a closed path following depends_on edges."""
    assert dag.find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_find_cycle_names_a_self_dependency() -> None:
    """A node that depends on itself is the cycle a -> a."""
    assert dag.find_cycle({"x": [], "a": ["a"]}) == ["a", "a"]


def test_find_cycle_starts_at_the_earliest_node() -> None:
    """The path starts at the cycle's earliest node, whatever the search met first."""
    deps = {"root": ["c"], "a": ["c"], "b": ["a"], "c": ["b"]}
    assert dag.find_cycle(deps) == ["a", "c", "b", "a"]


def test_find_cycle_ignores_unknown_ids() -> None:
    """Dependencies that are not nodes of the graph are ignored."""
    assert dag.find_cycle({"a": ["zz"], "b": ["a", "yy"]}) is None


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    """A 100,000-node chain closed into a ring is found without recursion."""
    n = 100_000
    deps = {f"n{i}": [f"n{(i + 1) % n}"] for i in range(n)}
    cycle = dag.find_cycle(deps)
    assert cycle is not None
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "n0"


def test_dependents_reverses_edges_with_every_node_a_key() -> None:
    """dependents maps each node to the nodes that depend on it, leaves included."""
    deps = {"a": [], "b": ["a"], "c": ["a", "b", "zz"]}
    assert dag.dependents(deps) == {"a": ["b", "c"], "b": ["c"], "c": []}


def test_topological_order_is_stable_in_insertion_order() -> None:
    """Among ready nodes the earliest inserted comes first."""
    deps = {"late": ["mid"], "a": [], "mid": ["a"], "b": []}
    assert dag.topological_order(deps) == ["a", "mid", "late", "b"]


def test_topological_order_raises_on_a_cycle() -> None:
    """A cyclic graph has no topological order."""
    with pytest.raises(ValueError, match="cycle"):
        dag.topological_order({"a": ["b"], "b": ["a"]})


def test_ancestors_are_transitive() -> None:
    """ancestors follows depends_on edges all the way up, excluding the node itself."""
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": []}
    assert dag.ancestors(deps, "c") == {"a", "b"}
    assert dag.ancestors(deps, "a") == set()


def test_descendants_are_transitive() -> None:
    """descendants follows the reverse edges all the way down (the skip set of a failure)."""
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": [], "e": ["d", "c"]}
    assert dag.descendants(dag.dependents(deps), "b") == {"c", "e"}


def test_non_ancestors_answers_many_questions() -> None:
    """non_ancestors returns exactly the pairs whose second id is not an ancestor of the first."""
    deps = {"a": [], "b": ["a"], "c": ["b"], "d": []}
    pairs = [("c", "a"), ("c", "d"), ("a", "c"), ("c", "c"), ("c", "zz")]
    assert dag.non_ancestors(deps, pairs) == {("c", "d"), ("a", "c"), ("c", "c"), ("c", "zz")}


def test_non_ancestors_stays_near_linear_on_a_long_chain_of_far_references() -> None:
    """Chained nodes each naming two far ancestors are judged in time near linear in the
    chain's length, not one ancestor search per question."""

    def judging(n: int) -> Callable[[], set[tuple[str, str]]]:
        deps = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(n)}
        pairs = [(f"n{i}", "n0") for i in range(2, n)]
        pairs += [(f"n{i}", f"n{i // 2}") for i in range(4, n)]
        return lambda: dag.non_ancestors(deps, pairs)

    assert judging(10_000)() == set()
    assert growth(judging, 1000) <= LINEAR


def test_find_cycles_names_two_separate_cycles_and_a_self_loop() -> None:
    """Every separate cycle is named, each from its earliest node, a self-dependency too."""
    deps = {"a": ["b"], "b": ["a"], "x": [], "c": ["d"], "d": ["c", "x"], "e": ["e"]}
    assert dag.find_cycles(deps) == [["a", "b", "a"], ["c", "d", "c"], ["e", "e"]]


def test_find_cycles_names_cycles_that_share_a_node() -> None:
    """Two cycles through ``b`` are both named, not only the first one found."""
    deps = {"a": ["b"], "b": ["a", "c"], "c": ["b"]}
    assert dag.find_cycles(deps) == [["a", "b", "a"], ["b", "c", "b"]]


def test_find_cycles_of_a_dag_is_empty_and_limit_stops_early() -> None:
    """No cycle gives []; ``limit`` caps how many are named."""
    assert dag.find_cycles({"a": [], "b": ["a"]}) == []
    deps = {f"n{i}": [f"n{i}"] for i in range(50)}
    assert dag.find_cycles(deps, limit=3) == [["n0", "n0"], ["n1", "n1"], ["n2", "n2"]]


def test_find_cycles_names_a_dependency_given_twice_once() -> None:
    """A dependency listed twice closes its cycle once."""
    assert dag.find_cycles({"a": ["b", "b"], "b": ["a"]}) == [["a", "b", "a"]]


def test_every_cycle_of_random_graphs_uses_a_named_cycle_edge() -> None:
    """Removing the edges of the named cycles leaves each random graph acyclic."""
    import random

    rng = random.Random(12)
    for _ in range(200):
        ids = [f"n{i}" for i in range(rng.randint(1, 12))]
        deps = {i: rng.sample(ids, rng.randint(0, min(3, len(ids)))) for i in ids}
        cycles = dag.find_cycles(deps)
        used = {(c[k], c[k + 1]) for c in cycles for k in range(len(c) - 1)}
        rest = {i: [d for d in ds if (i, d) not in used] for i, ds in deps.items()}
        assert dag.find_cycle(rest) is None, (deps, cycles)
        assert (cycles == []) == (dag.find_cycle(deps) is None)


def test_non_ancestors_in_a_graph_with_cycles() -> None:
    """In a cycle each member is an ancestor of every member, itself included; outside it,
    ancestry is as usual."""
    deps = {"a": ["b"], "b": ["a"], "c": ["a"], "d": [], "x": ["x"], "y": ["x"]}
    pairs = [
        ("c", "b"),
        ("a", "a"),
        ("b", "a"),
        ("c", "c"),
        ("a", "c"),
        ("a", "d"),
        ("x", "x"),
        ("y", "x"),
        ("x", "y"),
        ("d", "zz"),
    ]
    assert dag.non_ancestors(deps, pairs) == {
        ("c", "c"),
        ("a", "c"),
        ("a", "d"),
        ("x", "y"),
        ("d", "zz"),
    }


def test_non_ancestors_agrees_with_ancestors_on_random_cyclic_graphs() -> None:
    """On random graphs, cycles or not, the bit-set answer equals one search per question."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        ids = [f"n{i}" for i in range(rng.randint(1, 10))]
        deps = {i: rng.sample(ids, rng.randint(0, min(3, len(ids)))) for i in ids}
        pairs = [(a, b) for a in ids for b in ids]
        expected = {(a, b) for a, b in pairs if b not in dag.ancestors(deps, a)}
        assert dag.non_ancestors(deps, pairs) == expected, deps
