"""watchfiles' Rust watcher on one folder, the one place that touches its private module.

The intake needs what ``watchfiles.awatch`` does not let it set: how often the watcher
looks (``step_ms``) and how often it returns when nothing happens (``timeout_ms``), per
call, so an idle daemon looks less often (see ``Intake._changes``). ``awatch`` is a loop
over ``watchfiles._rust_notify.RustNotify``, whose constructor takes six positional
arguments; that class and that signature are private. ``tests/test_watchfiles.py``
fails, naming this module, when a watchfiles release changes them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Literal

from watchfiles._rust_notify import RustNotify

__all__ = ["FolderWatcher"]

_POLL_DELAY_MS = 300  # only used when polling is forced, which it never is here


class FolderWatcher:
    """The changes to one folder's entries (not its subfolders'), from the OS's notifications.

    The watching thread starts here. Raises ``OSError`` (or watchfiles' own error) when the
    folder cannot be watched, for instance when the inotify watch limit is reached.
    """

    def __init__(self, folder: Path) -> None:
        self._notify = RustNotify([str(folder)], False, False, _POLL_DELAY_MS, False, False)

    def watch(
        self, debounce_ms: int, step_ms: int, timeout_ms: int, stop: threading.Event
    ) -> set[tuple[int, str]] | Literal["signal", "stop", "timeout"]:
        """Block until changes come (a set of ``(watchfiles.Change value, path)``), for at
        most ``timeout_ms`` (``"timeout"``), or until ``stop`` is set (``"stop"``).

        Changes are grouped until none came for ``step_ms`` or for ``debounce_ms`` in all.
        A watcher that failed (a name that is not valid UTF-8 breaks it) raises at every call.
        """
        return self._notify.watch(debounce_ms, step_ms, timeout_ms, stop)

    def close(self) -> None:
        """Stop the watching thread."""
        self._notify.close()

    def __enter__(self) -> FolderWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
