"""Schedule expressions, durations and window jitter: rotd.schedule."""

from __future__ import annotations

import calendar
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from rotd.schedule import (
    CronSchedule,
    RateSchedule,
    Schedule,
    due_at,
    parse_duration,
    parse_schedule,
    plan_start,
    start_in_window,
)

BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def firings(text: str, after: datetime, count: int, tz: ZoneInfo | None = None) -> list[datetime]:
    schedule = parse_schedule(text)
    result: list[datetime] = []
    for _ in range(count):
        nxt = schedule.next_after(after, tz or UTC)
        assert nxt is not None
        result.append(nxt)
        after = nxt
    return result


# --- rate() ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("rate(1 minute)", timedelta(minutes=1)),
        ("rate(15 minutes)", timedelta(minutes=15)),
        ("rate(1 hour)", timedelta(hours=1)),
        ("rate(12 hours)", timedelta(hours=12)),
        ("rate(1 day)", timedelta(days=1)),
        ("rate(30 days)", timedelta(days=30)),
        ("rate(1000 days)", timedelta(days=1000)),
        ("  rate(2 days)  ", timedelta(days=2)),
    ],
)
def test_rate_forms(text: str, interval: timedelta) -> None:
    schedule = parse_schedule(text)
    assert isinstance(schedule, RateSchedule)
    assert schedule.interval == interval
    assert schedule.min_interval() == interval
    assert schedule.text == text.strip()
    assert str(schedule) == text.strip()


def test_rate_is_due_an_interval_after_the_last_rotation() -> None:
    schedule = parse_schedule("rate(30 days)")
    last = utc(2024, 1, 31, 17, 45, 12)
    assert schedule.next_after(last) == utc(2024, 3, 1, 17, 45, 12)


def test_rate_is_absolute_time_whatever_the_zone() -> None:
    # 24 real hours across Berlin's spring-forward night, not "same wall time tomorrow".
    schedule = parse_schedule("rate(1 day)")
    last = datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)
    nxt = schedule.next_after(last, BERLIN)
    assert nxt == utc(2024, 3, 31, 11, 0)
    assert nxt is not None
    assert nxt.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("rate(1 days)", ["singular", "rate(1 day)"]),
        ("rate(1 hours)", ["singular", "rate(1 hour)"]),
        ("rate(2 day)", ["plural", "rate(2 days)"]),
        ("rate(10 minute)", ["plural", "rate(10 minutes)"]),
        ("rate(0 days)", ["positive whole number", "'0'"]),
        ("rate(-1 days)", ["positive whole number"]),
        ("rate(1.5 hours)", ["positive whole number"]),
        ("rate(x days)", ["positive whole number"]),
        ("rate(5 weeks)", ["'weeks'", "minute, minutes, hour, hours, day, days"]),
        ("rate(5 Days)", ["'Days'", "minute, minutes, hour, hours, day, days"]),
        ("rate(5)", ["rate(VALUE UNIT)", "e.g. rate(1 day)"]),
        ("rate()", ["rate(VALUE UNIT)"]),
        ("rate(1 day 2)", ["rate(VALUE UNIT)"]),
        ("rate(100000 days)", ["too long"]),
        ("rate(99999999999 minutes)", ["positive whole number"]),
    ],
)
def test_rate_errors(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError, match="rate") as caught:
        parse_schedule(text)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "text", ["", "daily", "rate 1 day", "cron 0 10 * * ? *", "RATE(1 day)", "at(2024-01-01T00:00)"]
)
def test_not_a_schedule_expression(text: str) -> None:
    with pytest.raises(ValueError, match="not a schedule expression") as caught:
        parse_schedule(text)
    assert "rate(VALUE UNIT)" in str(caught.value)
    assert "cron(0 10 * * ? *)" in str(caught.value)


@pytest.mark.parametrize("value", [42, None, ["rate(1 day)"]])
def test_a_non_string_schedule_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_schedule(value)  # type: ignore[arg-type]


def test_parsing_is_memoized_and_schedules_are_frozen() -> None:
    first = parse_schedule("cron(0 10 * * ? *)")
    assert parse_schedule("cron(0 10 * * ? *)") is first
    assert parse_schedule(" cron(0 10 * * ? *) ") is first
    with pytest.raises(AttributeError):
        first.text = "rate(1 day)"  # type: ignore[misc]
    assert hash(first) == hash(parse_schedule("cron(0 10 * * ? *)"))


def test_schedule_is_abstract() -> None:
    with pytest.raises(TypeError):
        Schedule(text="rate(1 day)")  # type: ignore[abstract]


# --- cron(): the AWS examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "after", "expected"),
    [
        # 10:00 every day.
        (
            "cron(0 10 * * ? *)",
            utc(2024, 5, 1, 9, 59, 59),
            [utc(2024, 5, 1, 10), utc(2024, 5, 2, 10), utc(2024, 5, 3, 10)],
        ),
        # 12:15 every day.
        (
            "cron(15 12 * * ? *)",
            utc(2024, 12, 31, 12, 15),
            [utc(2025, 1, 1, 12, 15), utc(2025, 1, 2, 12, 15)],
        ),
        # 18:00 Monday to Friday: Friday 3 May 2024 -> Monday 6 May.
        (
            "cron(0 18 ? * MON-FRI *)",
            utc(2024, 5, 3, 18),
            [utc(2024, 5, 6, 18), utc(2024, 5, 7, 18)],
        ),
        # 08:00 on the first of every month.
        (
            "cron(0 8 1 * ? *)",
            utc(2024, 1, 15),
            [utc(2024, 2, 1, 8), utc(2024, 3, 1, 8), utc(2024, 4, 1, 8)],
        ),
        # Every 15 minutes.
        (
            "cron(0/15 * * * ? *)",
            utc(2024, 5, 1, 10, 7, 30),
            [
                utc(2024, 5, 1, 10, 15),
                utc(2024, 5, 1, 10, 30),
                utc(2024, 5, 1, 10, 45),
                utc(2024, 5, 1, 11, 0),
            ],
        ),
        # Every 10 minutes, Monday to Friday: over the weekend to Monday 00:00.
        (
            "cron(0/10 * ? * MON-FRI *)",
            utc(2024, 5, 3, 23, 55),
            [utc(2024, 5, 6, 0, 0), utc(2024, 5, 6, 0, 10)],
        ),
        # Every 5 minutes, 08:00-17:55, Monday to Friday.
        (
            "cron(0/5 8-17 ? * MON-FRI *)",
            utc(2024, 5, 6, 17, 50),
            [utc(2024, 5, 6, 17, 55), utc(2024, 5, 7, 8, 0), utc(2024, 5, 7, 8, 5)],
        ),
        # 09:00 on the first Monday of every month (1 January 2024 is a Monday).
        (
            "cron(0 9 ? * 2#1 *)",
            utc(2024, 1, 1, 9),
            [utc(2024, 2, 5, 9), utc(2024, 3, 4, 9), utc(2024, 4, 1, 9)],
        ),
    ],
)
def test_aws_documentation_examples(text: str, after: datetime, expected: list[datetime]) -> None:
    assert firings(text, after, len(expected)) == expected


def test_next_after_is_strictly_after() -> None:
    schedule = parse_schedule("cron(0 10 * * ? *)")
    assert schedule.next_after(utc(2024, 5, 1, 10)) == utc(2024, 5, 2, 10)
    assert schedule.next_after(utc(2024, 5, 1, 9, 59, 59, 999999)) == utc(2024, 5, 1, 10)
    assert schedule.next_after(utc(2024, 5, 1, 10, 0, 0, 1)) == utc(2024, 5, 2, 10)


def test_cron_output_is_aware_utc_whatever_the_input_zone() -> None:
    schedule = parse_schedule("cron(0 10 * * ? *)")
    nxt = schedule.next_after(datetime(2024, 5, 1, 5, tzinfo=timezone(timedelta(hours=-4))))
    assert nxt == utc(2024, 5, 1, 10)
    assert nxt is not None
    assert nxt.tzinfo is UTC


@pytest.mark.parametrize("text", ["cron(0 10 * * ? *)", "rate(1 day)"])
def test_naive_datetimes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule(text).next_after(datetime(2024, 5, 1))


def test_lists_ranges_steps_and_names() -> None:
    schedule = parse_schedule("cron(5,35 1-3/2 ? jan,Jul mon-WED,fri 2024)")
    assert isinstance(schedule, CronSchedule)
    assert schedule.minutes == (5, 35)
    assert schedule.hours == (1, 3)
    assert schedule.months == (1, 7)
    assert schedule.years == (2024,)
    numeric = parse_schedule("cron(5,35 1-3/2 ? 1,7 2-4,6 2024)")
    after = utc(2024, 1, 1)
    assert firings(schedule.text, after, 20) == firings(numeric.text, after, 20)


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("cron(*/20 * * * ? *)", "minutes", (0, 20, 40)),
        ("cron(7/20 * * * ? *)", "minutes", (7, 27, 47)),
        ("cron(50/20 * * * ? *)", "minutes", (50,)),
        ("cron(10-30/10 * * * ? *)", "minutes", (10, 20, 30)),
        ("cron(0 */6 * * ? *)", "hours", (0, 6, 12, 18)),
        ("cron(0 0 1 1/3 ? *)", "months", (1, 4, 7, 10)),
        ("cron(0 0 1 FEB-APR ? *)", "months", (2, 3, 4)),
        ("cron(0 0 1 1 ? 2190/5)", "years", (2190, 2195)),
        ("cron(0 0 1 1 ? *)", "years", tuple(range(1970, 2200))),
    ],
)
def test_field_expansion(text: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_schedule(text), field) == values


# --- cron(): L, W, # and the calendar's edges --------------------------------------------------


def days_of(text: str, after: datetime, count: int) -> list[date]:
    return [moment.date() for moment in firings(text, after, count)]


def test_last_day_of_month_including_leap_february() -> None:
    assert days_of("cron(0 0 L * ? *)", utc(2024, 1, 1), 4) == [
        date(2024, 1, 31),
        date(2024, 2, 29),
        date(2024, 3, 31),
        date(2024, 4, 30),
    ]
    assert days_of("cron(0 0 L 2 ? *)", utc(2023, 1, 1), 3) == [
        date(2023, 2, 28),
        date(2024, 2, 29),
        date(2025, 2, 28),
    ]


def test_last_weekday_of_month() -> None:
    # March 2024 ends on a Sunday, June 2024 on a Sunday, August 2024 on a Saturday.
    assert days_of("cron(0 0 LW * ? *)", utc(2024, 3, 1), 6) == [
        date(2024, 3, 29),
        date(2024, 4, 30),
        date(2024, 5, 31),
        date(2024, 6, 28),
        date(2024, 7, 31),
        date(2024, 8, 30),
    ]


@pytest.mark.parametrize(
    ("dom", "month", "expected"),
    [
        ("1W", 6, date(2024, 6, 3)),  # Saturday the 1st: Monday the 3rd, not Friday in May
        ("1W", 9, date(2024, 9, 2)),  # Sunday the 1st: Monday the 2nd
        ("1W", 5, date(2024, 5, 1)),  # a Wednesday stays
        ("15W", 6, date(2024, 6, 14)),  # Saturday: the Friday before
        ("15W", 9, date(2024, 9, 16)),  # Sunday: the Monday after
        ("31W", 8, date(2024, 8, 30)),  # Saturday the 31st: Friday
        ("31W", 3, date(2024, 3, 29)),  # Sunday the 31st: Friday, not Monday in April
        ("30W", 6, date(2024, 6, 28)),  # Sunday the 30th, last of June: Friday
        ("29W", 2, date(2024, 2, 29)),  # Thursday, leap year
    ],
)
def test_nearest_weekday(dom: str, month: int, expected: date) -> None:
    text = f"cron(0 0 {dom} {month} ? 2024)"
    assert days_of(text, utc(2024, 1, 1), 1) == [expected]


def test_nearest_weekday_skips_months_without_that_day() -> None:
    # 31W: April, June, September and November have no 31st, like plain 31.
    got = days_of("cron(0 0 31W * ? *)", utc(2024, 3, 30), 4)
    assert [d.month for d in got] == [5, 7, 8, 10]


def test_last_thursday_and_weekday_numbering_from_sunday() -> None:
    assert days_of("cron(0 0 ? * 5L *)", utc(2024, 1, 1), 3) == [
        date(2024, 1, 25),
        date(2024, 2, 29),  # Thursday in a leap year
        date(2024, 3, 28),
    ]
    assert days_of("cron(0 0 ? * THUL *)", utc(2024, 1, 1), 1) == [date(2024, 1, 25)]
    assert days_of("cron(0 0 ? * 1L *)", utc(2024, 3, 1), 1) == [date(2024, 3, 31)]  # Sunday


def test_l_alone_in_day_of_week_is_saturday() -> None:
    got = days_of("cron(0 0 ? * L *)", utc(2024, 5, 1), 3)
    assert got == [date(2024, 5, 4), date(2024, 5, 11), date(2024, 5, 18)]
    assert all(d.weekday() == 5 for d in got)


def test_nth_weekday() -> None:
    assert days_of("cron(0 0 ? * 3#2 *)", utc(2024, 1, 1), 2) == [
        date(2024, 1, 9),  # second Tuesday
        date(2024, 2, 13),
    ]
    # Fifth Fridays only exist in some months.
    assert days_of("cron(0 0 ? * FRI#5 *)", utc(2024, 1, 1), 4) == [
        date(2024, 3, 29),
        date(2024, 5, 31),
        date(2024, 8, 30),
        date(2024, 11, 29),
    ]


def test_february_29th_only_in_leap_years() -> None:
    text = "cron(0 12 29 2 ? *)"
    assert firings(text, utc(2024, 3, 1), 2) == [utc(2028, 2, 29, 12), utc(2032, 2, 29, 12)]
    # 2100 is not a leap year.
    assert firings(text, utc(2096, 3, 1), 1) == [utc(2104, 2, 29, 12)]


def test_year_ranges_end() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2025-2026)")
    assert schedule.next_after(utc(2024, 6, 1)) == utc(2025, 1, 1)
    assert schedule.next_after(utc(2025, 1, 1)) == utc(2026, 1, 1)
    assert schedule.next_after(utc(2026, 1, 1)) is None
    assert schedule.next_after(utc(2300, 1, 1)) is None
    assert parse_schedule("cron(0 0 * * ? 2020,2022)").next_after(utc(2024, 1, 1)) is None
    last = parse_schedule("cron(59 23 31 12 ? *)")
    assert last.next_after(utc(2199, 12, 31, 23, 58)) == utc(2199, 12, 31, 23, 59)
    assert last.next_after(utc(2199, 12, 31, 23, 59)) is None


def test_a_schedule_that_can_never_fire_again_returns_none_quickly() -> None:
    # Fifth Friday of February in 2100-2103: February 2100-2103 has 28 days, so never.
    schedule = parse_schedule("cron(0 0 ? 2 6#5 2100-2103)")
    assert schedule.next_after(utc(2024, 1, 1)) is None


# --- cron(): against a brute-force reading of the rules ----------------------------------------


def aws_weekday(day: date) -> int:
    return day.isoweekday() % 7 + 1  # 1 = Sunday ... 7 = Saturday


def brute_force_day(rule: str, day: date) -> bool:
    """An independent, slow reading of the day-of-month / day-of-week rules."""
    last = calendar.monthrange(day.year, day.month)[1]

    def weekday(d: int) -> bool:
        return date(day.year, day.month, d).weekday() < 5

    if rule == "L":
        return day.day == last
    if rule == "LW":
        return weekday(day.day) and not any(weekday(d) for d in range(day.day + 1, last + 1))
    if rule.endswith("W"):
        target = int(rule[:-1])
        if target > last:
            return False
        nearest = min((d for d in range(1, last + 1) if weekday(d)), key=lambda d: abs(d - target))
        return day.day == nearest
    if rule.endswith("L"):
        return aws_weekday(day) == int(rule[:-1]) and day.day + 7 > last
    if "#" in rule:
        number, nth = (int(part) for part in rule.split("#"))
        return aws_weekday(day) == number and (day.day - 1) // 7 + 1 == nth
    raise AssertionError(rule)


@pytest.mark.parametrize(
    "rule",
    ["L", "LW", "1W", "2W", "15W", "28W", "29W", "30W", "31W"]
    + [f"{n}L" for n in range(1, 8)]
    + [f"{n}#{k}" for n in (1, 2, 4, 7) for k in (1, 2, 4, 5)],
)
def test_day_rules_match_a_brute_force_reading(rule: str) -> None:
    is_dom = "#" not in rule and (rule in ("L", "LW") or rule.endswith("W"))
    text = f"cron(0 0 {rule} * ? *)" if is_dom else f"cron(0 0 ? * {rule} *)"
    start, end = date(2023, 1, 1), date(2030, 12, 31)
    expected = [
        date.fromordinal(n)
        for n in range(start.toordinal(), end.toordinal() + 1)
        if brute_force_day(rule, date.fromordinal(n))
    ]
    got: list[date] = []
    schedule = parse_schedule(text)
    moment = schedule.next_after(utc(2022, 12, 31, 23, 59))
    while moment is not None and moment.date() <= end:
        got.append(moment.date())
        moment = schedule.next_after(moment)
    assert got == expected


@pytest.mark.parametrize(
    "text",
    [
        "cron(0/7 */5 * * ? *)",
        "cron(3-9/3,40 22-23,0-1 ? * SAT,SUN *)",
        "cron(59 23 L * ? *)",
        "cron(* 12 ? * 2 *)",
    ],
)
def test_minutes_match_a_brute_force_scan(text: str) -> None:
    # Day rules have their own brute-force test above; this one checks the field stepping.
    schedule = parse_schedule(text)
    assert isinstance(schedule, CronSchedule)
    start = utc(2024, 2, 27)
    minutes = [start + timedelta(minutes=i) for i in range(1, 8 * 24 * 60)]
    expected = [
        m
        for m in minutes
        if m.minute in schedule.minutes
        and m.hour in schedule.hours
        and m.day in schedule.days.days(m.year, m.month)
    ]
    got: list[datetime] = []
    moment = schedule.next_after(start)
    while moment is not None and moment <= minutes[-1]:
        got.append(moment)
        moment = schedule.next_after(moment)
    assert got == expected
    assert expected  # the window is long enough to see each expression fire


# --- cron(): errors ----------------------------------------------------------------------------


def test_both_days_question_marks_is_an_error() -> None:
    with pytest.raises(ValueError, match="both '\\?'") as caught:
        parse_schedule("cron(0 10 ? * ? *)")
    assert "exactly one of them must be '?'" in str(caught.value)


@pytest.mark.parametrize(
    "text", ["cron(0 10 * * * *)", "cron(0 10 1 * MON *)", "cron(0 0 L * 6L *)"]
)
def test_both_days_set_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="both set") as caught:
        parse_schedule(text)
    assert "write '?' in one of them" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("cron(0 10 * * ?)", ["5 fields", "exactly 6", "year field", "use * for every year"]),
        ("cron(0 0 10 * * ? *)", ["7 fields", "exactly 6"]),
        ("cron()", ["0 fields"]),
        ("cron(60 10 * * ? *)", ["minutes '60'", "60 is out of range", "0-59"]),
        ("cron(0 24 * * ? *)", ["hours '24'", "24 is out of range", "0-23"]),
        ("cron(0 0 0 * ? *)", ["day-of-month '0'", "out of range", "1-31"]),
        ("cron(0 0 32 * ? *)", ["day-of-month '32'", "out of range"]),
        ("cron(0 0 32W * ? *)", ["day-of-month '32W'", "out of range"]),
        ("cron(0 0 1 13 ? *)", ["month '13'", "out of range", "JAN-DEC"]),
        ("cron(0 0 1 FOO ? *)", ["month 'FOO'", "'FOO' is not a valid value", "JAN-DEC"]),
        ("cron(0 0 ? * 0 *)", ["day-of-week '0'", "out of range", "1 = SUN"]),
        ("cron(0 0 ? * 8 *)", ["day-of-week '8'", "out of range", "SUN-SAT"]),
        ("cron(0 0 ? * MONDAY *)", ["'MONDAY' is not a valid value"]),
        ("cron(0 0 1 1 ? 1969)", ["year '1969'", "out of range", "1970-2199"]),
        ("cron(0 0 1 1 ? 2200)", ["year '2200'", "out of range"]),
        ("cron(0/0 * * * ? *)", ["minutes '0/0'", "step", "positive whole number"]),
        ("cron(*/x * * * ? *)", ["step"]),
        ("cron(0 5-2 * * ? *)", ["hours '5-2'", "runs backwards"]),
        ("cron(0 0 ? * FRI-MON *)", ["runs backwards"]),
        ("cron(1,,2 0 * * ? *)", ["minutes '1,,2'", "missing"]),
        ("cron(1- 0 * * ? *)", ["missing"]),
        ("cron(-1 0 * * ? *)", ["missing"]),
        ("cron(? 0 * * ? *)", ["minutes '?'", "not a valid value"]),
        ("cron(L 0 * * ? *)", ["minutes 'L'", "not a valid value"]),
        ("cron(0 0 L,15 * ? *)", ["day-of-month 'L,15'", "stand alone", "15W"]),
        ("cron(0 0 1-15W * ? *)", ["stand alone"]),
        ("cron(0 0 W * ? *)", ["day-of-month 'W'"]),
        ("cron(0 0 ? * 3#6 *)", ["day-of-week '3#6'", "1-5", "3#2"]),
        ("cron(0 0 ? * MON#0 *)", ["1-5"]),
        ("cron(0 0 ? * 3# *)", ["1-5"]),
        ("cron(0 0 ? * 9#1 *)", ["out of range"]),
        ("cron(0 0 ? * 1-5L *)", ["stand alone"]),
        ("cron(0 0 ? * MON,3#2 *)", ["stand alone"]),
        ("cron(0 0 ? * 8L *)", ["out of range"]),
        ("cron(0 0 ? * 15W *)", ["day-of-week '15W'"]),
        ("cron(0 0 30 2 ? *)", ["never occurs", "never fire"]),
        ("cron(0 0 31 4,6,9,11 ? *)", ["never occurs"]),
        ("cron(0 0 31W 2 ? *)", ["never occurs"]),
    ],
)
def test_cron_errors_say_what_is_wrong_and_what_is_allowed(text: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError, match="cron") as caught:
        parse_schedule(text)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_day_rules_that_exist_in_some_months_are_accepted() -> None:
    parse_schedule("cron(0 0 31 1-3 ? *)")
    parse_schedule("cron(0 0 29 2 ? *)")
    parse_schedule("cron(0 0 ? 2 1#5 *)")  # February 29th can be a fifth Sunday


# --- time zones --------------------------------------------------------------------------------


def test_cron_is_read_on_the_zone_wall_clock_across_dst() -> None:
    # 10:00 in Berlin is 09:00Z in winter and 08:00Z in summer (change on 31 March 2024).
    got = firings("cron(0 10 * * ? *)", utc(2024, 3, 29, 12), 3, BERLIN)
    assert got == [utc(2024, 3, 30, 9), utc(2024, 3, 31, 8), utc(2024, 4, 1, 8)]
    got = firings("cron(0 10 * * ? *)", utc(2024, 10, 26, 0), 2, BERLIN)
    assert got == [utc(2024, 10, 26, 8), utc(2024, 10, 27, 9)]


def test_day_of_week_is_the_local_day() -> None:
    # 18:00 on Fridays in Los Angeles is early Saturday in UTC.
    got = firings("cron(0 18 ? * FRI *)", utc(2024, 1, 1), 1, LOS_ANGELES)
    assert got == [utc(2024, 1, 6, 2)]
    assert got[0].astimezone(LOS_ANGELES).weekday() == 4


def test_a_skipped_wall_time_fires_when_the_gap_ends() -> None:
    # Berlin skips 02:00-03:00 on 31 March 2024; 02:30 that night fires at 03:00 local.
    got = firings("cron(30 2 * * ? *)", utc(2024, 3, 30, 12), 3, BERLIN)
    assert got == [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]
    assert got[0].astimezone(BERLIN).replace(tzinfo=None) == datetime(2024, 3, 31, 3, 0)


def test_a_repeated_wall_time_fires_once_on_its_first_occurrence() -> None:
    # Berlin repeats 02:00-03:00 on 27 October 2024: first as CEST (00:xxZ), then CET (01:xxZ).
    got = firings("cron(30 2 * * ? *)", utc(2024, 10, 26, 12), 2, BERLIN)
    assert got == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_frequent_cron_across_fall_back_neither_repeats_nor_goes_backwards() -> None:
    got = firings("cron(0/20 * * * ? *)", utc(2024, 10, 26, 23, 50), 7, BERLIN)
    assert got == [
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 20),
        utc(2024, 10, 27, 0, 40),
        utc(2024, 10, 27, 2, 0),  # 03:00 CET; the second 02:xx hour does not fire again
        utc(2024, 10, 27, 2, 20),
        utc(2024, 10, 27, 2, 40),
        utc(2024, 10, 27, 3, 0),
    ]


def test_every_minute_across_spring_forward_is_strictly_increasing() -> None:
    got = firings("cron(* * * * ? *)", utc(2024, 3, 31, 0, 57), 5, BERLIN)
    assert got == [
        utc(2024, 3, 31, 0, 58),  # 01:58 CET
        utc(2024, 3, 31, 0, 59),  # 01:59 CET
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST
        utc(2024, 3, 31, 1, 1),
        utc(2024, 3, 31, 1, 2),
    ]


def test_after_inside_the_second_reading_of_a_repeated_hour() -> None:
    after = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)  # 01:10Z
    nxt = parse_schedule("cron(0/15 * * * ? *)").next_after(after, BERLIN)
    assert nxt == utc(2024, 10, 27, 2, 0)  # 03:00 CET


def test_due_at_is_next_after() -> None:
    cron = parse_schedule("cron(0 10 * * ? *)")
    assert due_at(cron, utc(2024, 3, 30, 12), BERLIN) == utc(2024, 3, 31, 8)
    assert due_at(cron, utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 10)
    assert due_at(parse_schedule("rate(10 days)"), utc(2024, 1, 1)) == utc(2024, 1, 11)
    assert due_at(parse_schedule("cron(0 0 1 1 ? 2020)"), utc(2024, 1, 1)) is None


# --- min_interval ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rate(5 minutes)", timedelta(minutes=5)),
        ("rate(7 days)", timedelta(days=7)),
        ("cron(0/5 8-17 ? * MON-FRI *)", timedelta(minutes=5)),
        ("cron(0/15 * * * ? *)", timedelta(minutes=15)),
        ("cron(0,1 10 * * ? *)", timedelta(minutes=1)),
        ("cron(0 10 * * ? *)", timedelta(days=1)),
        ("cron(0 8-17 ? * MON-FRI *)", timedelta(hours=1)),
        ("cron(0 0,23 * * ? *)", timedelta(hours=1)),  # 23:00 to 00:00 the next day
        ("cron(55 23 ? * MON,TUE *)", timedelta(days=1)),
        ("cron(50 23 L * ? *)", timedelta(days=28)),  # 31 January to 28 February
        ("cron(0/20 23 L * ? *)", timedelta(minutes=20)),
        ("cron(0 0 1 * ? *)", timedelta(days=28)),
        ("cron(0 9 ? * 2#1 *)", timedelta(days=28)),
        ("cron(0 0 LW * ? *)", timedelta(days=28)),
        ("cron(0 0 1W * ? *)", timedelta(days=28)),
        ("cron(0 0 1 1 ? *)", timedelta(days=365)),
        ("cron(0 12 29 2 ? *)", timedelta(days=4 * 365 + 1)),
        ("cron(0 0 1 1 ? 2030)", timedelta.max),  # fires once
        ("cron(0 0 29 2 ? 2101-2103)", timedelta.max),  # never fires
        ("cron(0/30 0 1 1 ? 2030)", timedelta(minutes=30)),
    ],
)
def test_min_interval(text: str, expected: timedelta) -> None:
    assert parse_schedule(text).min_interval() == expected


def test_min_interval_is_cached() -> None:
    schedule = parse_schedule("cron(0/5 * ? * MON-FRI *)")
    first = schedule.min_interval()
    assert schedule.min_interval() is first


# --- parse_duration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (90, timedelta(seconds=90)),
        ("0", timedelta(0)),
        ("45", timedelta(seconds=45)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h", timedelta(hours=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        (" 5m ", timedelta(minutes=5)),
    ],
)
def test_parse_duration_forms(value: str | int, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "abc",
        "1x",
        "5 m",
        "1h 30m",
        "1.5h",
        "1m1h",
        "1h1h",
        "-5",
        "h",
        "1H",
        "1w",
        -5,
        True,
    ],
)
def test_parse_duration_errors_name_the_allowed_forms(value: str | int) -> None:
    with pytest.raises(ValueError, match="duration") as caught:
        parse_duration(value)
    message = str(caught.value)
    assert "30s" in message
    assert "2h30m" in message
    assert "1d12h" in message


@pytest.mark.parametrize("value", [1.5, None, [10]])
def test_parse_duration_refuses_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="not valid"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["36501d", 10**12, "999999999d"])
def test_parse_duration_refuses_absurd_lengths(value: str | int) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration(value)


# --- start_in_window ---------------------------------------------------------------------------

DUE = utc(2024, 6, 1, 3, 0)
WINDOW = timedelta(hours=2)


def test_start_is_deterministic() -> None:
    first = start_in_window("prod/orders/app", DUE, WINDOW)
    assert start_in_window("prod/orders/app", DUE, WINDOW) == first
    # The same instant written in another zone is the same due time.
    assert start_in_window("prod/orders/app", DUE.astimezone(BERLIN), WINDOW) == first
    assert first.tzinfo is UTC


def test_start_depends_on_the_secret_and_the_due_time() -> None:
    starts = {start_in_window(f"secret-{i}", DUE, WINDOW) for i in range(20)}
    assert len(starts) == 20
    offsets = set()
    for day in range(20):
        due = DUE + timedelta(days=day)
        offsets.add(start_in_window("secret-0", due, WINDOW) - due)
    assert len(offsets) == 20


def test_start_stays_inside_the_window() -> None:
    for i in range(2000):
        start = start_in_window(f"db/{i}", DUE, WINDOW)
        assert DUE <= start < DUE + WINDOW


def test_start_spreads_secrets_evenly_over_the_window() -> None:
    deciles = Counter(
        int((start_in_window(f"prod/db-{i}/rotator", DUE, WINDOW) - DUE) / WINDOW * 10)
        for i in range(1000)
    )
    assert set(deciles) == set(range(10))
    assert all(60 <= count <= 140 for count in deciles.values()), deciles


def test_zero_and_tiny_windows() -> None:
    assert start_in_window("a", DUE, timedelta(0)) == DUE
    assert start_in_window("a", DUE, timedelta(microseconds=1)) == DUE


def test_start_refuses_negative_windows_and_naive_due_times() -> None:
    with pytest.raises(ValueError, match="negative"):
        start_in_window("a", DUE, timedelta(seconds=-1))
    with pytest.raises(ValueError, match="aware"):
        start_in_window("a", datetime(2024, 6, 1), WINDOW)


# --- plan_start --------------------------------------------------------------------------------


def test_plan_start_places_a_future_due_time_in_its_window() -> None:
    schedule = parse_schedule("rate(30 days)")
    last = utc(2024, 1, 1)
    now = utc(2024, 1, 10)
    planned = plan_start("prod/app", schedule, timedelta(hours=1), last, now)
    assert planned is not None
    due, start = planned
    assert due == utc(2024, 1, 31)
    assert due <= start < due + timedelta(hours=1)
    assert planned == plan_start("prod/app", schedule, timedelta(hours=1), last, now)


def test_plan_start_spreads_overdue_secrets_from_now_over_the_window() -> None:
    schedule = parse_schedule("rate(1 day)")
    now = utc(2024, 3, 1, 12)
    starts = []
    for i in range(200):
        planned = plan_start(f"s{i}", schedule, timedelta(hours=1), utc(2024, 1, 1), now)
        assert planned is not None
        due, start = planned
        assert due == utc(2024, 1, 2)
        assert now <= start < now + timedelta(hours=1)
        starts.append(start)
    assert max(starts) - min(starts) > timedelta(minutes=45)


def test_plan_start_is_none_when_the_schedule_never_fires_again() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2020)")
    assert plan_start("s", schedule, timedelta(0), utc(2024, 1, 1), utc(2024, 1, 2)) is None
