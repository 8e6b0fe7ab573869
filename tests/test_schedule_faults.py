"""Schedules under faults a real box meets: a full disk where slot files are written, a
database that cannot be written while the folder changes, a run that never ends. The daemon
goes on, the fault is logged once each way (and shown by ``/healthz``), and each slot still
fires exactly once."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import daemons_for, free_port, get, small_tmpfs, wait_result, wait_until
from test_daemon_faults import _fill
from test_schedules import Clocked, sleeping, wait_event


@pytest.fixture
def on_clock(tmp_path: Path) -> Iterator[Clocked]:
    """Daemons on ``tmp_path`` with a test clock at 2026-01-01T10:00:30Z."""
    with daemons_for(tmp_path) as daemons:
        made = Clocked(daemons, tmp_path)
        made.at("2026-01-01T10:00:30+00:00")
        yield made


@pytest.fixture
def disk_clocked(tmp_path: Path) -> Iterator[Clocked]:
    """Daemons whose inbox is on a 2 MiB tmpfs inside ``tmp_path``, on a test clock."""
    for mount in small_tmpfs(tmp_path):
        with daemons_for(tmp_path) as daemons:
            daemons.inbox = mount / "inbox"
            made = Clocked(daemons, tmp_path)
            made.at("2026-01-01T10:00:30+00:00")
            yield made


def _faults(events: list[dict[str, Any]]) -> list[str]:
    return [
        str(e["event"])
        for e in events
        if e["event"] in ("fault.begun", "fault.healed") and e.get("fault") == "schedules"
    ]


def _health(port: int) -> dict[str, Any]:
    return json.loads(get(port, "/healthz")[1])  # type: ignore[no-any-return]


@pytest.mark.timeout(90)
def test_a_full_disk_when_slot_files_are_written_is_a_fault_and_the_slot_fires_after(
    disk_clocked: Clocked,
) -> None:
    """The inbox's disk full half a second before a slot and at it (catchup: none): one
    ``schedules`` warning, /healthz failing, no traceback; 15 s later space returns and
    that very slot fires, once (not counted as missed), and the fault heals."""
    clocked = disk_clocked
    clocked.write("tick", {"every": "1m", "catchup": "none"})
    port = free_port()
    daemon = clocked.start(WFE_HTTP_PORT=str(port), WFE_SCHEDULES_DIR=str(clocked.folder))
    ballast = _fill(clocked.daemons.inbox.parent)
    clocked.at("2026-01-01T10:00:59.700000+00:00")  # the files of 10:01 are written ahead
    begun = wait_event(daemon, "fault.begun", fault="schedules")
    assert begun["level"] == "warning"
    assert "No space left on device" in begun["error"]
    clocked.at("2026-01-01T10:01:00+00:00")

    def firing_fails() -> bool:
        report = _health(port)
        return report["status"] == "failing" and "cannot fire" in report["checks"]["schedules"]

    wait_until(firing_fails, 10, "/healthz failing on firing")
    assert "No space left on device" in _health(port)["checks"]["schedules"]
    clocked.at("2026-01-01T10:01:15+00:00")  # more than 5 s late: it was decided on time
    ballast.unlink()
    result = wait_result(clocked.daemons.outbox, "tick.20260101T100100+0000", timeout=20)
    assert result["status"] == "SUCCESS"
    wait_until(lambda: "fault.healed" in _faults(daemon.events()), 15, "the heal line")
    assert _faults(daemon.events()) == ["fault.begun", "fault.healed"]
    assert daemon.events("schedule.missed") == []
    assert clocked.firings() == [("tick", "2026-01-01T10:01:00+00:00", "fired")]
    assert wait_until(lambda: _health(port)["status"] == "ok", 10, "/healthz ok again")
    assert daemon.terminate() == 0


def test_a_stuck_run_makes_skip_warn_from_the_second_slot_skipped(on_clock: Clocked) -> None:
    """overlap: skip with a run that goes on: the first slot skipped is logged at info, the
    next ones at warning, with how many in a row."""
    clocked = on_clock
    clocked.write("stuck", {"every": "1m"}, sleeping(60))
    daemon = clocked.start()
    for minute in (1, 2, 3):
        clocked.at(f"2026-01-01T10:0{minute}:00+00:00")
        wait_until(lambda m=minute: len(clocked.firings()) == m, 10, f"slot 10:0{minute}")
    skipped = wait_until(lambda: daemon.events("schedule.skipped")[1:], 10, "two skips")
    first, second = daemon.events("schedule.skipped")
    assert (first["level"], first["in_a_row"]) == ("info", 1)
    assert (second["level"], second["in_a_row"]) == ("warning", 2)
    assert skipped[0]["slot"] == "2026-01-01T10:03:00+00:00"
    assert [outcome for _, _, outcome in clocked.firings()] == ["fired", "skipped", "skipped"]


def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.timeout(90)
def test_a_slot_recorded_whose_file_cannot_be_placed_runs_once_the_fault_goes(
    on_clock: Clocked,
) -> None:
    """``processing/`` made immutable between writing a slot's file ahead and the slot: the
    slot is recorded but its file cannot be placed (a ``schedules`` fault). Once the flag is
    cleared it runs, without a restart, exactly once; and its run counts as the schedule's
    run going on (overlap: skip skips the next slot while it sleeps)."""
    clocked = on_clock
    clocked.write("job", {"every": "1m"}, sleeping(3))
    daemon = clocked.start()
    processing = clocked.daemons.inbox / "processing"
    clocked.at("2026-01-01T10:00:59.600000+00:00")
    wait_until(lambda: list(processing.glob(".slot-*/job.*.json")), 10, "the file written ahead")
    if not _chattr("+i", processing):
        pytest.skip("chattr +i is not available here (needs root and a file system with it)")
    try:
        clocked.at("2026-01-01T10:01:00+00:00")
        begun = wait_event(daemon, "fault.begun", fault="schedules")
        assert "Operation not permitted" in begun["error"]
        assert clocked.firings() == [("job", "2026-01-01T10:01:00+00:00", "pending")]
        time.sleep(2)  # several attempts fail while it lasts
    finally:
        _chattr("-i", processing)
    wait_until(lambda: clocked.firings()[0][2] == "fired", 15, "the slot's run recorded")
    clocked.at("2026-01-01T10:02:00+00:00")  # while the 10:01 run sleeps
    wait_result(clocked.daemons.outbox, "job.20260101T100100+0000", timeout=20)
    assert clocked.firings() == [
        ("job", "2026-01-01T10:01:00+00:00", "fired"),
        ("job", "2026-01-01T10:02:00+00:00", "skipped"),
    ]
    wait_until(lambda: "fault.healed" in _faults(daemon.events()), 10, "the heal line")
    assert _faults(daemon.events()) == ["fault.begun", "fault.healed"]
    assert daemon.terminate() == 0
