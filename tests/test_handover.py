"""In-process tests of the handover's file writes, where a fault must be injected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wfe_daemon.service import handover


@pytest.mark.parametrize("failing_call", [2, 3])
def test_failed_folder_fsync_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: int
) -> None:
    """When fsyncing a folder fails after the rename (the 2nd or 3rd fsync), the write
    raises OSError and removes the file and its folder: a submission refused 503 must
    not run at the next start."""
    processing = tmp_path / "processing"
    processing.mkdir()
    path = processing / "abc123" / "w.json"
    real, calls = os.fsync, []

    def failing(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_call:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError, match="Input/output"):
        handover.write_durably(path, b'{"name": "w"}')
    assert len(calls) == failing_call
    assert list(processing.iterdir()) == []


def test_write_durably_writes_the_file(tmp_path: Path) -> None:
    """Without a fault the bytes are at ``path`` and no temporary file is left."""
    processing = tmp_path / "processing"
    processing.mkdir()
    path = processing / "abc123" / "w.json"
    handover.write_durably(path, b"{}")
    assert path.read_bytes() == b"{}"
    assert [p.name for p in processing.iterdir()] == ["abc123"]


async def test_submissions_being_recorded_count_against_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A submission whose record is still under way (a busy database) counts as waiting,
    so a slow database cannot let files pile up past the bound; once recorded and handed
    on, it no longer counts."""
    import anyio

    from wfe_daemon.service import feeder
    from wfe_daemon.service.intake import Claimed

    monkeypatch.setattr(feeder, "WAITING_PER_SLOT", 1)
    hand = feeder.Handover()
    release = anyio.Event()
    claimed = Claimed(path=Path("/nowhere/w.json"), source="w.json", data=None)

    async def slow_record() -> feeder.Accepted:
        await release.wait()
        return feeder.Accepted(1, "RUNNING", claimed)

    send, receive = anyio.create_memory_object_stream[Claimed](4)
    async with send, receive, anyio.create_task_group() as tg:
        await tg.start(hand.feed, send)
        assert not hand.full(1)
        tg.start_soon(lambda: hand.settle(slow_record, set(), what="w"))
        await anyio.wait_all_tasks_blocked()
        assert (hand.full(1), hand.waiting) == (True, 1)  # recording: it holds a file already
        release.set()
        assert (await receive.receive()).path == claimed.path
        await hand.sent()
        assert not hand.full(1)
        tg.cancel_scope.cancel()
