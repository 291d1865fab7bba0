"""Business calendars: weekly hours with lunch breaks, Japanese holidays, custom closed days and
partial days, and business-time arithmetic across nights, weekends, holidays and DST."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpdesk.business_time import BusinessCalendar, NoWorkingTime, parse_weekly

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = parse_weekly("mon-fri 09:00-12:00 13:00-18:00")
JAPAN = BusinessCalendar(timezone="Asia/Tokyo", weekly=OFFICE)
ALWAYS = parse_weekly("mon-sun 00:00-24:00")


def tokyo(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=TOKYO)


# -- parsing and validation ------------------------------------------------------------------


def test_parse_weekly_reads_lunch_breaks_day_lists_and_end_of_day():
    weekly = parse_weekly("mon-fri 09:00-12:00 13:00-18:00; sat,sun 10:00-14:00; sun 22:00-24:00")
    assert weekly[0] == weekly[4] == ((time(9), time(12)), (time(13), time(18)))
    assert weekly[5] == ((time(10), time(14)),)
    assert weekly[6] == ((time(10), time(14)), (time(22), time(0)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mon-fri", "write e.g."),
        ("mon-fry 09:00-18:00", "unknown day"),
        ("fri-mon 09:00-18:00", "monday to sunday"),
        ("mon 9h-18h", "is not like"),
        ("mon 09:00-25:00", "is not a time"),
        (" ; ", "empty"),
    ],
)
def test_parse_weekly_says_what_is_wrong(spec: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_weekly(spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weekly": parse_weekly("mon 09:00-12:00 11:00-18:00")}, "overlaps"),
        ({"weekly": {0: ((time(18), time(9)),)}}, "ends before it starts"),
        ({"weekly": {7: ((time(9), time(18)),)}}, "weekday 7"),
        ({"weekly": OFFICE, "timezone": "Asia/Tokio"}, "unknown timezone"),
        ({"weekly": OFFICE, "holiday_region": "XX"}, "no public holidays"),
        ({"weekly": OFFICE, "closed_dates": frozenset({datetime(2027, 1, 1)})}, "not a date"),
        (
            {"weekly": OFFICE, "special_hours": {date(2027, 1, 1): ((9, 12),)}},
            "is not a \\(time, time\\) pair",
        ),
    ],
)
def test_calendar_rejects_inconsistent_definitions(kwargs: dict, message: str):
    kwargs = {"timezone": "Asia/Tokyo", **kwargs}
    with pytest.raises(ValueError, match=message):
        BusinessCalendar(**kwargs)


def test_calendar_keeps_its_own_sorted_copy_of_the_hours():
    weekly = {0: ((time(13), time(18)), (time(9), time(12)))}
    calendar = BusinessCalendar(timezone="Asia/Tokyo", weekly=weekly)
    weekly[1] = ((time(9), time(18)),)
    assert calendar.weekly == {0: ((time(9), time(12)), (time(13), time(18)))}


def test_calendar_round_trips_through_json():
    calendar = BusinessCalendar(
        timezone="Europe/Berlin",
        weekly=parse_weekly("mon-fri 08:30-12:00 12:45-17:15; sat 10:00-24:00"),
        holiday_region="DE-BY",
        closed_dates=frozenset({date(2027, 12, 24), date(2027, 12, 31)}),
        special_hours={date(2027, 12, 23): ((time(8, 30), time(12)),), date(2027, 12, 27): ()},
    )
    stored = json.loads(json.dumps(calendar.as_dict()))
    assert stored["weekly"]["5"] == [["10:00", "24:00"]]
    assert BusinessCalendar.from_dict(stored) == calendar


# -- Tokyo: lunch breaks and Japanese holidays ------------------------------------------------


def test_a_tokyo_day_is_two_utc_intervals_around_lunch():
    assert JAPAN.intervals_on(date(2027, 1, 18)) == [
        (datetime(2027, 1, 18, 0, tzinfo=UTC), datetime(2027, 1, 18, 3, tzinfo=UTC)),
        (datetime(2027, 1, 18, 4, tzinfo=UTC), datetime(2027, 1, 18, 9, tzinfo=UTC)),
    ]
    assert JAPAN.intervals_on(date(2027, 1, 16)) == []  # Saturday


def test_lunch_break_is_skipped():
    assert JAPAN.add(tokyo(2027, 1, 18, 11), 120) == tokyo(2027, 1, 18, 14)
    assert JAPAN.between(tokyo(2027, 1, 18, 11), tokyo(2027, 1, 18, 14)) == 120
    assert JAPAN.add(tokyo(2027, 1, 18, 12, 30), 1) == tokyo(2027, 1, 18, 13, 1)


def test_golden_week_2027_is_closed():
    for day in (date(2027, 4, 29), date(2027, 5, 3), date(2027, 5, 4), date(2027, 5, 5)):
        assert JAPAN.is_holiday(day)
        assert JAPAN.intervals_on(day) == []
    assert JAPAN.intervals_on(date(2027, 4, 30))  # the Friday in between works


def test_240_business_minutes_from_friday_16_00_before_golden_week_land_on_thursday_morning():
    friday = tokyo(2027, 4, 30, 16)
    # 2 h on Friday, then Saturday, Sunday and the holidays of May 3-5; 2 h on Thursday.
    assert JAPAN.add(friday, 240) == tokyo(2027, 5, 6, 11)
    assert JAPAN.between(friday, tokyo(2027, 5, 6, 11)) == 240


def test_work_that_runs_out_at_lunch_is_due_at_noon_not_after_lunch():
    friday = tokyo(2027, 4, 30, 16)
    assert JAPAN.add(friday, 300) == tokyo(2027, 5, 6, 12)
    assert JAPAN.add(friday, 301) == tokyo(2027, 5, 6, 13, 1)


def test_showa_day_is_skipped_midweek():
    assert JAPAN.add(tokyo(2027, 4, 28, 16), 240) == tokyo(2027, 4, 30, 11)


def test_substitute_holiday_is_closed():
    # Vernal Equinox Day 2027 falls on Sunday 21 March, so Monday 22 March is off.
    assert JAPAN.is_holiday(date(2027, 3, 22))
    assert JAPAN.add(tokyo(2027, 3, 19, 17), 120) == tokyo(2027, 3, 23, 10)


def test_new_year_holidays_with_the_company_closing_days():
    closed = frozenset(date(2027, 12, 31) + timedelta(days=n) for n in range(4))  # to Jan 3
    calendar = BusinessCalendar(timezone="Asia/Tokyo", weekly=OFFICE, closed_dates=closed)
    assert JAPAN.is_holiday(date(2028, 1, 1))
    assert JAPAN.intervals_on(date(2027, 12, 31)) and not calendar.intervals_on(date(2027, 12, 31))
    assert not calendar.intervals_on(date(2028, 1, 3))  # a Monday, closed by the company
    assert calendar.add(tokyo(2027, 12, 30, 17), 120) == tokyo(2028, 1, 4, 10)
    assert calendar.between(tokyo(2027, 12, 30, 17), tokyo(2028, 1, 4, 10)) == 120


def test_special_hours_make_partial_days_and_override_holidays_and_closures():
    calendar = BusinessCalendar(
        timezone="Asia/Tokyo",
        weekly=OFFICE,
        closed_dates=frozenset({date(2027, 12, 28)}),
        special_hours={
            date(2027, 12, 27): ((time(9), time(12)),),  # half day
            date(2027, 12, 28): ((time(10), time(11)),),  # closed, but one hour of duty
            date(2027, 5, 3): ((time(10), time(15)),),  # open on Constitution Day
            date(2027, 12, 29): (),  # closed on a Wednesday
        },
    )
    assert calendar.add(tokyo(2027, 12, 27, 11), 90) == tokyo(2027, 12, 28, 10, 30)
    assert calendar.add(tokyo(2027, 12, 28, 10, 30), 60) == tokyo(2027, 12, 30, 9, 30)
    assert calendar.add(tokyo(2027, 4, 30, 17), 120) == tokyo(2027, 5, 3, 11)


def test_a_clock_started_at_night_starts_at_the_next_opening():
    assert JAPAN.add(tokyo(2027, 1, 18, 3), 0) == tokyo(2027, 1, 18, 9)
    assert JAPAN.add(tokyo(2027, 1, 18, 3), 30) == tokyo(2027, 1, 18, 9, 30)
    assert JAPAN.add(tokyo(2027, 1, 22, 18), 0) == tokyo(2027, 1, 25, 9)  # Friday closing
    assert JAPAN.add(tokyo(2027, 1, 18, 10), 0) == tokyo(2027, 1, 18, 10)  # open: itself


def test_is_open_and_next_open():
    assert not JAPAN.is_open(tokyo(2027, 1, 18, 8, 59))
    assert JAPAN.is_open(tokyo(2027, 1, 18, 9))
    assert not JAPAN.is_open(tokyo(2027, 1, 18, 12))
    assert JAPAN.is_open(tokyo(2027, 1, 18, 17, 59))
    assert not JAPAN.is_open(tokyo(2027, 1, 18, 18))
    assert JAPAN.next_open(tokyo(2027, 1, 18, 12, 15)) == tokyo(2027, 1, 18, 13)
    assert JAPAN.next_open(tokyo(2027, 4, 28, 19)) == tokyo(2027, 4, 30, 9)
    assert JAPAN.next_open(tokyo(2027, 1, 18, 10)) == tokyo(2027, 1, 18, 10)


def test_between_is_signed_and_counts_only_working_time():
    monday, tuesday = tokyo(2027, 1, 18, 17), tokyo(2027, 1, 19, 10)
    assert JAPAN.between(monday, tuesday) == 120
    assert JAPAN.between(tuesday, monday) == -120  # a breached deadline: overdue by 2 h
    assert JAPAN.between(monday, monday) == 0
    assert JAPAN.between(tokyo(2027, 1, 22, 18), tokyo(2027, 1, 25, 9)) == 0  # weekend


def test_large_amounts_skip_days_and_round_trip():
    start = tokyo(2027, 1, 18, 9)
    deadline = JAPAN.add(start, 100_000)
    assert JAPAN.between(start, deadline) == 100_000
    assert JAPAN.is_open(deadline - timedelta(microseconds=1))
    assert deadline - start > timedelta(days=300)  # about 208 working days


def test_naive_datetimes_and_bad_amounts_are_refused():
    with pytest.raises(ValueError, match="aware"):
        JAPAN.add(datetime(2027, 1, 18, 9), 10)
    with pytest.raises(ValueError, match="aware"):
        JAPAN.between(tokyo(2027, 1, 18), datetime(2027, 1, 19))
    with pytest.raises(ValueError, match="aware"):
        JAPAN.is_open(datetime(2027, 1, 18, 9))
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="minutes"):
            JAPAN.add(tokyo(2027, 1, 18, 9), bad)


def test_a_calendar_without_working_time_fails_clearly():
    closed = BusinessCalendar(timezone="Asia/Tokyo", weekly={})
    with pytest.raises(NoWorkingTime, match="no working time"):
        closed.add(tokyo(2027, 1, 18), 10)
    # A single duty day years ahead is still found.
    rare = BusinessCalendar(
        timezone="Asia/Tokyo", weekly={}, special_hours={date(2033, 1, 18): ((time(9), time(10)),)}
    )
    assert rare.add(tokyo(2027, 1, 18), 10) == tokyo(2033, 1, 18, 9, 10)


# -- DST ---------------------------------------------------------------------------------------


def test_new_york_days_last_23_and_25_hours_when_the_clocks_change():
    calendar = BusinessCalendar(timezone="America/New_York", weekly=ALWAYS, holiday_region=None)
    [(start, end)] = calendar.intervals_on(date(2027, 3, 14))
    assert end - start == timedelta(hours=23)
    [(start, end)] = calendar.intervals_on(date(2027, 11, 7))
    assert end - start == timedelta(hours=25)
    saturday = datetime(2027, 11, 6, tzinfo=NEW_YORK)
    assert calendar.between(saturday, saturday + timedelta(days=2)) == (48 + 1) * 60


def test_a_start_in_the_spring_gap_opens_when_the_clock_jumps():
    calendar = BusinessCalendar(
        timezone="America/New_York",
        weekly={6: ((time(2), time(2, 30)), (time(2, 45), time(4)))},
        holiday_region=None,
    )
    # 02:00-02:30 never happens on 14 March 2027; 02:45 becomes 03:00 EDT (07:00 UTC).
    assert calendar.intervals_on(date(2027, 3, 14)) == [
        (datetime(2027, 3, 14, 7, tzinfo=UTC), datetime(2027, 3, 14, 8, tzinfo=UTC))
    ]


def test_an_interval_through_the_repeated_hour_lasts_its_real_time():
    calendar = BusinessCalendar(
        timezone="America/New_York", weekly={6: ((time(1, 30), time(3)),)}, holiday_region=None
    )
    # From the first 01:30 (EDT) to 03:00 (EST): 2 h 30 of real time.
    assert calendar.intervals_on(date(2027, 11, 7)) == [
        (datetime(2027, 11, 7, 5, 30, tzinfo=UTC), datetime(2027, 11, 7, 8, tzinfo=UTC))
    ]
    assert (
        calendar.between(
            datetime(2027, 11, 7, tzinfo=NEW_YORK), datetime(2027, 11, 8, tzinfo=NEW_YORK)
        )
        == 150
    )


def test_office_hours_follow_the_wall_clock_across_the_switch():
    calendar = BusinessCalendar(
        timezone="America/New_York", weekly=parse_weekly("mon-fri 09:00-17:00"), holiday_region="US"
    )
    friday = datetime(2027, 3, 12, 16, tzinfo=NEW_YORK)  # EST, UTC-5
    monday_10 = datetime(2027, 3, 15, 10, tzinfo=NEW_YORK)  # EDT, UTC-4
    assert calendar.add(friday, 120) == monday_10 == datetime(2027, 3, 15, 14, tzinfo=UTC)


def test_berlin_switches():
    calendar = BusinessCalendar(
        timezone="Europe/Berlin",
        weekly={**parse_weekly("mon-fri 09:00-17:00"), 6: ((time(2), time(4)),)},
        holiday_region=None,
    )
    # Sunday 28 March: 02:00 does not exist, so the Sunday duty runs 03:00-04:00 CEST only.
    friday = datetime(2027, 3, 26, 16, tzinfo=BERLIN)
    assert calendar.between(friday, datetime(2027, 3, 29, tzinfo=BERLIN)) == 60 + 60
    assert calendar.add(friday, 120) == datetime(2027, 3, 28, 4, tzinfo=BERLIN)
    # Friday 16:00 CET + 1 h + the Sunday hour + 1 h = Monday 10:00 CEST, i.e. 08:00 UTC.
    assert calendar.add(friday, 180) == datetime(2027, 3, 29, 8, tzinfo=UTC)
    # Autumn, Sunday 31 October: 02:00 CEST (00:00 UTC) to 04:00 CET (03:00 UTC).
    assert calendar.intervals_on(date(2027, 10, 31)) == [
        (datetime(2027, 10, 31, 0, tzinfo=UTC), datetime(2027, 10, 31, 3, tzinfo=UTC))
    ]
    # Friday 16:00 CEST + 1 h + the 3 h Sunday duty + 1 h = Monday 10:00 CET (09:00 UTC).
    friday = datetime(2027, 10, 29, 16, tzinfo=BERLIN)
    assert calendar.add(friday, 300) == datetime(2027, 11, 1, 9, tzinfo=UTC)


def test_tokyo_has_no_switch():
    calendar = BusinessCalendar(timezone="Asia/Tokyo", weekly=ALWAYS, holiday_region=None)
    for day in (date(2027, 3, 14), date(2027, 3, 28), date(2027, 10, 31), date(2027, 11, 7)):
        [(start, end)] = calendar.intervals_on(day)
        assert end - start == timedelta(hours=24)


# -- properties ----------------------------------------------------------------------------------

ZONES = (
    "Asia/Tokyo",
    "America/New_York",
    "Europe/Berlin",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Santiago",  # falls back from 24:00 into the previous day
    "Asia/Kolkata",
    "UTC",
)
SWITCH_DAYS = (
    datetime(2027, 3, 14, tzinfo=UTC),
    datetime(2027, 11, 7, tzinfo=UTC),
    datetime(2027, 3, 28, tzinfo=UTC),
    datetime(2027, 10, 31, tzinfo=UTC),
    datetime(2027, 4, 4, tzinfo=UTC),
    datetime(2027, 10, 3, tzinfo=UTC),
    datetime(2027, 9, 5, tzinfo=UTC),
)


def _quarter(n: int) -> time:
    return time(0) if n == 96 else time(n // 4, n % 4 * 15)


@st.composite
def day_hours(draw: st.DrawFn) -> tuple[tuple[time, time], ...]:
    cuts = sorted(draw(st.sets(st.integers(0, 96), max_size=6)))
    cuts = cuts[: len(cuts) // 2 * 2]
    return tuple((_quarter(a), _quarter(b)) for a, b in zip(cuts[::2], cuts[1::2], strict=True))


def _minutes(intervals: tuple[tuple[time, time], ...]) -> int:
    def minute(t: time, end: bool) -> int:
        return 1440 if end and t == time(0) else t.hour * 60 + t.minute

    return sum(minute(b, True) - minute(a, False) for a, b in intervals)


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    weekly = {day: draw(day_hours()) for day in range(7)}
    # Enough working time per week that 50,000 minutes stay within a couple of years.
    assume(sum(_minutes(hours) for hours in weekly.values()) >= 600)
    dates = st.dates(date(2026, 1, 1), date(2028, 12, 31))
    return BusinessCalendar(
        timezone=draw(st.sampled_from(ZONES)),
        weekly=weekly,
        holiday_region=draw(st.sampled_from((None, "JP", "US", "DE"))),
        closed_dates=frozenset(draw(st.sets(dates, max_size=8))),
        special_hours=draw(st.dictionaries(dates, day_hours(), max_size=5)),
    )


instants = st.one_of(
    st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda day, offset: day + timedelta(minutes=offset),
        st.sampled_from(SWITCH_DAYS),
        st.integers(-24 * 60, 2 * 24 * 60),
    ),
)
amounts = st.one_of(st.integers(0, 50_000), st.floats(0.001, 50_000))
PROPERTY = settings(max_examples=150, deadline=None)


def _in_or_at_end_of_interval(calendar: BusinessCalendar, at: datetime) -> bool:
    day = at.astimezone(ZoneInfo(calendar.timezone)).date()
    return any(
        start < at <= end
        for d in (day - timedelta(days=1), day, day + timedelta(days=1))
        for start, end in calendar.intervals_on(d)
    )


@PROPERTY
@given(calendars(), instants, amounts)
def test_measuring_what_was_added_gives_it_back(calendar, start, minutes):
    deadline = calendar.add(start, minutes)
    assert calendar.between(start, deadline) == pytest.approx(minutes, abs=1e-6)
    assert calendar.between(deadline, start) == pytest.approx(-minutes, abs=1e-6)


@PROPERTY
@given(calendars(), instants, amounts)
def test_a_deadline_is_never_outside_working_time(calendar, start, minutes):
    deadline = calendar.add(start, minutes)
    assert deadline >= start
    if minutes > 0:
        assert _in_or_at_end_of_interval(calendar, deadline)
    else:
        assert calendar.is_open(deadline)


@PROPERTY
@given(calendars(), instants, amounts, amounts)
def test_more_minutes_never_give_an_earlier_deadline(calendar, start, m1, m2):
    m1, m2 = sorted((m1, m2))
    assert calendar.add(start, m1) <= calendar.add(start, m2)


@PROPERTY
@given(calendars(), instants, st.integers(0, 20_000), st.integers(1, 20_000))
def test_adding_in_two_steps_is_adding_the_sum(calendar, start, m1, m2):
    assert calendar.add(calendar.add(start, m1), m2) == calendar.add(start, m1 + m2)


@PROPERTY
@given(calendars(), instants)
def test_is_open_next_open_and_between_agree(calendar, at):
    assert calendar.is_open(at) == (calendar.between(at, at + timedelta(microseconds=1)) > 0)
    opening = calendar.next_open(at)
    assert opening >= at and calendar.is_open(opening)
    assert calendar.between(at, opening) == 0
    assert calendar.is_open(at) == (opening == at)
