"""The files of slots (:mod:`wfe_daemon.service.firing`): written into a staging folder,
each fsynced, then placed by one rename."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import anyio

from wfe_daemon.service.outbox import fsync_dir

__all__ = [
    "STAGING",
    "Named",
    "place",
    "read_slot_file",
    "remove_staging",
    "write_all",
    "write_files",
]

STAGING = ".slot-"
"""Folders of ``processing/`` holding slot files not yet recorded: the next start removes
them (a dot-folder is no leftover)."""

Named = tuple[str, bytes]
"""A file to write: its name and its bytes."""


def read_slot_file(path: Path) -> bytes | None:
    """The bytes of ``path``; ``None`` when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError:
        return None


_CHUNK = 25  # files per thread: their fsyncs overlap, and the file system commits them together


async def write_all(folder: Path, files: list[Named]) -> None:
    """:func:`write_files` in several threads at once (many slots due together)."""
    await anyio.to_thread.run_sync(folder.mkdir, 0o777, False, True)
    async with anyio.create_task_group() as tg:
        for start in range(0, len(files), _CHUNK):
            tg.start_soon(
                anyio.to_thread.run_sync, write_files, folder, files[start : start + _CHUNK]
            )


def write_files(folder: Path, files: list[Named]) -> None:
    """Write ``files`` into staging ``folder`` (made if missing), each fsynced, then the
    folder.

    Raises:
        OSError: the folder is removed.
    """
    try:
        folder.mkdir(exist_ok=True)
        for name, data in files:
            with open(folder / name, "wb") as fp:
                fp.write(data)
                fp.flush()
                os.fsync(fp.fileno())
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def place(staging: Path, folder: Path, keep: set[str]) -> None:
    """Keep only ``keep`` in ``staging``, then make it ``folder`` (renamed, the parent fsynced;
    moved file by file when ``folder`` exists already).

    Raises:
        OSError: nothing of ``staging`` is left behind.
    """
    try:
        for name in os.listdir(staging):
            if name not in keep:
                os.unlink(staging / name)
        if not folder.exists():
            os.rename(staging, folder)
        else:
            for name in keep:
                os.rename(staging / name, folder / name)
            fsync_dir(folder)
        fsync_dir(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_staging(processing: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.scandir(processing):
            if entry.name.startswith(STAGING) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
