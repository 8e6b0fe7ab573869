"""Real Dask clusters and whole ``wfe-daemon execute`` processes, for ``benchmarks.cluster``.

A :func:`cluster` is one ``dask scheduler`` (``--port 0``, a scheduler file, the
configuration the README asks for: ``distributed.scheduler.allowed-failures: 0``) and
``dask worker`` processes (``--no-nanny``: one process each, so its pid is the worker's)
preloading ``wfe_daemon.cluster.worker``, all on 127.0.0.1, each in a session of its
own. It is ready once every worker has registered with the scheduler, and it is ended by
pid on the way out, errors included: SIGTERM to each process group, then SIGKILL to what
is left after a grace.

:func:`execute` runs ``python -m wfe_daemon execute FILE`` as a user does, with a fresh
database, and returns its wall time, its CPU time (``RUSAGE_CHILDREN`` around it: the one
child reaped in between) and its result summary, checked: exit 0, ``SUCCESS``, every node
``SUCCESS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._importtime import import_times
from benchmarks._suite import Figure
from benchmarks.daemon import _cpu_seconds

WORKER_PRELOAD = "wfe_daemon.cluster.worker"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0

#: The scheduler's configuration (the README's): a lost worker fails its attempt at once
#: instead of the scheduler rerunning it elsewhere.
SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
#: Quiet processes: warnings and errors only (their stderr goes to files).
QUIET_ENV = {"DASK_LOGGING__DISTRIBUTED": "warning"}


def base_env(root: Path) -> dict[str, str]:
    """The environment of every process started here: no ``WFE_*`` of the caller, bytecode
    cached in ``root`` (as an installed package has it), the daemon's logs at WARNING."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("WFE_", "DASK_"))
        and key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(
        PYTHONPYCACHEPREFIX=str(root / "pycache"),
        WFE_DATA_DIR=str(root / "data"),
        WFE_INBOX=str(root / "inbox"),
        WFE_OUTBOX=str(root / "outbox"),
        WFE_LOG_LEVEL="WARNING",
        **QUIET_ENV,
    )
    return env


def _dask() -> str:
    script = Path(sys.executable).with_name("dask")
    found = str(script) if script.exists() else shutil.which("dask")
    if found is None:
        raise RuntimeError("no `dask` command: install the [dask] extra (distributed)")
    return found


@dataclass(slots=True)
class Cluster:
    """A running scheduler and its workers."""

    root: Path
    scheduler_file: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """By name: ``scheduler``, ``worker-0``, ``worker-1``, ..."""
    address: str = ""
    workers: dict[str, int] = field(default_factory=dict)
    """Worker address -> pid, as the workers answered once all had registered."""

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the scheduler and of all workers together."""
        workers = [p.pid for name, p in self.procs.items() if name != "scheduler"]
        return {
            "scheduler": _cpu_seconds(self.procs["scheduler"].pid),
            "workers": sum(_cpu_seconds(pid) for pid in workers),
        }

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.output(name)}")

    def output(self, name: str) -> str:
        return (self.root / f"{name}.err").read_text(errors="replace")[-3000:]

    def start(
        self, workers: int, nthreads: int, env: Mapping[str, str], preload: str | None
    ) -> None:
        self._spawn(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
            {**env, **SCHEDULER_ENV},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.scheduler_file.exists():  # written once it listens
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scheduler file after {START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for n in range(workers):
            argv = ["worker", "--nthreads", str(nthreads), "--no-nanny", "--no-dashboard"]
            argv += ["--host", "127.0.0.1", "--name", f"worker-{n}"]
            argv += ["--local-directory", str(self.root / f"worker-{n}")]
            argv += ["--preload", preload] if preload else []
            self._spawn(f"worker-{n}", argv, env)
        self.workers = self._wait_for_workers(workers, deadline)

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        with (self.root / f"{name}.err").open("wb") as err:
            self.procs[name] = subprocess.Popen(
                [_dask(), *argv, "--scheduler-file", str(self.scheduler_file)],
                cwd=self.root,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # its own process group, ended as one
            )

    def _wait_for_workers(self, count: int, deadline: float) -> dict[str, int]:
        from distributed import Client  # the harness only; never the measured daemon

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < count:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fewer than {count} workers after {START_TIMEOUT_S:.0f}s")
                time.sleep(0.1)
            pids: dict[str, int] = client.run(os.getpid)
        mine = {p.pid for name, p in self.procs.items() if name != "scheduler"}
        if set(pids.values()) != mine:
            raise RuntimeError(f"workers {pids} are not the processes started ({mine})")
        return pids

    def stop(self) -> None:
        """SIGTERM every process group (workers first), SIGKILL what outlives the grace."""
        order = [p for name, p in self.procs.items() if name != "scheduler"]
        order += [p for name, p in self.procs.items() if name == "scheduler"]
        for proc in order:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in order:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # the group too: nothing of it stays behind
            proc.wait(30)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group of our own child, started in its own session


@contextlib.contextmanager
def cluster(
    root: Path,
    workers: int,
    nthreads: int,
    env: Mapping[str, str],
    preload: str | None = WORKER_PRELOAD,
) -> Iterator[Cluster]:
    """A scheduler and ``workers`` workers of ``nthreads`` threads, ended on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    running = Cluster(root, root / "scheduler.json")
    try:
        running.start(workers, nthreads, env, preload)
        yield running
    finally:
        running.stop()


# -- wfe-daemon execute as a whole process ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Executed:
    """One ``wfe-daemon execute``: wall and CPU seconds, its summary and its stderr."""

    wall: float
    cpu: float
    pid: int
    summary: dict[str, Any]
    stderr: str


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(file: Path, env: Mapping[str, str], db: Path, timeout_s: float) -> Executed:
    """``python -m wfe_daemon execute FILE`` on a fresh database ``db``; checked SUCCESS."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, "-m", "wfe_daemon", "execute", str(file)],
        cwd=db.parent,
        env={**env, "WFE_DB_PATH": str(db)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        finally:
            if proc.poll() is None:  # timed out or interrupted: never left running
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    stderr = err.decode(errors="replace")
    try:
        summary: dict[str, Any] = json.loads(out)
    except ValueError as exc:
        raise RuntimeError(
            f"{file.name}: exit {proc.returncode}, no summary: {stderr[-3000:]}"
        ) from exc
    bad = {
        node: f"{info['status']}: {info.get('error') or info.get('reason')}"
        for node, info in summary.get("nodes", {}).items()
        if info["status"] != "SUCCESS"
    }
    if proc.returncode != 0 or summary.get("status") != "SUCCESS" or bad:
        sample = dict(list(bad.items())[:3])
        raise RuntimeError(
            f"{file.name}: exit {proc.returncode}, {summary.get('status')}, {len(bad)} nodes "
            f"not SUCCESS, e.g. {sample}; errors {summary.get('errors')}; {stderr[-2000:]}"
        )
    return Executed(wall, cpu, proc.pid, summary, stderr)


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used (``/proc/stat``: all but idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Observed:
    """One ``execute`` and what the machine did meanwhile (CPU seconds)."""

    ran: Executed
    scheduler: float
    """The schedulers of the clusters given."""
    workers: float
    """All their workers."""
    others: float
    """Every other process of the machine: the machine's busy time minus ``execute``'s,
    the schedulers' and the workers' (the other users of the shared cores)."""


def observe(
    file: Path,
    env: Mapping[str, str],
    db: Path,
    timeout_s: float,
    clusters: Sequence[Cluster],
) -> Observed:
    """:func:`execute`, with the CPU time of ``clusters`` and of the rest of the machine."""
    for c in clusters:
        c.check_alive()
    busy, before = machine_busy_s(), [c.cpu() for c in clusters]
    ran = execute(file, env, db, timeout_s)
    after, busy = [c.cpu() for c in clusters], machine_busy_s() - busy
    scheduler = sum(a["scheduler"] - b["scheduler"] for a, b in zip(after, before, strict=True))
    workers = sum(a["workers"] - b["workers"] for a, b in zip(after, before, strict=True))
    return Observed(ran, scheduler, workers, max(0.0, busy - ran.cpu - scheduler - workers))


# -- the figures the cluster benchmarks share -------------------------------------------------


def ratio_figure(
    label: str, tops: Sequence[float], bottoms: Sequence[float], **options: Any
) -> Figure:
    """Each run's ``top / bottom`` (``x``); ``options`` as :class:`Figure`'s."""
    return Figure(label, [a / b for a, b in zip(tops, bottoms, strict=True)], "x", **options)


def cores_figure(label: str, runs: Sequence[Observed], cpu: Callable[[Observed], float]) -> Figure:
    """Cores used during each run: ``cpu(run)`` seconds over the run's wall time."""
    return Figure(label, [cpu(run) / run.ran.wall for run in runs], "cores")


def others_figures(during: str, runs: Mapping[str, Sequence[Observed]]) -> list[Figure]:
    """For each mode of ``runs``: the cores the machine's other processes used ``during``."""
    return [
        cores_figure(f"{mode}: CPU of the machine's other processes during {during}", seen, _others)
        for mode, seen in runs.items()
    ]


def _others(run: Observed) -> float:
    return run.others


def imported_modules(argv: list[str], env: Mapping[str, str], cwd: Path) -> list[str]:
    """Every module ``python -X importtime ARGV...`` imported (``argv`` after ``python``)."""
    done = import_times(argv, env, cwd)
    if not done.imports:
        raise RuntimeError(
            f"{argv}: exit {done.returncode}, no import times: {done.stderr[-2000:]}"
        )
    return done.modules


def dask_modules(names: list[str]) -> list[str]:
    """The modules of ``dask`` and ``distributed`` among ``names``."""
    return [n for n in names if n.split(".", 1)[0] in ("dask", "distributed")]


# -- the floor: attempts sent by a bare Dask client ---------------------------------------------


def bare_attempts(address: str, count: int, in_flight: int) -> float:
    """Seconds for ``count`` echo attempts through ``run_attempt`` on the workers, sent by a
    plain asynchronous ``Client`` (on uvloop, as the daemon) with ``in_flight`` at once:
    what Dask itself costs, without engine, store or daemon. Each reply is checked."""
    from wfe_daemon.runtime.eventloop import run

    return run(_bare_attempts(address, count, in_flight))


async def _bare_attempts(address: str, count: int, in_flight: int) -> float:
    import asyncio

    from distributed import Client

    from wfe_daemon.cluster.wire import AttemptReply, AttemptRequest
    from wfe_daemon.cluster.worker import run_attempt

    slots = asyncio.Semaphore(in_flight)
    prefix = f"bench-bare-{os.getpid()}-{time.monotonic_ns()}"

    async def one(client: Client, batch: str, i: int) -> None:
        key = f"{prefix}-{batch}-{i}"
        request = AttemptRequest(key, "echo", {"v": i}, 0, "bare", f"n{i}", 1, 60.0)
        async with slots:
            future = client.submit(run_attempt, request.to_json(), key=request.key, pure=False)
            reply = AttemptReply.from_json(await future)
        if reply.error is not None or reply.output_json != f'{{"v":{i}}}':
            raise RuntimeError(f"bare attempt {i}: {reply}")

    async with Client(address, asynchronous=True) as client:
        await asyncio.gather(*(one(client, "warm", i) for i in range(in_flight)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, "measured", i) for i in range(count)))
        return time.perf_counter() - t0
