"""The private watcher of watchfiles that ``service._watchfiles`` uses is still there and works.

A failure here means a watchfiles release moved or changed it: adapt
``src/wfe_daemon/service/_watchfiles.py``, the one module that touches it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import watchfiles
from watchfiles import Change

import wfe_daemon
from wfe_daemon.service._watchfiles import FolderWatcher

MODULE = "src/wfe_daemon/service/_watchfiles.py"


def moved(what: str) -> str:
    return f"watchfiles {watchfiles.VERSION} no longer has {what}: see {MODULE}"


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[FolderWatcher]:
    with FolderWatcher(tmp_path) as folder_watcher:
        yield folder_watcher


def test_rust_notify_keeps_its_module_and_signatures() -> None:
    """``watchfiles._rust_notify.RustNotify`` takes the six arguments, and ``watch`` the four."""
    module = importlib.import_module("watchfiles._rust_notify")
    rust_notify = getattr(module, "RustNotify", None)
    assert rust_notify is not None, moved("watchfiles._rust_notify.RustNotify")
    assert list(inspect.signature(rust_notify).parameters) == [
        "watch_paths",
        "debug",
        "force_polling",
        "poll_delay_ms",
        "recursive",
        "ignore_permission_denied",
    ], moved(f"RustNotify{inspect.signature(rust_notify)} as it was")
    watch = inspect.signature(rust_notify.watch)
    assert list(watch.parameters)[-4:] == ["debounce_ms", "step_ms", "timeout_ms", "stop_event"], (
        moved(f"RustNotify.watch{watch} as it was")
    )
    assert callable(getattr(rust_notify, "close", None)), moved("RustNotify.close")


def test_a_new_file_is_reported_as_added_with_its_path(
    tmp_path: Path, watcher: FolderWatcher
) -> None:
    """A file made in the folder comes back as ``(Change.added, its path)``."""
    (tmp_path / "a.json").write_bytes(b"{}")
    changes = watcher.watch(10, 5, 5000, threading.Event())
    assert isinstance(changes, set), moved(f"RustNotify.watch returning changes (got {changes!r})")
    assert (Change.added.value, str(tmp_path / "a.json")) in changes, moved(
        f"(Change, path) pairs from RustNotify.watch (got {changes!r})"
    )


def test_subfolders_are_not_watched(tmp_path: Path) -> None:
    """Only the folder's own entries are reported: ``recursive`` is the fifth argument."""
    (tmp_path / "sub").mkdir()
    with FolderWatcher(tmp_path) as watcher:
        (tmp_path / "sub" / "inner.json").write_bytes(b"{}")
        (tmp_path / "top.json").write_bytes(b"{}")
        changes = watcher.watch(10, 5, 5000, threading.Event())
    assert isinstance(changes, set)
    paths = {path for _, path in changes}
    assert str(tmp_path / "top.json") in paths
    assert str(tmp_path / "sub" / "inner.json") not in paths, moved("recursive=False")


def test_a_quiet_folder_times_out_and_a_set_event_stops(watcher: FolderWatcher) -> None:
    """``watch`` answers ``"timeout"`` when nothing happens, ``"stop"`` once the event is set."""
    assert watcher.watch(10, 5, 20, threading.Event()) == "timeout", moved("'timeout'")
    stop = threading.Event()
    stop.set()
    assert watcher.watch(10, 5, 5000, stop) == "stop", moved("'stop'")


def test_a_missing_folder_raises_at_once(tmp_path: Path) -> None:
    """A folder that cannot be watched fails the constructor, which the intake logs."""
    with pytest.raises(OSError):
        FolderWatcher(tmp_path / "missing")


def test_a_closed_watcher_refuses_to_watch(tmp_path: Path) -> None:
    """After ``close`` the thread is gone and ``watch`` raises instead of blocking."""
    watcher = FolderWatcher(tmp_path)
    watcher.close()
    with pytest.raises(RuntimeError):
        watcher.watch(10, 5, 20, threading.Event())


def test_no_other_module_imports_the_private_watcher() -> None:
    """Only ``_watchfiles.py`` names ``_rust_notify`` or ``RustNotify``."""
    package = Path(wfe_daemon.__file__).parent
    private = re.compile(r"_rust_notify|RustNotify")
    offenders = [
        str(source.relative_to(package))
        for source in sorted(package.rglob("*.py"))
        if source.name != "_watchfiles.py" and private.search(source.read_text())
    ]
    assert offenders == [], f"watchfiles' private watcher belongs in {MODULE} only"
