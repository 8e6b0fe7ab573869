"""The event loop every command runs on: uvloop's (libuv).

uvloop runs the same asyncio code with less CPU per callback, timer and socket operation
than the standard library's loop: 5-15 % less time per node through the engine, measured
against the standard loop in the same process (``benchmarks/RESULTS.md``, rows 1 and 2).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new uvloop event loop; its result."""
    import uvloop

    return uvloop.run(main)
