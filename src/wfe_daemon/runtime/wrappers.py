"""Per-attempt wrappers: plain functions around an attempt, composed once per task type.

``build_attempt`` is the one place the stack is assembled::

    attempt = logged(observed(hooks)(executor))

A task type may replace the default stack with a ``wrappers`` class attribute (a sequence
of wrappers, outermost first).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from wfe_daemon.logs import NODE_STARTED
from wfe_daemon.runtime.task import Output, Params, Task, TaskContext

AttemptFn = Callable[[Task, Params, TaskContext], Awaitable[Output]]
"""One attempt of one node: what the executor calls, wrapped once per task type."""

Wrapper = Callable[[AttemptFn], AttemptFn]

AttemptHook = Callable[[str, bool, float], None]
"""Called after every attempt with ``(task_type, succeeded, duration_s)`` (metrics)."""


def logged(fn: AttemptFn) -> AttemptFn:
    """Log ``node.started`` as each attempt begins."""
    log = structlog.get_logger().bind()

    async def attempt(task: Task, params: Params, ctx: TaskContext) -> Output:
        log.info(
            NODE_STARTED,
            run_id=ctx.run_id,
            workflow=ctx.workflow,
            node_id=ctx.node_id,
            task_type=task.type,
            attempt=ctx.attempt,
        )
        return await fn(task, params, ctx)

    return attempt


def observed(hooks: Sequence[AttemptHook]) -> Wrapper:
    """Time each attempt and report it to ``hooks``; a no-op layer when there are none."""

    def wrap(fn: AttemptFn) -> AttemptFn:
        if not hooks:
            return fn

        async def attempt(task: Task, params: Params, ctx: TaskContext) -> Output:
            start = time.perf_counter()
            ok = False
            try:
                output = await fn(task, params, ctx)
                ok = True
                return output
            finally:
                for hook in hooks:
                    hook(task.type, ok, time.perf_counter() - start)

        return attempt

    return wrap


async def call_task(task: Task, params: Params, ctx: TaskContext) -> Output:
    """The innermost layer: run the task in the event loop."""
    return await task.execute(params, ctx)


def build_attempt(
    task: Task, executor: AttemptFn = call_task, hooks: Sequence[AttemptHook] = ()
) -> AttemptFn:
    """Compose the attempt function of ``task`` once: its wrappers around ``executor``."""
    stack: Sequence[Wrapper] = getattr(task, "wrappers", None) or (logged, observed(hooks))
    fn = executor
    for wrapper in reversed(stack):
        fn = wrapper(fn)
    return fn


__all__ = ["AttemptHook", "build_attempt", "call_task", "logged", "observed"]
