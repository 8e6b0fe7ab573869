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
from contextlib import AbstractAsyncContextManager, AsyncExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from wfe_daemon.config import Settings
from wfe_daemon.core.summary import RunSummary
from wfe_daemon.errors import ConfigError, StoreCorrupt, UsageError
from wfe_daemon.faults import Backoff, Faults
from wfe_daemon.logs import DAEMON_STARTED, DAEMON_STOPPED, DAEMON_STOPPING
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.service import clocks
from wfe_daemon.service.allocator import fix_mmap_threshold
from wfe_daemon.service.cancel import watch_cancels
from wfe_daemon.service.intake import (
    PROCESSED,
    PROCESSING,
    REJECTED,
    Claimed,
    Intake,
    describe_os_error,
    leftover_claims,
    settle_file,
)
from wfe_daemon.service.notify import Webhook, webhook_url
from wfe_daemon.service.outbox import FolderSync, find_result, remove_temporaries, write_result
from wfe_daemon.service.recovery import abandon_orphans, recover
from wfe_daemon.service.retention import keep_history
from wfe_daemon.service.scheduler import Scheduler
from wfe_daemon.service.shutdown import watch_stop_signals
from wfe_daemon.service.submission import submit
from wfe_daemon.service.systemd import Notifier, scrub_environ
from wfe_daemon.service.wiring import (
    load_registry,
    open_cluster,
    open_engine,
    startup_objects_frozen,
)
from wfe_daemon.store.database import Store

if TYPE_CHECKING:
    from wfe_daemon.cluster.state import ClusterState

log = structlog.get_logger()

_RETRY_MAX_S = 10.0
_QUICK_S = 1.0  # a start-up wait longer than this is shown in systemd's STATUS=
_EXTEND_EVERY_S = 10.0
_NOTIFY_FLUSH_S = 5.0  # of the shutdown grace, for notifications still queued
_FRONT_STOP_S = 5.0  # the front's own bounds: 1 s for requests in flight, 1 s to hand over


def _prepare_folders(settings: Settings) -> None:
    """Create the inbox folders, the outbox, the database's folder and ``schedules_dir``,
    and check them (``schedules_dir`` only needs to be readable).

    Raises:
        ConfigError: one cannot be created or written to; the message names its key.
    """
    folders = [("inbox", settings.inbox / sub) for sub in ("", PROCESSING, PROCESSED, REJECTED)]
    folders += [("outbox", settings.outbox), ("db_path", settings.db_path.parent)]
    folders += [("schedules_dir", settings.schedules)]
    for key, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, FileExistsError):  # mkdir's word for "a file is in the way"
                reason = "not a directory"
            else:
                reason = exc.strerror or str(exc)
            raise ConfigError(f"config: {key}: cannot create {folder}: {reason}") from exc
        if key == "schedules_dir":  # only read: it may belong to root (in /etc, say)
            if not os.access(folder, os.R_OK | os.X_OK):
                raise ConfigError(f"config: {key}: cannot read {folder}: Permission denied")
        elif not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"config: {key}: cannot write to {folder}: Permission denied")


@contextmanager
def _state_lock(db_path: Path, inbox: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` beside the database and one on the inbox folder itself,
    so one daemon owns this state and this inbox (two daemons on one inbox with two
    databases would share its files between them)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_path.with_name(db_path.name + ".lock")
    with (
        _flock(lock_path, os.O_RDWR | os.O_CREAT, f"the database {db_path}"),
        _flock(inbox, os.O_RDONLY | os.O_DIRECTORY, f"the inbox {inbox}"),
    ):
        yield


@contextmanager
def _flock(path: Path, flags: int, what: str) -> Iterator[None]:
    fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another wfe-daemon is already running on {what}") from None
        yield
    finally:
        os.close(fd)


class _PublishFailed(Exception):
    """Raised when a result cannot be written (``fault`` "outbox") or its file cannot be
    moved out of ``processing/`` ("settle"); ``str()`` says which path and why."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault


def _publish(
    settings: Settings,
    path: Path,
    stem: str,
    summary: RunSummary,
    recovered: bool,
    sync_outbox: FolderSync,
) -> Path | None:
    """Write the result and settle the input, in one worker-thread trip; the file's new path.

    The input is moved only once the result's name is durable (``sync_outbox``), so a
    crash never leaves a settled file without its result.

    Raises:
        _PublishFailed: a step failed (nothing is lost: a publish is safe to try again).
    """
    run_id = summary["run_id"]
    try:
        # Only a recovered file can already have its result: a crash after publishing,
        # maybe before the result's name was made durable, so the folder is synced again.
        if (
            recovered
            and find_result(settings.outbox, stem, run_id, summary.get("started_at")) is not None
        ):
            sync_outbox()
        else:
            write_result(settings.outbox, stem, run_id, summary, sync_outbox=sync_outbox)
    except OSError as exc:
        raise _PublishFailed(
            "outbox",
            f"cannot write the result of {path.name} in "
            f"{settings.outbox}: {describe_os_error(exc)}",
        ) from exc
    if not os.path.lexists(path):
        return None
    try:
        return settle_file(path, settings.inbox, summary["status"] == "REJECTED")
    except OSError as exc:
        raise _PublishFailed(
            "settle", f"cannot move {path} out of {PROCESSING}/: {describe_os_error(exc)}"
        ) from exc


class Front(Protocol):
    """What the daemon shows the outside while it runs (the HTTP server): started before
    READY=1, stopped first on SIGTERM, before intake stops and the workflows drain."""

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for the ``Engine`` (its metrics hooks)."""
        ...

    def serving(
        self, daemon: Daemon, queue: MemoryObjectSendStream[Claimed]
    ) -> AbstractAsyncContextManager[None]:
        """Serve while the block runs; ``queue`` is where the workers take claimed files."""
        ...


class Daemon:
    """One daemon: the store, the engine, the intake and the workers (see ``serve``)."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        store: Store,
        engine: Engine,
        notifier: Notifier,
        faults: Faults | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.store = store
        self.engine = engine
        self.notifier = notifier
        self.stopping = anyio.Event()
        self._handling = 0  # files taken by a worker and not finished
        self.done = 0
        self.leftovers: set[Path] = set()
        """Files an earlier life left in ``processing/``: recovered, not submitted afresh."""
        self._idle: set[anyio.CancelScope] = set()
        self._drained = anyio.Event()
        self.watching = False
        """True while intake runs (for ``/healthz``)."""
        self.on_published: list[Callable[[Claimed, RunSummary], None]] = []
        """Called after each result is published (metrics)."""
        self.faults = Faults() if faults is None else faults
        """Faults happening now (outbox, inbox, store), for the log and ``/healthz``."""
        self.on_notified: list[Callable[[str], None]] = []
        """Called with each notification outcome (``sent``, ``failed``, ``dropped``: metrics)."""
        self.stop_reason = "stopped"
        self.cluster: ClusterState | None = None
        """The Dask cluster as last seen (``executor = "dask"``), for ``/healthz``."""
        self._sync_outbox = FolderSync(settings.outbox)  # shared by concurrent publishes
        # Held while a workflow runs, not while its result is published (fsyncs): twice as
        # many workers as slots let the next file run while the last one's result is written.
        self._run_slots = anyio.CapacityLimiter(settings.max_concurrent_workflows)

    @property
    def active(self) -> int:
        """Files whose workflow runs or whose result is being published (not those waiting
        for a run slot)."""
        return self._handling - self.waiting

    @property
    def waiting(self) -> int:
        """Files taken by a worker that wait for a run slot."""
        return self._run_slots.statistics().tasks_waiting

    async def handle(self, claimed: Claimed) -> None:
        """Run (or recover) one claimed file, publish its result, then move the file.

        A failure (a bug, or a fault the store gave up on) never takes the daemon down and
        never leaves the file stuck: it is logged once as ``workflow.error`` and the file is
        taken again, as crash recovery would take it, with backoff until it succeeds (or
        until shutdown, when it stays in ``processing/`` for the next start). A file whose
        run would begin after shutdown began stays there too, unrun.
        """
        self._handling += 1
        try:
            recovered = claimed.path in self.leftovers
            self.leftovers.discard(claimed.path)
            backoff = Backoff(first_s=0.5, max_s=_RETRY_MAX_S)
            failures = 0
            while True:
                try:
                    if not await self._handle_once(claimed, recovered):
                        return  # shutdown began before it could run: the next start runs it
                    break
                except StoreCorrupt:
                    return  # the daemon stops on it (``_stop_if_damaged``); the file stays
                except Exception:  # one file must never take the daemon down
                    failures += 1
                    if failures == 1:
                        log.exception(
                            "workflow.error", source=claimed.source, path=str(claimed.path)
                        )
                    recovered = True  # the store knows how far it got: go on from there
                await anyio.sleep(backoff.next())
            self.done += 1
            if failures:
                log.warning("workflow.recovered", source=claimed.source, failures=failures)
        finally:
            self._handling -= 1
            if self._handling == 0 and self.stopping.is_set():
                self._drained.set()

    async def _handle_once(self, claimed: Claimed, recovered: bool) -> bool:
        """Run the file in a run slot, then publish its result outside it; False when
        shutdown began before a slot was free (nothing ran)."""
        async with self._run_slots:
            if self.stopping.is_set():
                return False
            summary = await self._run(claimed, recovered)
        if summary is not None:
            await self.publish(claimed, summary, recovered=recovered)
        return True

    async def _run(self, claimed: Claimed, recovered: bool) -> RunSummary | None:
        registry, store, engine = self.registry, self.store, self.engine
        if recovered:
            summary = await recover(
                claimed,
                max_file_size=self.settings.max_file_size,
                registry=registry,
                store=store,
                engine=engine,
            )
        else:
            summary = await submit(
                claimed.data,
                registry=registry,
                store=store,
                engine=engine,
                source=claimed.source,
                source_path=claimed.path,
                problem=claimed.problem,
            )
        return summary

    async def publish(
        self, claimed: Claimed, summary: RunSummary, *, recovered: bool = False
    ) -> None:
        """Write the result (once per run), move the input out of ``processing/``.

        A full, read-only or missing outbox (or an inbox that refuses the move) is an
        incident: retried with backoff until it works, logged once when it begins and once
        when it heals, and shown by ``/healthz`` meanwhile.
        """
        stem = Path(summary.get("source") or claimed.source).stem
        backoff = Backoff(first_s=0.1, max_s=_RETRY_MAX_S)
        failed: set[str] = set()
        while True:
            try:
                settled = await anyio.to_thread.run_sync(
                    _publish,
                    self.settings,
                    claimed.path,
                    stem,
                    summary,
                    recovered,
                    self._sync_outbox,
                )
                break
            except _PublishFailed as exc:
                self.faults[exc.fault].failed(str(exc))
                failed.add(exc.fault)
                recovered = True  # the result may be written already: never write it twice
            await anyio.sleep(backoff.next())
        for fault in failed:  # only what this publish saw fail: another may still be failing
            self.faults[fault].healed()
        self.store.mark_settled(summary["run_id"], None if settled is None else str(settled))
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
        if self._handling:
            await self._drained.wait()

    async def heartbeat(self) -> None:
        """STATUS lines for systemd, and WATCHDOG=1 while the loop and store are healthy."""
        interval = self.notifier.watchdog_interval()
        period = min(interval, 2.0) if interval else 2.0
        while True:
            # A store fault that heals (a lock, a full disk) keeps the watchdog fed: a
            # restart would not heal it sooner. Only damage stops the petting.
            if self.store.fatal is None:
                if interval:
                    self.notifier.watchdog()
                self.notifier.status(f"running {self.active} workflows; {self.done} done")
            await anyio.sleep(period)


async def serve(settings: Settings, front: Front | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit status (0).

    ``front`` (the HTTP server, when ``http_port`` is set) is served while the daemon runs.
    """
    fix_mmap_threshold()  # else malloc's free lists grow with the workflows served
    registry = load_registry(settings)
    # Before anything runs: a URL or header that cannot be sent is a ConfigError (exit 2).
    notify_url = webhook_url(settings.notify, os.environ)
    webhook = None if notify_url is None else Webhook(settings.notify, notify_url)
    _prepare_folders(settings)
    notifier = Notifier.from_environ(os.environ)
    kept = scrub_environ(os.environ)  # children must not inherit NOTIFY_SOCKET / WATCHDOG_*
    os.environ.clear()
    os.environ.update(kept)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    daemon: Daemon | None = None
    failure: BaseException | None = None
    faults = Faults()
    try:
        with _state_lock(settings.db_path, settings.inbox):
            async with AsyncExitStack() as stack:
                store = await _open_store(stack, settings, faults, notifier)
                if store is None:
                    return 0
                cluster = await stack.enter_async_context(open_cluster(settings, daemon=True))
                engine = await stack.enter_async_context(
                    open_engine(
                        settings,
                        registry,
                        store,
                        cluster=cluster,
                        **(front.engine_options() if front else {}),
                    )
                )
                daemon = Daemon(settings, registry, store, engine, notifier, faults)
                daemon.cluster = cluster.state if cluster is not None else None
                if webhook is not None:
                    webhook.hooks = daemon.on_notified
                stack.enter_context(startup_objects_frozen())
                await _supervise(daemon, front, webhook)
                if store.fatal is not None:
                    raise store.fatal
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if daemon is not None:  # it started: its last line says why it stopped
            _log_stopped(daemon, failure)
    return 0


async def _open_store(
    stack: AsyncExitStack, settings: Settings, faults: Faults, notifier: Notifier
) -> Store | None:
    """Open the store into ``stack`` and wait until it takes writes; ``None`` when a
    SIGTERM or SIGINT came first.

    The daemon never gives up on a store fault that can heal (the store logs it), so this
    may wait long: a signal ends the wait, and systemd's start timeout is extended
    meanwhile. A damaged file raises ``StoreCorrupt`` (exit 3).
    """
    stopped_by: list[str] = []
    async with anyio.create_task_group() as tg:

        def stop(signum: signal.Signals) -> None:
            stopped_by.append(signum.name)
            tg.cancel_scope.cancel()

        await tg.start(watch_stop_signals, stop, stop)
        tg.start_soon(_extend_start_timeout, notifier)
        store = await stack.enter_async_context(
            Store.open(settings.db_path, faults=faults, give_up_s=None, check=True)
        )
        # READY=1 means the store takes writes: a read-only or full database is
        # waited for here too (the store logs it).
        with anyio.move_on_after(_QUICK_S) as quick:
            await store.wait_writable()
        if quick.cancelled_caught:
            notifier.status("waiting for the database to take writes")
            await store.wait_writable()
        tg.cancel_scope.cancel()
    if stopped_by:
        log.info(DAEMON_STOPPED, reason=f"{stopped_by[0]} received while opening the database")
        return None
    return store


async def _extend_start_timeout(notifier: Notifier) -> None:
    """While start-up waits for the database, ask systemd for more time (else its start
    timeout would kill the daemon and ``Restart=`` start it again, over and over)."""
    if not notifier.address:
        return
    await anyio.sleep(_QUICK_S)
    while True:
        notifier.notify(f"EXTEND_TIMEOUT_USEC={round(3 * _EXTEND_EVERY_S * 1e6)}")
        await anyio.sleep(_EXTEND_EVERY_S)


def _log_stopped(daemon: Daemon, failure: BaseException | None) -> None:
    if failure is None or isinstance(failure, anyio.get_cancelled_exc_class()):
        log.info(DAEMON_STOPPED, reason=daemon.stop_reason)
    else:
        reason = f"{type(failure).__name__}: {failure}"
        log.error(DAEMON_STOPPED, reason=reason, running=daemon.active)


async def _supervise(
    daemon: Daemon, front: Front | None = None, webhook: Webhook | None = None
) -> None:
    settings, notifier = daemon.settings, daemon.notifier
    remove_temporaries(settings.outbox)  # what a SIGKILL mid-publish left; results are redone
    remove_temporaries(settings.inbox / PROCESSING)  # an API submission's, never answered
    send, receive = anyio.create_memory_object_stream[Claimed](settings.max_concurrent_workflows)
    async with anyio.create_task_group() as tg:
        stop_requested = anyio.Event()
        await tg.start(_watch_signals, daemon, stop_requested, tg.cancel_scope)
        tg.start_soon(_stop_if_damaged, daemon, tg.cancel_scope)
        if webhook is not None:
            await tg.start(webhook.run)
            daemon.on_published.append(lambda _, summary: webhook.offer(summary))
        await abandon_orphans(daemon.store, settings.inbox)
        scheduler = _scheduler(daemon)
        await scheduler.prepare()  # its recovered slots are among the leftovers below
        with receive:
            for _ in range(2 * settings.max_concurrent_workflows):  # see Daemon._run_slots
                tg.start_soon(daemon.worker, receive.clone())
        leftovers = leftover_claims(settings.inbox)
        daemon.leftovers.update(leftovers)
        front_scope, front_stop, front_ended = anyio.CancelScope(), anyio.Event(), anyio.Event()
        if front is not None:
            await tg.start(_run_front, front, daemon, send, front_scope, front_stop, front_ended)
        intake_scope = anyio.CancelScope()
        intake = Intake(settings.inbox, settings.max_file_size, faults=daemon.faults)
        await tg.start(_run_intake, intake, send, intake_scope, daemon, leftovers)
        scheduler_scope = anyio.CancelScope()
        await tg.start(_run_scheduler, scheduler, send, scheduler_scope)
        notifier.ready(f"watching {settings.inbox}")
        log.info(
            DAEMON_STARTED,
            inbox=str(settings.inbox),
            outbox=str(settings.outbox),
            db_path=str(settings.db_path),
            pid=os.getpid(),
        )
        if notifier.address:
            tg.start_soon(daemon.heartbeat)
        # Cancel requests and retention run beside the workers, after READY: neither may
        # delay start-up (a resumed run takes its own pending cancel request).
        tg.start_soon(watch_cancels, daemon.store, daemon.engine)
        tg.start_soon(keep_history, daemon.store, settings)
        await stop_requested.wait()
        log.info(DAEMON_STOPPING, running=daemon.active, grace=settings.shutdown_grace)
        notifier.stopping("stopping")
        # No new submission during the grace; the ones in flight are answered and handed to
        # the workers before intake and the workers stop.
        front_stop.set()
        if front is not None:
            with anyio.move_on_after(_FRONT_STOP_S):
                await front_ended.wait()
        front_scope.cancel()
        scheduler_scope.cancel()
        intake_scope.cancel()
        daemon.stop_taking()
        with anyio.move_on_after(settings.shutdown_grace) as grace:
            await daemon.drained()
        if grace.cancelled_caught:
            daemon.stop_reason += (
                f"; {daemon.active} workflows still running after the "
                f"{settings.shutdown_grace:g}s grace resume at the next start"
            )
        if webhook is not None:
            await _flush_notifications(webhook, grace.deadline)
        tg.cancel_scope.cancel()


async def _flush_notifications(webhook: Webhook, deadline: float) -> None:
    """Give queued notifications what is left of the grace, at most ``_NOTIFY_FLUSH_S``;
    log the rest as dropped (their results are published)."""
    left = min(deadline - anyio.current_time(), _NOTIFY_FLUSH_S)
    with anyio.move_on_after(max(left, 0.0)):
        await webhook.flush()
    webhook.abandon("the daemon stopped before it was sent")


async def _run_front(
    front: Front,
    daemon: Daemon,
    send: MemoryObjectSendStream[Claimed],
    scope: anyio.CancelScope,
    stop: anyio.Event,
    ended: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``front`` until ``stop`` is set (it then closes cleanly) or ``scope`` is
    cancelled; ``started`` once it listens, ``ended`` once it has stopped."""
    try:
        with scope:
            async with front.serving(daemon, send):
                task_status.started()
                await stop.wait()
    finally:
        ended.set()


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


def _scheduler(daemon: Daemon) -> Scheduler:
    return Scheduler(
        daemon.settings,
        daemon.registry,
        daemon.store,
        daemon.leftovers,
        clock=clocks.CLOCK,
        crash=clocks.CRASH_AT,
        faults=daemon.faults,
    )


async def _run_scheduler(
    scheduler: Scheduler,
    send: MemoryObjectSendStream[Claimed],
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Fire the schedules until ``scope`` is cancelled (shutdown, with intake)."""
    with scope:
        await scheduler.run(send, task_status=task_status)


async def _feed_leftovers(
    leftovers: list[Path], send: MemoryObjectSendStream[Claimed], fed: anyio.Event
) -> None:
    for path in leftovers:
        await send.send(Claimed(path=path, source=path.name, data=None))
    fed.set()


async def _stop_if_damaged(daemon: Daemon, everything: anyio.CancelScope) -> None:
    """A damaged database stops the daemon at once (``serve`` raises the error: exit 3)."""
    damage = await daemon.store.wait_fatal()
    daemon.stop_reason = f"the database is damaged: {damage}"
    everything.cancel()


async def _watch_signals(
    daemon: Daemon,
    stop_requested: anyio.Event,
    everything: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The first SIGTERM or SIGINT starts a graceful stop; a second one stops at once."""

    def graceful(signum: signal.Signals) -> None:
        daemon.stop_reason = f"{signum.name} received"
        stop_requested.set()

    def at_once(signum: signal.Signals) -> None:
        daemon.stop_reason = f"a second {signum.name}: stopped without waiting for the grace"
        everything.cancel()

    await watch_stop_signals(graceful, at_once, task_status=task_status)
