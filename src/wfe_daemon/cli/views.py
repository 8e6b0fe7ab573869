"""What the command line prints for people: tables, statuses, durations. Pure.

Graphs are drawn by ``core.graph``.

Every function takes plain data (the store's rows) and returns text;
whether to colour and how wide to be are arguments, decided once by ``cli``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

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
