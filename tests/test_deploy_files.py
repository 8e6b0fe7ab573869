"""deploy/Containerfile passes hadolint, and deploy/compose.yaml keeps the promises the
README makes of it (tests/containers builds and runs both for real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
COMPOSE = ROOT / "deploy" / "compose.yaml"


def _compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed (its anchors and merge keys resolved)."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def test_the_containerfile_passes_hadolint() -> None:
    """hadolint (the PyPI-installed binary) finds nothing in deploy/Containerfile, at any
    severity; every rule it is told to ignore is ignored in a commented line."""
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [hadolint, "--failure-threshold", "style", "--no-color", CONTAINERFILE],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = CONTAINERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[number - 1].startswith("#"), f"line {number + 1}: say why"


def test_the_compose_file_runs_daemon_scheduler_and_two_workers_from_one_image() -> None:
    """The daemon, one scheduler and two workers, all from the one image."""
    services = _compose()["services"]
    assert sorted(services) == ["daemon", "scheduler", "worker-1", "worker-2"]
    assert len({service["image"] for service in services.values()}) == 1
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    for worker in ("worker-1", "worker-2"):
        command = services[worker]["command"]
        assert command[:3] == ["dask", "worker", "tcp://scheduler:8786"]
        assert command[command.index("--preload") + 1] == "wfe_daemon.cluster.worker"


def test_the_scheduler_fails_an_attempt_whose_worker_dies() -> None:
    """The scheduler runs with allowed-failures 0, so Dask never reruns an attempt itself."""
    scheduler = _compose()["services"]["scheduler"]
    assert scheduler["environment"]["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] == "0"


def test_only_the_daemon_publishes_a_port_and_on_loopback_alone() -> None:
    """The daemon's HTTP port is published on 127.0.0.1 only; nothing else is published."""
    services = _compose()["services"]
    assert [name for name, service in services.items() if "ports" in service] == ["daemon"]
    for port in services["daemon"]["ports"]:
        assert str(port).startswith("127.0.0.1:"), port


def test_the_daemon_and_workers_share_the_data_volume() -> None:
    """File tasks on the workers and in the daemon see one data folder; the database
    volume is the daemon's alone."""
    services = _compose()["services"]
    for name in ("daemon", "worker-1", "worker-2"):
        assert "data:/var/lib/wfe/data" in services[name]["volumes"], name
    users = [name for name, s in services.items() if "db:/var/lib/wfe/db" in s.get("volumes", [])]
    assert users == ["daemon"]
