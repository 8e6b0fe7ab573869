"""Schedules: the ``schedule`` object of a schedule file, and its slot maths. Pure.

A slot is an instant (an aware UTC ``datetime``, whole seconds) at which a schedule fires.

- ``every``: the multiples of the interval counted from 1970-01-01T00:00:00Z, absolute
  time, which daylight-saving changes do not move.
- ``cron``: local wall-clock times in ``timezone`` (the cron expression is matched by a
  :class:`CronMatcher`, a library's, against naive wall-clock times), each turned into an
  instant by one rule: a wall time that does not exist (spring forward) fires at the first
  minute after the gap, once, however many wall times fell in the gap; a wall time that
  happens twice (fall back) fires once, at its first occurrence. So ``30 2 * * *`` fires
  once every day of the year, and ``*/15 * * * *`` pauses during the repeated hour.

Missed slots (the daemon was down, or late) are chosen by ``catchup``: :func:`due_slots`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wfe_daemon.core.strictjson import show

__all__ = [
    "Catchup",
    "CronMatcher",
    "NeverFires",
    "Overlap",
    "Schedule",
    "due_slots",
    "next_slots",
    "parse_schedule",
    "slot_stamp",
    "wall_time",
]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_KEYS: Final = frozenset({"cron", "every", "timezone", "catchup", "overlap", "paused"})
_INTERVAL: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS_S: Final = (86400, 3600, 60, 1)
_MAX_GAP_MIN: Final = 2 * 24 * 60  # no time zone skips more than a day of wall time
_MAX_INTERVAL_S: Final = 366 * 86400
ON_TIME: Final = timedelta(seconds=5)
"""How late a slot may fire and still count as on time under ``catchup: none``."""
_COUNT_LIMIT: Final = 1000
_E = TypeVar("_E", bound=StrEnum)


class Catchup(StrEnum):
    """Which missed slots fire: none, the most recent one, or all (up to ``max_catchup``)."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class Overlap(StrEnum):
    """What a due slot does while the schedule's previous run still runs."""

    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


class CronMatcher(Protocol):
    """A cron library: checks a five-field expression and walks its matching wall times."""

    def problem(self, expr: str) -> str | None:
        """Why ``expr`` is not a valid five-field cron expression (``None``: it is)."""
        ...

    def walk(self, expr: str, start: datetime, reverse: bool) -> Iterator[datetime]:
        """Naive wall times matching ``expr``, strictly after (before, when ``reverse``)
        the naive ``start``, in order."""
        ...


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked ``schedule`` object: exactly one of ``cron`` and ``every_s`` is set."""

    cron: str | None
    every_s: int | None
    timezone: str
    catchup: Catchup = Catchup.LATEST
    overlap: Overlap = Overlap.SKIP
    paused: bool = False

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def fingerprint(self) -> str:
        """What decides its slots and whether they fire: a change counts slots afresh."""
        text = json.dumps([self.cron, self.every_s, self.timezone, self.paused])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """``cron 30 2 * * * (Europe/Berlin)`` or ``every 15m``."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {format_interval(self.every_s or 0)}"


def parse_schedule(raw: Any, cron: CronMatcher) -> tuple[Schedule | None, list[str]]:
    """Check a file's ``schedule`` object; the schedule, or ``None`` and every problem."""
    if not isinstance(raw, Mapping):
        return None, [f"schedule: must be an object, got {show(raw)}"]
    problems = [f"schedule: unknown key {show(key)}" for key in raw if key not in _KEYS]
    expr = raw.get("cron")
    if ("cron" in raw) == ("every" in raw):
        problems.append("schedule: needs exactly one of cron and every")
    if "cron" in raw:
        problems += _cron_problems(expr, cron)
    every_s = parse_interval(raw["every"]) if "every" in raw else None
    if "every" in raw and every_s is None:
        problems.append(
            'schedule.every: must be an interval such as "15m", "1h30m" or "1d"'
            f" (units d h m s, from 1s to 366d), got {show(raw['every'])}"
        )
    timezone = raw.get("timezone", "UTC")
    if not _zone_ok(timezone):
        problems.append(f"schedule.timezone: not an IANA time zone name: {show(timezone)}")
    catchup = _choice(raw, "catchup", Catchup, Catchup.LATEST, problems)
    overlap = _choice(raw, "overlap", Overlap, Overlap.SKIP, problems)
    paused = raw.get("paused", False)
    if not isinstance(paused, bool):
        problems.append(f"schedule.paused: must be true or false, got {show(paused)}")
    if problems:
        return None, problems
    return (
        Schedule(
            cron=" ".join(expr.split()) if isinstance(expr, str) else None,
            every_s=every_s,
            timezone=timezone,
            catchup=catchup,
            overlap=overlap,
            paused=paused,
        ),
        [],
    )


def _cron_problems(expr: object, cron: CronMatcher) -> list[str]:
    if not isinstance(expr, str):
        return [f"schedule.cron: must be a string, got {show(expr)}"]
    problem = cron.problem(expr)
    return [] if problem is None else [f"schedule.cron: {problem}"]


def _zone_ok(name: object) -> bool:
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _choice(
    raw: Mapping[str, Any], key: str, kind: type[_E], default: _E, problems: list[str]
) -> _E:
    value = raw.get(key, default.value)
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        problems.append(f"schedule.{key}: must be one of {allowed}, got {show(value)}")
        return default


def parse_interval(value: object) -> int | None:
    """Seconds of an interval such as ``"15m"``, ``"1h30m"``, ``"1d"``; ``None`` if invalid."""
    if not isinstance(value, str) or not value:
        return None
    match = _INTERVAL.fullmatch(value.strip())
    if match is None:
        return None
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS_S, strict=False) if n)
    return seconds if 1 <= seconds <= _MAX_INTERVAL_S else None


def format_interval(seconds: int) -> str:
    """``5400`` -> ``"1h30m"``."""
    parts = []
    for unit, name in zip(_UNITS_S, "dhms", strict=False):
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count}{name}")
    return "".join(parts) or "0s"


def wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) at which naive wall time ``wall`` fires in ``zone``: its first
    occurrence when it happens twice, the first minute after the gap when it does not exist."""
    first = wall.replace(tzinfo=zone, fold=0)
    if _exists(first):
        return first.astimezone(UTC)
    minute = wall.replace(second=0)
    for step in range(1, _MAX_GAP_MIN):
        later = (minute + timedelta(minutes=step)).replace(tzinfo=zone, fold=0)
        if _exists(later):
            return later.astimezone(UTC)
    return first.astimezone(UTC)  # a gap longer than any zone has: keep the plain reading


def _exists(local: datetime) -> bool:
    return local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(
        tzinfo=None
    )


def _cron_slots(
    schedule: Schedule, cron: CronMatcher, start: datetime, reverse: bool
) -> Iterator[datetime]:
    """Slots strictly after (before, when ``reverse``) instant ``start``, in order."""
    zone, expr = schedule.zone, schedule.cron or ""
    # Start the walk a day early (late): an instant's wall time can sit an hour before a
    # slot it follows (a fall-back fold), and a gap folds wall times into a later instant.
    margin = timedelta(days=-1 if not reverse else 1)
    naive = (start.astimezone(zone) + margin).replace(tzinfo=None)
    last: datetime | None = None
    for wall in cron.walk(expr, naive, reverse):
        slot = wall_time(wall, zone)
        if (slot <= start) if not reverse else (slot >= start):
            continue
        if slot == last:
            continue  # several wall times of one gap fire once
        last = slot
        yield slot


def _every_slots(every_s: int, start: datetime, reverse: bool) -> Iterator[datetime]:
    elapsed = int((start - EPOCH).total_seconds() // 1)
    n = elapsed // every_s
    if reverse:
        n = n if EPOCH + timedelta(seconds=n * every_s) < start else n - 1
        step = -1
    else:
        n, step = n + 1, 1
    while True:
        yield EPOCH + timedelta(seconds=n * every_s)
        n += step


def _slots(
    schedule: Schedule, cron: CronMatcher, start: datetime, reverse: bool = False
) -> Iterator[datetime]:
    if schedule.every_s is not None:
        return _every_slots(schedule.every_s, start, reverse)
    return _cron_slots(schedule, cron, start, reverse)


class NeverFires(ValueError):
    """A schedule has no (more) slot after an instant: its cron matches no date to come."""


def next_slots(
    schedule: Schedule, cron: CronMatcher, after: datetime, count: int
) -> list[datetime]:
    """The ``count`` slots strictly after instant ``after``.

    Raises:
        NeverFires: fewer than ``count`` slots follow (the calendar's end, year 9999).
    """
    slots = _slots(schedule, cron, after)
    try:
        return [next(slots) for _ in range(count)]
    except (StopIteration, OverflowError) as exc:
        raise NeverFires(f"schedule: never fires after {after.isoformat()}") from exc


def due_slots(
    schedule: Schedule,
    cron: CronMatcher,
    after: datetime,
    now: datetime,
    max_catchup: int,
) -> tuple[list[datetime], int]:
    """The slots in ``(after, now]`` that fire now, oldest first, and how many more were
    missed and do not (by ``catchup``).

    The newest slot is on time when it is also the only one: ``catchup`` only decides about
    slots older than the newest. ``none`` fires just a slot within one second of ``now``;
    ``latest`` fires the newest; ``all`` the newest ``max_catchup``.
    """
    wanted = max_catchup if schedule.catchup is Catchup.ALL else 1
    found: list[datetime] = []
    missed = 0
    walk = _slots(schedule, cron, now + timedelta(microseconds=1), reverse=True)
    for slot in walk:
        if slot <= after:
            break
        if len(found) == wanted:
            missed = 1 + _count_rest(walk, after)
            break
        found.append(slot)
    if schedule.catchup is Catchup.NONE and found and now - found[0] > ON_TIME:
        missed, found = missed + 1, []
    return list(reversed(found)), missed


def _count_rest(walk: Iterator[datetime], after: datetime) -> int:
    """How many more slots ``walk`` gives before ``after`` (at most ``_COUNT_LIMIT``)."""
    count = 0
    for slot in walk:
        if slot <= after or count >= _COUNT_LIMIT:
            break
        count += 1
    return count


def slot_stamp(slot: datetime, zone: ZoneInfo) -> str:
    """The slot in ``zone`` as a file-name-safe ISO 8601 basic form: ``20261204T020000+0100``."""
    return slot.astimezone(zone).strftime("%Y%m%dT%H%M%S%z")


def scheduled_for(slot: datetime, zone: ZoneInfo) -> str:
    """The slot in ``zone``, ISO 8601: ``2026-12-04T02:00:00+01:00``."""
    return slot.astimezone(zone).isoformat()
