"""HTTP benchmark (RESULTS.md row 6): 1,000 ``http_get`` nodes against a 50 ms local server.

The server (``python -m benchmarks.http serve DELAY``) is a raw asyncio HTTP/1.1 keep-alive
server on 127.0.0.1 in its own process, answering every request after ``DELAY`` seconds.
Each client arrangement runs in a fresh child process (``python -m benchmarks.http client
...``), on the daemon's event loop (uvloop) unless it says otherwise. It drives the real
:class:`~wfe_daemon.runtime.engine.Engine` (SQLite store, INFO logs to ``os.devnull``) with
``max_concurrent_tasks = 100`` and ``services=Services(http=client)``: one workflow of 1,000
independent ``http_get`` nodes. One warm-up run opens the pool (its time is reported as
"cold"), then each measured run reuses the client, as the daemon does.
The figure is the makespan (``Engine.run``, call to return) over the ideal
``1000 / 100 x 50 ms = 0.5 s``.

Arrangements:

- ``httpx``: ``httpx.AsyncClient(limits=Limits(100, 100))`` (httpcore's pool) with
  ``sniffio`` hidden, as on a fresh install where anyio no longer pulls it in: httpcore
  then retries the failing ``import sniffio`` on every lock it sets up.
- ``httpx+sniffio``: the same with ``sniffio`` importable (skipped when not installed).
- ``sharded``: 10 httpcore pools of 10 connections behind one transport that sends each
  request to the least busy pool (httpcore's pool scan grows with requests x connections).
- ``aiohttp``: what the task ships, :func:`wfe_daemon.tasks.http.task.open_http_client`:
  ``httpx.AsyncClient`` over the package's own transport on aiohttp's pool, with the
  address checks on. (It replaced the ``httpx-aiohttp`` transport, which cost about
  60 µs more per request for the same work.)
- ``stdlib-loop``: the shipped arrangement on the standard library's event loop instead of
  uvloop (:mod:`wfe_daemon.runtime.eventloop`): the figure before uvloop.
- ``direct``: a comparison only, not shippable: ``http_get`` swapped for a task that does
  the same GET straight on an ``aiohttp.ClientSession`` (no httpx, no address checks, no
  byte limit), to show what the httpx layer costs per node through the same engine.
- ``aiohttp-alone``: no engine either: ``nodes`` GETs through one ``aiohttp.ClientSession``
  (the shipped pool's settings), ``concurrency`` at a time, each body read whole. What the
  fastest client library here costs before any engine, store or log.
- ``aiohttp-alone+250us``, ``aiohttp-alone+400us``: the same, spending that much CPU per
  request in a busy loop (half before sending, half after reading), as the engine, store,
  logs, task and httpx would: where the event loop's budget per request runs out.
- ``echo``: the shipped arrangement with every node an ``echo`` of the same params: no
  request, no wait. Its makespan is what the engine, store and logs take for this run
  (creating it, 1,000 nodes, the durable final state) with nothing to wait for.
- ``floor``: the baseline, no engine and no HTTP library: 100 asyncio stream connections,
  each sending its share of the 1,000 GETs one after the other and reading the fixed-size
  reply. What the server, the loopback and the event loop cost on their own: no client
  can do better against this server on this machine.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._suite import Context, Figure, Section, ratios
from wfe_daemon.runtime.eventloop import run as run_on_loop

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "httpx": "httpx.AsyncClient, Limits(100, 100), sniffio absent",
    "httpx+sniffio": "httpx.AsyncClient, Limits(100, 100), sniffio installed",
    "sharded": "httpx, 10 sharded httpcore pools of 10 connections",
    "aiohttp": "httpx over aiohttp via open_http_client (shipped)",
    "stdlib-loop": "the shipped client on the standard library's event loop (before uvloop)",
    "direct": "aiohttp straight from the task, no httpx (comparison only)",
    "aiohttp-alone": "aiohttp alone, no engine (comparison only)",
    "aiohttp-alone+250us": "aiohttp alone + 250 µs of CPU per request (the loop's budget)",
    "aiohttp-alone+400us": "aiohttp alone + 400 µs of CPU per request (the loop's budget)",
    "echo": "the same nodes as `echo`, no HTTP (the engine's own time for the run)",
    "floor": "floor: raw asyncio streams, no engine, no HTTP library (baseline)",
}
SHIPPED = "aiohttp"


# -- the server ---------------------------------------------------------------------------------


def serve(delay_s: float) -> None:
    """Answer every GET on 127.0.0.1 after ``delay_s``; print the port; stop at stdin EOF.

    A ``window`` line on stdin prints, as one JSON line, the ``time.perf_counter()`` at which
    the first request since the last ``window`` arrived and the last answer was sent (the
    clock is the machine's monotonic one, shared by every process), and the request count.
    """
    body = b'{"ok": true}'
    window: dict[str, Any] = {"first": None, "last": None, "requests": 0}
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    ) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if window["first"] is None:
                    window["first"] = time.perf_counter()
                window["requests"] += 1
                await asyncio.sleep(delay_s)
                writer.write(reply)
                window["last"] = time.perf_counter()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    def control() -> None:
        for line in sys.stdin:  # until the parent closes it
            if line.strip() == "window":
                print(json.dumps(window), flush=True)
                window.update(first=None, last=None, requests=0)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        async with server:
            await loop.run_in_executor(None, control)

    asyncio.run(main())


# -- the client side (one child process per arrangement) ----------------------------------------


class _HideSniffio:
    """A meta path finder that makes ``import sniffio`` fail the way a missing module does."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sniffio":
            importlib.machinery.PathFinder.find_spec("sniffio_not_installed", None)  # same scan
            raise ModuleNotFoundError("No module named 'sniffio'", name=name)


def _sharded_transport(total: int, per_pool: int) -> Any:
    import httpx

    class Sharded(httpx.AsyncBaseTransport):
        """Sends each request to the pool with the fewest requests in flight."""

        def __init__(self) -> None:
            limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
            self.pools = [
                httpx.AsyncHTTPTransport(limits=limits) for _ in range(max(1, total // per_pool))
            ]
            self.busy = [0] * len(self.pools)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            index = min(range(len(self.busy)), key=self.busy.__getitem__)
            self.busy[index] += 1
            try:
                response = await self.pools[index].handle_async_request(request)
            except BaseException:
                self.busy[index] -= 1
                raise
            inner, busy = response.stream, self.busy

            class Stream(httpx.AsyncByteStream):
                async def __aiter__(self) -> Any:
                    async for chunk in inner:  # type: ignore[union-attr]
                        yield chunk

                async def aclose(self) -> None:
                    busy[index] -= 1
                    await inner.aclose()  # type: ignore[union-attr]

            response.stream = Stream()
            return response

        async def aclose(self) -> None:
            for pool in self.pools:
                await pool.aclose()

    return Sharded()


def _go_direct(settings: Any) -> Any:
    """Swap ``http_get`` for a bare aiohttp GET (the ``direct`` comparison); its session."""
    import aiohttp

    from wfe_daemon.tasks.http.body import MISSING, json_or_missing
    from wfe_daemon.tasks.http.task import HttpGetTask

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.max_concurrent_tasks),
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def execute(self: Any, params: Any, ctx: Any) -> Any:
        started = time.perf_counter()
        async with asyncio.timeout(params.get("timeout", 30.0)):
            async with session.get(params["url"], allow_redirects=False) as response:
                body = await response.read()
        text = body.decode(response.charset or "utf-8", errors="replace")
        output = {
            "status_code": response.status,
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "elapsed": round(time.perf_counter() - started, 6),
            "bytes": len(body),
            "text": text,
        }
        parsed = json_or_missing(text, response.headers.get("content-type", ""))
        if parsed is not MISSING:
            output["json"] = parsed
        return output

    HttpGetTask.execute = execute  # type: ignore[method-assign]
    return session


def _open_client(variant: str, settings: Any) -> Any:
    import httpx

    from wfe_daemon.tasks.http.task import open_http_client

    n = settings.max_concurrent_tasks
    if variant in ("httpx", "httpx+sniffio"):
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        return httpx.AsyncClient(limits=limits, trust_env=False)
    if variant == "sharded":
        return httpx.AsyncClient(transport=_sharded_transport(n, 10), trust_env=False)
    if variant == "direct":
        return _go_direct(settings)  # closed on exit like a client; the task ignores it
    return open_http_client(settings)


class _Clock:
    """Wall and CPU seconds of each timed block, as the child prints them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []

    @contextmanager
    def timed(self) -> Iterator[None]:
        started, cpu_started = time.perf_counter(), time.process_time()
        yield
        self.seconds.append(time.perf_counter() - started)
        self.cpu.append(time.process_time() - cpu_started)

    def figures(self) -> list[list[float]]:
        return [self.seconds, self.cpu]


async def _floor(url: str, nodes: int, concurrency: int, runs: int) -> list[list[float]]:
    """``nodes`` GETs over ``concurrency`` raw connections, ``runs + 1`` times; the seconds.

    The connections stay open from run to run, as the shipped client's pool does.
    """
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /item/0 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    shares = [nodes // concurrency + (i < nodes % concurrency) for i in range(concurrency)]

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))

    connections = [await asyncio.open_connection(host, int(port)) for _ in shares]
    clock = _Clock()
    try:
        for _ in range(runs + 1):
            with clock.timed():
                async with asyncio.TaskGroup() as group:
                    for (reader, writer), share in zip(connections, shares, strict=True):
                        group.create_task(send(reader, writer, share))
    finally:
        for _, writer in connections:
            writer.close()
    return clock.figures()


async def _aiohttp_alone(
    url: str, nodes: int, concurrency: int, runs: int, busy_us: int
) -> list[list[float]]:
    """``nodes`` GETs through one aiohttp session, ``concurrency`` at a time, ``runs + 1`` times.

    Each request also keeps the CPU busy for ``busy_us`` µs, half before and half after.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    clock = _Clock()
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        gate = asyncio.Semaphore(concurrency)

        def busy() -> None:
            until = time.perf_counter() + busy_us / 2e6
            while time.perf_counter() < until:
                pass

        async def get(i: int) -> None:
            async with gate:
                busy()
                async with session.get(f"{url}/item/{i}", allow_redirects=False) as response:
                    await response.read()
                busy()

        for _ in range(runs + 1):
            with clock.timed():
                async with asyncio.TaskGroup() as group:
                    for i in range(nodes):
                        group.create_task(get(i))
    return clock.figures()


def client(variant: str, url: str, nodes: int, concurrency: int, runs: int, tmp: str) -> None:
    """Run the workflow ``runs + 1`` times with one client; print the seconds as JSON."""
    if variant == "floor":
        print(json.dumps(run_on_loop(_floor(url, nodes, concurrency, runs))))
        return
    if variant.startswith("aiohttp-alone"):
        busy_us = int(variant.partition("+")[2].removesuffix("us") or 0)
        print(json.dumps(run_on_loop(_aiohttp_alone(url, nodes, concurrency, runs, busy_us))))
        return
    if variant == "httpx":
        sys.meta_path.insert(0, _HideSniffio())
    from benchmarks.engine import _log_to_devnull, _registry, parse
    from wfe_daemon.config import Settings
    from wfe_daemon.runtime.engine import Engine
    from wfe_daemon.runtime.task import Services
    from wfe_daemon.store.database import Store

    registry = _registry()
    _log_to_devnull("INFO")
    task = "echo" if variant == "echo" else "http_get"
    doc = {
        "name": "http bench",
        "nodes": [
            {"id": f"n{i}", "type": task, "params": {"url": f"{url}/item/{i}"}}
            for i in range(nodes)
        ],
    }
    _, workflow = parse(json.dumps(doc).encode(), registry)
    folder = Path(tmp)
    settings = Settings(
        db_path=folder / "http.db",
        data_dir=folder / "data",
        inbox=folder / "inbox",
        outbox=folder / "outbox",
        max_concurrent_tasks=concurrency,
    )

    async def main() -> list[list[float]]:
        clock = _Clock()
        async with _open_client(variant, settings) as http:
            for run in range(runs + 1):
                db = folder / f"http-{run}.db"
                async with Store.open(db) as store:
                    engine = Engine(registry, store, settings, services=Services(http=http))
                    with clock.timed():
                        summary = await engine.run(workflow, source="bench.json")
                if summary["status"] != "SUCCESS":
                    failed = next(n for n in summary["nodes"].values() if n["status"] != "SUCCESS")
                    raise RuntimeError(f"{variant}: run ended {summary['status']}: {failed}")
        return clock.figures()

    runner = asyncio.run if variant == "stdlib-loop" else run_on_loop
    print(json.dumps(runner(main())))


# -- the benchmark --------------------------------------------------------------------------------


def http(ctx: Context) -> Section:
    """Row 6: makespan of 1,000 ``http_get`` nodes over the ideal, per client."""
    nodes, concurrency = ctx.size(1_000, 40), ctx.size(100, 10)
    delay_s = ctx.size(50, 20) / 1000
    ideal = nodes / concurrency * delay_s
    section = Section(
        "http",
        f"6. {nodes:,} `http_get` nodes against a {delay_s * 1000:g} ms local server",
        (__doc__ or "").split("\n\n", 1)[1].split("\n\nArrangements")[0].replace("\n", " ")
        + f" Ideal here: {nodes} / {concurrency} x {delay_s * 1000:g} ms = {ideal:g} s.",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http", "serve", str(delay_s)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}"
        has_sniffio = importlib.util.find_spec("sniffio") is not None
        makespans: dict[str, list[float]] = {}
        for variant, label in VARIANTS.items():
            if variant == "httpx+sniffio" and not has_sniffio:
                section.notes.append(f"`{variant}` skipped: sniffio is not installed.")
                continue
            ctx.progress(f"http: {variant}")
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.http",
                    "client",
                    variant,
                    url,
                    str(nodes),
                    str(concurrency),
                    str(ctx.runs),
                    str(ctx.tmp),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"http client {variant}: {done.stderr[-2000:]}")
            (cold, *warm), (_, *cpu) = json.loads(done.stdout.strip().splitlines()[-1])
            makespans[variant] = warm
            limit = 1.15 if variant == SHIPPED else None
            section.add(
                Figure(f"{label}: makespan / ideal", ratios(warm, [ideal] * len(warm)), "x", limit)
            )
            section.add(Figure(f"{label}: makespan", warm, "s"))
            section.add(
                Figure(
                    f"{label}: CPU of the client process per node",
                    [c / nodes * 1e6 for c in cpu],
                    "µs",
                )
            )
            section.add(Figure(f"{label}: first run, pool opening (cold)", [cold], "s"))
        if SHIPPED in makespans and "floor" in makespans:
            section.add(
                Figure(
                    "shipped makespan / floor makespan (what the engine, store, logs,"
                    " task and client add)",
                    ratios(makespans[SHIPPED], makespans["floor"]),
                    "x",
                )
            )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    section.notes.append(
        f"max_concurrent_tasks = {concurrency}; each arrangement in its own process; the"
        " server in another. Only the shipped arrangement carries the target; the others are"
        " the comparison that chose it (`direct` shows what the httpx layer costs,"
        " `aiohttp-alone` what the client library costs without the engine, `floor` what"
        " this server and machine allow any client)."
    )
    return section


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 3:
        serve(float(sys.argv[2]))
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 8:
        client(
            sys.argv[2],
            sys.argv[3],
            int(sys.argv[4]),
            int(sys.argv[5]),
            int(sys.argv[6]),
            sys.argv[7],
        )
    else:
        sys.exit(
            "usage: python -m benchmarks.http serve DELAY"
            " | client VARIANT URL NODES CONCURRENCY RUNS TMP"
        )
