"""Shared fixtures: the CLI as a subprocess, workflow files, an Engine on a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon_helpers import Daemons, daemons_for
from dask_cluster import DaskCluster, dask_cluster_at
from wfe_daemon.config import Settings
from wfe_daemon.logs import configure_logging
from wfe_daemon.runtime.engine import Engine
from wfe_daemon.runtime.eventloop import new_loop
from wfe_daemon.runtime.registry import TaskRegistry
from wfe_daemon.runtime.task import Task
from wfe_daemon.store.database import Store
from wfe_daemon.tasks import BUILTINS

CLI_TIMEOUT_S = 60

# The container deployment test builds images and runs podman: .ci/run runs it after the
# main suite, as `pytest tests/containers` (a folder named on the command line is
# collected all the same).
collect_ignore = ["containers"]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Async tests run on the loop the commands run on (``wfe_daemon.runtime.eventloop``)."""
    return {"uvloop": new_loop}


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """structlog's configuration is process-global: give every test the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The SQLite file of this test (not created until something opens it)."""
    return tmp_path / "data" / "wfe.db"


@pytest.fixture
def cli_env(tmp_path: Path, db_path: Path) -> dict[str, str]:
    """An environment whose every WFE_* path points into ``tmp_path``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WFE_")}
    env.update(
        WFE_DB_PATH=str(db_path),
        WFE_DATA_DIR=str(tmp_path / "data"),
        WFE_INBOX=str(tmp_path / "inbox"),
        WFE_OUTBOX=str(tmp_path / "outbox"),
    )
    return env


@pytest.fixture
def run_cli(
    tmp_path: Path, cli_env: dict[str, str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m wfe_daemon ARGS`` in ``tmp_path``; ``env`` entries override the defaults."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wfe_daemon", *map(str, args)],
            cwd=tmp_path,
            env={**cli_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    return run


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[..., Path]:
    """Write a workflow (a dict as JSON, or raw bytes) under ``tmp_path``; return its path."""
    counter = iter(range(1_000_000))

    def write(doc: dict[str, Any] | bytes, name: str | None = None) -> Path:
        path = tmp_path / "workflows" / (name or f"wf{next(counter)}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        return path

    return write


@pytest.fixture
def sql(db_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """Query the test's database directly with sqlite3; rows come back as dicts."""

    def query(statement: str, *params: Any) -> list[dict[str, Any]]:
        conn = sqlite3.connect(db_path)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(statement, params)]
        finally:
            conn.close()

    return query


def _registry(*extra: Task) -> TaskRegistry:
    """The built-in tasks plus ``extra`` test-only task instances (no plugins)."""
    return TaskRegistry([*(task_class() for task_class in BUILTINS), *extra])


@pytest.fixture
async def engine_factory(tmp_path: Path, db_path: Path) -> AsyncIterator[Callable[..., Engine]]:
    """Build Engines on one Store over ``db_path``; the store is closed at teardown.

    ``engine_factory(*tasks, **settings)`` adds test task instances to the built-ins and
    overrides ``Settings`` fields (paths already point into ``tmp_path``).
    """
    configure_logging("WARNING", io.StringIO())
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(Store.open(db_path))

        def make(*tasks: Task, **overrides: Any) -> Engine:
            settings = Settings(
                db_path=db_path,
                data_dir=tmp_path / "data",
                inbox=tmp_path / "inbox",
                outbox=tmp_path / "outbox",
                **overrides,
            )
            return Engine(_registry(*tasks), store, settings)

        yield make


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Start real daemons on ``tmp_path``; all are killed at teardown, none printed a traceback."""
    with daemons_for(tmp_path) as factory:
        yield factory


@pytest.fixture
def stall_last_batch(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, float], threading.Event]:
    """``stall(last, delay_s)``: CSV files are read a few rows per batch, and the batch whose
    last row starts with the cell ``last`` stalls ``delay_s`` (once) before it is used, so a
    test can cancel a task in its last batch. The returned event is set after the stall."""
    import wfe_daemon.tasks.csv.arrow as arrowcsv

    def stall(last: str, delay_s: float) -> threading.Event:
        monkeypatch.setattr(arrowcsv, "BLOCK_BYTES", 24)
        real, stalled = arrowcsv.batches, threading.Event()

        def batches(*args: Any) -> Iterator[Any]:
            for batch in real(*args):
                if batch.column(0)[-1].as_py() == last and not stalled.is_set():
                    time.sleep(delay_s)
                    stalled.set()
                yield batch

        monkeypatch.setattr(arrowcsv, "batches", batches)
        return stalled

    return stall


@pytest.fixture
def new_dask_cluster(tmp_path: Path) -> Iterator[Callable[..., DaskCluster]]:
    """``new_dask_cluster(workers=..., tls=...)``: a cluster of this test's own (to kill or
    change processes of), stopped at teardown."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(1000))

        def make(**options: Any) -> DaskCluster:
            root = tmp_path / f"dask{next(counter)}"
            return stack.enter_context(dask_cluster_at(root, **options))

        yield make


CONTAINERS = Path(__file__).resolve().parent / "containers"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (the ``addopts`` of pyproject.toml): the suite runs on two processes,
    each test file on one (``--dist loadfile``); the container test (``pytest
    tests/containers``), a single long deployment, runs in this process alone."""
    here = config.invocation_params.dir
    targets = [(here / arg.split("::", 1)[0]).resolve() for arg in config.args]
    if targets and all(t.is_relative_to(CONTAINERS) for t in targets):
        return 0
    return 2
