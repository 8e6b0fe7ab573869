"""The event loop every command runs on: uvloop's (libuv).

uvloop runs the same asyncio code with less CPU per callback, timer and socket read than the
standard library's loop: 10-15 % less time per node through the engine, and a lower load
on the loop thread when many HTTP requests are in flight (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new uvloop event loop; its result."""
    import uvloop

    return uvloop.run(main)
