"""Tests for the watched inbox: what is taken, when, in what order, and what is left alone."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from structlog.testing import capture_logs

from wfe_daemon.service import intake
from wfe_daemon.service.intake import Claimed, Intake, leftover_claims, settle_file

MAX = 10 * 1024 * 1024
DOC = b'{"name": "w", "nodes": [{"id": "a", "type": "echo"}]}'


@asynccontextmanager
async def running(
    inbox: Path, *, buffer: int = 16, **options: Any
) -> AsyncIterator[MemoryObjectReceiveStream[Claimed]]:
    """Run an Intake on ``inbox`` for the duration of the block, yielding its receive stream."""
    send, receive = anyio.create_memory_object_stream[Claimed](buffer)
    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(Intake(inbox, options.pop("max_file_size", MAX), **options).run, send)
        yield receive
        tg.cancel_scope.cancel()


async def nothing_more(receive: MemoryObjectReceiveStream[Claimed], wait_s: float = 0.3) -> None:
    """Assert that no further file is delivered within ``wait_s`` seconds."""
    with anyio.move_on_after(wait_s):
        extra = await receive.receive()
        pytest.fail(f"unexpected delivery: {extra}")


def drop(inbox: Path, name: str, data: bytes = DOC) -> None:
    """Write ``data`` next to the inbox, then rename it in, as a well-behaved writer does."""
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(data)
    os.rename(staging / name, inbox / name)


async def test_files_present_before_start_are_delivered_oldest_first(tmp_path: Path) -> None:
    """Files already in the inbox are claimed into processing/ in mtime order."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b.json").write_bytes(b"[2]")
    (inbox / "a.json").write_bytes(b"[1]")
    os.utime(inbox / "b.json", (1_000_000, 1_000_000))
    with anyio.fail_after(5):
        async with running(inbox) as receive:
            first, second = await receive.receive(), await receive.receive()
    assert (first.source, first.data) == ("b.json", b"[2]")
    assert (second.source, second.data) == ("a.json", b"[1]")
    assert first.path == inbox / "processing" / "b.json"
    assert first.path.read_bytes() == b"[2]"
    assert not list(inbox.glob("*.json"))


async def test_file_renamed_in_after_start_is_delivered(tmp_path: Path) -> None:
    """A file renamed in once run() has started is claimed by the watcher."""
    inbox = tmp_path / "inbox"
    with anyio.fail_after(5):
        async with running(inbox, rescan_interval=60) as receive:
            drop(inbox, "sales.json")
            claimed = await receive.receive()
    assert claimed == Claimed(inbox / "processing" / "sales.json", "sales.json", DOC, None)


async def test_ignored_entries_do_not_stall_a_valid_file(tmp_path: Path) -> None:
    """Temp files, dotfiles, folders, symlinks and FIFOs named *.json are left alone."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "real.json").write_bytes(DOC)
    ignored = ["x.tmp", "y.part", ".hidden.json", "folder.json", "link.json", "f.json", "X.JSON"]
    for name in ("x.tmp", "y.part", ".hidden.json", "X.JSON"):
        (inbox / name).write_bytes(DOC)
    (inbox / "folder.json").mkdir()
    (inbox / "link.json").symlink_to(tmp_path / "real.json")
    os.mkfifo(inbox / "f.json")
    with anyio.fail_after(5):
        async with running(inbox, rescan_interval=0.05) as receive:
            drop(inbox, "valid.json")
            assert (await receive.receive()).source == "valid.json"
            await nothing_more(receive)
    assert sorted(os.listdir(inbox)) == sorted([*ignored, "processed", "processing", "rejected"])


async def test_a_fifo_opened_directly_is_refused_without_blocking(tmp_path: Path) -> None:
    """Even if a FIFO slips past the listing, opening it neither blocks nor yields a file."""
    os.mkfifo(tmp_path / "f.json")
    (tmp_path / "link.json").symlink_to(tmp_path / "f.json")
    assert Intake(tmp_path, MAX)._probe(tmp_path / "f.json") is None
    assert Intake(tmp_path, MAX)._probe(tmp_path / "link.json") is None


async def test_oversized_sparse_file_is_claimed_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2 GiB sparse file is claimed with data None and a max_file_size problem, never read."""
    monkeypatch.setattr(intake, "read_capped", lambda *_, **__: pytest.fail("read a huge file"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (inbox / "huge.json").open("wb") as f:
        f.truncate(2**31)
    with anyio.fail_after(5):
        async with running(inbox) as receive:
            claimed = await receive.receive()
    assert (claimed.source, claimed.data) == ("huge.json", None)
    assert claimed.problem is not None
    assert "2147483648" in claimed.problem
    assert "max_file_size" in claimed.problem


async def test_file_written_in_place_is_taken_only_once_complete(tmp_path: Path) -> None:
    """A file written in four chunks over about a second is delivered whole, after the last."""
    inbox = tmp_path / "inbox"
    chunks = [b'{"name": "sl', b'ow", "nodes": [', b'{"id": "a", "type": "echo"}', b"]}"]
    done = anyio.Event()
    with anyio.fail_after(5):
        async with running(inbox, quiet_s=2.0) as receive:
            fd = os.open(inbox / "slow.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                for chunk in chunks:
                    os.write(fd, chunk)
                    await anyio.sleep(0.3)
                done.set()
            finally:
                os.close(fd)
            claimed = await receive.receive()
            assert done.is_set()
    assert claimed.data == b"".join(chunks)
    json.loads(claimed.data)


async def test_a_quiet_inbox_still_takes_files_and_rechecks_half_written_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the inbox is quiet (slow looks, long ticks), a renamed-in file is still taken
    promptly, and a file left half-written is re-checked until it settles, with no further
    change on disk to wake the watcher."""
    monkeypatch.setattr(intake, "_IDLE_AFTER_S", 0.05)
    inbox = tmp_path / "inbox"
    with anyio.fail_after(5):
        async with running(inbox, rescan_interval=60, quiet_s=0.5) as receive:
            await anyio.sleep(0.6)  # quiet: the watcher is in its idle pace
            drop(inbox, "after-quiet.json")
            assert (await receive.receive()).source == "after-quiet.json"
            await anyio.sleep(0.6)
            (inbox / "cut.json").write_bytes(DOC[:10])  # never completed
            claimed = await receive.receive()
    assert (claimed.source, claimed.data) == ("cut.json", DOC[:10])


async def test_burst_is_delivered_exactly_once_with_backpressure(tmp_path: Path) -> None:
    """300 files dropped at once each arrive once, and a full buffer holds the rest unclaimed."""
    inbox = tmp_path / "inbox"
    names = {f"w{i:03}.json" for i in range(300)}
    with anyio.fail_after(10):
        async with running(inbox, buffer=4) as receive:
            for name in names:
                drop(inbox, name)
            await anyio.sleep(0.3)
            # four in the buffer plus one waiting in send(): the rest are still in the inbox
            assert len(os.listdir(inbox / "processing")) <= 5
            got = [(await receive.receive()).source for _ in names]
            await nothing_more(receive)
    assert sorted(got) == sorted(names)
    assert sorted(os.listdir(inbox / "processing")) == sorted(names)


async def test_old_invalid_json_is_delivered_promptly(tmp_path: Path) -> None:
    """Invalid JSON that has not changed for quiet_s is handed over for the daemon to reject."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.json").write_bytes(b'{"name": ')
    os.utime(inbox / "bad.json", (1_000_000, 1_000_000))
    with anyio.fail_after(5):  # well under quiet_s: waiting for it would time out
        async with running(inbox, quiet_s=60) as receive:
            claimed = await receive.receive()
    assert (claimed.source, claimed.data) == ("bad.json", b'{"name": ')


async def test_deeply_nested_content_is_not_mistaken_for_half_written(tmp_path: Path) -> None:
    """100,000 nested brackets count as complete (invalid) content, not as a file in progress."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with anyio.fail_after(5):
        async with running(inbox, quiet_s=60) as receive:
            assert (await receive.receive()).source == "deep.json"


async def test_claim_never_overwrites_a_leftover(tmp_path: Path) -> None:
    """A new file whose name is still in processing/ is claimed under a unique name."""
    inbox = tmp_path / "inbox"
    (inbox / "processing").mkdir(parents=True)
    (inbox / "processing" / "a.json").write_bytes(b"old")
    (inbox / "a.json").write_bytes(b"[1]")
    with anyio.fail_after(5):
        async with running(inbox) as receive:
            claimed = await receive.receive()
    assert claimed.source == "a.json"
    assert claimed.path != inbox / "processing" / "a.json"
    assert claimed.path.name.startswith("a.") and claimed.path.suffix == ".json"
    assert claimed.path.read_bytes() == b"[1]"
    assert (inbox / "processing" / "a.json").read_bytes() == b"old"


def test_settle_file_never_overwrites(tmp_path: Path) -> None:
    """settle_file moves into processed/ or rejected/ and keeps an existing same-named file."""
    inbox = tmp_path
    for sub in ("processing", "processed"):
        (inbox / sub).mkdir()
    (inbox / "processed" / "a.json").write_bytes(b"first")
    (inbox / "processing" / "a.json").write_bytes(b"second")
    moved = settle_file(inbox / "processing" / "a.json", inbox, rejected=False)
    assert moved.parent == inbox / "processed" and moved.name != "a.json"
    assert moved.read_bytes() == b"second"
    assert (inbox / "processed" / "a.json").read_bytes() == b"first"
    (inbox / "processing" / "b.json").write_bytes(b"bad")
    assert settle_file(inbox / "processing" / "b.json", inbox, rejected=True) == (
        inbox / "rejected" / "b.json"
    )
    assert not os.listdir(inbox / "processing")


def test_leftover_claims_lists_processing_oldest_first(tmp_path: Path) -> None:
    """leftover_claims returns the regular files in processing/ by mtime, and [] without it."""
    assert leftover_claims(tmp_path) == []
    processing = tmp_path / "processing"
    processing.mkdir()
    for name, mtime in (("new.json", 2_000_000), ("old.json", 1_000_000)):
        (processing / name).write_bytes(b"{}")
        os.utime(processing / name, (mtime, mtime))
    (processing / "sub").mkdir()
    assert leftover_claims(tmp_path) == [processing / "old.json", processing / "new.json"]


async def test_cancel_ends_run_promptly(tmp_path: Path) -> None:
    """Cancelling the task group stops run(), watcher thread included, well within a second."""
    with anyio.fail_after(5):
        async with running(tmp_path / "inbox"):
            await anyio.sleep(0.05)
        started = anyio.current_time()
        async with running(tmp_path / "inbox", rescan_interval=0.01):
            pass
        assert anyio.current_time() - started < 1.0


async def test_polling_takes_over_when_watching_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the watcher cannot start, the failure is logged and the rescans still find files."""

    def broken_watcher(*args: object, **kwargs: object) -> Any:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(intake, "FolderWatcher", broken_watcher)
    inbox = tmp_path / "inbox"
    with anyio.fail_after(5), capture_logs() as logs:
        async with running(inbox, rescan_interval=0.1) as receive:
            drop(inbox, "late.json")
            assert (await receive.receive()).source == "late.json"
    assert [entry["event"] for entry in logs] == ["intake.watch_failed"]


@pytest.mark.parametrize(
    ("helper", "error"),
    [
        ("_claim", OSError(5, "Input/output error")),  # the rename into processing/
        ("_claim", OSError(28, "No space left on device")),  # a clash folder's mkdir
        ("read_capped", OSError(13, "Permission denied")),  # reading the file
    ],
    ids=["claim-EIO", "claim-ENOSPC", "read-EACCES"],
)
async def test_an_os_error_on_one_file_is_logged_and_the_file_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: str, error: OSError
) -> None:
    """An unexpected OSError reading or claiming a file is logged as intake.file_error, leaves
    the file in the inbox, and the file is taken at the next rescan; intake keeps running."""
    real = getattr(intake, helper)
    failures = [error]

    def fail_once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, helper, fail_once)
    inbox = tmp_path / "inbox"
    with anyio.fail_after(5), capture_logs() as logs:
        async with running(inbox, rescan_interval=0.2) as receive:
            drop(inbox, "flaky.json")
            claimed = await receive.receive()
            await nothing_more(receive)
    assert (claimed.source, claimed.data) == ("flaky.json", DOC)
    assert claimed.path == inbox / "processing" / "flaky.json"
    (entry,) = [entry for entry in logs if entry["event"] == "intake.file_error"]
    assert (entry["name"], entry["error"]) == ("flaky.json", error.strerror)
    assert [p.name for p in (inbox / "processing").iterdir()] == ["flaky.json"]


def test_a_failed_claim_into_a_clash_folder_leaves_no_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the rename into a fresh clash folder fails, the error is raised and the folder
    made for it is removed again, so processing/ holds only the earlier file."""
    inbox = tmp_path / "inbox"
    (inbox / "processing").mkdir(parents=True)
    (inbox / "processing" / "same.json").write_bytes(DOC)
    (inbox / "same.json").write_bytes(DOC)

    def broken_rename(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="Input/output error"):
        intake._claim(inbox / "same.json", inbox / "processing")
    monkeypatch.undo()
    assert [p.name for p in (inbox / "processing").iterdir()] == ["same.json"]
    assert (inbox / "same.json").exists()
