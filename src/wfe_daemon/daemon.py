"""The long-running service: intake, workflow workers, recovery, signals and systemd.

Start-up order: check the task limits and create the folders (a problem there is a
``ConfigError``, before anything runs), lock the state, open the store, start the workers,
start feeding them the files left in ``inbox/processing/`` by an earlier life (they are
resumed or published before any new file is taken), arm the watcher, then tell systemd
READY=1. Shutdown is the reverse: stop intake,
let running workflows finish for ``shutdown_grace`` seconds, cancel what is left (it stays
RUNNING in the store and resumes at the next start), flush the store, exit 0.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from wfe_daemon.allocator import fix_mmap_threshold
from wfe_daemon.config import Settings
from wfe_daemon.engine import Engine
from wfe_daemon.errors import ConfigError, UsageError
from wfe_daemon.intake import (
    PROCESSED,
    PROCESSING,
    REJECTED,
    Claimed,
    Intake,
    leftover_claims,
    settle_file,
)
from wfe_daemon.logs import DAEMON_STARTED, DAEMON_STOPPING
from wfe_daemon.operations import keep_history, watch_cancels
from wfe_daemon.outbox import find_result, remove_temporaries, write_result
from wfe_daemon.recovery import abandon_orphans, recover
from wfe_daemon.services import load_registry, open_services
from wfe_daemon.store import Store
from wfe_daemon.submission import submit
from wfe_daemon.systemd import Notifier, scrub_environ

if TYPE_CHECKING:
    from wfe_daemon.metrics import Telemetry

log = structlog.get_logger()


def _prepare_folders(settings: Settings) -> None:
    """Create the inbox folders, the outbox and the database's folder, and check them.

    Raises:
        ConfigError: one cannot be created or written to; the message names its key.
    """
    folders = [("inbox", settings.inbox / sub) for sub in ("", PROCESSING, PROCESSED, REJECTED)]
    folders += [("outbox", settings.outbox), ("db_path", settings.db_path.parent)]
    for key, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, FileExistsError):  # mkdir's word for "a file is in the way"
                reason = "not a directory"
            else:
                reason = exc.strerror or str(exc)
            raise ConfigError(f"config: {key}: cannot create {folder}: {reason}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"config: {key}: cannot write to {folder}: Permission denied")


@contextmanager
def _state_lock(db_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` beside the database, so one daemon owns this state."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another wfe-daemon is already running on {db_path}") from None
        yield
    finally:
        os.close(fd)


def _publish(
    settings: Settings, path: Path, stem: str, summary: dict[str, Any], recovered: bool
) -> None:
    """Write the result and settle the input, in one worker-thread trip."""
    run_id = summary["run_id"]
    # Only a recovered file can already have its result: a crash after publishing.
    if not recovered or find_result(settings.outbox, stem, run_id) is None:
        write_result(settings.outbox, stem, run_id, summary)
    if os.path.lexists(path):
        settle_file(path, settings.inbox, summary["status"] == "REJECTED")


class Daemon:
    """One daemon: the store, the engine, the intake and the workers (see ``serve``)."""

    def __init__(self, settings: Settings, store: Store, engine: Engine, notifier: Notifier):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.notifier = notifier
        self.stopping = anyio.Event()
        self.active = 0
        self.done = 0
        self.leftovers: set[Path] = set()
        """Files an earlier life left in ``processing/``: recovered, not submitted afresh."""
        self._idle: set[anyio.CancelScope] = set()
        self._drained = anyio.Event()
        self.watching = False
        """True while intake runs (for ``/healthz``)."""
        self.on_published: list[Callable[[Claimed, dict[str, Any]], None]] = []
        """Called after each result is published (metrics)."""

    async def handle(self, claimed: Claimed) -> None:
        """Run (or recover) one claimed file, publish its result, then move the file."""
        self.active += 1
        try:
            recovered = claimed.path in self.leftovers
            if recovered:
                self.leftovers.discard(claimed.path)
                summary = await recover(self.engine, claimed)
            else:
                summary = await submit(self.engine, claimed.data, source=claimed.source,
                                       source_path=claimed.path, problem=claimed.problem)
            if summary is not None:
                await self.publish(claimed, summary, recovered=recovered)
        except Exception:  # one file must never take the daemon down; it stays in processing/
            log.exception("workflow.error", source=claimed.source, path=str(claimed.path))
        finally:
            self.active -= 1
            self.done += 1
            if self.active == 0 and self.stopping.is_set():
                self._drained.set()

    async def publish(
        self, claimed: Claimed, summary: dict[str, Any], *, recovered: bool = False
    ) -> None:
        """Write the result (once per run), move the input out of ``processing/``."""
        stem = Path(summary.get("source") or claimed.source).stem
        await anyio.to_thread.run_sync(
            _publish, self.settings, claimed.path, stem, summary, recovered
        )
        self.store.mark_settled(summary["run_id"])
        for hook in self.on_published:
            hook(claimed, summary)

    async def worker(self, receive: anyio.abc.ObjectReceiveStream[Claimed]) -> None:
        """Take items until shutdown; an item taken is always finished (or left to recover)."""
        async with receive:
            while not self.stopping.is_set():
                with anyio.CancelScope() as idle:
                    self._idle.add(idle)
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        return
                    finally:
                        self._idle.discard(idle)
                if idle.cancelled_caught:
                    return
                await self.handle(item)

    def stop_taking(self) -> None:
        """Shutdown begins: idle workers stop waiting for files."""
        self.stopping.set()
        for scope in list(self._idle):
            scope.cancel()

    async def drained(self) -> None:
        """Return once no workflow is running (call after :meth:`stop_taking`)."""
        if self.active:
            await self._drained.wait()

    async def heartbeat(self) -> None:
        """STATUS lines for systemd, and WATCHDOG=1 while the loop and store are healthy."""
        interval = self.notifier.watchdog_interval()
        period = min(interval, 2.0) if interval else 2.0
        while True:
            if self.store.healthy:
                if interval:
                    self.notifier.watchdog()
                self.notifier.status(f"running {self.active} workflows; {self.done} done")
            await anyio.sleep(period)


async def serve(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit status (0)."""
    fix_mmap_threshold()  # else malloc's free lists grow with the workflows served
    registry = load_registry(settings)
    _prepare_folders(settings)
    notifier = Notifier.from_environ(os.environ)
    kept = scrub_environ(os.environ)  # children must not inherit NOTIFY_SOCKET / WATCHDOG_*
    os.environ.clear()
    os.environ.update(kept)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    with _state_lock(settings.db_path):
        async with Store.open(settings.db_path) as store, open_services(settings) as services:
            telemetry = _telemetry(settings.metrics_port)
            engine = Engine(registry, store, settings, services=services,
                            **(telemetry.engine_options() if telemetry else {}))
            daemon = Daemon(settings, store, engine, notifier)
            await _supervise(daemon, telemetry)
    return 0


def _telemetry(port: int) -> Telemetry | None:
    """Metrics and health when ``metrics_port`` is set; only then is prometheus imported."""
    if not port:
        return None
    from wfe_daemon.metrics import Telemetry

    return Telemetry(port)


async def _supervise(daemon: Daemon, telemetry: Telemetry | None = None) -> None:
    settings, notifier = daemon.settings, daemon.notifier
    remove_temporaries(settings.outbox)  # what a SIGKILL mid-publish left; results are redone
    await abandon_orphans(daemon.store, settings.inbox)
    send, receive = anyio.create_memory_object_stream[Claimed](settings.max_concurrent_workflows)
    async with anyio.create_task_group() as tg:
        stop_requested = anyio.Event()
        tg.start_soon(_watch_signals, stop_requested, tg.cancel_scope)
        with receive:
            for _ in range(settings.max_concurrent_workflows):
                tg.start_soon(daemon.worker, receive.clone())
        leftovers = leftover_claims(settings.inbox)
        daemon.leftovers.update(leftovers)
        if telemetry is not None:
            await tg.start(telemetry.run, daemon, send)
        intake_scope = anyio.CancelScope()
        await tg.start(_run_intake, Intake(settings.inbox, settings.max_file_size), send,
                       intake_scope, daemon, leftovers)
        notifier.ready(f"watching {settings.inbox}")
        log.info(DAEMON_STARTED, inbox=str(settings.inbox), outbox=str(settings.outbox),
                 db_path=str(settings.db_path), pid=os.getpid())
        if notifier.address:
            tg.start_soon(daemon.heartbeat)
        # Cancel requests and retention run beside the workers, after READY: neither may
        # delay start-up (a resumed run takes its own pending cancel request).
        tg.start_soon(watch_cancels, daemon.engine)
        tg.start_soon(keep_history, daemon.store, settings)
        await stop_requested.wait()
        log.info(DAEMON_STOPPING, running=daemon.active, grace=settings.shutdown_grace)
        notifier.stopping("stopping")
        intake_scope.cancel()
        daemon.stop_taking()
        with anyio.move_on_after(settings.shutdown_grace):
            await daemon.drained()
        tg.cancel_scope.cancel()


async def _run_intake(
    intake: Intake,
    send: MemoryObjectSendStream[Claimed],
    scope: anyio.CancelScope,
    daemon: Daemon,
    leftovers: list[Path],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Feed the leftovers, then new files; ``started`` once the watcher is armed.

    The leftovers are sent from their own task: a backlog waiting for the workers must
    delay neither READY=1 nor a signal. Intake takes no file before they are all queued.
    """
    with scope, send:
        daemon.watching = True
        try:
            async with anyio.create_task_group() as tg:
                fed = anyio.Event()
                tg.start_soon(_feed_leftovers, leftovers, send, fed)
                await intake.run(send, task_status=task_status, after=fed)
        finally:
            daemon.watching = False


async def _feed_leftovers(
    leftovers: list[Path], send: MemoryObjectSendStream[Claimed], fed: anyio.Event
) -> None:
    for path in leftovers:
        await send.send(Claimed(path=path, source=path.name, data=None))
    fed.set()


async def _watch_signals(stop_requested: anyio.Event, everything: anyio.CancelScope) -> None:
    """The first SIGTERM or SIGINT starts a graceful stop; a second one stops at once."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            if stop_requested.is_set():
                everything.cancel()
                return
            stop_requested.set()
