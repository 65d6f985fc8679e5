"""Deadline arithmetic for response standards, in Europe/London time.

Hours are elapsed time (24 hours across a clock change is still 24 hours).
Calendar days, calendar months and working days end at the end of the local day
they land on, as practitioners read "within one working day". Working days skip
weekends and England and Wales bank holidays (the `holidays` package; the two
nations share the same list).
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

LONDON = ZoneInfo("Europe/London")
# The span of instants a user may ask about; beyond it, local-day arithmetic
# (end of the London day, months ahead) would leave what datetime can hold.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)


class Clock(StrEnum):
    HOURS = "hours"
    CALENDAR_DAYS = "calendar_days"
    CALENDAR_MONTHS = "calendar_months"
    WORKING_DAYS = "working_days"


@lru_cache(maxsize=64)
def _bank_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("GB", subdiv="ENG", years=year).keys())


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(day.year)


def add_working_days(day: date, n: int) -> date:
    """The nth working day after `day` (n >= 0; 0 gives `day` itself)."""
    current = day
    remaining = n
    while remaining > 0:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current


def add_months(day: date, n: int) -> date:
    month = day.month - 1 + n
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def end_of_local_day(day: date) -> datetime:
    """The last microsecond of `day` in London, as a UTC instant."""
    return datetime.combine(day, time(23, 59, 59, 999999), tzinfo=LONDON).astimezone(UTC)


def local_date(moment: datetime) -> date:
    return moment.astimezone(LONDON).date()


def deadline(start: datetime, value: int, clock: Clock) -> datetime:
    """When a response owed from `start` falls due."""
    if clock is Clock.HOURS:
        return start.astimezone(UTC) + timedelta(hours=value)
    day = local_date(start)
    if clock is Clock.CALENDAR_DAYS:
        return end_of_local_day(day + timedelta(days=value))
    if clock is Clock.CALENDAR_MONTHS:
        return end_of_local_day(add_months(day, value))
    return end_of_local_day(add_working_days(day, value))


def describe(value: int, clock: Clock) -> str:
    unit = {
        Clock.HOURS: "hour",
        Clock.CALENDAR_DAYS: "day",
        Clock.CALENDAR_MONTHS: "month",
        Clock.WORKING_DAYS: "working day",
    }[clock]
    return f"{value} {unit}{'' if value == 1 else 's'}"


def days_between(earlier: datetime, later: datetime) -> int:
    """Whole calendar days between two instants' London dates."""
    return (local_date(later) - local_date(earlier)).days


def parse_instant(text: str, what: str) -> datetime:
    """A user-given date or time (ISO 8601; UTC when no offset), or UsageError naming it."""
    from .errors import UsageError

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what}: {text!r} is not a date or time like 2024-03-04T09:00:00Z"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        in_range = EARLIEST <= moment <= LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise UsageError(f"{what}: {text!r} is outside the years 1900 to 9998")
    return moment
