"""Graph algorithms over a workflow's dependencies. Pure and iterative (no recursion).

A graph is given as ``deps``: a mapping of node id to the ids it depends on, in file order.
Dependency ids that are not keys of the mapping are ignored everywhere, so a graph with
unknown references can still be examined.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import NamedTuple

__all__ = [
    "ancestors",
    "dependents",
    "descendants",
    "find_cycle",
    "find_cycles",
    "non_ancestors",
    "topological_order",
]

Deps = Mapping[str, Sequence[str]]

_CHUNK_BITS = 4096
"""Reference targets examined per pass of :func:`non_ancestors` (bounds its memory)."""


def _known(deps: Deps, node_id: str) -> list[str]:
    """The node's dependencies that are in the graph, each once, in order."""
    parents = deps[node_id]
    unique = parents if len(parents) < 2 else dict.fromkeys(parents)  # one cannot repeat
    return [d for d in unique if d in deps]


def find_cycle(deps: Deps) -> list[str] | None:
    """Return one dependency cycle as a closed path, or ``None`` when the graph is acyclic.

    The path follows ``depends_on`` edges: ``["a", "b", "a"]`` means ``a`` depends on ``b``
    and ``b`` on ``a``; a self-dependency is ``["a", "a"]``. The search follows insertion
    order and the path starts at the cycle's earliest node, so the answer is deterministic.
    """
    cycles = find_cycles(deps, limit=1)
    return cycles[0] if cycles else None


def find_cycles(deps: Deps, limit: int | None = None) -> list[list[str]]:
    """Return the cycles of the graph as closed paths (see :func:`find_cycle`), up to ``limit``.

    One depth-first search in insertion order names a cycle for each dependency that leads
    back onto its current path. Every cycle of the graph uses one of those dependencies, so
    a graph with cycles never passes with some unnamed: separate cycles are each named, a
    self-dependency too, and cycles that share nodes are named until each has one of its own.
    """
    state: dict[str, bool] = {}  # True while on the current path, False once finished
    found: list[list[str]] = []
    for root in deps:
        if root not in state:
            _cycles_from(deps, root, state, found, limit)
        if limit is not None and len(found) >= limit:
            break
    return [_rotated(deps, cycle) for cycle in found]


def _cycles_from(
    deps: Deps, root: str, state: dict[str, bool], found: list[list[str]], limit: int | None
) -> None:
    """Depth-first search from ``root``; each edge back onto the path adds a cycle's nodes."""
    path = [root]
    position = {root: 0}
    stack = [iter(deps[root])]
    state[root] = True
    closing: set[tuple[str, str]] = set()  # a dependency named twice closes one cycle
    while stack:
        child = next((d for d in stack[-1] if d in deps and state.get(d) is not False), None)
        if child is None:
            state[path.pop()] = False
            stack.pop()
        elif state.get(child):
            if (path[-1], child) not in closing:
                closing.add((path[-1], child))
                found.append(path[position[child] :])
                if limit is not None and len(found) >= limit:
                    return
        else:
            state[child] = True
            position[child] = len(path)
            path.append(child)
            stack.append(iter(deps[child]))


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
    far ancestor stays fast. Ids not in the graph are never ancestors. A graph with
    cycles is answered too: every node of a cycle is an ancestor of each node on it,
    itself included.
    """
    wanted = [(node, other) for node, other in pairs]
    targets = list(dict.fromkeys(other for _, other in wanted if other in deps))
    missing = {(node, other) for node, other in wanted if node not in deps or other not in deps}
    if not targets:
        return missing
    reach: Callable[[Mapping[str, int]], Mapping[str, int]]
    try:
        reach = partial(_reached_bits, deps, topological_order(deps))
    except ValueError:  # the same passes over the graph with each cycle folded into one node
        parts = _condensed(deps)
        reach = partial(parts.ancestor_bits, topological_order(parts.graph))
    for start in range(0, len(targets), _CHUNK_BITS):
        bits = {t: 1 << i for i, t in enumerate(targets[start : start + _CHUNK_BITS])}
        reached = reach(bits)
        missing.update(
            (node, other)
            for node, other in wanted
            if other in bits and node in deps and not reached[node] & bits[other]
        )
    return missing


class _Condensed(NamedTuple):
    """A graph whose every cycle is folded into one node: its strongly connected parts."""

    part: Mapping[str, str]
    """Each node's part, named by one of its members."""
    loops: set[str]
    """The parts that hold a cycle (two or more nodes, or a self-dependency)."""
    graph: Deps
    """The parts' own dependencies: acyclic."""

    def ancestor_bits(self, order: list[str], bits: Mapping[str, int]) -> Mapping[str, int]:
        """For each node, the OR of ``bits`` of its ancestors; ``order`` sorts ``graph``."""
        part_bits: dict[str, int] = {}
        for node_id, bit in bits.items():
            part_bits[self.part[node_id]] = part_bits.get(self.part[node_id], 0) | bit
        reached = _reached_bits(self.graph, order, part_bits)
        return {
            node_id: reached[part] | (part_bits.get(part, 0) if part in self.loops else 0)
            for node_id, part in self.part.items()
        }


def _condensed(deps: Deps) -> _Condensed:
    """Fold each strongly connected part of ``deps`` into one node (Kosaraju, iterative)."""
    part: dict[str, str] = {}
    children = dependents(deps)
    for root in reversed(_finish_order(deps)):
        if root not in part:
            part[root] = root
            todo = [root]
            while todo:
                for child in children[todo.pop()]:
                    if child not in part:
                        part[child] = root
                        todo.append(child)
    graph: dict[str, list[str]] = {name: [] for name in dict.fromkeys(part.values())}
    loops: set[str] = set()
    for node_id in deps:
        for parent in _known(deps, node_id):
            if part[parent] == part[node_id]:
                loops.add(part[node_id])
            else:
                graph[part[node_id]].append(part[parent])
    return _Condensed(part, loops, graph)


def _finish_order(deps: Deps) -> list[str]:
    """Every node in the order a depth-first search along ``deps`` finishes it."""
    finished: list[str] = []
    seen: set[str] = set()
    for root in deps:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            node_id, parents = stack[-1]
            parent = next((d for d in parents if d in deps and d not in seen), None)
            if parent is None:
                stack.pop()
                finished.append(node_id)
            else:
                seen.add(parent)
                stack.append((parent, iter(deps[parent])))
    return finished


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
