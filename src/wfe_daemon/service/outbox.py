"""Atomic, never-overwriting result files in the outbox (sync; call through a worker thread)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from wfe_daemon.core.summary import RunSummary

__all__ = [
    "NAME_MAX",
    "FolderSync",
    "find_result",
    "fsync_dir",
    "remove_temporaries",
    "result_name",
    "same_run",
    "write_result",
]

NAME_MAX = 255
"""Bytes a file name may have on Linux file systems (the name, not the path)."""
_HASH_CHARS = 12


def write_result(
    outbox: Path,
    stem: str,
    run_id: int,
    summary: RunSummary,
    *,
    sync_outbox: Callable[[], None] | None = None,
) -> Path:
    """Publish ``summary`` as ``outbox/<stem>.result.json`` atomically, never overwriting.

    The JSON is written to a dot-prefixed temporary file in ``outbox`` itself (so a reader
    globbing ``*.json`` never sees it and the publish never crosses a mount), fsynced, then
    hard-linked to its final name: ``os.link`` fails instead of replacing an existing file,
    which a plain rename would not. On a clash the result goes to
    ``<stem>.result.<run_id>.json``, then ``<stem>.result.<run_id>.1.json``, ``.2``, ... (each
    name shortened by :func:`result_name`). A name that already holds this run's result (a
    re-publish after a crash; see :func:`same_run`) is returned as is, so a retried publish
    never adds a second file. The outbox directory is fsynced afterwards (by
    ``sync_outbox`` when given: a :class:`FolderSync` that publishes at the same time
    share) and the temporary file never outlives the call.

    Returns:
        The path the result was published under.

    Raises:
        OSError: the outbox is missing or not writable, or the disk is full.
    """
    data = pretty_json(summary)
    # Cap the stem in the temporary name so it stays under NAME_MAX even for long stems.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{_cut(stem, 100)}.", suffix=".tmp", dir=outbox)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        n = 0
        while True:
            candidate = _candidate(outbox, stem, run_id, n)
            try:
                os.link(tmp, candidate)
                break
            except FileExistsError:
                if same_run(_read(candidate), summary["run_id"], summary["started_at"]):
                    break
                n += 1
        if sync_outbox is None:
            fsync_dir(outbox)
        else:
            sync_outbox()
        return candidate
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def same_run(doc: Any, run_id: int, started_at: str) -> bool:
    """Whether a published result ``doc`` is the result of the run ``(run_id, started_at)``.

    A run is known by its id together with the microsecond it started: ids start again at 1
    when the database is deleted or restored from a backup, so an id alone may name an
    earlier run whose result is still in the outbox.
    """
    return (
        isinstance(doc, dict)
        and doc.get("run_id") == run_id
        and doc.get("started_at") == started_at
    )


def find_result(outbox: Path, stem: str, run_id: int, started_at: str | None = None) -> Path | None:
    """Return the already published result of the run ``(run_id, started_at)``, or ``None``.

    Crash recovery uses this to skip re-publishing when the daemon died after writing the
    result but before moving the input to ``inbox/processed/``. Every name
    :func:`write_result` may have used is checked (``<stem>.result.json``, then
    ``<stem>.result.<run_id>[.N].json``, each shortened by :func:`result_name`); a file
    counts only when its ``run_id`` and ``started_at`` are the run's (see :func:`same_run`).
    Without ``started_at`` no file can be told apart from an earlier run's with the same
    id, so ``None`` is returned: :func:`write_result` recognises the run's own result itself.
    """
    if started_at is None:
        return None
    n = 0
    while True:
        path = _candidate(outbox, stem, run_id, n)
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            if n >= 1:  # write_result takes the names in order: none after a missing one
                return None
            doc = None
        except (IsADirectoryError, ValueError):  # a folder or another file holds that name
            doc = None
        # Any other OSError (the outbox unreadable, not a folder, EIO) is raised: looking
        # further could not end, and the caller retries the publish as a fault.
        if same_run(doc, run_id, started_at):
            return path
        n += 1


def remove_temporaries(outbox: Path) -> int:
    """Delete the ``.*.tmp`` files a killed :func:`write_result` left behind; how many.

    Call only while holding the state lock: no other writer can be publishing then.
    """
    removed = 0
    for path in outbox.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed += 1
    return removed


def _candidate(outbox: Path, stem: str, run_id: int, n: int) -> Path:
    if n == 0:
        return outbox / result_name(stem, ".result.json")
    if n == 1:
        return outbox / result_name(stem, f".result.{run_id}.json")
    return outbox / result_name(stem, f".result.{run_id}.{n - 1}.json")


def result_name(stem: str, tail: str) -> str:
    """``stem + tail``, with the stem shortened when the name would pass :data:`NAME_MAX` bytes.

    A stem too long is cut at a character boundary to fit, then followed by ``~`` and the
    first 12 hex digits of the SHA-256 of the whole stem (UTF-8), so two long stems that
    share their beginning still get different names, and the same stem always the same.
    """
    name = stem + tail
    if len(os.fsencode(name)) <= NAME_MAX:
        return name
    digest = hashlib.sha256(os.fsencode(stem)).hexdigest()[:_HASH_CHARS]
    room = NAME_MAX - len(os.fsencode(tail)) - 1 - _HASH_CHARS
    return f"{_cut(stem, room)}~{digest}{tail}"


def _cut(text: str, size: int) -> str:
    """The longest beginning of ``text`` that is at most ``size`` bytes as a file name."""
    if len(os.fsencode(text)) <= size:
        return text
    kept, used = [], 0
    for char in text:
        used += len(os.fsencode(char))
        if used > size:
            break
        kept.append(char)
    return "".join(kept)


def _read(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class FolderSync:
    """``fsync`` of one folder, shared by the threads that ask for it at the same time.

    A call returns once a sync of the folder that began after the call was made has ended,
    so every change made to the folder before the call is durable. While one sync runs, the
    callers that come meanwhile wait for it to end, then one of them runs the next sync for
    them all (a group commit): ten publishes that overlap cost two or three fsyncs of the
    outbox instead of ten. A sync that fails raises in the caller that ran it; the callers
    that waited on it run another.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._changed = threading.Condition()
        self._begun = 0  # syncs begun so far
        self._covered = 0  # the last sync (by its number) that ended without error
        self._running = False

    def __call__(self) -> None:
        with self._changed:
            wanted = self._begun + 1  # the first sync to begin from now on
            while self._running and self._covered < wanted:
                self._changed.wait()
            if self._covered >= wanted:
                return
            self._running = True
            self._begun += 1
            number = self._begun
        synced = False
        try:
            fsync_dir(self.path)
            synced = True
        finally:
            with self._changed:
                self._running = False
                if synced:
                    self._covered = number
                self._changed.notify_all()


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` durable (its entries, not the files' contents)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pretty_json(value: Any) -> bytes:
    """``value`` as indented JSON (two spaces), UTF-8, with a final newline: a result
    summary as the outbox and ``execute`` give it.

    orjson writes it several times faster than the standard encoder (which, indented,
    runs in pure Python); what orjson refuses (an integer beyond 64 bits, a lone
    surrogate, a key that is not a string) the standard encoder writes without loss.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(value, indent=2) + "\n").encode()
