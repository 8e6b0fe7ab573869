"""Rows 14 and 15: the scheduler, fed by a real daemon's ``schedules_dir``."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section
from benchmarks.daemon import (
    LOG_LEVEL,
    DaemonRun,
    _cpu_seconds,
    _load_note,
    _percentile,
    _status,
    daemon,
    loadavg,
)

ECHO = [{"id": "a", "type": "echo", "params": {"n": 1}}]


def _write_schedules(folder: Path, count: int, schedule: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        doc = {"name": f"s{n}", "schedule": schedule, "nodes": ECHO}
        (folder / f"s{n:04d}.json").write_text(json.dumps(doc))


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def slots_once(root: Path, count: int, seconds: float) -> dict[str, Any]:
    """``count`` schedules every second for ``seconds``: missed, doubled, lateness."""
    _write_schedules(root / "schedules", count, {"every": "1s", "overlap": "allow"})
    run = DaemonRun(root)
    run.extra_env["WFE_MAX_CONCURRENT_WORKFLOWS"] = "50"
    try:
        run.start()
        ready = time.time()
        time.sleep(seconds)
        run.check_alive()
        assert run.proc is not None
        run.proc.terminate()
        run.proc.wait(60)
    finally:
        run.kill()
    db = sqlite3.connect(root / "data" / "wfe.db")
    rows = db.execute(
        "SELECT f.schedule, f.slot, f.outcome, w.started_at, w.source FROM firing AS f"
        " LEFT JOIN workflowrun AS w ON w.id = f.run_id ORDER BY f.schedule, f.slot"
    ).fetchall()
    runs_by_source = db.execute(
        "SELECT count(*) FROM (SELECT source FROM workflowrun GROUP BY source HAVING count(*) > 1)"
    ).fetchone()[0]
    db.close()
    by_schedule: dict[str, list[float]] = {}
    late: list[float] = []
    not_fired = 0
    for schedule, slot, outcome, started_at, _ in rows:
        if _stamp(slot) < ready + 1:
            continue  # slots due while the daemon started are caught up, not on time
        by_schedule.setdefault(schedule, []).append(_stamp(slot))
        if outcome != "fired" or started_at is None:
            not_fired += 1
            continue
        late.append((_stamp(started_at) - _stamp(slot)) * 1000)
    # The window every schedule was loaded in: from the latest first slot to the earliest last.
    start = max(slots[0] for slots in by_schedule.values())
    end = min(slots[-1] for slots in by_schedule.values())
    expected = int(end - start) + 1
    missed = sum(
        expected - len([s for s in slots if start <= s <= end]) for slots in by_schedule.values()
    )
    return {
        "fired": len(late),
        "missed": missed + not_fired,
        "doubled": runs_by_source,
        "p50": _percentile(late, 0.5),
        "p95": _percentile(late, 0.95),
        "schedules": len(by_schedule),
    }


def schedule_slots(ctx: Context) -> Section:
    """Row 14: 200 schedules ``every: "1s"`` for 60 s."""
    load = loadavg()
    count, seconds = ctx.size(200, 20), 60.0 if not ctx.quick else 4.0
    section = Section(
        "schedule_slots",
        f"14. {count} schedules every second for {seconds:.0f} s",
        f"A real daemon (`WFE_LOG_LEVEL={LOG_LEVEL}`, defaults otherwise) with {count} "
        f'schedule files `"every": "1s"`, `"overlap": "allow"` (one `echo` node each) in its '
        f"`schedules_dir` and `WFE_MAX_CONCURRENT_WORKFLOWS=50`, left for {seconds:.0f} s, "
        f"then stopped with SIGTERM. From the database, over the slots from 1 s after "
        f"READY=1 (the ones due during start-up are caught up): every slot must have fired "
        f"once (missed: a slot of the window with no run; doubled: a slot file run twice), "
        f"and the lateness is the run's recorded `started_at` minus its slot time.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"schedule slots run {n + 1}/{ctx.runs} ({seconds:.0f} s)")
        rounds.append(slots_once(ctx.tmp / f"slots{n}", count, seconds))
    section.add(Figure("slots fired", [r["fired"] for r in rounds], "runs"))
    section.add(Figure("slots missed", [r["missed"] for r in rounds], "slots", limit=0))
    section.add(Figure("slots run twice", [r["doubled"] for r in rounds], "slots", limit=0))
    section.add(Figure("lateness p50", [r["p50"] for r in rounds], "ms", limit=10))
    section.add(Figure("lateness p95", [r["p95"] for r in rounds], "ms", limit=50))
    section.notes.append(_load_note(load))
    return section


def idle_once(root: Path, count: int, seconds: float) -> dict[str, Any]:
    _write_schedules(root / "schedules", count, {"cron": "0 3 1 1 *"})
    with daemon(root) as run:
        time.sleep(1.0)  # the start-up tail
        run.check_alive()
        cpu0 = _cpu_seconds(run.pid)
        time.sleep(seconds)
        run.check_alive()
        cpu1 = _cpu_seconds(run.pid)
        rss_kb = _status(run.pid, "VmRSS")
    return {"cpu": cpu1 - cpu0, "rss": rss_kb / 1024}


def schedule_idle(ctx: Context) -> Section:
    """Row 15: the daemon idle with 1,000 schedules loaded, none due."""
    load = loadavg()
    count, seconds = 1000, 30.0 if not ctx.quick else 3.0
    section = Section(
        "schedule_idle",
        f"15. The daemon idle for {seconds:.0f} s with {count} schedules loaded",
        f"A real daemon with {count} schedule files (`cron` `0 3 1 1 *`: none due) and an "
        f"empty inbox, left alone for {seconds:.0f} s starting 1 s after READY=1: CPU seconds "
        f"(`utime + stime` of `/proc/<pid>/stat`, all threads) and `VmRSS` at the end.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"schedule idle run {n + 1}/{ctx.runs} ({seconds:.0f} s)")
        rounds.append(idle_once(ctx.tmp / f"sidle{n}", count, seconds))
    limit = 0.3 if not ctx.quick else 0.3 * seconds / 30
    section.add(Figure(f"CPU over {seconds:.0f} s idle", [r["cpu"] for r in rounds], "s", limit))
    section.add(Figure("RSS (VmRSS)", [r["rss"] for r in rounds], "MB", limit=60))
    section.notes.append(_load_note(load))
    return section
