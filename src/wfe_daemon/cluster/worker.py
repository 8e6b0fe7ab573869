"""The module every ``dask worker`` preloads, and the functions the daemon sends to it.

Start each worker with it::

    dask worker --preload wfe_daemon.cluster.worker tcp://scheduler:8786

:func:`dask_setup` builds the worker's own task context once: the task registry
(built-ins and the entry-point plugins installed where the worker runs), the worker's
own settings (its ``WFE_*`` variables or ``WFE_CONFIG`` file: ``data_dir``, HTTP
settings, ``enable_shell``...), its own timer of attempt deadlines and ``Services`` (the
shared HTTP client, on the worker's event loop). A bad configuration does not stop the
worker: it starts, logs the problem at ERROR, advertises no task types
(:func:`describe`, so the daemon sends it nothing) and answers any attempt with the
problem, naming the worker. (Failing its start instead would leave the problem in the
worker's own log, out of the daemon's sight, and a nanny or a service manager would
restart it in a loop.)

An attempt's output crosses the wire as the task returned it (as JSON): the daemon keeps
it for the references of later nodes and redacts what it stores and shows, as it does
with an output of its own. An error is worded here, by the engine's ``failure_message``.

The daemon sends three module-level functions (pickled by reference) and JSON strings:

- :func:`run_attempt`, one call per node attempt (:mod:`~wfe_daemon.cluster.wire`);
- :func:`cancel_attempts`, through ``client.run``, to stop attempts by key or prefix
  (``client.cancel`` does not stop a coroutine that already runs);
- :func:`describe`, through ``client.run``: version, task types, readiness.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
import weakref
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import wfe_daemon
from wfe_daemon.cluster.wire import AttemptReply, AttemptRequest
from wfe_daemon.config import Settings, load_settings
from wfe_daemon.core.model import hide_url_secrets
from wfe_daemon.errors import ParamsError, TaskFailed, WfeError
from wfe_daemon.runtime.deadlines import Deadlines
from wfe_daemon.runtime.engine import OWN_CANCEL, encode_output, failure_message
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Services, TaskContext, being_cancelled
from wfe_daemon.tasks import BUILTINS

if TYPE_CHECKING:
    from distributed import Worker

__all__ = [
    "PRELOAD",
    "cancel_attempts",
    "dask_setup",
    "dask_teardown",
    "describe",
    "run_attempt",
]

PRELOAD: Final = __name__
"""What ``dask worker --preload`` names."""
CANCEL_WAIT_S: Final = 5.0
"""How long a cancel waits for the attempts it cancelled to end before it returns."""

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Context:
    """One worker's task context, built once by :func:`dask_setup`."""

    address: str
    registry: TaskRegistry | None = None
    settings: Settings | None = None
    services: Services = field(default_factory=Services)
    deadlines: Deadlines = field(default_factory=Deadlines)
    problem: str | None = None
    """Why this worker cannot run attempts (its configuration), or ``None``."""
    running: dict[str, asyncio.Task[AttemptReply]] = field(default_factory=dict)
    """The attempts running now, by key."""
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)


_CONTEXTS: weakref.WeakKeyDictionary[Worker, _Context] = weakref.WeakKeyDictionary()
"""Each preloaded worker's context (one per worker object: a process may hold several)."""


async def dask_setup(worker: Worker) -> None:
    """Build ``worker``'s task context (the preload's entry point, run once at start)."""
    _show_logs()
    context = _Context(worker.address)
    try:
        await _build(context)
    except Exception as exc:
        context.problem = str(exc) if isinstance(exc, WfeError) else f"{type(exc).__name__}: {exc}"
        log.error("wfe-daemon worker %s cannot run attempts: %s", worker.address, context.problem)
    else:
        assert context.registry is not None and context.settings is not None
        log.info(
            "wfe-daemon %s worker ready: %d task types, data_dir %s",
            wfe_daemon.__version__,
            len(context.registry),
            context.settings.data_dir,
        )
    _CONTEXTS[worker] = context


async def _build(context: _Context) -> None:
    """The worker's settings (its own environment), registry and services."""
    from wfe_daemon.tasks.http.task import open_http_client

    settings = load_settings(environ=os.environ)
    registry = TaskRegistry.load(BUILTINS)
    http = await context.resources.enter_async_context(open_http_client(settings))
    context.settings, context.registry = settings, registry
    context.services = Services(http=http)


async def dask_teardown(worker: Worker) -> None:
    """Cancel the attempts still running on ``worker`` and close its services."""
    context = _CONTEXTS.pop(worker, None)
    if context is None:
        return
    await _cancel(context, list(context.running))
    await context.resources.aclose()


async def run_attempt(request: str) -> str:
    """Run one node attempt on this worker: an ``AttemptRequest`` in, an ``AttemptReply`` out.

    The task runs on the worker's event loop as the engine runs it locally (the same
    ``TaskContext``, ``attempt_timeout`` set) within the request's timeout; when that
    expires the attempt is cancelled, and nothing of it is left running. A task's failure,
    a timeout, a cancel (:func:`cancel_attempts`), a type this worker lacks or a worker not
    set up by the preload are all replies, never exceptions.
    """
    worker = _this_worker()
    context = _CONTEXTS.get(worker)
    try:
        parsed = AttemptRequest.from_json(request)
    except Exception as exc:
        return _refusal(worker.address, f"cannot read the attempt request: {exc}")
    if context is None:
        return _refusal(
            worker.address,
            f"was not started with --preload {PRELOAD}; restart it with that option",
        )
    if context.problem is not None:
        return _refusal(
            worker.address,
            f"cannot run attempts: {context.problem}; fix its configuration and restart it",
        )
    assert context.registry is not None
    if parsed.task_type not in context.registry:
        return _refusal(
            worker.address,
            f"no task type {parsed.task_type!r} here;"
            " install the plugin that provides it on every worker",
        )
    try:
        return (await _supervise(context, parsed)).to_json()
    except Exception as exc:  # a reply, never a traceback in dask's log (which quotes params)
        log.debug("attempt %s failed on worker %s", parsed.key, worker.address, exc_info=True)
        return _refusal(worker.address, f"could not run the attempt: {failure_message(exc)}")


async def _supervise(context: _Context, request: AttemptRequest) -> AttemptReply:
    """Run the attempt as a task of its own, registered by key so it can be cancelled."""
    attempt = asyncio.create_task(_attempt(context, request), name=request.key)
    context.running[request.key] = attempt
    # Listed until it has ended, even past this call (cancelled, and slow to stop).
    attempt.add_done_callback(lambda done: _forget(context, request.key, done))
    try:
        await asyncio.wait({attempt})
    finally:
        if not attempt.done():  # this call was cancelled (the worker is closing)
            attempt.cancel()
            await asyncio.wait({attempt}, timeout=CANCEL_WAIT_S)
    if attempt.cancelled():
        return AttemptReply(worker=context.address, error=f"cancelled on worker {context.address}")
    return attempt.result()


async def _attempt(context: _Context, request: AttemptRequest) -> AttemptReply:
    """What the engine's ``_attempt`` does around the task, as a reply."""
    assert context.registry is not None and context.settings is not None
    address, settings = context.address, context.settings
    task = context.registry.get(request.task_type)
    ctx = TaskContext(
        request.run_id,
        request.workflow,
        request.node_id,
        request.attempt,
        settings,
        context.services,
        context.deadlines,
        request.timeout,
    )
    scope = context.deadlines.scope(request.timeout)
    try:
        with scope:
            # Checked again against this worker's schema: a plugin here may differ.
            problems = context.registry.check_params(task.type, request.params, resolved=True)
            if problems:
                raise ParamsError("params: " + "; ".join(problems))
            output = await task.execute(request.params, ctx)
    except (Exception, SystemExit, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError) and being_cancelled():
            raise  # cancelled: by the daemon, or the worker is closing
        # SystemExit out of an asyncio task stops the event loop: the whole worker.
        failure = exc if isinstance(exc, Exception) else TaskFailed(f"SystemExit: {exc}")
        if isinstance(exc, asyncio.CancelledError):
            failure = TaskFailed(OWN_CANCEL)  # the task's own, as the engine words it
        return AttemptReply(
            worker=address,
            error=failure_message(failure, request.timeout if scope.expired else None),
            timed_out=scope.expired,
            traceback=hide_url_secrets("".join(traceback.format_exception(exc))),
        )
    try:
        data = encode_output(output)
    except ValueError as exc:
        return AttemptReply(worker=address, error=str(TaskFailed(str(exc))))
    if len(data) > settings.max_output_size:
        return AttemptReply(
            worker=address,
            error=str(
                TaskFailed(
                    f"output is {len(data)} bytes, over max_output_size {settings.max_output_size}"
                )
            ),
        )
    return AttemptReply(worker=address, output_json=data.decode())


async def cancel_attempts(
    keys: Iterable[str] = (),
    prefix: str | None = None,
    keep: str | None = None,
    dask_worker: Worker | None = None,
) -> list[str]:
    """Cancel the attempts running on this worker whose key is in ``keys``, or starts with
    ``prefix`` but not with ``keep``; return the keys cancelled, sorted.

    Called by the daemon through ``client.run`` (which passes ``dask_worker``). Returns once
    the cancelled attempts have ended (at most :data:`CANCEL_WAIT_S`): their slots are free
    again, and each reply says it was cancelled.
    """
    context = _CONTEXTS.get(dask_worker if dask_worker is not None else _this_worker())
    if context is None:
        return []
    wanted = {keys} if isinstance(keys, str) else set(keys)

    def chosen_by_prefix(key: str) -> bool:
        if prefix is None or not key.startswith(prefix):
            return False
        return keep is None or not key.startswith(keep)

    chosen = [key for key in context.running if key in wanted or chosen_by_prefix(key)]
    return sorted(await _cancel(context, chosen))


def _forget(context: _Context, key: str, attempt: asyncio.Task[AttemptReply]) -> None:
    """Drop the ended ``attempt`` from the running ones (unless ``key`` names another)."""
    if context.running.get(key) is attempt:
        del context.running[key]


async def _cancel(context: _Context, keys: list[str]) -> list[str]:
    """Cancel the attempts ``keys`` and wait (a while) until they have ended; the keys of
    those still running when asked (one that had just finished keeps its own reply)."""
    attempts = {key: context.running[key] for key in keys if key in context.running}
    cancelled = [key for key, attempt in attempts.items() if attempt.cancel()]
    if cancelled:
        await asyncio.wait([attempts[key] for key in cancelled], timeout=CANCEL_WAIT_S)
    return cancelled


def describe(dask_worker: Worker | None = None) -> dict[str, Any]:
    """This worker as the daemon checks it at connect: ``address``, ``version`` (of
    wfe-daemon), ``types`` (sorted; empty unless ready), ``ready`` (the preload built its
    context), ``problem`` (why it cannot run attempts, or ``None``) and ``running`` (the
    keys of the attempts running now, sorted)."""
    worker = dask_worker if dask_worker is not None else _this_worker()
    context = _CONTEXTS.get(worker)
    if context is None:
        problem: str | None = f"not started with --preload {PRELOAD}"
    else:
        problem = context.problem
    registry = context.registry if context is not None else None
    return {
        "address": worker.address,
        "version": wfe_daemon.__version__,
        "types": sorted(task.type for task in registry) if registry is not None else [],
        "ready": problem is None,
        "problem": problem,
        "running": sorted(context.running) if context is not None else [],
    }


def _refusal(address: str, what: str) -> str:
    return AttemptReply(worker=address, error=f"worker {address}: {what}").to_json()


def _this_worker() -> Worker:
    """The worker running the current task."""
    from distributed import get_worker

    return get_worker()


def _show_logs() -> None:
    """Log through dask's handler (stderr), unless the operator's logging config set ours."""
    handlers = logging.getLogger("distributed").handlers
    if log.handlers or not handlers:  # configured already, or dictConfig: leave it be
        return
    for handler in handlers:
        log.addHandler(handler)
    log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
