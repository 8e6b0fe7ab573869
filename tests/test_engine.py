"""Tests for the engine through its public async API, on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import orjson
import pytest
from structlog.testing import capture_logs

from wfe_daemon.errors import TaskFailed
from wfe_daemon.runtime.engine import MAX_BACKOFF_S, Engine, backoff, encode_output
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Params, TaskContext
from wfe_daemon.runtime.wrappers import call_task
from wfe_daemon.service.submission import submit
from wfe_daemon.tasks import BUILTINS

Rows = Callable[..., list[dict[str, Any]]]


# -- test-only task types -----------------------------------------------------------------------


class _TestTask:
    """Shared metadata of the test task types."""

    type: ClassVar[str] = "test"
    display_name: ClassVar[str] = "Test"
    description: ClassVar[str] = "A task type that exists only in tests."
    category: ClassVar[str] = "test"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    default_timeout: ClassVar[float | None] = None


class FailTask(_TestTask):
    """Always fails with ``params["message"]`` (default ``boom``)."""

    type: ClassVar[str] = "fail"

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        raise TaskFailed(params.get("message", "boom"))


class FlakyTask(_TestTask):
    """Fails its first ``fail_times`` calls; records ``time.monotonic()`` of every call."""

    type: ClassVar[str] = "flaky"

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        self.calls.append(time.monotonic())
        if len(self.calls) <= params["fail_times"]:
            raise TaskFailed(f"attempt {len(self.calls)} failed")
        return {"calls": len(self.calls)}


class NapTask(_TestTask):
    """Sleeps like ``sleep``, under another type name (so it has no task limit)."""

    type: ClassVar[str] = "nap"

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        await asyncio.sleep(params["seconds"])
        return {}


class BadOutputTask(_TestTask):
    """Returns something that is not JSON, chosen by ``params["kind"]``."""

    type: ClassVar[str] = "bad_output"

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        return {
            "set": {"values": {1, 2}},
            "nan": {"ratio": math.nan},
            "object": {"thing": object()},
            "bigint": {"rows": [0, 2**64]},
            "surrogate": {"text": "a\udc80"},
            "intkey": {"counts": {1: 2}},
        }[params["kind"]]


# -- helpers ------------------------------------------------------------------------------------


async def run_doc(engine: Engine, doc: dict[str, Any]) -> dict[str, Any]:
    """Submit a workflow document as a file's bytes would arrive; return the summary."""
    data = json.dumps(doc).encode()
    return await submit(
        data, registry=engine.registry, store=engine.store, engine=engine, source="test.json"
    )


def node(node_id: str, task_type: str = "echo", **fields: Any) -> dict[str, Any]:
    """A workflow node; ``deps`` is a shorthand for ``depends_on``."""
    if "deps" in fields:
        fields["depends_on"] = fields.pop("deps")
    return {"id": node_id, "type": task_type, **fields}


def sleep_node(node_id: str, seconds: float | str, **fields: Any) -> dict[str, Any]:
    """A ``sleep`` node of ``seconds``."""
    return node(node_id, "sleep", params={"seconds": seconds}, **fields)


def workflow(*nodes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A workflow document of ``nodes``."""
    return {"name": "test", "nodes": list(nodes), **fields}


def stamp(value: str) -> datetime:
    """An ISO-8601 stamp from a summary or a row."""
    return datetime.fromisoformat(value)


def max_overlap(intervals: list[tuple[str, str]]) -> int:
    """The most intervals open at one instant (an end and a start at one stamp don't overlap)."""
    events = sorted(
        [(stamp(start), 1) for start, _ in intervals] + [(stamp(end), -1) for _, end in intervals]
    )
    open_now = peak = 0
    for _, delta in events:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def node_rows(sql: Rows, run_id: int) -> dict[str, dict[str, Any]]:
    """The noderun rows of a run, by node id."""
    return {
        row["node_id"]: row for row in sql("SELECT * FROM noderun WHERE workflow_id = ?", run_id)
    }


def statuses(summary: dict[str, Any]) -> dict[str, str]:
    """Node id to status, from a summary."""
    return {node_id: entry["status"] for node_id, entry in summary["nodes"].items()}


# -- concurrency and ordering -------------------------------------------------------------------


async def test_diamond_runs_both_branches_at_once_and_join_after_both(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """In a -> (b, c) -> d, b and c overlap in time and d starts after both finished."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            sleep_node("a", 0.3),
            sleep_node("b", 0.3, deps=["a"]),
            sleep_node("c", 0.3, deps=["a"]),
            sleep_node("d", 0.3, deps=["b", "c"]),
        ),
    )

    assert summary["status"] == "SUCCESS"
    rows = node_rows(sql, summary["run_id"])
    for source in (summary["nodes"], rows):
        a, b, c, d = (source[n] for n in "abcd")
        assert stamp(a["finished_at"]) <= stamp(b["started_at"])
        assert stamp(a["finished_at"]) <= stamp(c["started_at"])
        assert stamp(b["started_at"]) < stamp(c["finished_at"])
        assert stamp(c["started_at"]) < stamp(b["finished_at"])
        assert stamp(d["started_at"]) >= max(stamp(b["finished_at"]), stamp(c["finished_at"]))


async def test_node_starts_when_its_own_dependencies_end_not_in_waves(
    engine_factory: Callable[..., Engine],
) -> None:
    """A node whose parent finished starts while a slower node of the parent's level still runs."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            sleep_node("fast", 0.1),
            sleep_node("slow", 0.6),
            node("after_fast", deps=["fast"]),
        ),
    )

    nodes = summary["nodes"]
    assert summary["status"] == "SUCCESS"
    assert stamp(nodes["after_fast"]["finished_at"]) < stamp(nodes["slow"]["finished_at"])


async def test_global_limit_is_never_exceeded(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """With max_concurrent_tasks = 2, eight parallel sleeps never run more than two at once."""
    engine = engine_factory(max_concurrent_tasks=2)
    summary = await run_doc(engine, workflow(*(sleep_node(f"s{i}", 0.1) for i in range(8))))

    assert summary["status"] == "SUCCESS"
    rows = node_rows(sql, summary["run_id"]).values()
    assert max_overlap([(row["started_at"], row["finished_at"]) for row in rows]) == 2


async def test_task_limit_is_never_exceeded_while_other_types_use_free_slots(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """task_limits {"sleep": 1} keeps sleeps one at a time while naps fill the other slots."""
    engine = engine_factory(NapTask(), max_concurrent_tasks=4, task_limits={"sleep": 1})
    summary = await run_doc(
        engine,
        workflow(
            *(sleep_node(f"s{i}", 0.1) for i in range(4)),
            *(node(f"n{i}", "nap", params={"seconds": 0.1}) for i in range(8)),
        ),
    )

    assert summary["status"] == "SUCCESS"
    rows = list(node_rows(sql, summary["run_id"]).values())
    sleeps = [(r["started_at"], r["finished_at"]) for r in rows if r["type"] == "sleep"]
    every = [(r["started_at"], r["finished_at"]) for r in rows]
    assert max_overlap(sleeps) == 1
    assert max_overlap(every) <= 4
    assert max_overlap(every) >= 2  # the sleep limit does not serialise the other types


async def test_global_limit_holds_across_concurrent_workflows(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """Two workflows run at once on one Engine share max_concurrent_tasks = 2."""
    engine = engine_factory(max_concurrent_tasks=2)
    doc = workflow(*(sleep_node(f"s{i}", 0.1) for i in range(4)))

    first, second = await asyncio.gather(run_doc(engine, doc), run_doc(engine, doc))

    assert first["status"] == second["status"] == "SUCCESS"
    rows = sql("SELECT started_at, finished_at FROM noderun")
    assert len(rows) == 8
    assert max_overlap([(r["started_at"], r["finished_at"]) for r in rows]) == 2


# -- failure, timeouts, retries -----------------------------------------------------------------


async def test_failure_skips_transitive_dependents_and_independent_branch_succeeds(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A FAILED node's descendants are SKIPPED with its id, its siblings' branch succeeds."""
    engine = engine_factory(FailTask())
    summary = await run_doc(
        engine,
        workflow(
            node("a", "fail"),
            node("b", deps=["a"]),
            node("c", deps=["b"]),
            node("d", deps=["a", "x"]),
            node("x"),
            node("y", deps=["x"]),
        ),
    )

    assert summary["status"] == "PARTIAL_SUCCESS"
    assert statuses(summary) == {
        "a": "FAILED",
        "b": "SKIPPED",
        "c": "SKIPPED",
        "d": "SKIPPED",
        "x": "SUCCESS",
        "y": "SUCCESS",
    }
    assert summary["nodes"]["a"]["error"] == "boom"
    for skipped in "bcd":
        assert summary["nodes"][skipped]["reason"] == "dependency failed: a"
    rows = node_rows(sql, summary["run_id"])
    assert {n: r["status"] for n, r in rows.items()} == statuses(summary)
    assert rows["c"]["reason"] == "dependency failed: a"
    assert [rows[n]["cause"] for n in "abcdxy"] == [None, "a", "a", "a", None, None]


async def test_a_url_quoted_in_any_tasks_error_keeps_its_secrets_hidden(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """Whatever the task, an error quoting a URL shows its user info and secret-named
    parameters as ***, in the summary and the database alike."""
    engine = engine_factory(FailTask())
    message = "could not fetch https://me:pw-s3cr3t@example.test/x?token=t-s3cr3t&page=2 today"
    summary = await run_doc(engine, workflow(node("a", "fail", params={"message": message})))

    shown = "could not fetch https://***@example.test/x?token=***&page=2 today"
    assert summary["nodes"]["a"]["error"] == shown
    assert node_rows(sql, summary["run_id"])["a"]["error"] == shown


async def test_run_where_nothing_succeeds_is_failed(engine_factory: Callable[..., Engine]) -> None:
    """A run whose only nodes fail or are skipped by the failure ends FAILED."""
    engine = engine_factory(FailTask())
    summary = await run_doc(engine, workflow(node("a", "fail"), node("b", deps=["a"])))

    assert summary["status"] == "FAILED"
    assert statuses(summary) == {"a": "FAILED", "b": "SKIPPED"}


async def test_node_past_its_timeout_fails_saying_so(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A node's own timeout, else task_timeout, ends it FAILED with "timed out after ..."."""
    engine = engine_factory(task_timeout=0.2)
    summary = await run_doc(
        engine,
        workflow(
            sleep_node("own", 5, timeout=0.3),
            sleep_node("default", 5),
        ),
    )

    nodes = summary["nodes"]
    assert summary["status"] == "FAILED"
    assert nodes["own"]["status"] == nodes["default"]["status"] == "FAILED"
    assert nodes["own"]["error"] == "timed out after 0.3s"
    assert nodes["default"]["error"] == "timed out after 0.2s"
    assert node_rows(sql, summary["run_id"])["own"]["error"] == "timed out after 0.3s"


async def test_retries_follow_exponential_backoff_and_count_attempts(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """Attempts are spaced retry_delay * 2**(attempt-1) apart and counted in summary and row."""
    flaky = FlakyTask()
    engine = engine_factory(flaky)
    summary = await run_doc(
        engine,
        workflow(
            node("f", "flaky", params={"fail_times": 3}, retries=3, retry_delay=0.1),
        ),
    )

    assert summary["status"] == "SUCCESS"
    gaps = [later - earlier for earlier, later in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert gap >= expected * 0.95
    assert summary["nodes"]["f"]["attempts"] == 4
    assert summary["nodes"]["f"]["output"] == {"calls": 4}
    assert node_rows(sql, summary["run_id"])["f"]["attempts"] == 4


async def test_node_failing_after_all_retries_is_failed_with_last_error(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """retries = 2 means three attempts; the node ends FAILED with the last attempt's error."""
    engine = engine_factory(FlakyTask())
    summary = await run_doc(
        engine,
        workflow(
            node("f", "flaky", params={"fail_times": 10}, retries=2, retry_delay=0),
        ),
    )

    entry = summary["nodes"]["f"]
    assert (entry["status"], entry["attempts"], entry["error"]) == ("FAILED", 3, "attempt 3 failed")
    assert node_rows(sql, summary["run_id"])["f"]["attempts"] == 3


async def test_a_sleep_node_lasts_at_least_its_seconds(
    engine_factory: Callable[..., Engine],
) -> None:
    """uvloop's timers may fire a millisecond early; a ``sleep`` node never ends early."""
    engine = engine_factory()
    chain = [sleep_node("s0", 0.02)] + [
        sleep_node(f"s{i}", 0.02, deps=[f"s{i - 1}"]) for i in range(1, 40)
    ]
    summary = await run_doc(engine, workflow(*chain))  # one after the other: 40 fresh timers

    durations = [entry["duration"] for entry in summary["nodes"].values()]
    assert len(durations) == 40
    assert min(durations) >= 0.02, sorted(durations)[:3]


class SlowDefaultTask(_TestTask):
    """Sleeps ``params["seconds"]``; its type's default timeout is 0.2 s."""

    type: ClassVar[str] = "slow_default"
    default_timeout: ClassVar[float | None] = 0.2

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        await asyncio.sleep(params["seconds"])
        return {}


async def test_the_task_types_default_timeout_comes_between_the_nodes_and_task_timeout(
    engine_factory: Callable[..., Engine],
) -> None:
    """A node's own timeout, else its task type's default, else task_timeout."""
    engine = engine_factory(SlowDefaultTask(), task_timeout=300)
    summary = await run_doc(
        engine,
        workflow(
            node("typed", "slow_default", params={"seconds": 30}),
            node("own", "slow_default", params={"seconds": 0.5}, timeout=1),
        ),
    )

    nodes = summary["nodes"]
    assert nodes["typed"]["error"] == "timed out after 0.2s"
    assert nodes["own"]["status"] == "SUCCESS"  # its own 1 s beats the type's 0.2 s


async def test_a_short_timeout_started_after_a_long_one_fires_on_time(
    engine_factory: Callable[..., Engine],
) -> None:
    """Attempts share one timer: a later, shorter deadline must not wait for an earlier one."""
    engine = engine_factory()
    started = time.perf_counter()
    summary = await run_doc(
        engine,
        workflow(
            sleep_node("long", 0.8, timeout=30),
            sleep_node("short", 30, timeout=0.2),
            sleep_node("after", 30, timeout=0.2, deps=["long"]),
        ),
    )

    nodes = summary["nodes"]
    assert nodes["long"]["status"] == "SUCCESS"
    assert nodes["short"]["error"] == "timed out after 0.2s"
    assert nodes["short"]["duration"] < 0.6  # its own deadline, not the 30 s one
    assert nodes["after"]["error"] == "timed out after 0.2s"  # armed again after the first
    assert time.perf_counter() - started < 5


async def test_timeouts_are_retried_like_other_failures(
    engine_factory: Callable[..., Engine],
) -> None:
    """A node that times out on every attempt is retried, then FAILED with the timeout."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            sleep_node("s", 5, timeout=0.1, retries=1, retry_delay=0),
        ),
    )

    entry = summary["nodes"]["s"]
    assert (entry["status"], entry["attempts"]) == ("FAILED", 2)
    assert entry["error"] == "timed out after 0.1s"


async def test_workflow_timeout_fails_running_nodes_and_skips_the_rest(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """At the workflow's timeout, running nodes end FAILED ("cancelled: ..."), the rest SKIPPED."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            node("quick"),
            sleep_node("long", 5),
            sleep_node("after", 0, deps=["long"]),
            sleep_node("later", 0, deps=["quick", "long"]),
            timeout=0.3,
        ),
    )

    nodes = summary["nodes"]
    assert summary["status"] == "PARTIAL_SUCCESS"
    assert statuses(summary) == {
        "quick": "SUCCESS",
        "long": "FAILED",
        "after": "SKIPPED",
        "later": "SKIPPED",
    }
    assert nodes["long"]["error"] == "cancelled: workflow timed out after 0.3s"
    assert summary["duration"] < 5  # it did not wait for the 5 s sleep
    rows = node_rows(sql, summary["run_id"])
    assert {n: r["status"] for n, r in rows.items()} == statuses(summary)


async def test_workflow_timeout_skips_nodes_still_waiting_for_a_slot(
    engine_factory: Callable[..., Engine],
) -> None:
    """A node that never got a slot before the workflow timed out is SKIPPED, not FAILED."""
    engine = engine_factory(task_limits={"sleep": 1})
    summary = await run_doc(
        engine, workflow(sleep_node("first", 5), sleep_node("second", 5), timeout=0.3)
    )

    assert sorted(statuses(summary).values()) == ["FAILED", "SKIPPED"]
    waited = next(e for e in summary["nodes"].values() if e["status"] == "SKIPPED")
    assert waited["reason"] == "workflow timed out after 0.3s"
    assert "started_at" not in waited
    assert "attempts" not in waited


async def test_max_workflow_duration_setting_bounds_a_run_without_its_own_timeout(
    engine_factory: Callable[..., Engine],
) -> None:
    """max_workflow_duration applies when the file sets no timeout."""
    engine = engine_factory(max_workflow_duration=0.2)
    summary = await run_doc(
        engine, workflow(sleep_node("long", 5), sleep_node("next", 0, deps=["long"]))
    )

    assert summary["status"] == "FAILED"
    assert summary["nodes"]["long"]["error"] == "cancelled: workflow timed out after 0.2s"
    assert summary["nodes"]["next"]["status"] == "SKIPPED"


# -- trigger rules ------------------------------------------------------------------------------

# Dependencies available to the node under test: ok1/ok2 succeed, bad1/bad2 fail,
# quiet is a one_failed handler of ok1 that never fires (SKIPPED, not a failure), and
# lost depends on bad1 (SKIPPED because of a failure, which counts as one).
_PARENTS = {
    "ok1": node("ok1"),
    "ok2": node("ok2"),
    "bad1": node("bad1", "fail"),
    "bad2": node("bad2", "fail"),
    "quiet": node("quiet", deps=["ok1"], trigger_rule="one_failed"),
    "lost": node("lost", deps=["bad1"]),
}
_UPSTREAM = {"quiet": "ok1", "lost": "bad1"}


@pytest.mark.parametrize(
    ("rule", "deps", "expected", "reason", "run_status"),
    [
        ("all_success", ["ok1", "ok2"], "SUCCESS", None, "SUCCESS"),
        ("all_success", ["ok1", "bad1"], "SKIPPED", "dependency failed: bad1", "PARTIAL_SUCCESS"),
        ("all_success", ["ok1", "quiet"], "SKIPPED", "dependency skipped: quiet", "SUCCESS"),
        ("all_done", ["ok1", "bad1"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        ("all_done", ["bad1", "bad2"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        ("all_failed", ["bad1", "bad2"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        (
            "all_failed",
            ["ok1", "bad1"],
            "SKIPPED",
            "trigger rule all_failed: ok1 did not fail",
            "PARTIAL_SUCCESS",
        ),
        # A skip with no failure upstream is not a failure: all_failed does not fire, and
        # nothing failed, so the run is a SUCCESS.
        (
            "all_failed",
            ["quiet"],
            "SKIPPED",
            "trigger rule all_failed: quiet did not fail",
            "SUCCESS",
        ),
        (
            "all_failed",
            ["bad1", "quiet"],
            "SKIPPED",
            "trigger rule all_failed: quiet did not fail",
            "PARTIAL_SUCCESS",
        ),
        # A skip caused by a failure counts as one.
        ("all_failed", ["lost"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        ("all_failed", ["lost", "bad2"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        ("one_success", ["ok1", "bad1"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        ("one_success", ["bad1", "bad2"], "SKIPPED", "dependency failed: bad1", "FAILED"),
        ("one_failed", ["ok1", "bad1"], "SUCCESS", None, "PARTIAL_SUCCESS"),
        (
            "one_failed",
            ["ok1", "ok2"],
            "SKIPPED",
            "trigger rule one_failed: no dependency failed",
            "SUCCESS",
        ),
        ("none_failed", ["ok1", "quiet"], "SUCCESS", None, "SUCCESS"),
        ("none_failed", ["ok1", "bad1"], "SKIPPED", "dependency failed: bad1", "PARTIAL_SUCCESS"),
    ],
)
async def test_trigger_rule(
    engine_factory: Callable[..., Engine],
    rule: str,
    deps: list[str],
    expected: str,
    reason: str | None,
    run_status: str,
) -> None:
    """Each trigger rule runs or skips its node (with the reason) as its dependencies ended."""
    engine = engine_factory(FailTask())
    needed = {*deps, *(_UPSTREAM[d] for d in deps if d in _UPSTREAM)}
    parents = [doc for node_id, doc in _PARENTS.items() if node_id in needed]
    summary = await run_doc(
        engine,
        workflow(
            *parents,
            node("x", deps=deps, trigger_rule=rule),
        ),
    )

    entry = summary["nodes"]["x"]
    assert entry["status"] == expected
    assert entry.get("reason") == reason
    assert summary["status"] == run_status


async def test_one_failed_handler_that_never_fired_leaves_the_run_successful(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A run whose one_failed handler (and what follows it) never fired ends SUCCESS."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            node("extract"),
            node("load", deps=["extract"]),
            node("alert", deps=["extract", "load"], trigger_rule="one_failed"),
            node("page", deps=["alert"]),
            node("cleanup", deps=["load", "alert"], trigger_rule="all_done"),
        ),
    )

    assert summary["status"] == "SUCCESS"
    assert statuses(summary) == {
        "extract": "SUCCESS",
        "load": "SUCCESS",
        "alert": "SKIPPED",
        "page": "SKIPPED",
        "cleanup": "SUCCESS",
    }
    assert "error" not in summary["nodes"]["alert"]
    run = sql("SELECT status FROM workflowrun WHERE id = ?", summary["run_id"])
    assert run == [{"status": "SUCCESS"}]


async def test_failure_handlers_run_after_a_failure_upstream(
    engine_factory: Callable[..., Engine],
) -> None:
    """one_failed fires on a failure two levels up; all_failed fires when its parent failed."""
    engine = engine_factory(FailTask())
    summary = await run_doc(
        engine,
        workflow(
            node("extract", "fail"),
            node("load", deps=["extract"]),
            node("alert", deps=["load"], trigger_rule="one_failed"),
            node("rollback", deps=["extract"], trigger_rule="all_failed"),
        ),
    )

    assert summary["status"] == "PARTIAL_SUCCESS"
    assert statuses(summary) == {
        "extract": "FAILED",
        "load": "SKIPPED",
        "alert": "SUCCESS",
        "rollback": "SUCCESS",
    }


# -- references and outputs ---------------------------------------------------------------------


async def test_references_keep_json_types_alone_and_interpolate_in_strings(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A whole-string reference keeps its JSON type; inside a longer string it becomes text."""
    engine = engine_factory()
    source = {
        "n": 3,
        "f": 1.5,
        "flag": True,
        "none": None,
        "items": [1, "two", {"k": "v"}],
        "obj": {"k": "v", "deep": [10, 20]},
        "s": "text",
    }
    summary = await run_doc(
        engine,
        workflow(
            node("a", params=source),
            node(
                "b",
                deps=["a"],
                params={
                    "n": "{{ a.n }}",
                    "f": "{{a.f}}",
                    "flag": "{{ a.flag }}",
                    "none": "{{ a.none }}",
                    "items": "{{ a.items }}",
                    "obj": "{{ a.obj }}",
                    "whole": "{{ a }}",
                    "index": "{{ a.obj.deep.1 }}",
                    "nested": {"list": ["{{ a.items.2.k }}"]},
                    "padded": "  {{ a.n }}  ",
                    "text": "n={{ a.n }} items={{ a.items }} obj={{ a.obj }}"
                    " s={{ a.s }} none={{ a.none }}",
                },
            ),
        ),
    )

    assert summary["status"] == "SUCCESS"
    output = summary["nodes"]["b"]["output"]
    assert output == {
        "n": 3,
        "f": 1.5,
        "flag": True,
        "none": None,
        "items": [1, "two", {"k": "v"}],
        "obj": {"k": "v", "deep": [10, 20]},
        "whole": source,
        "index": 20,
        "nested": {"list": ["v"]},
        "padded": 3,
        "text": 'n=3 items=[1,"two",{"k":"v"}] obj={"k":"v","deep":[10,20]} s=text none=null',
    }
    row = node_rows(sql, summary["run_id"])["b"]
    assert json.loads(row["result_data"]) == output


async def test_reference_to_a_missing_key_fails_the_node_naming_the_reference(
    engine_factory: Callable[..., Engine],
) -> None:
    """A reference into a key the parent's output lacks fails the node with a clear error."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            node("a", params={"x": 1}),
            node("b", deps=["a"], params={"y": "{{ a.missing }}"}),
            node("c", deps=["b"]),
        ),
    )

    assert summary["status"] == "PARTIAL_SUCCESS"
    entry = summary["nodes"]["b"]
    assert entry["status"] == "FAILED"
    assert "{{ a.missing }}" in entry["error"]
    assert "missing" in entry["error"].replace("{{ a.missing }}", "")
    assert summary["nodes"]["c"]["reason"] == "dependency failed: b"


async def test_resolved_params_are_checked_against_the_schema(
    engine_factory: Callable[..., Engine],
) -> None:
    """A reference resolving to a value the schema refuses fails the node at its start."""
    engine = engine_factory()
    summary = await run_doc(
        engine,
        workflow(
            node("a", params={"seconds": "soon"}),
            sleep_node("b", "{{ a.seconds }}", deps=["a"]),
        ),
    )

    entry = summary["nodes"]["b"]
    assert entry["status"] == "FAILED"
    assert entry["error"].startswith("params:")
    assert "soon" in entry["error"]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("set", "output.values: set is not a JSON value"),
        ("nan", "output.ratio: number nan is not a JSON number"),
        ("object", "output.thing: object is not a JSON value"),
        ("bigint", "output.rows.1: integer 18446744073709551616 does not fit in 64 bits"),
        ("surrogate", "output.text: string 'a\\udc80' holds a lone surrogate"),
        ("intkey", "output.counts: key 1 is not a string"),
    ],
)
async def test_output_that_is_not_json_fails_the_node_cleanly(
    engine_factory: Callable[..., Engine], sql: Rows, kind: str, message: str
) -> None:
    """An output JSON cannot carry fails the node naming where; the summary stays encodable."""
    engine = engine_factory(BadOutputTask())
    summary = await run_doc(engine, workflow(node("bad", "bad_output", params={"kind": kind})))

    entry = summary["nodes"]["bad"]
    assert summary["status"] == "FAILED"
    assert entry["status"] == "FAILED"
    assert entry["error"] == message
    assert "output" not in entry
    json.dumps(summary, allow_nan=False)
    orjson.dumps(summary)
    row = node_rows(sql, summary["run_id"])["bad"]
    assert row["result_data"] is None
    assert row["status"] == "FAILED"


# -- scale --------------------------------------------------------------------------------------


async def test_ten_thousand_node_fan_out_completes(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A root with 9,999 children (10,000 echo nodes) ends SUCCESS with every row recorded."""
    engine = engine_factory()
    children = [node(f"n{i}", deps=["root"], params={"v": "{{ root.v }}"}) for i in range(9_999)]
    summary = await run_doc(engine, workflow(node("root", params={"v": 7}), *children))

    assert summary["status"] == "SUCCESS"
    assert summary["nodes"]["n9998"]["output"] == {"v": 7}
    assert sql("SELECT status, COUNT(*) AS n FROM noderun GROUP BY status") == [
        {"status": "SUCCESS", "n": 10_000}
    ]


async def test_ten_thousand_node_chain_completes(
    engine_factory: Callable[..., Engine], sql: Rows
) -> None:
    """A 10,000-node chain, each node referencing its parent's output, ends SUCCESS in order."""
    engine = engine_factory()
    nodes = [node("n0", params={"v": 0})]
    nodes += [
        node(f"n{i}", deps=[f"n{i - 1}"], params={"v": f"{{{{ n{i - 1}.v }}}}"})
        for i in range(1, 10_000)
    ]
    summary = await run_doc(engine, workflow(*nodes))

    assert summary["status"] == "SUCCESS"
    assert summary["nodes"]["n9999"]["output"] == {"v": 0}
    last, before = summary["nodes"]["n9999"], summary["nodes"]["n9998"]
    assert stamp(before["finished_at"]) <= stamp(last["started_at"])
    assert sql("SELECT status, COUNT(*) AS n FROM noderun GROUP BY status") == [
        {"status": "SUCCESS", "n": 10_000}
    ]


# -- cancellation -------------------------------------------------------------------------------


async def test_a_fan_out_spawns_nodes_no_faster_than_they_take_slots(
    engine_factory: Callable[..., Engine],
) -> None:
    """Nodes of a fan-out start in file order, and never more than two node tasks per slot
    exist at once (a large fan-out holds no crowd of idle tasks)."""
    base = engine_factory(max_concurrent_tasks=2)
    started: list[str] = []
    most = 0

    async def count(task: Any, params: Params, ctx: TaskContext) -> Any:
        nonlocal most
        started.append(ctx.node_id)
        alive = [t for t in asyncio.all_tasks() if "_node" in t.get_coro().__qualname__]
        most = max(most, len(alive))
        await asyncio.sleep(0)
        return await call_task(task, params, ctx)

    engine = Engine(base.registry, base.store, base.settings, executor=count)
    children = [node(f"c{i}", deps=["root"]) for i in range(100)]
    summary = await run_doc(engine, workflow(node("root"), *children))

    assert summary["status"] == "SUCCESS"
    assert started == ["root", *(f"c{i}" for i in range(100))]
    assert 2 <= most <= 4


async def test_cancelling_a_run_as_the_next_node_takes_its_slot_leaks_no_slot(
    engine_factory: Callable[..., Engine],
) -> None:
    """A run cancelled just as a slot passes to the next node gives that slot back."""
    base = engine_factory(max_concurrent_tasks=1)
    run: asyncio.Task[dict[str, Any]] | None = None

    async def cancel_run_as_a_returns(task: Any, params: Params, ctx: TaskContext) -> Any:
        output = await call_task(task, params, ctx)
        if ctx.node_id == "a":  # lands after the slot is released, before b's task first runs
            asyncio.get_running_loop().call_soon(run.cancel)  # type: ignore[union-attr]
        return output

    engine = Engine(base.registry, base.store, base.settings, executor=cancel_run_as_a_returns)
    run = asyncio.create_task(run_doc(engine, workflow(node("a"), node("b"), node("c"))))
    with pytest.raises(asyncio.CancelledError):
        await run

    summary = await asyncio.wait_for(run_doc(engine, workflow(node("z"))), timeout=5)
    assert summary["status"] == "SUCCESS"


async def test_a_resumed_run_waits_only_for_the_dependencies_it_did_not_keep(
    engine_factory: Callable[..., Engine],
) -> None:
    """A node whose kept parent succeeded in an earlier life waits only for its other
    parent, then reads the kept output; the kept node does not run again."""
    from wfe_daemon.core.model import NodeStatus, parse_workflow
    from wfe_daemon.core.nodestate import NodeState

    engine = engine_factory()
    doc = workflow(node("a"), node("b"), node("c", deps=["a", "b"], params={"x": "{{ a.kept }}"}))
    wf = parse_workflow(json.dumps(doc).encode(), engine.registry)
    earlier = datetime.now().astimezone().isoformat()
    run_id = await engine.store.create_run(
        name=wf.name, started_at=earlier, nodes=[(n.id, n.type) for n in wf.nodes]
    )
    kept = NodeState(wf.nodes[0], status=NodeStatus.SUCCESS, attempts=1, output={"kept": True})

    summary = await engine.resume(wf, run_id, started_at=earlier, done={"a": kept})

    assert statuses(summary) == {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS"}
    assert summary["nodes"]["a"]["output"] == {"kept": True}
    assert summary["nodes"]["c"]["output"] == {"x": True}


async def test_duration_spans_the_whole_run_even_when_resumed(
    engine_factory: Callable[..., Engine],
) -> None:
    """A fresh run's duration matches its stamps; a resumed one counts from its first start."""
    from datetime import UTC, datetime, timedelta

    from wfe_daemon.core.model import parse_workflow

    engine = engine_factory()
    summary = await run_doc(engine, workflow(node("a", "sleep", params={"seconds": 0.1})))
    span = datetime.fromisoformat(summary["finished_at"]) - datetime.fromisoformat(
        summary["started_at"]
    )
    assert abs(span.total_seconds() - summary["duration"]) < 0.05
    assert summary["duration"] >= 0.1

    wf = parse_workflow(json.dumps(workflow(node("b"))).encode(), engine.registry)
    earlier = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    run_id = await engine.store.create_run(name=wf.name, started_at=earlier, nodes=[("b", "echo")])
    resumed = await engine.resume(wf, run_id, started_at=earlier, done={})
    assert resumed["duration"] >= 30


def test_a_reused_output_that_lost_a_secret_runs_again_when_referenced() -> None:
    """Resuming keeps finished nodes, except one whose stored secret a pending node needs."""
    from wfe_daemon.core.model import NodeStatus, parse_workflow
    from wfe_daemon.core.nodestate import reusable_states

    wf = parse_workflow(
        json.dumps(
            workflow(
                node("login", params={"token": "abc"}),
                node("plain", params={"x": 1}),
                node(
                    "use",
                    depends_on=["login", "plain"],
                    params={"auth": "{{ login.token }}", "x": "{{ plain.x }}"},
                ),
            )
        ).encode(),
        TaskRegistry.load(BUILTINS, entry_point_group=None),
    )

    def row(node_id: str, status: str, output: Any) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "status": status,
            "attempts": 1,
            "started_at": "t",
            "finished_at": "t",
            "duration": 0.1,
            "result_data": output,
            "error": None,
            "reason": None,
            "cause": None,
        }

    rows = [
        row("login", "SUCCESS", {"token": "***"}),
        row("plain", "SUCCESS", {"x": 1}),
        row("use", "RUNNING", None),
    ]
    kept = reusable_states(wf, rows, {NodeStatus.SUCCESS})
    assert set(kept) == {"plain"}
    finished = [*rows[:2], row("use", "SUCCESS", {"auth": "***", "x": 1})]
    assert set(reusable_states(wf, finished, {NodeStatus.SUCCESS})) == {"login", "plain", "use"}


class CancelsOnReturn(_TestTask):
    """Asks the engine to cancel its own run just as it returns (a cancel that comes late)."""

    type: ClassVar[str] = "cancels_on_return"
    engine: Engine | None = None

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        assert self.engine is not None
        asyncio.get_running_loop().call_soon(self.engine.cancel, ctx.run_id)
        return {}


async def test_a_cancel_arriving_after_every_node_ended_changes_nothing(
    engine_factory: Callable[..., Engine],
) -> None:
    """Once every node has ended, a late cancel cannot turn a successful run CANCELLED."""
    task = CancelsOnReturn()
    engine = task.engine = engine_factory(task)
    summary = await run_doc(engine, workflow(node("a", "cancels_on_return")))
    assert summary["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("retry_delay", "attempt", "expected"),
    [
        (1.0, 1, 1.0),
        (1.0, 2, 2.0),
        (0.5, 4, 4.0),
        (1.0, 12, 2048.0),
        (1.0, 13, MAX_BACKOFF_S),
        (3600.0, 2, MAX_BACKOFF_S),
        (0.001, 1025, MAX_BACKOFF_S),
        (0.0, 1025, 0.0),
    ],
)
def test_backoff_doubles_up_to_an_hour(retry_delay: float, attempt: int, expected: float) -> None:
    """The wait doubles per attempt, never passes an hour and never overflows (attempt 1025)."""
    assert MAX_BACKOFF_S == 3600.0
    assert backoff(retry_delay, attempt) == expected


async def test_retry_waits_are_logged_as_backoff_computes_them(
    engine_factory: Callable[..., Engine],
) -> None:
    """Each node.retry carries the delay the engine waits, retry_delay * 2**(attempt-1)."""
    engine = engine_factory(FailTask())
    with capture_logs() as logs:
        summary = await run_doc(engine, workflow(node("f", "fail", retries=3, retry_delay=0.01)))
    assert summary["nodes"]["f"]["attempts"] == 4
    delays = [e["delay"] for e in logs if e["event"] == "node.retry"]
    assert delays == [0.01, 0.02, 0.04]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


class MisbehavingTask(_TestTask):
    """A plugin that breaks the rules in the way ``params.how`` names."""

    type = "misbehave"

    async def execute(self, params: Params, ctx: TaskContext) -> Any:
        how = params["how"]
        if how == "cycle":
            looped: list[Any] = []
            looped.append(looped)
            return looped
        if how == "deep":
            deep: list[Any] = []
            for _ in range(5000):
                deep = [deep]
            return deep
        if how == "unprintable":
            raise _Unprintable
        if how == "cancelled":
            raise asyncio.CancelledError
        if how == "exit":
            raise SystemExit(3)
        return how


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("cycle", "output: "),
        ("deep", "output: "),
        ("unprintable", "_Unprintable: (its message cannot be shown)"),
        ("cancelled", "CancelledError: raised by the task, not a cancel of the node"),
        ("exit", "SystemExit: 3"),
    ],
)
async def test_a_task_that_breaks_the_rules_fails_its_node_and_the_run_goes_on(
    engine_factory: Callable[..., Engine], how: str, error: str
) -> None:
    """An output that holds itself or nests too deeply, an exception whose text cannot be
    shown, ``sys.exit()``, or a ``CancelledError`` the task raises of its own accord fails
    that node with a clear error; the run ends and its other nodes run (no crash, no
    hang)."""
    engine = engine_factory(MisbehavingTask())
    doc = workflow(node("bad", "misbehave", params={"how": how}), node("ok", "echo"))
    summary = await asyncio.wait_for(run_doc(engine, doc), 30)
    assert summary["status"] == "PARTIAL_SUCCESS"
    assert summary["nodes"]["bad"]["status"] == "FAILED"
    assert summary["nodes"]["bad"]["error"].startswith(error), summary["nodes"]["bad"]["error"]
    assert summary["nodes"]["ok"]["status"] == "SUCCESS"


@pytest.mark.parametrize("how", ["cycle", "deep"])
async def test_an_output_holding_itself_or_nested_too_deeply_names_the_bound(
    engine_factory: Callable[..., Engine], how: str
) -> None:
    """Any task's output that holds itself, or nests 5000 deep, fails its node with the
    one wording every task type (the ``python`` task too) shares."""
    engine = engine_factory(MisbehavingTask())
    doc = workflow(node("bad", "misbehave", params={"how": how}))
    summary = await asyncio.wait_for(run_doc(engine, doc), 30)
    assert summary["nodes"]["bad"]["error"] == (
        "output: nested deeper than 250 levels (or it holds itself)"
    )


@pytest.mark.parametrize("levels", [256, 900])
def test_encoding_an_output_too_deep_for_orjson_names_the_bound_at_its_top(levels: int) -> None:
    """An output nested deeper than orjson goes (but not deep enough to exhaust the stack,
    as on a Dask worker, which encodes without redacting first) is refused naming the
    bound at ``output``, not at a path hundreds of levels long."""
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    with pytest.raises(
        ValueError, match=r"^output: nested deeper than 250 levels \(or it holds itself\)$"
    ):
        encode_output(value)
