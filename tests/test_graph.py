"""Tests of ``core.graph``: Mermaid, DOT and the layered SVG, escaping included."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from wfe_daemon.core.graph import GraphNode, dot, graph_nodes, layered_svg, mermaid, node_class

DIAMOND = [
    GraphNode("a", "echo"),
    GraphNode("b", "sleep", ("a",)),
    GraphNode("c", "http_get", ("a",)),
    GraphNode("d", "echo", ("b", "c")),
]
STATUSES = {"a": "SUCCESS", "b": "SUCCESS", "c": "FAILED", "d": "SKIPPED"}
NASTY = 'x"y<z>&w\n-->\\N'
"""A node id holding what each format would otherwise read as syntax."""
SVG = "{http://www.w3.org/2000/svg}"

DEFINITION: dict[str, Any] = {
    "name": "nightly",
    "nodes": [
        {"id": "d", "type": "echo", "depends_on": ["b", "c"]},
        {"id": "b", "type": "sleep", "depends_on": ["a"]},
        {"id": "c", "type": "http_get", "depends_on": ["a"]},
        {"id": "a", "type": "echo"},
    ],
}


# -- graphs --------------------------------------------------------------------------------------


def test_mermaid_of_a_diamond() -> None:
    """Mermaid: ``flowchart TD``, one line per node (id and type), then one per edge."""
    assert mermaid(DIAMOND) == "\n".join(
        [
            "flowchart TD",
            '    a["a (echo)"]',
            '    b["b (sleep)"]',
            '    c["c (http_get)"]',
            '    d["d (echo)"]',
            "    a --> b",
            "    a --> c",
            "    b --> d",
            "    c --> d",
        ]
    )


def test_mermaid_of_a_diamond_with_statuses() -> None:
    """With statuses each node shows its status and gets the class of it, defined once."""
    assert mermaid(DIAMOND, STATUSES) == "\n".join(
        [
            "flowchart TD",
            '    a["a (echo)<br/>SUCCESS"]:::success',
            '    b["b (sleep)<br/>SUCCESS"]:::success',
            '    c["c (http_get)<br/>FAILED"]:::failed',
            '    d["d (echo)<br/>SKIPPED"]:::skipped',
            "    a --> b",
            "    a --> c",
            "    b --> d",
            "    c --> d",
            "    classDef success fill:#d4edda,stroke:#2e7d32,color:#1b5e20",
            "    classDef failed fill:#f8d7da,stroke:#c62828,color:#7f1d1d",
            "    classDef skipped fill:#eeeeee,stroke:#9e9e9e,color:#616161,stroke-dasharray:4 3",
        ]
    )


def test_mermaid_renames_ids_mermaid_would_misread() -> None:
    """``end`` and ids with dashes get stand-ins; the label keeps the real id."""
    nodes = [GraphNode("end", "echo"), GraphNode("fetch-1", "echo", ("end",))]

    assert mermaid(nodes) == "\n".join(
        [
            "flowchart TD",
            '    n_end["end (echo)"]',
            '    n_fetch_1["fetch-1 (echo)"]',
            "    n_end --> n_fetch_1",
        ]
    )


def test_dot_of_a_diamond() -> None:
    """DOT: a ``digraph`` with quoted ids, one line per node, then one per edge."""
    assert dot("diamond", DIAMOND) == "\n".join(
        [
            'digraph "diamond" {',
            "    rankdir=TB;",
            '    node [shape=box, style="rounded"];',
            '    "a" [label="a\\necho"];',
            '    "b" [label="b\\nsleep"];',
            '    "c" [label="c\\nhttp_get"];',
            '    "d" [label="d\\necho"];',
            '    "a" -> "b";',
            '    "a" -> "c";',
            '    "b" -> "d";',
            '    "c" -> "d";',
            "}",
        ]
    )


def test_dot_of_a_diamond_with_statuses() -> None:
    """With statuses each DOT node shows its status, filled with its colour."""
    lines = dot('say "hi"', DIAMOND, STATUSES).splitlines()

    assert lines[0] == 'digraph "say \\"hi\\"" {'
    assert lines[3:7] == [
        '    "a" [label="a\\necho\\nSUCCESS", style="rounded,filled", fillcolor="#d4edda",'
        ' color="#2e7d32"];',
        '    "b" [label="b\\nsleep\\nSUCCESS", style="rounded,filled", fillcolor="#d4edda",'
        ' color="#2e7d32"];',
        '    "c" [label="c\\nhttp_get\\nFAILED", style="rounded,filled", fillcolor="#f8d7da",'
        ' color="#c62828"];',
        '    "d" [label="d\\necho\\nSKIPPED", style="rounded,filled", fillcolor="#eeeeee",'
        ' color="#9e9e9e"];',
    ]
    assert lines[7:] == [
        '    "a" -> "b";',
        '    "a" -> "c";',
        '    "b" -> "d";',
        '    "c" -> "d";',
        "}",
    ]


def test_graph_nodes_reads_a_stored_definition() -> None:
    """A stored workflow document gives its nodes in file order with their dependencies."""
    assert graph_nodes(DEFINITION)[:2] == [
        GraphNode("d", "echo", ("b", "c")),
        GraphNode("b", "sleep", ("a",)),
    ]
    assert graph_nodes(None) == []


def test_dot_with_anchors_gives_each_node_an_id_and_status_classes() -> None:
    """With ``anchors`` each node carries ``id="node-<id>"`` and its status classes, and
    shows its status by colour only (the page swaps the class as the run advances)."""
    lines = dot("diamond", DIAMOND, {"a": "RUNNING"}, anchors=True).splitlines()

    assert lines[3] == (
        '    "a" [label="a\\necho", style="rounded,filled", fillcolor="#fff3cd",'
        ' color="#f9a825", id="node-a", class="wfe-node status-RUNNING"];'
    )
    assert lines[4] == (
        '    "b" [label="b\\nsleep", id="node-b", class="wfe-node status-PENDING"];'
    )


def test_dot_escapes_quotes_backslashes_and_newlines() -> None:
    """A node id with quotes, a backslash and a newline stays inside its quoted strings."""
    nodes = [GraphNode(NASTY, 'ty"pe'), GraphNode("b", "echo", (NASTY,))]
    text = dot('na"me', nodes, anchors=True)

    assert text.splitlines()[0] == 'digraph "na\\"me" {'
    assert len(text.splitlines()) == 7  # no line break came from the id
    assert '"x\\"y<z>&w\\n-->\\\\N" -> "b";' in text
    assert 'id="node-x\\"y<z>&w\\n-->\\\\N"' in text


def test_mermaid_escapes_labels_and_renames_the_id() -> None:
    """A node id Mermaid would misread gets a word-character stand-in; its label is entities."""
    text = mermaid([GraphNode(NASTY, "echo"), GraphNode("b", "echo", (NASTY,))])

    assert text.splitlines() == [
        "flowchart TD",
        '    n_x_y_z__w_____N["x#quot;y#lt;z#gt;#amp;w --#gt;\\N (echo)"]',
        '    b["b (echo)"]',
        "    n_x_y_z__w_____N --> b",
    ]


def test_node_class_falls_back_to_pending() -> None:
    """Known statuses name their class; anything else (never a class injection) is PENDING."""
    assert node_class("FAILED") == "wfe-node status-FAILED"
    assert node_class('x" onload="') == "wfe-node status-PENDING"
    assert node_class(None) == "wfe-node status-PENDING"


def _svg_nodes(text: str) -> dict[str, ET.Element]:
    root = ET.fromstring(text)
    return {
        g.attrib["id"]: g
        for g in root.iter(f"{SVG}g")
        if "node" in g.attrib.get("class", "").split()
    }


def test_layered_svg_marks_nodes_and_edges_and_places_layers_by_depth() -> None:
    """Each node is a ``<g>`` with its id and status classes, each edge a ``<g class="edge">``,
    and every node sits below the nodes it depends on."""
    text = layered_svg("diamond", DIAMOND, STATUSES)
    root = ET.fromstring(text)
    nodes = _svg_nodes(text)

    assert set(nodes) == {"node-a", "node-b", "node-c", "node-d"}
    assert nodes["node-c"].attrib["class"] == "node wfe-node status-FAILED"
    assert nodes["node-d"].attrib["class"] == "node wfe-node status-SKIPPED"
    edges = [g for g in root.iter(f"{SVG}g") if g.attrib.get("class") == "edge"]
    assert len(edges) == 4

    def top(node_id: str) -> float:
        rect = nodes[f"node-{node_id}"].find(f"{SVG}rect")
        assert rect is not None
        return float(rect.attrib["y"])

    assert top("a") < top("b") == top("c") < top("d")


def test_layered_svg_escapes_every_text() -> None:
    """A node id and a name full of markup parse back as text: no element, no attribute
    comes from them."""
    nodes = [GraphNode(NASTY, "<script>"), GraphNode("b", "echo", (NASTY,))]
    text = layered_svg("</title><script>", nodes, {NASTY: "RUNNING"})
    root = ET.fromstring(text)

    assert not [e for e in root.iter() if e.tag.endswith("script")]
    found = _svg_nodes(text)
    assert set(found) == {f"node-{NASTY}", "node-b"}
    texts = [t.text for t in found[f"node-{NASTY}"].iter(f"{SVG}text")]
    assert texts == [NASTY, "<script>"]
    assert found[f"node-{NASTY}"].attrib["class"] == "node wfe-node status-RUNNING"


def test_layered_svg_of_a_control_character_is_still_xml() -> None:
    """Characters XML cannot carry are replaced, so the SVG always parses."""
    text = layered_svg("w", [GraphNode("a\x00b\x1b", "echo")])

    assert _svg_nodes(text).keys() == {"node-a\ufffdb\ufffd"}


def test_layered_svg_of_no_nodes_and_of_a_wide_graph() -> None:
    """An empty graph is an empty SVG; a fan-out of 200 puts 200 nodes in one row."""
    assert _svg_nodes(layered_svg("empty", [])) == {}
    fan = [GraphNode("root", "echo")] + [GraphNode(f"n{i}", "echo", ("root",)) for i in range(200)]
    nodes = _svg_nodes(layered_svg("fan", fan))

    rows = {re.sub(r"\.\d+$", "", n.find(f"{SVG}rect").attrib["y"]) for n in nodes.values()}  # type: ignore[union-attr]
    assert len(nodes) == 201
    assert len(rows) == 2
