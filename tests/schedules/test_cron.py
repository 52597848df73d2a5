"""Due times in the owner's timezone, across daylight saving changes (Europe/Berlin: the clocks
go back at 03:00 CEST on the last Sunday of October, forward at 02:00 CET on the last of March)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schedules import cron


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_run_keeps_its_local_time_across_the_end_of_summer_time():
    # 08:00 in Berlin is 06:00 UTC in summer and 07:00 UTC in winter.
    runs = cron.runs_after("0 8 * * *", "Europe/Berlin", utc(2026, 10, 23, 12, 0), 4)
    assert runs == [utc(2026, 10, 24, 6, 0), utc(2026, 10, 25, 7, 0), utc(2026, 10, 26, 7, 0), utc(2026, 10, 27, 7, 0)]


def test_a_time_in_the_repeated_hour_runs_once_when_the_clocks_go_back():
    # 02:30 happens twice on 25 October 2026 (CEST, then CET): the schedule runs at the first only.
    runs = cron.runs_after("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 12, 0), 2)
    assert runs == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_an_hourly_schedule_runs_every_real_hour_through_the_change():
    runs = cron.runs_after("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 22, 30), 5)
    # 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET, 04:00 CET: one hour apart in real time.
    assert runs == [
        utc(2026, 10, 24, 23, 0),
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 1, 0),
        utc(2026, 10, 25, 2, 0),
        utc(2026, 10, 25, 3, 0),
    ]


def test_the_next_run_after_the_first_of_two_same_local_times_is_not_the_second():
    # Computed from the run at 02:30 CEST (00:30 UTC), as the claim does: tomorrow, not 02:30 CET.
    assert cron.next_run("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_a_time_skipped_when_the_clocks_go_forward_runs_at_the_first_minute_after():
    runs = cron.runs_after("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12, 0), 2)
    assert runs == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]  # 03:00 CEST, then 02:30 CEST


@pytest.mark.parametrize(
    ("expression", "zone", "field"),
    [
        ("0 8 * *", "UTC", "cron"),
        ("0 8 * * * *", "UTC", "cron"),
        ("61 8 * * *", "UTC", "cron"),
        ("0 0 30 2 *", "UTC", "cron"),
        ("0 8 * * *", "Mars/Olympus", "timezone"),
        ("0 8 * * *", "", "timezone"),
    ],
)
def test_bad_expressions_and_timezones_are_refused_naming_the_field(expression, zone, field):
    with pytest.raises(cron.CronInvalid) as refused:
        cron.runs_after(expression, zone, utc(2026, 1, 1))
    assert refused.value.field == field


def test_runs_closer_than_the_minimum_interval_are_refused():
    with pytest.raises(cron.CronInvalid, match="apart"):
        cron.checked("0,1 8 * * *", "UTC", now=utc(2026, 1, 1), min_interval=300)
    assert cron.checked("*/5 * * * *", "UTC", now=utc(2026, 1, 1), min_interval=300) == utc(2026, 1, 1, 0, 5)
