"""Secrets: one file per secret in ``secrets_dir``, read when a node starts.

The secret ``NAME`` is the file ``secrets_dir/NAME`` (systemd's ``LoadCredential=NAME:...``
puts it in ``$CREDENTIALS_DIRECTORY``); its value is the file's text with one trailing
newline stripped. A submission only checks that the file exists; the value is read when a
node that references it starts, so a rotated secret is used without a restart, and every
value read is taught to :data:`~wfe_daemon.core.masking.MASKER` before it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Final

import structlog

from wfe_daemon.core.masking import MASKER, MIN_MASKED, MaskingFailed
from wfe_daemon.errors import ParamsError
from wfe_daemon.logs import SECRET_UNMASKED

__all__ = ["MAX_SECRET_BYTES", "SecretStore"]

MAX_SECRET_BYTES: Final = 64 << 10
"""The most a secret file may hold (64 KiB): a device or a huge file fails the node, not
the daemon, and learning a value to mask stays quick."""

READERS: Final = 2
"""The most threads reading secret files at once (a hung mount holds these, not the
event loop's shared executor, which name lookups and the rest need)."""

_HOW: Final = (
    "no secrets_dir is configured: set secrets_dir (WFE_SECRETS_DIR), or give the"
    " service LoadCredential= in its systemd unit"
)


class SecretStore:
    """The secrets of ``directory`` (None: no secrets configured), by name.

    Names are checked by validation (:data:`~wfe_daemon.core.inputs.SECRET_NAME`: no path
    separators, no dotfiles) before they reach this store.
    """

    def __init__(self, directory: Path | None, refused: Collection[Path] = ()) -> None:
        self.directory = directory
        self._refused = tuple(refused)
        """Files never served, whatever their name: the daemon's own credentials."""
        self._pending: dict[str, asyncio.Future[str]] = {}
        """The reads under way, by name: a second node asking for one waits for it."""
        self._queue: queue.SimpleQueue[tuple[str, asyncio.Future[str]]] = queue.SimpleQueue()
        self._readers: list[threading.Thread] = []

    async def read_soon(self, name: str) -> str:
        """:meth:`read` in one of this store's own :data:`READERS` threads, shared with
        any read of ``name`` already under way.

        The threads are daemon threads, never waited for: a read stuck on a hung file
        system fails its node at the node's timeout, and does not hold up the shutdown.
        """
        loop = asyncio.get_running_loop()
        pending = self._pending.get(name)
        if pending is None or pending.get_loop() is not loop:
            pending = self._pending[name] = loop.create_future()
            pending.add_done_callback(_retrieve)
            self._queue.put((name, pending))
            if len(self._readers) < READERS:
                reader = threading.Thread(target=self._serve, name="secret-reader", daemon=True)
                self._readers.append(reader)
                reader.start()
        return await asyncio.shield(pending)

    def _serve(self) -> None:
        """A reader thread: read each name asked for, and hand the outcome to its loop."""
        while True:
            name, pending = self._queue.get()
            try:
                outcome: str | BaseException = self.read(name)
            except Exception as exc:
                outcome = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                pending.get_loop().call_soon_threadsafe(self._settle, name, pending, outcome)

    def _settle(
        self, name: str, pending: asyncio.Future[str], outcome: str | BaseException
    ) -> None:
        if self._pending.get(name) is pending:
            del self._pending[name]
        if pending.done():
            return
        if isinstance(outcome, BaseException):
            pending.set_exception(outcome)
        else:
            pending.set_result(outcome)

    def _path(self, name: str) -> Path:
        """The file of secret ``name``; a ``ParamsError`` when it is refused."""
        assert self.directory is not None
        path = self.directory / name
        try:
            found = os.stat(path)
        except OSError:
            found = None
        self._check_not_own(name, path, found)
        return path

    def _check_not_own(self, name: str, path: Path, found: os.stat_result | None) -> None:
        """A ``ParamsError`` when ``path`` (whose status is ``found``) is one of the
        refused files: by its real path (symbolic links followed) or by being the same
        file (a hard link)."""
        real = os.path.realpath(path)
        for own in self._refused:
            same = os.path.realpath(own) == real
            if not same and found is not None:
                try:
                    theirs = os.stat(own)
                except OSError:
                    continue
                same = (theirs.st_dev, theirs.st_ino) == (found.st_dev, found.st_ino)
            if same:
                raise ParamsError(
                    f"names the secret '{name}', which is the daemon's own credential (the"
                    " HTTP API's token or the [notify] webhook): workflows may not read it"
                )

    def problem(self, name: str) -> str | None:
        """Why the secret ``name`` cannot be used (it is not a readable-looking file), or
        None; for validation, which does not read the value."""
        if self.directory is None:
            return f"needs the secret '{name}', but {_HOW}"
        try:
            path = self._path(name)
        except ParamsError as exc:
            return str(exc)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return f"names the secret '{name}', which is not in secrets_dir {self.directory}"
        except OSError as exc:
            return f"names the secret '{name}', which cannot be looked up: {exc.strerror or exc}"
        if not stat.S_ISREG(mode):
            return f"names the secret '{name}', but {path} is not a regular file"
        return None

    def _read_file(self, name: str, path: Path) -> bytes:
        """At most ``MAX_SECRET_BYTES + 1`` bytes of the regular file ``path``.

        Opened without blocking (a FIFO put in its place would wait for a writer for ever,
        and this runs on the event loop), then checked, by what was opened, to be a
        regular file and not one of the daemon's own credentials.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        with os.fdopen(fd, "rb", buffering=0) as file:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise ParamsError(f"secret '{name}': {path} is not a regular file")
            self._check_not_own(name, path, opened)
            chunks, size = [], 0
            while size <= MAX_SECRET_BYTES and (chunk := file.read(MAX_SECRET_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
        return b"".join(chunks)

    def read(self, name: str) -> str:
        """The value of the secret ``name``, now (and masked from now on).

        Raises:
            ParamsError: no secrets are configured, or the file cannot be read, is larger
                than :data:`MAX_SECRET_BYTES`, is not UTF-8 text, or cannot be masked.
        """
        if self.directory is None:
            raise ParamsError(f"secret '{name}': {_HOW}")
        path = self._path(name)
        try:
            data = self._read_file(name, path)
        except OSError as exc:
            raise ParamsError(
                f"secret '{name}': cannot read {path}: {exc.strerror or exc}"
            ) from None
        if len(data) > MAX_SECRET_BYTES:
            raise ParamsError(f"secret '{name}': {path} is larger than {MAX_SECRET_BYTES} bytes")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParamsError(f"secret '{name}': {path} is not UTF-8 text") from None
        value = value.removesuffix("\n")
        try:
            long_enough = MASKER.learn(value)
        except MaskingFailed as exc:
            raise ParamsError(f"secret '{name}': {path} cannot be masked: {exc}") from None
        if not long_enough:
            structlog.get_logger().warning(
                SECRET_UNMASKED,
                name=name,
                reason=f"shorter than {MIN_MASKED} characters: not masked in outputs and logs",
            )
        return value


def _retrieve(future: asyncio.Future[str]) -> None:
    """Mark a read's failure as seen: every node waiting for it may have been cancelled."""
    if not future.cancelled():
        future.exception()
