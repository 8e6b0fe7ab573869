"""The daemon's Dask client: node attempts of the ``remote_types`` run on a Dask cluster.

One :class:`DaskExecutor` per process (the daemon, or a one-shot ``execute``), opened
with :meth:`DaskExecutor.running`. It connects in the background and keeps connected
(backoff up to 30 s), so the daemon starts and runs local nodes whatever the cluster's
state; :attr:`DaskExecutor.attempts` are the engine's attempt functions of the remote
types (the engine's ``executors``). ``distributed`` is imported here only, lazily.

At each connect the scheduler must run the daemon's wfe-daemon version (else the cluster
is refused, ``cluster.mismatch``, and tried again later); each worker is described
(:func:`~wfe_daemon.cluster.worker.describe`): a worker of another version, or one not
ready, is avoided (``cluster.mismatch``), and an attempt goes only to the ready workers
that have its task type. It then cancels, before it sends any attempt, every attempt of
its own instance still running on the workers: those an earlier life of the daemon left,
and those of this life whose connection was lost (their futures failed with it, and the
engine retries them; Dask would leave them running, and the node would run twice).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import anyio.abc
import orjson
import structlog

import wfe_daemon
from wfe_daemon.cluster.state import ClusterState
from wfe_daemon.cluster.wire import AttemptReply, AttemptRequest, attempt_key, instance_prefix
from wfe_daemon.config import Settings
from wfe_daemon.core.masking import MASKER
from wfe_daemon.errors import TaskError, TaskFailed, TaskTimeout
from wfe_daemon.runtime.task import Output, Params, Task, TaskContext
from wfe_daemon.runtime.wrappers import AttemptFn

__all__ = ["DaskExecutor", "daemon_instance"]

log = structlog.get_logger()

CLUSTER_CONNECTED: Final = "cluster.connected"
CLUSTER_UNREACHABLE: Final = "cluster.unreachable"
CLUSTER_MISMATCH: Final = "cluster.mismatch"
CLUSTER_CLEANED: Final = "cluster.cleaned"
CLUSTER_ATTEMPT: Final = "cluster.attempt"
CLUSTER_WORKERS: Final = "cluster.workers"

CONNECT_TIMEOUT_S: Final = 10.0
"""How long one try to reach the scheduler lasts."""
FIRST_TRY_WAIT_S: Final = 15.0
"""How long an attempt waits for the first try to connect to end (start-up, ``execute``)."""
MAX_BACKOFF_S: Final = 30.0
WATCH_S: Final = 1.0
"""How often the connection and the set of workers are looked at."""
WATCH_TIMEOUT_S: Final = 5.0
"""A scheduler that does not tell its workers within this long is taken as lost."""
REPEAT_WARNING_S: Final = 60.0
"""While the cluster stays unreachable, the warning is repeated this often."""
CANCEL_SEND_S: Final = 5.0
"""How long telling the workers to cancel an attempt may take."""
CLOSE_S: Final = 5.0


def daemon_instance(settings: Settings) -> str:
    """This daemon's name in its attempt keys: the same across restarts (a hash of the
    host and the database path), so a new life finds what an earlier one left."""
    seed = f"{socket.gethostname()}\0{settings.db_path}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


class _Refused(Exception):
    """Raised when the scheduler reached is not one to use (another wfe-daemon version)."""


class DaskExecutor:
    """Node attempts on a Dask cluster, for the task types in ``settings.remote_types``.

    Args:
        settings: ``dask_scheduler``, the TLS files and ``remote_types``.
        clean_up: this is the daemon, whose instance is the same across its lives, so
            each connect also cancels what an earlier life left on the workers
            (``execute``: false, with an instance of its own, so it never cancels anyone
            else's attempts).
    """

    def __init__(self, settings: Settings, *, clean_up: bool) -> None:
        self.settings = settings
        self.clean_up = clean_up
        self.instance = daemon_instance(settings) if clean_up else "x" + secrets.token_hex(6)
        self.boot = secrets.token_hex(4)
        """This life of the daemon, in its attempt keys."""
        self.state = ClusterState(settings.dask_scheduler)
        self.attempts: Mapping[str, AttemptFn] = dict.fromkeys(settings.remote_types, self.attempt)
        """The engine's ``executors``: this executor's attempt for every remote type."""
        self._client: Any = None
        self._types: dict[str, frozenset[str]] = {}
        """The task types of each usable worker, by address."""
        self._seen_workers: set[str] = set()
        """Every worker described, usable or not."""
        self._tried = asyncio.Event()
        self._warned: tuple[str | None, float] = (None, 0.0)
        self._cancels: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DaskExecutor]:
        """Keep connected while the block runs; on exit, the cancel messages sent (a few
        seconds at most) and the client closed."""
        async with anyio.create_task_group() as watcher:
            watcher.start_soon(self._keep_connected)
            try:
                async with anyio.create_task_group() as self._cancels:
                    yield self
            finally:
                self._cancels = None
                watcher.cancel_scope.cancel()
                with anyio.move_on_after(CLOSE_S, shield=True):
                    await self._drop()

    # -- the connection --------------------------------------------------------------

    async def _keep_connected(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._connect()
            except Exception as exc:  # any failure to reach or accept the cluster heals later
                await self._drop()
                self._unreachable(_reason(exc), mismatch=isinstance(exc, _Refused))
                self._tried.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            self._tried.set()
            since = anyio.current_time()
            await self._watch()
            await self._drop()
            if anyio.current_time() - since >= MAX_BACKOFF_S:
                delay = 1.0  # lost after a steady while: try again at once
            else:  # lost soon after connecting (a flapping link): keep backing off
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)

    async def _connect(self) -> None:
        from distributed import Client

        options: dict[str, Any] = {
            "asynchronous": True,
            "timeout": CONNECT_TIMEOUT_S,
            "set_as_default": False,
            "security": self._security(),
        }
        address = self.settings.dask_scheduler
        if "://" in address:
            self._client = Client(address, **options)  # type: ignore[no-untyped-call]
        else:
            self._client = Client(scheduler_file=address, **options)  # type: ignore[no-untyped-call]
        with anyio.fail_after(CONNECT_TIMEOUT_S + 5):
            await self._client
            versions = await self._client.get_versions(packages=["wfe_daemon"])
        theirs = versions["scheduler"]["packages"].get("wfe_daemon")
        if theirs != wfe_daemon.__version__:
            raise _Refused(
                f"the scheduler at {self._client.scheduler.address} runs wfe-daemon {theirs},"
                f" this daemon {wfe_daemon.__version__}: install the same version everywhere"
            )
        with anyio.fail_after(CONNECT_TIMEOUT_S + CANCEL_SEND_S):  # a hung worker: try again
            await self._describe_workers()
            await self._cancel_left_over()
        self.state.connected, self.state.problem = True, None
        self._warned = (None, 0.0)
        log.info(
            CLUSTER_CONNECTED,
            scheduler=self._client.scheduler.address,
            workers=len(self._types),
            version=theirs,
            types=sorted(set().union(*self._types.values())),
        )

    def _security(self) -> Any:
        settings = self.settings
        if not settings.dask_tls:
            return None
        from distributed.security import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=str(settings.dask_tls_ca_file),
            tls_client_cert=str(settings.dask_tls_cert),
            tls_client_key=str(settings.dask_tls_key),
            require_encryption=True,
        )

    async def _describe_workers(self) -> None:
        """Keep the task types of every usable worker; log the others."""
        from wfe_daemon.cluster.worker import describe

        found = await self._client.run(describe, on_error="return")
        self._seen_workers = set(found)
        types: dict[str, frozenset[str]] = {}
        for address, info in found.items():
            problem = _worker_problem(info)
            if problem is None:
                types[address] = frozenset(info["types"])
            else:
                log.warning(CLUSTER_MISMATCH, worker=address, error=problem)
        if self.state.connected and set(types) != set(self._types):
            log.info(CLUSTER_WORKERS, workers=len(types), addresses=sorted(types))
        self._types = types
        self.state.workers = len(types)

    async def _cancel_left_over(self) -> None:
        """Cancel every attempt of this instance on the workers: no future of the new
        client awaits one yet, so each is an earlier life's or a lost connection's."""
        from wfe_daemon.cluster.worker import cancel_attempts

        done = await self._client.run(
            cancel_attempts, prefix=instance_prefix(self.instance), on_error="return"
        )
        keys = sorted(key for found in done.values() if isinstance(found, list) for key in found)
        if keys:
            log.info(CLUSTER_CLEANED, cancelled=len(keys), keys=keys[:20])

    async def _watch(self) -> None:
        """Return once the connection to the scheduler is lost; follow the workers."""
        client = self._client
        first = client.scheduler_comm
        lost = f"lost the connection to the scheduler at {self.state.scheduler}"
        while True:
            await anyio.sleep(WATCH_S)
            comm = client.scheduler_comm
            # Another comm: the client reconnected on its own between two looks, and its
            # attempts failed; this connect's clean-up must run again (a new client).
            if client.status != "running" or comm is not first or comm.comm.closed():
                break
            try:
                # An asynchronous client's cached scheduler_info() lists no workers.
                with anyio.fail_after(WATCH_TIMEOUT_S):
                    identity = await client.scheduler.identity(n_workers=-1)
            except Exception as exc:  # no answer from the scheduler: gone, or hung
                lost += f" ({_reason(exc)})"
                break
            if set(identity.get("workers", {})) != self._seen_workers:
                try:
                    with anyio.fail_after(CONNECT_TIMEOUT_S):
                        await self._describe_workers()
                except Exception as exc:  # a worker went away meanwhile: the next look sees
                    log.debug("cluster.describe_failed", error=_reason(exc))
        self._unreachable(lost)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        self._types, self._seen_workers = {}, set()
        self.state.connected, self.state.workers = False, 0
        if client is not None:
            with anyio.move_on_after(CLOSE_S, shield=True):
                try:
                    await client.close(timeout=CLOSE_S)
                except Exception as exc:  # closing a broken client may fail: it is gone anyway
                    log.debug("cluster.close_failed", error=_reason(exc))

    def _unreachable(self, problem: str, *, mismatch: bool = False) -> None:
        """Record the problem; warn when it changes, then every minute while it lasts."""
        self.state.connected, self.state.workers, self.state.problem = False, 0, problem
        now = anyio.current_time()
        last, at = self._warned
        if problem != last or now - at >= REPEAT_WARNING_S:
            event = CLUSTER_MISMATCH if mismatch else CLUSTER_UNREACHABLE
            log.warning(event, scheduler=self.state.scheduler, error=problem)
            self._warned = (problem, now)

    # -- attempts --------------------------------------------------------------------

    async def attempt(self, task: Task, params: Params, ctx: TaskContext) -> Output:
        """Run one attempt on a worker that has ``task``'s type (the engine's attempt
        function); its output, or a ``TaskError`` worded as a local attempt's would be."""
        if not self._tried.is_set():
            with anyio.move_on_after(FIRST_TRY_WAIT_S):
                await self._tried.wait()
        request, data = self._request(task, params, ctx)
        client = self._client
        if client is None or not self.state.connected:
            raise TaskFailed(
                f"the Dask cluster at {self.state.scheduler} is not connected"
                f" ({self.state.problem}); the attempt was not sent"
            )
        workers = sorted(a for a, types in self._types.items() if task.type in types)
        if not workers:
            raise TaskFailed(
                f"no worker of the Dask cluster has task type {task.type!r}:"
                " install it (the same wfe-daemon version and plugins) on the workers"
            )
        started, worker, outcome = time.perf_counter(), "", "failure"
        self.state.running += 1
        try:
            sent = await self._result(client, request.key, data, workers)
            reply = AttemptReply.from_json(sent)
            worker = reply.worker
            if reply.error is not None:
                if reply.traceback:
                    shown = MASKER.text(reply.traceback)  # it may quote a secret's value
                    log.debug("cluster.traceback", key=request.key, traceback=shown)
                raise (TaskTimeout if reply.timed_out else TaskError)(reply.error)
            assert reply.output_json is not None
            output = orjson.loads(reply.output_json)
            outcome = "success"
            return output
        except _WorkerDied as exc:
            worker = exc.worker
            raise TaskFailed(f"worker {worker} died during the attempt") from None
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.state.running -= 1
            self._log_attempt(request, ctx, worker, outcome, time.perf_counter() - started)

    def _request(self, task: Task, params: Params, ctx: TaskContext) -> tuple[AttemptRequest, str]:
        """The attempt and its JSON; refused when its params hold a secret and TLS is off."""
        timeout = ctx.attempt_timeout or self.settings.task_timeout
        key = attempt_key(self.instance, self.boot, ctx.run_id, ctx.node_id, ctx.attempt)
        request = AttemptRequest(
            key, task.type, params, ctx.run_id, ctx.workflow, ctx.node_id, ctx.attempt, timeout
        )
        try:
            data = request.to_json()
        except ValueError as exc:
            raise TaskFailed(f"params cannot be sent to the Dask cluster: {exc}") from None
        if not self.settings.dask_tls and MASKER.text(data) != data:
            raise TaskFailed(
                "params hold a secret, which is sent to the Dask cluster only over TLS: set"
                " dask_tls_ca_file, dask_tls_cert and dask_tls_key (and a tls:// scheduler),"
                f" or run {task.type!r} locally (leave it out of remote_types)"
            )
        return request, data

    async def _result(self, client: Any, key: str, data: str, workers: list[str]) -> str:
        """Submit the attempt and await its reply; Dask's failures as ``TaskFailed``, this
        task's cancel as a cancel (the workers are told, from a task of the executor's own).

        Dask's own cancel of the future (``FutureCancelledError``, a
        ``concurrent.futures.CancelledError``, not asyncio's) is a failed attempt.
        """
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        from wfe_daemon.cluster.worker import run_attempt

        try:
            future = client.submit(
                run_attempt,
                data,
                key=key,
                pure=False,
                retries=0,
                workers=workers,
                allow_other_workers=False,
            )
            result: str = await future
            return result
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                self._cancel_later(client, key, future)
                raise
            raise TaskFailed("the Dask cluster cancelled the attempt") from None
        except FutureCancelledError as exc:
            if exc.reason == "scheduler-connection-lost" or client is not self._client:
                raise TaskFailed(
                    f"lost the connection to the Dask scheduler at {self.state.scheduler}"
                    " during the attempt"
                ) from None
            raise TaskFailed(f"the Dask cluster cancelled the attempt ({exc.reason})") from None
        except KilledWorker as exc:
            raise _WorkerDied(_address(exc.last_worker)) from None
        except Exception as exc:  # whatever Dask raises about the future is a failed attempt
            raise TaskFailed(f"the Dask cluster failed the attempt: {_reason(exc)}") from None

    def _cancel_later(self, client: Any, key: str, future: Any) -> None:
        if self._cancels is not None:
            self._cancels.start_soon(self._cancel_remote, client, key, future)

    async def _cancel_remote(self, client: Any, key: str, future: Any) -> None:
        """Cancel the future and stop the attempt on the workers (Dask alone would leave a
        running coroutine running)."""
        from wfe_daemon.cluster.worker import cancel_attempts

        with anyio.move_on_after(CANCEL_SEND_S, shield=True):
            try:
                await client.cancel([future], force=True)
                await client.run(cancel_attempts, keys=[key], on_error="return")
            except Exception as exc:  # the cluster may be gone: nothing is left to stop
                log.warning("cluster.cancel_failed", key=key, error=_reason(exc))

    def _log_attempt(
        self, request: AttemptRequest, ctx: TaskContext, worker: str, outcome: str, took: float
    ) -> None:
        log.info(
            CLUSTER_ATTEMPT,
            executor="dask",
            worker=worker or None,
            run_id=ctx.run_id,
            workflow=ctx.workflow,
            node_id=ctx.node_id,
            task_type=request.task_type,
            attempt=ctx.attempt,
            duration=round(took, 6),
            outcome=outcome,
        )
        for seen in self.state.on_attempt:
            seen(request.task_type, worker, outcome == "success")


class _WorkerDied(Exception):
    def __init__(self, worker: str) -> None:
        super().__init__(worker)
        self.worker = worker


def _address(worker: Any) -> str:
    return str(getattr(worker, "address", worker))


def _worker_problem(info: Any) -> str | None:
    """Why a worker's ``describe`` rules it out, or ``None``."""
    if isinstance(info, BaseException):
        return f"cannot describe itself ({_reason(info)}); it gets no attempts"
    if info.get("version") != wfe_daemon.__version__:
        return (
            f"runs wfe-daemon {info.get('version')}, this daemon {wfe_daemon.__version__}:"
            " it gets no attempts until the same version is installed"
        )
    if not info.get("ready"):
        return f"not ready: {info.get('problem')}; it gets no attempts"
    return None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
