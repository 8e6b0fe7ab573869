"""The watched inbox: find top-level ``*.json`` files and claim them, in arrival order.

A claim is an atomic rename into ``inbox/processing/``; the daemon later moves the file on to
``processed/`` or ``rejected/`` with :func:`settle_file`, and resumes :func:`leftover_claims`
after a crash. Only regular files are taken: dotfiles, other suffixes, folders, symlinks, FIFOs,
sockets and devices are left alone, and files are opened without following links or blocking.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import anyio
import anyio.abc
import structlog
from anyio.streams.memory import MemoryObjectSendStream
from watchfiles import Change

from wfe_daemon.faults import Backoff, Faults
from wfe_daemon.service._watchfiles import FolderWatcher  # awatch's engine: see Intake._changes
from wfe_daemon.service.closewrites import WriteWatch
from wfe_daemon.service.outbox import result_name
from wfe_daemon.service.reading import open_regular, read_capped

__all__ = ["Claimed", "Intake", "describe_os_error", "leftover_claims", "settle_file"]

log = structlog.get_logger()

PROCESSING, PROCESSED, REJECTED = "processing", "processed", "rejected"
# The Rust watcher sleeps `step` between looks and yields once a look finds nothing new (or after
# `debounce`), so a rename is reported 5-10 ms after it happens instead of the default 1.6 s.
_DEBOUNCE_MS = 10
_STEP_MS = 5
_IDLE_STEP_MS = 40  # the step once the inbox has been quiet for _IDLE_AFTER_S
_IDLE_AFTER_S = 5.0
# The watcher thread returns at least this often, even when idle: that paces the re-checks of
# half-written files and bounds how long a cancel waits for the (uncancellable) thread.
_TICK_MS = 100
_IDLE_TICK_MS = 250  # the tick once quiet with nothing to re-check: each one is a thread hop
_RECHECK_S = 0.1
_CLAIM_BATCH = 10  # files claimed in one worker-thread trip, at most


@dataclass(frozen=True, slots=True)
class Claimed:
    """A file taken from the inbox: it now lives at ``path`` inside ``inbox/processing/``.

    ``source`` is its original name. ``data`` holds its bytes, or is ``None`` when the file was
    too large to read, in which case ``problem`` says why (the daemon rejects it).
    ``arrived_at`` is the file's ``st_ctime`` (wall clock) when intake read it: the rename into
    the inbox, or its last write; ``None`` for files not taken from the inbox by intake.
    ``via`` is ``"api"`` for a workflow the HTTP API wrote and recorded (it is run as a
    leftover, but it starts afresh); ``None`` otherwise.
    """

    path: Path
    source: str
    data: bytes | None
    problem: str | None = None
    arrived_at: float | None = field(default=None, compare=False)
    via: str | None = None


class _Untaken(Enum):
    """Why a file was not claimed."""

    GONE = "gone"  # gone, or not a regular file
    UNFINISHED = "unfinished"  # probably still being written: look again later


@dataclass(frozen=True, slots=True)
class _Probe:
    ino: int
    data: bytes | None
    problem: str | None
    ready: bool  # False: probably still being written, look again later
    ctime: float | None = None
    quiet: bool = False  # unchanged for quiet_s: ready even if it does not parse


class Intake:
    """Watches ``inbox`` and sends every complete top-level ``*.json`` file as a :class:`Claimed`.

    Args:
        inbox: the watched folder; ``processing/``, ``processed/`` and ``rejected/`` live inside.
        max_file_size: larger files are claimed unread, with ``data=None`` and a ``problem``.
        rescan_interval: seconds between full listings of the inbox, a safety net for
            missed watch events (and the only source of files if watching fails).
        quiet_s: a file that does not parse as JSON is left alone while it was modified in the
            last ``quiet_s`` seconds (it may be half-written), then claimed anyway, unless
            inotify says a process still has it open after writing to it
            (:mod:`wfe_daemon.service.closewrites`): a writer that pauses mid-file is waited for.
        faults: where the ``inbox`` incident is kept (the daemon's, for ``/healthz``).
    """

    def __init__(
        self,
        inbox: Path,
        max_file_size: int,
        *,
        rescan_interval: float = 5.0,
        quiet_s: float = 2.0,
        faults: Faults | None = None,
    ) -> None:
        self.inbox = inbox
        self.max_file_size = max_file_size
        self.rescan_interval = rescan_interval
        self.quiet_s = quiet_s
        # Candidate names in arrival order -> monotonic time before which not to look again.
        self._pending: dict[str, float] = {}
        self._write_watch: WriteWatch | None = None
        self.faults = faults if faults is not None else Faults()
        self._noted: set[str] = set()  # names left alone and logged, while they stay
        self._inbox_lost = False  # a claim found processing/ gone: check the inbox now

    async def run(
        self,
        send: MemoryObjectSendStream[Claimed],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
        after: anyio.Event | None = None,
    ) -> None:
        """Claim files and send them, oldest first, until cancelled.

        Creates the inbox folders, arms the watcher, then reports ``started`` (use
        ``await tg.start(intake.run, send)``): a file renamed in from then on is seen. Files
        already present are taken next. Files are claimed in small batches as they are about
        to be sent, so a full ``send`` buffer holds the rest back in the inbox. If the task is
        cancelled while claimed files wait for ``send``, they stay in ``processing/`` for
        crash recovery (:func:`leftover_claims`). ``send`` belongs to the caller and is not
        closed here.

        With ``after``, no file is taken before that event is set (the watcher is armed
        and ``started`` reported all the same). A file that cannot be read or claimed (an
        ``OSError`` such as EIO, EACCES or ENOSPC) is logged as ``intake.file_error``, left
        where it is, and tried again at the next rescan.

        An inbox removed, moved away or replaced while the daemon runs (found at the next
        rescan, or when a claim finds ``processing/`` gone) is an ``inbox`` incident: the
        folders are made again and the watchers re-armed on them, retried with backoff
        while that fails.
        """
        backoff = Backoff(first_s=0.5, max_s=self.rescan_interval)
        started = False
        lock: int | None = None  # the flock on an inbox made again (the daemon locked the first)
        try:
            while True:
                try:
                    identity = await anyio.to_thread.run_sync(_make_folders, self.inbox)
                    if started:
                        lock = _relock(self.inbox, lock)
                except OSError as exc:
                    if not started:
                        raise
                    self.faults["inbox"].failed(
                        f"cannot take {self.inbox}: {describe_os_error(exc)}", inbox=str(self.inbox)
                    )
                    await anyio.sleep(backoff.next())
                    continue
                backoff.reset()
                started = await self._watch_inbox(send, identity, started, task_status, after)
        finally:
            if lock is not None:
                os.close(lock)

    async def _watch_inbox(
        self,
        send: MemoryObjectSendStream[Claimed],
        identity: tuple[int, int],
        started: bool,
        task_status: anyio.abc.TaskStatus[None],
        after: anyio.Event | None,
    ) -> bool:
        """Arm the watchers on the inbox and take files until it is gone or replaced."""
        with contextlib.closing(WriteWatch(self.inbox)) as self._write_watch:
            async with aclosing(self._changes()) as changes:
                await anext(changes)  # arms the watcher; the scan sees what came meanwhile
                if started:
                    self.faults["inbox"].healed()
                else:
                    started = True
                    task_status.started()
                    if after is not None:
                        await after.wait()
                await self._take_files(send, changes, identity)
        return started

    async def _take_files(
        self,
        send: MemoryObjectSendStream[Claimed],
        changes: AsyncGenerator[set[str] | None, None],
        identity: tuple[int, int],
    ) -> None:
        """The intake's loop on one armed inbox; returns when that inbox is gone or replaced."""
        next_scan = anyio.current_time()
        fresh: set[str] | None = set()
        while True:
            if fresh:
                self._add((await anyio.to_thread.run_sync(_arrivals, self.inbox, fresh))[0])
            if fresh is None or self._inbox_lost or anyio.current_time() >= next_scan:
                problem = await anyio.to_thread.run_sync(_inbox_problem, self.inbox, identity)
                if problem is not None:
                    self._inbox_lost = False
                    self.faults["inbox"].failed(problem, inbox=str(self.inbox))
                    return
                found, odd = await anyio.to_thread.run_sync(_arrivals, self.inbox, None)
                self._add(found)
                self._note(odd)
                next_scan = anyio.current_time() + self.rescan_interval
            await self._drain(send)
            fresh = await anext(changes)

    def _note(self, odd: dict[str, str]) -> None:
        """Log once each file left alone for its name (kept while the file stays)."""
        for name, why in odd.items():
            if name not in self._noted:
                log.warning("intake.ignored", name=name, reason=why)
        self._noted = set(odd)

    async def _changes(self) -> AsyncGenerator[set[str] | None, None]:
        """Yield changed candidate names, an empty set each tick, ``None`` for "rescan now";
        poll if watching fails.

        This is ``watchfiles.awatch``'s loop over its Rust watcher, with one change: the
        watcher looks every ``_STEP_MS`` while files arrive and only every ``_IDLE_STEP_MS``
        once the inbox has been quiet for ``_IDLE_AFTER_S`` (each look wakes a thread and
        takes the GIL: 200 looks a second were most of the idle daemon's CPU), and returns
        every ``_IDLE_TICK_MS`` instead of every ``_TICK_MS`` while no half-written file
        waits for a re-check (each return is a thread hop: a quarter of the idle CPU). The
        first file after a quiet spell waits up to two idle steps; the ones after it, fast
        steps. A shutdown of an idle daemon waits up to one idle tick for the thread.

        A watcher that fails (a name that is not valid UTF-8 breaks it for good) is
        replaced by a new one, after a rescan that finds what its lost events held.
        """
        while True:
            try:
                notify = FolderWatcher(self.inbox)
            except Exception as exc:  # e.g. the inotify watch limit: rescans find every file
                log.warning("intake.watch_failed", inbox=str(self.inbox), error=repr(exc))
                break
            with notify:
                async for names in self._watch(notify):
                    yield names
            yield None  # the watcher failed: rescan now, then watch with a new one
        while True:
            await anyio.sleep(_TICK_MS / 1000)
            yield set()

    async def _watch(self, notify: FolderWatcher) -> AsyncGenerator[set[str] | None, None]:
        stop = threading.Event()
        quiet_since = anyio.current_time()
        while True:
            idle = anyio.current_time() - quiet_since > _IDLE_AFTER_S
            step = _IDLE_STEP_MS if idle else _STEP_MS
            tick = _IDLE_TICK_MS if idle and not self._pending else _TICK_MS
            try:
                raw = await anyio.to_thread.run_sync(notify.watch, _DEBOUNCE_MS, step, tick, stop)
            except Exception as exc:
                # A name that is not valid UTF-8 breaks the watcher, which then raises at
                # every call: end, and let _changes rescan and make a new one.
                log.warning(
                    "intake.watch_failed",
                    inbox=str(self.inbox),
                    error=repr(exc),
                    action="rescanned and watching again",
                )
                return
            except BaseException:
                stop.set()
                raise
            if isinstance(raw, str):  # "timeout" (or "signal"/"stop", which we never ask for)
                yield set()
                continue
            names = {
                os.path.basename(path)
                for change, path in raw
                if _watch_filter(Change(change), path)
            }
            quiet_since = anyio.current_time()
            yield names

    def _add(self, names: Iterable[str]) -> None:
        for name in names:
            self._pending.setdefault(name, 0.0)

    async def _drain(self, send: MemoryObjectSendStream[Claimed]) -> None:
        if self._write_watch is not None:
            self._write_watch.update()
        now = anyio.current_time()
        due = [name for name, at in self._pending.items() if at <= now]
        while due:
            # One worker-thread trip per batch: in a burst, each call on the file system
            # waits behind the workers' renames and fsyncs, and the loop must not wait. A
            # batch is no larger than what ``send`` takes now, plus one that waits in it.
            room = _room(send)
            batch, due = due[:room], due[room:]
            for name, taken in await anyio.to_thread.run_sync(self._claim_each, batch):
                await self._hand_over(name, taken, send)

    def _claim_each(self, names: list[str]) -> list[tuple[str, Claimed | _Untaken | OSError]]:
        """:meth:`_claim_complete` for each name (in a worker thread); an error is returned."""
        taken: list[tuple[str, Claimed | _Untaken | OSError]] = []
        for name in names:
            try:
                taken.append((name, self._claim_complete(name)))
            except OSError as exc:
                taken.append((name, exc))
        return taken

    async def _hand_over(
        self,
        name: str,
        taken: Claimed | _Untaken | OSError,
        send: MemoryObjectSendStream[Claimed],
    ) -> None:
        """Send a claimed file; note one to look at again, or one that failed."""
        if isinstance(taken, _FolderGone):
            self._inbox_lost = True  # the file stays pending; claimed once the folder is back
            self._pending[name] = anyio.current_time() + _RECHECK_S
        elif isinstance(taken, OSError):  # left in the inbox: the next rescan finds it again
            self._pending.pop(name, None)
            log.warning("intake.file_error", name=name, error=describe_os_error(taken))
        elif taken is _Untaken.UNFINISHED:
            self._pending[name] = anyio.current_time() + _RECHECK_S
        else:
            del self._pending[name]
            if isinstance(taken, Claimed):
                await send.send(taken)

    def _claim_complete(self, name: str) -> Claimed | _Untaken:
        """Read ``name`` and, when it is complete, claim it (``inbox/processing/``).

        Raises:
            OSError: it cannot be read or claimed (it stays in the inbox).
        """
        probe = self._probe(self.inbox / name)
        if probe is None:
            return _Untaken.GONE
        if not probe.ready or self._paused_writer(name, probe):
            return _Untaken.UNFINISHED
        dest = _claim(self.inbox / name, self.inbox / PROCESSING)
        if dest is None:
            return _Untaken.GONE
        try:
            if os.lstat(dest).st_ino != probe.ino:  # replaced after we read it: send what we moved
                probe = self._probe(dest) or _Probe(0, None, "not a regular file", True)
        except OSError as exc:  # claimed already: it gets a (REJECTED) result, not a retry
            log.warning("intake.file_error", name=name, error=describe_os_error(exc))
            probe = _Probe(0, None, f"cannot read file: {describe_os_error(exc)}", True)
        return Claimed(dest, name, probe.data, probe.problem, probe.ctime)

    def _paused_writer(self, name: str, probe: _Probe) -> bool:
        """A quiet file that does not parse, still open after a write: its writer paused."""
        return (
            probe.quiet
            and probe.data is not None
            and self._write_watch is not None
            and self._write_watch.writing(name)
            and not _parses(probe.data)
        )

    def _probe(self, path: Path) -> _Probe | None:
        """Open and inspect ``path``; None when it is gone or not a regular file."""
        with contextlib.ExitStack() as stack:
            try:  # a symlink fails (ELOOP), a FIFO does not block
                fd, st = stack.enter_context(open_regular(path))
            except OSError:
                return None
            if st.st_size > self.max_file_size:
                problem = f"file is {st.st_size} bytes, over max_file_size {self.max_file_size}"
                return _Probe(st.st_ino, None, problem, ready=True, ctime=st.st_ctime)
            return self._inspect(fd, st)

    def _inspect(self, fd: int, before: os.stat_result) -> _Probe:
        """Read the file and judge whether it is complete (it parses, or quiet for quiet_s)."""
        data = read_capped(fd, self.max_file_size, size_hint=before.st_size)
        if data is None:  # it grew past the limit while read: looked at again later
            problem = f"file is over max_file_size {self.max_file_size}"
            return _Probe(before.st_ino, None, problem, False, before.st_ctime)
        after = os.fstat(fd)
        changed = len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != (
            before.st_size,
            before.st_mtime_ns,
        )
        quiet = time.time() - after.st_mtime >= self.quiet_s
        ready = not changed and (quiet or _parses(data))
        return _Probe(before.st_ino, data, None, ready, before.st_ctime, quiet)


def _room(send: MemoryObjectSendStream[Claimed]) -> int:
    """How many files to claim now: as many as ``send`` takes without waiting, plus one
    (it waits in ``send``), at most ``_CLAIM_BATCH``."""
    stats = send.statistics()
    free = stats.max_buffer_size - stats.current_buffer_used + stats.tasks_waiting_receive
    return int(max(1, min(free + 1, _CLAIM_BATCH)))


def settle_file(claimed_path: Path, inbox: Path, rejected: bool) -> Path:
    """Move a claimed file from ``processing/`` to ``processed/`` (or ``rejected/``).

    Never overwrites: on a name clash the file becomes ``<stem>.<unique><suffix>``. The
    destination folder is created if missing.

    Returns:
        The file's new path.

    Raises:
        OSError: the file is gone or cannot be moved.
    """
    folder = inbox / (REJECTED if rejected else PROCESSED)
    folder.mkdir(parents=True, exist_ok=True)
    dest = _free_path(folder, claimed_path.name)
    os.rename(claimed_path, dest)
    if claimed_path.parent != inbox / PROCESSING:  # a clash folder of _claim, now empty
        with contextlib.suppress(OSError):
            claimed_path.parent.rmdir()
    return dest


def leftover_claims(inbox: Path) -> list[Path]:
    """Files left in ``inbox/processing/`` (by a crash or a cancel), oldest mtime first.

    Includes the files of the folders ``processing/<hex>/`` made by a claim whose name was
    taken (and by the API's submissions); empty ones are removed on the way. Dotfiles (a
    submission's temporary file) are not workflows and are left out.
    """
    found: list[tuple[int, Path]] = []
    try:
        _collect(inbox / PROCESSING, found, depth=1)
    except FileNotFoundError:
        return []
    return [path for _, path in sorted(found)]


def _collect(folder: Path, found: list[tuple[int, Path]], depth: int) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path)))
            elif depth and entry.is_dir(follow_symlinks=False):
                before = len(found)
                _collect(Path(entry.path), found, depth - 1)
                if len(found) == before:
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)


def _is_candidate(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".") and _decodable(name)


def _decodable(name: str) -> bool:
    """Whether a file name is valid UTF-8 (``os`` decodes other bytes to lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Names writers use while a file is not finished: left alone without a word.
_QUIET_SUFFIXES = (".tmp", ".part", ".swp", "~")


def _odd_name(name: str) -> str | None:
    """Why a regular file of the inbox is left alone, when that deserves a log line."""
    if name.startswith(".") or name.endswith(_QUIET_SUFFIXES):
        return None
    if not _decodable(name):
        return "the name is not valid UTF-8: rename the file to have it processed"
    if not name.endswith(".json"):
        return "only names ending in .json (lower case) are taken"
    return None


def _watch_filter(change: Change, path: str) -> bool:
    return change != Change.deleted and _is_candidate(os.path.basename(path))


def _arrivals(inbox: Path, names: Iterable[str] | None) -> tuple[list[str], dict[str, str]]:
    """Regular candidate files among ``names`` (None: the whole top level), oldest mtime first;
    and, on a whole listing, the regular files left alone for their name, with why."""
    odd: dict[str, str] = {}
    if names is None:
        try:
            with os.scandir(inbox) as entries:
                names = [entry.name for entry in entries]
        except OSError:
            return [], odd
        listing = True
    else:
        listing = False
    found: list[tuple[int, str]] = []
    for name in names:
        candidate = _is_candidate(name)
        why = None if candidate or not listing else _odd_name(name)
        if not candidate and why is None:
            continue
        try:
            st = os.lstat(inbox / name)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if candidate:
            found.append((st.st_mtime_ns, name))
        elif why is not None:
            odd[name] = why
    return [name for _, name in sorted(found)], odd


def _make_folders(inbox: Path) -> tuple[int, int]:
    """Create the inbox and its three folders (as needed); the inbox's identity."""
    for sub in ("", PROCESSING, PROCESSED, REJECTED):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    st = os.stat(inbox)
    return st.st_dev, st.st_ino


def _relock(inbox: Path, old: int | None) -> int:
    """Hold an exclusive ``flock`` on the inbox folder (made again), releasing ``old``.

    Raises:
        OSError: another process (a second daemon) holds it: EWOULDBLOCK.
    """
    fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    if old is not None:
        os.close(old)
    return fd


def _inbox_problem(inbox: Path, identity: tuple[int, int]) -> str | None:
    """What happened to the watched inbox (``None``: it is still there, folders and all)."""
    try:
        st = os.stat(inbox)
    except OSError as exc:
        return f"inbox {inbox} is gone: {describe_os_error(exc)}"
    if (st.st_dev, st.st_ino) != identity:
        return f"inbox {inbox} was replaced by another folder"
    for sub in (PROCESSING, PROCESSED, REJECTED):
        if not (inbox / sub).is_dir():
            return f"folder {inbox / sub} is gone"
    return None


def _parses(data: bytes) -> bool:
    """True when ``data`` is complete: it parses, or it is too deeply nested to ever parse."""
    try:
        json.loads(data)
    except RecursionError:
        return True  # hostile nesting will not parse later either: let the daemon reject it
    except Exception:
        return False
    return True


def _claim(path: Path, processing: Path) -> Path | None:
    """Rename ``path`` into ``processing``; None when it vanished first.

    The file keeps its name, which crash recovery reads back as its source: when the name is
    taken (an earlier file of that name is still being processed), it goes to a fresh
    ``processing/<hex>/`` folder instead of being renamed.
    """
    dest = processing / path.name
    if os.path.lexists(dest):
        dest = processing / uuid.uuid4().hex[:12] / path.name
        dest.parent.mkdir()
    try:
        os.rename(path, dest)
    except OSError as exc:
        if dest.parent != processing:
            with contextlib.suppress(OSError):
                dest.parent.rmdir()
        if isinstance(exc, FileNotFoundError):
            if os.path.lexists(path):
                raise _FolderGone(str(dest.parent)) from exc
            return None
        raise
    return dest


class _FolderGone(OSError):
    """A claim found ``processing/`` missing (the file itself is still there)."""


def describe_os_error(exc: OSError) -> str:
    """``OSError`` as one short line: its strerror (or text), without the errno tuple."""
    return exc.strerror or str(exc) or type(exc).__name__


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>.<unique><suffix>`` when taken (still within
    NAME_MAX: a long stem is shortened as result names are)."""
    # Check-then-rename is enough: this process is the only writer of these folders.
    dest = folder / name
    while os.path.lexists(dest):
        stem, suffix = os.path.splitext(name)
        dest = folder / result_name(stem, f".{uuid.uuid4().hex[:12]}{suffix}")
    return dest
