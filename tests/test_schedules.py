"""Schedules as a user meets them: files in a running daemon's ``schedules_dir``, time
moved by the test clock (``WFE_TEST_CLOCK_FILE`` of the launcher ``hooked_wfe``), restarts
and kills, and the commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hooked_wfe
from daemon_helpers import (
    DaemonProcess,
    Daemons,
    daemons_for,
    free_port,
    query,
    read_json,
    wait_result,
    wait_settled,
    wait_until,
)

ECHO = [{"id": "a", "type": "echo", "params": {"hello": "world"}}]


def sleeping(seconds: float) -> list[dict[str, Any]]:
    """One node that sleeps ``seconds``."""
    return [{"id": "a", "type": "sleep", "params": {"seconds": seconds}}]


class Clocked:
    """A daemon factory on a test clock, with its schedules folder."""

    def __init__(self, daemons: Daemons, root: Path) -> None:
        self.daemons = daemons
        daemons.command = [sys.executable, str(hooked_wfe.HERE)]
        self.clock = root / "clock"
        self.folder = root / "schedules"
        self.folder.mkdir()

    def at(self, stamp: str) -> None:
        """Set the clock (atomically, so the daemon never reads half a stamp)."""
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(stamp)
        os.replace(tmp, self.clock)

    def env(self, **env: str) -> dict[str, str]:
        return {"WFE_TEST_CLOCK_FILE": str(self.clock), **env}

    def start(self, **env: str) -> DaemonProcess:
        return self.daemons.start(**self.env(**env))

    def write(self, name: str, schedule: dict[str, Any], nodes: Any = None, **doc: Any) -> None:
        """Write ``schedules/<name>.json`` atomically."""
        body = {"name": name, "schedule": schedule, "nodes": nodes or ECHO, **doc}
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.folder / f"{name}.json")

    def firings(self, schedule: str | None = None) -> list[tuple[str, str, str]]:
        """``(schedule, slot, outcome)`` rows, by slot."""
        rows = query(
            self.daemons.db_path,
            "SELECT schedule, slot, outcome FROM firing ORDER BY slot, schedule",
        )
        return [
            (r["schedule"], r["slot"], r["outcome"])
            for r in rows
            if schedule is None or r["schedule"] == schedule
        ]


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[Clocked]:
    """Daemons on ``tmp_path`` with a test clock at 2026-01-01T10:00:30Z."""
    with daemons_for(tmp_path) as daemons:
        made = Clocked(daemons, tmp_path)
        made.at("2026-01-01T10:00:30+00:00")
        yield made


def wait_event(
    daemon: DaemonProcess, event: str, timeout: float = 10, **fields: Any
) -> dict[str, Any]:
    """The first log line ``event`` with these ``fields``."""

    def found() -> dict[str, Any] | None:
        for line in daemon.events(event):
            if all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    return wait_until(found, timeout, f"{event} {fields}")


def test_each_slot_fires_once_as_a_run_like_any_other(clocked: Clocked) -> None:
    """A slot reached fires one run: its result is <name>.<slot>.result.json, its document
    holds scheduled_for and no schedule; a jump over slots fires only the latest."""
    clocked.write("tick", {"every": "1m"})
    daemon = clocked.start()
    clocked.at("2026-01-01T10:01:00+00:00")
    result = wait_result(clocked.daemons.outbox, "tick.20260101T100100+0000")
    assert result["status"] == "SUCCESS"
    assert result["source"] == "tick.20260101T100100+0000.json"
    kept = read_json(wait_settled(clocked.daemons.inbox, "tick.20260101T100100+0000.json"))
    assert kept["scheduled_for"] == "2026-01-01T10:01:00+00:00"
    assert "schedule" not in kept
    clocked.at("2026-01-01T10:03:30+00:00")  # 10:02 and 10:03 passed: latest fires 10:03
    wait_result(clocked.daemons.outbox, "tick.20260101T100300+0000")
    assert wait_event(daemon, "schedule.missed", schedule="tick")["missed"] == 1
    assert clocked.firings() == [
        ("tick", "2026-01-01T10:01:00+00:00", "fired"),
        ("tick", "2026-01-01T10:03:00+00:00", "fired"),
    ]
    assert len(list(clocked.daemons.outbox.glob("tick.*"))) == 2


def test_files_added_changed_and_removed_apply_without_a_restart(clocked: Clocked) -> None:
    """A new file starts firing, a paused one stops, a removed one is gone; a sentinel
    schedule due at the same slots shows each slot was decided."""
    daemon = clocked.start()
    clocked.write("sentinel", {"every": "1m"})
    clocked.write("job", {"every": "1m"})
    wait_event(daemon, "schedule.loaded", schedule="job")
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_result(clocked.daemons.outbox, "job.20260101T100100+0000")
    clocked.write("job", {"every": "1m", "paused": True})
    wait_event(daemon, "schedule.changed", schedule="job", paused=True)
    clocked.at("2026-01-01T10:02:00+00:00")
    wait_result(clocked.daemons.outbox, "sentinel.20260101T100200+0000")
    clocked.write("job", {"every": "1m"})
    wait_event(daemon, "schedule.changed", schedule="job", paused=False)
    clocked.at("2026-01-01T10:03:00+00:00")
    wait_result(clocked.daemons.outbox, "job.20260101T100300+0000")
    (clocked.folder / "job.json").unlink()
    wait_event(daemon, "schedule.removed", schedule="job")
    clocked.at("2026-01-01T10:04:00+00:00")
    wait_result(clocked.daemons.outbox, "sentinel.20260101T100400+0000")
    assert [slot for _, slot, _ in clocked.firings("job")] == [
        "2026-01-01T10:01:00+00:00",
        "2026-01-01T10:03:00+00:00",
    ]


def test_an_invalid_file_is_logged_with_every_problem_and_others_still_fire(
    clocked: Clocked,
) -> None:
    """A schedule file with several mistakes logs each at warning; the valid one fires."""
    clocked.write("bad", {"cron": "0 2 * *", "timezone": "Mars/Base", "overlap": "never"})
    (clocked.folder / "broken.json").write_text("{not json")
    clocked.write("good", {"cron": "* * * * *"})
    daemon = clocked.start()
    problems = wait_event(daemon, "schedule.invalid", schedule="bad")
    assert problems["level"] == "warning"
    text = "\n".join(problems["errors"])
    assert "5 fields" in text and "Mars/Base" in text and "overlap" in text
    wait_event(daemon, "schedule.invalid", schedule="broken")
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_result(clocked.daemons.outbox, "good.20260101T100100+0000")
    assert {name for name, _, _ in clocked.firings()} == {"good"}


def test_a_schedule_file_with_an_idempotency_key_is_invalid(clocked: Clocked) -> None:
    """``idempotency_key`` in a schedule file is refused (each slot runs once already):
    ``schedule.invalid`` says why, nothing of it fires, `schedules` lists the problem."""
    clocked.write("keyed", {"every": "1m"}, idempotency_key="nightly")
    clocked.write("plain", {"every": "1m"})
    daemon = clocked.start()
    invalid = wait_event(daemon, "schedule.invalid", schedule="keyed")
    assert invalid["errors"] == [
        "idempotency_key: not for schedule files: each slot already runs exactly once"
    ]
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_result(clocked.daemons.outbox, "plain.20260101T100100+0000")
    assert {name for name, _, _ in clocked.firings()} == {"plain"}


def test_a_removed_schedules_folder_is_a_fault_that_heals(clocked: Clocked) -> None:
    """schedules_dir removed under the daemon: a warning while it lasts, the folder made
    again, and a schedule written into it fires without a restart."""
    daemon = clocked.start()
    shutil.rmtree(clocked.folder)
    begun = wait_event(daemon, "fault.begun", fault="schedules")
    assert begun["level"] == "warning"
    wait_until(clocked.folder.is_dir, 15, "the folder made again")
    clocked.write("back", {"every": "1m"})
    wait_event(daemon, "schedule.loaded", schedule="back")
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_result(clocked.daemons.outbox, "back.20260101T100100+0000")
    wait_event(daemon, "fault.healed", fault="schedules")


@pytest.mark.parametrize(
    "point", ["schedule.recorded", "schedule.written", "schedule.run_recorded"]
)
def test_a_kill_between_recording_a_slot_and_its_run_is_recovered_once(
    clocked: Clocked, point: str
) -> None:
    """SIGKILL after the slot is recorded (before its file, before its run, or before the
    run is linked to it): the next start runs that slot exactly once."""
    clocked.write("tick", {"every": "1m"})
    daemon = clocked.start(WFE_TEST_CRASH_AT=point)
    clocked.at("2026-01-01T10:01:00+00:00")
    assert daemon.wait_exit() == -9
    assert clocked.firings() == [("tick", "2026-01-01T10:01:00+00:00", "pending")]
    daemon = clocked.start()
    result = wait_result(clocked.daemons.outbox, "tick.20260101T100100+0000")
    assert result["status"] == "SUCCESS"
    wait_until(lambda: clocked.firings()[0][2] == "fired", 5, "the firing linked")
    runs = query(clocked.daemons.db_path, "SELECT id FROM workflowrun")
    assert len(runs) == 1
    linked = query(clocked.daemons.db_path, "SELECT run_id FROM firing")
    assert linked == [{"run_id": runs[0]["id"]}]
    assert len(list(clocked.daemons.outbox.glob("tick.*"))) == 1
    daemon.terminate()


@pytest.mark.parametrize(
    ("catchup", "caught_up"),
    [
        ("none", []),
        ("latest", ["2026-01-01T10:05:00+00:00"]),
        ("all", ["2026-01-01T10:04:00+00:00", "2026-01-01T10:05:00+00:00"]),
    ],
)
def test_a_restart_after_missed_slots_follows_catchup(
    clocked: Clocked, catchup: str, caught_up: list[str]
) -> None:
    """Down from 10:01 to 10:05:30: none fires nothing missed, latest 10:05, all the last
    max_catchup (2) slots; each once, and the next slot fires on time after."""
    clocked.write("job", {"every": "1m", "catchup": catchup})
    daemon = clocked.start(WFE_MAX_CATCHUP="2")
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_result(clocked.daemons.outbox, "job.20260101T100100+0000")
    assert daemon.terminate() == 0
    clocked.at("2026-01-01T10:05:30+00:00")
    daemon = clocked.start(WFE_MAX_CATCHUP="2")
    for slot in caught_up:  # one after another (overlap: skip runs a catch-up in turn)
        stamp = slot[:19].replace("-", "").replace(":", "") + "+0000"
        wait_result(clocked.daemons.outbox, f"job.{stamp}")
    clocked.at("2026-01-01T10:06:00+00:00")
    wait_result(clocked.daemons.outbox, "job.20260101T100600+0000")
    expected = ["2026-01-01T10:01:00+00:00", *caught_up, "2026-01-01T10:06:00+00:00"]
    assert [slot for _, slot, _ in clocked.firings()] == expected
    assert {outcome for _, _, outcome in clocked.firings()} == {"fired"}


@pytest.mark.parametrize(
    ("start", "steps", "fired"),
    [
        (  # spring forward: 02:30 does not exist on 2026-03-29; it fires at 03:00+02:00
            "2026-03-29T00:50:00+00:00",
            ["2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00"],
            ["dst.20260329T030000+0200"],
        ),
        (  # fall back: 02:30 happens twice on 2026-10-25; it fires at the first only
            "2026-10-25T00:20:00+00:00",
            ["2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00"],
            ["dst.20261025T023000+0200"],
        ),
    ],
)
def test_daylight_saving_changes_in_europe_berlin(
    clocked: Clocked, start: str, steps: list[str], fired: list[str]
) -> None:
    """A 02:30 Europe/Berlin cron fires once on both transition days; a sentinel every 30
    minutes shows each step was decided."""
    clocked.at(start)
    clocked.write("dst", {"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    clocked.write("sentinel", {"every": "30m"})
    clocked.start()
    for step in steps:
        clocked.at(step)
        stamp = step[:19].replace("-", "").replace(":", "") + "+0000"
        wait_result(clocked.daemons.outbox, f"sentinel.{stamp}")
    for stem in fired:
        wait_result(clocked.daemons.outbox, stem)
    assert sorted(path.name for path in clocked.daemons.outbox.glob("dst.*")) == [
        f"{stem}.result.json" for stem in fired
    ]
    assert len(clocked.firings("dst")) == 1


def _run_times(db: Path, source: str) -> tuple[str, str]:
    row = query(db, "SELECT started_at, finished_at FROM workflowrun WHERE source = ?", source)[0]
    return row["started_at"], row["finished_at"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_overlap_decides_a_slot_due_while_the_previous_run_goes_on(
    clocked: Clocked, overlap: str
) -> None:
    """The 10:01 run sleeps 2 s when 10:02 comes: skip records 10:02 skipped, queue fires it
    once 10:01 ends, allow fires it beside 10:01."""
    clocked.write("job", {"every": "1m", "overlap": overlap}, sleeping(2))
    daemon = clocked.start()
    db, outbox = clocked.daemons.db_path, clocked.daemons.outbox
    clocked.at("2026-01-01T10:01:00+00:00")
    wait_until(lambda: query(db, "SELECT id FROM workflowrun"), 5, "the first run")
    clocked.at("2026-01-01T10:02:00+00:00")
    first = "job.20260101T100100+0000"
    second = "job.20260101T100200+0000"
    if overlap == "skip":
        wait_event(daemon, "schedule.skipped", schedule="job")
        wait_result(outbox, first)
        assert clocked.firings() == [
            ("job", "2026-01-01T10:01:00+00:00", "fired"),
            ("job", "2026-01-01T10:02:00+00:00", "skipped"),
        ]
        return
    wait_result(outbox, second)
    _, first_end = _run_times(db, f"{first}.json")
    second_start, _ = _run_times(db, f"{second}.json")
    if overlap == "queue":
        assert second_start >= first_end
    else:
        assert second_start < first_end


def test_schedules_lists_next_fire_times_and_the_last_run(clocked: Clocked, tmp_path: Path) -> None:
    """`schedules` prints each file with its next three slots in its zone, its last run and
    status, and what is wrong with an invalid one; --json the same as data."""
    clocked.write("nightly", {"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    clocked.write("often", {"every": "1m"})
    clocked.write("held", {"every": "1h", "paused": True})
    clocked.write("bad", {"every": "soon"})
    daemon = clocked.start()
    clocked.at("2026-01-01T10:01:00+00:00")
    result = wait_result(clocked.daemons.outbox, "often.20260101T100100+0000")
    daemon.terminate()
    cli = _cli(clocked, tmp_path)
    listed = json.loads(cli("schedules", "--json").stdout)
    by_name = {row["name"]: row for row in listed}
    assert [row["name"] for row in listed] == ["bad", "held", "nightly", "often"]
    assert by_name["nightly"]["next"] == [
        "2026-01-02T02:30:00+01:00",
        "2026-01-03T02:30:00+01:00",
        "2026-01-04T02:30:00+01:00",
    ]
    assert by_name["often"]["next"][0] == "2026-01-01T10:02:00+00:00"
    assert (by_name["often"]["last_run"], by_name["often"]["last_status"]) == (
        result["run_id"],
        "SUCCESS",
    )
    assert by_name["held"]["paused"] is True and by_name["held"]["next"] == []
    assert "schedule.every" in by_name["bad"]["errors"][0]
    table = cli("schedules").stdout.splitlines()
    assert table[0].split() == ["NAME", "SCHEDULE", "NEXT", "LAST", "RUN", "STATUS"]
    often = next(line for line in table if line.startswith("often"))
    assert "2026-01-01 10:02:00+00:00" in often and often.endswith("SUCCESS")
    assert "invalid" in next(line for line in table if line.startswith("bad"))


def test_trigger_runs_a_schedule_now_through_the_daemon(clocked: Clocked, tmp_path: Path) -> None:
    """`trigger NAME` hands the schedule's workflow to the running daemon with
    scheduled_for now: result <name>.<now>.result.json, no slot recorded."""
    clocked.write("nightly", {"cron": "30 2 * * *"})
    clocked.start()
    cli = _cli(clocked, tmp_path)
    done = cli("trigger", "nightly")
    assert done.returncode == 0, done.stderr
    result = wait_result(clocked.daemons.outbox, "nightly.20260101T100030+0000")
    assert result["run_id"] == int(done.stdout)
    kept = read_json(wait_settled(clocked.daemons.inbox, "nightly.20260101T100030+0000.json"))
    assert kept["scheduled_for"] == "2026-01-01T10:00:30+00:00"
    assert clocked.firings() == []
    missing = cli("trigger", "nope")
    assert missing.returncode == 2 and "no schedule 'nope'" in missing.stderr
    (clocked.folder.parent / "outside.json").write_text(json.dumps({"name": "x"}))
    for name in ("../outside", "/etc/passwd", ".hidden"):
        refused = cli("trigger", name)
        assert refused.returncode == 2 and "not a safe file stem" in refused.stderr, name
        assert "Traceback" not in refused.stderr


def test_trigger_goes_through_the_http_api_when_it_is_on(clocked: Clocked, tmp_path: Path) -> None:
    """With http_port set, `trigger` POSTs the document, named <name>.<now> (a stem with
    the offset's "+"), and the daemon runs it."""
    clocked.write("nightly", {"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    api = {"WFE_HTTP_PORT": str(free_port()), "WFE_API_TOKEN": "s3cret-token"}
    clocked.start(**api)
    done = _cli(clocked, tmp_path, **api)("trigger", "nightly")
    assert done.returncode == 0, done.stderr
    result = wait_result(clocked.daemons.outbox, "nightly.20260101T110030+0100")
    assert result["run_id"] == int(done.stdout)
    assert result["source"] == "nightly.20260101T110030+0100.json"


def test_a_scheduled_run_sees_its_slot_its_id_and_the_trigger_s_values(
    clocked: Clocked, tmp_path: Path
) -> None:
    """A schedule's nodes read ``{{ run.scheduled_for }}``, ``{{ run.id }}`` and
    ``{{ params.X }}``: a slot gets the schema's default, ``trigger -p`` overrides it."""
    nodes = [
        {
            "id": "say",
            "type": "echo",
            "params": {
                "slot": "{{ run.scheduled_for }}",
                "run": "{{ run.id }}",
                "day": "{{ params.day }}",
            },
        }
    ]
    params = {"type": "object", "properties": {"day": {"type": "string", "default": "today"}}}
    clocked.write("dated", {"every": "1m", "timezone": "Europe/Berlin"}, nodes=nodes, params=params)
    clocked.start()
    clocked.at("2026-01-01T10:01:00+00:00")
    slot = wait_result(clocked.daemons.outbox, "dated.20260101T110100+0100")
    assert slot["nodes"]["say"]["output"] == {
        "slot": "2026-01-01T11:01:00+01:00",
        "run": slot["run_id"],
        "day": "today",
    }
    done = _cli(clocked, tmp_path)("trigger", "dated", "-p", "day=2025-12-31")
    assert done.returncode == 0, done.stderr
    run_id = int(done.stdout)
    triggered = wait_until(
        lambda: next(
            (
                read_json(path)
                for path in clocked.daemons.outbox.glob("dated.*.json")
                if read_json(path)["run_id"] == run_id
            ),
            None,
        ),
        20,
        "the triggered run's result",
    )
    assert triggered["nodes"]["say"]["output"]["day"] == "2025-12-31"
    assert triggered["nodes"]["say"]["output"]["run"] == run_id


def test_bad_values_for_a_schedule_are_refused_by_trigger_and_validate(
    clocked: Clocked, tmp_path: Path
) -> None:
    """``trigger -p`` with a value its params refuse exits 2 naming it, through the inbox as
    through the API, and runs nothing; ``validate FILE -p`` checks a schedule file the same."""
    params = {"type": "object", "properties": {"day": {"type": "string", "format": "date"}}}
    nodes = [{"id": "a", "type": "echo", "params": {"day": "{{ params.day }}"}}]
    arguments = {"day": "2026-01-01"}
    clocked.write("dated", {"cron": "0 3 * * *"}, nodes=nodes, params=params, arguments=arguments)
    clocked.start()
    cli = _cli(clocked, tmp_path)
    refused = cli("trigger", "dated", "-p", "day=2026-13-01")
    assert refused.returncode == 2, refused
    assert "arguments.day" in refused.stderr and "'2026-13-01'" in refused.stderr
    schedule_file = str(clocked.folder / "dated.json")
    checked = cli("validate", schedule_file, "-p", "day=2026-13-01")
    assert checked.returncode == 2 and "arguments.day" in checked.stderr, checked
    assert cli("validate", schedule_file, "-p", "day=2026-02-01").returncode == 0
    assert cli("trigger", "dated", "-p", "day=2026-02-01").returncode == 0
    result = wait_until(
        lambda: [read_json(p) for p in clocked.daemons.outbox.glob("dated.*.result.json")],
        20,
        "the triggered run",
    )
    assert [r["nodes"]["a"]["output"]["day"] for r in result] == ["2026-02-01"]


@pytest.mark.timeout(60)
def test_a_schedule_invalid_for_a_missing_secret_loads_once_the_secret_is_there(
    clocked: Clocked, tmp_path: Path
) -> None:
    """A schedule naming a secret not yet in ``secrets_dir`` is invalid, logged once though
    it is read again at each rescan; once the secret file is there it loads (file
    unchanged) and its next slot fires with the secret."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    nodes = [{"id": "a", "type": "echo", "params": {"token": "{{ secrets.api_key }}"}}]
    clocked.write("keyed", {"cron": "* * * * *"}, nodes=nodes)
    daemon = clocked.start(WFE_SECRETS_DIR=str(secrets))
    invalid = wait_event(daemon, "schedule.invalid", schedule="keyed")
    assert any("api_key" in problem for problem in invalid["errors"]), invalid
    (secrets / "api_key").write_text("k3y-value-0123\n")
    wait_event(daemon, "schedule.loaded", schedule="keyed", timeout=15)
    assert len(daemon.events("schedule.invalid")) == 1
    clocked.at("2026-01-01T10:01:00+00:00")
    result = wait_result(clocked.daemons.outbox, "keyed.20260101T100100+0000")
    assert result["status"] == "SUCCESS"
    assert result["nodes"]["a"]["output"] == {"token": "***"}


def _cli(
    clocked: Clocked, tmp_path: Path, **extra: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = clocked.daemons.env(**clocked.env(**extra))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(hooked_wfe.HERE), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )

    return run


def test_the_daemon_itself_reads_no_test_variable(tmp_path: Path) -> None:
    """``wfe-daemon run`` (not the test launcher) with the test aids' variables set, a
    garbled clock file among them: it keeps the real clock and fires a slot once."""
    garbled = tmp_path / "clock"
    garbled.write_text("not a time")
    (tmp_path / "schedules").mkdir()
    body = {"name": "real", "schedule": {"every": "1s"}, "nodes": ECHO}
    (tmp_path / "schedules" / "real.json").write_text(json.dumps(body))
    with daemons_for(tmp_path) as daemons:
        daemon = daemons.start(
            WFE_TEST_HOOKS="1",
            WFE_TEST_CLOCK_FILE=str(garbled),
            WFE_TEST_CRASH_AT="schedule.recorded",
        )
        wait_until(lambda: list(daemons.outbox.glob("real.*.result.json")), 15, "a slot's run")
        assert daemon.terminate() == 0


def test_a_missing_schedules_dir_is_made_and_a_file_in_the_way_stops_the_start(
    tmp_path: Path,
) -> None:
    """The daemon makes schedules_dir (beside the inbox by default) as it makes the inbox;
    a file where the folder should be stops it at start, naming the key (exit 2)."""
    with daemons_for(tmp_path) as daemons:
        daemon = daemons.start()
        assert (tmp_path / "schedules").is_dir()
        assert daemon.terminate() == 0
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        refused = daemons.spawn(WFE_SCHEDULES_DIR=str(blocker))
        assert refused.wait_exit() == 2
        assert "schedules_dir" in refused.stderr()


async def test_retention_prunes_old_slots_but_each_schedules_latest(tmp_path: Path) -> None:
    """Slots older than the cutoff go, except each schedule's latest and pending ones."""
    from wfe_daemon.store import firings
    from wfe_daemon.store.database import Store

    async with Store.open(tmp_path / "wfe.db") as store:
        rows = [
            ("a", "2026-01-01T10:00:00+00:00", "x", firings.FIRED, None),
            ("a", "2026-01-02T10:00:00+00:00", "x", firings.SKIPPED, None),
            ("a", "2026-03-01T10:00:00+00:00", "x", firings.FIRED, None),
            ("b", "2026-01-01T10:00:00+00:00", "x", firings.FIRED, None),
            ("c", "2026-01-01T10:00:00+00:00", "x", firings.PENDING, None),
            ("c", "2026-01-01T11:00:00+00:00", "x", firings.FIRED, None),
        ]
        await firings.record_firings(store, rows)
        assert await firings.prune_firings(store, "2026-02-01T00:00:00+00:00", batch=1) == 2
        left = await store.query("SELECT schedule, slot FROM firing ORDER BY schedule, slot")
        assert [(r["schedule"], r["slot"][:10]) for r in left] == [
            ("a", "2026-03-01"),
            ("b", "2026-01-01"),
            ("c", "2026-01-01"),
            ("c", "2026-01-01"),
        ]
