"""A run's graph as SVG: Graphviz's ``dot -Tsvg`` as a subprocess, cached per run.

Graphviz lays the graph out from :func:`wfe_daemon.core.graph.dot` with ``anchors`` (each
node's ``id`` and ``class`` pass into the SVG). Where ``dot`` is not installed, or fails,
times out or writes too much, the pure layered layout
(:func:`wfe_daemon.core.graph.layered_svg`) draws it instead, marked the same way.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from functools import partial

import structlog
from anyio import CapacityLimiter, to_thread

from wfe_daemon.core.graph import GraphNode, dot, layered_svg

__all__ = ["GraphRenderer"]

log = structlog.get_logger()

DOT_TIMEOUT_S = 1.5
"""Past this the layered layout (about 0.1 s for 1,000 nodes) draws it: a page waits < 2 s."""
MAX_SVG_BYTES = 32 * 1024 * 1024
CACHE_BYTES = 16 * 1024 * 1024
"""The drawings kept, in characters: a dozen 1,000-node graphs, hundreds of small ones."""
LARGE_GRAPH = 300
"""From this many nodes, straight edges and fewer crossing passes: half the time or less."""
_LARGE_OPTIONS = ("-Gsplines=line", "-Gmclimit=0.1")
_CHUNK = 64 * 1024


class _DotFailed(Exception):
    """Raised when ``dot`` gives no usable SVG (the message says why)."""


class GraphRenderer:
    """Draws runs' graphs as SVG and keeps the latest drawings (``cache_bytes`` of them).

    A drawing is kept under its run id, nodes and statuses, so a RUNNING run's graph is
    drawn again once a node's status changes, a finished run's never. At most
    ``concurrency`` ``dot`` processes run at once; the time a request waits for a slot
    counts in ``timeout_s``. ``dot_path`` is the ``dot`` program (looked up on ``PATH``
    when ``None``; ``""`` for none: the layered layout draws every graph).
    """

    def __init__(
        self,
        dot_path: str | None = None,
        *,
        timeout_s: float = DOT_TIMEOUT_S,
        max_bytes: int = MAX_SVG_BYTES,
        cache_bytes: int = CACHE_BYTES,
        concurrency: int = 2,
    ) -> None:
        self.dot_path = shutil.which("dot") if dot_path is None else dot_path or None
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._cache: OrderedDict[Hashable, str] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0
        """The length of every drawing kept."""
        self._slots = asyncio.Semaphore(concurrency)
        self._threads = CapacityLimiter(concurrency)
        """Bounds the drawing work done in threads (DOT text, the layered layout)."""
        self._drawing: dict[Hashable, asyncio.Event] = {}
        """Drawings under way, by key: a second request for one waits for the first."""

    async def svg(
        self,
        run_id: int,
        name: str,
        nodes: Sequence[GraphNode],
        statuses: Mapping[str, str],
    ) -> str:
        """The SVG of run ``run_id``'s graph, each node marked with its status."""
        key = (run_id, name, tuple(nodes), tuple(sorted(statuses.items())))
        while True:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            under_way = self._drawing.get(key)
            if under_way is None:
                break
            await under_way.wait()  # then read it from the cache (or draw, if not kept)
        done = self._drawing[key] = asyncio.Event()
        try:
            drawn = await self._draw(name, nodes, statuses)
            if len(drawn) <= self._cache_bytes and key not in self._cache:
                self._cache[key] = drawn
                self._cached += len(drawn)
                while self._cached > self._cache_bytes:
                    self._cached -= len(self._cache.popitem(last=False)[1])
        finally:
            del self._drawing[key]
            done.set()
        return drawn

    async def _draw(
        self, name: str, nodes: Sequence[GraphNode], statuses: Mapping[str, str]
    ) -> str:
        # Text for a large graph takes tens of milliseconds: off the event loop.
        if self.dot_path is not None:
            source = (
                await to_thread.run_sync(
                    partial(dot, anchors=True), name, nodes, statuses, limiter=self._threads
                )
            ).encode()
            options = _LARGE_OPTIONS if len(nodes) >= LARGE_GRAPH else ()
            try:
                async with asyncio.timeout(self.timeout_s), self._slots:
                    return await self._run_dot(self.dot_path, source, options)
            except TimeoutError:
                error = f"dot took longer than {self.timeout_s:g}s"
                log.warning("http.graph_fallback", error=error, nodes=len(nodes))
            except _DotFailed as exc:
                log.warning("http.graph_fallback", error=str(exc), nodes=len(nodes))
        return await to_thread.run_sync(layered_svg, name, nodes, statuses, limiter=self._threads)

    async def _run_dot(self, dot_path: str, source: bytes, options: Sequence[str]) -> str:
        """``dot -Tsvg`` over ``source``; its output, within the time and size limits."""
        try:
            proc = await asyncio.create_subprocess_exec(
                dot_path,
                "-Tsvg",
                *options,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise _DotFailed(f"cannot start {dot_path}: {exc.strerror or exc}") from exc
        try:
            out, err = await _exchange(proc, source, self.max_bytes)
            code = await proc.wait()
        finally:  # failed, or cancelled (the timeout): no process outlives the request
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0:
            message = err.decode(errors="replace").strip()[:500]
            raise _DotFailed(f"dot exited with status {code}: {message}")
        return out.decode(errors="replace")


async def _exchange(
    proc: asyncio.subprocess.Process, source: bytes, max_bytes: int
) -> tuple[bytes, bytes]:
    """Write ``source`` to the process while reading its output (at most ``max_bytes``)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr

    async def feed() -> None:
        try:
            stdin.write(source)
            await stdin.drain()
        except (OSError, RuntimeError):  # uvloop: RuntimeError once the pipe is closed
            pass  # it stopped reading: its exit status says why
        finally:
            stdin.close()

    async def read_out() -> bytes:
        chunks: list[bytes] = []
        size = 0
        while chunk := await stdout.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _DotFailed(f"dot wrote more than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_err() -> bytes:
        kept = b""
        while chunk := await stderr.read(_CHUNK):  # all of it: a full pipe would stall dot
            kept = (kept + chunk)[:_CHUNK]
        return kept

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed())
            out = tg.create_task(read_out())
            err = tg.create_task(read_err())
    except ExceptionGroup as group:
        failed = group.subgroup(_DotFailed)
        if failed is not None:
            raise failed.exceptions[0] from None
        raise
    return out.result(), err.result()
