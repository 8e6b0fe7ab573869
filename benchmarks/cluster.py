"""Rows 16 and 17: node attempts on a real Dask cluster, against the same work run locally.

Every figure comes from whole ``wfe-daemon execute FILE`` processes (as a user runs them,
each with a fresh database, logs at WARNING, the result summary checked: exit 0 and every
node ``SUCCESS``), against a cluster of real ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 started once per benchmark (:mod:`benchmarks._cluster`).

- ``remote`` (row 16): the cost of one remote attempt with 100 in flight. A fan-out of N
  independent ``echo`` nodes (``WFE_MAX_CONCURRENT_TASKS=100``) minus the same for 10
  nodes (which takes away start-up, the import of ``distributed`` and the connection),
  per node; once with ``remote_types = ["echo"]`` on two workers, once local.
- ``cpu_cluster`` (row 17): 200 ``python`` nodes of about 100 ms of pure-Python CPU each,
  the makespan locally (threads of one process: the GIL holds it to one core), on one
  worker and on two (``--nthreads 1`` each, separate processes).

``remote`` also checks that the daemon with ``executor = "local"`` imports no module of
``dask`` or ``distributed`` (``python -X importtime``), and fails loudly if it does.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks._cluster import (
    Cluster,
    Executed,
    bare_attempts,
    base_env,
    cluster,
    dask_modules,
    execute,
    imported_modules,
)
from benchmarks._suite import Context, Figure, Section
from benchmarks.daemon import _load_note, loadavg, ten_node_doc

IN_FLIGHT = 100
REMOTE_THREADS = 50  # per worker, two workers: room for all 100 attempts in flight
SMALL = 10
CPU_MODULE = "wfe_bench_cpu"


def _dask_env(c: Cluster, remote_types: str) -> dict[str, str]:
    """What turns the Dask executor on in the daemon, for ``remote_types``."""
    return {
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": c.address,
        "WFE_REMOTE_TYPES": remote_types,
    }


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def _echo_fanout(count: int) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "type": "echo", "params": {"v": i}} for i in range(count)]
    return {"name": f"echo fan-out {count}", "nodes": nodes}


# -- the import check ---------------------------------------------------------------------------


def check_local_imports(root: Path, env: Mapping[str, str], dask: Mapping[str, str]) -> str:
    """Fail unless ``validate`` and a local ``execute`` import no dask module, while the same
    ``execute`` with the Dask executor on does (the check can see one)."""
    file = _write(root / "ten.json", ten_node_doc())
    env = {**env, "WFE_DB_PATH": str(root / "imports.db")}
    seen: dict[str, list[str]] = {}
    for label, argv in (
        ("validate", ["-m", "wfe_daemon", "validate", str(file)]),
        ("execute", ["-m", "wfe_daemon", "execute", str(file)]),
    ):
        names = imported_modules(argv, env, root)
        seen[label] = names
        found = dask_modules(names)
        if found:
            raise RuntimeError(
                f"`python -X importtime -m wfe_daemon {label}` with executor = local imports "
                f"{len(found)} dask modules, e.g. {found[:5]}: the local daemon must not"
            )
    remote = imported_modules(["-m", "wfe_daemon", "execute", str(file)], {**env, **dask}, root)
    if "distributed" not in remote:
        raise RuntimeError("execute with executor = dask did not import distributed: no check")
    return (
        f"Import check (fails the benchmark if it does not hold): `python -X importtime -m "
        f"wfe_daemon validate FILE` ({len(seen['validate'])} modules) and `... execute FILE` "
        f'({len(seen["execute"])} modules) with `executor = "local"` import no module of '
        f"`dask` or `distributed`; the same `execute` with `WFE_EXECUTOR=dask` imports "
        f"{len(dask_modules(remote))} of them (the check sees them when they are there)."
    )


# -- row 16: the overhead of a remote attempt ---------------------------------------------------


def _overhead_round(
    files: dict[int, Path], envs: dict[str, dict[str, str]], c: Cluster, root: Path, n: int
) -> dict[str, dict[int, tuple[Executed, dict[str, float]]]]:
    """One run: each mode on the big and the small file, the order alternating by run."""
    modes = list(envs) if n % 2 == 0 else list(reversed(envs))
    done: dict[str, dict[int, tuple[Executed, dict[str, float]]]] = {m: {} for m in envs}
    for size in sorted(files, reverse=True):
        for mode in modes:
            c.check_alive()
            before = c.cpu()
            ran = execute(files[size], envs[mode], root / f"{mode}-{size}-{n}.db", 600)
            after = c.cpu()
            done[mode][size] = (ran, {k: after[k] - before[k] for k in after})
            if len(ran.summary["nodes"]) != size:
                raise RuntimeError(f"{mode}: {len(ran.summary['nodes'])} nodes of {size}")
    return done


def _per_node_ms(rounds: list[Any], mode: str, big: int, what: str) -> list[float]:
    """(big run - small run) / (big - small nodes), in ms, per run, of ``what``."""

    def value(size: int, r: Any) -> float:
        ran, cluster_cpu = r[mode][size]
        if what == "wall":
            return float(ran.wall)
        if what == "client":
            return float(ran.cpu)
        return float(cluster_cpu[what])

    return [(value(big, r) - value(SMALL, r)) / (big - SMALL) * 1000 for r in rounds]


def remote(ctx: Context) -> Section:
    """Row 16: per-node wall time of ``execute`` with 100 echo attempts in flight."""
    load = loadavg()
    big = ctx.size(2000, 60)
    root = ctx.tmp / "remote"
    env = base_env(root)
    env["WFE_MAX_CONCURRENT_TASKS"] = str(IN_FLIGHT)
    files = {
        size: _write(root / f"fanout-{size}.json", _echo_fanout(size)) for size in (big, SMALL)
    }
    section = Section(
        "remote",
        f"16. The cost of a remote attempt: {big:,} `echo` nodes with {IN_FLIGHT} in flight, "
        f"on a Dask cluster and locally",
        f"Wall time of whole `wfe-daemon execute FILE` processes (`python -m wfe_daemon`, a "
        f"fresh database each, `WFE_LOG_LEVEL=WARNING`, `WFE_MAX_CONCURRENT_TASKS="
        f"{IN_FLIGHT}`) on a fan-out of {big:,} independent `echo` nodes, minus the same for "
        f"{SMALL} nodes (which takes away start-up, the import of `distributed`, the "
        f"connection and the cluster check), divided by the {big - SMALL:,} nodes between "
        f"them. Remote: `WFE_EXECUTOR=dask`, `WFE_REMOTE_TYPES=echo`, against a real `dask "
        f"scheduler` (`allowed-failures: 0`) and two `dask worker --no-nanny --nthreads "
        f"{REMOTE_THREADS} --preload wfe_daemon.cluster.worker` processes on 127.0.0.1 "
        f"({REMOTE_THREADS} threads each: every attempt, a coroutine on the worker's loop, "
        f"holds a thread slot, so 2 x {REMOTE_THREADS} let all {IN_FLIGHT} run at once), "
        f"started once for the benchmark; local: the same commands with the default "
        f'`executor = "local"`. Each run executes the {big:,}-node file in both modes, '
        f"then the {SMALL}-node one, the mode that goes first alternating from run to run. "
        f"Every summary is checked: exit 0, `SUCCESS`, all {big:,} nodes `SUCCESS`. CPU "
        f"per node, the same difference of the CPU time of each process (the `execute` "
        f"process from `RUSAGE_CHILDREN`, the scheduler and the workers from "
        f"`/proc/<pid>/stat`), says where the remote time goes. The floor: the same "
        f"{big:,} attempts (`run_attempt` of `echo`, the daemon's JSON request) submitted "
        f"by a bare asynchronous `distributed.Client` on uvloop in the benchmark's process, "
        f"{IN_FLIGHT} at a time (a semaphore), each reply checked, after {IN_FLIGHT} "
        f"unmeasured ones: Dask's own cost, without engine, store or daemon; once per run, "
        f"after the `execute` commands.",
    )
    with cluster(root / "cluster", 2, REMOTE_THREADS, env) as c:
        envs = {"remote": {**env, **_dask_env(c, "echo")}, "local": env}
        import_note = check_local_imports(root, env, _dask_env(c, "echo"))
        ctx.progress("remote: warm-up (bytecode, first connection)")
        for mode in envs:
            execute(files[SMALL], envs[mode], root / f"warm-{mode}.db", 120)
        rounds, bare_ms = [], []
        for n in range(ctx.runs):
            ctx.progress(f"remote run {n + 1}/{ctx.runs}")
            rounds.append(_overhead_round(files, envs, c, root, n))
            bare_ms.append(bare_attempts(c.address, big, IN_FLIGHT) / big * 1000)
    remote_ms = _per_node_ms(rounds, "remote", big, "wall")
    local_ms = _per_node_ms(rounds, "local", big, "wall")
    section.add(Figure(f"remote: per attempt, {IN_FLIGHT} in flight", remote_ms, "ms", limit=5))
    section.add(Figure("local: per node, same workflow", local_ms, "ms"))
    section.add(
        Figure(
            "ratio remote / local",
            [a / b for a, b in zip(remote_ms, local_ms, strict=True)],
            "x",
        )
    )
    section.add(Figure("remote throughput", [1000 / ms for ms in remote_ms], "attempts/s"))
    section.add(Figure(f"bare Dask client: per attempt, {IN_FLIGHT} in flight", bare_ms, "ms"))
    section.add(
        Figure(
            "ratio remote / bare Dask client",
            [a / b for a, b in zip(remote_ms, bare_ms, strict=True)],
            "x",
        )
    )
    for what, label in (
        ("client", "the `execute` process"),
        ("scheduler", "the scheduler"),
        ("workers", "the two workers"),
    ):
        section.add(
            Figure(
                f"remote: CPU per attempt, {label}", _per_node_ms(rounds, "remote", big, what), "ms"
            )
        )
    section.add(
        Figure(
            "local: CPU per node, the `execute` process",
            _per_node_ms(rounds, "local", big, "client"),
            "ms",
        )
    )
    for mode in envs:
        section.add(
            Figure(
                f"{mode}: the whole {SMALL}-node `execute` (start-up, connect)",
                [r[mode][SMALL][0].wall * 1000 for r in rounds],
                "ms",
            )
        )
    section.notes.append(import_note)
    section.notes.append(_load_note(load))
    return section


# -- row 17: CPU-bound python nodes -------------------------------------------------------------

CPU_SOURCE = '''"""A pure-Python CPU-bound function for the cluster benchmark (written by it)."""

import os


def spin(loops):
    """Integer arithmetic for ``loops`` rounds; which process ran it, and a checksum."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) % 1000003
    return {"pid": os.getpid(), "x": x}
'''


def _calibrate(folder: Path, target_s: float) -> tuple[int, float]:
    """Loops of ``spin`` that take ``target_s`` here, and the median time of that many."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(CPU_MODULE, folder / f"{CPU_MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def timed(loops: int) -> float:
        t0 = time.perf_counter()
        module.spin(loops)
        return time.perf_counter() - t0

    probe = 200_000
    loops = round(probe * target_s / statistics.median(timed(probe) for _ in range(5)))
    return loops, statistics.median(timed(loops) for _ in range(5))


def _ran_in(ran: Executed) -> set[int]:
    """The pids the nodes' outputs name: the processes that ran them."""
    return {info["output"]["pid"] for info in ran.summary["nodes"].values()}


def _cpu_round(
    file: Path, envs: dict[str, dict[str, str]], clusters: dict[str, Cluster], root: Path, n: int
) -> dict[str, Executed]:
    """One run: each mode once, the order rotating by run; where each node ran, checked."""
    modes = list(envs)
    modes = modes[n % len(modes) :] + modes[: n % len(modes)]
    done = {}
    for mode in modes:
        for c in clusters.values():
            c.check_alive()
        ran = execute(file, envs[mode], root / f"{mode}-{n}.db", 600)
        expected = set(clusters[mode].workers.values()) if mode in clusters else {ran.pid}
        if _ran_in(ran) != expected:
            raise RuntimeError(f"{mode}: nodes ran in processes {_ran_in(ran)}, not {expected}")
        done[mode] = ran
    return done


def cpu_cluster(ctx: Context) -> Section:
    """Row 17: makespan of CPU-bound ``python`` nodes locally, on one and on two workers."""
    load = loadavg()
    count = ctx.size(200, 6)
    target_s = 0.1 if not ctx.quick else 0.02
    root = ctx.tmp / "cpu"
    modules = root / "pymod"
    modules.mkdir(parents=True)
    (modules / f"{CPU_MODULE}.py").write_text(CPU_SOURCE)
    loops, work_s = _calibrate(modules, target_s)
    nodes = [
        {
            "id": f"n{i}",
            "type": "python",
            "params": {"function": f"{CPU_MODULE}:spin", "kwargs": {"loops": loops}},
        }
        for i in range(count)
    ]
    file = _write(root / "cpu.json", {"name": f"cpu {count}", "nodes": nodes})
    env = base_env(root)
    env.update(WFE_ENABLE_PYTHON="1", PYTHONPATH=str(modules))
    section = Section(
        "cpu_cluster",
        f"17. {count} CPU-bound `python` nodes of {work_s * 1000:.0f} ms each: locally, on one "
        f"and on two Dask workers",
        f"One workflow of {count} independent `python` nodes, each calling `{CPU_MODULE}:spin` "
        f"(a pure-Python integer loop in a module the benchmark writes, on the `PYTHONPATH` "
        f"of the daemon and of the workers) with the same `loops`, calibrated once per "
        f"benchmark in the benchmark's own process to about {target_s * 1000:.0f} ms "
        f"({loops:,} loops, measured {work_s * 1000:.1f} ms, median of 5). The makespan is "
        f"the run's `duration` in the summary printed by a whole `wfe-daemon execute FILE` "
        f"(from the run's start to its end: no process start-up, no import; the Dask "
        f"connection is made before the run starts), defaults otherwise "
        f"(`max_concurrent_tasks` 16, `WFE_ENABLE_PYTHON=1`). Local: each call in a thread "
        f"of its own in the `execute` process, where the GIL keeps them to one core. Remote "
        f"(`WFE_EXECUTOR=dask`, `WFE_REMOTE_TYPES=python`): one cluster of a scheduler and "
        f"one `dask worker --no-nanny --nthreads 1`, another of a scheduler and two such "
        f"workers (separate processes, one core each), both started once for the benchmark. "
        f"Each run executes the three modes, the order rotating from run to run. Every "
        f"summary is checked (exit 0, every node `SUCCESS`), and so is where the nodes ran: "
        f"each returns its process id, which must be the `execute` process's locally, the "
        f"worker's on one worker, and both workers' on two. Ideal: {count} x "
        f"{work_s * 1000:.0f} ms = {count * work_s:.1f} s on one core, half on two.",
    )
    with contextlib.ExitStack() as stack:
        clusters = {
            f"{workers} worker{'s' if workers > 1 else ''}": stack.enter_context(
                cluster(root / f"cluster{workers}", workers, 1, env)
            )
            for workers in (1, 2)
        }
        envs = {"local": env} | {
            mode: {**env, **_dask_env(c, "python")} for mode, c in clusters.items()
        }
        ctx.progress("cpu_cluster: warm-up (bytecode, first connection)")
        for mode in envs:
            execute(file, envs[mode], root / f"warm-{mode}.db", 600)
        rounds = []
        for n in range(ctx.runs):
            ctx.progress(f"cpu_cluster run {n + 1}/{ctx.runs}")
            rounds.append(_cpu_round(file, envs, clusters, root, n))
    makespan = {mode: [float(r[mode].summary["duration"]) for r in rounds] for mode in envs}
    for mode in envs:
        section.add(Figure(f"makespan, {mode}", makespan[mode], "s"))
    for mode, limit in (("2 workers", 1.7), ("1 worker", None)):
        section.add(
            Figure(
                f"speed-up: local / {mode}",
                [a / b for a, b in zip(makespan["local"], makespan[mode], strict=True)],
                "x",
                limit=limit,
                lower_is_better=False,
            )
        )
    for mode in envs:
        section.add(
            Figure(
                f"whole `execute` process, {mode}",
                [r[mode].wall for r in rounds],
                "s",
            )
        )
    section.notes.append(_load_note(load))
    return section
