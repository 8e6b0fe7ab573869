"""The stop policy: the first SIGTERM or SIGINT is graceful, the second one stops at once."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from wfe_daemon.service.shutdown import watch_stop_signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_the_first_signal_is_graceful_and_the_second_at_once(signum: signal.Signals) -> None:
    """Each callback gets its signal once, in order, and the watcher then ends by itself."""
    calls: list[tuple[str, signal.Signals]] = []
    first = anyio.Event()

    def graceful(received: signal.Signals) -> None:
        calls.append(("graceful", received))
        first.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(watch_stop_signals, graceful, lambda s: calls.append(("at once", s)))
            os.kill(os.getpid(), signum)
            await first.wait()
            os.kill(os.getpid(), signal.SIGTERM)

    assert calls == [("graceful", signum), ("at once", signal.SIGTERM)]


async def test_the_previous_handlers_are_back_once_it_is_cancelled() -> None:
    """Cancelled before any signal, the watcher leaves SIGINT to Python's own handler."""
    async with anyio.create_task_group() as tg:
        await tg.start(watch_stop_signals, print, print)
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        tg.cancel_scope.cancel()

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
