"""Run one workflow: start each node the moment its trigger rule is met.

One ``Engine`` serves the whole process: its semaphores bound the nodes running at once
across all workflows (``max_concurrent_tasks``) and per task type (``task_limits``).
A run is an asyncio task group that owns every task of the run: a dispatcher task takes
ready nodes in order and spawns one task per node no faster than they take slots, so a
100,000-node fan-out does not hold 100,000 idle tasks. A node's task holds its slots with
``async with`` for each attempt, never across a retry's backoff.
Every transition is queued to the store in the order it happened.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import ChainMap, deque
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import datetime
from typing import Any, Final

import orjson
import structlog

from wfe_daemon.clock import now_iso
from wfe_daemon.config import Settings
from wfe_daemon.core import dag, refs, rules
from wfe_daemon.core.inputs import reserved_values
from wfe_daemon.core.masking import MASKER
from wfe_daemon.core.model import (
    NodeDef,
    NodeStatus,
    RunStatus,
    WorkflowDef,
    hide_url_secrets,
)
from wfe_daemon.core.model import redact_secrets as redact
from wfe_daemon.core.nodestate import NodeState
from wfe_daemon.core.strictjson import too_deep, unfit
from wfe_daemon.core.summary import RunSummary, build_summary
from wfe_daemon.errors import ParamsError, TaskError, TaskFailed, TaskTimeout
from wfe_daemon.logs import (
    NODE_FINISHED,
    NODE_INTERRUPTED,
    NODE_RETRY,
    WORKFLOW_FINISHED,
    WORKFLOW_STARTED,
)
from wfe_daemon.runtime.deadlines import Deadlines
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Services, TaskContext, being_cancelled
from wfe_daemon.runtime.wrappers import AttemptFn, AttemptHook, build_attempt, call_task
from wfe_daemon.store.database import Store

SUCCESS, FAILED, SKIPPED = NodeStatus.SUCCESS, NodeStatus.FAILED, NodeStatus.SKIPPED
CANCEL_REASON = "run cancelled by operator"
_UNSUCCESSFUL = frozenset({RunStatus.FAILED, RunStatus.PARTIAL_SUCCESS})
MAX_BACKOFF_S = 3600.0
"""The longest wait between two attempts of a node, whatever its retries and retry_delay."""


_UNLIMITED = nullcontext()
"""The slot of a task type without a limit of its own: always free."""


class Engine:
    """Runs workflows through the registry's tasks and records them in the store.

    Args:
        registry: the task types.
        store: where runs and nodes are recorded.
        settings: limits and default timeouts.
        executor: the innermost attempt call of every task type.
        executors: the innermost attempt call of the task types run elsewhere, by type
            (the Dask executor's ``remote_types``); they replace ``executor`` for those.
        hooks: called after every attempt (metrics).
        services: process-wide resources handed to tasks through their context.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        store: Store,
        settings: Settings,
        *,
        executor: AttemptFn = call_task,
        executors: Mapping[str, AttemptFn] | None = None,
        hooks: tuple[AttemptHook, ...] = (),
        services: Services | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.services = Services() if services is None else services
        # asyncio.Semaphore rather than anyio's CapacityLimiter: taking a free slot costs
        # about 1 µs against 12 (the limiter yields to the loop), on every attempt's path.
        self.slots = asyncio.Semaphore(settings.max_concurrent_tasks)
        self.type_slots = {t: asyncio.Semaphore(n) for t, n in settings.task_limits.items()}
        chosen = executors or {}
        self.attempts = {
            task.type: build_attempt(task, chosen.get(task.type, executor), hooks)
            for task in registry
        }
        self.opens_http = frozenset(t.type for t in registry if getattr(t, "uses_http", False))
        """Types whose attempts open a lazily opened HTTP client before their timeout starts
        (:meth:`Services.open_now`)."""
        self.deadlines = Deadlines()
        """Every attempt's timeout, on one timer."""
        self.active_runs: dict[int, _Run] = {}
        """The runs this engine is executing now, by run id (for :meth:`cancel`)."""

    async def run(
        self,
        workflow: WorkflowDef,
        *,
        source: str | None = None,
        source_path: str | None = None,
        definition: str | None = None,
    ) -> RunSummary:
        """Record a new run of ``workflow``, run it to the end and return its summary.

        ``definition`` is the workflow's JSON as the database keeps it (secrets redacted:
        see :func:`~wfe_daemon.core.model.public_definition`).

        Cancelling the caller leaves the run RUNNING in the store, to be resumed.
        """
        started_perf, started_at = time.perf_counter(), now_iso()
        run_id = await self.store.create_run(
            name=workflow.name,
            started_at=started_at,
            nodes=[(node.id, node.type) for node in workflow.nodes],
            source=source,
            source_path=source_path,
            definition=definition,
            idempotency_key=workflow.idempotency_key,
        )
        return await self.resume(
            workflow, run_id, started_at=started_at, source=source, started_perf=started_perf
        )

    async def resume(
        self,
        workflow: WorkflowDef,
        run_id: int,
        *,
        started_at: str,
        source: str | None = None,
        done: Mapping[str, NodeState] | None = None,
        started_perf: float | None = None,
    ) -> RunSummary:
        """Run (or go on with) run ``run_id``; nodes in ``done`` keep their final state
        (a node there that is not final runs, going on from its count of attempts).

        ``started_perf`` is ``time.perf_counter()`` at ``started_at`` when this process started
        the run; without it (a resumed run) the duration is taken from the wall clock.

        When ``done`` is given (a resumed or retried run), a cancel request left for the run
        while no process ran it is taken and applied at once.
        """
        run = _Run(self, workflow, run_id, started_at, source, done or {}, started_perf)
        if done is not None and await self.store.take_cancel_request(run_id):
            run.stop(NodeStatus.CANCELLED, CANCEL_REASON)
        self.active_runs[run_id] = run
        try:
            return await run.execute()
        finally:
            del self.active_runs[run_id]

    def cancel(self, run_id: int) -> bool:
        """Cancel run ``run_id`` if this engine is executing it; whether it is.

        Running nodes end CANCELLED, the nodes not started are SKIPPED, and the run ends
        CANCELLED (``resume`` returns its summary as usual). A run already ending is left
        to end as it would have.
        """
        run = self.active_runs.get(run_id)
        if run is None:
            return False
        run.stop(NodeStatus.CANCELLED, CANCEL_REASON)
        return True


class _Run:
    """One execution of one workflow: the scheduler state and its tasks."""

    def __init__(
        self,
        engine: Engine,
        workflow: WorkflowDef,
        run_id: int,
        started_at: str,
        source: str | None,
        done: Mapping[str, NodeState],
        started_perf: float | None,
    ) -> None:
        self.engine = engine
        self.started_perf = started_perf
        self.store = engine.store
        self.workflow = workflow
        self.run_id = run_id
        self.started_at = started_at
        self.source = source
        self.states = {node.id: done.get(node.id) or NodeState(node) for node in workflow.nodes}
        self.children = dag.dependents({node.id: node.depends_on for node in workflow.nodes})
        self.outputs = {id_: s.output for id_, s in self.states.items() if s.status is SUCCESS}
        self.ready: deque[NodeState] = deque()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.unstarted: set[str] = set()
        """Nodes spawned by the dispatcher that have not taken a slot yet (nor ended)."""
        self.slot_taken = asyncio.Event()
        self.stopped: tuple[NodeStatus, str] | None = None
        self.dispatcher: asyncio.Task[None] | None = None
        self.log = structlog.get_logger().bind(run_id=run_id, workflow=workflow.name)

    async def execute(self) -> RunSummary:
        self.log.info(WORKFLOW_STARTED, nodes=len(self.states), source=self.source)
        self._seed()
        timeout = self.workflow.timeout or self.engine.settings.max_workflow_duration
        deadline = asyncio.get_running_loop().call_later(
            timeout, self.stop, FAILED, f"workflow timed out after {timeout:g}s"
        )
        try:
            async with asyncio.TaskGroup() as group:
                self.dispatcher = group.create_task(self._dispatch(group))
                if self.stopped is not None:  # cancelled before it started
                    self.dispatcher.cancel()
        finally:
            deadline.cancel()
        return await self._finish()

    def stop(self, status: NodeStatus, reason: str) -> None:
        """End the run early: running nodes end ``status`` with ``reason``, the rest SKIPPED.

        Once every node has ended (the run is writing its final state) it is too late.
        """
        if self.stopped is not None or all(s.status.is_final for s in self.states.values()):
            return
        self.stopped = (status, reason)
        if self.dispatcher is not None:
            self.dispatcher.cancel()
        for task in self.running.values():
            task.cancel()

    @property
    def _cancelled(self) -> bool:
        return self.stopped is not None and self.stopped[0] is NodeStatus.CANCELLED

    # -- scheduling -----------------------------------------------------------------------

    def _seed(self) -> None:
        """Count what each node waits for; decide the nodes that wait for nothing."""
        ended = []
        for state in self.states.values():
            if state.status.is_final:
                ended.append(state)
            else:
                state.status = NodeStatus.PENDING
                state.waiting = len(state.node.depends_on)
        for state in ended:  # nodes a resumed run keeps as they were
            for child_id in self.children[state.node.id]:
                self.states[child_id].waiting -= 1
        for state in list(self.states.values()):
            if not state.status.is_final and state.waiting == 0:
                self._decide(state)

    def _decide(self, state: NodeState) -> None:
        """All dependencies ended: queue the node, or skip it and everything that follows."""
        verdict = self._verdict(state)
        if verdict is None:
            self.ready.append(state)
            self.changed.set()
            return
        stack = [(state, verdict)]
        while stack:
            skipped, (reason, cause) = stack.pop()
            self._skip(skipped, reason, cause)
            for child_id in self.children[skipped.node.id]:
                child = self.states[child_id]
                child.waiting -= 1
                if child.waiting == 0:
                    child_verdict = self._verdict(child)
                    if child_verdict is None:
                        self.ready.append(child)
                        self.changed.set()
                    else:
                        stack.append((child, child_verdict))

    def _verdict(self, state: NodeState) -> rules.Skip | None:
        deps = [self.states[d] for d in state.node.depends_on]
        return rules.verdict(state.node.trigger_rule, deps)

    def _release_children(self, state: NodeState) -> None:
        """A node reached a final status: its children may now be decided."""
        for child_id in self.children[state.node.id]:
            child = self.states[child_id]
            child.waiting -= 1
            if child.waiting == 0 and child.status is NodeStatus.PENDING:
                self._decide(child)
        self.changed.set()

    async def _dispatch(self, group: asyncio.TaskGroup) -> None:
        """Spawn ready nodes in order, no faster than they take slots; return when all ended.

        A 100,000-node fan-out thus holds a few tasks waiting for a slot, not 100,000, and
        nodes take slots in the order they were spawned. While slots are free the
        dispatcher spawns on without waiting, so nodes that end at once run in batches.
        """
        slots, type_slots = self.engine.slots, self.engine.type_slots
        limit = self.engine.settings.max_concurrent_tasks
        while True:
            while self.ready:
                state = self.ready.popleft()
                # Mark RUNNING before spawning: the node leaves the ready set once.
                state.status = NodeStatus.RUNNING
                if state.node.type in type_slots:
                    # A limited type waits for its own slot first, in its task, so it never
                    # holds a global slot another type could use, nor holds up the others.
                    self.running[state.node.id] = group.create_task(self._node(state, False))
                    continue
                self.running[state.node.id] = group.create_task(self._node(state, True))
                self.unstarted.add(state.node.id)
                # Wait while the nodes spawned and not started yet may find no free slot.
                while self.unstarted and (len(self.unstarted) >= limit or slots.locked()):
                    self.slot_taken.clear()
                    await self.slot_taken.wait()
            if not self.running:
                return
            self.changed.clear()
            await self.changed.wait()

    def _started(self, node_id: str) -> None:
        """Node ``node_id`` holds its slot, or ended without one: the dispatcher may go on."""
        if node_id in self.unstarted:
            self.unstarted.remove(node_id)
            self.slot_taken.set()

    # -- one node ---------------------------------------------------------------------------

    async def _node(self, state: NodeState, counted: bool) -> None:
        """Run the node to its end; ``counted``: the dispatcher counts it until it starts."""
        node = state.node
        try:
            await self._attempts(state, counted)
        except asyncio.CancelledError:
            if counted:  # it may end before it held a slot
                self._started(node.id)
            if self.stopped is None:  # a shutdown: the run stays to be resumed
                if state.started_at is not None:
                    self.log.warning(
                        NODE_INTERRUPTED,
                        node_id=node.id,
                        task_type=node.type,
                        attempt=state.attempts,
                    )
                raise
            if state.started_at is None:  # it never held a slot: _finish skips it
                state.attempts = 0
            else:
                status, reason = self.stopped
                self._record_final(state, status, error=f"cancelled: {reason}")
            raise
        finally:
            del self.running[node.id]
            # After a cancel, the nodes left are skipped by _finish with the cancel's reason,
            # not as "dependency skipped" by their parents.
            if state.status.is_final and not self._cancelled:
                self._release_children(state)

    async def _attempts(self, state: NodeState, counted: bool) -> None:
        """Run attempts until one succeeds or none is left; each holds a slot, the backoff none."""
        node, engine = state.node, self.engine
        type_slot = engine.type_slots.get(node.type, _UNLIMITED)
        while True:
            state.attempts += 1
            async with type_slot, engine.slots:
                if counted:
                    self._started(node.id)
                    counted = False
                if state.started_at is None:
                    state.started_at = now_iso()
                    state.started_perf = time.perf_counter()
                # Every attempt is recorded: a restart goes on from it (see reusable_states).
                self.store.node_running(self.run_id, node.id, state.started_at, state.attempts)
                error = await self._attempt(state)
            if error is not None:  # an error may quote a secret's value: never stored
                error = MASKER.text(error)
            if error is None:
                self._record_final(state, SUCCESS)
                return
            if state.attempts > node.retries:
                self._record_final(state, FAILED, error=error)
                return
            delay = backoff(node.retry_delay, state.attempts)
            self.log.warning(
                NODE_RETRY, node_id=node.id, attempt=state.attempts, error=error, delay=delay
            )
            await asyncio.sleep(delay)

    async def _attempt(self, state: NodeState) -> str | None:
        """Run one attempt; ``None`` on success (output stored), else the error message.

        Any task's error may quote a URL: its password, token or secret-named parameters
        are shown as ``***`` (:func:`~wfe_daemon.core.model.hide_url_secrets`).
        """
        node, engine = state.node, self.engine
        task = engine.registry.get(node.type)
        timeout = node.timeout or task.default_timeout or engine.settings.task_timeout
        ctx = TaskContext(
            self.run_id,
            self.workflow.name,
            node.id,
            state.attempts,
            engine.settings,
            engine.services,
            engine.deadlines,
            timeout,
        )
        scope = engine.deadlines.scope(timeout)
        try:
            if node.type in engine.opens_http:  # a client that cannot open fails the node
                engine.services.open_now()
            with scope:
                params = self._params(node, await self._secrets(node)) if node.refs else node.params
                output = await engine.attempts[node.type](task, params, ctx)
        except asyncio.CancelledError:
            if being_cancelled():
                raise
            # The task raised CancelledError itself: a failure, not a cancel of the node.
            return OWN_CANCEL
        except (Exception, SystemExit) as exc:  # a task's sys.exit() must not end the daemon
            return failure_message(exc, timeout if scope.expired else None)
        try:  # encoded once, here: what JSON cannot carry fails the node, not the summary
            shown = MASKER.value(redact(output))
            data = encode_output(shown)
        except RecursionError:  # redact recursed: it holds itself, or nests far too deep
            return str(TaskFailed(too_deep()))
        except ValueError as exc:
            return str(TaskFailed(str(exc)))
        if len(data) > engine.settings.max_output_size:
            return str(
                TaskFailed(
                    f"output is {len(data)} bytes, over max_output_size"
                    f" {engine.settings.max_output_size}"
                )
            )
        state.output_json = data.decode()
        state.output = shown
        self.outputs[node.id] = output
        return None

    async def _secrets(self, node: NodeDef) -> dict[str, str]:
        """The secrets ``node`` references, read now, off the event loop in the secrets
        store's own threads (a file on a slow or hung file system holds up the nodes that
        need it, within their timeouts, and nothing else)."""
        names = {ref.path[0] for ref in node.refs if ref.node_id == "secrets" and ref.path}
        if not names:
            return {}
        store = self.engine.registry.secrets
        return {name: await store.read_soon(name) for name in sorted(names)}

    def _params(self, node: NodeDef, secrets: Mapping[str, str]) -> Any:
        """The params of ``node`` (it has references) resolved, then checked by the schema."""
        outputs: Mapping[str, Any] = self.outputs
        if any(ref.node_id in refs.RESERVED for ref in node.refs):
            extra = reserved_values(
                node.refs,
                arguments=self.workflow.arguments,
                run_id=self.run_id,
                scheduled_for=self.workflow.scheduled_for,
                read_secret=secrets.__getitem__,
            )
            outputs = ChainMap(extra, self.outputs)
        params = refs.resolve(node.params, outputs)
        problems = self.engine.registry.check_params(node.type, params, resolved=True)
        if problems:
            raise ParamsError("params: " + "; ".join(problems))
        return params

    def _record_final(
        self, state: NodeState, status: NodeStatus, *, error: str | None = None
    ) -> None:
        """Give ``state`` its final ``status``, store it and log it (children: see the caller)."""
        if error is not None and not error.isascii():
            # A lone surrogate (e.g. from a file name) would make the summary unencodable.
            error = error.encode("utf-8", "backslashreplace").decode()
        state.status = status
        state.error = error
        state.finished_at = now_iso()
        if state.started_at is not None:
            state.duration = round(time.perf_counter() - state.started_perf, 6)
        output_json, state.output_json = state.output_json, None
        self.store.node_finished(
            self.run_id,
            state.node.id,
            status=status,
            started_at=state.started_at,
            finished_at=state.finished_at,
            duration=state.duration,
            attempts=state.attempts,
            output_json=output_json if status is SUCCESS else None,
            error=error,
        )
        if error is None:
            self.log.info(
                NODE_FINISHED,
                node_id=state.node.id,
                task_type=state.node.type,
                status=status.value,
                duration=state.duration,
                attempt=state.attempts,
            )
        else:  # a failure must show at log_level WARNING too
            emit = self.log.warning if status is FAILED else self.log.info
            emit(
                NODE_FINISHED,
                node_id=state.node.id,
                task_type=state.node.type,
                status=status.value,
                duration=state.duration,
                attempt=state.attempts,
                error=error,
            )

    def _skip(self, state: NodeState, reason: str, cause: str | None) -> None:
        state.status, state.reason, state.cause = SKIPPED, reason, cause
        self.store.node_finished(
            self.run_id,
            state.node.id,
            status=SKIPPED,
            started_at=None,
            finished_at=None,
            duration=None,
            attempts=0,
            reason=reason,
            cause=cause,
        )
        self.log.info(
            NODE_FINISHED,
            node_id=state.node.id,
            task_type=state.node.type,
            status=SKIPPED.value,
            reason=reason,
        )

    # -- the end -----------------------------------------------------------------------------

    async def _finish(self) -> RunSummary:
        if self.stopped is not None:
            for state in self.states.values():
                if not state.status.is_final:
                    self._skip(state, self.stopped[1], None)
        stopped = None if self.stopped is None else self.stopped[0]
        status = rules.run_status(self.states.values(), stopped)
        finished_at = now_iso()
        if self.started_perf is not None:
            duration = time.perf_counter() - self.started_perf
        else:  # resumed: the run began in an earlier life of the process
            elapsed = datetime.fromisoformat(finished_at) - datetime.fromisoformat(self.started_at)
            duration = max(elapsed.total_seconds(), 0.0)
        summary = build_summary(
            run_id=self.run_id,
            workflow=self.workflow.name,
            source=self.source,
            status=status,
            started_at=self.started_at,
            finished_at=finished_at,
            duration=duration,
            nodes=((state.node.id, state.entry()) for state in self.states.values()),
        )
        await self.store.finish_run(
            self.run_id,
            status=status,
            finished_at=finished_at,
            duration=summary["duration"],
            summary=summary,
        )
        emit = self.log.warning if status in _UNSUCCESSFUL else self.log.info
        emit(WORKFLOW_FINISHED, status=str(status), duration=summary["duration"])
        return summary


OWN_CANCEL: Final = "CancelledError: raised by the task, not a cancel of the node"
"""A node's error when its task raised ``CancelledError`` itself (nothing cancelled it)."""


def failure_message(exc: BaseException, expired_after: float | None = None) -> str:
    """How an attempt's exception reads as the node's error, wherever the attempt ran.

    ``expired_after`` is the attempt's timeout when its own deadline expired: the
    ``TimeoutError`` that deadline raised reads ``timed out after Ns``. A ``TaskError``
    reads as its message, anything else as ``Type: message``. Any URL quoted shows its
    password, token or secret-named parameters as ``***``.
    """
    if isinstance(exc, TimeoutError) and expired_after is not None:
        return str(TaskTimeout(f"timed out after {expired_after:g}s"))
    try:
        text = str(exc)
    except Exception:  # a task's exception whose __str__ raises must not end the run
        text = "(its message cannot be shown)"
    if isinstance(exc, TaskError):
        return hide_url_secrets(text)
    return hide_url_secrets(f"{type(exc).__name__}: {text}")


# datetimes and dataclasses orjson would encode, but they are not JSON values: refuse them.
_OUTPUT_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_output(value: Any) -> bytes:
    """A node's output as compact UTF-8 JSON that every reader takes back unchanged.

    orjson, which encodes the result summary, refuses what JSON cannot carry without loss
    (big integers, lone surrogates, keys that are not strings), so an output it takes here
    can never make the summary fail later.

    Raises:
        ValueError: naming where the first unfit value is (``strictjson.unfit``).
    """
    try:
        data = orjson.dumps(value, option=_OUTPUT_OPTIONS)
    except TypeError as exc:
        raise ValueError(unfit(value) or f"output: {exc}") from None
    # orjson writes NaN and Infinity as null: only an output holding null can hide one.
    # The stdlib's C encoder finds one about ten times faster than a walk in Python; the
    # walk runs only to name where it is.
    if b"null" in data:
        try:
            json.dumps(value, allow_nan=False, check_circular=False)
        except ValueError:
            raise ValueError(unfit(value) or "output: NaN or Infinity") from None
    return data


def backoff(retry_delay: float, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1): ``retry_delay * 2**(attempt-1)``,
    at most :data:`MAX_BACKOFF_S`."""
    # The exponent is capped first: 2.0 ** 1024 overflows a float.
    return min(retry_delay * 2.0 ** min(attempt - 1, 32), MAX_BACKOFF_S)
