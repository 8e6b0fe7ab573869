"""The database under real faults: a full disk, a lock held elsewhere, a damaged file."""

from __future__ import annotations

import asyncio
import errno
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from test_store import Cli, finish, node_rows, wait_for
from test_store import Writer as WorkflowWriter
from wfe_daemon.errors import StoreCorrupt, StoreError
from wfe_daemon.faults import FAULT_BEGUN, FAULT_HEALED, Faults
from wfe_daemon.store import database as store_module
from wfe_daemon.store.database import MIGRATIONS, STORE_UNWRITTEN, Store

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

    def remount(self, mode: str) -> None:
        """Make the disk read-only (``"ro"``, with no file open for writing) or writable."""
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.root)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 4 MiB tmpfs under ``tmp_path``, unmounted at teardown (needs root, as in CI)."""
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
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
            await store.finish_run(
                run_id,
                status="SUCCESS",
                finished_at=STARTED,
                duration=1.0,
                summary={"big": "x" * 300_000},
            )
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


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(sys.argv[2])
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


class LockHolder:
    """Another process holding a lock on the database until ``release()``."""

    def __init__(self, path: Path, begin: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), begin],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "locked\n"

    def release(self) -> None:
        """Commit and let go; returns once the process has exited."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0


@contextmanager
def lock_held(path: Path, begin: str = "BEGIN EXCLUSIVE") -> Iterator[LockHolder]:
    """A :class:`LockHolder` for the block, killed at its end if still running."""
    holder = LockHolder(path, begin)
    try:
        yield holder
    finally:
        if holder.proc.poll() is None:
            holder.proc.kill()
        holder.proc.wait(30)
        for stream in (holder.proc.stdin, holder.proc.stdout):
            if stream is not None:
                stream.close()


def incident_lines(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fault.begun and fault.healed entries of captured logs."""
    return [entry for entry in logs if entry["event"] in (FAULT_BEGUN, FAULT_HEALED)]


async def test_a_lock_held_elsewhere_is_waited_out_and_logged_once(db_path: Path) -> None:
    """While another process holds the write lock past the busy timeout, writes queued
    meanwhile wait (nothing gives up) and commit once it lets go; the spell is one
    fault.begun with SQLite's error and one fault.healed with the count."""
    faults = Faults()
    with capture_logs() as logs:
        async with Store.open(db_path, busy_timeout_s=0.05, give_up_s=None, faults=faults) as store:
            run_id = await store.create_run(name="w", started_at=STARTED, nodes=[("a", "echo")])
            with lock_held(db_path) as holder:
                finish(store, run_id, "a")
                created = asyncio.create_task(
                    store.create_run(name="later", started_at=STARTED, nodes=[])
                )
                await wait_for(lambda: faults["store"].failures >= 3)
                assert not created.done()
                assert "database is locked" in faults.active()["store"]
                holder.release()
                later_id = await created
            assert faults.active() == {}
            assert store.healthy

    assert node_rows(db_path, run_id) == {"a": ("SUCCESS", 1)}
    assert later_id == run_id + 1
    begun, healed = incident_lines(logs)
    assert (begun["event"], begun["fault"], begun["log_level"]) == (FAULT_BEGUN, "store", "warning")
    assert "database is locked" in begun["error"]
    assert healed["event"] == FAULT_HEALED and healed["failures"] >= 3


async def test_a_full_disk_is_waited_out_and_logged_once(small_disk: SmallDisk) -> None:
    """A durable write on a full disk waits (nothing gives up) and commits once there is
    room, with one fault.begun naming "database or disk is full" and one fault.healed."""
    faults = Faults()
    with capture_logs() as logs:
        async with Store.open(small_disk.db_path, give_up_s=None, faults=faults) as store:
            run_id = await store.create_run(name="w", started_at=STARTED, nodes=[("a", "echo")])
            small_disk.fill()
            finished = asyncio.create_task(
                store.finish_run(
                    run_id,
                    status="SUCCESS",
                    finished_at=STARTED,
                    duration=1.0,
                    summary={"big": "x" * 300_000},
                )
            )
            await wait_for(lambda: faults["store"].failures >= 2)
            assert not finished.done() and not store.healthy
            small_disk.free()
            await finished
            run = await store.get_run(run_id)

    assert run is not None and run["status"] == "SUCCESS"
    begun, healed = incident_lines(logs)
    assert "database or disk is full" in begun["error"]
    assert healed["failures"] >= 2


async def test_closing_on_a_full_disk_does_not_wait_forever(
    small_disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing giving up, closing while the disk stays full waits a bounded time, then
    logs the writes left unwritten (the next start resumes from what was committed)."""
    monkeypatch.setattr(store_module, "_CLOSE_WAIT_S", 0.3)
    with capture_logs() as logs:
        async with Store.open(small_disk.db_path, give_up_s=None) as store:
            run_id = await store.create_run(name="w", started_at=STARTED, nodes=[("a", "echo")])
            small_disk.fill()
            store.node_finished(
                run_id,
                "a",
                status="SUCCESS",
                started_at=STARTED,
                finished_at=STARTED,
                duration=1.0,
                attempts=1,
                output_json='"' + "x" * 300_000 + '"',
            )
    (unwritten,) = [entry for entry in logs if entry["event"] == STORE_UNWRITTEN]
    assert unwritten["writes"] == 1
    assert "database or disk is full" in unwritten["error"]


def _damage_pages(path: Path) -> None:
    """Overwrite every page but the first with random bytes, behind SQLite's back, after
    moving everything out of the WAL; a commit by another connection then makes every
    connection drop the pages it has cached."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
        with open(path, "r+b") as raw:
            raw.seek(4096)
            raw.write(random.Random(7).randbytes(size - 4096))
        other.execute("BEGIN IMMEDIATE")
        other.execute("PRAGMA user_version = 3")
        other.execute("COMMIT")
    finally:
        other.close()


async def test_a_file_damaged_while_open_fails_every_waiter_at_once(db_path: Path) -> None:
    """A batch failing with SQLITE_CORRUPT raises StoreCorrupt to every caller waiting, sets
    ``fatal`` (``wait_fatal`` returns it), and later writes fail with it at once, although
    nothing gives up on a transient fault; closing raises it too."""
    with pytest.raises(StoreCorrupt):  # leaving the block flushes: the damage is raised
        async with Store.open(db_path, give_up_s=None) as store:
            run_id = await store.create_run(
                name="w",
                started_at=STARTED,
                nodes=[(f"node-{n:05d}" + "y" * 100, "echo") for n in range(3000)],
            )
            await store.flush(durable=True)
            _damage_pages(db_path)
            created = asyncio.create_task(store.create_run(name="v", started_at=STARTED, nodes=[]))
            finish(store, run_id, "node-00042" + "y" * 100)
            flushed = asyncio.create_task(store.flush())
            with pytest.raises(StoreCorrupt, match="is damaged"):
                await created
            with pytest.raises(StoreCorrupt):
                await flushed
            assert await store.wait_fatal() is store.fatal
            assert not store.healthy
            with pytest.raises(StoreCorrupt):
                await store.create_run(name="after", started_at=STARTED, nodes=[])


async def test_a_read_only_disk_at_start_is_waited_for(small_disk: SmallDisk) -> None:
    """With nothing giving up, opening a database on a read-only disk waits, logged as one
    incident, until the disk is writable again; then a write commits and it heals."""
    async with Store.open(small_disk.db_path) as store:
        await store.create_run(name="w", started_at=STARTED, nodes=[])
    small_disk.remount("ro")
    faults = Faults()

    async def open_and_write() -> list[dict[str, Any]]:
        async with Store.open(small_disk.db_path, give_up_s=None, faults=faults) as store:
            await store.wait_writable()
            return await store.list_runs()

    with capture_logs() as logs:
        opening = asyncio.create_task(open_and_write())
        await wait_for(lambda: faults["store"].failures >= 2)
        assert not opening.done()
        small_disk.remount("rw")
        runs = await opening

    assert [run["name"] for run in runs] == ["w"]
    begun, healed = incident_lines(logs)
    assert "unable to open database file" in begun["error"]
    assert healed["failures"] >= 2


async def test_a_full_disk_at_start_is_found_by_a_write_and_waited_for(
    small_disk: SmallDisk,
) -> None:
    """A database that opens on a full disk is not writable: the first write fails at once
    (the incident opens, ``healthy`` is False), ``wait_writable`` waits until there is room."""
    async with Store.open(small_disk.db_path):
        pass
    # Another connection keeps the WAL files, so that opening itself needs no room.
    other = sqlite3.connect(small_disk.db_path)
    try:
        other.execute("SELECT 1 FROM workflowrun").fetchall()
        small_disk.fill()
        faults = Faults()
        with capture_logs() as logs:
            async with Store.open(small_disk.db_path, give_up_s=None, faults=faults) as store:
                writable = asyncio.create_task(store.wait_writable())
                await wait_for(lambda: not store.healthy)
                assert not writable.done()
                assert "database or disk is full" in faults.active()["store"]
                small_disk.free()
                await writable
                assert store.healthy
    finally:
        other.close()
    begun, healed = incident_lines(logs)
    assert "database or disk is full" in begun["error"]
    assert healed["event"] == FAULT_HEALED


def _database_bytes(path: Path) -> bytes:
    """The bytes of a closed database of a few hundred pages."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("".join(MIGRATIONS))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO workflowrun (name, status) VALUES (?, 'SUCCESS')",
            ((f"run-{n}" + "z" * 300,) for n in range(3000)),
        )
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path.read_bytes()


def _write_damaged(path: Path, damage: str) -> None:
    """A database at ``path`` with one of the kinds of ``DAMAGE``."""
    path.parent.mkdir(parents=True)
    path.write_bytes(DAMAGE[damage](_database_bytes(path)))


DAMAGE = {
    "random bytes": lambda data: random.Random(1).randbytes(len(data)),
    "truncated": lambda data: data[: len(data) // 2],
    "pages overwritten mid-file": lambda data: (
        data[:4096] + random.Random(2).randbytes(len(data) - 8192) + data[-4096:]
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_damaged_file_is_refused_at_open(db_path: Path, damage: str) -> None:
    """Opening a damaged file raises StoreCorrupt at once, although nothing gives up on a
    transient fault: random bytes, a truncated file, pages overwritten (found by ``check``)."""
    _write_damaged(db_path, damage)

    with pytest.raises(StoreCorrupt, match="is damaged"):
        async with Store.open(db_path, give_up_s=None, check=True):
            pass


def test_execute_on_a_damaged_file_says_so_in_one_line(
    run_cli: Cli, write_workflow: WorkflowWriter, db_path: Path
) -> None:
    """``execute`` on a file that is not a database exits 3 with one line naming the damage."""
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(random.Random(3).randbytes(64 * 1024))

    result = run_cli(
        "execute", write_workflow({"name": "w", "nodes": [{"id": "a", "type": "echo"}]})
    )

    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "is damaged (file is not a database)" in result.stderr


def _copy_open_database(source: Path, target: Path) -> None:
    """Copy a database with its WAL files, as they are while a connection has it open."""
    source.parent.mkdir(parents=True, exist_ok=True)
    keep = sqlite3.connect(source, isolation_level=None)
    try:
        keep.execute("PRAGMA journal_mode = WAL")
        keep.executescript("".join(MIGRATIONS))
        keep.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    finally:
        keep.close()


async def test_a_connection_opened_read_only_heals_on_a_new_one(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    """A database opened while its disk is read-only (its WAL files present) opens, for
    reading; once the disk is writable again the writer opens a new connection (SQLite
    keeps the old one read-only for good), the first write commits, and the incident heals."""
    _copy_open_database(tmp_path / "source.db", small_disk.db_path)
    small_disk.remount("ro")
    faults = Faults()
    with capture_logs() as logs:
        async with Store.open(small_disk.db_path, give_up_s=None, faults=faults) as store:
            assert await store.list_runs() == []
            writable = asyncio.create_task(store.wait_writable())
            await wait_for(lambda: faults["store"].failures >= 2)
            assert not writable.done()
            small_disk.remount("rw")
            await writable
            await store.create_run(name="w", started_at=STARTED, nodes=[])
            assert [run["name"] for run in await store.list_runs()] == ["w"]

    begun, healed = incident_lines(logs)
    assert "attempt to write a readonly database" in begun["error"]
    assert healed["failures"] >= 2


async def test_a_reconnect_never_makes_a_new_database_where_the_file_is_gone(
    tmp_path: Path,
) -> None:
    """Reconnecting after a fault (``create=False``) fails while the file is missing, and
    creates neither the file nor its folder: a database away for a moment is waited for,
    not replaced by an empty one."""
    from wfe_daemon.store.connection import connect

    path = tmp_path / "gone" / "wfe.db"
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await connect(path, 1.0, create=False)
    assert not path.parent.exists()
    path.parent.mkdir()
    conn = await connect(path, 1.0)  # the first open of a daemon still creates it
    await conn.close()
    conn = await connect(path, 1.0, create=False)
    await conn.close()
