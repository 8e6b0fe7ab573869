"""Tests for the atomic, never-overwriting outbox."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon_helpers import (
    PAST,
    Daemons,
    drop,
    echo_doc,
    echo_then_sleep,
    query,
    read_json,
    results,
    wait_result,
    wait_running,
    wait_until,
)
from wfe_daemon.service import outbox
from wfe_daemon.service.outbox import FolderSync, find_result, write_result


def _started(run_id: int) -> str:
    """The started_at of the test runs (with run_id, a run's identity)."""
    return f"2026-11-25T10:00:{run_id % 60:02d}.000000+00:00"


def _summary(run_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "workflow": "nightly sales",
        "status": "SUCCESS",
        "started_at": _started(run_id),
        **extra,
    }


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
    assert find_result(tmp_path, "sales", 1, _started(1)) == first
    assert find_result(tmp_path, "sales", 2, _started(2)) == second
    assert find_result(tmp_path, "sales", 3, _started(3)) is None
    assert find_result(tmp_path, "other", 1, _started(1)) is None


def test_find_result_ignores_unreadable_json(tmp_path: Path) -> None:
    """A result file that is not a JSON object naming the run does not count."""
    (tmp_path / "sales.result.json").write_text("not json")
    (tmp_path / "sales.result.5.json").write_text("[5]")
    assert find_result(tmp_path, "sales", 5, _started(5)) is None


def test_find_result_sees_numeric_suffix(tmp_path: Path) -> None:
    """A result published under a numeric suffix is found too."""
    write_result(tmp_path, "sales", 1, _summary(1))
    (tmp_path / "sales.result.2.json").write_text('{"run_id": 99}\n')
    path = write_result(tmp_path, "sales", 2, _summary(2))
    assert find_result(tmp_path, "sales", 2, _started(2)) == path


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
    assert find_result(tmp_path, "a[1]*", 2, _started(2)) == path


# -- names near NAME_MAX ------------------------------------------------------------------------


def _short(stem: str, tail: str) -> str:
    """The documented rule: a stem too long is cut to fit 255 bytes, then ~ and 12 hex of
    its SHA-256."""
    if len((stem + tail).encode()) <= 255:
        return stem + tail
    room = 255 - len(tail.encode()) - 13
    cut = stem.encode()[:room].decode("utf-8", "ignore")
    return f"{cut}~{hashlib.sha256(stem.encode()).hexdigest()[:12]}{tail}"


LONG_STEMS = [
    "é" * 100 + "a" * 45,  # a 250-byte file name, two bytes a character
    "é" * 100 + "a" * 44 + "b",  # the same beginning, another end
    "\U0001f600" * 62 + "ab",  # a 255-byte file name, four bytes a character
    "x" * 238 + "Ω",  # fits as .result.json; cut inside the Ω as .result.<run_id>.json
]


def _drop_long(inbox: Path, name: str) -> None:
    """Write a one-node workflow under a short name beside the inbox and rename it in."""
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / "long.tmp"
    tmp.write_text(json.dumps({"name": "w", "nodes": [{"id": "a", "type": "echo"}]}))
    os.utime(tmp, (PAST, PAST))
    os.rename(tmp, inbox / name)


def test_daemon_publishes_results_of_names_at_name_max(daemons: Daemons) -> None:
    """Inbox names of 244-255 bytes get results whose names fit, one each, the stems kept apart."""
    # An earlier result holds the first name of the last stem: its result takes the second.
    daemons.outbox.mkdir(parents=True)
    taken = daemons.outbox / _short(LONG_STEMS[-1], ".result.json")
    taken.write_text(json.dumps(_summary(99)))
    daemon = daemons.start()
    names = [stem + ".json" for stem in LONG_STEMS]
    assert {len(name.encode()) for name in names} <= set(range(244, 256))
    for name in names:
        _drop_long(daemons.inbox, name)
    wait_until(lambda: len(results(daemons.outbox)) == len(LONG_STEMS) + 1, 20, "every result")
    for stem in LONG_STEMS:
        wait_until(
            lambda s=stem: (daemons.inbox / "processed" / f"{s}.json").exists(),
            10,
            "the file in processed/",
        )
    published = {
        read_json(path)["source"]: path.name for path in results(daemons.outbox) if path != taken
    }
    run_of = {
        row["source"]: row["id"]
        for row in query(daemons.db_path, "SELECT id, source FROM workflowrun")
    }
    assert published == {
        stem + ".json": _short(stem, ".result.json") for stem in LONG_STEMS[:-1]
    } | {names[-1]: _short(LONG_STEMS[-1], f".result.{run_of[names[-1]]}.json")}
    assert all(len(path.name.encode()) <= 255 for path in results(daemons.outbox))
    assert daemon.terminate() == 0
    assert daemon.events("workflow.error") == []


def test_long_stem_names_fit_for_every_clash_and_are_found_again(tmp_path: Path) -> None:
    """Every fallback name of a long stem fits 255 bytes, and find_result finds each one."""
    stem = "ü" * 125
    runs = [_summary(1234567, started_at=_started(n)) for n in range(4)]  # one id, four runs
    paths = [write_result(tmp_path, stem, 1234567, run) for run in runs]
    assert [p.name for p in paths] == [
        _short(stem, ".result.json"),
        _short(stem, ".result.1234567.json"),
        _short(stem, ".result.1234567.1.json"),
        _short(stem, ".result.1234567.2.json"),
    ]
    assert all(len(p.name.encode()) <= 255 for p in paths)
    assert find_result(tmp_path, stem, 1234567, _started(3)) == paths[3]


# -- a run is known by its identity, not by its id alone ------------------------------------------


def test_an_earlier_runs_result_with_the_same_id_is_not_taken(tmp_path: Path) -> None:
    """After the database restarts run ids, a new run 1 gets its own result, not run 1's of old."""
    old = write_result(tmp_path, "sales", 1, _summary(1, started_at="2025-01-01T00:00:00+00:00"))
    new = _summary(1, started_at="2026-12-01T00:00:00+00:00")
    assert find_result(tmp_path, "sales", 1, new["started_at"]) is None
    path = write_result(tmp_path, "sales", 1, new)
    assert path != old
    assert json.loads(path.read_bytes()) == new
    assert find_result(tmp_path, "sales", 1, new["started_at"]) == path
    assert find_result(tmp_path, "sales", 1) is None  # without started_at nothing is certain


def test_republish_of_the_same_run_in_other_bytes_adds_no_file(tmp_path: Path) -> None:
    """A run's result published again from another copy of its summary (say rebuilt from the
    database, keys in another order) is recognised by the run's identity: no second file."""
    first = write_result(tmp_path, "sales", 4, _summary(4, duration=1.5, nodes={"a": {}}))
    again = dict(reversed(list(_summary(4, duration=1.5, nodes={"a": {}}).items())))
    assert write_result(tmp_path, "sales", 4, again) == first
    assert [p.name for p in tmp_path.iterdir()] == ["sales.result.json"]


def test_recovered_run_publishes_its_own_result_after_the_database_is_deleted(
    daemons: Daemons,
) -> None:
    """DB deleted, a new run of the same stem killed mid-run gets id 1 again: at the next start
    its own result is published beside the earlier run 1's, which stays as it was."""
    first = daemons.start()
    drop(daemons.inbox, "sales.json", echo_doc("sales"), mtime=PAST)
    old = wait_result(daemons.outbox, "sales")
    old_bytes = (daemons.outbox / "sales.result.json").read_bytes()
    assert first.terminate() == 0
    for path in daemons.db_path.parent.glob(daemons.db_path.name + "*"):
        path.unlink()

    second = daemons.start()
    drop(daemons.inbox, "sales.json", echo_then_sleep("sales", 2), mtime=PAST)
    assert wait_running(daemons.db_path, "b") == old["run_id"] == 1
    second.kill()

    third = daemons.start()
    wait_until(lambda: len(results(daemons.outbox)) == 2, 20, "the new run's result")
    [run] = query(daemons.db_path, "SELECT id, started_at, status FROM workflowrun")
    new = read_json(daemons.outbox / "sales.result.1.json")
    assert (new["run_id"], new["started_at"], new["status"]) == (1, run["started_at"], "SUCCESS")
    assert (daemons.outbox / "sales.result.json").read_bytes() == old_bytes
    wait_until(lambda: not any((daemons.inbox / "processing").iterdir()), 10, "processing/ empty")
    assert len(list((daemons.inbox / "processed").iterdir())) == 2
    assert third.terminate() == 0


def test_the_same_long_name_dropped_twice_is_settled_twice(daemons: Daemons) -> None:
    """A 250-byte name dropped a second time: its input still moves to processed/ under a
    name that fits (the first one holds the plain name), and both runs are published."""
    stem = LONG_STEMS[0]
    daemon = daemons.start()
    for round_ in (1, 2):
        _drop_long(daemons.inbox, stem + ".json")
        wait_until(
            lambda r=round_: len(list((daemons.inbox / "processed").iterdir())) == r,
            10,
            f"input {round_} in processed/",
        )
    assert len(results(daemons.outbox)) == 2
    assert all(len(p.name.encode()) <= 255 for p in (daemons.inbox / "processed").iterdir())
    assert daemon.terminate() == 0
    assert daemon.events("workflow.error") == [] and daemon.events("fault.begun") == []


def test_folder_sync_covers_every_caller_with_fewer_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Callers that overlap share fsyncs of the folder, and each returns only after one that
    began after its call has ended."""
    syncs: list[tuple[float, float]] = []

    def slow_fsync(path: Path) -> None:
        assert path == tmp_path
        begun = time.monotonic()
        time.sleep(0.05)
        syncs.append((begun, time.monotonic()))

    monkeypatch.setattr(outbox, "fsync_dir", slow_fsync)
    sync = FolderSync(tmp_path)
    calls: list[tuple[float, float]] = []

    def call() -> None:
        called = time.monotonic()
        sync()
        calls.append((called, time.monotonic()))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 10
    assert len(syncs) < 10
    for called, returned in calls:
        assert any(called <= begun and ended <= returned for begun, ended in syncs)


def test_folder_sync_that_fails_raises_and_the_next_caller_syncs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync that fails raises in its caller; a later call runs a sync of its own."""
    outcomes: list[OSError | None] = [OSError(5, "Input/output error"), None]
    runs: list[int] = []

    def flaky_fsync(path: Path) -> None:
        runs.append(1)
        error = outcomes.pop(0)
        if error is not None:
            raise error

    monkeypatch.setattr(outbox, "fsync_dir", flaky_fsync)
    sync = FolderSync(tmp_path)
    with pytest.raises(OSError, match="Input/output error"):
        sync()
    sync()
    assert len(runs) == 2


def test_a_recovered_file_whose_result_exists_syncs_the_outbox_before_it_is_moved(
    tmp_path: Path,
) -> None:
    """After a crash the result may be in the outbox without its name being durable yet:
    the input is moved out of processing/ only after the outbox is synced again."""
    from wfe_daemon.config import Settings
    from wfe_daemon.service.daemon import _publish

    inbox, out = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "processing").mkdir(parents=True)
    out.mkdir()
    source = inbox / "processing" / "sales.json"
    source.write_text("{}")
    write_result(out, "sales", 1, _summary(1))
    events: list[str] = []

    class Recorded(FolderSync):
        def __call__(self) -> None:
            events.append(f"synced, input in processing: {source.exists()}")
            super().__call__()

    settings = Settings(db_path=tmp_path / "wfe.db", inbox=inbox, outbox=out)
    moved = _publish(settings, source, "sales", _summary(1), True, Recorded(out))
    assert events == ["synced, input in processing: True"]
    assert moved is not None and moved.parent.name == "processed" and not source.exists()
    assert len(list(out.glob("sales.result*.json"))) == 1
