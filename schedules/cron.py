"""Due times of a 5-field cron expression in an IANA timezone (cronsim, zoneinfo).

cronsim (the parser healthchecks.io runs) works on aware local times and keeps cron's own rules
across daylight saving changes: a daily 02:30 runs once on the night the clocks go back (at the
first 02:30) and at 03:00 on the night they go forward, when 02:30 does not exist; an hourly job
runs every real hour (twice at 02:00 local when the clocks go back). We give it the local time
with the right `fold`, and store every due time in UTC.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

CHECKED_RUNS = 64  # how many upcoming runs the minimum-interval check looks at


class CronInvalid(ValueError):
    """The expression or the timezone is refused; `field` says which (`cron` or `timezone`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or name not in _zones():
        raise CronInvalid("timezone", f"Unknown IANA timezone: {name!r}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronInvalid("timezone", f"Unknown IANA timezone: {name!r}.") from None


_zone_names: set[str] | None = None


def _zones() -> set[str]:
    global _zone_names
    if _zone_names is None:
        _zone_names = set(available_timezones())
    return _zone_names


def runs_after(expression: str, timezone_name: str, after: datetime, count: int = 1) -> list[datetime]:
    """The next `count` due times strictly after `after`, in UTC."""
    tz = zone(timezone_name)
    fields = expression.split()
    if len(fields) != 5:
        raise CronInvalid("cron", "A cron expression has 5 fields: minute hour day-of-month month day-of-week.")
    try:
        iterator = CronSim(" ".join(fields), after.astimezone(tz))
        return [next(iterator).astimezone(UTC) for _ in range(count)]
    except CronSimError as exc:
        raise CronInvalid("cron", f"Invalid cron expression: {exc}.") from None
    except StopIteration:
        raise CronInvalid("cron", "This cron expression never runs.") from None


def next_run(expression: str, timezone_name: str, after: datetime) -> datetime:
    return runs_after(expression, timezone_name, after)[0]


def checked(expression: str, timezone_name: str, *, now: datetime, min_interval: int) -> datetime:
    """The first due time after `now`, once the expression, the timezone and the minimum interval
    between two runs (over the next CHECKED_RUNS runs) are found good; else `CronInvalid`."""
    runs = runs_after(expression, timezone_name, now, CHECKED_RUNS)
    for earlier, later in itertools.pairwise(runs):
        if later - earlier < timedelta(seconds=min_interval):
            raise CronInvalid(
                "cron",
                f"Two runs are {int((later - earlier).total_seconds())}s apart ({earlier:%Y-%m-%d %H:%M} UTC):"
                f" at least {min_interval}s are required.",
            )
    return runs[0]
