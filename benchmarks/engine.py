"""Engine benchmarks (RESULTS.md rows 1, 2, 3 and 5b).

- ``fanout``: 10,000 ``echo`` nodes, one root and 9,999 children that all depend on it,
  through :class:`~wfe_daemon.runtime.engine.Engine` with a real SQLite file, logs at INFO (and
  again at WARNING) written to ``os.devnull``; against a bare-asyncio scheduler of the same
  awaits (``asyncio.TaskGroup`` + ``asyncio.Semaphore(16)``). ``parse_workflow`` of the same
  file is measured on its own and kept out of the engine figure. Everything runs on the
  daemon's event loop (uvloop, :mod:`wfe_daemon.runtime.eventloop`); the engine also runs once more
  per round on the standard library's loop, the figure before uvloop.
- ``chain``: 10,000 ``echo`` nodes, each depending on the previous one and referencing its
  output (``{"v": "{{ n41.v }}"}``); against the same bare scheduler and a plain loop.
- ``sequential``: the design document's v1.0 algorithm (``architecture.md``, "Resolución de
  Dependencias"), implemented as written in :func:`design_sequential`, on the fan-out and
  on chains of 1k, 5k and 10k nodes.
- ``memory``: peak RSS of a fresh process that reads, parses and runs one workflow of
  100,000 ``echo`` nodes (fan-out) through the engine with persistence.

``python -m benchmarks.engine memory-child FILE DB`` is the child process of ``memory``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section, per_node_us, proc_status_kb, ratios
from wfe_daemon.runtime.eventloop import run as run_on_loop

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16  # the default max_concurrent_tasks, used by the baseline too


# -- workflow documents ---------------------------------------------------------------------


def fanout_doc(n: int, task: str = "echo", params: Callable[[int], Any] | None = None) -> dict:
    """One root ``n0`` and ``n - 1`` children that all depend on it (``n`` nodes in all)."""
    make = params or (lambda i: {"v": i})
    nodes = [{"id": "n0", "type": task, "params": make(0)}]
    nodes += [
        {"id": f"n{i}", "type": task, "depends_on": ["n0"], "params": make(i)} for i in range(1, n)
    ]
    return {"name": f"fan-out {n}", "nodes": nodes}


def chain_doc(n: int, *, reverse: bool = False) -> dict:
    """``n0 -> n1 -> ...``, each node's ``v`` a reference to its parent's ``v``.

    ``reverse`` lists the nodes last first in the file (still a valid workflow: the
    contract does not ask files to be in dependency order).
    """
    nodes = [{"id": "n0", "type": "echo", "params": {"v": 0}}]
    nodes += [
        {
            "id": f"n{i}",
            "type": "echo",
            "depends_on": [f"n{i - 1}"],
            "params": {"v": f"{{{{ n{i - 1}.v }}}}"},
        }
        for i in range(1, n)
    ]
    if reverse:
        nodes.reverse()
    return {"name": f"chain {n}" + (" reversed" if reverse else ""), "nodes": nodes}


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# -- the engine, as the daemon runs it --------------------------------------------------------

_devnull = None


def _log_to_devnull(level: str) -> None:
    global _devnull
    from wfe_daemon.logs import configure_logging

    if _devnull is None:
        _devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - process-long
    configure_logging(level, _devnull)


def _registry() -> Any:
    from wfe_daemon.runtime.registry import TaskRegistry
    from wfe_daemon.tasks import BUILTINS

    return TaskRegistry.load(BUILTINS)


def parse(data: bytes, registry: Any) -> tuple[Any, Any]:
    """What intake does with a file's bytes: strict JSON, then validation."""
    from wfe_daemon.core.model import load_json, parse_workflow

    doc = load_json(data)
    return doc, parse_workflow(doc, registry)


async def _engine_run(workflow: Any, doc: Any, registry: Any, db: Path) -> float:
    """Seconds of ``Engine.run`` (create the run, run every node, durable final state)."""
    from wfe_daemon.config import Settings
    from wfe_daemon.core.model import public_definition
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.store.database import Store

    settings = Settings(
        db_path=db,
        data_dir=db.parent / "data",
        inbox=db.parent / "inbox",
        outbox=db.parent / "outbox",
        max_concurrent_tasks=CONCURRENCY,
    )
    async with Store.open(db) as store:
        engine = Engine(registry, store, settings)  # after configure_logging: wrappers bind
        definition = public_definition(encode(doc).decode(), doc)  # as submit() does, before
        gc.collect()
        started = time.perf_counter()
        summary = await engine.run(workflow, source="bench.json", definition=definition)
        elapsed = time.perf_counter() - started
    if summary["status"] != "SUCCESS":
        raise RuntimeError(f"engine run ended {summary['status']}")
    return elapsed


def engine_seconds(
    workflow: Any, doc: Any, registry: Any, db: Path, level: str, *, stdlib_loop: bool = False
) -> float:
    """One engine run on a fresh database file, logs at ``level`` to ``os.devnull``.

    It runs on the daemon's event loop (uvloop), or with ``stdlib_loop`` on the standard
    library's (the engine before uvloop).
    """
    _log_to_devnull(level)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    try:
        coro = _engine_run(workflow, doc, registry, db)
        return asyncio.run(coro) if stdlib_loop else run_on_loop(coro)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


# -- bare-asyncio baselines ----------------------------------------------------------------


def _timed(coro: Coroutine[Any, Any, None]) -> float:
    async def run() -> float:
        gc.collect()
        started = time.perf_counter()
        await coro
        return time.perf_counter() - started

    return run_on_loop(run())


def _context(node_id: str) -> Any:
    from wfe_daemon.config import Settings
    from wfe_daemon.runtime.task import Services, TaskContext

    return TaskContext(1, "bench", node_id, 1, Settings(), Services())


async def bare_scheduler(workflow: Any, registry: Any) -> None:
    """The smallest correct DAG scheduler: the same awaits, no engine, store or logs.

    One task per node once its parents are done, in an ``asyncio.TaskGroup``, each
    ``await task.execute(params, ctx)`` inside an ``asyncio.Semaphore(16)``; references
    resolved with :func:`wfe_daemon.core.refs.resolve` where the node has any.
    """
    from wfe_daemon.config import Settings
    from wfe_daemon.core.refs import find_refs, resolve
    from wfe_daemon.runtime.task import Services, TaskContext

    settings = Settings()
    slots = asyncio.Semaphore(CONCURRENCY)
    waiting = {node.id: len(node.depends_on) for node in workflow.nodes}
    children: dict[str, list[Any]] = {node.id: [] for node in workflow.nodes}
    for node in workflow.nodes:
        for dep in node.depends_on:
            children[dep].append(node)
    has_refs = {node.id: bool(find_refs(node.params)) for node in workflow.nodes}
    outputs: dict[str, Any] = {}

    async with asyncio.TaskGroup() as group:

        async def run(node: Any) -> None:
            async with slots:
                params = resolve(node.params, outputs) if has_refs[node.id] else node.params
                ctx = TaskContext(1, "bench", node.id, 1, settings, Services())
                outputs[node.id] = await registry.get(node.type).execute(params, ctx)
            for child in children[node.id]:
                waiting[child.id] -= 1
                if waiting[child.id] == 0:
                    group.create_task(run(child))

        for node in workflow.nodes:
            if not node.depends_on:
                group.create_task(run(node))
    if len(outputs) != len(workflow.nodes):
        raise RuntimeError("bare scheduler did not run every node")


async def bare_loop(workflow: Any, registry: Any) -> None:
    """A chain awaited in sequence: ``for node: await task.execute(resolved, ctx)``."""
    from wfe_daemon.config import Settings
    from wfe_daemon.core.refs import resolve
    from wfe_daemon.runtime.task import Services, TaskContext

    settings = Settings()
    outputs: dict[str, Any] = {}
    for node in workflow.nodes:  # file order is dependency order in chain_doc
        ctx = TaskContext(1, "bench", node.id, 1, settings, Services())
        params = resolve(node.params, outputs)
        outputs[node.id] = await registry.get(node.type).execute(params, ctx)


# -- the design document's algorithm ----------------------------------------------------------


async def design_sequential(workflow: Any, registry: Any, *, restart: bool = False) -> None:
    """``architecture.md`` §3 "Resolución de Dependencias", as written::

        pending = {node.id: node for node in workflow.nodes}
        executed = set()
        while pending:
            for node_id, node in list(pending.items()):
                if all(dep in executed for dep in node.depends_on):
                    execute_node(node)
                    executed.add(node_id)
                    del pending[node_id]

    ``execute_node`` resolves the node's references and awaits the same task the engine
    runs; one node at a time (v1.0 is sequential), no persistence, no logs.
    ``restart=True`` is the literal reading ("scan the pending nodes until one is ready, run
    it, repeat"): the scan starts over after each node.
    """
    from wfe_daemon.config import Settings
    from wfe_daemon.core.refs import resolve
    from wfe_daemon.runtime.task import Services, TaskContext

    settings = Settings()
    outputs: dict[str, Any] = {}

    async def execute_node(node: Any) -> None:
        ctx = TaskContext(1, "bench", node.id, 1, settings, Services())
        params = resolve(node.params, outputs)
        outputs[node.id] = await registry.get(node.type).execute(params, ctx)

    pending = {node.id: node for node in workflow.nodes}
    executed: set[str] = set()
    while pending:
        for node_id, node in list(pending.items()):
            if all(dep in executed for dep in node.depends_on):
                await execute_node(node)
                executed.add(node_id)
                del pending[node_id]
                if restart:
                    break


# -- benchmarks 1 and 2 -----------------------------------------------------------------------


def _engine_vs_baselines(
    ctx: Context,
    section: Section,
    doc: dict,
    n: int,
    limit: float,
    baselines: Sequence[tuple[str, Callable[[Any, Any], Coroutine[Any, Any, None]]]],
) -> None:
    registry = _registry()
    data = encode(doc)
    parse_s: list[float] = []
    info: list[float] = []
    warning: list[float] = []
    stdlib: list[float] = []
    bare: dict[str, list[float]] = {label: [] for label, _ in baselines}
    workflow = doc_parsed = None
    for run in range(ctx.runs):
        ctx.progress(f"{section.name}: run {run + 1}/{ctx.runs}")
        gc.collect()
        started = time.perf_counter()
        doc_parsed, workflow = parse(data, registry)
        parse_s.append(time.perf_counter() - started)
        # Interleaved, so a drift of the machine touches every figure alike.
        info.append(engine_seconds(workflow, doc_parsed, registry, ctx.tmp / "bench.db", "INFO"))
        warning.append(
            engine_seconds(workflow, doc_parsed, registry, ctx.tmp / "bench.db", "WARNING")
        )
        stdlib.append(
            engine_seconds(
                workflow, doc_parsed, registry, ctx.tmp / "bench.db", "INFO", stdlib_loop=True
            )
        )
        for label, fn in baselines:
            bare[label].append(_timed(fn(workflow, registry)))
    section.add(
        Figure("engine + SQLite, logs INFO to /dev/null", per_node_us(info, n), "µs/node", limit)
    )
    section.add(Figure("engine + SQLite, logs WARNING", per_node_us(warning, n), "µs/node", limit))
    section.add(
        Figure(
            "before uvloop: engine + SQLite, logs INFO, on the standard library's event loop",
            per_node_us(stdlib, n),
            "µs/node",
        )
    )
    section.add(Figure("ratio uvloop / standard loop (engine, INFO)", ratios(info, stdlib), "x"))
    for label, samples in bare.items():
        section.add(Figure(label, per_node_us(samples, n), "µs/node"))
    first = baselines[0][0]
    section.add(Figure(f"ratio engine (INFO) / {first}", ratios(info, bare[first]), "x"))
    section.add(Figure(f"ratio engine (WARNING) / {first}", ratios(warning, bare[first]), "x"))
    for label, _ in baselines[1:]:
        section.add(Figure(f"ratio engine (INFO) / {label}", ratios(info, bare[label]), "x"))
    section.add(
        Figure(
            "parse: load_json + parse_workflow of the file (not in the engine figures)",
            per_node_us(parse_s, n),
            "µs/node",
        )
    )
    section.notes.append(
        f"{n:,} nodes, file of {len(data) / 1e6:.2f} MB; max_concurrent_tasks = {CONCURRENCY};"
        " a fresh SQLite file (WAL) per run; the engine figure is `Engine.run` from call to"
        " return (creating the run and its node rows, every node, the summary, the fsynced"
        " final state), with `definition` = the parsed document as the daemon passes it."
    )


def fanout(ctx: Context) -> Section:
    """Row 1: 10,000 echo nodes as a fan-out."""
    n = ctx.size(10_000, 200)
    section = Section(
        "fanout",
        f"1. Fan-out of {n:,} `echo` nodes through the engine",
        'One root `n0` and every other node depending on it (`depends_on: ["n0"]`, params'
        ' `{"v": i}`): the fan-out shape, where the scheduler keeps 9,999 ready nodes behind'
        " 16 slots. Baseline: `bare_scheduler` in `benchmarks/engine.py`, the same"
        " `await EchoTask().execute(params, ctx)` per node through `asyncio.TaskGroup` +"
        " `asyncio.Semaphore(16)`, without engine, store or logs.",
    )
    _engine_vs_baselines(
        ctx,
        section,
        fanout_doc(n),
        n,
        50.0,
        [("bare asyncio (TaskGroup + Semaphore(16))", bare_scheduler)],
    )
    return section


def chain(ctx: Context) -> Section:
    """Row 2: a 10,000-node chain with a reference on every edge."""
    n = ctx.size(10_000, 200)
    section = Section(
        "chain",
        f"2. Chain of {n:,} `echo` nodes through the engine",
        '`n0 -> n1 -> ...`, each node\'s params `{"v": "{{ n<i-1>.v }}"}` (a reference to'
        " its parent's output, resolved at node start). Baselines: the same bare scheduler as"
        " in 1 (one task per node when its parent ends), and a plain loop awaiting the chain"
        " in sequence (`bare_loop`: no task per node at all, the floor of any scheduler).",
    )
    _engine_vs_baselines(
        ctx,
        section,
        chain_doc(n),
        n,
        100.0,
        [
            ("bare asyncio (TaskGroup + Semaphore(16))", bare_scheduler),
            ("bare loop (awaited in sequence)", bare_loop),
        ],
    )
    return section


# -- benchmark 3 ------------------------------------------------------------------------------


def sequential(ctx: Context) -> Section:
    """Row 3: the engine against the design document's sequential algorithm."""
    registry = _registry()
    sizes = [ctx.size(1_000, 50), ctx.size(5_000, 100), ctx.size(10_000, 200)]
    fan_n = ctx.size(10_000, 200)
    sleep_n, sleep_s = ctx.size(200, 20), 0.01
    section = Section(
        "sequential",
        "3. The engine against the design document's sequential algorithm",
        '`design_sequential` in `benchmarks/engine.py` is `architecture.md` §3 "Resolución de'
        ' Dependencias" as written: `while pending: for node_id, node in'
        " list(pending.items()): if all(dep in executed ...): execute_node(node); ...`, each"
        " node awaited in turn (v1.0 is sequential), references resolved, **no persistence and"
        " no logs** (the engine figures include both: SQLite and INFO logs to /dev/null)."
        " Speed-up = design time / engine time. The document's loop does not restart its scan"
        " after running a node, so on a file listed in dependency order one pass runs a chain"
        " and it stays linear; its quadratic cost shows when the file lists nodes in another"
        " order (here: the chain reversed, last node first, a valid workflow under the"
        ' contract), and in the literal reading "scan until one is ready, run it, repeat"'
        " (`restart=True`), which copies `list(pending.items())` once per node.",
    )

    def measure(doc: dict, variants: dict[str, Callable[..., Any]]) -> dict[str, list[float]]:
        data = encode(doc)
        parsed, workflow = parse(data, registry)
        samples: dict[str, list[float]] = {label: [] for label in variants}
        samples["engine"] = []
        for _ in range(ctx.runs):
            samples["engine"].append(
                engine_seconds(workflow, parsed, registry, ctx.tmp / "seq.db", "INFO")
            )
            for label, fn in variants.items():
                samples[label].append(_timed(fn(workflow, registry)))
        return samples

    def report(title: str, n: int, samples: dict[str, list[float]]) -> None:
        engine = samples.pop("engine")
        section.add(Figure(f"{title}: engine", per_node_us(engine, n), "µs/node"))
        for label, values in samples.items():
            section.add(Figure(f"{title}: {label}", per_node_us(values, n), "µs/node"))
            section.add(
                Figure(f"{title}: speed-up of the engine over {label}", ratios(values, engine), "x")
            )

    doc_order = lambda wf, reg: design_sequential(wf, reg)  # noqa: E731
    restart = lambda wf, reg: design_sequential(wf, reg, restart=True)  # noqa: E731

    ctx.progress(f"sequential: fan-out {fan_n}")
    report(f"fan-out {fan_n:,}", fan_n, measure(fanout_doc(fan_n), {"design": doc_order}))
    for n in sizes:
        ctx.progress(f"sequential: chain {n} in file order")
        report(
            f"chain {n:,}, file order",
            n,
            measure(chain_doc(n), {"design": doc_order, "design, scan restarted": restart}),
        )
    for n in sizes:
        ctx.progress(f"sequential: chain {n} reversed")
        report(
            f"chain {n:,}, reversed file",
            n,
            measure(chain_doc(n, reverse=True), {"design": doc_order}),
        )
    ctx.progress(f"sequential: fan-out of {sleep_n} sleep nodes")
    sleeps = fanout_doc(sleep_n, "sleep", lambda i: {"seconds": sleep_s})
    samples = measure(sleeps, {"design": doc_order})
    engine = samples["engine"]
    section.add(
        Figure(f"I/O-bound fan-out, {sleep_n} `sleep` {sleep_s}s nodes: engine", engine, "s")
    )
    section.add(
        Figure(f"I/O-bound fan-out, {sleep_n} `sleep` nodes: design", samples["design"], "s")
    )
    section.add(
        Figure(
            "I/O-bound fan-out: speed-up of the engine over design",
            ratios(samples["design"], engine),
            "x",
        )
    )
    section.notes.append(
        "Growth on chains: compare the µs/node of each design row across 1k, 5k and 10k; a"
        " constant µs/node is linear, µs/node proportional to n is quadratic. The engine's"
        " µs/node does not depend on the file's order."
    )
    return section


# -- benchmark 5b -----------------------------------------------------------------------------


def memory_child(path: str, db: str) -> None:
    """Read, parse and run one workflow file; print peak RSS and phases as JSON."""
    phases = {"start": proc_status_kb("VmRSS")}
    from wfe_daemon.config import Settings
    from wfe_daemon.core.model import public_definition
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.store.database import Store

    registry = _registry()
    _log_to_devnull("INFO")
    phases["imported"] = proc_status_kb("VmRSS")
    data = Path(path).read_bytes()
    doc, workflow = parse(data, registry)
    phases["parsed"] = proc_status_kb("VmRSS")
    phases["parsed_peak"] = proc_status_kb("VmHWM")
    db_path = Path(db)
    settings = Settings(db_path=db_path, data_dir=db_path.parent / "data")
    definition = public_definition(data.decode("utf-8-sig"), doc)
    del doc, data  # as submit() does: the run keeps only the typed workflow

    async def run() -> tuple[str, float]:
        async with Store.open(db_path) as store:
            engine = Engine(registry, store, settings)
            started = time.perf_counter()
            summary = await engine.run(workflow, source=Path(path).name, definition=definition)
            return summary["status"], time.perf_counter() - started

    status, seconds = run_on_loop(run())
    phases["after_run"] = proc_status_kb("VmRSS")
    peak_kb = proc_status_kb("VmHWM")
    print(
        json.dumps(
            {
                "status": status,
                "nodes": len(workflow.nodes),
                "seconds": seconds,
                "maxrss_kb": peak_kb,
                "phases_kb": phases,
            }
        )
    )


def memory(ctx: Context) -> Section:
    """Row 5b: peak RSS of one 100,000-node workflow."""
    n = ctx.size(100_000, 1_000)
    path = ctx.tmp / f"fanout-{n}.json"
    path.write_bytes(encode(fanout_doc(n)))
    section = Section(
        "memory",
        f"5b. Peak RSS of one workflow of {n:,} `echo` nodes",
        "A fresh `python -m benchmarks.engine memory-child FILE DB` process reads the file,"
        " runs `load_json` + `parse_workflow`, then `Engine.run` with persistence (new SQLite"
        " file) and INFO logs to /dev/null, and prints its peak RSS (`VmHWM` of"
        " `/proc/self/status`; `ru_maxrss` would carry the parent's peak over `exec`); the"
        " parent collects it. The workflow is the fan-out of 1.",
    )
    peaks, imported, parsed, seconds = [], [], [], []
    for run in range(ctx.runs):
        ctx.progress(f"memory: run {run + 1}/{ctx.runs}")
        db = ctx.tmp / f"memory-{run}.db"
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.engine", "memory-child", str(path), str(db)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["status"] != "SUCCESS" or result["nodes"] != n:
            raise RuntimeError(f"memory child: {result}")
        peaks.append(result["maxrss_kb"] / 1024)
        imported.append(result["phases_kb"]["imported"] / 1024)
        parsed.append(result["phases_kb"]["parsed_peak"] / 1024)
        seconds.append(result["seconds"])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    section.add(Figure("peak RSS (VmHWM)", peaks, "MB", 300.0))
    section.add(Figure("RSS after imports (before reading the file)", imported, "MB"))
    section.add(Figure("peak RSS after load_json + parse_workflow (before the run)", parsed, "MB"))
    section.add(
        Figure(
            "peak minus imports, per node",
            [(p - i) * 1024 / n for p, i in zip(peaks, imported, strict=True)],
            "KB/node",
        )
    )
    section.add(Figure("engine run time of the same workflow", per_node_us(seconds, n), "µs/node"))
    section.notes.append(f"File size {path.stat().st_size / 1e6:.1f} MB. MB = 2^20 bytes.")
    return section


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory-child"] and len(sys.argv) == 4:
        memory_child(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.engine memory-child FILE DB")
