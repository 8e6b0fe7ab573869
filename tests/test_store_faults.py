"""The database under real faults: a full disk, a lock held elsewhere, a damaged file."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wfe_daemon.errors import StoreError
from wfe_daemon.store import MIGRATIONS, Store

STARTED = "2024-01-01T00:00:00+00:00"


@dataclass
class SmallDisk:
    """A tmpfs of a few MiB mounted for one test: fill it up, free it again."""

    root: Path

    @property
    def db_path(self) -> Path:
        """Where the test's database lives on this disk."""
        return self.root / "wfe.db"

    def fill(self) -> None:
        """Write a filler file until the disk reports ENOSPC."""
        chunk = b"\0" * 4096
        with open(self.root / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise

    def free(self) -> None:
        """Remove the filler: the disk has room again."""
        (self.root / "filler").unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 4 MiB tmpfs under ``tmp_path``, unmounted at teardown (needs root, as in CI)."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)],
        capture_output=True, text=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


async def test_a_write_on_a_full_disk_fails_with_sqlites_own_error(small_disk: SmallDisk) -> None:
    """On a full disk a waiting write fails naming "database or disk is full" (not a failed
    ROLLBACK), and once the disk has room again the writes kept in the queue commit."""
    async with Store.open(small_disk.db_path, give_up_s=0.3) as store:
        run_id = await store.create_run(name="w", started_at=STARTED, nodes=[("a", "echo")])
        small_disk.fill()
        with pytest.raises(StoreError, match="database or disk is full") as raised:
            await store.finish_run(run_id, status="SUCCESS", finished_at=STARTED,
                                   duration=1.0, summary={"big": "x" * 300_000})
        assert "rollback" not in str(raised.value)
        small_disk.free()
        await store.flush()
        run = await store.get_run(run_id)

    assert run is not None and run["status"] == "SUCCESS"


async def test_a_migration_on_a_full_disk_fails_with_sqlites_own_error(
    small_disk: SmallDisk,
) -> None:
    """A migration step that fills the disk reports "database or disk is full", and the file
    keeps its old schema version, migrated at the next open once there is room."""
    # Another connection stays open so that the WAL files exist before the disk fills.
    other = sqlite3.connect(small_disk.db_path, isolation_level=None)
    try:
        _make_v1_wal_database(other)
        small_disk.fill()
        with pytest.raises(StoreError, match="database or disk is full") as raised:
            async with Store.open(small_disk.db_path):
                pass
        assert "rollback" not in str(raised.value)
        assert other.execute("PRAGMA user_version").fetchone() == (1,)
        small_disk.free()
        async with Store.open(small_disk.db_path) as store:
            assert await store.list_runs() == []
    finally:
        other.close()


def _make_v1_wal_database(conn: sqlite3.Connection) -> None:
    """Schema version 1 in WAL mode, with rows enough that the next migration's new indexes
    need more room than a full disk has."""
    conn.execute("PRAGMA journal_mode = WAL")  # as every earlier version left it
    conn.executescript(MIGRATIONS[0])
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO noderun (workflow_id, node_id, type, status) VALUES (?, ?, 'echo', 'OK')",
        ((n, f"node-{n:08d}" + "x" * 200) for n in range(6000)),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
