"""Fixtures of the Dask executor's tests: real clusters (``tests/dask_cluster.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dask_cluster import DaskCluster, dask_cluster_at


@pytest.fixture(scope="package")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """One real Dask cluster for this package's tests: a scheduler and two preloaded
    workers, ``w1`` and ``w2``, shared by the tests that do not break it, and stopped after
    the package's last test (no later test runs beside it)."""
    with dask_cluster_at(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster


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
