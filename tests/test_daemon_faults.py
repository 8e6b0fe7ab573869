"""The daemon under faults a real box meets: odd file names, a full or immutable outbox, an
inbox removed or replaced, a second daemon on the same inbox. Each fault is logged once
when it begins and once when it heals, and nothing dropped is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    free_port,
    get,
    results,
    small_tmpfs,
    wait_result,
    wait_until,
)

RESCAN_S = 5.0  # the intake's full listing of the inbox


def _bad_name(inbox: Path, raw: bytes) -> None:
    """Create a file whose name is the bytes ``raw`` (not valid UTF-8) in ``inbox``."""
    with open(os.path.join(os.fsencode(inbox), raw), "wb") as file:
        file.write(b'{"name": "odd", "nodes": [{"id": "a", "type": "echo"}]}')


def _ignored(daemon_events: list[dict[str, object]]) -> list[object]:
    return [event["name"] for event in daemon_events if event["event"] == "intake.ignored"]


def test_a_name_that_is_not_utf8_is_left_alone_with_one_line(daemons: Daemons) -> None:
    """A file named with undecodable bytes, there at start, neither stops the daemon nor
    is logged more than once across rescans; good files are still taken."""
    daemons.inbox.mkdir(parents=True)
    _bad_name(daemons.inbox, b"bad\xff.json")
    _bad_name(daemons.inbox, b"bad\xfe.txt")
    daemon = daemons.start()
    drop(daemons.inbox, "good.json", echo_doc("good"))
    assert wait_result(daemons.outbox, "good")["status"] == "SUCCESS"
    wait_until(lambda: len(_ignored(daemon.events())) >= 2, 10, "the odd names logged")
    time.sleep(2 * RESCAN_S + 0.5)  # two more listings of the inbox: no second line
    drop(daemons.inbox, "later.json", echo_doc("later"))
    assert wait_result(daemons.outbox, "later")["status"] == "SUCCESS"
    assert sorted(map(str, _ignored(daemon.events()))) == ["bad\\xfe.txt", "bad\\xff.json"]
    assert daemon.proc.poll() is None
    assert os.path.exists(os.path.join(os.fsencode(daemons.inbox), b"bad\xff.json"))
    assert daemon.terminate() == 0


def test_odd_names_dropped_while_running_are_noted_once_and_good_ones_taken(
    daemons: Daemons,
) -> None:
    """Files dropped into a running daemon with a bad name or another suffix are logged
    once each (writers' *.tmp and dotfiles are not), and a good file beside them is taken."""
    daemon = daemons.start()
    _bad_name(daemons.inbox, b"caf\xe9.json")
    for name in ("notes.txt", "upper.JSON", "job.json.tmp", ".hidden.json"):
        (daemons.inbox / name).write_text("{}")
    drop(daemons.inbox, "fine.json", echo_doc("fine"))
    assert wait_result(daemons.outbox, "fine")["status"] == "SUCCESS"
    wait_until(lambda: len(_ignored(daemon.events())) >= 3, 3 * RESCAN_S, "odd names logged")
    time.sleep(2 * RESCAN_S + 0.5)  # two more listings of the inbox: no second line
    assert sorted(map(str, _ignored(daemon.events()))) == [
        "caf\\xe9.json",
        "notes.txt",
        "upper.JSON",
    ]
    # The bad name broke the watcher once; a new one watches: later files come by events.
    assert len(daemon.events("intake.watch_failed")) == 1
    drop(daemons.inbox, "next.json", echo_doc("next"))
    assert wait_result(daemons.outbox, "next")["status"] == "SUCCESS"
    assert len(daemon.events("intake.watch_failed")) == 1
    reasons = {e["name"]: e["reason"] for e in daemon.events("intake.ignored")}
    assert "not valid UTF-8" in str(reasons["caf\\xe9.json"])
    assert "lower case" in str(reasons["upper.JSON"])
    assert daemon.terminate() == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted inside ``tmp_path``, unmounted afterwards."""
    yield from small_tmpfs(tmp_path)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; the ballast file."""
    ballast = folder / ".ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return ballast


def _faults(daemon_events: list[dict[str, object]], name: str) -> list[str]:
    return [
        str(e["event"])
        for e in daemon_events
        if e["event"] in ("fault.begun", "fault.healed") and e.get("fault") == name
    ]


def test_a_full_outbox_holds_results_until_space_returns(
    daemons: Daemons, small_disk: Path
) -> None:
    """With the outbox's disk full, results wait (health says why, one warning); once
    space returns every result is published and every input moved, with one heal line."""
    outbox = small_disk / "outbox"
    outbox.mkdir()
    port = free_port()
    daemon = daemons.start(WFE_OUTBOX=str(outbox), WFE_METRICS_PORT=str(port))
    ballast = _fill(small_disk)
    for n in range(3):
        drop(daemons.inbox, f"full{n}.json", echo_doc(f"full{n}"))
    wait_until(lambda: _faults(daemon.events(), "outbox"), 10, "the outbox fault logged")

    def failing() -> dict[str, object] | None:
        status, body = get(port, "/healthz")
        report = json.loads(body)
        return report if status == 503 and "outbox" in report["checks"] else None

    report = wait_until(failing, 10, "/healthz failing on the outbox")
    assert "No space left on device" in str(report["checks"]["outbox"])  # type: ignore[index]
    assert results(outbox) == []
    ballast.unlink()
    for n in range(3):
        assert wait_result(outbox, f"full{n}", timeout=20)["status"] == "SUCCESS"
    wait_until(lambda: len(list((daemons.inbox / "processed").iterdir())) == 3, 10, "moved")
    wait_until(lambda: "fault.healed" in _faults(daemon.events(), "outbox"), 10, "healed")
    assert _faults(daemon.events(), "outbox") == ["fault.begun", "fault.healed"]
    assert wait_until(lambda: get(port, "/healthz")[0] == 200, 10, "/healthz ok again")
    assert [p.name for p in results(outbox)] == [f"full{n}.result.json" for n in range(3)]
    assert daemon.terminate() == 0


def test_an_immutable_outbox_heals_when_it_is_made_writable(daemons: Daemons) -> None:
    """An outbox that refuses writes (chattr +i: EPERM, even for root) holds results back
    and heals without a restart once the flag is cleared."""
    daemon = daemons.start()
    if (
        subprocess.run(
            ["chattr", "+i", str(daemons.outbox)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    try:
        drop(daemons.inbox, "stuck.json", echo_doc("stuck"))
        wait_until(lambda: _faults(daemon.events(), "outbox"), 10, "the outbox fault logged")
        (begun,) = [e for e in daemon.events("fault.begun") if e["fault"] == "outbox"]
        assert "Operation not permitted" in str(begun["error"])
        assert (daemons.inbox / "processing" / "stuck.json").exists()
    finally:
        subprocess.run(["chattr", "-i", str(daemons.outbox)], check=False)
    assert wait_result(daemons.outbox, "stuck", timeout=20)["status"] == "SUCCESS"
    wait_until(lambda: (daemons.inbox / "processed" / "stuck.json").exists(), 10, "moved")
    healed = wait_until(
        lambda: [e for e in daemon.events("fault.healed") if e["fault"] == "outbox"],
        5,
        "the heal line",
    )
    assert int(healed[0]["failures"]) >= 1  # type: ignore[call-overload]
    assert daemon.terminate() == 0


def test_an_inbox_removed_and_recreated_is_watched_again(daemons: Daemons) -> None:
    """After ``rm -r inbox; mkdir inbox`` under a running daemon, files dropped into the
    new inbox are taken, and the incident is logged once each way."""
    daemon = daemons.start()
    # At once, as the daemon sees it: a plain rmtree races the daemon, which remakes the
    # subfolders it sees go while the tree is still being removed (rm -r says "not empty").
    trash = daemons.root / "inbox.removed"
    os.rename(daemons.inbox, trash)
    shutil.rmtree(trash)
    daemons.inbox.mkdir(exist_ok=True)  # the daemon may have made it again first
    drop(daemons.inbox, "after.json", echo_doc("after"))
    assert wait_result(daemons.outbox, "after", timeout=3 * RESCAN_S)["status"] == "SUCCESS"
    wait_until(lambda: (daemons.inbox / "processed" / "after.json").exists(), 5, "moved")
    assert _faults(daemon.events(), "inbox") == ["fault.begun", "fault.healed"]
    # The new inbox is locked too: a second daemon with its own database is refused.
    second = daemons.spawn(WFE_DB_PATH=str(daemons.root / "other" / "other.db"))
    assert second.wait_exit() == 2
    assert "already running on the inbox" in second.stderr()
    assert daemon.terminate() == 0


def test_an_inbox_moved_away_is_made_again_and_watched(daemons: Daemons) -> None:
    """An inbox renamed away while a run holds a file in it: the daemon makes the inbox
    again, takes new files there, and the old run still publishes its result."""
    daemon = daemons.start()
    drop(daemons.inbox, "slow.json", echo_then_sleep("slow", 2))
    wait_until(lambda: (daemons.inbox / "processing" / "slow.json").exists(), 10, "claimed")
    moved = daemons.root / "inbox.old"
    os.rename(daemons.inbox, moved)
    wait_until(lambda: (daemons.inbox / "processing").is_dir(), 3 * RESCAN_S, "inbox made")
    drop(daemons.inbox, "new.json", echo_doc("new"))
    assert wait_result(daemons.outbox, "new", timeout=10)["status"] == "SUCCESS"
    assert wait_result(daemons.outbox, "slow", timeout=10)["status"] == "SUCCESS"
    assert _faults(daemon.events(), "inbox")[:2] == ["fault.begun", "fault.healed"]
    assert daemon.terminate() == 0


def test_a_second_daemon_on_the_same_inbox_is_refused(daemons: Daemons) -> None:
    """Another daemon on the same inbox, even with its own database, exits 2 naming it."""
    first = daemons.start()
    second = daemons.spawn(WFE_DB_PATH=str(daemons.root / "other" / "other.db"))
    assert second.wait_exit() == 2
    assert "already running on the inbox" in second.stderr()
    drop(daemons.inbox, "one.json", echo_doc("one"))
    assert wait_result(daemons.outbox, "one")["status"] == "SUCCESS"
    assert first.terminate() == 0


def test_the_last_line_says_why_the_daemon_stopped(daemons: Daemons) -> None:
    """After SIGTERM the last log line is ``daemon.stopped`` with the signal as its reason."""
    daemon = daemons.start()
    assert daemon.terminate() == 0
    last = daemon.events()[-1]
    assert (last["event"], last["reason"]) == ("daemon.stopped", "SIGTERM received")


def test_the_last_line_says_which_runs_the_grace_left_running(daemons: Daemons) -> None:
    """When the grace runs out, ``daemon.stopped`` says runs were left to resume."""
    daemon = daemons.start(WFE_SHUTDOWN_GRACE="0.2")
    drop(daemons.inbox, "long.json", echo_then_sleep("long", 30))
    wait_until(lambda: (daemons.inbox / "processing" / "long.json").exists(), 10, "claimed")
    assert daemon.terminate() == 0
    last = daemon.events()[-1]
    assert last["event"] == "daemon.stopped"
    assert "1 workflows still running after the 0.2s grace" in str(last["reason"])


def test_show_names_where_the_input_file_is_now(daemons: Daemons) -> None:
    """``show --json`` gives the file's path in processed/ or rejected/ once it moved."""
    daemon = daemons.start()
    drop(daemons.inbox, "ok.json", echo_doc("ok"))
    drop(daemons.inbox, "bad.json", b"{not json")
    ok, bad = wait_result(daemons.outbox, "ok"), wait_result(daemons.outbox, "bad")
    wait_until(lambda: (daemons.inbox / "rejected" / "bad.json").exists(), 5, "rejected")
    wait_until(lambda: (daemons.inbox / "processed" / "ok.json").exists(), 5, "processed")
    assert daemon.terminate() == 0
    env = daemons.env()
    for summary, folder in ((ok, "processed"), (bad, "rejected")):
        shown = subprocess.run(
            [sys.executable, "-m", "wfe_daemon", "show", str(summary["run_id"]), "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=daemons.root,
            timeout=60,
            check=True,
        )
        assert json.loads(shown.stdout)["source_path"] == str(
            daemons.inbox / folder / f"{summary['source'].removesuffix('.json')}.json"
        )


async def test_a_file_whose_handling_fails_is_taken_again_until_it_is_published(
    engine_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while a run ends (here its final store write, twice) does not
    leave the file stuck in processing/: it is taken again as a restart would take it,
    and published once, with one ``workflow.error`` line and one ``workflow.recovered``."""
    from structlog.testing import capture_logs

    from wfe_daemon.service.daemon import Daemon
    from wfe_daemon.service.intake import Claimed
    from wfe_daemon.service.systemd import Notifier

    engine = engine_factory()
    store = engine.store
    real_finish, calls = store.finish_run, []

    async def flaky_finish(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("simulated failure of the final write")
        await real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish_run", flaky_finish)
    settings = engine.settings
    for folder in (settings.inbox / "processing", settings.outbox):
        folder.mkdir(parents=True, exist_ok=True)
    path = settings.inbox / "processing" / "flaky.json"
    data = json.dumps(echo_doc("flaky")).encode()
    path.write_bytes(data)
    daemon = Daemon(settings, engine.registry, store, engine, Notifier.from_environ({}))
    with capture_logs() as logs:
        await daemon.handle(Claimed(path=path, source="flaky.json", data=data))
    assert [p.name for p in results(settings.outbox)] == ["flaky.result.json"]
    summary = json.loads((settings.outbox / "flaky.result.json").read_bytes())
    assert summary["status"] == "SUCCESS"
    assert (settings.inbox / "processed" / "flaky.json").exists()
    events = [e["event"] for e in logs if e["event"].startswith("workflow.")]
    assert events.count("workflow.error") == 1
    assert next(e for e in logs if e["event"] == "workflow.recovered")["failures"] == 2
    rows = await store.list_runs()
    assert [r["status"] for r in rows] == ["SUCCESS"]


def test_a_damaged_database_at_start_exits_3_in_one_line(daemons: Daemons) -> None:
    """A database file that is not a database stops the daemon at once with exit 3 (the
    unit does not restart on it) and one line naming the problem, no traceback."""
    daemons.db_path.parent.mkdir(parents=True)
    daemons.db_path.write_bytes(os.urandom(64 * 1024))
    daemon = daemons.spawn()
    assert daemon.wait_exit() == 3
    lines = daemon.stderr().strip().splitlines()
    assert len(lines) == 1 and "wfe-daemon:" in lines[0], daemon.output()
    with pytest.raises(AssertionError, match="exited with 3 before READY=1"):
        daemon.wait_ready(timeout=1)


def test_a_database_damaged_while_running_stops_the_daemon_with_3(daemons: Daemons) -> None:
    """Pages of the database overwritten under a running daemon: the next file that needs
    them stops it with exit 3, and ``daemon.stopped`` names the damage."""
    daemon = daemons.start()
    for n in range(30):
        drop(daemons.inbox, f"fill{n}.json", echo_doc(f"fill{n}" + "x" * 2000))
    wait_until(lambda: len(results(daemons.outbox)) == 30, 30, "thirty results")
    subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
                " c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()"
            ),
            str(daemons.db_path),
        ],
        check=True,
        timeout=30,
    )
    size = daemons.db_path.stat().st_size
    with daemons.db_path.open("r+b") as file:  # keep the header page, ruin the rest
        file.seek(4096)
        file.write(os.urandom(size - 4096))
    drop(daemons.inbox, "after.json", echo_doc("after"))
    assert daemon.wait_exit(30) == 3
    last = daemon.events()[-1]
    assert last["event"] == "daemon.stopped" and "damaged" in str(last["reason"])


def test_a_read_only_database_at_start_delays_ready_until_it_is_writable(
    daemons: Daemons,
) -> None:
    """An immutable database file: no READY=1 while it cannot be written (one warning),
    then READY=1 and files taken once it can, without a restart."""
    first = daemons.start()
    assert first.terminate() == 0
    if (
        subprocess.run(
            ["chattr", "+i", str(daemons.db_path)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    try:
        daemon = daemons.spawn()
        wait_until(lambda: _faults(daemon.events(), "store"), 15, "the store fault logged")
        with pytest.raises(AssertionError, match="no READY=1"):
            daemon.wait_ready(timeout=2)
        # systemd's start timeout is pushed back meanwhile, so it does not kill the wait.
        daemon.wait_notice("EXTEND_TIMEOUT_USEC=30000000", timeout=5)
    finally:
        subprocess.run(["chattr", "-i", str(daemons.db_path)], check=False)
    daemon.wait_ready()
    drop(daemons.inbox, "late.json", echo_doc("late"))
    assert wait_result(daemons.outbox, "late")["status"] == "SUCCESS"
    assert _faults(daemon.events(), "store") == ["fault.begun", "fault.healed"]
    assert daemon.terminate() == 0


def test_files_dropped_while_another_process_holds_the_database_lock_all_finish(
    daemons: Daemons,
) -> None:
    """Another process holds the database's write lock past the busy timeout: files
    dropped meanwhile wait (one store warning), then all finish once it lets go."""
    daemon = daemons.start()
    drop(daemons.inbox, "before.json", echo_doc("before"))
    wait_result(daemons.outbox, "before")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(13)\n"
                "c.execute('ROLLBACK')\n"
            ),
            str(daemons.db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        for n in range(4):
            drop(daemons.inbox, f"locked{n}.json", echo_doc(f"locked{n}"))
        wait_until(lambda: _faults(daemon.events(), "store"), 20, "the store fault logged")
        assert holder.wait(30) == 0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    for n in range(4):
        assert wait_result(daemons.outbox, f"locked{n}", timeout=30)["status"] == "SUCCESS"
    wait_until(
        lambda: _faults(daemon.events(), "store") == ["fault.begun", "fault.healed"],
        10,
        "the heal line",
    )
    assert daemon.events("workflow.error") == []
    assert daemon.terminate() == 0


def test_an_outbox_replaced_by_a_file_does_not_hold_up_a_shutdown(daemons: Daemons) -> None:
    """An outbox path that became a regular file: the result waits (one warning), SIGTERM
    still ends the daemon with 0, and the next start publishes once the folder is back."""
    daemon = daemons.start(WFE_SHUTDOWN_GRACE="1")
    shutil.rmtree(daemons.outbox)
    daemons.outbox.write_text("not a folder")
    drop(daemons.inbox, "blocked.json", echo_doc("blocked"))
    wait_until(lambda: _faults(daemon.events(), "outbox"), 10, "the outbox fault")
    time.sleep(1)  # a few retries: each must fail fast, not look for a free name forever
    assert daemon.terminate() == 0
    daemons.outbox.unlink()
    daemons.outbox.mkdir()
    daemons.start()
    assert wait_result(daemons.outbox, "blocked", timeout=20)["status"] == "SUCCESS"


def test_execute_runs_a_file_whose_name_is_not_utf8(daemons: Daemons) -> None:
    """``execute`` of a file named with undecodable bytes runs it; the summary, the
    database and the log show the name escaped."""
    daemons.root.mkdir(exist_ok=True)
    _bad_name(daemons.root, b"odd\xff.json")
    done = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"wfe_daemon",
            b"execute",
            os.path.join(os.fsencode(daemons.root), b"odd\xff.json"),
        ],
        capture_output=True,
        env=daemons.env(),
        cwd=daemons.root,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["source"]) == ("SUCCESS", "odd\\xff.json")
    assert b"Traceback" not in done.stderr


def test_sigterm_while_the_database_cannot_be_opened_at_start_exits_0(daemons: Daemons) -> None:
    """A database that cannot be opened yet (its path is a folder) is waited for with one
    warning and no READY=1; SIGTERM then ends the wait: exit 0, ``daemon.stopped`` last."""
    daemons.db_path.mkdir(parents=True)
    daemon = daemons.spawn()
    wait_until(lambda: _faults(daemon.events(), "store"), 15, "the store fault logged")
    with pytest.raises(AssertionError, match="no READY=1"):
        daemon.wait_ready(timeout=1)
    assert daemon.terminate() == 0
    last = daemon.events()[-1]
    assert last["event"] == "daemon.stopped"
    assert last["reason"] == "SIGTERM received while opening the database"
