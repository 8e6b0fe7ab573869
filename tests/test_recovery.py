"""Crash recovery of the real daemon: SIGKILL at chosen and at random moments, then restart."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    PAST,
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    execute,
    node_rows,
    query,
    read_json,
    results,
    try_query,
    wait_result,
    wait_until,
)


def _running_b(db_path: Path) -> list[dict[str, Any]]:
    """Rows showing node a SUCCESS and node b RUNNING in the same run (committed)."""
    return try_query(
        db_path,
        "SELECT a.workflow_id AS run_id FROM noderun a JOIN noderun b"
        " ON a.workflow_id = b.workflow_id AND b.node_id = 'b'"
        " WHERE a.node_id = 'a' AND a.status = 'SUCCESS' AND b.status = 'RUNNING'",
    )


def test_sigkill_mid_run_resumes_without_rerunning_finished_nodes(daemons: Daemons) -> None:
    """After SIGKILL while ``a`` is done and ``b`` runs, a restart runs only ``b`` again and
    the original run ends SUCCESS with one result."""
    first = daemons.start()
    drop(daemons.inbox, "job.json", echo_then_sleep("job", 3))
    (row,) = wait_until(lambda: _running_b(daemons.db_path), 10, "a done and b running")
    run_id = row["run_id"]
    before = node_rows(daemons.db_path, run_id)
    first.kill()
    assert (daemons.inbox / "processing" / "job.json").exists()
    assert not results(daemons.outbox)

    second = daemons.start()
    result = wait_result(daemons.outbox, "job", timeout=20)
    assert (result["run_id"], result["status"]) == (run_id, "SUCCESS")
    after = node_rows(daemons.db_path, run_id)
    for key in ("status", "started_at", "finished_at", "attempts", "result_data"):
        assert after["a"][key] == before["a"][key], key
    assert result["nodes"]["a"]["started_at"] == before["a"]["started_at"]
    assert after["b"]["status"] == "SUCCESS"
    assert after["b"]["started_at"] != before["b"]["started_at"]
    # The logs count executions: a started once over both lives, b twice (at-least-once).
    started = Counter(e["node_id"] for d in (first, second) for e in d.events("node.started"))
    assert started == {"a": 1, "b": 2}
    assert [p.name for p in results(daemons.outbox)] == ["job.result.json"]
    wait_until(lambda: (daemons.inbox / "processed" / "job.json").exists(), 5, "processed/")
    assert query(daemons.db_path, "SELECT count(*) AS n FROM workflowrun") == [{"n": 1}]
    assert second.terminate() == 0


def test_file_claimed_but_never_started_is_run_once(daemons: Daemons) -> None:
    """A file found in processing/ with no run (killed right after the claim) runs once."""
    processing = daemons.inbox / "processing"
    processing.mkdir(parents=True)
    (processing / "claimed.json").write_text(json.dumps(echo_doc("claimed")))
    daemons.start()
    assert wait_result(daemons.outbox, "claimed")["status"] == "SUCCESS"
    wait_until(lambda: (daemons.inbox / "processed" / "claimed.json").exists(), 5, "processed/")
    assert len(results(daemons.outbox)) == 1


@pytest.mark.parametrize("result_written", [True, False], ids=["result-written", "no-result"])
def test_crash_between_finishing_and_moving_the_input(
    daemons: Daemons, result_written: bool
) -> None:
    """A run that finished but whose input is still in processing/ (killed before the move,
    with or without its result file) is published once, from the stored summary."""
    daemon = daemons.start()
    drop(daemons.inbox, "pub.json", echo_doc("pub"))
    original = wait_result(daemons.outbox, "pub")
    original_bytes = (daemons.outbox / "pub.result.json").read_bytes()
    wait_until(lambda: (daemons.inbox / "processed" / "pub.json").exists(), 5, "processed/")
    assert daemon.terminate() == 0
    # Rebuild the state a SIGKILL at that moment leaves behind.
    os.rename(daemons.inbox / "processed" / "pub.json", daemons.inbox / "processing" / "pub.json")
    execute(
        daemons.db_path,
        "UPDATE workflowrun SET settled_at = NULL, source_path = ?",
        str(daemons.inbox / "processing" / "pub.json"),
    )
    if not result_written:
        (daemons.outbox / "pub.result.json").unlink()

    daemons.start()
    wait_until(lambda: (daemons.inbox / "processed" / "pub.json").exists(), 10, "processed/")
    assert [p.name for p in results(daemons.outbox)] == ["pub.result.json"]
    republished = read_json(daemons.outbox / "pub.result.json")
    assert republished["run_id"] == original["run_id"]
    if result_written:
        assert (daemons.outbox / "pub.result.json").read_bytes() == original_bytes
    else:
        assert republished == original
    assert query(daemons.db_path, "SELECT count(*) AS n FROM workflowrun") == [{"n": 1}]
    assert wait_until(
        lambda: try_query(
            daemons.db_path, "SELECT 1 FROM workflowrun WHERE settled_at IS NOT NULL"
        ),
        5,
        "the run marked settled",
    )


def test_running_run_without_its_file_is_abandoned_not_left_running(daemons: Daemons) -> None:
    """A RUNNING run whose input vanished from processing/ is ended at start, not left RUNNING."""
    first = daemons.start()
    drop(daemons.inbox, "gone.json", echo_then_sleep("gone", 30))
    (row,) = wait_until(lambda: _running_b(daemons.db_path), 10, "b running")
    first.kill()
    (daemons.inbox / "processing" / "gone.json").unlink()
    daemons.start()
    wait_until(
        lambda: try_query(
            daemons.db_path,
            "SELECT 1 FROM workflowrun WHERE id = ? AND status != 'RUNNING'",
            row["run_id"],
        ),
        5,
        "the orphan run ended",
    )
    (run,) = query(daemons.db_path, "SELECT status FROM workflowrun")
    assert run["status"] == "PARTIAL_SUCCESS"  # a succeeded, b never finished


def test_same_name_claimed_twice_keeps_its_name_across_a_crash(daemons: Daemons) -> None:
    """Two files named same.json in processing/ at a SIGKILL both get results after restart:
    the first same.result.json, the second same.result.<run_id>.json, both sourced same.json."""
    first = daemons.start(WFE_MAX_CONCURRENT_WORKFLOWS="1")
    drop(daemons.inbox, "same.json", echo_then_sleep("first", 1))
    wait_until(lambda: _running_b(daemons.db_path), 10, "the first same.json running")
    drop(daemons.inbox, "same.json", echo_doc("second"))
    wait_until(lambda: not (daemons.inbox / "same.json").exists(), 5, "the second claimed")
    first.kill()

    daemons.start(WFE_MAX_CONCURRENT_WORKFLOWS="1")
    wait_until(lambda: len(results(daemons.outbox)) == 2, 15, "two results")
    by_workflow = {read_json(p)["workflow"]: p for p in results(daemons.outbox)}
    assert by_workflow["first"].name == "same.result.json"
    second = read_json(by_workflow["second"])
    assert by_workflow["second"].name == f"same.result.{second['run_id']}.json"
    assert {read_json(p)["source"] for p in results(daemons.outbox)} == {"same.json"}
    processed = daemons.inbox / "processed"
    wait_until(lambda: len(list(processed.iterdir())) == 2, 5, "both inputs in processed/")
    assert list((daemons.inbox / "processing").iterdir()) == []


def test_sigterm_with_a_backlog_loses_nothing(daemons: Daemons) -> None:
    """Files claimed but not started when SIGTERM's grace runs out are run once after restart."""
    first = daemons.start(WFE_MAX_CONCURRENT_WORKFLOWS="1", WFE_SHUTDOWN_GRACE="0.5")
    names = [f"queued{i}" for i in range(6)]
    for name in names:
        drop(daemons.inbox, f"{name}.json", echo_then_sleep(name, 0.4))
    wait_until(lambda: _running_b(daemons.db_path), 10, "the first file running")
    assert first.terminate() == 0
    daemons.start()
    for name in names:
        assert wait_result(daemons.outbox, name, timeout=15)["status"] == "SUCCESS"
    processed = daemons.inbox / "processed"
    wait_until(lambda: len(list(processed.iterdir())) == 6, 5, "all inputs in processed/")
    assert len(results(daemons.outbox)) == 6
    assert query(daemons.db_path, "SELECT count(*) AS n FROM workflowrun") == [{"n": 6}]


class _Dropper(threading.Thread):
    """Drops a stream of mixed workflow files into the inbox until stopped."""

    def __init__(self, inbox: Path, rng: random.Random, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.inbox, self.rng, self.interval_s = inbox, rng, interval_s
        self.kinds: dict[str, str] = {}
        """Stem -> "valid", "invalid" or "keyed:<key>"."""
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while not self.halt.is_set():
                self._drop(i)
                i += 1
                self.halt.wait(self.interval_s)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _drop(self, i: int) -> None:
        stem, kind = f"k{i:05d}", i % 10
        seconds = round(self.rng.uniform(0.01, 0.15), 3)
        if kind == 0:  # malformed JSON; half written long ago, half just now (settle wait)
            self.kinds[stem] = "invalid"
            drop(
                self.inbox,
                f"{stem}.json",
                b'{"name": "x", "nodes": [',
                mtime=PAST if i % 20 else None,
            )
        elif kind == 1:  # a cycle
            self.kinds[stem] = "invalid"
            drop(
                self.inbox,
                f"{stem}.json",
                {
                    "name": stem,
                    "nodes": [
                        {"id": "a", "type": "echo", "depends_on": ["b"]},
                        {"id": "b", "type": "echo", "depends_on": ["a"]},
                    ],
                },
            )
        elif kind in (2, 3):  # two files, one idempotency_key
            key = f"key{i // 10}"
            self.kinds[stem] = f"keyed:{key}"
            drop(self.inbox, f"{stem}.json", echo_then_sleep(stem, seconds, idempotency_key=key))
        else:
            self.kinds[stem] = "valid"
            doc = echo_then_sleep(stem, seconds)
            doc["nodes"].append(
                {"id": "c", "type": "echo", "depends_on": ["a"], "params": {"from_a": "{{ a.n }}"}}
            )
            drop(self.inbox, f"{stem}.json", doc)


def _kill_at_random(daemons: Daemons, rng: random.Random) -> None:
    """Start a daemon and SIGKILL it at a random moment, sometimes before it is even ready."""
    daemon = daemons.spawn()
    if rng.random() < 0.3:
        time.sleep(rng.uniform(0, 0.5))  # during start-up, lock, migration or recovery
    else:
        daemon.wait_ready()
        time.sleep(rng.uniform(0, 0.5))
    daemon.kill()


@pytest.mark.timeout(120)
def test_kill_loop_loses_nothing_and_doubles_nothing(daemons: Daemons) -> None:
    """30 SIGKILLs at random moments under a stream of mixed files, then a clean restart: every
    file has exactly one result, nothing is left RUNNING or in processing/, the DB is intact."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    daemons.inbox.mkdir()
    dropper = _Dropper(daemons.inbox, random.Random(seed + 1), interval_s=0.04)
    dropper.start()
    try:
        for _ in range(30):
            _kill_at_random(daemons, rng)
    finally:
        dropper.halt.set()
        dropper.join(5)
    assert dropper.error is None, dropper.error
    kinds = dict(dropper.kinds)
    assert len(kinds) >= 100, f"seed {seed}: only {len(kinds)} files dropped"

    final = daemons.start()
    processed, rejected = daemons.inbox / "processed", daemons.inbox / "rejected"
    wait_until(
        lambda: len(list(processed.iterdir())) + len(list(rejected.iterdir())) == len(kinds),
        60,
        f"every input settled (seed {seed})",
    )
    assert final.terminate() == 0

    found = results(daemons.outbox)
    by_stem = Counter(path.name.split(".result", 1)[0] for path in found)
    assert set(by_stem) == set(kinds), f"seed {seed}"
    assert [stem for stem, n in by_stem.items() if n != 1] == [], f"seed {seed}"
    summaries = {path.name.split(".result", 1)[0]: read_json(path) for path in found}
    _check_statuses(summaries, kinds, seed)
    assert len({s["run_id"] for s in summaries.values()}) == len(kinds)
    assert list(daemons.outbox.glob(".*.tmp")) == []  # swept at start, never left by a clean run

    assert [p.name for p in daemons.inbox.iterdir() if not p.is_dir()] == []
    assert list((daemons.inbox / "processing").iterdir()) == []
    assert query(
        daemons.db_path, "SELECT count(*) AS n FROM workflowrun WHERE status = 'RUNNING'"
    ) == [{"n": 0}]
    assert query(daemons.db_path, "SELECT count(*) AS n FROM workflowrun") == [{"n": len(kinds)}]
    assert query(daemons.db_path, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]


def _check_statuses(summaries: dict[str, Any], kinds: dict[str, str], seed: int) -> None:
    """Invalid files REJECTED, valid ones SUCCESS, each key run once with its twins DUPLICATE."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for stem, kind in kinds.items():
        summary = summaries[stem]
        assert summary["source"] == f"{stem}.json"
        if kind == "invalid":
            assert summary["status"] == "REJECTED" and summary["errors"], (seed, summary)
        elif kind == "valid":
            assert summary["status"] == "SUCCESS", (seed, summary)
            assert summary["nodes"]["c"]["output"] == {"from_a": stem}
        else:
            by_key.setdefault(kind, []).append(summary)
    for key, group in by_key.items():
        ran = [s for s in group if s["status"] == "SUCCESS"]
        assert len(ran) == 1, (seed, key, group)
        others = [s for s in group if s is not ran[0]]
        assert all(
            s["status"] == "DUPLICATE" and s["duplicate_of"] == ran[0]["run_id"] for s in others
        ), (seed, key, group)


def _attempts_of(daemon: Any, node_id: str) -> list[int]:
    """The attempt numbers of ``node_id`` this daemon started, in order."""
    return [e["attempt"] for e in daemon.events("node.started") if e.get("node_id") == node_id]


def _kill_once(daemons: Daemons, daemon: Any, event: str, attempt: int) -> None:
    """SIGKILL ``daemon`` once it logged ``event`` for node f's attempt ``attempt`` and the
    database holds that attempt."""
    wait_until(
        lambda: any(e.get("attempt") == attempt for e in daemon.events(event)),
        20,
        f"{event} of attempt {attempt}",
    )
    wait_until(
        lambda: try_query(
            daemons.db_path,
            "SELECT 1 FROM noderun WHERE node_id = 'f' AND status = 'RUNNING' AND attempts = ?",
            attempt,
        ),
        10,
        f"attempt {attempt} in the database",
    )
    daemon.kill()


def test_sigkill_during_a_retry_delay_keeps_the_attempt_count(daemons: Daemons) -> None:
    """Killed while waiting to retry after attempt 2 of 3, the node goes on from attempt 2: it
    never gets its retries back, and the result counts every attempt."""
    doc = {
        "name": "flaky",
        "nodes": [
            {
                "id": "f",
                "type": "validate_csv",
                "params": {"path": "missing.csv"},
                "retries": 2,
                "retry_delay": 1,
            }
        ],
    }
    first = daemons.start()
    drop(daemons.inbox, "flaky.json", doc, mtime=PAST)
    _kill_once(daemons, first, "node.retry", 2)  # inside the 2 s wait before attempt 3
    assert _attempts_of(first, "f") == [1, 2]

    second = daemons.start()
    summary = wait_result(daemons.outbox, "flaky", 20)
    assert summary["nodes"]["f"]["status"] == "FAILED"
    assert summary["nodes"]["f"]["attempts"] == 3
    assert _attempts_of(second, "f") == [2, 3]
    assert second.terminate() == 0


def test_sigkill_during_the_last_attempt_gives_no_fresh_retries(daemons: Daemons) -> None:
    """Killed during its last allowed attempt, a node runs that attempt again and no other."""
    doc = {
        "name": "slow",
        "nodes": [
            {
                "id": "f",
                "type": "sleep",
                "params": {"seconds": 30},
                "timeout": 1,
                "retries": 1,
                "retry_delay": 0,
            }
        ],
    }
    first = daemons.start()
    drop(daemons.inbox, "slow.json", doc, mtime=PAST)
    _kill_once(daemons, first, "node.started", 2)
    assert _attempts_of(first, "f") == [1, 2]

    second = daemons.start()
    summary = wait_result(daemons.outbox, "slow", 20)
    assert summary["nodes"]["f"]["status"] == "FAILED"
    assert summary["nodes"]["f"]["error"] == "timed out after 1s"
    assert (summary["nodes"]["f"]["attempts"], _attempts_of(second, "f")) == (2, [2])
    assert second.terminate() == 0
