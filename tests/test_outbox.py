"""Tests for the atomic, never-overwriting outbox."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from wfe_daemon.outbox import find_result, write_result


def _summary(run_id: int, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "workflow": "nightly sales", "status": "SUCCESS", **extra}


def test_write_produces_valid_json(tmp_path: Path) -> None:
    """The result lands at <stem>.result.json as indented UTF-8 JSON ending in a newline."""
    path = write_result(tmp_path, "sales", 1, _summary(1, note="café"))
    assert path == tmp_path / "sales.result.json"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert "café" in text  # ensure_ascii=False
    assert json.loads(text) == _summary(1, note="café")


def test_same_stem_never_overwrites(tmp_path: Path) -> None:
    """A second result for the same stem goes to <stem>.result.<run_id>.json, the first intact."""
    first = write_result(tmp_path, "sales", 1, _summary(1))
    before = first.read_bytes()
    second = write_result(tmp_path, "sales", 2, _summary(2))
    assert second == tmp_path / "sales.result.2.json"
    assert first.read_bytes() == before
    assert json.loads(second.read_text())["run_id"] == 2


def test_numeric_suffix_when_both_names_are_taken(tmp_path: Path) -> None:
    """When even <stem>.result.<run_id>.json holds something else, a numeric suffix is added."""
    write_result(tmp_path, "sales", 1, _summary(1))
    (tmp_path / "sales.result.2.json").write_text('{"run_id": 99}\n')
    path = write_result(tmp_path, "sales", 2, _summary(2))
    assert path == tmp_path / "sales.result.2.1.json"
    assert json.loads((tmp_path / "sales.result.2.json").read_text()) == {"run_id": 99}


def test_no_temporary_files_remain(tmp_path: Path) -> None:
    """After several writes the outbox holds only the published results."""
    for run_id in range(1, 4):
        write_result(tmp_path, "sales", run_id, _summary(run_id))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sales.result.2.json",
        "sales.result.3.json",
        "sales.result.json",
    ]


def test_temporary_file_removed_on_error(tmp_path: Path) -> None:
    """A summary that cannot be serialised raises and leaves nothing behind."""
    with pytest.raises(TypeError):
        write_result(tmp_path, "sales", 1, {"run_id": 1, "bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_removed_when_publish_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing link (e.g. disk full) propagates and the dot-prefixed temporary file is gone."""

    def broken_link(src: Any, dst: Any) -> None:
        assert Path(src).name.startswith(".sales.")  # hidden from *.json readers
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(OSError, match="No space"):
        write_result(tmp_path, "sales", 1, _summary(1))
    assert list(tmp_path.iterdir()) == []


def test_find_result_matches_run_id(tmp_path: Path) -> None:
    """find_result returns the file of that run under either name, and None for other runs."""
    first = write_result(tmp_path, "sales", 1, _summary(1))
    second = write_result(tmp_path, "sales", 2, _summary(2))
    assert find_result(tmp_path, "sales", 1) == first
    assert find_result(tmp_path, "sales", 2) == second
    assert find_result(tmp_path, "sales", 3) is None
    assert find_result(tmp_path, "other", 1) is None


def test_find_result_ignores_unreadable_json(tmp_path: Path) -> None:
    """A result file that is not a JSON object naming the run does not count."""
    (tmp_path / "sales.result.json").write_text("not json")
    (tmp_path / "sales.result.5.json").write_text("[5]")
    assert find_result(tmp_path, "sales", 5) is None


def test_find_result_sees_numeric_suffix(tmp_path: Path) -> None:
    """A result published under a numeric suffix is found too."""
    write_result(tmp_path, "sales", 1, _summary(1))
    (tmp_path / "sales.result.2.json").write_text('{"run_id": 99}\n')
    path = write_result(tmp_path, "sales", 2, _summary(2))
    assert find_result(tmp_path, "sales", 2) == path


def test_republish_after_crash_adds_no_file(tmp_path: Path) -> None:
    """Publishing the same run's result again returns the existing file instead of a third."""
    write_result(tmp_path, "sales", 1, _summary(1))
    second = write_result(tmp_path, "sales", 2, _summary(2))
    again = write_result(tmp_path, "sales", 2, _summary(2))
    assert again == second
    assert len(list(tmp_path.iterdir())) == 2


def test_republish_of_first_name_adds_no_file(tmp_path: Path) -> None:
    """A re-publish identical to <stem>.result.json returns that file."""
    first = write_result(tmp_path, "sales", 1, _summary(1))
    assert write_result(tmp_path, "sales", 1, _summary(1)) == first
    assert [p.name for p in tmp_path.iterdir()] == ["sales.result.json"]


def test_glob_characters_in_stem(tmp_path: Path) -> None:
    """Stems with glob metacharacters are written and found literally."""
    write_result(tmp_path, "a[1]*", 1, _summary(1))
    (tmp_path / "a[1]*.result.2.json").write_text('{"run_id": 99}\n')
    path = write_result(tmp_path, "a[1]*", 2, _summary(2))
    assert find_result(tmp_path, "a[1]*", 2) == path
