"""Retention: old runs and old input files are deleted, the database is never VACUUMed.

:func:`prune_history` deletes runs that finished more than ``history_retention_days``
ago, with their nodes, and the old input files in ``inbox/processed/`` and
``inbox/rejected/``; :func:`keep_history` runs it at start and every day. It never
VACUUMs: SQLite reuses the freed pages for new rows, and the file does not shrink.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from wfe_daemon.config import Settings
from wfe_daemon.service.intake import PROCESSED, REJECTED
from wfe_daemon.store.database import Store
from wfe_daemon.store.firings import prune_firings

__all__ = ["PRUNE_BATCH", "PRUNE_EVERY_S", "keep_history", "prune_history"]

log = structlog.get_logger()

PRUNE_EVERY_S = 24 * 3600.0
PRUNE_BATCH = 500
"""Runs deleted per transaction, so the writer never holds a long one."""


async def prune_history(store: Store, settings: Settings) -> dict[str, int]:
    """Delete the history older than ``settings.history_retention_days``; counts deleted.

    Deletes runs that finished before the cutoff (never RUNNING ones) with their nodes,
    :data:`PRUNE_BATCH` runs per transaction, the slots schedules fired before it (but
    each schedule's latest), and the files in ``inbox/processed/`` and
    ``inbox/rejected/`` last modified before it (in a worker thread). Nothing in
    ``inbox/processing/`` is touched. With 0 days (the default) nothing is deleted.

    Returns:
        ``{"runs": n, "nodes": n, "files": n}``.
    """
    days = settings.history_retention_days
    if days <= 0:
        return {"runs": 0, "nodes": 0, "files": 0}
    cutoff = datetime.now(UTC) - timedelta(days=days)
    runs, nodes = await store.prune_runs(cutoff.isoformat(timespec="microseconds"), PRUNE_BATCH)
    await prune_firings(store, cutoff.isoformat(timespec="seconds"), PRUNE_BATCH)
    folders = [settings.inbox / PROCESSED, settings.inbox / REJECTED]
    files = await asyncio.to_thread(_delete_old_files, folders, cutoff.timestamp())
    return {"runs": runs, "nodes": nodes, "files": files}


def _delete_old_files(folders: list[Path], before: float) -> int:
    """Delete the regular files of ``folders`` (top level) modified before ``before``."""
    deleted = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if (
                    entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < before
                ):
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                continue
    return deleted


async def keep_history(store: Store, settings: Settings, *, every_s: float = PRUNE_EVERY_S) -> None:
    """Prune the history now and then every ``every_s`` seconds (a no-op with 0 days).

    Logs ``history.pruned`` with the counts; a failure is logged and retried next time.
    """
    if settings.history_retention_days <= 0:
        return
    while True:
        try:
            counts = await prune_history(store, settings)
            log.info("history.pruned", days=settings.history_retention_days, **counts)
        except Exception as exc:
            log.warning("history.prune_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)
