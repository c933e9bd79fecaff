"""When secrets fall due: AWS schedule expressions, durations and deterministic jitter.

This module owns rotd's notion of time. It parses Secrets Manager ``ScheduleExpression`` strings
(``rate(...)`` and the six-field AWS ``cron(...)``, with ``?``, ``L``, ``W`` and ``#``) into
immutable :class:`Schedule` objects that answer "when does this fire next" in a secret's time
zone, parses the durations used for rotation windows and grace periods, and spreads the start
of rotations that fall due together over their window with a jitter derived from the secret id
and the due time, so that a restart never re-rolls it. It is pure standard library and never
reads the clock: callers pass every instant in, and every instant that comes out is aware UTC.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import re
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from itertools import pairwise

__all__ = [
    "CronSchedule",
    "RateSchedule",
    "Schedule",
    "due_at",
    "parse_duration",
    "parse_schedule",
    "plan_start",
    "start_in_window",
]

_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
# Far beyond any sane rotation interval, well inside what datetime arithmetic can hold.
_MAX_RATE = timedelta(days=36500)
_MAX_DURATION = timedelta(days=36500)


# --- schedules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule(ABC):
    """A parsed ScheduleExpression; ``text`` is the expression as written (whitespace trimmed)."""

    text: str

    @abstractmethod
    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime | None:
        """The first firing strictly after ``after``, as an aware UTC datetime.

        ``after`` must be aware. A cron expression is read on the wall clock of ``tz``; ``None``
        means it never fires again (its year field lies in the past).
        """

    @abstractmethod
    def min_interval(self) -> timedelta:
        """The shortest gap between two consecutive firings, for warning about tight schedules."""

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class RateSchedule(Schedule):
    """``rate(N unit)``: due ``interval`` after the last rotation, whatever the time zone."""

    interval: timedelta

    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime | None:
        _require_aware(after, "after")
        return after.astimezone(UTC) + self.interval

    def min_interval(self) -> timedelta:
        return self.interval


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """``cron(minutes hours day-of-month month day-of-week year)`` with AWS's rules.

    Firings are wall-clock times in the time zone passed to :meth:`next_after`. A wall-clock
    time that a DST change skips fires when the gap ends (02:30 on a spring-forward night fires
    at 03:00); a wall-clock time that occurs twice fires on its first occurrence only.
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: _DayRule
    months: tuple[int, ...]
    years: tuple[int, ...]

    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime | None:
        _require_aware(after, "after")
        local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        if local.year > self.years[-1]:
            return None
        local += _MINUTE
        while (candidate := self._next_local(local)) is not None:
            instant = _local_to_utc(candidate, tz)
            if instant > after:
                return instant
            # The second reading of a repeated hour: that wall time already fired in the first.
            local = candidate + _MINUTE
        return None

    def min_interval(self) -> timedelta:
        """Sampled on the UTC calendar over the first 28 years the year field allows.

        28 years hold every weekday and leap-year layout, so day-of-week and ``L``/``W`` rules
        show their tightest spacing. DST shifts are not counted. A schedule that fires at most
        once returns ``timedelta.max``.
        """
        return self._min_interval

    @functools.cached_property
    def _min_interval(self) -> timedelta:
        times = sorted(h * 60 + m for h in self.hours for m in self.minutes)
        gaps = [b - a for a, b in pairwise(times)]
        day_numbers = [
            date(year, month, 1).toordinal() + day - 1
            for year in self.years[:28]
            for month in self.months
            for day in _month_days(self.days, year, month)
        ]
        if len(day_numbers) >= 2:
            fewest_days = min(b - a for a, b in pairwise(day_numbers))
            gaps.append(fewest_days * 1440 - times[-1] + times[0])
        if not day_numbers or not gaps:
            return timedelta.max
        return timedelta(minutes=min(gaps))

    def _next_local(self, start: datetime) -> datetime | None:
        """The first naive wall-clock firing at or after ``start``, stepping field by field."""
        minutes, hours, months, years = self.minutes, self.hours, self.months, self.years
        for year in years[bisect_left(years, start.year) :]:
            same_year = year == start.year
            for month in months[bisect_left(months, start.month) if same_year else 0 :]:
                same_month = same_year and month == start.month
                days = _month_days(self.days, year, month)
                for day in days[bisect_left(days, start.day) if same_month else 0 :]:
                    same_day = same_month and day == start.day
                    for hour in hours[bisect_left(hours, start.hour) if same_day else 0 :]:
                        same_hour = same_day and hour == start.hour
                        i = bisect_left(minutes, start.minute) if same_hour else 0
                        if i < len(minutes):
                            return datetime(year, month, day, hour, minutes[i])
        return None


def due_at(schedule: Schedule, last_rotated: datetime, tz: tzinfo = UTC) -> datetime | None:
    """When a secret last rotated at ``last_rotated`` is next due; ``None`` if never again."""
    return schedule.next_after(last_rotated, tz)


def start_in_window(secret_id: str, due: datetime, window: timedelta) -> datetime:
    """The instant in ``[due, due + window)`` at which this secret's rotation should start.

    The offset comes from a BLAKE2b hash of the secret id and the due instant, so it is the
    same in every process and after every restart, and secrets due together spread evenly over
    the window. A zero window starts at ``due``. The result is aware UTC.
    """
    _require_aware(due, "due")
    if window < timedelta(0):
        raise ValueError(f"window {window} is negative; a rotation window must be 0 or longer")
    due = due.astimezone(UTC)
    key = f"{secret_id}\0{due.isoformat()}".encode()
    fraction = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    # Integer arithmetic keeps the offset strictly below the window, even for tiny windows.
    offset_us = ((window // _MICROSECOND) * fraction) >> 64
    return due + timedelta(microseconds=offset_us)


def plan_start(
    secret_id: str,
    schedule: Schedule,
    window: timedelta,
    last_rotated: datetime,
    now: datetime,
    tz: tzinfo = UTC,
) -> tuple[datetime, datetime] | None:
    """When a secret is due and when its rotation should start, as ``(due, start)``.

    The start lies in ``[due, due + window)`` (see :func:`start_in_window`). A secret whose
    start has already passed is overdue: it starts at ``now`` plus the same offset, so a fleet
    found overdue together (at start-up, after a reload) is spread over the window rather than
    rotated all at once. ``None`` when the schedule never fires again.
    """
    due = schedule.next_after(last_rotated, tz)
    if due is None:
        return None
    start = start_in_window(secret_id, due, window)
    if start < now:
        start = now.astimezone(UTC) + (start - due)
    return due, start


# --- parsing schedules -------------------------------------------------------------------------

_SCHEDULE_FORMS = (
    "rate(VALUE UNIT), e.g. rate(30 days), or "
    "cron(minutes hours day-of-month month day-of-week year), e.g. cron(0 10 * * ? *)"
)
_RATE = re.compile(r"rate\((?P<body>.*)\)", re.DOTALL)
_CRON = re.compile(r"cron\((?P<body>.*)\)", re.DOTALL)
_RATE_UNITS = {"minute": _MINUTE, "hour": timedelta(hours=1), "day": timedelta(days=1)}
_RATE_UNIT_NAMES = "minute, minutes, hour, hours, day, days"


def parse_schedule(text: str) -> Schedule:
    """Parse a Secrets Manager ScheduleExpression, ``rate(...)`` or ``cron(...)``.

    Raises ``ValueError`` whose message says what is wrong and what is allowed. Results are
    memoized: many secrets share a few expressions, and schedules are immutable.
    """
    if not isinstance(text, str):
        raise ValueError(f"schedule {text!r} is not a string; write {_SCHEDULE_FORMS}")
    return _parse_schedule(text.strip())


@functools.lru_cache(maxsize=1024)
def _parse_schedule(text: str) -> Schedule:
    if match := _RATE.fullmatch(text):
        return _parse_rate(text, match["body"])
    if match := _CRON.fullmatch(text):
        return _parse_cron(text, match["body"])
    raise ValueError(f"schedule {text!r} is not a schedule expression; write {_SCHEDULE_FORMS}")


def _parse_rate(text: str, body: str) -> RateSchedule:
    parts = body.split()
    if len(parts) != 2:
        raise ValueError(
            f"{text!r} must be rate(VALUE UNIT) with a whole number and one of "
            f"{_RATE_UNIT_NAMES}, e.g. rate(1 day) or rate(12 hours)"
        )
    value_text, unit_text = parts
    value = _whole_number(value_text)
    if value is None or value < 1:
        raise ValueError(
            f"{text!r}: the value {value_text!r} must be a positive whole number, "
            "e.g. rate(1 day) or rate(12 hours)"
        )
    unit = unit_text.removesuffix("s")
    if unit not in _RATE_UNITS:
        raise ValueError(f"{text!r}: the unit {unit_text!r} must be one of {_RATE_UNIT_NAMES}")
    # AWS's own rule: 1 takes the singular, anything else the plural.
    if value == 1 and unit_text != unit:
        raise ValueError(f"{text!r}: a value of 1 takes the singular unit: rate(1 {unit})")
    if value != 1 and unit_text == unit:
        raise ValueError(
            f"{text!r}: a value other than 1 takes the plural unit: rate({value} {unit}s)"
        )
    if value > _MAX_RATE // _RATE_UNITS[unit]:
        raise ValueError(f"{text!r} is too long; a rate may be at most {_MAX_RATE.days} days")
    return RateSchedule(text=text, interval=value * _RATE_UNITS[unit])


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    allowed: str
    names: Mapping[str, int]


_MONTH_NAMES = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
# AWS numbers days of the week from Sunday: 1 = SUN ... 7 = SAT.
_DAY_NAMES = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_MINUTES = _Field("minutes", 0, 59, "0-59 and , - * /", {})
_HOURS = _Field("hours", 0, 23, "0-23 and , - * /", {})
_DAY_OF_MONTH = _Field(
    "day-of-month", 1, 31, "1-31 and , - * / ? L LW W (e.g. 15W: weekday nearest the 15th)", {}
)
_MONTH = _Field("month", 1, 12, "1-12 or JAN-DEC and , - * /", _MONTH_NAMES)
_DAY_OF_WEEK = _Field(
    "day-of-week",
    1,
    7,
    "1-7 or SUN-SAT (1 = SUN) and , - * / ? L # (e.g. 5L: last Thursday, 3#2: second Tuesday)",
    _DAY_NAMES,
)
_YEAR = _Field("year", 1970, 2199, "1970-2199 and , - * /", {})
_CRON_FIELDS = "minutes hours day-of-month month day-of-week year"
# The most days each month can have, February counted in leap years.
_LONGEST_MONTH = {m: calendar.monthrange(2000, m)[1] for m in range(1, 13)}


def _parse_cron(text: str, body: str) -> CronSchedule:
    fields = body.split()
    if len(fields) != 6:
        hint = " (AWS cron has a year field at the end; use * for every year)"
        raise ValueError(
            f"{text!r} has {len(fields)} fields; cron() takes exactly 6: {_CRON_FIELDS}, "
            f"e.g. cron(0 10 * * ? *){hint if len(fields) == 5 else ''}"
        )
    minute_text, hour_text, dom_text, month_text, dow_text, year_text = fields
    minutes = _parse_values(_MINUTES, minute_text)
    hours = _parse_values(_HOURS, hour_text)
    day_of_month = _parse_day_of_month(dom_text)
    months = _parse_values(_MONTH, month_text)
    day_of_week = _parse_day_of_week(dow_text)
    years = _parse_values(_YEAR, year_text)
    days = day_of_month or day_of_week
    if days is None:
        raise ValueError(
            f"{text!r}: day-of-month and day-of-week are both '?'; exactly one of them must be "
            "'?' and the other must say which days, e.g. cron(0 10 * * ? *)"
        )
    if day_of_month is not None and day_of_week is not None:
        raise ValueError(
            f"{text!r}: day-of-month ({dom_text}) and day-of-week ({dow_text}) are both set; "
            "AWS does not allow both: write '?' in one of them, e.g. cron(0 10 * * ? *) or "
            "cron(0 18 ? * MON-FRI *)"
        )
    if days.earliest_day() > max(_LONGEST_MONTH[m] for m in months):
        raise ValueError(
            f"{text!r}: day-of-month {dom_text} never occurs in month {month_text}, "
            "so the schedule would never fire"
        )
    return CronSchedule(
        text=text, minutes=minutes, hours=hours, days=days, months=months, years=years
    )


def _parse_day_of_month(text: str) -> _DayRule | None:
    upper = text.upper()
    if upper == "?":
        return None
    if upper in ("L", "LW"):
        return _LastDayOfMonth(weekday_only=upper == "LW")
    if upper.endswith("W") and (day := _whole_number(upper[:-1])) is not None:
        _check_range(_DAY_OF_MONTH, text, day)
        return _NearestWeekday(day)
    if any(c in upper for c in "?LW"):
        raise _field_error(
            _DAY_OF_MONTH, text, "?, L, LW and nW must each stand alone, not in a list or range"
        )
    return _DaysOfMonth(_parse_values(_DAY_OF_MONTH, text))


def _parse_day_of_week(text: str) -> _DayRule | None:
    upper = text.upper()
    if upper == "?":
        return None
    if upper == "L":
        return _DaysOfWeek((7,))
    if upper.endswith("L") and "," not in upper and "-" not in upper:
        return _LastWeekdayOfMonth(_single_value(_DAY_OF_WEEK, text, upper[:-1]))
    if "#" in upper and "," not in upper and "-" not in upper:
        weekday_text, _, nth_text = upper.partition("#")
        nth = _whole_number(nth_text)
        if nth is None or not 1 <= nth <= 5:
            raise _field_error(
                _DAY_OF_WEEK, text, f"the week number after # must be 1-5, not {nth_text!r}"
            )
        return _NthWeekdayOfMonth(_single_value(_DAY_OF_WEEK, text, weekday_text), nth)
    if any(c in upper for c in "?L#"):
        raise _field_error(
            _DAY_OF_WEEK, text, "?, L, nL and n#k must each stand alone, not in a list or range"
        )
    return _DaysOfWeek(_parse_values(_DAY_OF_WEEK, text))


def _parse_values(field: _Field, text: str) -> tuple[int, ...]:
    """A field of ``,``-separated items, each ``*``, ``a``, ``a-b``, optionally ``/step``."""
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            step_value = _whole_number(step_text)
            if step_value is None or step_value < 1:
                raise _field_error(
                    field, text, f"the step after / must be a positive whole number: {item!r}"
                )
            step = step_value
        if base == "*":
            start, end = field.low, field.high
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            start = _single_value(field, text, start_text)
            end = _single_value(field, text, end_text)
            if start > end:
                raise _field_error(
                    field, text, f"the range {base} runs backwards; write it low-high"
                )
        else:
            start = _single_value(field, text, base)
            end = field.high if slash else start
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


def _single_value(field: _Field, text: str, token: str) -> int:
    value = _whole_number(token)
    if value is None:
        value = field.names.get(token.upper())
    if value is None:
        if not token:
            raise _field_error(field, text, "a value is missing (a stray , - or /?)")
        raise _field_error(field, text, f"{token!r} is not a valid value")
    _check_range(field, text, value)
    return value


def _check_range(field: _Field, text: str, value: int) -> None:
    if not field.low <= value <= field.high:
        raise _field_error(field, text, f"{value} is out of range")


def _field_error(field: _Field, text: str, problem: str) -> ValueError:
    return ValueError(f"cron {field.name} {text!r}: {problem}; allowed: {field.allowed}")


def _whole_number(text: str) -> int | None:
    # isdigit() alone would accept "²" and other Unicode digits; the length cap keeps int() cheap.
    if text.isascii() and text.isdigit() and len(text) <= 9:
        return int(text)
    return None


# --- day rules ---------------------------------------------------------------------------------


class _DayRule(ABC):
    """Which days of a given month a cron expression fires on."""

    @abstractmethod
    def days(self, year: int, month: int) -> tuple[int, ...]:
        """The matching days of the month, ascending."""

    def earliest_day(self) -> int:
        """The smallest day of the month this rule can ever pick (for "never fires" checks)."""
        return 1


@dataclass(frozen=True)
class _DaysOfMonth(_DayRule):
    numbers: tuple[int, ...]

    def days(self, year: int, month: int) -> tuple[int, ...]:
        last = calendar.monthrange(year, month)[1]
        return self.numbers[: bisect_left(self.numbers, last + 1)]

    def earliest_day(self) -> int:
        return self.numbers[0]


@dataclass(frozen=True)
class _LastDayOfMonth(_DayRule):
    weekday_only: bool  # LW: the last Monday-Friday

    def days(self, year: int, month: int) -> tuple[int, ...]:
        weekday, last = _month_shape(year, month)
        if self.weekday_only and weekday >= 5:
            return (last - (weekday - 4),)
        return (last,)


@dataclass(frozen=True)
class _NearestWeekday(_DayRule):
    """``15W``: the Monday-Friday nearest the 15th, never leaving the month.

    A month without that day (``31W`` in April) does not fire, as ``31`` would not.
    """

    day: int

    def days(self, year: int, month: int) -> tuple[int, ...]:
        last = calendar.monthrange(year, month)[1]
        if self.day > last:
            return ()
        weekday = calendar.weekday(year, month, self.day)
        if weekday == 5:  # Saturday: Friday before, unless that is last month
            return (self.day + 2,) if self.day == 1 else (self.day - 1,)
        if weekday == 6:  # Sunday: Monday after, unless that is next month
            return (self.day - 2,) if self.day == last else (self.day + 1,)
        return (self.day,)

    def earliest_day(self) -> int:
        return self.day


@dataclass(frozen=True)
class _DaysOfWeek(_DayRule):
    numbers: tuple[int, ...]  # AWS numbering, 1 = SUN

    def days(self, year: int, month: int) -> tuple[int, ...]:
        first, last = calendar.monthrange(year, month)
        wanted = {_python_weekday(n) for n in self.numbers}
        return tuple(d for d in range(1, last + 1) if (first + d - 1) % 7 in wanted)


@dataclass(frozen=True)
class _LastWeekdayOfMonth(_DayRule):
    """``5L``: the last Thursday of the month."""

    number: int

    def days(self, year: int, month: int) -> tuple[int, ...]:
        weekday, last = _month_shape(year, month)
        return (last - (weekday - _python_weekday(self.number)) % 7,)


@dataclass(frozen=True)
class _NthWeekdayOfMonth(_DayRule):
    """``3#2``: the second Tuesday; months without a fifth one do not fire for ``#5``."""

    number: int
    nth: int

    def days(self, year: int, month: int) -> tuple[int, ...]:
        first, last = calendar.monthrange(year, month)
        day = 1 + (_python_weekday(self.number) - first) % 7 + 7 * (self.nth - 1)
        return (day,) if day <= last else ()


@functools.lru_cache(maxsize=8192)
def _month_days(rule: _DayRule, year: int, month: int) -> tuple[int, ...]:
    return rule.days(year, month)


def _month_shape(year: int, month: int) -> tuple[int, int]:
    """The weekday (Monday = 0) of the month's last day, and that day's number."""
    last = calendar.monthrange(year, month)[1]
    return calendar.weekday(year, month, last), last


def _python_weekday(aws_number: int) -> int:
    return (aws_number - 2) % 7


# --- wall clocks -------------------------------------------------------------------------------


def _local_to_utc(local: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a naive wall-clock time in ``tz``.

    An ambiguous time takes its first occurrence (``fold=0``); a time skipped by a DST change
    moves forward to the instant the gap ends.
    """
    instant = local.replace(tzinfo=tz).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local:
        return instant
    # In a gap, fold=0 reads the time with the offset from before the change and fold=1 with
    # the offset from after it; the change itself lies between the two readings.
    before = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    after = instant
    new_offset = after.astimezone(tz).utcoffset()
    while after - before > _SECOND:
        middle = before + ((after - before) // 2 // _SECOND) * _SECOND
        if middle == before:
            break
        if middle.astimezone(tz).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return after


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")


# --- durations ---------------------------------------------------------------------------------

_DURATION = re.compile(
    r"(?:(?P<d>[0-9]{1,9})d)?(?:(?P<h>[0-9]{1,9})h)?(?:(?P<m>[0-9]{1,9})m)?(?:(?P<s>[0-9]{1,9})s)?"
)
_DURATION_FORMS = (
    "whole seconds (0, 90) or amounts with units d, h, m, s in that order, "
    "e.g. 30s, 10m, 1h, 2h30m, 1d, 1d12h"
)


def parse_duration(text: str | int) -> timedelta:
    """A rotation window or grace period: ``0``, ``30s``, ``10m``, ``2h30m``, ``1d12h``...

    An int, or a string of digits alone, is seconds. Raises ``ValueError`` naming the allowed
    forms.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"duration {text!r} is not valid; write {_DURATION_FORMS}")
    if isinstance(text, int):
        seconds = text
    elif (digits := _whole_number(text.strip())) is not None:
        seconds = digits
    elif text.strip() and (match := _DURATION.fullmatch(text.strip())):
        d, h, m, s = (int(match[unit] or 0) for unit in "dhms")
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    else:
        raise ValueError(f"duration {text!r} is not valid; write {_DURATION_FORMS}")
    if seconds < 0:
        raise ValueError(f"duration {text!r} is negative; write {_DURATION_FORMS}")
    if seconds > _MAX_DURATION // _SECOND:
        raise ValueError(f"duration {text!r} is too long; the most is {_MAX_DURATION.days}d")
    return timedelta(seconds=seconds)
