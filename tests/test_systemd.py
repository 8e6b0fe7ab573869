"""Tests for the sd_notify client and the service unit."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfe_daemon.service.systemd import Notifier, scrub_environ

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "wfe-daemon.service"
README = ROOT / "README.md"
VENV = "/opt/wfe-daemon"
"""Where the README installs the package (a virtual environment) and the unit runs it."""
CONFIG = "/etc/wfe-daemon/wfe.toml"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound unix datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


def test_ready_and_stopping_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    """READY=1 with a status line, then STOPPING=1, arrive as separate datagrams."""
    sock, path = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    notifier.ready("watching inbox")
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching inbox"
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.status("2 running\nqueued: 3")
    assert sock.recv(4096) == b"STATUS=2 running queued: 3"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket_name() -> None:
    """A NOTIFY_SOCKET starting with '@' addresses the abstract namespace."""
    name = f"wfe-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET (or with a relative one) every call returns quietly."""
    for environ in ({}, {"NOTIFY_SOCKET": "relative.sock"}):
        notifier = Notifier.from_environ(environ)
        assert notifier.address is None
        notifier.ready("x")
        notifier.stopping()


def test_send_errors_are_swallowed(tmp_path: Path) -> None:
    """A socket path nobody listens on never raises into the daemon."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    notifier.ready("x")
    notifier.watchdog()


def test_watchdog_interval() -> None:
    """The interval is half of WATCHDOG_USEC in seconds, only for this process's PID."""
    pid = str(os.getpid())
    assert Notifier.from_environ({}).watchdog_interval() is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 15.0
    usec = {"WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ({**usec, "WATCHDOG_PID": pid}).watchdog_interval() == 15.0
    other = str(os.getpid() + 1)
    assert Notifier.from_environ({**usec, "WATCHDOG_PID": other}).watchdog_interval() is None
    for bad in ("0", "-5", "soon"):
        assert Notifier.from_environ({"WATCHDOG_USEC": bad}).watchdog_interval() is None


def test_scrub_environ_drops_notify_variables() -> None:
    """scrub_environ removes the sd_notify variables and keeps everything else."""
    environ = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/b"}
    assert scrub_environ(environ) == {"PATH": "/b"}
    assert "NOTIFY_SOCKET" in environ  # the input is not modified


def _systemd_analyze() -> str:
    """Return the systemd-analyze path; fail on CI, skip locally, when it is missing."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing on CI: run .ci/install-system-deps")
        pytest.skip("systemd-analyze is not installed")
    return exe


def _unit_setting(key: str) -> str:
    """The value of the unit's one ``key=`` line."""
    (value,) = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.M)
    return value


def _installed_root(tmp_path: Path) -> Path:
    """A file system root laid out as the README installs the service: the unit in
    /etc/systemd/system, the console script in the virtual environment, the configuration."""
    root = tmp_path / "root"
    script = Path(sys.executable).parent / "wfe-daemon"
    placed = {
        "etc/systemd/system/wfe-daemon.service": UNIT,
        CONFIG.lstrip("/"): ROOT / "config" / "wfe.toml",
        f"{VENV.lstrip('/')}/bin/wfe-daemon": script if script.exists() else Path("/bin/true"),
    }
    for where, source in placed.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / where)  # keeps the console script executable
    return root


def _verify(exe: str, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [exe, "verify", f"--root={root}", "--recursive-errors=no", "wfe-daemon.service"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_verifies_where_the_readme_installs_it(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit as shipped, in a root laid out as the
    README installs it (its ExecStart must exist there; typos fail too)."""
    exe = _systemd_analyze()
    proc = _verify(exe, _installed_root(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Unknown" not in proc.stderr, proc.stderr


def test_verify_fails_when_the_executable_is_not_where_the_unit_looks(tmp_path: Path) -> None:
    """Without the console script at the unit's ExecStart path (as after `pip install .`
    into a home folder or /usr/local), verify fails and names the path."""
    exe = _systemd_analyze()
    root = _installed_root(tmp_path)
    (root / VENV.lstrip("/") / "bin" / "wfe-daemon").unlink()
    proc = _verify(exe, root)
    assert proc.returncode != 0
    assert f"{VENV}/bin/wfe-daemon" in proc.stderr, proc.stderr


def test_unit_runs_what_the_readme_installs() -> None:
    """The README's install steps put the console script, the configuration and the
    documentation where the unit looks for them, outside what ProtectHome= hides."""
    steps = README.read_text(encoding="utf-8").split("### Under systemd", 1)[1]
    steps = steps.split("```sh\n", 1)[1].split("```", 1)[0]
    start = _unit_setting("ExecStart").split()
    assert start[0] == f"{VENV}/bin/wfe-daemon"
    assert start[1:] == ["run", "--config", CONFIG]
    assert f"python3 -m venv {VENV}\n" in steps
    assert f"sudo {VENV}/bin/pip install .  " in steps
    assert f" config/wfe.toml {CONFIG}\n" in steps
    documentation = _unit_setting("Documentation").removeprefix("file://")
    assert f" README.md {documentation}\n" in steps
    assert "sudo pip install" not in steps  # PEP 668 refuses it on Debian 12, Ubuntu 24.04
    assert _unit_setting("ProtectHome") == "yes"
    assert not start[0].startswith(("/home/", "/root/", "/run/user/"))


def test_unit_exposure_is_low() -> None:
    """`systemd-analyze security --offline=yes` rates the unit's exposure 2.0 or lower."""
    exe = _systemd_analyze()
    proc = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout


def test_unit_settings() -> None:
    """The unit keeps the contract's service settings and one state directory."""
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "KillMode=mixed",
        "DynamicUser=yes",
        "StateDirectory=wfe-daemon",
        "WorkingDirectory=/var/lib/wfe-daemon",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    stop = re.search(r"^TimeoutStopSec=(\d+)s?$", text, re.M)
    assert stop and int(stop.group(1)) > 20  # above the default shutdown_grace
    # Extra ReadWritePaths= mounts would make renames between them fail with EXDEV.
    assert not re.search(r"^ReadWritePaths=", text, re.M)
