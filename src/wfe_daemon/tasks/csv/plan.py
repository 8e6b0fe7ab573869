"""The plan of one ``transform_simple``: its steps resolved to column positions.

Both ways of running it read the plan: Arrow's (:mod:`wfe_daemon.tasks.csv.arrow`) and
the row-by-row fallback in :mod:`wfe_daemon.tasks.csv.tasks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.task import Params


def unknown_column(step: str, column: str, name: str, header: Sequence[str]) -> TaskFailed:
    """The failure of a step naming a column the file lacks, listing those it has."""
    return TaskFailed(f"{step}: no column {column!r} in {name} (columns: {', '.join(header)})")


@dataclass(slots=True)
class Plan:
    """The steps of one transform, as column positions of the input."""

    name: str
    filters: list[tuple[int, str, Any]]
    """(column, op, value) of each rule."""
    edits: list[tuple[int, str]]
    """(column, step): strip, lowercase, uppercase, in that order."""
    casts: list[tuple[int, str, str]]
    select: list[int]
    header: list[str]
    """The output header: selected columns, renamed."""


EDITS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lowercase": str.lower,
    "uppercase": str.upper,
}


def build_plan(header: Sequence[str], params: Params, name: str) -> Plan:
    """Resolve every step's columns against the input header (unknown columns fail)."""
    where = {column: i for i, column in enumerate(header)}

    def col(step: str, column: str) -> int:
        if column not in where:
            raise unknown_column(step, column, name, header)
        return where[column]

    filters = [(col("filter", f["column"]), f["op"], f["value"]) for f in params.get("filter", ())]
    edits = [(col(step, c), step) for step in EDITS for c in params.get(step, ())]
    casts = [(col("cast", c), c, t) for c, t in params.get("cast", {}).items()]
    select = [col("select", c) for c in params.get("select", header)]
    rename: Mapping[str, str] = params.get("rename", {})
    for old in rename:
        if col("rename", old) not in select:
            raise TaskFailed(f"rename: column {old!r} is not among the selected columns")
    out = [rename.get(header[i], header[i]) for i in select]
    twice = next((c for i, c in enumerate(out) if c in out[:i]), None)
    if twice is not None:
        raise TaskFailed(f"rename: the output would have two columns named {twice!r}")
    return Plan(name, filters, edits, casts, select, out)
