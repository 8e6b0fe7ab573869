"""Cron expressions, matched by ``cronsim`` (the :class:`~wfe_daemon.core.schedule.CronMatcher`
of the daemon and the commands). Only five-field expressions are taken: cronsim also
reads a sixth, seconds field, which a schedule does not have."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from cronsim import CronSim, CronSimError

__all__ = ["Cronsim"]


class Cronsim:
    """The cron matcher, over naive wall-clock times."""

    def problem(self, expr: str) -> str | None:
        """Why ``expr`` is not a valid five-field cron expression (``None``: it is)."""
        fields = expr.split()
        if len(fields) != 5:
            return (
                f"must have 5 fields (minute hour day month weekday), got {len(fields)}: {expr!r}"
            )
        try:
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError as exc:
            return f"{exc}: {expr!r}"
        return None

    def walk(self, expr: str, start: datetime, reverse: bool) -> Iterator[datetime]:
        """Naive wall times matching ``expr`` strictly after (before) ``start``."""
        return iter(CronSim(expr, start, reverse=reverse))
