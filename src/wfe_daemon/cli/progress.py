"""``execute``'s live progress line on a terminal: what it counts and how it is drawn.

The engine reports nothing per node to its caller, so :class:`Progress` watches the
innermost attempt call (the engine's ``executor`` seam), which knows the node of each
attempt. Nodes skipped without running are not seen: the count reaches the total only
when every node ran.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TextIO

from wfe_daemon.cli.views import progress_line
from wfe_daemon.runtime.task import Output, Params, Task, TaskContext
from wfe_daemon.runtime.wrappers import call_task
from wfe_daemon.taskgroup import BackgroundTasks, background_tasks

_CLEAR = "\r\x1b[K"


class Progress:
    """Counts the nodes of a run as their attempts start and end."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.running: dict[str, None] = {}  # insertion-ordered: the oldest first
        self.succeeded: set[str] = set()
        self.failed: set[str] = set()

    async def executor(self, task: Task, params: Params, ctx: TaskContext) -> Output:
        """The engine's innermost attempt call, counted."""
        self.running[ctx.node_id] = None
        self.failed.discard(ctx.node_id)  # a retry: not failed (yet)
        ok = False
        try:
            output = await call_task(task, params, ctx)
            ok = True
            return output
        finally:
            self.running.pop(ctx.node_id, None)
            (self.succeeded if ok else self.failed).add(ctx.node_id)

    def line(self, width: int) -> str:
        """The progress line, at most ``width`` characters."""
        done = len(self.succeeded) + len(self.failed)
        return progress_line(done, self.total, list(self.running), len(self.failed), width)


class LiveLine:
    """Keeps a progress line at the bottom of a terminal; text written through it scrolls above.

    Use as ``async with LiveLine(sys.stderr, progress):`` and pass it as the log stream.
    The line is redrawn at most every ``interval_s`` and erased on exit.
    """

    def __init__(self, stream: TextIO, progress: Progress, interval_s: float = 0.1) -> None:
        self._stream = stream
        self.progress = progress
        self._interval_s = interval_s
        self._shown = ""
        self._owner: AbstractAsyncContextManager[BackgroundTasks] | None = None

    def write(self, text: str) -> int:
        """Write ``text`` above the line (the line is redrawn at the next tick)."""
        self._erase()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def _erase(self) -> None:
        if self._shown:
            self._stream.write(_CLEAR)
            self._shown = ""

    def draw(self) -> None:
        """Redraw the line when it changed."""
        try:
            width = os.get_terminal_size(self._stream.fileno()).columns or 80  # 0: not set
        except (OSError, ValueError):
            width = 80
        text = self.progress.line(max(width - 1, 1))  # never the last column: no wrap
        if text != self._shown:
            self._stream.write(_CLEAR + text)
            self._stream.flush()
            self._shown = text

    async def _tick(self) -> None:
        while True:
            try:
                self.draw()
            except OSError:  # the terminal went away: the run goes on without its line
                return
            await asyncio.sleep(self._interval_s)

    async def __aenter__(self) -> LiveLine:
        self._owner = background_tasks()  # the ticker runs as long as the line is shown
        tasks = await self._owner.__aenter__()
        tasks.create_task(self._tick(), name="wfe-progress")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        owner, self._owner = self._owner, None
        try:
            if owner is not None:
                await owner.__aexit__(exc_type, exc, tb)
        finally:
            self._erase()
            self._stream.flush()
