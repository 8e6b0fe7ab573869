"""End-to-end benchmarks through the daemon (RESULTS.md rows 20 and 22, E3 and E5).

See :mod:`benchmarks.endtoend` for all five rows. The daemon runs as rows 4 and 5 run it
(:class:`~benchmarks.daemon.DaemonRun`), except that its level is chosen and its stdout and
stderr are pipes (FIFOs) that threads drain, as journald reads a unit's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._endtoend_parts import Drain, log_times, wall_offset
from benchmarks._suite import Context, Figure, Section, ratios
from benchmarks.daemon import (
    DaemonRun,
    OutboxWatch,
    _load_note,
    burst_once,
    daemon,
    echo_doc,
    loadavg,
)
from benchmarks.engine import fanout_doc

SMALL = 10  # nodes of the file whose time is subtracted


class PipedDaemon(DaemonRun):
    """A :class:`DaemonRun` at ``level`` whose stdout and stderr are pipes (FIFOs) that
    threads drain, as journald reads a unit's."""

    def __init__(self, root: Path, level: str) -> None:
        super().__init__(root)
        self.extra_env["WFE_LOG_LEVEL"] = level
        self.drains: list[Drain] = []

    def start(self) -> float:
        for name in ("daemon.out", "daemon.err"):
            fifo = self.root / name
            fifo.unlink(missing_ok=True)
            os.mkfifo(fifo)
            self.drains.append(Drain(fifo))  # opens it once the daemon's side is opened
            self.drains[-1].start()
        return super().start()

    def output(self) -> str:
        out, err = (drain.text() for drain in self.drains)
        return f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-3000:]}"

    def kill(self) -> None:
        """Stop the daemon with SIGTERM first, as systemd does: it flushes its last log
        lines (held up to ``FLUSH_AFTER_S``) on its way out; SIGKILL if it takes 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        super().kill()
        for drain in self.drains:
            drain.join(30)

    def logs(self) -> str:
        return self.drains[0].text() if self.drains else ""


# -- row E3 ---------------------------------------------------------------------------------------


def _one_file(
    run: DaemonRun, watch: OutboxWatch, name: str, doc: dict[str, Any]
) -> tuple[float, float]:
    """Rename ``doc`` in as ``name``: ``perf_counter`` before the rename, seconds to its result."""
    staged = run.stage(name, doc)
    stem = name.removesuffix(".json")
    t0 = time.perf_counter()
    run.drop(staged)
    arrived = watch.wait_for(f"{stem}.result.json", 600.0, run)
    summary = run.result(stem)
    if summary["status"] != "SUCCESS" or len(summary["nodes"]) != len(doc["nodes"]):
        raise RuntimeError(f"{name}: {summary['status']}")
    return t0, arrived - t0


def _daemon_round(root: Path, level: str, n: int) -> dict[str, float]:
    made = PipedDaemon(root, level)
    with daemon(root, lambda _: made) as run:
        watch = OutboxWatch(run.outbox)
        try:
            _one_file(run, watch, "warm.json", echo_doc("warm"))
            _, small = _one_file(run, watch, "small.json", fanout_doc(SMALL))
            t0, big = _one_file(run, watch, "big.json", fanout_doc(n))
            offset = wall_offset()
        finally:
            watch.close()
    found: dict[str, float] = {"small": small, "big": big}
    times = log_times(made.logs()).get("big.json", {})
    if level == "INFO" and len(times) == 3:
        renamed, result = t0 + offset, t0 + big + offset
        found["intake"] = times["workflow.received"] - renamed
        found["start"] = times["workflow.started"] - times["workflow.received"]
        found["run"] = times["workflow.finished"] - times["workflow.started"]
        found["result"] = result - times["workflow.finished"]
    elif level == "INFO":
        raise RuntimeError(f"the daemon's INFO logs lack workflow events for big.json: {times}")
    return found


def _by_level(
    ctx: Context, name: str, one_round: Callable[[Path, str], dict[str, float]]
) -> dict[str, list[float]]:
    """Samples by ``"LEVEL:key"``: each run calls ``one_round(folder, level)`` at INFO, then
    at WARNING (the baseline, alternating with it), each in a fresh folder."""
    samples: dict[str, list[float]] = {}
    for run in range(ctx.runs):
        for level in ("INFO", "WARNING"):
            ctx.progress(f"{name}: run {run + 1}/{ctx.runs}, {level}")
            for key, value in one_round(ctx.tmp / f"{name}-{run}-{level}", level).items():
                samples.setdefault(f"{level}:{key}", []).append(value)
    return samples


def e2e_daemon(ctx: Context) -> Section:
    """Row 20 (E3): a fan-out file through the daemon, rename to result, per node."""
    load = loadavg()
    n = ctx.size(10_000, 50)
    section = Section(
        "e2e_daemon",
        f"20. E3: a {n:,}-node fan-out through `wfe-daemon run`, rename to result file",
        f"The real daemon (`DaemonRun`, ready on READY=1) at INFO, its stdout and stderr pipes"
        f" drained by threads as journald would; one 1-node warm-up file, then a {SMALL}-node"
        f" and a {n:,}-node fan-out renamed into the inbox one after the other, each timed from"
        f" just before its rename to its result file's inotify event; (big - small) / "
        f"{n - SMALL:,}. Baseline: the same daemon at WARNING, alternating with it.",
    )
    s = _by_level(ctx, "e2e_daemon", lambda root, level: _daemon_round(root, level, n))
    extra = n - SMALL
    per = {
        level: [
            (b - m) / extra * 1e6
            for b, m in zip(s[f"{level}:big"], s[f"{level}:small"], strict=True)
        ]
        for level in ("INFO", "WARNING")
    }
    section.add(Figure("daemon at INFO: per node", per["INFO"], "µs/node", 50.0))
    section.add(Figure("baseline: daemon at WARNING: per node", per["WARNING"], "µs/node"))
    section.add(Figure("ratio INFO / WARNING", ratios(per["INFO"], per["WARNING"]), "x"))
    section.add(Figure(f"{n:,}-node file, INFO: rename to result", s["INFO:big"], "s"))
    section.add(
        Figure(
            f"{SMALL}-node file, INFO: rename to result", [x * 1000 for x in s["INFO:small"]], "ms"
        )
    )
    for key, label in (
        ("intake", "rename to `workflow.received` (intake)"),
        ("start", "`workflow.received` to `workflow.started` (validation, run creation)"),
        ("run", "`workflow.started` to `workflow.finished` (the run)"),
        ("result", "`workflow.finished` to the result file (writing the result)"),
    ):
        section.add(
            Figure(f"{n:,}-node file, INFO: {label}", [x * 1000 for x in s[f"INFO:{key}"]], "ms")
        )
    section.notes.append(
        "The split reads the daemon's own log timestamps (wall clock, µs) against the"
        " benchmark's clock; `workflow.finished` is logged after the run's final state is"
        " durable, so writing the result is the outbox file alone."
    )
    section.notes.append(_load_note(load) + " The machine is shared: other work skews the figures.")
    return section


# -- row E5 ---------------------------------------------------------------------------------------


def _burst_round(root: Path, level: str, count: int) -> dict[str, float]:
    made: list[PipedDaemon] = []

    def make(folder: Path) -> PipedDaemon:
        made.append(PipedDaemon(folder, level))
        return made[-1]

    done = burst_once(root, count, make)
    found = {"seconds": done["seconds"]}
    if level != "INFO":
        return found
    times = log_times(made[0].logs())
    t0 = done["t0"] + wall_offset()
    for event in ("workflow.received", "workflow.started", "workflow.finished"):
        stamps = [entry[event] for entry in times.values() if event in entry]
        if len(stamps) != count:
            raise RuntimeError(f"{len(stamps)} of {count} `{event}` lines in the daemon's logs")
        found[event] = max(stamps) - t0
    return found


def e2e_burst(ctx: Context) -> Section:
    """Row 22 (E5): row 5's burst with the daemon at INFO on drained pipes."""
    load = loadavg()
    count = ctx.size(1000, 20)
    section = Section(
        "e2e_burst",
        f"22. E5: a burst of {count:,} one-node files, the daemon at INFO on pipes",
        f"Row 5 (`burst_once`: {count:,} single-node `echo` files renamed into the inbox at"
        f" once, first rename to last result, every result checked) with the daemon at INFO,"
        f" the default, its stdout and stderr pipes drained by threads as journald would;"
        f" the baseline is the same daemon at WARNING, alternating with it.",
    )
    s = _by_level(ctx, "e2e_burst", lambda root, level: _burst_round(root, level, count))
    section.add(Figure("daemon at INFO: first rename to last result", s["INFO:seconds"], "s", 2.0))
    section.add(Figure("baseline: daemon at WARNING", s["WARNING:seconds"], "s"))
    section.add(
        Figure("ratio INFO / WARNING", ratios(s["INFO:seconds"], s["WARNING:seconds"]), "x")
    )
    for event, label in (
        ("workflow.received", "the last `workflow.received` (a worker takes the file)"),
        ("workflow.started", "the last `workflow.started` (run created)"),
        ("workflow.finished", "the last `workflow.finished` (final state durable)"),
    ):
        section.add(Figure(f"INFO: first rename to {label}", s[f"INFO:{event}"], "s"))
    section.notes.append(
        "The split reads the daemon's log timestamps (the last of each event) against the"
        " first rename. Intake claims files ahead of the workers (a queue of"
        " `max_concurrent_workflows`, 10), so `workflow.received` is when one of the 10"
        " workers takes a file and calls `submit`; the last result follows the last"
        " `workflow.finished` by the result's write."
    )
    section.notes.append(_load_note(load) + " The machine is shared: other work skews the figures.")
    return section
