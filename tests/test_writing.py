"""``WriteWatch``: which files of a folder are open after a write, from inotify."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wfe_daemon.service import closewrites
from wfe_daemon.service.closewrites import WriteWatch


def test_written_until_closed_and_a_renamed_file_arrives_complete(tmp_path: Path) -> None:
    """A name counts as written from its first write until its close; one renamed in never."""
    watch = WriteWatch(tmp_path)
    try:
        with open(tmp_path / "a.json", "wb") as file:
            file.write(b'{"half": ')
            file.flush()
            watch.update()
            assert watch.writing("a.json")
        watch.update()
        assert not watch.writing("a.json")

        (tmp_path.parent / "b.json").write_bytes(b"{}")
        os.rename(tmp_path.parent / "b.json", tmp_path / "b.json")
        watch.update()
        assert not watch.writing("b.json")
    finally:
        watch.close()


def test_a_name_created_but_never_closed_stops_counting_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file hard-linked in is created without a close: it is not held for ever."""
    (tmp_path.parent / "elsewhere.json").write_bytes(b"{")
    watch = WriteWatch(tmp_path)
    try:
        os.link(tmp_path.parent / "elsewhere.json", tmp_path / "linked.json")
        watch.update()
        assert watch.writing("linked.json")
        monkeypatch.setattr(closewrites, "HOLD_MAX_S", 0.0)
        assert not watch.writing("linked.json")
    finally:
        watch.close()


def test_an_overflowed_queue_forgets_every_name(tmp_path: Path) -> None:
    """Once the kernel drops events, nothing is known to be written: the quiet time decides."""
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    watch = WriteWatch(tmp_path)
    try:
        with open(tmp_path / "a.json", "wb") as a:
            a.write(b"{")
            a.flush()
            watch.update()
            assert watch.writing("a.json")
            # Alternate two files, so that the kernel cannot merge consecutive events.
            with open(tmp_path / "b.json", "wb") as b, open(tmp_path / "c.json", "wb") as c:
                for _ in range(queue // 2 + 1):
                    os.write(b.fileno(), b" ")
                    os.write(c.fileno(), b" ")
                watch.update()
                assert not any(map(watch.writing, ("a.json", "b.json", "c.json")))
                os.write(b.fileno(), b" ")
                watch.update()
                assert watch.writing("b.json")  # events are read again after the overflow
    finally:
        watch.close()


def test_a_name_that_is_not_utf8_is_tracked_under_its_fsdecoded_name(tmp_path: Path) -> None:
    """A name with undecodable bytes is held as ``os.fsdecode`` gives it, as intake lists it."""
    raw = os.fsencode(tmp_path) + b"/caf\xe9.json"
    name = os.fsdecode(b"caf\xe9.json")
    watch = WriteWatch(tmp_path)
    try:
        with open(raw, "wb") as file:
            file.write(b"{")
            file.flush()
            watch.update()
            assert watch.writing(name)
            assert name in os.listdir(tmp_path)
        watch.update()
        assert not watch.writing(name)
    finally:
        watch.close()


def test_a_replaced_folder_leaves_the_old_watch_silent(tmp_path: Path) -> None:
    """A folder deleted and made again is not watched: no error, and nothing counts as written
    (the intake arms a new watch on the new folder)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    watch = WriteWatch(folder)
    try:
        folder.rmdir()
        folder.mkdir()
        with open(folder / "a.json", "wb") as file:
            file.write(b"{")
            file.flush()
            watch.update()
            assert not watch.writing("a.json")
        fresh = WriteWatch(folder)
        try:
            with open(folder / "b.json", "wb") as file:
                file.write(b"{")
                file.flush()
                fresh.update()
                assert fresh.writing("b.json")
        finally:
            fresh.close()
    finally:
        watch.close()


def test_a_folder_that_cannot_be_watched_knows_of_no_writer(tmp_path: Path) -> None:
    """Without a watch (a missing folder, or no inotify) nothing is written: the quiet time
    decides, and update and close do nothing."""
    watch = WriteWatch(tmp_path / "missing")
    watch.update()
    assert not watch.writing("a.json")
    watch.close()
    watch.close()
