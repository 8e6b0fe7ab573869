"""Tests of ``wfe-daemon run`` as a real subprocess: intake, outbox, idempotency, shutdown."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path

import pytest

from daemon_helpers import (
    PAST,
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    node_rows,
    query,
    read_json,
    results,
    try_query,
    wait_result,
    wait_running,
    wait_settled,
    wait_until,
)
from wfe_daemon.service.wiring import startup_objects_frozen


def test_renamed_file_gets_its_result_and_moves_to_processed(daemons: Daemons) -> None:
    """A file renamed into the inbox gets outbox/<stem>.result.json and lands in processed/."""
    daemons.start()
    drop(daemons.inbox, "sales.json", echo_doc("sales"))
    result = wait_result(daemons.outbox, "sales")
    assert result["status"] == "SUCCESS"
    assert result["source"] == "sales.json"
    assert result["nodes"]["a"]["output"] == {"n": "sales"}
    assert result["errors"] == []
    wait_settled(daemons.inbox, "sales.json")
    assert not (daemons.inbox / "sales.json").exists()
    assert not any((daemons.inbox / "processing").iterdir())
    assert [p.name for p in results(daemons.outbox)] == ["sales.result.json"]


CYCLE = {
    "name": "cyclic",
    "nodes": [
        {"id": "a", "type": "echo", "depends_on": ["b"]},
        {"id": "b", "type": "echo", "depends_on": ["a"]},
    ],
}


def test_wait_settled_waits_for_a_move_made_after_the_result(tmp_path: Path) -> None:
    """The daemon moves an input a moment after publishing its result: wait_settled waits for
    the move (and names the folder when it never comes)."""
    inbox = tmp_path / "inbox"
    for sub in ("processing", "rejected"):
        (inbox / sub).mkdir(parents=True)
    claimed = inbox / "processing" / "late.json"
    claimed.write_bytes(b"{")
    mover = threading.Timer(0.3, os.rename, (claimed, inbox / "rejected" / "late.json"))
    mover.start()
    try:
        moved = wait_settled(inbox, "late.json", rejected=True)
    finally:
        mover.join()
    assert [p.name for p in moved.parent.iterdir()] == ["late.json"]
    with pytest.raises(AssertionError, match=r"late\.json in processed/"):
        wait_settled(inbox, "late.json", timeout=0.1)


@pytest.mark.parametrize(
    ("content", "expected_error"),
    [
        pytest.param(b'{"name": "half", "nodes": [{"id": ', "invalid JSON", id="malformed-json"),
        pytest.param(b'{"name": "caf\xe9", "nodes": []}', "UTF-8", id="invalid-utf8"),
        pytest.param(json.dumps(CYCLE).encode(), "cycle: ", id="cycle"),
    ],
)
def test_invalid_file_is_rejected_and_the_next_file_still_runs(
    daemons: Daemons, content: bytes, expected_error: str
) -> None:
    """An invalid file gets a REJECTED result listing its errors, moves to rejected/, and the
    daemon goes on serving the next file."""
    daemons.start()
    drop(daemons.inbox, "bad.json", content, mtime=PAST)
    drop(daemons.inbox, "good.json", echo_doc("good"))
    rejected = wait_result(daemons.outbox, "bad")
    assert rejected["status"] == "REJECTED"
    assert rejected["errors"], rejected
    assert any(expected_error in error for error in rejected["errors"]), rejected["errors"]
    assert isinstance(rejected["run_id"], int)
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    assert wait_settled(daemons.inbox, "bad.json", rejected=True).read_bytes() == content
    wait_settled(daemons.inbox, "good.json")


def test_cycle_error_names_the_cycle(daemons: Daemons) -> None:
    """The REJECTED result of a cyclic file names the cycle as a closed path."""
    daemons.start()
    drop(daemons.inbox, "loop.json", CYCLE)
    errors = wait_result(daemons.outbox, "loop")["errors"]
    assert {"cycle: a -> b -> a", "cycle: b -> a -> b"} & set(errors), errors


@pytest.mark.timeout(90)
def test_a_burst_of_500_files_gets_exactly_one_result_each(daemons: Daemons) -> None:
    """500 files renamed in at once each get one result: none lost, none doubled."""
    daemons.start()
    staging = daemons.root / "staging"
    staging.mkdir()
    names = [f"burst{i:03d}.json" for i in range(500)]
    for name in names:
        (staging / name).write_text(json.dumps(echo_doc(name)))
    for name in names:
        os.rename(staging / name, daemons.inbox / name)
    processed = daemons.inbox / "processed"
    wait_until(lambda: len(list(processed.iterdir())) == 500, 60, "500 files in processed/")
    found = results(daemons.outbox)
    assert len(found) == 500
    summaries = [read_json(path) for path in found]
    assert sorted(s["source"] for s in summaries) == names
    assert {path.name for path in found} == {
        n.removesuffix(".json") + ".result.json" for n in names
    }
    assert len({s["run_id"] for s in summaries}) == 500
    assert {s["status"] for s in summaries} == {"SUCCESS"}
    assert not [p for p in daemons.inbox.iterdir() if p.is_file()]
    assert not any((daemons.inbox / "processing").iterdir())


def test_file_written_slowly_in_place_runs_normally(daemons: Daemons) -> None:
    """A file written in the inbox in pieces over more than a second is taken only once
    complete: it runs (SUCCESS), it is never rejected as half-written."""
    daemons.start()
    content = json.dumps(echo_doc("slow")).encode()
    pieces = [content[i : i + 8] for i in range(0, len(content), 8)]
    step = 1.2 / len(pieces)
    with open(daemons.inbox / "slow.json", "wb") as file:
        for piece in pieces:
            file.write(piece)
            file.flush()
            time.sleep(step)
    result = wait_result(daemons.outbox, "slow")
    assert result["status"] == "SUCCESS", result
    assert result["nodes"]["a"]["output"] == {"n": "slow"}
    assert wait_settled(daemons.inbox, "slow.json").read_bytes() == content
    assert not any((daemons.inbox / "rejected").iterdir())


def test_writer_pausing_past_the_quiet_time_is_waited_for(daemons: Daemons) -> None:
    """A file still open for writing is not rejected however long its writer pauses (3 s
    here, past the 2 s quiet time); once closed, a broken file is rejected as before."""
    daemons.start()
    content = json.dumps(echo_doc("paused")).encode()
    with open(daemons.inbox / "paused.json", "wb") as file:
        file.write(content[: len(content) // 2])
        file.flush()
        time.sleep(3.0)
        assert not any((daemons.inbox / "rejected").iterdir())
        file.write(content[len(content) // 2 :])
    with open(daemons.inbox / "broken.json", "wb") as file:
        file.write(content[: len(content) // 2])

    result = wait_result(daemons.outbox, "paused")
    assert result["status"] == "SUCCESS", result
    assert result["nodes"]["a"]["output"] == {"n": "paused"}
    broken = wait_result(daemons.outbox, "broken")
    assert broken["status"] == "REJECTED"
    assert "invalid JSON" in broken["errors"][0]
    # The result is published before the input moves: wait for the move, then list.
    wait_settled(daemons.inbox, "broken.json", rejected=True)
    assert [p.name for p in (daemons.inbox / "rejected").iterdir()] == ["broken.json"]


def test_files_present_before_start_are_processed_and_others_left_alone(
    daemons: Daemons,
) -> None:
    """Files in the inbox before start run; *.tmp, dotfiles and symlinks stay untouched."""
    inbox = daemons.inbox
    inbox.mkdir()
    (inbox / "early.json").write_text(json.dumps(echo_doc("early")))
    os.utime(inbox / "early.json", (PAST, PAST))
    target = daemons.root / "elsewhere.json"
    target.write_text(json.dumps(echo_doc("elsewhere")))
    (inbox / "partial.json.tmp").write_text(json.dumps(echo_doc("tmp")))
    (inbox / ".hidden.json").write_text(json.dumps(echo_doc("hidden")))
    (inbox / "link.json").symlink_to(target)
    left_alone = ["partial.json.tmp", ".hidden.json", "link.json"]

    daemons.start()
    assert wait_result(daemons.outbox, "early")["status"] == "SUCCESS"
    drop(inbox, "late.json.tmp", echo_doc("late-tmp"))
    drop(inbox, ".late.json", echo_doc("late-hidden"))
    (inbox / "late-link.json").symlink_to(target)
    left_alone += ["late.json.tmp", ".late.json", "late-link.json"]
    # A file dropped after all of them is served: by then the others were seen and passed over.
    drop(inbox, "sentinel.json", echo_doc("sentinel"))
    assert wait_result(daemons.outbox, "sentinel")["status"] == "SUCCESS"
    time.sleep(0.3)
    for name in left_alone:
        assert os.path.lexists(inbox / name), name
    assert (inbox / "link.json").is_symlink()
    assert target.exists()
    assert [p.name for p in results(daemons.outbox)] == [
        "early.result.json",
        "sentinel.result.json",
    ]


def test_same_stem_does_not_overwrite_the_first_result(daemons: Daemons) -> None:
    """A second file with the same stem gets <stem>.result.<run_id>.json; the first stays."""
    daemons.start()
    drop(daemons.inbox, "same.json", echo_doc("first"))
    first = wait_result(daemons.outbox, "same")
    first_bytes = (daemons.outbox / "same.result.json").read_bytes()
    wait_settled(daemons.inbox, "same.json")
    drop(daemons.inbox, "same.json", echo_doc("second"))
    second_path = wait_until(
        lambda: [p for p in results(daemons.outbox) if p.name != "same.result.json"],
        10,
        "the second result",
    )[0]
    second = read_json(second_path)
    assert second_path.name == f"same.result.{second['run_id']}.json"
    assert second["run_id"] != first["run_id"]
    assert second["workflow"] == "second" and second["status"] == "SUCCESS"
    assert (daemons.outbox / "same.result.json").read_bytes() == first_bytes
    processed = daemons.inbox / "processed"
    wait_until(lambda: len(list(processed.iterdir())) == 2, 5, "both inputs in processed/")


def test_one_idempotency_key_runs_once(daemons: Daemons) -> None:
    """Two files with one idempotency_key run once; the other result is DUPLICATE naming it."""
    daemons.start()
    for name in ("twin1", "twin2"):
        drop(daemons.inbox, f"{name}.json", echo_then_sleep(name, 0.3, idempotency_key="K"))
    one, two = wait_result(daemons.outbox, "twin1"), wait_result(daemons.outbox, "twin2")
    ran, dup = (one, two) if one["status"] == "SUCCESS" else (two, one)
    assert ran["status"] == "SUCCESS"
    assert dup["status"] == "DUPLICATE"
    assert dup["duplicate_of"] == ran["run_id"]
    assert dup["nodes"] == {}
    # A later file with the key is still a duplicate: the key's run did not fail.
    drop(daemons.inbox, "twin3.json", echo_then_sleep("twin3", 0.3, idempotency_key="K"))
    third = wait_result(daemons.outbox, "twin3")
    assert (third["status"], third["duplicate_of"]) == ("DUPLICATE", ran["run_id"])
    ran_nodes = query(daemons.db_path, "SELECT workflow_id FROM noderun WHERE status = 'SUCCESS'")
    assert {row["workflow_id"] for row in ran_nodes} == {ran["run_id"]}


@pytest.mark.timeout(60)
def test_hostile_entries_do_not_stall_the_next_file(daemons: Daemons) -> None:
    """A FIFO and a folder named *.json are ignored; a 2 GiB sparse file, 100,000 nested
    brackets and UTF-16 are rejected; a valid file dropped after them still runs."""
    inbox = daemons.inbox
    daemons.start()
    os.mkfifo(inbox / "x.json")
    (inbox / "y.json").mkdir()
    staging = daemons.root / "staging"
    staging.mkdir()
    with open(staging / "big.json", "wb") as file:
        file.truncate(2 * 1024**3)
    os.rename(staging / "big.json", inbox / "big.json")
    drop(inbox, "deep.json", b"[" * 100_000 + b"]" * 100_000)
    drop(inbox, "utf16.json", json.dumps(echo_doc("utf16")).encode("utf-16"))
    drop(inbox, "next.json", echo_doc("next"))

    assert wait_result(daemons.outbox, "next")["status"] == "SUCCESS"
    big = wait_result(daemons.outbox, "big")
    assert big["status"] == "REJECTED"
    assert any("max_file_size" in error for error in big["errors"]), big["errors"]
    deep = wait_result(daemons.outbox, "deep")
    assert deep["status"] == "REJECTED" and deep["errors"]
    utf16 = wait_result(daemons.outbox, "utf16")
    assert utf16["status"] == "REJECTED" and utf16["errors"]
    assert (inbox / "x.json").exists() and (inbox / "y.json").is_dir()
    assert not (daemons.outbox / "x.result.json").exists()
    assert not (daemons.outbox / "y.result.json").exists()
    assert wait_settled(inbox, "big.json", rejected=True).stat().st_size == 2 * 1024**3


def test_sigterm_exits_0_within_the_grace_and_the_next_start_finishes(
    daemons: Daemons,
) -> None:
    """SIGTERM with a node running exits 0 once shutdown_grace is over, without waiting for
    the node; the next start resumes the interrupted run to its single result."""
    first = daemons.start(WFE_SHUTDOWN_GRACE="2")
    drop(daemons.inbox, "long.json", echo_then_sleep("long", 6))
    wait_running(daemons.db_path, "b")
    assert first.terminate() == 0
    first.wait_notice("STOPPING=1", timeout=1)
    # The 6 s node was interrupted when the 2 s grace ran out: no result, the run unfinished.
    assert not (daemons.outbox / "long.result.json").exists()
    (run,) = query(daemons.db_path, "SELECT id, status FROM workflowrun")
    assert run["status"] == "RUNNING"

    second = daemons.start()
    result = wait_result(daemons.outbox, "long", timeout=20)
    assert (result["run_id"], result["status"]) == (run["id"], "SUCCESS")
    assert [p.name for p in results(daemons.outbox)] == ["long.result.json"]
    wait_settled(daemons.inbox, "long.json")
    assert second.terminate() == 0


def test_sigterm_lets_a_node_ending_within_the_grace_finish_and_publish(
    daemons: Daemons,
) -> None:
    """A run whose last node ends inside shutdown_grace completes before the exit: its
    result is in the outbox, its file in processed/, its run SUCCESS; the logs say so."""
    daemon = daemons.start(WFE_SHUTDOWN_GRACE="10")
    drop(daemons.inbox, "short.json", echo_then_sleep("short", 1.0))
    wait_running(daemons.db_path, "b")
    assert daemon.terminate() == 0

    result = read_json(daemons.outbox / "short.result.json")  # written before the exit
    assert result["status"] == "SUCCESS"
    assert (daemons.inbox / "processed" / "short.json").exists()
    (run,) = query(daemons.db_path, "SELECT status FROM workflowrun")
    assert run["status"] == "SUCCESS"
    (started,) = daemon.events("daemon.started")
    assert {"timestamp", "level", "inbox", "outbox"} <= started.keys()
    (stopping,) = daemon.events("daemon.stopping")
    assert stopping["grace"] == 10
    (finished,) = daemon.events("workflow.finished")
    assert (finished["run_id"], finished["status"]) == (result["run_id"], "SUCCESS")
    ended = {e["node_id"]: e for e in daemon.events("node.finished")}
    assert ended["b"]["task_type"] == "sleep"
    assert ended["b"]["status"] == "SUCCESS"
    assert ended["b"]["attempt"] == 1
    assert ended["b"]["duration"] >= 1.0


def test_rejections_and_retries_are_logged_with_their_context(daemons: Daemons) -> None:
    """workflow.rejected names the problems; node.retry and node.finished carry the error."""
    daemon = daemons.start(WFE_ENABLE_SHELL="1")
    drop(daemons.inbox, "bad.json", {"name": "bad", "nodes": [{"id": "a", "type": "nope"}]})
    drop(
        daemons.inbox,
        "retried.json",
        {
            "name": "retried",
            "nodes": [
                {
                    "id": "s",
                    "type": "shell",
                    "params": {"argv": ["false"]},
                    "retries": 1,
                    "retry_delay": 0,
                }
            ],
        },
    )
    rejected = wait_result(daemons.outbox, "bad")
    failed = wait_result(daemons.outbox, "retried")

    (event,) = daemon.events("workflow.rejected")
    assert event["run_id"] == rejected["run_id"]
    assert event["level"] == "warning"
    assert any("nope" in problem for problem in event["errors"])
    (retry,) = daemon.events("node.retry")
    assert (retry["run_id"], retry["node_id"], retry["attempt"]) == (failed["run_id"], "s", 1)
    assert retry["workflow"] == "retried"
    assert retry["error"] == failed["nodes"]["s"]["error"]
    (ended,) = [e for e in daemon.events("node.finished") if e["node_id"] == "s"]
    assert (ended["status"], ended["attempt"]) == ("FAILED", 2)
    assert ended["error"] == failed["nodes"]["s"]["error"]


def test_no_more_than_max_concurrent_workflows_run_at_once(daemons: Daemons) -> None:
    """With max_concurrent_workflows = 2, six files dropped together run two at a time,
    in arrival order, as their rows in the database show."""
    daemon = daemons.start(WFE_MAX_CONCURRENT_WORKFLOWS="2")
    names = [f"w{i}" for i in range(6)]
    for name in names:
        drop(daemons.inbox, f"{name}.json", echo_then_sleep(name, 0.4))
    for name in names:
        assert wait_result(daemons.outbox, name)["status"] == "SUCCESS"

    runs = query(
        daemons.db_path, "SELECT name, started_at, finished_at FROM workflowrun ORDER BY id"
    )
    assert [run["name"] for run in runs] == names
    edges = sorted(
        [(run["started_at"], 1) for run in runs] + [(run["finished_at"], -1) for run in runs],
        key=lambda e: (e[0], e[1]),
    )
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most == 2
    assert daemon.terminate() == 0


def test_a_file_waiting_for_a_workflow_slot_at_sigterm_runs_at_the_next_start(
    daemons: Daemons,
) -> None:
    """With one workflow slot, a file taken while another runs is not started after SIGTERM:
    it stays in processing/, unrecorded, and the next start runs it once."""
    daemon = daemons.start(WFE_MAX_CONCURRENT_WORKFLOWS="1", WFE_SHUTDOWN_GRACE="10")
    drop(daemons.inbox, "first.json", echo_then_sleep("first", 1.0))
    wait_running(daemons.db_path, "b")
    drop(daemons.inbox, "second.json", echo_then_sleep("second", 0.1))
    waiting = daemons.inbox / "processing" / "second.json"
    wait_until(waiting.exists, 5, "second.json taken while first.json runs")
    assert daemon.terminate() == 0

    assert read_json(daemons.outbox / "first.result.json")["status"] == "SUCCESS"
    assert waiting.exists()
    assert [run["name"] for run in query(daemons.db_path, "SELECT name FROM workflowrun")] == [
        "first"
    ]

    again = daemons.start()
    assert wait_result(daemons.outbox, "second")["status"] == "SUCCESS"
    wait_settled(daemons.inbox, "second.json")
    names = [run["name"] for run in query(daemons.db_path, "SELECT name FROM workflowrun")]
    assert names == ["first", "second"]
    assert again.terminate() == 0


async def test_a_file_held_when_shutdown_begins_is_not_run_nor_counted_done(
    tmp_path: Path,
) -> None:
    """A file a worker holds when shutdown has begun is not run: it stays in processing/,
    unrecorded, and the STATUS line's count of files done leaves it out."""
    from wfe_daemon.config import Settings
    from wfe_daemon.service.daemon import Daemon
    from wfe_daemon.service.intake import Claimed
    from wfe_daemon.service.systemd import Notifier
    from wfe_daemon.store.database import Store

    inbox = tmp_path / "inbox"
    settings = Settings(db_path=tmp_path / "wfe.db", inbox=inbox, outbox=tmp_path / "outbox")
    path = inbox / "processing" / "late.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(json.dumps(echo_doc("late")).encode())
    async with Store.open(settings.db_path) as store:
        daemon = Daemon(settings, None, store, None, Notifier(None))  # type: ignore[arg-type]
        daemon.stop_taking()
        await daemon.handle(Claimed(path=path, source="late.json", data=path.read_bytes()))
        assert (daemon.done, daemon.active) == (0, 0)
        assert await store.list_runs() == []
    assert path.exists()


def test_a_second_signal_stops_at_once(daemons: Daemons) -> None:
    """A second SIGTERM during the grace period ends the daemon without waiting out the grace."""
    daemon = daemons.start(WFE_SHUTDOWN_GRACE="30")
    drop(daemons.inbox, "long.json", echo_then_sleep("long", 60))
    wait_running(daemons.db_path, "b")
    daemon.proc.terminate()
    daemon.wait_notice("STOPPING=1", timeout=5)
    daemon.proc.terminate()
    assert daemon.wait_exit(timeout=10) == 0


def test_notify_socket_gets_ready_then_stopping(daemons: Daemons) -> None:
    """A unix datagram socket given as NOTIFY_SOCKET receives READY=1, then STOPPING=1."""
    with tempfile.TemporaryDirectory(prefix="wfe") as folder:  # short: sun_path is 108 bytes
        path = os.path.join(folder, "notify")
        daemon = daemons.spawn(notify_path=path)
        daemon.wait_ready()
        assert daemon.sock.family == socket.AF_UNIX and daemon.sock.type == socket.SOCK_DGRAM
        assert daemon.notices[0].split("\n")[0] == "READY=1"
        assert daemon.terminate() == 0
        daemon.wait_notice("STOPPING=1", timeout=1)
        lines = [notice.split("\n")[0] for notice in daemon.notices]
        assert lines.index("READY=1") < lines.index("STOPPING=1")


def test_sigint_stops_like_sigterm(daemons: Daemons) -> None:
    """SIGINT, as SIGTERM, sends STOPPING=1 and exits 0."""
    daemon = daemons.start()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait_exit() == 0
    daemon.wait_notice("STOPPING=1", timeout=1)


def test_watchdog_is_petted_when_asked_for(daemons: Daemons) -> None:
    """With WATCHDOG_USEC set, WATCHDOG=1 arrives repeatedly after READY=1, with STATUS lines."""
    daemon = daemons.start(WATCHDOG_USEC="400000")  # pet every 0.2 s
    first = daemon.wait_notice("WATCHDOG=1", timeout=5)
    daemon.notices.remove(first)
    daemon.wait_notice("WATCHDOG=1", timeout=5)
    assert any(
        line.startswith("STATUS=running ")
        for notice in daemon.notices
        for line in notice.split("\n")
    )


def test_stale_outbox_temporaries_are_swept_at_start(daemons: Daemons) -> None:
    """Temporary files a killed publish left in the outbox are removed at start; results stay."""
    daemons.outbox.mkdir()
    (daemons.outbox / ".job.k3j4h5.tmp").write_text('{"run_id": 1')
    (daemons.outbox / "old.result.json").write_text("{}")
    daemons.start()
    assert not (daemons.outbox / ".job.k3j4h5.tmp").exists()
    assert (daemons.outbox / "old.result.json").read_text() == "{}"


def test_a_second_daemon_on_the_same_database_refuses_to_start(daemons: Daemons) -> None:
    """While one daemon runs, another on the same database exits 2 with one line on stderr."""
    first = daemons.start()
    second = daemons.spawn()
    assert second.wait_exit() == 2
    lines = second.stderr().splitlines()
    assert len(lines) == 1, lines
    assert "already running" in lines[0]
    assert first.proc.poll() is None
    drop(daemons.inbox, "still.json", echo_doc("still"))
    assert wait_result(daemons.outbox, "still")["status"] == "SUCCESS"
    assert first.terminate() == 0


def test_rejected_file_is_recorded_in_the_database(daemons: Daemons) -> None:
    """A REJECTED file has a run row, so its result's run_id points at something real."""
    daemons.start()
    drop(daemons.inbox, "bad.json", CYCLE)
    result = wait_result(daemons.outbox, "bad")
    rows = query(daemons.db_path, "SELECT status FROM workflowrun WHERE id = ?", result["run_id"])
    assert rows == [{"status": "REJECTED"}]
    assert node_rows(daemons.db_path, result["run_id"]) == {}


@pytest.mark.parametrize(
    ("key", "env_name", "under_file"),
    [
        ("inbox", "WFE_INBOX", "inbox"),
        ("outbox", "WFE_OUTBOX", "outbox"),
        ("db_path", "WFE_DB_PATH", "db/wfe.db"),
    ],
)
def test_an_unusable_folder_stops_the_start_with_one_line_and_exit_2(
    daemons: Daemons, key: str, env_name: str, under_file: str
) -> None:
    """A folder that cannot be created (a regular file is in its path) exits 2 at start with
    one line naming its key and the reason, not a traceback."""
    blocker = daemons.root / "afile"
    blocker.write_text("not a folder")
    daemon = daemons.spawn(**{env_name: str(blocker / under_file)})

    assert daemon.wait_exit() == 2, daemon.output()
    (line,) = daemon.stderr().splitlines()
    assert line.startswith(f"wfe-daemon: config: {key}: cannot create "), line
    assert "Not a directory" in line
    assert "READY=1" not in daemon.notices


def test_an_unknown_task_type_in_task_limits_stops_the_start(daemons: Daemons) -> None:
    """``[task_limits]`` naming no installed task type exits 2 with one line naming it and
    the known types."""
    config = daemons.root / "wfe.toml"
    config.write_text("[task_limits]\nhtp_get = 8\necho = 2\n")
    daemon = daemons.spawn(WFE_CONFIG=str(config))

    assert daemon.wait_exit() == 2, daemon.output()
    (line,) = daemon.stderr().splitlines()
    assert "config: task_limits: unknown task type 'htp_get' (known: " in line
    assert "http_get" in line
    assert not daemons.db_path.exists()


def sleep_doc(name: str, seconds: float) -> dict[str, object]:
    """A one-node workflow that sleeps ``seconds``."""
    return {"name": name, "nodes": [{"id": "s", "type": "sleep", "params": {"seconds": seconds}}]}


@pytest.mark.timeout(90)
def test_a_backlog_of_leftovers_delays_neither_ready_nor_sigterm(daemons: Daemons) -> None:
    """With five leftover files in processing/ (3 s each) and one workflow at a time, READY=1
    comes before the backlog is worked off and SIGTERM interrupts the running one after the
    grace; the next start gives each file one result."""
    processing = daemons.inbox / "processing"
    processing.mkdir(parents=True)
    for n in range(5):
        (processing / f"left{n}.json").write_text(json.dumps(sleep_doc(f"left{n}", 3)))
        os.utime(processing / f"left{n}.json", (PAST + n, PAST + n))

    first = daemons.spawn(WFE_MAX_CONCURRENT_WORKFLOWS="1", WFE_SHUTDOWN_GRACE="1")
    first.wait_ready()
    # Waiting for the backlog would take 15 s; READY=1 came before the second leftover ended.
    assert len(results(daemons.outbox)) <= 1
    (running,) = wait_until(
        lambda: try_query(
            daemons.db_path, "SELECT workflow_id FROM noderun WHERE status = 'RUNNING'"
        ),
        10,
        "the first leftover running",
    )
    assert first.terminate() == 0
    # The 1 s grace ran out before the 3 s node: it was interrupted, not waited for.
    (run,) = query(
        daemons.db_path, "SELECT status FROM workflowrun WHERE id = ?", running["workflow_id"]
    )
    assert run["status"] == "RUNNING"

    second = daemons.start()
    for n in range(5):
        assert wait_result(daemons.outbox, f"left{n}", timeout=30)["status"] == "SUCCESS"
    assert [p.name for p in results(daemons.outbox)] == [f"left{n}.result.json" for n in range(5)]
    wait_until(
        lambda: len(list((daemons.inbox / "processed").iterdir())) == 5, 5, "five in processed/"
    )
    assert second.terminate() == 0


def test_log_level_warning_shows_failed_nodes_and_unsuccessful_runs(daemons: Daemons) -> None:
    """At log_level WARNING a FAILED node and a FAILED or PARTIAL_SUCCESS run still show."""
    daemon = daemons.start(WFE_LOG_LEVEL="WARNING")
    missing = {"id": "bad", "type": "validate_csv", "params": {"path": "missing.csv"}}
    drop(
        daemons.inbox,
        "part.json",
        {"name": "part", "nodes": [missing, {"id": "ok", "type": "echo"}]},
        mtime=PAST,
    )
    drop(daemons.inbox, "fail.json", {"name": "fail", "nodes": [missing]}, mtime=PAST)
    drop(daemons.inbox, "fine.json", echo_doc("fine"), mtime=PAST)
    for stem in ("part", "fail", "fine"):
        wait_result(daemons.outbox, stem)
    assert daemon.terminate() == 0

    assert {e["level"] for e in daemon.events()} == {"warning"}
    failed = daemon.events("node.finished")
    assert sorted((e["workflow"], e["node_id"], e["status"]) for e in failed) == [
        ("fail", "bad", "FAILED"),
        ("part", "bad", "FAILED"),
    ]
    assert all("missing.csv" in e["error"] and e["run_id"] for e in failed)
    finished = daemon.events("workflow.finished")
    assert sorted((e["workflow"], e["status"]) for e in finished) == [
        ("fail", "FAILED"),
        ("part", "PARTIAL_SUCCESS"),
    ]


def test_nodes_cancelled_when_the_shutdown_grace_runs_out_are_logged(daemons: Daemons) -> None:
    """SIGTERM with a 0.5 s grace during long sleeps logs node.interrupted for each running node."""
    daemon = daemons.start(WFE_SHUTDOWN_GRACE="0.5")
    drop(
        daemons.inbox,
        "long.json",
        {
            "name": "long",
            "nodes": [
                {"id": "s1", "type": "sleep", "params": {"seconds": 60}},
                {"id": "s2", "type": "sleep", "params": {"seconds": 60}},
                {"id": "later", "type": "echo", "depends_on": ["s1"]},
            ],
        },
        mtime=PAST,
    )
    run_id = wait_running(daemons.db_path, "s1")
    wait_running(daemons.db_path, "s2")
    assert daemon.terminate() == 0

    interrupted = daemon.events("node.interrupted")
    assert sorted((e["node_id"], e["run_id"], e["level"]) for e in interrupted) == [
        ("s1", run_id, "warning"),
        ("s2", run_id, "warning"),
    ]
    assert all(e["task_type"] == "sleep" and e["attempt"] == 1 for e in interrupted)
    assert not (daemons.outbox / "long.result.json").exists()  # it resumes at the next start


class _Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_start_up_objects_are_frozen_only_while_the_daemon_serves() -> None:
    """Objects made before serving stay out of the collector's full passes until the daemon
    stops, and garbage made before it is freed first, not kept for good."""
    garbage = _Cycle()
    gone = weakref.ref(garbage)
    del garbage
    with startup_objects_frozen():
        assert gone() is None
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
