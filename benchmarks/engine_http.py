"""The engine with the HTTP server on (RESULTS.md row 13): does serving slow the engine?

The fan-out and chain of rows 1 and 2 (10,000 ``echo`` nodes, logs INFO to ``os.devnull``,
a fresh SQLite file each run), run through ``Engine.run`` twice per round, alternating:
alone, as rows 1 and 2 measure it, and with the daemon's HTTP front serving in the same
event loop (metrics hooks on the engine, the store watched for the live feed) while a
separate process reads ``GET /api/v1/events`` as a page does. The reader's count of node
events is checked afterwards (every node's two transitions reached it).
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section, per_node_us, ratios
from benchmarks.engine import (
    CONCURRENCY,
    _log_to_devnull,
    _registry,
    chain_doc,
    encode,
    fanout_doc,
    parse,
)
from wfe_daemon.runtime.eventloop import run as run_on_loop

_READER = """
import sys, urllib.request
count = 0
with urllib.request.urlopen(sys.argv[1], timeout=600) as stream:
    print("connected", flush=True)
    for line in stream:
        if line.startswith(b"event: node"):
            count += 1
            if count == int(sys.argv[2]):
                break
print(count, flush=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _run(workflow: Any, doc: Any, registry: Any, db: Path, served: bool) -> float:
    """Seconds of ``Engine.run``; with ``served``, the HTTP front serves and a reader follows."""
    import anyio

    from wfe_daemon.config import Settings
    from wfe_daemon.core.model import public_definition
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.service.daemon import Daemon
    from wfe_daemon.service.intake import Claimed
    from wfe_daemon.service.systemd import Notifier
    from wfe_daemon.store.database import Store
    from wfe_daemon.web.front import HttpFront

    settings = Settings(
        db_path=db,
        data_dir=db.parent / "data",
        inbox=db.parent / "inbox",
        outbox=db.parent / "outbox",
        max_concurrent_tasks=CONCURRENCY,
    )
    port = _free_port()
    front = HttpFront(settings, port, None, reads_need_token=False)
    definition = public_definition(encode(doc).decode(), doc)
    expected = 2 * len(workflow.nodes)
    async with Store.open(db) as store:
        engine = Engine(registry, store, settings, **(front.engine_options() if served else {}))
        if not served:
            gc.collect()
            started = time.perf_counter()
            summary = await engine.run(workflow, source="bench.json", definition=definition)
            elapsed = time.perf_counter() - started
        else:
            daemon = Daemon(settings, registry, store, engine, Notifier(None))
            send, receive = anyio.create_memory_object_stream[Claimed](1)
            with send, receive:
                async with front.serving(daemon, send):
                    url = f"http://127.0.0.1:{port}/api/v1/events"
                    reader = subprocess.Popen(  # noqa: ASYNC220 - started once, not timed
                        [sys.executable, "-c", _READER, url, str(expected)],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    try:
                        assert reader.stdout is not None
                        line = await anyio.to_thread.run_sync(reader.stdout.readline)
                        if line.strip() != "connected":
                            raise RuntimeError("the event reader did not connect")
                        gc.collect()
                        started = time.perf_counter()
                        summary = await engine.run(
                            workflow, source="bench.json", definition=definition
                        )
                        elapsed = time.perf_counter() - started
                        with anyio.fail_after(120):
                            seen = await anyio.to_thread.run_sync(
                                reader.stdout.readline, abandon_on_cancel=True
                            )
                        if int(seen) != expected:
                            raise RuntimeError(f"the reader saw {seen} of {expected} events")
                    finally:
                        reader.kill()
                        reader.wait(10)
    if summary["status"] != "SUCCESS":
        raise RuntimeError(f"engine run ended {summary['status']}")
    return elapsed


def _seconds(workflow: Any, doc: Any, registry: Any, db: Path, served: bool) -> float:
    _log_to_devnull("INFO")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    try:
        return run_on_loop(_run(workflow, doc, registry, db, served))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)


def engine_http(ctx: Context) -> Section:
    n = ctx.size(10_000, 200)
    section = Section(
        "engine_http",
        f"13. The engine with the HTTP server on and a live feed connected ({n:,} nodes)",
        "Rows 1 and 2 again (fan-out and chain of `echo` nodes, `Engine.run` with a fresh "
        "SQLite file, logs INFO to /dev/null), alone and with the daemon's HTTP front serving "
        "in the same event loop (the metrics hooks on the engine, the store watched for the "
        "live feed) while another process reads `GET /api/v1/events` as the page does; the "
        "two alternate within each run. The reader must see every node's two events.",
    )
    registry = _registry()
    for label, doc in (("fan-out", fanout_doc(n)), ("chain", chain_doc(n))):
        doc_parsed, workflow = parse(encode(doc), registry)
        alone: list[float] = []
        served: list[float] = []
        for run in range(ctx.runs):
            ctx.progress(f"engine_http {label}: run {run + 1}/{ctx.runs}")
            db = ctx.tmp / "served.db"
            alone.append(_seconds(workflow, doc_parsed, registry, db, False))
            served.append(_seconds(workflow, doc_parsed, registry, db, True))
        section.add(Figure(f"{label}: engine alone", per_node_us(alone, n), "µs/node"))
        section.add(
            Figure(f"{label}: server on, feed connected", per_node_us(served, n), "µs/node")
        )
        section.add(Figure(f"{label}: ratio server on / alone", ratios(served, alone), "x"))
    return section
