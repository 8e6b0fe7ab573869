"""Tests for the pure result-summary builder of wfe_daemon.core.summary."""

from __future__ import annotations

from wfe_daemon.core.model import RunStatus
from wfe_daemon.core.summary import build_summary, node_entry, retried

AT = "2024-01-01T00:00:00+00:00"


def test_a_summary_has_its_keys_in_the_published_order() -> None:
    """Keys come in the outbox file's order; the duration is rounded to the microsecond."""
    summary = build_summary(
        run_id=3,
        workflow="w",
        source="w.json",
        status=RunStatus.SUCCESS,
        started_at=AT,
        finished_at=AT,
        duration=1.23456789,
        nodes=[("a", node_entry("echo", "SUCCESS", attempts=1, output={"x": 1}))],
    )

    assert list(summary) == [
        "run_id",
        "workflow",
        "source",
        "status",
        "started_at",
        "finished_at",
        "duration",
        "nodes",
        "errors",
    ]
    assert summary["status"] == "SUCCESS"
    assert type(summary["status"]) is str
    assert summary["duration"] == 1.234568
    assert summary["nodes"] == {
        "a": {"type": "echo", "status": "SUCCESS", "attempts": 1, "output": {"x": 1}}
    }
    assert summary["errors"] == []


def test_a_file_that_never_ran_has_errors_and_may_name_its_duplicate() -> None:
    """``errors`` lists the problems; ``duplicate_of`` comes last, only when given."""
    rejected = build_summary(
        run_id=0,
        workflow=None,
        source="bad.json",
        status="REJECTED",
        started_at=AT,
        finished_at=AT,
        duration=0.0,
        errors=["nodes: required"],
    )
    duplicate = build_summary(
        run_id=0,
        workflow="w",
        source="w.json",
        status="DUPLICATE",
        started_at=AT,
        finished_at=AT,
        duration=0.0,
        duplicate_of=7,
    )

    assert rejected["nodes"] == {}
    assert rejected["errors"] == ["nodes: required"]
    assert "duplicate_of" not in rejected
    assert list(duplicate)[-1] == "duplicate_of"
    assert duplicate["duplicate_of"] == 7


def test_a_retry_summary_is_the_same_summary_naming_the_retried_run() -> None:
    """``retried`` keeps every field and adds ``retry_of`` at the end."""
    summary = build_summary(
        run_id=4,
        workflow="w",
        source=None,
        status="PARTIAL_SUCCESS",
        started_at=AT,
        finished_at=AT,
        duration=None,
        nodes={"a": node_entry("echo", "FAILED", attempts=2, started_at=AT, error="boom")},
    )

    retry = retried(summary, 2)

    assert list(retry)[-1] == "retry_of"
    assert {key: value for key, value in retry.items() if key != "retry_of"} == summary
    assert retry["retry_of"] == 2


def test_a_node_entry_shows_only_what_applies() -> None:
    """Times once started, the output only for SUCCESS, error and reason only when set."""
    skipped = node_entry("echo", "SKIPPED", reason="dependency failed: a", output={"x": 1})
    failed = node_entry(
        "echo", "FAILED", attempts=2, started_at=AT, finished_at=AT, duration=0.5, error="boom"
    )

    assert skipped == {"type": "echo", "status": "SKIPPED", "reason": "dependency failed: a"}
    assert failed == {
        "type": "echo",
        "status": "FAILED",
        "attempts": 2,
        "started_at": AT,
        "finished_at": AT,
        "duration": 0.5,
        "error": "boom",
    }
