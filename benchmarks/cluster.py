"""Row 16: the cost of a node attempt on a real Dask cluster, against the same node local.

Every figure comes from whole ``wfe-daemon execute FILE`` processes (as a user runs them,
each with a fresh database, logs at WARNING, the result summary checked: exit 0 and every
node ``SUCCESS``), against a cluster of real ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 started once per benchmark (:mod:`benchmarks._cluster`): a
fan-out of N independent ``echo`` nodes (``WFE_MAX_CONCURRENT_TASKS=100``) minus the same
for 10 nodes (which takes away start-up, the import of ``distributed`` and the
connection), per node; once with ``remote_types = ["echo"]`` on two workers, once local.
Row 17 (CPU-bound ``python`` nodes) is :mod:`benchmarks.cluster_cpu`.

It also checks that the daemon with ``executor = "local"`` imports no module of
``dask`` or ``distributed`` (``python -X importtime``), and fails loudly if it does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks._cluster import (
    Cluster,
    Executed,
    Observed,
    bare_attempts,
    base_env,
    cluster,
    dask_modules,
    execute,
    imported_modules,
    observe,
    others_figures,
    ratio_figure,
)
from benchmarks._suite import Context, Figure, Section
from benchmarks.daemon import _load_note, loadavg, ten_node_doc

IN_FLIGHT = 100
REMOTE_THREADS = 50  # per worker, two workers: room for all 100 attempts in flight
SMALL = 10


def dask_env(c: Cluster, remote_types: str) -> dict[str, str]:
    """What turns the Dask executor on in the daemon, for ``remote_types``."""
    return {
        "WFE_EXECUTOR": "dask",
        "WFE_DASK_SCHEDULER": c.address,
        "WFE_REMOTE_TYPES": remote_types,
    }


def check_remote(ran: Executed, c: Cluster, count: int) -> set[str]:
    """Fail unless the INFO log of ``ran`` has ``count`` successful ``cluster.attempt``
    events, each on a worker of ``c``; the workers used."""
    used = []
    for line in ran.stderr.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "cluster.attempt" and event.get("outcome") == "success":
                used.append(event.get("worker"))
    if len(used) != count or not set(used) <= set(c.workers):
        raise RuntimeError(
            f"{count} nodes, {len(used)} successful attempts on the cluster, on {set(used)} "
            f"(its workers: {sorted(c.workers)}): {ran.stderr[-2000:]}"
        )
    return set(used)


def write_doc(path: Path, doc: dict[str, Any]) -> Path:
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
    file = write_doc(root / "ten.json", ten_node_doc())
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
) -> dict[str, dict[int, Observed]]:
    """One run: each mode on the big and the small file, the order alternating by run."""
    modes = list(envs) if n % 2 == 0 else list(reversed(envs))
    done: dict[str, dict[int, Observed]] = {m: {} for m in envs}
    for size in sorted(files, reverse=True):
        for mode in modes:
            seen = observe(files[size], envs[mode], root / f"{mode}-{size}-{n}.db", 600, [c])
            if len(seen.ran.summary["nodes"]) != size:
                raise RuntimeError(f"{mode}: {len(seen.ran.summary['nodes'])} nodes of {size}")
            done[mode][size] = seen
    return done


def _per_node_ms(
    rounds: list[dict[str, dict[int, Observed]]], mode: str, big: int, what: str
) -> list[float]:
    """(big run - small run) / (big - small nodes), in ms, per run, of ``what``: ``wall``,
    ``duration`` (the run's, in its summary), ``client`` (the CPU of ``execute``),
    ``scheduler`` or ``workers`` (their CPU)."""

    def value(seen: Observed) -> float:
        if what == "wall":
            return seen.ran.wall
        if what == "duration":
            return float(seen.ran.summary["duration"])
        if what == "client":
            return seen.ran.cpu
        return float(getattr(seen, what))

    return [(value(r[mode][big]) - value(r[mode][SMALL])) / (big - SMALL) * 1000 for r in rounds]


def remote(ctx: Context) -> Section:
    """Row 16: per-node wall time of ``execute`` with 100 echo attempts in flight."""
    load = loadavg()
    big = ctx.size(2000, 60)
    root = ctx.tmp / "remote"
    env = base_env(root)
    env["WFE_MAX_CONCURRENT_TASKS"] = str(IN_FLIGHT)
    files = {
        size: write_doc(root / f"fanout-{size}.json", _echo_fanout(size)) for size in (big, SMALL)
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
        f'`executor = "local"`. The same difference of the runs\' `duration` in the '
        f"summaries (from each run's start to its end) leaves out the noise of process "
        f"start-up, which is larger than the whole local work: the ratio is taken from "
        f"those. Each run executes the {big:,}-node file in both modes, "
        f"then the {SMALL}-node one, the mode that goes first alternating from run to run. "
        f"Every summary is checked: exit 0, `SUCCESS`, all {big:,} nodes `SUCCESS`. CPU "
        f"per node, the same difference of the CPU time of each process (the `execute` "
        f"process from `RUSAGE_CHILDREN`, the scheduler and the workers from "
        f"`/proc/<pid>/stat`), says where the remote time goes; the machine's busy time in "
        f"`/proc/stat` minus all of those is the other users' share of the two cores. "
        f"The floor: the same "
        f"{big:,} attempts (`run_attempt` of `echo`, the daemon's JSON request) submitted "
        f"by a bare asynchronous `distributed.Client` on uvloop in the benchmark's process, "
        f"{IN_FLIGHT} at a time (a semaphore), each reply checked, after {IN_FLIGHT} "
        f"unmeasured ones: Dask's own cost, without engine, store or daemon; once per run, "
        f"after the `execute` commands.",
    )
    with cluster(root / "cluster", 2, REMOTE_THREADS, env) as c:
        envs = {"remote": {**env, **dask_env(c, "echo")}, "local": env}
        import_note = check_local_imports(root, env, dask_env(c, "echo"))
        ctx.progress("remote: warm-up (bytecode, first connection), logs at INFO")
        if not ctx.quick:  # smoke mode: its one run starts the same command anyway
            execute(files[SMALL], envs["local"], root / "warm-local.db", 120)
        warm = {**envs["remote"], "WFE_LOG_LEVEL": "INFO"}
        used = check_remote(execute(files[big], warm, root / "warm-remote.db", 600), c, big)
        rounds, bare_ms = [], []
        for n in range(ctx.runs):
            ctx.progress(f"remote run {n + 1}/{ctx.runs}")
            rounds.append(_overhead_round(files, envs, c, root, n))
            bare_ms.append(bare_attempts(c.address, big, IN_FLIGHT) / big * 1000)
    remote_ms = _per_node_ms(rounds, "remote", big, "wall")
    local_ms = _per_node_ms(rounds, "local", big, "wall")
    section.add(Figure(f"remote: per attempt, {IN_FLIGHT} in flight", remote_ms, "ms", limit=5))
    section.add(Figure("local: per node, same workflow", local_ms, "ms"))
    in_run = {mode: _per_node_ms(rounds, mode, big, "duration") for mode in envs}
    for mode in envs:
        section.add(Figure(f"{mode}: per node, from the runs' durations", in_run[mode], "ms"))
    section.add(
        ratio_figure(
            "ratio remote / local, from the runs' durations", in_run["remote"], in_run["local"]
        )
    )
    section.add(Figure("remote throughput", [1000 / ms for ms in remote_ms], "attempts/s"))
    section.add(Figure(f"bare Dask client: per attempt, {IN_FLIGHT} in flight", bare_ms, "ms"))
    section.add(ratio_figure("ratio remote / bare Dask client", remote_ms, bare_ms))
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
                [r[mode][SMALL].ran.wall * 1000 for r in rounds],
                "ms",
            )
        )
    big_runs = {mode: [r[mode][big] for r in rounds] for mode in envs}
    for figure in others_figures(f"the {big:,}-node run", big_runs):
        section.add(figure)
    section.notes.append(
        f"Where the attempts ran: an unmeasured warm-up of the {big:,}-node file with "
        f"`WFE_LOG_LEVEL=INFO` logged {big:,} successful `cluster.attempt` events "
        f"(`executor: dask`), on {len(used)} of the 2 workers."
    )
    section.notes.append(import_note)
    section.notes.append(_load_note(load))
    return section
