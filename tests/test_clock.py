"""Deadline arithmetic across real bank holidays and clock changes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ledger.clock import (
    Clock,
    add_working_days,
    days_between,
    deadline,
    is_working_day,
    parse_instant,
)
from ledger.errors import UsageError


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2024, 12, 23), 1, date(2024, 12, 24)),  # Christmas Eve is a working day
        (date(2024, 12, 24), 1, date(2024, 12, 27)),  # Christmas Day and Boxing Day skipped
        (date(2024, 12, 24), 3, date(2024, 12, 31)),  # ...and the weekend
        (date(2024, 12, 31), 1, date(2025, 1, 2)),  # New Year's Day
        (date(2024, 3, 28), 1, date(2024, 4, 2)),  # Good Friday, weekend, Easter Monday
        (date(2023, 5, 5), 1, date(2023, 5, 9)),  # the coronation bank holiday, 8 May 2023
        (date(2024, 6, 7), 1, date(2024, 6, 10)),  # an ordinary weekend
        (date(2024, 6, 3), 15, date(2024, 6, 24)),
    ],
)
def test_working_days_skip_weekends_and_bank_holidays(start: date, n: int, expected: date) -> None:
    assert add_working_days(start, n) == expected


def test_bank_holidays_are_not_working_days() -> None:
    for day in (
        date(2024, 12, 25),
        date(2024, 12, 26),
        date(2024, 3, 29),
        date(2024, 4, 1),
        date(2023, 5, 8),
    ):
        assert not is_working_day(day)
    assert is_working_day(date(2024, 12, 24))


def test_hours_are_elapsed_time_across_the_spring_clock_change() -> None:
    start = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)  # clocks go forward 31 March 01:00
    assert deadline(start, 24, Clock.HOURS) == datetime(2024, 3, 31, 12, 0, tzinfo=UTC)


def test_days_end_at_local_midnight_either_side_of_the_clock_changes() -> None:
    spring = deadline(datetime(2024, 3, 30, 10, 0, tzinfo=UTC), 1, Clock.CALENDAR_DAYS)
    assert spring == datetime(2024, 3, 31, 22, 59, 59, 999999, tzinfo=UTC)  # BST
    autumn = deadline(datetime(2024, 10, 26, 10, 0, tzinfo=UTC), 1, Clock.CALENDAR_DAYS)
    assert autumn == datetime(2024, 10, 27, 23, 59, 59, 999999, tzinfo=UTC)  # GMT again
    wd = deadline(datetime(2024, 3, 28, 16, 0, tzinfo=UTC), 1, Clock.WORKING_DAYS)
    assert wd == datetime(2024, 4, 2, 22, 59, 59, 999999, tzinfo=UTC)


def test_an_event_late_in_the_evening_belongs_to_its_london_day() -> None:
    # 23:30 UTC on 30 June is 00:30 on 1 July in London (BST).
    due = deadline(datetime(2024, 6, 30, 23, 30, tzinfo=UTC), 1, Clock.WORKING_DAYS)
    assert due == datetime(2024, 7, 2, 22, 59, 59, 999999, tzinfo=UTC)


def test_calendar_months_clamp_to_month_end() -> None:
    due = deadline(datetime(2024, 11, 30, 12, 0, tzinfo=UTC), 3, Clock.CALENDAR_MONTHS)
    assert due == datetime(2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC)


def test_days_between_counts_london_dates() -> None:
    assert (
        days_between(
            datetime(2024, 3, 3, 14, 5, tzinfo=UTC), datetime(2025, 4, 19, 9, 0, tzinfo=UTC)
        )
        == 412
    )


@pytest.mark.parametrize(
    "text", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1899-12-31T23:59:59Z"]
)
def test_instants_beyond_local_day_arithmetic_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="outside the years 1900 to 9998"):
        parse_instant(text, "as_of")


def test_an_instant_without_offset_is_utc() -> None:
    assert parse_instant("2024-03-04", "as_of") == datetime(2024, 3, 4, tzinfo=UTC)
