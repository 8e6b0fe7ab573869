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
