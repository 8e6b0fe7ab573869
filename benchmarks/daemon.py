"""Daemon benchmarks (RESULTS.md rows 4, 5, 8 and 9): the real ``wfe-daemon`` as a process.

Every daemon benchmark starts ``python -m wfe_daemon run`` as a subprocess with its working
directory and ``WFE_INBOX``, ``WFE_OUTBOX``, ``WFE_DB_PATH`` and ``WFE_DATA_DIR`` inside a fresh
temporary folder, ``WFE_LOG_LEVEL=WARNING`` (its JSON log lines go to a file), and a real unix
datagram socket as ``NOTIFY_SOCKET``: the benchmark begins only once READY=1 arrives on it, and
the daemon is always killed (SIGKILL, reaped) at the end. Files are written into a staging
folder beside the inbox (same filesystem) and renamed in, as a well-behaved writer does.

The outbox is watched with raw Linux inotify (``inotify_init1`` through ctypes, ``IN_CREATE``
and ``IN_MOVED_TO`` of non-dot names: the daemon writes a dot-prefixed temporary file, fsyncs
it, then hard-links it to its final name) in a blocking ``poll``, so a result is seen within
microseconds of the moment its name exists; no sleep-and-look loop and no debounce.

- ``intake`` (row 4): rename one single-node ``echo`` workflow into the inbox, time from just
  before the rename to the moment ``outbox/<stem>.result.json`` exists (its inotify event);
  one file at a time (each waits for the previous result, then a random 5-25 ms pause so the
  arrivals do not phase-lock with the watcher's polling), alone, then while a background
  thread renames in a steady 200 other single-node files per second. The background files
  are checked afterwards (each has its result). Five files after READY are a warm-up, not
  counted (the first one is reported on its own).
- ``burst`` (row 5): 1,000 single-node files renamed in as fast as possible; seconds from the
  first rename to the last result; every result read back, each ``SUCCESS`` with its own
  ``run_id``.
- ``idle`` (row 8): the daemon idle with an empty inbox for 30 s, starting 1 s after READY=1:
  CPU seconds (``utime + stime`` of ``/proc/<pid>/stat``, all threads) and ``VmRSS``.
- ``validate`` (row 9): ``wfe-daemon validate`` of a 10-node file, as a whole process (the
  console script and ``python -m wfe_daemon``), against ``python -c pass``, interleaved.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from benchmarks._importtime import import_times
from benchmarks._suite import Context, Figure, Section

READY_TIMEOUT_S = 30.0
LOG_LEVEL = "WARNING"
BACKGROUND_RATE = 200.0  # files per second under load (row 4)
WARMUP = 5


# -- the daemon as a subprocess ----------------------------------------------------------------


class DaemonRun:
    """One daemon on ``root``'s inbox, outbox, data folder and database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.outbox = root / "outbox"
        self.data_dir = root / "data"
        self.db_path = self.data_dir / "wfe.db"
        self.staging = root / "staging"
        for folder in (self.inbox, self.outbox, self.data_dir, self.staging):
            folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = [sys.executable, "-m", "wfe_daemon", "run"]
        self.extra_env: dict[str, str] = {}
        self.sock: socket.socket | None = None
        self._files: list[IO[bytes]] = []

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("WFE_")
            # PYTHONUNBUFFERED: a line per write, which neither systemd nor a shell asks for
            and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PYTHONUNBUFFERED")
        }
        env.update(
            WFE_INBOX=str(self.inbox),
            WFE_OUTBOX=str(self.outbox),
            WFE_DB_PATH=str(self.db_path),
            WFE_DATA_DIR=str(self.data_dir),
            WFE_LOG_LEVEL=LOG_LEVEL,
        )
        env.update(self.extra_env)
        return env

    def start(self) -> float:
        """Start the daemon and wait for READY=1 on a unix datagram socket; seconds it took."""
        notify = self.root / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(notify))
        env = self.env()
        env["NOTIFY_SOCKET"] = str(notify)
        self._files = [(self.root / "daemon.out").open("wb"), (self.root / "daemon.err").open("wb")]
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
        )
        deadline = started + READY_TIMEOUT_S
        while True:
            self.sock.settimeout(0.05)
            try:
                data = self.sock.recv(65536).decode(errors="replace")
            except TimeoutError:
                data = ""
            if "READY=1" in data.split("\n"):
                return time.perf_counter() - started
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.output()}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"no READY=1 within {READY_TIMEOUT_S}s: {self.output()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        for file in self._files:
            file.flush()
        out = (self.root / "daemon.out").read_text(errors="replace")
        err = (self.root / "daemon.err").read_text(errors="replace")
        return f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-3000:]}"

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"daemon died with {self.proc.returncode}: {self.output()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)
        if self.sock is not None:
            self.sock.close()
        for file in self._files:
            file.close()

    def stage(self, name: str, doc: dict[str, Any]) -> Path:
        """Write ``doc`` into the staging folder (to be renamed into the inbox as ``name``)."""
        path = self.staging / name
        path.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
        return path

    def drop(self, staged: Path) -> None:
        os.rename(staged, self.inbox / staged.name)

    def result(self, stem: str) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads((self.outbox / f"{stem}.result.json").read_bytes())
        return summary


@contextlib.contextmanager
def daemon(root: Path, make: Callable[[Path], DaemonRun] = DaemonRun) -> Iterator[DaemonRun]:
    """A started daemon (READY=1 received) on ``root``; killed and reaped on the way out.

    ``make`` builds the :class:`DaemonRun` (a subclass changes how it runs).
    """
    run = make(root)
    try:
        run.start()
        yield run
    finally:
        run.kill()


def echo_doc(name: str) -> dict[str, Any]:
    return {"name": name, "nodes": [{"id": "a", "type": "echo", "params": {"n": name}}]}


# -- watching the outbox: raw inotify ---------------------------------------------------------

_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class OutboxWatch:
    """The names that appear in a folder (created, linked or renamed in), with arrival times.

    Linux inotify through ctypes: ``wait()`` blocks in ``poll`` and time-stamps each event
    with ``time.perf_counter()`` the moment it is read.
    """

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = libc.inotify_add_watch(self.fd, str(folder).encode(), _IN_MOVED_TO | _IN_CREATE)
        if wd < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self.folder = folder
        self.seen: dict[str, float] = {}
        self.overflowed = False
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def close(self) -> None:
        os.close(self.fd)

    def _read(self, timeout_s: float) -> list[str]:
        if not self._poll.poll(max(0, int(timeout_s * 1000))):
            return []
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        now = time.perf_counter()
        names, offset = [], 0
        while offset < len(buf):
            _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            offset += _EVENT.size
            name = buf[offset : offset + length].rstrip(b"\0").decode(errors="replace")
            offset += length
            if mask & _IN_Q_OVERFLOW:
                self.overflowed = True
            elif name and not name.startswith("."):
                self.seen.setdefault(name, now)
                names.append(name)
        return names

    def wait_for(self, name: str, timeout_s: float, alive: DaemonRun) -> float:
        """The perf_counter time at which ``name`` arrived (waiting for it if needed)."""
        deadline = time.perf_counter() + timeout_s
        while name not in self.seen:
            left = deadline - time.perf_counter()
            if left <= 0:
                alive.check_alive()
                raise RuntimeError(f"no {name} in the outbox within {timeout_s}s")
            self._read(min(left, 0.5))
            if self.overflowed and (self.folder / name).exists():
                self.seen.setdefault(name, time.perf_counter())
        return self.seen[name]

    def wait_count(self, count: int, timeout_s: float, alive: DaemonRun) -> float:
        """The perf_counter time at which the ``count``-th result name arrived."""
        deadline = time.perf_counter() + timeout_s
        while len(self.seen) < count:
            left = deadline - time.perf_counter()
            if left <= 0:
                alive.check_alive()
                raise RuntimeError(f"only {len(self.seen)} of {count} results in {timeout_s}s")
            self._read(min(left, 0.5))
            if self.overflowed:
                raise RuntimeError("inotify queue overflowed: the burst figure is not exact")
        return max(self.seen.values())


def loadavg() -> str:
    """The machine's 1-minute load average (other work on the machine skews the figures)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def _load_note(before: str) -> str:
    return (
        f"Machine load average (1 min) {before} before and {loadavg()} after this benchmark, "
        f"on {os.cpu_count()} cores."
    )


def _percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear interpolation between closest ranks."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- row 4: intake latency ----------------------------------------------------------------------


class _Background(threading.Thread):
    """Renames a steady ``rate`` single-node files per second into the inbox until stopped."""

    def __init__(self, run: DaemonRun, rate: float) -> None:
        super().__init__(name="background-dropper", daemon=True)
        self.run_ = run
        self.rate = rate
        self.stop = threading.Event()
        self.dropped: list[str] = []
        self.late = 0.0  # the worst lag behind the schedule, seconds
        self.elapsed = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.perf_counter()
            i = 0
            while not self.stop.is_set():
                due = start + i / self.rate
                now = time.perf_counter()
                if due > now:
                    if self.stop.wait(due - now):
                        break
                else:
                    self.late = max(self.late, now - due)
                name = f"bg-{i:06d}.json"
                self.run_.drop(self.run_.stage(name, echo_doc(name)))
                self.dropped.append(name)
                i += 1
            self.elapsed = time.perf_counter() - start
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _measure_one_at_a_time(
    run: DaemonRun, watch: OutboxWatch, prefix: str, count: int, rng: random.Random
) -> list[float]:
    latencies = []
    for i in range(count):
        name = f"{prefix}-{i:04d}.json"
        staged = run.stage(name, echo_doc(name))
        time.sleep(rng.uniform(0.005, 0.025))
        t0 = time.perf_counter()
        run.drop(staged)
        stem = name.removesuffix(".json")
        arrived = watch.wait_for(f"{stem}.result.json", 10.0, run)
        latencies.append(arrived - t0)
        summary = run.result(stem)
        if summary.get("status") != "SUCCESS":
            raise RuntimeError(f"{name}: {summary.get('status')} {summary.get('errors')}")
    return latencies


def intake_once(root: Path, measured: int, rng: random.Random) -> dict[str, Any]:
    """One daemon: warm-up, ``measured`` files alone, then ``measured`` under 200 files/s."""
    with daemon(root) as run:
        watch = OutboxWatch(run.outbox)
        try:
            warm = _measure_one_at_a_time(run, watch, "warm", WARMUP, rng)
            alone = _measure_one_at_a_time(run, watch, "alone", measured, rng)
            background = _Background(run, BACKGROUND_RATE)
            background.start()
            try:
                time.sleep(0.5)  # reach the steady rate first
                loaded = _measure_one_at_a_time(run, watch, "loaded", measured, rng)
            finally:
                background.stop.set()
                background.join(10)
            if background.error is not None:
                raise background.error
            for name in background.dropped:  # every background file got its result too
                watch.wait_for(name.removesuffix(".json") + ".result.json", 20.0, run)
            run.check_alive()
        finally:
            watch.close()
    rate = len(background.dropped) / background.elapsed if background.elapsed else 0.0
    return {
        "first": warm[0],
        "alone": alone,
        "loaded": loaded,
        "bg_rate": rate,
        "bg_files": len(background.dropped),
        "bg_late": background.late,
    }


def intake(ctx: Context) -> Section:
    load = loadavg()
    measured = ctx.size(100, 5)
    section = Section(
        "intake",
        "4. Intake latency: rename into the inbox to result file, one file at a time",
        f"A single-node `echo` workflow renamed into the inbox of the real daemon "
        f"(`python -m wfe_daemon run`, `WFE_LOG_LEVEL={LOG_LEVEL}`, ready by READY=1 on a unix "
        f"datagram `NOTIFY_SOCKET`); time from just before the rename to the moment "
        f"`outbox/<stem>.result.json` exists, seen through raw inotify (`IN_CREATE`/"
        f"`IN_MOVED_TO` in a blocking `poll`: no polling interval, no debounce). One file "
        f"at a time ({measured} per run, each after the previous result plus a random "
        f"5-25 ms pause), alone, then while a background "
        f"thread renames in {BACKGROUND_RATE:.0f} other single-node files per second; "
        f"percentiles are over the measured files only. Each run is a fresh daemon; "
        f"{WARMUP} warm-up files after READY are not counted.",
    )
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the dropper thread must not delay the watching thread
    try:
        rounds = []
        for n in range(ctx.runs):
            ctx.progress(f"intake run {n + 1}/{ctx.runs}")
            rounds.append(intake_once(ctx.tmp / f"intake{n}", measured, random.Random(n)))
    finally:
        sys.setswitchinterval(old_interval)
    ms = 1000.0
    for key, label in (("alone", "alone"), ("loaded", f"under {BACKGROUND_RATE:.0f} files/s")):
        section.add(
            Figure(f"p50, {label}", [_percentile(r[key], 0.5) * ms for r in rounds], "ms", limit=20)
        )
        section.add(
            Figure(
                f"p95, {label}", [_percentile(r[key], 0.95) * ms for r in rounds], "ms", limit=50
            )
        )
        section.add(Figure(f"max, {label}", [max(r[key]) * ms for r in rounds], "ms"))
    section.add(
        Figure(
            "first file after READY (warm-up, not counted above)",
            [r["first"] * ms for r in rounds],
            "ms",
        )
    )
    section.add(Figure("background rate achieved", [r["bg_rate"] for r in rounds], "files/s"))
    every = [x * ms for r in rounds for x in r["alone"]]
    loaded = [x * ms for r in rounds for x in r["loaded"]]
    section.notes.append(
        f"All {len(every)} files alone pooled: p50 {_percentile(every, 0.5):.1f} ms, "
        f"p95 {_percentile(every, 0.95):.1f} ms, p99 {_percentile(every, 0.99):.1f} ms; "
        f"all {len(loaded)} under load pooled: p50 {_percentile(loaded, 0.5):.1f} ms, "
        f"p95 {_percentile(loaded, 0.95):.1f} ms, p99 {_percentile(loaded, 0.99):.1f} ms."
    )
    section.notes.append(
        f"Every background file got its result ({sum(r['bg_files'] for r in rounds)} in all); "
        f"the dropper's worst lag behind its schedule was "
        f"{max(r['bg_late'] for r in rounds) * ms:.1f} ms."
    )
    section.notes.append(_load_note(load))
    return section


# -- row 5: a burst of 1,000 files --------------------------------------------------------------


def burst_once(
    root: Path, count: int, make: Callable[[Path], DaemonRun] = DaemonRun
) -> dict[str, Any]:
    """Rename ``count`` single-node files in at once; the seconds to the last result.

    Also returns ``t0`` (``perf_counter`` just before the first rename) and ``seen`` (each
    result name's arrival, ``perf_counter``).
    """
    with daemon(root, make) as run:
        staged = [run.stage(f"b-{i:05d}.json", echo_doc(f"b-{i:05d}")) for i in range(count)]
        watch = OutboxWatch(run.outbox)
        try:
            t0 = time.perf_counter()
            for path in staged:
                run.drop(path)
            renamed = time.perf_counter() - t0
            last = watch.wait_count(count, 60.0, run)
        finally:
            watch.close()
        seconds = last - t0
        results = [p for p in run.outbox.iterdir() if not p.name.startswith(".")]
        run_ids: set[int] = set()
        statuses: dict[str, int] = {}
        for path in results:
            summary = json.loads(path.read_bytes())
            run_ids.add(summary["run_id"])
            statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
        expected = {f"b-{i:05d}.result.json" for i in range(count)}
        missing = expected - {p.name for p in results}
        run.check_alive()
    if missing or len(results) != count or len(run_ids) != count or statuses != {"SUCCESS": count}:
        raise RuntimeError(
            f"burst lost or doubled files: {len(results)} results, {len(run_ids)} run ids, "
            f"{statuses}, missing {sorted(missing)[:5]}"
        )
    return {
        "seconds": seconds,
        "renamed": renamed,
        "count": count,
        "t0": t0,
        "seen": dict(watch.seen),
    }


def burst(ctx: Context) -> Section:
    load = loadavg()
    count = ctx.size(1000, 20)
    section = Section(
        "burst",
        f"5. A burst of {count:,} single-node files dropped at once",
        f"{count:,} single-node `echo` files written beside the inbox, then renamed in one "
        f"after another as fast as possible, into the real daemon (`WFE_LOG_LEVEL={LOG_LEVEL}`, "
        f"defaults otherwise: `max_concurrent_workflows` 10); seconds from the first rename to "
        f"the last result appearing in the outbox (raw inotify). Then every result is read: "
        f"each file has exactly one, each `SUCCESS`, with {count:,} distinct `run_id`s.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"burst run {n + 1}/{ctx.runs}")
        rounds.append(burst_once(ctx.tmp / f"burst{n}", count))
    section.add(Figure("first rename to last result", [r["seconds"] for r in rounds], "s", limit=2))
    section.add(Figure("throughput", [r["count"] / r["seconds"] for r in rounds], "files/s"))
    section.add(Figure("time spent renaming them in", [r["renamed"] * 1000 for r in rounds], "ms"))
    section.notes.append(f"None lost, none doubled in any run ({count:,} distinct run ids each).")
    section.notes.append(_load_note(load))
    return section


# -- row 8: idle -----------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` (voluntary + involuntary)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def idle_once(root: Path, seconds: float) -> dict[str, Any]:
    with daemon(root) as run:
        time.sleep(1.0)  # let the start-up tail settle
        run.check_alive()
        cpu0, wake0 = _cpu_seconds(run.pid), _wakeups(run.pid)
        time.sleep(seconds)
        run.check_alive()
        cpu1, wake1 = _cpu_seconds(run.pid), _wakeups(run.pid)
        rss_kb = _status(run.pid, "VmRSS")
        hwm_kb = _status(run.pid, "VmHWM")
        threads = _status(run.pid, "Threads")
    return {
        "cpu": cpu1 - cpu0,
        "rss": rss_kb / 1024,
        "hwm": hwm_kb / 1024,
        "wakeups": (wake1 - wake0) / seconds,
        "threads": threads,
    }


def idle(ctx: Context) -> Section:
    load = loadavg()
    seconds = 2.0 if ctx.quick else 30.0
    section = Section(
        "idle",
        f"8. The daemon idle for {seconds:.0f} s with an empty inbox",
        f"The real daemon (`WFE_LOG_LEVEL={LOG_LEVEL}`, defaults otherwise) left alone with an "
        f"empty inbox for {seconds:.0f} s, starting 1 s after READY=1: CPU seconds as the "
        f"difference of `utime + stime` in `/proc/<pid>/stat` (all threads; clock-tick "
        f"resolution {1 / os.sysconf('SC_CLK_TCK') * 1000:.0f} ms), `VmRSS` of "
        f"`/proc/<pid>/status` at the end, and context switches per second summed over "
        f"`/proc/<pid>/task/*/status`.",
    )
    rounds = []
    for n in range(ctx.runs):
        ctx.progress(f"idle run {n + 1}/{ctx.runs} ({seconds:.0f} s)")
        rounds.append(idle_once(ctx.tmp / f"idle{n}", seconds))
    section.add(
        Figure(
            f"CPU over {seconds:.0f} s idle",
            [r["cpu"] for r in rounds],
            "s",
            limit=0.3 if not ctx.quick else 0.3 * seconds / 30,
        )
    )
    section.add(Figure("RSS (VmRSS)", [r["rss"] for r in rounds], "MB", limit=60))
    section.add(Figure("peak RSS (VmHWM)", [r["hwm"] for r in rounds], "MB"))
    section.add(Figure("context switches per second", [r["wakeups"] for r in rounds], "/s"))
    section.notes.append(f"Threads in the idle daemon: {rounds[-1]['threads']}. MB = 2^20 bytes.")
    section.notes.append(_load_note(load))
    return section


# -- row 9: validate as a whole process -----------------------------------------------------------


def ten_node_doc() -> dict[str, Any]:
    """A 10-node workflow using several task types, with references and dependencies."""
    nodes = [{"id": "n0", "type": "echo", "params": {"v": 0, "items": [1, 2, 3]}}]
    for i in range(1, 10):
        node: dict[str, Any] = {
            "id": f"n{i}",
            "type": "echo",
            "depends_on": [f"n{i - 1}"],
            "params": {"v": f"{{{{ n{i - 1}.v }}}}", "label": f"step {i}"},
        }
        if i == 5:
            node = {"id": "n5", "type": "sleep", "depends_on": ["n4"], "params": {"seconds": 0}}
        if i == 6:
            node["depends_on"] = ["n4", "n5"]
            node["params"]["v"] = "{{ n4.v }}"
        if i == 9:
            node["trigger_rule"] = "all_done"
            node["retries"] = 1
        nodes.append(node)
    return {"name": "ten nodes", "timeout": 60, "nodes": nodes}


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds


def importtime_top(file: Path, env: dict[str, str], cwd: Path, top: int = 10) -> list[str]:
    """The ``top`` imports by cumulative time of ``python -X importtime -m wfe_daemon validate``."""
    done = import_times(["-m", "wfe_daemon", "validate", str(file)], env, cwd)
    rows = sorted(done.imports, key=lambda row: (row.cumulative_us, row.self_us), reverse=True)
    return [
        f"`{row.name}` {row.cumulative_us / 1000:.1f} ms (self {row.self_us / 1000:.1f})"
        for row in rows[:top]
    ]


def validate(ctx: Context) -> Section:
    load = loadavg()
    inner = ctx.size(5, 1)
    root = ctx.tmp / "validate"
    root.mkdir(parents=True, exist_ok=True)
    file = root / "ten.json"
    file.write_text(json.dumps(ten_node_doc(), indent=2))
    # Bytecode as an installed package has it: a private cache, filled by the warm-up runs
    # (this machine sets PYTHONDONTWRITEBYTECODE=1, and modules edited since the last
    # compile would otherwise be recompiled by every process).
    env = DaemonRun(root).env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(ctx.tmp / "pycache")
    cold = dict(env, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(ctx.tmp / "nocache"))
    script = Path(sys.executable).with_name("wfe-daemon")
    if not script.exists():
        found = shutil.which("wfe-daemon")
        script = Path(found) if found else script
    commands = {
        "script": [str(script), "validate", str(file)],
        "module": [sys.executable, "-m", "wfe_daemon", "validate", str(file)],
        "pass": [sys.executable, "-c", "pass"],
        "cold": [sys.executable, "-m", "wfe_daemon", "validate", str(file)],
    }
    if not script.exists():
        del commands["script"]
    section = Section(
        "validate",
        "9. `wfe-daemon validate` of a 10-node file, as a whole process",
        f"Wall time of `wfe-daemon validate FILE` (the console script beside the interpreter) "
        f"and of `python -m wfe_daemon validate FILE` on a 10-node workflow (echo and sleep, "
        f"references, a trigger rule, retries), each a fresh process, exit 0 checked; against "
        f"`python -c pass` in the same run, all with a bytecode cache of their own "
        f"(`PYTHONPYCACHEPREFIX` in the scratch folder, filled by the warm-up), as an "
        f"installed package has; and once more with no bytecode at all (every module "
        f"compiled at start: `PYTHONDONTWRITEBYTECODE=1` and an empty cache). Each run: "
        f"one unmeasured warm-up of each, then {inner} rounds of the four commands "
        f"interleaved; the run's figure is the median of its rounds.",
    )
    samples: dict[str, list[float]] = {key: [] for key in commands}
    for n in range(ctx.runs):
        ctx.progress(f"validate run {n + 1}/{ctx.runs}")
        for key, argv in commands.items():
            _wall(argv, cold if key == "cold" else env, root)
        per_run: dict[str, list[float]] = {key: [] for key in commands}
        for _ in range(inner):
            for key, argv in commands.items():
                per_run[key].append(_wall(argv, cold if key == "cold" else env, root) * 1000)
        for key in commands:
            samples[key].append(statistics.median(per_run[key]))
    if "script" in samples:
        section.add(Figure("`wfe-daemon validate FILE`", samples["script"], "ms", limit=250))
    section.add(
        Figure(
            "`python -m wfe_daemon validate FILE`",
            samples["module"],
            "ms",
            limit=None if "script" in samples else 250,
        )
    )
    section.add(Figure("baseline `python -c pass`", samples["pass"], "ms"))
    section.add(
        Figure("`python -m wfe_daemon validate FILE` without bytecode cache", samples["cold"], "ms")
    )
    key = "script" if "script" in samples else "module"
    section.add(
        Figure(
            "validate minus baseline",
            [a - b for a, b in zip(samples[key], samples["pass"], strict=True)],
            "ms",
        )
    )
    top = importtime_top(file, env, root)
    section.notes.append(
        "Top 10 imports by cumulative time, `python -X importtime -m wfe_daemon validate FILE` "
        "(one run): " + "; ".join(top) + "."
    )
    section.notes.append(_load_note(load))
    return section


if __name__ == "__main__":  # pragma: no cover - ad-hoc use: python -m benchmarks.daemon NAME
    from benchmarks.__main__ import main

    sys.exit(main(["--only", *sys.argv[1:]]))
