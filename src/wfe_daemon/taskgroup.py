"""The owner of a resource's background tasks: a task group that ends with the resource.

A store's writer, a progress line's ticker, a program's pipe readers: each runs beside the
code that uses the resource and stops when that code is done with it. anyio's task group
owns them, but wraps the exception of its own body in an ``ExceptionGroup``, so an error
of the code using the resource would come out changed. :func:`background_tasks` cancels
the tasks when its body ends, waits for them, and raises the body's exception as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup


@asynccontextmanager
async def background_tasks() -> AsyncIterator[TaskGroup]:
    """``async with background_tasks() as tg:``: the tasks started in ``tg`` are cancelled
    when the block ends, and the block's exception leaves it unwrapped.

    A task that fails raises as in any task group (in an ``ExceptionGroup``).
    """
    raised: BaseException | None = None
    async with anyio.create_task_group() as tg:
        try:
            yield tg
        except BaseException as exc:  # raised as itself once the tasks have stopped
            raised = exc
        tg.cancel_scope.cancel()
    if raised is not None:
        raise raised
