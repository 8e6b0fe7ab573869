"""The cheap UTC stamp matches what datetime would write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wfe_daemon.clock import now_iso


def test_now_iso_is_utc_iso_8601_with_microseconds() -> None:
    """The stamp parses as an aware UTC datetime, close to now, with 6 fraction digits."""
    before = datetime.now(UTC)
    stamp = now_iso()
    after = datetime.now(UTC)
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)
    assert len(stamp.split(".")[1]) == len("000000+00:00")


def test_consecutive_stamps_never_go_backwards() -> None:
    """Stamps taken in a row are ordered, across second boundaries too."""
    stamps = [now_iso() for _ in range(20_000)]
    assert stamps == sorted(stamps)
