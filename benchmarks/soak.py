"""``python -m benchmarks.soak --duration SECONDS``: does the daemon's memory level off?

Not part of ``python -m benchmarks`` (an hour is the point of it). The real daemon runs as a
subprocess (as in :mod:`benchmarks.daemon`: temporary inbox, outbox and database, READY=1 on
a real notify socket; its JSON log lines, at ``--log-level``, INFO by default, to a file)
while a feeder thread writes small workflows beside the inbox and renames them in at a
steady ``--rate`` per second, in turn: one ``echo``; ``sleep 0`` then ``echo``; a fan-out
of one ``echo`` into four. Every ``--interval`` seconds the daemon is sampled from
``/proc/<pid>``: ``VmRSS`` split into ``RssAnon`` and ``RssFile``, open descriptors,
threads, the arenas of Python's object allocator (1 MiB anonymous maps); and the database
and WAL sizes. At the end every file must have exactly one ``SUCCESS`` result and its own
run in the database. The report is a table of the samples and the slope of RSS per 1,000
workflows over the first and the last third of the run (a least-squares line through each
third's samples): a leak keeps the last third's slope near the first's, a cache that fills
levels off to near zero.

- ``--probe``: the daemon runs under :mod:`benchmarks._soak_probe`, which adds the Python
  allocator's blocks, glibc's ``mallinfo2`` and SQLite's own memory counter to each sample;
  ``--trim`` has it call ``malloc_trim(0)`` after each sample.
- ``--env KEY=VALUE``: extra environment for the daemon (``MALLOC_ARENA_MAX=2``, ...).
- ``--write``: put the report into ``benchmarks/RESULTS.md`` as its ``soak`` section (the
  other sections are kept; ``python -m benchmarks`` keeps this one in turn).
- ``--samples FILE``: every sample as a JSON line, appended as it is taken.
- ``--tracemalloc`` (with ``--probe``): Python's allocations traced; the call sites that grew
  most go to ``FILE.growth.txt`` beside ``--samples``. Tracing halves the daemon's speed:
  use a lower ``--rate``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import daemon as daemon_benchmarks
from benchmarks._soak_report import report
from benchmarks.daemon import DaemonRun

ROOT = Path(__file__).resolve().parent.parent
DRAIN_TIMEOUT_S = 120.0


def workflow(i: int) -> dict[str, Any]:
    """The ``i``-th file's workflow: ``echo``; ``sleep 0`` then ``echo``; a 1-to-4 fan-out."""
    name = f"soak {i}"
    kind = i % 3
    if kind == 0:
        nodes: list[dict[str, Any]] = [{"id": "a", "type": "echo", "params": {"i": i}}]
    elif kind == 1:
        nodes = [
            {"id": "nap", "type": "sleep", "params": {"seconds": 0}},
            {"id": "say", "type": "echo", "depends_on": ["nap"], "params": {"i": i}},
        ]
    else:
        nodes = [{"id": "root", "type": "echo", "params": {"i": i, "items": [1, 2, 3]}}]
        nodes += [
            {
                "id": f"leaf{k}",
                "type": "echo",
                "depends_on": ["root"],
                "params": {"k": k, "v": "{{ root.i }}"},
            }
            for k in range(4)
        ]
    return {"name": name, "nodes": nodes}


class Feeder(threading.Thread):
    """Renames ``rate`` files a second into the inbox until ``until`` (perf_counter)."""

    def __init__(self, run: DaemonRun, rate: float, until: float) -> None:
        super().__init__(name="soak-feeder", daemon=True)
        self.run_, self.rate, self.until = run, rate, until
        self.dropped = 0
        self.late = 0.0  # the worst lag behind the schedule, seconds
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            start = time.perf_counter()
            while not self.stop.is_set():
                due = start + self.dropped / self.rate
                if due >= self.until:
                    return
                wait = due - time.perf_counter()
                if wait > 0 and self.stop.wait(wait):
                    return
                self.late = max(self.late, -wait)
                name = f"s-{self.dropped:07d}.json"
                self.run_.drop(self.run_.stage(name, workflow(self.dropped)))
                self.dropped += 1
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _status(pid: int) -> dict[str, int]:
    """The ``kB`` and count fields of ``/proc/<pid>/status``."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def _object_arenas(pid: int) -> int:
    """Anonymous maps of exactly 1 MiB: the arenas of Python's object allocator (3.10+).

    An arena is returned only once every block in it is free, so its count is the Python
    heap's fragmentation, which neither the block count nor ``malloc_trim`` shows.
    """
    count = 0
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5:  # no path: anonymous
            start, end = (int(x, 16) for x in fields[0].split("-"))
            count += end - start == 1 << 20
    return count


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _results(outbox: Path) -> int:
    with os.scandir(outbox) as entries:
        return sum(1 for entry in entries if entry.name.endswith(".result.json"))


@dataclass
class Soak:
    """One soak: its daemon, its feeder and the samples taken so far."""

    run: DaemonRun
    probe_file: Path | None
    samples_file: Path | None
    """Where each sample is appended as a JSON line as soon as it is taken."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0

    def sample(self, dropped: int) -> dict[str, Any]:
        pid = self.run.pid
        row: dict[str, Any] = {
            "s": round(time.perf_counter() - self.started, 1),
            "dropped": dropped,
            "done": _results(self.run.outbox),
            **_status(pid),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "py_arenas": _object_arenas(pid),
            "db": _size(self.run.db_path),
            "wal": _size(self.run.db_path.with_name(self.run.db_path.name + "-wal")),
        }
        if self.probe_file is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                row.update(json.loads(self.probe_file.read_text().splitlines()[-1]))
                del row["t"]
        self.samples.append(row)
        if self.samples_file is not None:
            with self.samples_file.open("w" if len(self.samples) == 1 else "a") as file:
                file.write(json.dumps(row) + "\n")
        return row


def soak(root: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run one soak in ``root``; its samples and a summary. Raises if a file was lost."""
    run = DaemonRun(root)
    probe_file = root / "probe.jsonl" if args.probe else None
    run.extra_env = {
        "WFE_LOG_LEVEL": args.log_level,
        **dict(item.split("=", 1) for item in args.env),
    }
    if args.tracemalloc:  # tracing every allocation slows the start-up several times over
        daemon_benchmarks.READY_TIMEOUT_S = 180.0
    if probe_file is not None:
        run.command = [
            sys.executable,
            "-m",
            "benchmarks._soak_probe",
            str(probe_file),
            # tracing makes each look costly: look once per sample then
            str(args.interval if args.tracemalloc else 1),
            *(["--trim"] if args.trim else []),
            *(["--tracemalloc"] if args.tracemalloc else []),
            "--",
            "run",
        ]
        path = os.environ.get("PYTHONPATH")
        run.extra_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    state = Soak(run, probe_file, args.samples)
    feeder = Feeder(run, args.rate, 0.0)
    try:
        run.start()
        time.sleep(1.0)
        state.started = time.perf_counter()
        feeder.until = state.started + args.duration
        state.sample(0)
        feeder.start()
        _report_row(state.samples[-1])
        while feeder.is_alive():
            feeder.join(args.interval)
            run.check_alive()
            _report_row(state.sample(feeder.dropped))
        if feeder.error is not None:
            raise feeder.error
        _drain(run, feeder.dropped)
        time.sleep(min(args.interval, 5.0))  # let the last writes settle before the last sample
        _report_row(state.sample(feeder.dropped))
        summary = _check(run, feeder.dropped)
        summary.update(late=feeder.late, duration=args.duration, rate=args.rate)
    finally:
        feeder.stop.set()  # before the folders go
        if feeder.is_alive():
            feeder.join(10)
        run.kill()
        growth = root / "probe.jsonl.growth.txt"
        if args.samples is not None and growth.exists():
            shutil.copyfile(growth, args.samples.with_name(args.samples.name + ".growth.txt"))
    return state.samples, summary


def _drain(run: DaemonRun, dropped: int) -> None:
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    while _results(run.outbox) < dropped:
        run.check_alive()
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"only {_results(run.outbox)} of {dropped} results after {DRAIN_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.2)


def _check(run: DaemonRun, dropped: int) -> dict[str, Any]:
    """Every file has one ``SUCCESS`` result with its own run id, and one run in the database."""
    names = sorted(p.name for p in run.outbox.iterdir() if p.name.endswith(".result.json"))
    expected = [f"s-{i:07d}.result.json" for i in range(dropped)]
    statuses: dict[str, int] = {}
    run_ids = set()
    for name in names:
        summary = json.loads((run.outbox / name).read_bytes())
        statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
        run_ids.add(summary["run_id"])
    with contextlib.closing(sqlite3.connect(f"file:{run.db_path}?mode=ro", uri=True)) as db:
        runs = db.execute("SELECT count(*), count(DISTINCT name) FROM workflowrun").fetchone()
    if (
        names != expected
        or statuses != {"SUCCESS": dropped}
        or len(run_ids) != dropped
        or tuple(runs) != (dropped, dropped)
    ):
        raise RuntimeError(
            f"{dropped} files dropped, {len(names)} results ({statuses}), {len(run_ids)} run "
            f"ids, database runs/names {tuple(runs)}; "
            f"missing {sorted(set(expected) - set(names))[:5]}"
        )
    return {"dropped": dropped, "results": len(names), "runs": runs[0]}


def _report_row(row: dict[str, Any]) -> None:
    keys = (
        "s",
        "dropped",
        "done",
        "VmRSS",
        "RssAnon",
        "RssFile",
        "fds",
        "Threads",
        "wal",
        "py_arenas",
        "py_blocks",
        "malloc_used",
        "malloc_free",
        "arenas",
        "sqlite_used",
        "py_traced",
    )
    print("  ..", json.dumps({k: row[k] for k in keys if k in row}), file=sys.stderr, flush=True)


def write_results(section: str, command: str) -> Path:
    """Put ``section`` into RESULTS.md as the ``soak`` section, keeping everything else."""
    from benchmarks.__main__ import RESULTS, rewrite

    rewrite(RESULTS, {"soak": section}, command, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return RESULTS


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--duration", type=float, required=True, help="seconds of feeding")
    parser.add_argument("--rate", type=float, default=20.0, help="files per second (20)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the daemon's WFE_LOG_LEVEL (INFO, its default); lines go to a file",
    )
    parser.add_argument("--probe", action="store_true", help="sample malloc/SQLite from inside")
    parser.add_argument("--trim", action="store_true", help="with --probe: malloc_trim(0)")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="with --probe: trace Python allocations, report their growth",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the daemon",
    )
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    parser.add_argument(
        "--samples", type=Path, help="append every sample here as a JSON line as it is taken"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.interval <= 0:
        parser.error("--duration, --rate and --interval must be positive")
    if (args.trim or args.tracemalloc) and not args.probe:
        parser.error("--trim and --tracemalloc need --probe")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE")
    # Stopped early (a background job ignores SIGINT unless told): still kill the daemon.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    raw = argv if argv is not None else sys.argv[1:]
    command = "python -m benchmarks.soak " + shlex.join(raw)
    print(
        f"soak: {args.duration:.0f} s at {args.rate:g} files/s, log level {args.log_level}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="wfe-soak-") as tmp:
        rows, summary = soak(Path(tmp), args)
    what = (__doc__ or "").split("\n\n")[1]
    section = report(rows, summary, command, what)
    print(section, flush=True)
    if args.write:
        print(f"wrote {write_results(section, command)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
