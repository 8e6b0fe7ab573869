"""``WriteWatch``: which files of a folder are open after a write, from inotify."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wfe_daemon import _writing
from wfe_daemon._writing import WriteWatch


def test_written_until_closed_and_a_renamed_file_arrives_complete(tmp_path: Path) -> None:
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
        monkeypatch.setattr(_writing, "HOLD_MAX_S", 0.0)
        assert not watch.writing("linked.json")
    finally:
        watch.close()
