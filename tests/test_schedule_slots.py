"""Slot maths of schedules (``core.schedule`` with the cronsim matcher): plain sync tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wfe_daemon.core.schedule import (
    Catchup,
    NeverFires,
    Overlap,
    Schedule,
    due_slots,
    next_slots,
    parse_interval,
    parse_schedule,
    slot_stamp,
)
from wfe_daemon.service.cron import Cronsim

CRON = Cronsim()


def schedule(**raw: Any) -> Schedule:
    """A valid schedule from its ``schedule`` object."""
    parsed, problems = parse_schedule(raw, CRON)
    assert parsed is not None, problems
    return parsed


def local(slots: list[datetime], zone: str) -> list[str]:
    """The slots as ISO 8601 text in ``zone``."""
    return [slot.astimezone(schedule(every="1m", timezone=zone).zone).isoformat() for slot in slots]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_defaults_are_utc_latest_skip_not_paused() -> None:
    """A schedule object with only ``cron`` takes the documented defaults."""
    parsed = schedule(cron="0 3 * * *")
    assert (parsed.timezone, parsed.catchup, parsed.overlap, parsed.paused) == (
        "UTC",
        Catchup.LATEST,
        Overlap.SKIP,
        False,
    )


def test_every_problem_of_a_schedule_object_is_reported() -> None:
    """Bad keys, a bad expression, interval, zone and policies are all named at once."""
    parsed, problems = parse_schedule(
        {
            "cron": "* * * * * *",
            "timezone": "Mars/Olympus",
            "catchup": "some",
            "overlap": 1,
            "x": 0,
        },
        CRON,
    )
    assert parsed is None
    text = "\n".join(problems)
    for word in ("unknown key 'x'", "5 fields", "Mars/Olympus", "catchup", "overlap"):
        assert word in text
    assert parse_schedule({"cron": "0 * * * *", "every": "1m"}, CRON)[1] == [
        "schedule: needs exactly one of cron and every"
    ]
    assert "cron" in parse_schedule({"cron": "61 * * * *"}, CRON)[1][0]
    assert parse_schedule({}, CRON)[1] == ["schedule: needs exactly one of cron and every"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1), ("15m", 900), ("1h30m", 5400), ("1d", 86400), ("2d3h4m5s", 183845)],
)
def test_intervals(text: str, seconds: int) -> None:
    """``every`` reads days, hours, minutes and seconds, in that order."""
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "15", "m15", "1m1h", "367d", "1.5h", 15])
def test_bad_intervals(text: object) -> None:
    """An interval out of order, without a unit, zero or over a year is refused."""
    assert parse_interval(text) is None


def test_every_counts_from_the_epoch_whatever_the_zone() -> None:
    """``every`` slots are multiples of the interval since 1970-01-01 UTC."""
    parsed = schedule(every="15m", timezone="Asia/Kolkata")
    assert next_slots(parsed, CRON, utc(2026, 1, 1, 10, 7), 3) == [
        utc(2026, 1, 1, 10, 15),
        utc(2026, 1, 1, 10, 30),
        utc(2026, 1, 1, 10, 45),
    ]
    assert next_slots(parsed, CRON, utc(2026, 1, 1, 10, 15), 1) == [utc(2026, 1, 1, 10, 30)]


def test_spring_forward_fires_a_missing_time_once_at_the_next_valid_minute() -> None:
    """Europe/Berlin skips 02:00-03:00 on 2026-03-29: 02:30 fires at 03:00+02:00, once."""
    daily = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert local(next_slots(daily, CRON, utc(2026, 3, 28, 12), 3), "Europe/Berlin") == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    halves = schedule(cron="*/30 1-3 * * *", timezone="Europe/Berlin")
    assert local(next_slots(halves, CRON, utc(2026, 3, 28, 12), 4), "Europe/Berlin") == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:00, 02:30 and 03:00 itself: one slot
        "2026-03-29T03:30:00+02:00",
    ]


def test_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() -> None:
    """Europe/Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 fires at 02:30+02:00 only."""
    daily = schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    assert local(next_slots(daily, CRON, utc(2026, 10, 24, 12), 3), "Europe/Berlin") == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # From inside the repeated hour (02:15+01:00, after the first 02:30), the next is a day on.
    inside = utc(2026, 10, 25, 1, 15)
    assert local(next_slots(daily, CRON, inside, 1), "Europe/Berlin") == [
        "2026-10-26T02:30:00+01:00"
    ]
    quarter = schedule(cron="*/30 * * * *", timezone="Europe/Berlin")
    assert local(next_slots(quarter, CRON, utc(2026, 10, 24, 23, 45), 5), "Europe/Berlin") == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",  # the second 02:00 and 02:30 do not fire again
        "2026-10-25T03:30:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("catchup", "fired", "missed"),
    [
        ("none", [], 8),
        ("latest", [utc(2026, 1, 1, 10, 0)], 7),
        ("all", [utc(2026, 1, 1, 9, 30), utc(2026, 1, 1, 9, 45), utc(2026, 1, 1, 10, 0)], 5),
    ],
)
def test_catchup_chooses_among_missed_slots(
    catchup: str, fired: list[datetime], missed: int
) -> None:
    """Eight slots missed over two hours: none fires none, latest the newest, all the
    newest ``max_catchup`` (3), oldest first; the rest are counted as missed."""
    parsed = schedule(every="15m", catchup=catchup)
    assert due_slots(parsed, CRON, utc(2026, 1, 1, 8), utc(2026, 1, 1, 10, 7), 3) == (
        fired,
        missed,
    )


def test_a_slot_due_now_fires_under_every_catchup() -> None:
    """A slot reached on time (within 5 s) is not a missed one, even with catchup none."""
    for catchup in ("none", "latest", "all"):
        parsed = schedule(every="1m", catchup=catchup)
        now = utc(2026, 1, 1, 10, 1, 2)
        assert due_slots(parsed, CRON, now - timedelta(seconds=62), now, 10) == (
            [utc(2026, 1, 1, 10, 1)],
            0,
        )


def test_slot_stamp_is_file_name_safe_iso_8601_in_the_zone() -> None:
    """The slot in a file name: basic ISO 8601 with the zone's offset, no colons."""
    berlin = schedule(cron="0 2 * * *", timezone="Europe/Berlin").zone
    assert slot_stamp(utc(2026, 12, 4, 1), berlin) == "20261204T020000+0100"
    assert slot_stamp(utc(2026, 7, 4, 0), berlin) == "20260704T020000+0200"


def test_fingerprint_follows_what_decides_the_slots() -> None:
    """Changing the rule, zone or pause changes the fingerprint; the policies do not."""
    base = schedule(cron="0 2 * * *")
    assert base.fingerprint == schedule(cron="0  2 * * *", catchup="all").fingerprint
    assert base.fingerprint != schedule(cron="0 3 * * *").fingerprint
    assert base.fingerprint != schedule(cron="0 2 * * *", paused=True).fingerprint
    assert base.fingerprint != schedule(cron="0 2 * * *", timezone="Europe/Berlin").fingerprint


@pytest.mark.parametrize("raw", [{"cron": "0 0 29 2 1"}, {"every": "1d"}])
def test_a_schedule_with_no_slot_left_says_it_never_fires(raw: dict[str, Any]) -> None:
    """Past the calendar's last slot, next_slots raises NeverFires naming the instant
    (the scheduler logs the schedule as invalid), not StopIteration or OverflowError."""
    with pytest.raises(NeverFires, match="never fires after 9999-12-30"):
        next_slots(schedule(**raw), CRON, utc(9999, 12, 30), 3)
