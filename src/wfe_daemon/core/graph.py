"""A workflow's graph as text: Mermaid, Graphviz DOT and a layered SVG. Pure.

Every function takes the nodes (:class:`GraphNode`, from a parsed workflow or a stored
definition) and, optionally, each node's status, and returns text in which every id,
type and name is escaped for its format: whatever a node id holds cannot end a quoted
string, open a tag or start a statement.

The SVG (:func:`layered_svg`, used where Graphviz is not installed) marks nodes as
Graphviz does from :func:`dot` with ``anchors``: each node a ``<g id="node-<id>"
class="node wfe-node status-<STATUS>">``, each edge a ``<g class="edge">``, so a page
recolours a node by swapping its ``status-*`` class whichever drew it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from wfe_daemon.core import dag

__all__ = [
    "STATUS_CLASSES",
    "GraphNode",
    "dot",
    "graph_nodes",
    "layered_svg",
    "mermaid",
    "node_class",
]


class GraphNode(NamedTuple):
    """One node as a picture needs it."""

    id: str
    type: str
    depends_on: tuple[str, ...] = ()


def graph_nodes(definition: Any) -> list[GraphNode]:
    """The nodes of a stored definition (a workflow document), in file order."""
    raw = definition.get("nodes") if isinstance(definition, dict) else None
    nodes = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            deps = item.get("depends_on")
            nodes.append(
                GraphNode(
                    item["id"],
                    str(item.get("type", "?")),
                    tuple(d for d in deps if isinstance(d, str)) if isinstance(deps, list) else (),
                )
            )
    return nodes


STATUS_CLASSES = ("PENDING", "RUNNING", "SUCCESS", "FAILED", "SKIPPED", "CANCELLED")
"""The node statuses a ``status-*`` class names."""


def node_class(status: str | None) -> str:
    """The classes a node of ``status`` gets (an unknown status reads as PENDING)."""
    return f"wfe-node status-{status if status in STATUS_CLASSES else 'PENDING'}"


# -- Mermaid -------------------------------------------------------------------------------

_MERMAID_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MERMAID_WORDS = frozenset(
    {
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "class",
        "classdef",
        "click",
        "linkstyle",
        "direction",
        "default",
    }
)
_MERMAID_CLASSES: Mapping[str, str] = {
    "SUCCESS": "fill:#d4edda,stroke:#2e7d32,color:#1b5e20",
    "RUNNING": "fill:#fff3cd,stroke:#f9a825,color:#7a5c00",
    "FAILED": "fill:#f8d7da,stroke:#c62828,color:#7f1d1d",
    "CANCELLED": "fill:#eeeeee,stroke:#9e9e9e,color:#616161",
    "SKIPPED": "fill:#eeeeee,stroke:#9e9e9e,color:#616161,stroke-dasharray:4 3",
    "PENDING": "fill:#ffffff,stroke:#9e9e9e,color:#616161",
}
_COLOURS: Mapping[str, tuple[str, str]] = {
    "SUCCESS": ("#d4edda", "#2e7d32"),
    "RUNNING": ("#fff3cd", "#f9a825"),
    "FAILED": ("#f8d7da", "#c62828"),
    "CANCELLED": ("#eeeeee", "#9e9e9e"),
    "SKIPPED": ("#eeeeee", "#9e9e9e"),
    "PENDING": ("#ffffff", "#9e9e9e"),
}
"""Fill and stroke of each node status (DOT and SVG)."""


def _mermaid_ids(nodes: Sequence[GraphNode]) -> dict[str, str]:
    """Node id to Mermaid id: the id itself when Mermaid reads it as one, else a safe stand-in."""
    ids: dict[str, str] = {}
    used = {n.id for n in nodes if _mermaid_ok(n.id)}
    for node in nodes:
        if _mermaid_ok(node.id):
            ids[node.id] = node.id
            continue
        base = candidate = "n_" + re.sub(r"\W", "_", node.id, flags=re.ASCII)
        suffix = 1
        while candidate in used:
            suffix += 1
            candidate = f"{base}_{suffix}"
        used.add(candidate)
        ids[node.id] = candidate
    return ids


def _mermaid_ok(node_id: str) -> bool:
    return _MERMAID_SAFE.fullmatch(node_id) is not None and node_id.lower() not in _MERMAID_WORDS


_MERMAID_ENTITIES = {'"': "#quot;", "#": "#35;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


def _mermaid_text(text: str) -> str:
    """Text inside a quoted label: entities for what Mermaid or its HTML would read, one line."""
    text = "".join(_MERMAID_ENTITIES.get(char, char) for char in text)
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def mermaid(nodes: Sequence[GraphNode], statuses: Mapping[str, str] | None = None) -> str:
    """A Mermaid ``flowchart TD``: one line per node, then one per edge (parent --> child).

    With ``statuses`` (node id to status), each node shows its status and gets its class.
    """
    ids = _mermaid_ids(nodes)
    known = set(ids)
    lines = ["flowchart TD"]
    used: dict[str, None] = {}
    for node in nodes:
        label = f"{node.id} ({node.type})"
        status = "" if statuses is None else statuses.get(node.id, "")
        line = f'    {ids[node.id]}["{_mermaid_text(label)}'
        if status:
            line += f"<br/>{_mermaid_text(status)}"
        line += '"]'
        if status in _MERMAID_CLASSES:
            line += f":::{status.lower()}"
            used[status] = None
        lines.append(line)
    lines += [
        f"    {ids[dep]} --> {ids[node.id]}"
        for node in nodes
        for dep in node.depends_on
        if dep in known
    ]
    lines += [
        f"    classDef {status.lower()} {style}"
        for status, style in _MERMAID_CLASSES.items()
        if status in used
    ]
    return "\n".join(lines)


# -- DOT -----------------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    """A DOT quoted string: JSON's escapes are DOT's (``\\"``, and ``\\\\`` in labels)."""
    return json.dumps(text, ensure_ascii=False)


def dot(
    name: str,
    nodes: Sequence[GraphNode],
    statuses: Mapping[str, str] | None = None,
    *,
    anchors: bool = False,
) -> str:
    """A Graphviz ``digraph``: quoted ids, one line per node then per edge (parent -> child).

    With ``statuses``, each node shows its status and is filled with its colour. With
    ``anchors``, each node also gets ``id="node-<id>"`` and the classes of
    :func:`node_class`, which Graphviz copies into its SVG, and its status shows by colour
    only (a page changes the class as the run advances).
    """
    known = {node.id for node in nodes}
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded"];',
    ]
    for node in nodes:
        status = "" if statuses is None else statuses.get(node.id, "")
        # Anchored (for a page that recolours nodes live), the status is the colour alone:
        # a status in the label would go stale when only the class changes.
        shown = status if status and not anchors else ""
        label = f"{node.id}\n{node.type}" + (f"\n{shown}" if shown else "")
        attrs = f"label={_dot_quote(label)}"
        if status in _COLOURS:
            fill, stroke = _COLOURS[status]
            attrs += f', style="rounded,filled", fillcolor="{fill}", color="{stroke}"'
        if anchors:
            attrs += f", id={_dot_quote('node-' + node.id)}, class={_dot_quote(node_class(status))}"
        lines.append(f"    {_dot_quote(node.id)} [{attrs}];")
    lines += [
        f"    {_dot_quote(dep)} -> {_dot_quote(node.id)};"
        for node in nodes
        for dep in node.depends_on
        if dep in known
    ]
    lines.append("}")
    return "\n".join(lines)


# -- SVG -----------------------------------------------------------------------------------

_CHAR_W, _PAD_X, _MIN_W, _NODE_H = 7.0, 24.0, 72.0, 44.0
_GAP_X, _GAP_Y, _MARGIN = 24.0, 56.0, 16.0
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml(text: str) -> str:
    """Text safe in XML content and in a double-quoted attribute (line breaks kept)."""
    text = _XML_BAD.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _depths(nodes: Sequence[GraphNode]) -> dict[str, int]:
    """Each node's layer: the longest path to it from a node without dependencies."""
    deps = {node.id: node.depends_on for node in nodes}
    try:
        order = dag.topological_order(deps)
    except ValueError:  # a cycle (never in a stored run): its nodes share layer 0
        order = list(deps)
    depth: dict[str, int] = {}
    for node_id in order:
        depth[node_id] = 1 + max((depth[d] for d in deps[node_id] if d in depth), default=-1)
    return depth


def _layers(nodes: Sequence[GraphNode]) -> list[list[GraphNode]]:
    """The nodes by layer, each layer ordered by where its nodes' parents sit (fewer crossings)."""
    depth = _depths(nodes)
    layers: list[list[GraphNode]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in nodes:
        layers[depth[node.id]].append(node)
    rank: dict[str, float] = {}
    for layer in layers:
        layer.sort(key=lambda n: _mean([rank[d] for d in n.depends_on if d in rank]))
        rank.update((node.id, float(i)) for i, node in enumerate(layer))
    return layers


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _width(node: GraphNode) -> float:
    return max(_MIN_W, _PAD_X + _CHAR_W * max(len(node.id), len(node.type)))


def layered_svg(
    name: str, nodes: Sequence[GraphNode], statuses: Mapping[str, str] | None = None
) -> str:
    """An SVG of the graph, nodes placed in rows by depth (dependencies above dependents).

    Each node is ``<g id="node-<id>" class="node wfe-node status-<STATUS>">`` (a box, its id
    and its type), each edge ``<g class="edge">`` (parent -> child), as Graphviz draws
    :func:`dot` with ``anchors``.
    """
    statuses = statuses or {}
    layers = _layers(nodes)
    widths = [sum(_width(n) for n in layer) + _GAP_X * (len(layer) - 1) for layer in layers]
    total_w = max(widths, default=0.0) + 2 * _MARGIN
    total_h = len(layers) * (_NODE_H + _GAP_Y) - _GAP_Y + 2 * _MARGIN if layers else 2 * _MARGIN
    boxes: dict[str, tuple[float, float, float]] = {}  # id -> left, top, width
    for row, (layer, layer_w) in enumerate(zip(layers, widths, strict=True)):
        x = (total_w - layer_w) / 2
        for node in layer:
            boxes[node.id] = (x, _MARGIN + row * (_NODE_H + _GAP_Y), _width(node))
            x += _width(node) + _GAP_X
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}pt"'
        f' height="{total_h:.0f}pt" viewBox="0 0 {total_w:.0f} {total_h:.0f}">',
        '<defs><marker id="wfe-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8"'
        ' markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>",
        f'<g id="graph0" class="graph"><title>{_xml(name)}</title>',
    ]
    parts += [
        _edge(dep, node.id, boxes[dep], boxes[node.id])
        for node in nodes
        for dep in node.depends_on
        if dep in boxes
    ]
    parts += [_node(node, statuses.get(node.id, ""), boxes[node.id]) for node in nodes]
    parts.append("</g></svg>")
    return "\n".join(parts)


def _edge(
    parent: str, child: str, start: tuple[float, float, float], end: tuple[float, float, float]
) -> str:
    x1, y1 = start[0] + start[2] / 2, start[1] + _NODE_H
    x2, y2 = end[0] + end[2] / 2, end[1]
    bend = (y2 - y1) / 2
    return (
        f'<g class="edge"><title>{_xml(parent)}&#45;&gt;{_xml(child)}</title>'
        f'<path fill="none" stroke="#555555" marker-end="url(#wfe-arrow)"'
        f' d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f}'
        f' {x2:.1f},{y2:.1f}"/></g>'
    )


def _node(node: GraphNode, status: str, box: tuple[float, float, float]) -> str:
    x, y, w = box
    fill, stroke = _COLOURS.get(status, _COLOURS["PENDING"])
    middle = x + w / 2
    return (
        f'<g id="{_xml("node-" + node.id)}" class="node {node_class(status)}">'
        f"<title>{_xml(node.id)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{_NODE_H:.0f}" rx="6"'
        f' fill="{fill}" stroke="{stroke}"/>'
        f'<text text-anchor="middle" x="{middle:.1f}" y="{y + 18:.1f}"'
        f' font-family="sans-serif" font-size="13">{_xml(node.id)}</text>'
        f'<text text-anchor="middle" x="{middle:.1f}" y="{y + 34:.1f}"'
        f' font-family="sans-serif" font-size="11" fill="#555555">{_xml(node.type)}</text>'
        "</g>"
    )
