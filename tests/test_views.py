"""Tests for the pure rendering of tables, statuses and durations."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pytest

from wfe_daemon.cli.views import (
    human_duration,
    node_order,
    paint,
    progress_line,
    render_table,
    run_detail,
    runs_table,
    task_types,
)

RUNS: list[dict[str, Any]] = [
    {
        "id": 12,
        "name": "nightly",
        "status": "PARTIAL_SUCCESS",
        "started_at": "2024-05-01T12:00:03.250000+00:00",
        "duration": 12.34,
        "error": "fetch: expected 2xx, got 503\nfrom http://example.invalid/",
    },
    {
        "id": 9,
        "name": "hello",
        "status": "SUCCESS",
        "started_at": "2024-05-01T11:59:00+00:00",
        "duration": 0.85,
        "error": None,
    },
]


def _node(node_id: str, type_: str, status: str, **extra: Any) -> dict[str, Any]:
    row = {
        "node_id": node_id,
        "type": type_,
        "status": status,
        "attempts": 1,
        "duration": 0.5,
        "error": None,
        "reason": None,
    }
    row.update(extra)
    return row


RUN: dict[str, Any] = {
    "id": 12,
    "name": "nightly",
    "status": "PARTIAL_SUCCESS",
    "source": "nightly.json",
    "started_at": "2024-05-01T12:00:03.250000+00:00",
    "duration": 245.0,
    "result_summary": {"errors": []},
    # stored in an order that is not the dependency order
    "definition": {
        "name": "nightly",
        "nodes": [
            {"id": "d", "type": "echo", "depends_on": ["b", "c"]},
            {"id": "b", "type": "sleep", "depends_on": ["a"]},
            {"id": "c", "type": "http_get", "depends_on": ["a"]},
            {"id": "a", "type": "echo"},
        ],
    },
    "nodes": [
        _node("d", "echo", "SKIPPED", attempts=0, duration=None, reason="dependency failed: c"),
        _node("b", "sleep", "SUCCESS", duration=3.0),
        _node(
            "c", "http_get", "FAILED", attempts=3, duration=0.0004, error="expected 2xx, got 503"
        ),
        _node("a", "echo", "SUCCESS", duration=0.012),
    ],
}


# -- durations and colours ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.0001, "<1ms"),
        (0.85, "850ms"),
        (0.9996, "1.0s"),
        (12.34, "12.3s"),
        (59.97, "1m00s"),
        (245.0, "4m05s"),
        (7620.0, "2h07m"),
        (273600.0, "3d04h"),
    ],
)
def test_human_duration(seconds: float | None, shown: str) -> None:
    """Durations read as a person would say them, rounding never giving ``60.0s``."""
    assert human_duration(seconds) == shown


def test_paint_colours_by_status_only_when_asked() -> None:
    """A status is wrapped in its ANSI colour with colour on, and left alone otherwise."""
    assert paint("SUCCESS", "SUCCESS", True) == "\x1b[32mSUCCESS\x1b[0m"
    assert paint("FAILED", "FAILED", True) == "\x1b[31mFAILED\x1b[0m"
    assert paint("SKIPPED", "SKIPPED", True) == "\x1b[90mSKIPPED\x1b[0m"
    assert paint("RUNNING", "RUNNING", True) == "\x1b[33mRUNNING\x1b[0m"
    assert paint("PENDING", "PENDING", True) == "PENDING"
    assert paint("SUCCESS", "SUCCESS", False) == "SUCCESS"


# -- tables --------------------------------------------------------------------------------------


def test_render_table_aligns_and_cuts_the_last_column_to_the_width() -> None:
    """Columns align two spaces apart; with a width the last column ends in an ellipsis."""
    table = render_table(
        ["N", "NAME", "NOTE"],
        [["1", "alpha", "short"], ["22", "b", "a much longer note"]],
        right=frozenset({0}),
        width=20,
    )

    assert table == "\n".join(
        [
            " N  NAME   NOTE",
            " 1  alpha  short",
            "22  b      a much l…",
        ]
    )


def test_runs_table_plain() -> None:
    """The runs table: aligned columns, human durations, the error on one line."""
    assert runs_table(RUNS, tz=UTC) == "\n".join(
        [
            "RUN  STATUS           STARTED              DURATION  WORKFLOW  ERROR",
            " 12  PARTIAL_SUCCESS  2024-05-01 12:00:03     12.3s  nightly   "
            "fetch: expected 2xx, got 503 from http://example.invalid/",
            "  9  SUCCESS          2024-05-01 11:59:00     850ms  hello",
        ]
    )


def test_runs_table_coloured_and_cut_to_the_terminal() -> None:
    """On a terminal statuses are coloured without breaking alignment, errors cut to width."""
    table = runs_table(RUNS, color=True, width=80, tz=UTC)

    assert table == "\n".join(
        [
            "RUN  STATUS           STARTED              DURATION  WORKFLOW  ERROR",
            " 12  \x1b[33mPARTIAL_SUCCESS\x1b[0m  2024-05-01 12:00:03     12.3s  nightly   "
            "fetch: expected…",
            "  9  \x1b[32mSUCCESS\x1b[0m          2024-05-01 11:59:00     850ms  hello",
        ]
    )


def test_node_order_follows_the_dependencies() -> None:
    """Nodes come in dependency order from the stored definition, file order among equals."""
    assert [node["node_id"] for node in node_order(RUN)] == ["a", "b", "c", "d"]


def test_node_order_without_a_definition_keeps_the_stored_order() -> None:
    """Without a definition the nodes stay as stored."""
    assert [n["node_id"] for n in node_order({**RUN, "definition": None})] == ["d", "b", "c", "a"]


def test_run_detail_plain() -> None:
    """``show``: the run's facts, its first failure, then one aligned row per node."""
    assert run_detail(RUN, tz=UTC) == "\n".join(
        [
            "run 12  nightly  PARTIAL_SUCCESS",
            "source    nightly.json",
            "started   2024-05-01 12:00:03",
            "duration  4m05s",
            "error     c: expected 2xx, got 503",
            "",
            "NODE  TYPE      STATUS   ATTEMPTS  DURATION  ERROR/REASON",
            "a     echo      SUCCESS         1      12ms",
            "b     sleep     SUCCESS         1      3.0s",
            "c     http_get  FAILED          3      <1ms  expected 2xx, got 503",
            "d     echo      SKIPPED         0         -  dependency failed: c",
        ]
    )


def test_run_detail_coloured_prefers_the_summary_errors() -> None:
    """With colour the statuses are painted; a summary error outranks node errors."""
    run = {**RUN, "result_summary": {"errors": ["cycle: a -> b -> a"], "retry_of": 7}}

    lines = run_detail(run, color=True, tz=UTC).splitlines()

    assert lines[0] == "run 12  nightly  \x1b[33mPARTIAL_SUCCESS\x1b[0m"
    assert lines[4:6] == ["retry of  7", "error     cycle: a -> b -> a"]
    assert (
        lines[-1] == "d     echo      \x1b[90mSKIPPED\x1b[0m         0         -  "
        "dependency failed: c"
    )


def test_run_detail_lists_every_problem_of_a_rejected_run() -> None:
    """A REJECTED run with several problems shows each on its own line, aligned, none dropped."""
    problems = ["node 'a': unknown type 'teleport'", "cycle: b -> c -> b", "cycle: d -> d"]
    run = {
        **RUN,
        "status": "REJECTED",
        "nodes": [],
        "definition": None,
        "result_summary": {"errors": problems},
    }

    assert run_detail(run, tz=UTC).splitlines() == [
        "run 12  nightly  REJECTED",
        "source    nightly.json",
        "started   2024-05-01 12:00:03",
        "duration  4m05s",
        "errors    node 'a': unknown type 'teleport'",
        "          cycle: b -> c -> b",
        "          cycle: d -> d",
    ]


def test_run_detail_cuts_each_problem_to_the_width() -> None:
    """On a narrow terminal each problem line is cut to fit, not only the first."""
    run = {
        **RUN,
        "status": "REJECTED",
        "nodes": [],
        "definition": None,
        "result_summary": {"errors": ["x" * 50, "y" * 50]},
    }

    lines = run_detail(run, width=30, tz=UTC).splitlines()

    assert lines[-2:] == ["errors    " + "x" * 19 + "…", "          " + "y" * 19 + "…"]


# -- progress ------------------------------------------------------------------------------------


def test_progress_line() -> None:
    """The live line counts done of total, names what runs and counts failures, within width."""
    assert progress_line(3, 10, ["fetch", "parse"], 1, 80) == (
        "3/10 done | 2 running: fetch, parse | 1 failed"
    )
    assert progress_line(0, None, [], 0, 80) == "0 done"
    assert progress_line(3, 10, ["fetch", "parse"], 1, 20) == "3/10 done | 2 runni…"


def test_task_types_lists_name_category_description_and_params() -> None:
    """The plain ``tasks`` text shows each type's params with type, enum and required marks."""
    text = task_types(
        [
            {
                "type": "save_db",
                "display_name": "Save",
                "category": "data",
                "description": "Loads\na CSV.",
                "params_schema": {
                    "type": "object",
                    "required": ["table"],
                    "properties": {
                        "table": {"type": "string"},
                        "mode": {"enum": ["append", "replace"]},
                        "n": {"type": ["integer", "null"]},
                    },
                },
            },
            {
                "type": "echo",
                "display_name": "Echo",
                "category": "basic",
                "description": "Echo.",
                "params_schema": {"type": "object"},
            },
        ]
    )
    assert text == (
        "save_db (Save) [data]\n"
        "  Loads a CSV.\n"
        "  params: table (string, required), mode (append|replace), n (integer|null)\n"
        "echo (Echo) [basic]\n"
        "  Echo.\n"
        "  params: any object"
    )
