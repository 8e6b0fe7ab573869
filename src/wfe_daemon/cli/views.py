"""What the command line prints for people: tables, statuses, durations, graphs. Pure.

Every function takes plain data (the store's rows, a workflow's nodes) and returns text;
whether to colour and how wide to be are arguments, decided once by ``cli``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any, NamedTuple

from wfe_daemon.core import dag
from wfe_daemon.core.records import NodeRecord, RunListing, RunRecord

_RESET = "\x1b[0m"
_GREEN, _YELLOW, _RED, _GREY = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[90m"
STATUS_COLOURS: Mapping[str, str] = {
    "SUCCESS": _GREEN,
    "PARTIAL_SUCCESS": _YELLOW,
    "RUNNING": _YELLOW,
    "DUPLICATE": _YELLOW,
    "FAILED": _RED,
    "REJECTED": _RED,
    "CANCELLED": _GREY,
    "SKIPPED": _GREY,
}
"""ANSI colour of each run and node status; PENDING stays uncoloured."""

_GAP = "  "


class GraphNode(NamedTuple):
    """One node as a picture needs it."""

    id: str
    type: str
    depends_on: tuple[str, ...] = ()


# -- cells ---------------------------------------------------------------------------------


def paint(text: str, status: str, color: bool) -> str:
    """``text`` in the colour of ``status`` when ``color``, else unchanged."""
    code = STATUS_COLOURS.get(status)
    return f"{code}{text}{_RESET}" if color and code and text else text


def human_duration(seconds: float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h07m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms" if millis else "<1ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def short_time(stamp: str | None, tz: tzinfo | None = None) -> str:
    """An ISO-8601 stamp as ``YYYY-MM-DD HH:MM:SS`` in ``tz`` (local time by default)."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str | None) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join((text or "").split())


def _clip(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    return text[: room - 1].rstrip() + "…" if room > 0 else ""


# -- tables --------------------------------------------------------------------------------


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: frozenset[int] = frozenset(),
    status_column: int | None = None,
    color: bool = False,
    width: int | None = None,
) -> str:
    """Aligned columns two spaces apart, the header first, no trailing spaces.

    Columns in ``right`` are right-aligned; the ``status_column`` is painted by status when
    ``color``; with a ``width``, the last column is cut (``…``) so lines fit in it.
    """
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers) - 1)]
    lines = []
    for index, row in enumerate([headers, *rows]):
        cells = []
        for column, (cell, size) in enumerate(zip(row, widths, strict=False)):
            padded = cell.rjust(size) if column in right else cell.ljust(size)
            if column == status_column and index > 0:
                padded = paint(cell, cell, color) + padded[len(cell) :]
            cells.append(padded)
        prefix = _GAP.join(cells) + _GAP
        last = row[-1] if width is None else _clip(row[-1], width - len(_visible(prefix)))
        lines.append((prefix + last).rstrip())
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _visible(text: str) -> str:
    return _ANSI.sub("", text)


def runs_table(
    runs: Sequence[RunListing],
    *,
    color: bool = False,
    width: int | None = None,
    tz: tzinfo | None = None,
) -> str:
    """The ``runs`` listing: id, status, start, duration, workflow and the failing error."""
    rows = [
        [
            str(run["id"]),
            run["status"],
            short_time(run["started_at"], tz),
            human_duration(run["duration"]),
            run["name"],
            one_line(run.get("error")),
        ]
        for run in runs
    ]
    headers = ["RUN", "STATUS", "STARTED", "DURATION", "WORKFLOW", "ERROR"]
    return render_table(
        headers, rows, right=frozenset({0, 3}), status_column=1, color=color, width=width
    )


def node_order(run: RunRecord) -> list[NodeRecord]:
    """The run's node rows in dependency order (from its stored definition), else as stored."""
    nodes = {node["node_id"]: node for node in run["nodes"]}
    definition = run.get("definition")
    raw = definition.get("nodes") if isinstance(definition, dict) else None
    if not isinstance(raw, list):
        return list(nodes.values())
    deps = {
        str(item.get("id")): [d for d in item.get("depends_on") or [] if isinstance(d, str)]
        for item in raw
        if isinstance(item, dict) and item.get("id") in nodes
    }
    try:
        order = dag.topological_order(deps)
    except ValueError:
        return list(nodes.values())
    rest = [node_id for node_id in nodes if node_id not in deps]
    return [nodes[node_id] for node_id in [*order, *rest]]


def _errors(run: RunRecord) -> list[str]:
    summary = run.get("result_summary")
    return (summary.get("errors") if summary else None) or []


def failing_error(run: RunRecord, ordered: Sequence[NodeRecord]) -> str | None:
    """The run's first error, else the first failed node's (as ``node: error``)."""
    errors = _errors(run)
    if errors:
        return str(errors[0])
    failed = next((node for node in ordered if node["error"]), None)
    return None if failed is None else f"{failed['node_id']}: {failed['error']}"


def _error_facts(run: RunRecord, ordered: Sequence[NodeRecord]) -> list[tuple[str, str]]:
    """``error`` and the failure, or ``errors`` and each of the run's problems on its line."""
    errors = _errors(run)
    if len(errors) > 1:
        return [("" if i else "errors", one_line(str(error))) for i, error in enumerate(errors)]
    error = failing_error(run, ordered)
    return [("error", one_line(error))] if error else []


def run_detail(
    run: RunRecord,
    *,
    color: bool = False,
    width: int | None = None,
    tz: tzinfo | None = None,
) -> str:
    """The ``show`` page: the run's facts, then each node in dependency order.

    A rejected run's facts end with every problem found in its file, one per line.
    """
    ordered = node_order(run)
    summary = run.get("result_summary")
    links = {
        "retry_of": summary.get("retry_of") if summary else None,
        "duplicate_of": summary.get("duplicate_of") if summary else None,
    }
    facts = [
        ("source", run.get("source") or "-"),
        ("started", short_time(run.get("started_at"), tz)),
        ("duration", human_duration(run.get("duration"))),
    ]
    for key, value in links.items():
        if value is not None:
            facts.append((key.replace("_", " "), str(value)))
    facts += _error_facts(run, ordered)
    status = run["status"]
    lines = [f"run {run['id']}{_GAP}{run['name']}{_GAP}{paint(status, status, color)}"]
    label = max(len(key) for key, _ in facts)
    lines += [
        f"{key.ljust(label)}{_GAP}{value if width is None else _clip(value, width - label - 2)}"
        for key, value in facts
    ]
    rows = [
        [
            node["node_id"],
            node["type"],
            node["status"],
            str(node["attempts"]),
            human_duration(node["duration"]),
            one_line(node["error"] or node["reason"]),
        ]
        for node in ordered
    ]
    headers = ["NODE", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR/REASON"]
    table = render_table(
        headers, rows, right=frozenset({3, 4}), status_column=2, color=color, width=width
    )
    return "\n".join([*lines, "", table]) if rows else "\n".join(lines)


# -- graphs --------------------------------------------------------------------------------


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
_DOT_COLOURS: Mapping[str, tuple[str, str]] = {
    "SUCCESS": ("#d4edda", "#2e7d32"),
    "RUNNING": ("#fff3cd", "#f9a825"),
    "FAILED": ("#f8d7da", "#c62828"),
    "CANCELLED": ("#eeeeee", "#9e9e9e"),
    "SKIPPED": ("#eeeeee", "#9e9e9e"),
    "PENDING": ("#ffffff", "#9e9e9e"),
}


def _mermaid_ids(nodes: Sequence[GraphNode]) -> dict[str, str]:
    """Node id to Mermaid id: the id itself when Mermaid reads it as one, else a safe stand-in."""
    ids: dict[str, str] = {}
    used = {n.id for n in nodes if _mermaid_ok(n.id)}
    for node in nodes:
        if _mermaid_ok(node.id):
            ids[node.id] = node.id
            continue
        base = candidate = "n_" + re.sub(r"\W", "_", node.id)
        suffix = 1
        while candidate in used:
            suffix += 1
            candidate = f"{base}_{suffix}"
        used.add(candidate)
        ids[node.id] = candidate
    return ids


def _mermaid_ok(node_id: str) -> bool:
    return _MERMAID_SAFE.fullmatch(node_id) is not None and node_id.lower() not in _MERMAID_WORDS


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


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
            line += f"<br/>{status}"
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


def _dot_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def dot(name: str, nodes: Sequence[GraphNode], statuses: Mapping[str, str] | None = None) -> str:
    """A Graphviz ``digraph``: quoted ids, one line per node then per edge (parent -> child).

    With ``statuses``, each node shows its status and is filled with its colour.
    """
    known = {node.id for node in nodes}
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded"];',
    ]
    for node in nodes:
        status = "" if statuses is None else statuses.get(node.id, "")
        label = f"{node.id}\n{node.type}" + (f"\n{status}" if status else "")
        attrs = f"label={_dot_quote(label)}"
        if status in _DOT_COLOURS:
            fill, stroke = _DOT_COLOURS[status]
            attrs += f', style="rounded,filled", fillcolor="{fill}", color="{stroke}"'
        lines.append(f"    {_dot_quote(node.id)} [{attrs}];")
    lines += [
        f"    {_dot_quote(dep)} -> {_dot_quote(node.id)};"
        for node in nodes
        for dep in node.depends_on
        if dep in known
    ]
    lines.append("}")
    return "\n".join(lines)


# -- progress ------------------------------------------------------------------------------


def task_types(described: Sequence[Mapping[str, Any]]) -> str:
    """``wfe-daemon tasks``: each type with its name, category, description and params."""
    lines = []
    for task in described:
        lines.append(f"{task['type']} ({task['display_name']}) [{task['category']}]")
        lines.append(f"  {one_line(task['description'])}")
        lines.append(f"  params: {_params_line(task['params_schema'])}")
    return "\n".join(lines)


def _params_line(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties") or {}
    if not properties:
        return "any object"
    required = set(schema.get("required") or ())
    shown = []
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = spec.get("type", "any")
        kind = "|".join(kind) if isinstance(kind, list) else kind
        if "enum" in spec:
            kind = "|".join(str(value) for value in spec["enum"])
        shown.append(f"{name} ({kind}{', required' if name in required else ''})")
    return ", ".join(shown)


def progress_line(
    done: int, total: int | None, running: Sequence[str], failed: int, width: int
) -> str:
    """``execute``'s live line: ``3/10 done | 2 running: a, b | 1 failed``, cut to ``width``."""
    parts = [f"{done}/{total} done" if total is not None else f"{done} done"]
    if running:
        parts.append(f"{len(running)} running: {', '.join(running)}")
    if failed:
        parts.append(f"{failed} failed")
    return _clip(" | ".join(parts), width)
