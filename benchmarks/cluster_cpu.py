"""Row 17: CPU-bound ``python`` nodes locally, on one Dask worker and on two.

200 ``python`` nodes, each about 100 ms of pure-Python CPU (a function in a small module
this benchmark writes and puts on the ``PYTHONPATH`` of the daemon and of the workers; its
loop calibrated once per benchmark, the same work for every node), run by whole ``wfe-daemon
execute FILE`` processes: locally (threads of one process: the GIL holds them to one core),
on one ``dask worker --nthreads 1`` and on two (separate processes, one core each). Each
node returns its process id, so where it ran is checked, not assumed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks._cluster import (
    Cluster,
    Executed,
    Observed,
    base_env,
    cluster,
    cores_figure,
    execute,
    observe,
    others_figures,
    ratio_figure,
)
from benchmarks._suite import Context, Figure, Section
from benchmarks.cluster import dask_env, write_doc
from benchmarks.daemon import _load_note, loadavg

MODULE = "wfe_bench_cpu"
SMALL = 10
SOURCE = '''"""A pure-Python CPU-bound function for the cluster benchmark (written by it)."""

import os


def spin(loops):
    """Integer arithmetic for ``loops`` rounds; which process ran it, and a checksum."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) % 1000003
    return {"pid": os.getpid(), "x": x}
'''


def calibrate(folder: Path, target_s: float) -> tuple[int, float]:
    """Loops of ``spin`` that take ``target_s`` here, and the median time of that many."""
    spec = importlib.util.spec_from_file_location(MODULE, folder / f"{MODULE}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def timed(loops: int) -> float:
        t0 = time.perf_counter()
        module.spin(loops)
        return time.perf_counter() - t0

    loops = 200_000
    for _ in range(2):  # a probe, then once more at about the right size
        loops = round(loops * target_s / statistics.median(timed(loops) for _ in range(5)))
    return loops, statistics.median(timed(loops) for _ in range(5))


def _workflow(count: int, loops: int) -> dict[str, Any]:
    params = {"function": f"{MODULE}:spin", "kwargs": {"loops": loops}}
    nodes = [{"id": f"n{i}", "type": "python", "params": params} for i in range(count)]
    return {"name": f"cpu {count} x {loops}", "nodes": nodes}


def _ran_in(ran: Executed) -> set[int]:
    """The pids the nodes' outputs name: the processes that ran them."""
    return {info["output"]["pid"] for info in ran.summary["nodes"].values()}


def _check_where(mode: str, ran: Executed, clusters: dict[str, Cluster], every: bool) -> None:
    """Locally, every node ran in the ``execute`` process; remotely, on the mode's workers
    (on every one of them when ``every``)."""
    expected = set(clusters[mode].workers.values()) if mode in clusters else {ran.pid}
    pids = _ran_in(ran)
    if not pids <= expected or (every and pids != expected):
        raise RuntimeError(f"{mode}: the nodes ran in processes {pids}, not {expected}")


def _round(
    files: dict[str, Path],
    envs: dict[str, dict[str, str]],
    clusters: dict[str, Cluster],
    root: Path,
    n: int,
) -> dict[str, dict[str, Observed]]:
    """One run: each mode on the work, then on the empty file; the order rotating by run."""
    modes = list(envs)
    modes = modes[n % len(modes) :] + modes[: n % len(modes)]
    done: dict[str, dict[str, Observed]] = {mode: {} for mode in modes}
    for kind, file in files.items():
        for mode in modes:
            db = root / f"{mode}-{kind}-{n}.db"
            seen = observe(file, envs[mode], db, 600, list(clusters.values()))
            _check_where(mode, seen.ran, clusters, every=kind == "work")
            done[mode][kind] = seen
    return done


def _describe(count: int, loops: int, work_s: float, target_s: float) -> str:
    ms = work_s * 1000
    return (
        f"One workflow of {count} independent `python` nodes, each calling `{MODULE}:spin` (a "
        f"pure-Python integer loop in a module the benchmark writes, on the `PYTHONPATH` of "
        f"the daemon and of the workers) with the same `loops`, calibrated once per benchmark "
        f"in the benchmark's own process to about {target_s * 1000:.0f} ms (a probe, then a "
        f"second scaling: {loops:,} loops, "
        f"measured {ms:.1f} ms, median of 5), run by whole `wfe-daemon execute FILE` "
        f"processes (a fresh database each, `WFE_LOG_LEVEL=WARNING`, `WFE_ENABLE_PYTHON=1`, "
        f"defaults otherwise: `max_concurrent_tasks` 16). Local: each call in a thread of its "
        f"own in the `execute` process, where the GIL keeps them to one core. Remote "
        f"(`WFE_EXECUTOR=dask`, `WFE_REMOTE_TYPES=python`): a cluster of a scheduler and one "
        f"`dask worker --no-nanny --nthreads 1 --preload wfe_daemon.cluster.worker`, and "
        f"another of a scheduler and two such workers (separate processes), both on "
        f"127.0.0.1 and started once for the benchmark. The makespan is the run's `duration` "
        f"in the printed summary: from the run's start to its end, without the process's "
        f"start-up and imports, but with whatever of the Dask connection (made in the "
        f"background from start-up) was not done when the run started. The net figures are "
        f"instead the whole process's wall time minus that of the same workflow of "
        f"{SMALL} nodes with `loops` 0 in the same mode (start-up, imports, connection and "
        f"the module's import taken away). Each run executes the three modes on the work, "
        f"then on the {SMALL} empty nodes, the order of the modes rotating from run to run. "
        f"Every summary is checked (exit 0, every node `SUCCESS`), and so is where the nodes "
        f"ran: each returns its process id, which must be the `execute` process's locally, "
        f"the worker's on one worker, and each of the two workers' on two. Cores used: CPU "
        f"seconds over the `execute` process's wall time, of the workers (`/proc/<pid>/"
        f"stat`), of the `execute` process (`RUSAGE_CHILDREN`), and of every other process "
        f"of the machine (its busy time in `/proc/stat` minus ours: the other users of the "
        f"two cores). Ideal: {count} x "
        f"{ms:.0f} ms = {count * work_s:.1f} s on one core, half of it on two."
    )


def cpu_cluster(ctx: Context) -> Section:
    """Row 17: makespan of CPU-bound ``python`` nodes locally, on one and on two workers."""
    load = loadavg()
    count = ctx.size(200, 6)
    target_s = 0.1 if not ctx.quick else 0.02
    root = ctx.tmp / "cpu"
    modules = root / "pymod"
    modules.mkdir(parents=True)
    (modules / f"{MODULE}.py").write_text(SOURCE)
    loops, work_s = calibrate(modules, target_s)
    files = {
        "work": write_doc(root / "work.json", _workflow(count, loops)),
        "empty": write_doc(root / "empty.json", _workflow(SMALL, 0)),
    }
    env = base_env(root)
    env.update(WFE_ENABLE_PYTHON="1", PYTHONPATH=str(modules))
    section = Section(
        "cpu_cluster",
        f"17. {count} CPU-bound `python` nodes of about {target_s * 1000:.0f} ms each: "
        f"locally, on one and on two Dask workers",
        _describe(count, loops, work_s, target_s),
    )
    with contextlib.ExitStack() as stack:
        clusters = {
            f"{workers} worker{'s' if workers > 1 else ''}": stack.enter_context(
                cluster(root / f"cluster{workers}", workers, 1, env)
            )
            for workers in (1, 2)
        }
        envs = {"local": env} | {
            mode: {**env, **dask_env(c, "python")} for mode, c in clusters.items()
        }
        if not ctx.quick:  # smoke mode: its one run starts the same commands anyway
            ctx.progress("cpu_cluster: warm-up (bytecode, first connection)")
            for mode in envs:
                execute(files["empty"], envs[mode], root / f"warm-{mode}.db", 120)
        rounds = []
        for n in range(ctx.runs):
            ctx.progress(f"cpu_cluster run {n + 1}/{ctx.runs}")
            rounds.append(_round(files, envs, clusters, root, n))
    _report(section, rounds, list(envs))
    section.notes.append(_load_note(load))
    return section


def _report(
    section: Section, rounds: list[dict[str, dict[str, Observed]]], modes: list[str]
) -> None:
    work = {m: [r[m]["work"] for r in rounds] for m in modes}
    makespan = {m: [float(o.ran.summary["duration"]) for o in work[m]] for m in modes}
    net = {m: [r[m]["work"].ran.wall - r[m]["empty"].ran.wall for r in rounds] for m in modes}
    for mode in modes:
        section.add(Figure(f"makespan, {mode}", makespan[mode], "s"))
    for mode, limit in (("2 workers", 1.7), ("1 worker", None)):
        section.add(
            ratio_figure(
                f"speed-up: local / {mode}",
                makespan["local"],
                makespan[mode],
                limit=limit,
                lower_is_better=False,
            )
        )
    for mode in modes:
        section.add(Figure(f"net (process minus {SMALL} empty nodes), {mode}", net[mode], "s"))
    section.add(ratio_figure("net speed-up: local / 2 workers", net["local"], net["2 workers"]))
    for mode in modes:
        if mode == "local":
            label, cpu = f"{mode}: CPU of the `execute` process during the run", _client
        else:
            label, cpu = f"{mode}: CPU of the workers during the run", _workers
        section.add(cores_figure(label, work[mode], cpu))
    for mode in modes[1:]:
        section.add(
            cores_figure(
                f"{mode}: CPU of the `execute` process and the schedulers during the run",
                work[mode],
                _client_and_scheduler,
            )
        )
    for figure in others_figures("the run", work):
        section.add(figure)


def _client(run: Observed) -> float:
    return run.ran.cpu


def _workers(run: Observed) -> float:
    return run.workers


def _client_and_scheduler(run: Observed) -> float:
    return run.ran.cpu + run.scheduler
