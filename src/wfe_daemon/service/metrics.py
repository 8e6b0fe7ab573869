"""Prometheus metrics and a health check, for ``/metrics`` and ``/healthz``.

Only the HTTP server imports this module, and only when ``http_port`` is set. Every daemon
gets a registry of its own (no global state). A request only reads facts the loop keeps
up to date (a heartbeat and a store check every second): it never touches the database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, MutableSequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from wfe_daemon.core.summary import RunSummary
from wfe_daemon.runtime.task import Output, Params, Task, TaskContext
from wfe_daemon.runtime.wrappers import AttemptFn, call_task
from wfe_daemon.service.intake import Claimed
from wfe_daemon.store.database import Store

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from wfe_daemon.cluster.state import ClusterState

__all__ = ["Followed", "Health", "Metrics", "Telemetry"]

log = structlog.get_logger()

_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BEAT_S = 1.0
_STALE_S = 5.0
_QUERY_TIMEOUT_S = 2.0


class Metrics:
    """The daemon's instruments, in a private registry (``wfe_`` prefix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.runs = Counter(
            "wfe_runs_finished", "Published results by final run status.", ["status"], registry=reg
        )
        self.nodes = Counter(
            "wfe_nodes_finished",
            "Nodes of published results by task type and final status.",
            ["type", "status"],
            registry=reg,
        )
        self.attempts = Counter(
            "wfe_task_attempts",
            "Task attempts by type and outcome.",
            ["type", "outcome"],
            registry=reg,
        )
        self.attempt_duration = Histogram(
            "wfe_task_duration_seconds",
            "Duration of each task attempt, by task type.",
            ["type"],
            buckets=_BUCKETS_S,
            registry=reg,
        )
        self.intake_latency = Histogram(
            "wfe_intake_latency_seconds",
            "Seconds from a file's arrival in the inbox (its ctime when intake read it) to its"
            " result being published.",
            buckets=_BUCKETS_S,
            registry=reg,
        )
        self.running_nodes = Gauge("wfe_running_nodes", "Task attempts running now.", registry=reg)
        self.active = Gauge(
            "wfe_active_workflows",
            "Workflows running now, or whose result is being written.",
            registry=reg,
        )
        self._by_type: dict[str, tuple[Any, Any, Any]] = {}
        self._running = [0]
        """Attempts running now in this process (``counting``)."""
        self._cluster: ClusterState | None = None
        """Each task type's attempt series: success, failure, duration."""
        self.queued = Gauge(
            "wfe_queued_files", "Claimed files waiting for a workflow slot.", registry=reg
        )
        self.notifications = Counter(
            "wfe_notifications",
            "Webhook notifications ([notify]) by outcome: sent; failed (one try failed, another"
            " follows); dropped (given up, the queue was full, or the daemon stopped first).",
            ["outcome"],
            registry=reg,
        )

    def follow_cluster(self, cluster: ClusterState) -> None:
        """Show the Dask cluster's state and count its attempts by worker."""
        reg = self.registry
        connected = Gauge(
            "wfe_cluster_connected", "1 while the Dask cluster is connected.", registry=reg
        )
        connected.set_function(lambda: 1 if cluster.connected else 0)
        workers = Gauge("wfe_cluster_workers", "Dask workers ready for attempts.", registry=reg)
        workers.set_function(lambda: cluster.workers)
        remote = Counter(
            "wfe_remote_attempts",
            "Task attempts sent to the Dask cluster, by type, worker (empty: none reached)"
            " and outcome.",
            ["executor", "type", "worker", "outcome"],
            registry=reg,
        )

        def seen(task_type: str, worker: str, succeeded: bool) -> None:
            remote.labels("dask", task_type, worker, "success" if succeeded else "failure").inc()

        cluster.on_attempt.append(seen)
        self._cluster = cluster

    def attempt_finished(self, task_type: str, succeeded: bool, duration_s: float) -> None:
        """The engine's attempt hook (see ``wrappers.AttemptHook``).

        Runs once per attempt, on the engine's path: each type's labelled series are looked
        up once and kept (``labels()`` costs about 3 µs a call, the kept series' updates 1).
        """
        series = self._by_type.get(task_type)
        if series is None:
            series = self._by_type[task_type] = (
                self.attempts.labels(task_type, "success"),
                self.attempts.labels(task_type, "failure"),
                self.attempt_duration.labels(task_type),
            )
        (series[0] if succeeded else series[1]).inc()
        series[2].observe(duration_s)

    def _running_now(self) -> int:
        cluster = self._cluster
        return self._running[0] + (cluster.running if cluster is not None else 0)

    def counting(self, executor: AttemptFn) -> AttemptFn:
        """Wrap the engine's innermost attempt call so ``wfe_running_nodes`` counts it (a
        plain integer, read at scrape time: no lock on the engine's path)."""
        running = self._running
        self.running_nodes.set_function(self._running_now)

        async def attempt(task: Task, params: Params, ctx: TaskContext) -> Output:
            running[0] += 1
            try:
                return await executor(task, params, ctx)
            finally:
                running[0] -= 1

        return attempt

    def published(self, claimed: Claimed, summary: Mapping[str, Any]) -> None:
        """Count a published result (the daemon's ``on_published`` hook)."""
        self.runs.labels(summary["status"]).inc()
        for node in summary.get("nodes", {}).values():
            self.nodes.labels(node["type"], node["status"]).inc()
        if claimed.arrived_at is not None:  # None: recovered from an earlier life
            self.intake_latency.observe(max(0.0, time.time() - claimed.arrived_at))

    def notified(self, outcome: str) -> None:
        """Count a notification outcome (the daemon's ``on_notified`` hook)."""
        self.notifications.labels(outcome).inc()

    def follow(self, active: Callable[[], int], queued: Callable[[], int]) -> None:
        """Read the two gauges from the daemon at scrape time (from the HTTP thread)."""
        self.active.set_function(active)
        self.queued.set_function(queued)


@dataclass
class Health:
    """Facts the event loop refreshes and the HTTP thread reads (plain attribute swaps).

    ``beat_at`` is the loop's last heartbeat (``clock`` time), ``store_problem`` what the
    last store check found wrong (``None``: usable), ``watching`` whether intake is alive.
    """

    clock: Callable[[], float] = time.monotonic
    stale_after_s: float = _STALE_S
    beat_at: float | None = None
    store_problem: str | None = "not checked yet"
    watching: Callable[[], bool] = field(default=lambda: False)
    faults: Callable[[], dict[str, str]] = field(default=dict)
    """The daemon's open incidents (``Faults.active``): each one fails its own check."""
    cluster: ClusterState | None = None
    """The Dask cluster (``executor = "dask"``): reported, never failing the check, since
    local nodes go on while it is down."""

    def checks(self) -> dict[str, str]:
        """Each check's verdict: ``"ok"`` or what is wrong."""
        if self.beat_at is None:
            loop = "no heartbeat yet"
        else:
            age = self.clock() - self.beat_at
            loop = "ok" if age <= self.stale_after_s else f"no heartbeat for {age:.1f}s"
        watcher = "ok" if self.watching() else "intake is not running"
        checks = {"loop": loop, "store": self.store_problem or "ok", "watcher": watcher}
        checks.update(self.faults())
        return checks

    def report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)`` for ``/healthz``; the body names the failing checks."""
        checks = self.checks()
        failing = [name for name, verdict in checks.items() if verdict != "ok"]
        body: dict[str, Any] = {"status": "failing" if failing else "ok", "checks": checks}
        if failing:
            body["failing"] = failing
        if self.cluster is not None:
            body["executor"] = "dask"
            body["cluster"] = self.cluster.report()
        return not failing, body


async def check_store(store: Store, db_path: Path, identity: tuple[int, int] | None) -> str | None:
    """What is wrong with the store (``None``: usable); runs on the loop, never in a thread."""
    if store.fatal is not None:
        return f"the database is damaged: {store.fatal}"
    if not store.healthy:
        return "the last database write failed"
    if identity is not None and _identity(db_path) != identity:
        return f"database file {db_path} was removed or replaced"
    try:
        with anyio.fail_after(_QUERY_TIMEOUT_S):
            await store.list_runs(limit=1)
    except TimeoutError:
        return f"database query took over {_QUERY_TIMEOUT_S:g}s"
    except Exception as exc:  # any failure of the trivial query means the store is unusable
        return f"database query failed: {exc}"
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True, slots=True)
class Followed:
    """What the telemetry reads of the daemon, built by the daemon: values and callables.

    The callables run in the HTTP thread at scrape time, so each only reads an attribute.
    """

    store: Store
    db_path: Path
    active: Callable[[], int]
    """Workflows running now, or whose result is being written."""
    waiting: Callable[[], int]
    """Files a worker holds until a workflow slot is free (the queue holds the others)."""
    watching: Callable[[], bool]
    """Whether intake runs."""
    faults: Callable[[], dict[str, str]]
    """The open incidents (``Faults.active``)."""
    on_published: MutableSequence[Callable[[Claimed, RunSummary], None]]
    """The daemon's hooks after each published result: the telemetry adds its own."""
    on_notified: MutableSequence[Callable[[str], None]] = field(default_factory=list)
    """The daemon's hooks for each notification outcome: the telemetry adds its own."""
    cluster: ClusterState | None = None
    """The Dask cluster, when ``executor = "dask"``."""


class Telemetry:
    """Metrics and health of one daemon; the HTTP server shows them (``/metrics``,
    ``/healthz``) and :meth:`run` keeps them up to date on the event loop."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.health = Health()

    def metrics_text(self) -> tuple[bytes, str]:
        """The Prometheus exposition of every instrument, and its content type."""
        return generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST

    def engine_options(self) -> dict[str, Any]:
        """``Engine(...)`` keyword arguments: the attempt hook and the counting executor."""
        return {
            "hooks": (self.metrics.attempt_finished,),
            "executor": self.metrics.counting(call_task),
        }

    async def run(
        self,
        daemon: Followed,
        queue: MemoryObjectSendStream[Claimed],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Follow ``daemon`` (active workflows, files waiting for a slot, intake, published
        results) and ``queue`` (the claimed files waiting for a worker), beating and checking
        the store every second; ``started`` after the first check."""
        store, db_path = daemon.store, daemon.db_path
        waiting = daemon.waiting
        self.metrics.follow(active=daemon.active, queued=lambda: _waiting(queue) + waiting())
        self.health.watching = daemon.watching
        self.health.faults = daemon.faults
        if daemon.cluster is not None and self.health.cluster is None:
            self.metrics.follow_cluster(daemon.cluster)
            self.health.cluster = daemon.cluster
        daemon.on_published.append(self.metrics.published)
        daemon.on_notified.append(self.metrics.notified)
        identity = _identity(db_path)
        try:
            await self._beat(store, db_path, identity)
            task_status.started()
            while True:
                await anyio.sleep(_BEAT_S)
                await self._beat(store, db_path, identity)
        finally:
            daemon.on_published.remove(self.metrics.published)
            daemon.on_notified.remove(self.metrics.notified)

    async def _beat(self, store: Store, db_path: Path, identity: tuple[int, int] | None) -> None:
        self.health.beat_at = self.health.clock()
        self.health.store_problem = await check_store(store, db_path, identity)


def _waiting(queue: MemoryObjectSendStream[Claimed]) -> int:
    """Claimed files in the queue, plus the one intake may hold while the queue is full."""
    stats = queue.statistics()
    return stats.current_buffer_used + stats.tasks_waiting_send
