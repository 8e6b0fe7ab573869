"""``echo`` and ``sleep``: the smallest tasks, for trying workflows and testing the engine."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from wfe_daemon.runtime.task import Output, Params, TaskContext


class EchoTask:
    """Returns its params, after references are resolved."""

    type: ClassVar[str] = "echo"
    display_name: ClassVar[str] = "Echo"
    description: ClassVar[str] = "Returns its params (after references are resolved) as output."
    category: ClassVar[str] = "basic"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    default_timeout: ClassVar[float | None] = None

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        return params  # read-only by contract: outputs are never mutated


class SleepTask:
    """Waits ``seconds``, then returns ``{"slept": seconds}``."""

    type: ClassVar[str] = "sleep"
    display_name: ClassVar[str] = "Sleep"
    description: ClassVar[str] = "Waits the given number of seconds."
    category: ClassVar[str] = "basic"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "description": "How long to wait."}
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }
    default_timeout: ClassVar[float | None] = None

    async def execute(self, params: Params, ctx: TaskContext) -> Output:
        seconds = params["seconds"]
        until = time.perf_counter() + seconds
        await asyncio.sleep(seconds)
        if (left := until - time.perf_counter()) > 0:
            # uvloop's timers keep millisecond time and may fire up to a millisecond early.
            await asyncio.sleep(left + 0.001)
        return {"slept": seconds}


TASKS = (EchoTask, SleepTask)
