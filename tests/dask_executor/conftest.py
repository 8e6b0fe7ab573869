"""The shared cluster of the Dask executor's tests (``tests/dask_cluster.py``); a test's
own cluster is ``new_dask_cluster`` of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dask_cluster import DaskCluster, dask_cluster_at


@pytest.fixture(scope="package")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """One real Dask cluster for this package's tests: a scheduler and two preloaded
    workers, ``w1`` and ``w2``, shared by the tests that do not break it, and stopped after
    the package's last test (no later test runs beside it)."""
    with dask_cluster_at(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster
