"""The container deployment end to end: deploy/Containerfile built on a local base image,
deploy/compose.yaml run with podman-compose (the daemon, a Dask scheduler, two workers),
workflows dropped into the mounted inbox and their results read from the mounted outbox.

Not part of the main suite (tests/conftest.py leaves this folder out): ``.ci/run`` runs it
after, as ``pytest tests/containers``. It is skipped only where podman is not installed
and ``CI`` is not set; in CI a missing tool fails it. See tests/containers/podman_env.py for
the test's own podman settings and the cached base image.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import podman_env as podman
import pytest

from daemon_helpers import drop, free_port, get, request_json, wait_result, wait_until

if shutil.which("podman") is None and not os.environ.get("CI"):
    pytest.skip(
        "the container deployment test needs podman, runc, netavark and debootstrap "
        "(bash .ci/install-system-deps installs them; CI always runs this test)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(600)

IMAGE_UID = 10001
"""The uid the image runs as (deploy/Containerfile's WFE_UID)."""
JOBS_PROJECT = "wfe-container-jobs"
JOBS_MODULE = "wfe_container_jobs"
JOBS_SOURCE = '''"""Functions the deployment test's python nodes call on the workers."""

import socket


def spin(rounds):
    """Some CPU work; the host it ran on and its result."""
    return {"host": socket.gethostname(), "total": sum(i * i for i in range(rounds))}
'''
START_TIMEOUT_S = 90.0
RESULT_TIMEOUT_S = 60.0
SPIN_ROUNDS = 100_000
SPIN = {"function": f"{JOBS_MODULE}:spin", "kwargs": {"rounds": SPIN_ROUNDS}}
PYTHON_MODULES = f"{JOBS_MODULE},statistics,asyncio"
"""What python nodes may call in the deployment (compose's WFE_PYTHON_MODULES)."""


@dataclass(frozen=True)
class Deployed:
    """A running deployment and the host side of its mounts and port."""

    compose: podman.Deployment
    inbox: Path
    outbox: Path
    port: int
    token: str

    def api(self, path: str) -> tuple[int, Any]:
        """GET ``path`` of the daemon's API with the token: the status and parsed body."""
        return request_json(self.port, path, token=self.token, timeout=5)

    def daemon_events(self, event: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines whose ``event`` is ``event``, oldest first."""
        lines = self.compose.logs("daemon").splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [entry for entry in entries if entry.get("event") == event]


def _jobs_project(folder: Path) -> Path:
    """A package of the functions python nodes call, for ``EXTRA_PACKAGES``."""
    (folder / JOBS_MODULE).mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{JOBS_PROJECT}"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n',
        encoding="utf-8",
    )
    (folder / JOBS_MODULE / "__init__.py").write_text(JOBS_SOURCE, encoding="utf-8")
    return folder


def _host_folder(path: Path) -> Path:
    """A host folder the image's user may write, to mount into the daemon."""
    path.mkdir(parents=True)
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        path.chmod(0o777)
    return path


def _healthy(deployed: Deployed) -> dict[str, Any] | None:
    """/healthz's body once it answers 200 with both workers connected, else None."""
    try:
        status, body = get(deployed.port, "/healthz")
    except OSError:
        return None
    health: dict[str, Any] = json.loads(body) if status == 200 else {}
    cluster = health.get("cluster") or {}
    return health if cluster.get("connected") and cluster.get("workers") == 2 else None


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The image built on the cached base, the compose deployment up and healthy; at the
    end every container, volume, network and the image are removed (also on failure)."""
    missing = podman.missing_tools()
    assert not missing, f"the deployment test needs {', '.join(missing)}: install them"
    # debootstrap runs as root only, and the test's podman storage is root's.
    assert os.geteuid() == 0, "the deployment test runs as root (debootstrap, rootful podman)"
    # The wheelhouse is built by this Python for the base image's python3 (bookworm: 3.11).
    assert sys.version_info[:2] == (3, 11), "the deployment test runs on Python 3.11"
    podman.remove_leftovers()
    root = tmp_path_factory.mktemp("deploy")
    image = f"{podman.IMAGE_REPO}:test-{os.getpid()}"
    # SIGTERM (a CI job cancelled) ends the run as Ctrl-C does: the cleanup below runs.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        jobs = _jobs_project(root / "jobs")
        wheelhouse = podman.build_wheelhouse(root / "wheelhouse", jobs)
        podman.build_image(image, podman.base_image(), wheelhouse, JOBS_PROJECT)
        shutil.rmtree(wheelhouse)
        token = secrets.token_hex(16)
        token_file = root / "api_token"
        token_file.write_text(token, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(token_file, IMAGE_UID, IMAGE_UID)
        token_file.chmod(0o600 if os.geteuid() == 0 else 0o644)
        deployed = Deployed(
            compose=podman.Deployment(
                f"{podman.PROJECT_PREFIX}{os.getpid()}",
                {
                    "WFE_IMAGE": image,
                    "WFE_HOST_INBOX": str(_host_folder(root / "inbox")),
                    "WFE_HOST_OUTBOX": str(_host_folder(root / "outbox")),
                    "WFE_HOST_PORT": str(port := free_port()),
                    "WFE_API_TOKEN_PATH": str(token_file),
                    "WFE_SHUTDOWN_GRACE": "1",
                    "WFE_PYTHON_MODULES": PYTHON_MODULES,
                },
            ),
            inbox=root / "inbox",
            outbox=root / "outbox",
            port=port,
            token=token,
        )
        try:
            deployed.compose.compose("config")
            deployed.compose.compose("up", "--detach")
            wait_until(lambda: _healthy(deployed), START_TIMEOUT_S, "a healthy deployment", 0.5)
            yield deployed
        finally:
            deployed.compose.remove()
    finally:
        podman.remove_image(image)
        signal.signal(signal.SIGTERM, previous)


def test_python_nodes_run_on_the_workers_and_results_reach_the_mounted_outbox(
    deployment: Deployed,
) -> None:
    """A workflow dropped into the mounted inbox runs its python nodes (a function of a
    package the image was built with, one of the standard library) on the worker
    containers, references their outputs in a local node, and its result appears in the
    mounted outbox."""
    doc = {
        "name": "spread",
        "nodes": [
            *({"id": node, "type": "python", "params": SPIN} for node in ("spin_a", "spin_b")),
            {
                "id": "mean",
                "type": "python",
                "params": {"function": "statistics:mean", "kwargs": {"data": [1, 2, 3, 4]}},
            },
            {
                "id": "report",
                "type": "echo",
                "depends_on": ["spin_a", "spin_b", "mean"],
                "params": {"spins": ["{{ spin_a }}", "{{ spin_b }}"], "mean": "{{ mean }}"},
            },
        ],
    }
    drop(deployment.inbox, "spread.json", doc)
    result = wait_result(deployment.outbox, "spread", RESULT_TIMEOUT_S)

    assert result["status"] == "SUCCESS", result["errors"]
    workers = {
        deployment.compose.inspect(name)["Config"]["Hostname"] for name in ("worker-1", "worker-2")
    }
    report = result["nodes"]["report"]["output"]
    total = sum(i * i for i in range(SPIN_ROUNDS))
    assert [spin["total"] for spin in report["spins"]] == [total, total]
    assert {spin["host"] for spin in report["spins"]} <= workers, (report, workers)
    assert report["mean"] == 2.5
    attempts = {e["node_id"]: e for e in deployment.daemon_events("cluster.attempt")}
    for node in ("spin_a", "spin_b", "mean"):
        assert attempts[node]["executor"] == "dask"
        assert attempts[node]["outcome"] == "success"
    assert "report" not in attempts
    assert (deployment.inbox / "processed" / "spread.json").exists()


def test_python_nodes_may_call_only_the_modules_compose_allows(deployment: Deployed) -> None:
    """compose's WFE_PYTHON_MODULES reaches the daemon: a workflow calling a function of
    another module is rejected, naming the setting, and nothing of it runs."""
    doc = {
        "name": "escape",
        "nodes": [{"id": "cwd", "type": "python", "params": {"function": "os:getcwd"}}],
    }
    drop(deployment.inbox, "escape.json", doc)
    result = wait_result(deployment.outbox, "escape", RESULT_TIMEOUT_S)

    assert result["status"] == "REJECTED", result
    assert "python_modules" in json.dumps(result), result
    assert (deployment.inbox / "rejected" / "escape.json").exists()


def test_the_daemon_is_healthy_unprivileged_and_published_on_loopback_only(
    deployment: Deployed,
) -> None:
    """/healthz reports the cluster connected, the image's HEALTHCHECK (and the
    scheduler's own) passes, the daemon runs as the image's user, and its port is
    published on 127.0.0.1 alone."""
    health = _healthy(deployment)
    assert health is not None and health["status"] == "ok", health
    for service in ("daemon", "scheduler"):
        podman.podman("healthcheck", "run", deployment.compose.container(service))

    daemon = deployment.compose.inspect("daemon")
    assert daemon["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    bindings = daemon["NetworkSettings"]["Ports"]["8080/tcp"]
    assert [(b["HostIp"], b["HostPort"]) for b in bindings] == [("127.0.0.1", str(deployment.port))]
    status, runs = deployment.api("/api/v1/runs")
    assert status == 200, runs


def test_a_run_in_flight_when_the_deployment_stops_resumes_after_up(
    deployment: Deployed,
) -> None:
    """``stop`` of the whole deployment (podman-compose stops every container at once, so
    the scheduler goes away during the daemon's shutdown) sends the daemon SIGTERM: it
    interrupts its remote attempt after the grace and exits 0, not killed; ``up`` again
    resumes the run, which then finishes SUCCESS in the outbox."""
    doc = {
        "name": "nap",
        "nodes": [
            {
                "id": "nap",
                "type": "python",
                # Covers attempts sent while the cluster, started with the daemon, is not
                # yet connected.
                "retries": 3,
                "retry_delay": 2,
                "params": {"function": "asyncio:sleep", "kwargs": {"delay": 5}},
            },
            {"id": "after", "type": "echo", "depends_on": ["nap"], "params": {"n": "{{ nap }}"}},
        ],
    }
    drop(deployment.inbox, "nap.json", doc)
    wait_until(
        lambda: any(e["node_id"] == "nap" for e in deployment.daemon_events("node.started")),
        RESULT_TIMEOUT_S,
        "the nap node to start",
        0.2,
    )

    deployment.compose.compose("stop")  # every container at once: the cluster goes too

    state = deployment.compose.inspect("daemon")["State"]
    assert state["ExitCode"] == 0, state
    (stopping,) = deployment.daemon_events("daemon.stopping")
    assert stopping["grace"] == 1.0, stopping
    (stopped,) = deployment.daemon_events("daemon.stopped")
    assert "SIGTERM" in stopped["reason"], stopped
    assert [e["node_id"] for e in deployment.daemon_events("node.interrupted")] == ["nap"]
    assert not (deployment.outbox / "nap.result.json").exists()

    deployment.compose.compose("up", "--detach")
    result = wait_result(deployment.outbox, "nap", RESULT_TIMEOUT_S)

    assert result["status"] == "SUCCESS", result["errors"]
    assert [e["source"] for e in deployment.daemon_events("workflow.resumed")] == ["nap.json"]
    assert result["nodes"]["after"]["output"] == {"n": None}
