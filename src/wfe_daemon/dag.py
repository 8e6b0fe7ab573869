"""Graph algorithms over a workflow's dependencies. Pure and iterative (no recursion).

A graph is given as ``deps``: a mapping of node id to the ids it depends on, in file order.
Dependency ids that are not keys of the mapping are ignored everywhere, so a graph with
unknown references can still be examined.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "ancestors",
    "dependents",
    "descendants",
    "find_cycle",
    "non_ancestors",
    "topological_order",
]

Deps = Mapping[str, Sequence[str]]

_CHUNK_BITS = 4096
"""Reference targets examined per pass of :func:`non_ancestors` (bounds its memory)."""


def _known(deps: Deps, node_id: str) -> list[str]:
    """The node's dependencies that are in the graph, each once, in order."""
    return [d for d in dict.fromkeys(deps[node_id]) if d in deps]


def find_cycle(deps: Deps) -> list[str] | None:
    """Return one dependency cycle as a closed path, or ``None`` when the graph is acyclic.

    The path follows ``depends_on`` edges: ``["a", "b", "a"]`` means ``a`` depends on ``b``
    and ``b`` on ``a``; a self-dependency is ``["a", "a"]``. The search follows insertion
    order and the path starts at the cycle's earliest node, so the answer is deterministic.
    """
    state: dict[str, bool] = {}  # True while on the current path, False once finished
    for root in deps:
        if root not in state:
            cycle = _cycle_from(deps, root, state)
            if cycle is not None:
                return _rotated(deps, cycle)
    return None


def _cycle_from(deps: Deps, root: str, state: dict[str, bool]) -> list[str] | None:
    """Depth-first search from ``root``; return the cycle's nodes when a back edge is met."""
    path = [root]
    position = {root: 0}
    stack = [iter(deps[root])]
    state[root] = True
    while stack:
        child = next((d for d in stack[-1] if d in deps and state.get(d) is not False), None)
        if child is None:
            state[path.pop()] = False
            stack.pop()
        elif state.get(child):
            return path[position[child] :]
        else:
            state[child] = True
            position[child] = len(path)
            path.append(child)
            stack.append(iter(deps[child]))
    return None


def _rotated(deps: Deps, cycle: list[str]) -> list[str]:
    """Close the cycle's path, starting it at the node that comes first in ``deps``."""
    order = {node_id: index for index, node_id in enumerate(deps)}
    start = min(range(len(cycle)), key=lambda i: order[cycle[i]])
    ring = cycle[start:] + cycle[:start]
    return [*ring, ring[0]]


def dependents(deps: Deps) -> dict[str, list[str]]:
    """Return the reverse edges: node id to the ids that depend on it, every node a key."""
    children: dict[str, list[str]] = {node_id: [] for node_id in deps}
    for node_id in deps:
        for parent in _known(deps, node_id):
            children[parent].append(node_id)
    return children


def topological_order(deps: Deps) -> list[str]:
    """Return every node after its dependencies, the earliest-inserted ready node first.

    Raises:
        ValueError: the graph has a cycle.
    """
    index = {node_id: i for i, node_id in enumerate(deps)}
    names = list(deps)
    children = dependents(deps)
    waiting = {node_id: len(_known(deps, node_id)) for node_id in deps}
    ready = [index[node_id] for node_id, count in waiting.items() if count == 0]
    order: list[str] = []
    while ready:
        node_id = names[heapq.heappop(ready)]
        order.append(node_id)
        for child in children[node_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, index[child])
    if len(order) < len(names):
        raise ValueError("the dependency graph has a cycle")
    return order


def _reach(edges: Mapping[str, Iterable[str]], node_id: str) -> set[str]:
    """Every node reachable from ``node_id`` through ``edges`` (itself only through a cycle)."""
    seen: set[str] = set()
    queue = deque([node_id])
    while queue:
        for nxt in edges.get(queue.popleft(), ()):
            if nxt in edges and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def ancestors(deps: Deps, node_id: str) -> set[str]:
    """Return every node ``node_id`` depends on, directly or transitively."""
    return _reach(deps, node_id)


def descendants(children: Mapping[str, Sequence[str]], node_id: str) -> set[str]:
    """Return every node that depends on ``node_id``, directly or transitively.

    Args:
        children: the reverse edges, as built by :func:`dependents`.
        node_id: where to start.
    """
    return _reach(children, node_id)


def non_ancestors(deps: Deps, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Return the ``(node, other)`` pairs in which ``other`` is not an ancestor of ``node``.

    Answers many questions in a few linear passes (bit sets propagated in topological
    order) instead of one search per question, so a long chain of nodes each naming a
    far ancestor stays fast. Ids not in the graph are never ancestors.

    Raises:
        ValueError: the graph has a cycle.
    """
    wanted = [(node, other) for node, other in pairs]
    targets = list(dict.fromkeys(other for _, other in wanted if other in deps))
    missing = {(node, other) for node, other in wanted if node not in deps or other not in deps}
    order = topological_order(deps) if targets else []
    for start in range(0, len(targets), _CHUNK_BITS):
        bits = {t: 1 << i for i, t in enumerate(targets[start : start + _CHUNK_BITS])}
        reached = _reached_bits(deps, order, bits)
        missing.update(
            (node, other)
            for node, other in wanted
            if other in bits and node in deps and not reached[node] & bits[other]
        )
    return missing


def _reached_bits(deps: Deps, order: list[str], bits: Mapping[str, int]) -> dict[str, int]:
    """For each node, the OR of ``bits`` of its ancestors (one pass in topological order)."""
    reached: dict[str, int] = {}
    for node_id in order:
        mask = 0
        for parent in deps[node_id]:
            if parent in reached:
                mask |= reached[parent] | bits.get(parent, 0)
        reached[node_id] = mask
    return reached
