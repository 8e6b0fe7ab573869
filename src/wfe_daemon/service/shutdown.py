"""The stop policy of every process that runs workflows (``run``, ``execute``, ``retry``).

The first SIGTERM or SIGINT asks for a graceful stop: the daemon stops taking files and
gives running workflows ``shutdown_grace`` seconds, a command cancels its runs (they end
CANCELLED, with their summary). A second one stops at once: the daemon cancels what is
left (it resumes at the next start), a command exits leaving its run RUNNING.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc

__all__ = ["STOP_SIGNALS", "watch_stop_signals"]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


async def watch_stop_signals(
    graceful: Callable[[signal.Signals], object],
    at_once: Callable[[signal.Signals], object],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``graceful`` at the first stop signal and ``at_once`` at the second, then return.

    Start it with ``await tg.start(watch_stop_signals, ...)``: it reports ``started`` once
    the handlers are installed, and restores the previous ones when it ends or is cancelled.
    """
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        received = 0
        async for signum in signals:
            received += 1
            if received == 1:
                graceful(signal.Signals(signum))
            else:
                at_once(signal.Signals(signum))
                return
