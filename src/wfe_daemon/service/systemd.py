"""The sd_notify protocol over ``$NOTIFY_SOCKET``, written against systemd's spec."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["NOTIFY_VARIABLES", "Notifier", "scrub_environ"]

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True, slots=True)
class Notifier:
    """Sends state lines to the service manager; every method is a no-op without a socket.

    Build it with ``Notifier.from_environ(os.environ)`` once at start. The daemon then removes
    ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``os.environ`` (see
    `scrub_environ`) so that children such as ``shell`` tasks cannot talk to systemd in its name;
    the notifier keeps what it read. Sending never raises: a lost notification must not crash
    the daemon (systemd's own ``sd_notify`` is best-effort too).
    """

    address: str | None = None
    watchdog_usec: int | None = None
    watchdog_pid: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """Read the notify socket and watchdog settings; unusable values count as absent."""
        raw = environ.get("NOTIFY_SOCKET", "")
        # '@' names an abstract socket (leading NUL); only absolute paths are otherwise valid.
        address = "\0" + raw[1:] if raw.startswith("@") else raw if raw.startswith("/") else None
        return cls(
            address,
            _positive_int(environ.get("WATCHDOG_USEC")),
            _positive_int(environ.get("WATCHDOG_PID")),
        )

    def notify(self, *lines: str) -> None:
        """Send ``lines`` (``"KEY=value"``) as one datagram; OSError is ignored."""
        if self.address is None or not lines:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            pass

    def ready(self, status: str = "") -> None:
        """Tell systemd start-up is complete (``READY=1``), with an optional status line."""
        self.notify("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> None:
        """Set the one-line state shown by ``systemctl status``."""
        self.notify(_status(text))

    def watchdog(self) -> None:
        """Pet the watchdog (``WATCHDOG=1``); call every `watchdog_interval` seconds."""
        self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        """Tell systemd shutdown has begun (``STOPPING=1``)."""
        self.notify("STOPPING=1", *([_status(status)] if status else []))

    def watchdog_interval(self) -> float | None:
        """Half of ``WATCHDOG_USEC`` in seconds if the watchdog targets this process, else None."""
        if self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2_000_000


def scrub_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``environ`` without the sd_notify variables, for child processes."""
    return {k: v for k, v in environ.items() if k not in NOTIFY_VARIABLES}


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # a newline would end the assignment early


def _positive_int(raw: str | None) -> int | None:
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return value if value > 0 else None
