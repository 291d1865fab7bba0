"""Opening hours ("mon-fri 09:00-18:00, sat 10:00-14:00"): parsing, the clock in the desk's
timezone, and public holidays (Japan by default)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpdesk.opening_hours import DAYS, OpeningHours

TOKYO = ZoneInfo("Asia/Tokyo")
SPEC = "mon-fri 09:00-18:00, sat 10:00-14:00"
HOURS = OpeningHours.parse(SPEC, timezone="Asia/Tokyo")
# 2027-01-18 is a Monday; nothing in that week is a Japanese public holiday
# (2027-01-11 is Coming of Age Day, the week before).
MONDAY = datetime(2027, 1, 18, tzinfo=TOKYO)


def tokyo(day: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    """An instant in the week of MONDAY: day 0 = Monday … 6 = Sunday."""
    return MONDAY + timedelta(days=day, hours=hh, minutes=mm, seconds=ss)


def test_parse_expands_day_ranges():
    assert HOURS.timezone == "Asia/Tokyo" and HOURS.holiday_region == "JP"
    assert HOURS.intervals == (
        *((d, time(9), time(18)) for d in range(5)),
        (5, time(10), time(14)),
    )


def test_weekday_hours_in_tokyo():
    wednesday = 2
    assert not HOURS.is_open(tokyo(wednesday, 8, 59, 59))
    assert HOURS.is_open(tokyo(wednesday, 9, 0))
    assert HOURS.is_open(tokyo(wednesday, 17, 59, 59))
    assert not HOURS.is_open(tokyo(wednesday, 18, 0))
    assert not HOURS.is_open(tokyo(wednesday, 0, 0))
    assert not HOURS.is_open(tokyo(wednesday, 23, 59))


def test_the_clock_is_the_desks_timezone_whatever_the_instant_says():
    # 00:00 UTC on Monday is 09:00 in Tokyo: open
    assert HOURS.is_open(datetime(2027, 1, 18, 0, 0, tzinfo=UTC))
    # 23:59 UTC on Sunday is 08:59 Monday in Tokyo: closed
    assert not HOURS.is_open(datetime(2027, 1, 17, 23, 59, tzinfo=UTC))
    # 09:00 UTC on Friday is 18:00 in Tokyo: closed, though it is office time in London
    assert not HOURS.is_open(datetime(2027, 1, 22, 9, 0, tzinfo=UTC))
    # 08:30 Saturday in Tokyo is still Friday 23:30 UTC: Saturday's hours apply, so closed
    assert not HOURS.is_open(datetime(2027, 1, 22, 23, 30, tzinfo=UTC))
    # the same instant from New York's point of view gives the same answer
    ny = datetime(2027, 1, 18, 0, 0, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert ny.day == 17 and HOURS.is_open(ny)


def test_saturday_has_its_own_hours_and_sunday_is_closed():
    saturday, sunday = 5, 6
    assert not HOURS.is_open(tokyo(saturday, 9, 59))
    assert HOURS.is_open(tokyo(saturday, 10, 0))
    assert HOURS.is_open(tokyo(saturday, 13, 59))
    assert not HOURS.is_open(tokyo(saturday, 14, 0))
    assert not HOURS.is_open(tokyo(saturday, 16, 0))  # open on weekdays, not on Saturday
    for hh in range(24):
        assert not HOURS.is_open(tokyo(sunday, hh, 30))


@pytest.mark.parametrize(
    "day",
    [
        datetime(2027, 1, 1, 12, tzinfo=TOKYO),  # New Year's Day (a Friday)
        datetime(2027, 4, 29, 12, tzinfo=TOKYO),  # Showa Day (a Thursday)
        datetime(2027, 5, 3, 12, tzinfo=TOKYO),  # Golden Week: Constitution Day (Monday)
        datetime(2027, 5, 4, 12, tzinfo=TOKYO),  # Greenery Day
        datetime(2027, 5, 5, 12, tzinfo=TOKYO),  # Children's Day
        datetime(2027, 3, 22, 12, tzinfo=TOKYO),  # substitute holiday for Sunday's equinox
    ],
)
def test_japanese_public_holidays_are_closed(day):
    assert day.weekday() < 5
    assert not HOURS.is_open(day)
    # the same weekday and time without a holiday calendar is open
    plain = OpeningHours.parse(SPEC, timezone="Asia/Tokyo", holiday_region=None)
    assert plain.is_open(day)


def test_the_holiday_is_the_local_date():
    # 2027-05-02 16:00 UTC is 01:00 on May 3 (Constitution Day) in Tokyo
    around_the_clock = OpeningHours.parse("mon-sun 00:00-24:00", timezone="Asia/Tokyo")
    assert not around_the_clock.is_open(datetime(2027, 5, 2, 16, 0, tzinfo=UTC))
    # and 2027-05-05 15:00 UTC is already May 6, a working Thursday
    assert around_the_clock.is_open(datetime(2027, 5, 5, 15, 0, tzinfo=UTC))


def test_24_00_means_until_midnight():
    hours = OpeningHours.parse("sun 20:00-24:00", timezone="Asia/Tokyo", holiday_region=None)
    assert hours.is_open(tokyo(6, 23, 59, 59))
    assert not hours.is_open(tokyo(6, 19, 59))
    assert not hours.is_open(tokyo(7, 0, 0))  # Monday 00:00


def test_several_intervals_on_one_day_and_free_spacing_and_case():
    hours = OpeningHours.parse(
        "  MON 09:00-12:00 ,mon   13:00-17:30,,  ", timezone="Asia/Tokyo", holiday_region=None
    )
    assert hours.intervals == ((0, time(9), time(12)), (0, time(13), time(17, 30)))
    assert hours.is_open(tokyo(0, 11, 59))
    assert not hours.is_open(tokyo(0, 12, 30))  # lunch
    assert hours.is_open(tokyo(0, 13, 0))
    assert not hours.is_open(tokyo(0, 17, 30))
    assert not hours.is_open(tokyo(1, 10, 0))  # Tuesday is not listed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mon-xyz 09:00-18:00", "'mon-xyz 09:00-18:00': write e.g. 'mon-fri 09:00-18:00'"),
        ("monday 09:00-18:00", "'monday 09:00-18:00': write e.g."),
        ("mon-fri 9-18", "'mon-fri 9-18': write e.g."),
        ("mon-fri 09:00-18:00, sat", "'sat': write e.g."),
        ("mon-fri 09:00-25:00", "'mon-fri 09:00-25:00': 25:00 is not a time"),
        ("mon 25:00-26:00", "25:00 is not a time"),
        ("mon 09:60-10:00", "09:60 is not a time"),
        ("mon 09:00-24:30", "24:30 is not a time"),
        ("mon-fri 18:00-09:00", "'mon-fri 18:00-09:00': the end must follow the start"),
        ("mon 09:00-09:00", "the end must follow the start"),
        ("sat-mon 09:00-18:00", "'sat-mon 09:00-18:00': days go from monday to sunday"),
        ("", "opening hours are empty"),
        (" , ,", "opening hours are empty"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError) as err:
        OpeningHours.parse(spec, timezone="Asia/Tokyo")
    assert message in str(err.value)


def test_a_bad_timezone_or_holiday_region_fails_at_parse_time_with_a_value_error():
    with pytest.raises(ValueError, match="unknown timezone 'Asia/Nowhere'"):
        OpeningHours.parse(SPEC, timezone="Asia/Nowhere")
    with pytest.raises(ValueError, match="unknown timezone ''"):
        OpeningHours.parse(SPEC, timezone="")
    with pytest.raises(ValueError, match="no public holidays known for region 'XX'"):
        OpeningHours.parse(SPEC, timezone="Asia/Tokyo", holiday_region="XX")


# -- properties -----------------------------------------------------------------------------

WEEKDAYS_ONLY = OpeningHours.parse("mon-fri 00:00-24:00", timezone="Asia/Tokyo")
NO_HOLIDAYS = OpeningHours.parse("mon-fri 00:00-24:00", timezone="Asia/Tokyo", holiday_region=None)
FIRST_SUNDAY = datetime(2024, 1, 7, tzinfo=TOKYO)  # a Sunday


@given(
    weeks=st.integers(min_value=0, max_value=52 * 10),
    second=st.integers(min_value=0, max_value=24 * 3600 - 1),
    micro=st.integers(min_value=0, max_value=999_999),
    viewer=st.sampled_from(["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati"]),
)
def test_a_weekday_only_spec_is_closed_at_every_instant_of_a_sunday(weeks, second, micro, viewer):
    local = FIRST_SUNDAY + timedelta(weeks=weeks, seconds=second, microseconds=micro)
    assert local.weekday() == 6
    # the same instant, seen from anywhere
    assert not WEEKDAYS_ONLY.is_open(local.astimezone(ZoneInfo(viewer)))
    # while the Monday after, at the same clock time, is open (holidays aside)
    assert NO_HOLIDAYS.is_open(local + timedelta(days=1))


@st.composite
def specs(draw: st.DrawFn) -> tuple[list[tuple[int, int, time, time]], str]:
    """Random valid parts, and the spec text written with random spacing and case."""
    parts = []
    texts = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        first = draw(st.integers(min_value=0, max_value=6))
        last = draw(st.integers(min_value=first, max_value=6))
        start = draw(st.integers(min_value=0, max_value=24 * 60 - 1))
        end = draw(st.integers(min_value=start + 1, max_value=24 * 60))
        start_t = time(start // 60, start % 60)
        end_t = time.max if end == 24 * 60 else time(end // 60, end % 60)
        parts.append((first, last, start_t, end_t))
        days = (
            DAYS[first] if first == last and draw(st.booleans()) else f"{DAYS[first]}-{DAYS[last]}"
        )
        if draw(st.booleans()):
            days = days.upper()
        hours = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
        space = " " * draw(st.integers(min_value=1, max_value=3))
        texts.append(f"{' ' * draw(st.integers(0, 2))}{days}{space}{hours}")
    return parts, ",".join(texts)


@given(specs())
def test_parsing_is_stable(case):
    parts, spec = case
    hours = OpeningHours.parse(spec, timezone="Asia/Tokyo")
    expected = tuple(
        (day, start, end) for first, last, start, end in parts for day in range(first, last + 1)
    )
    assert hours.intervals == expected
    # the same spec parses to the same value, and so does its tidied form
    assert OpeningHours.parse(spec, timezone="Asia/Tokyo") == hours
    tidy = ", ".join(" ".join(p.lower().split()) for p in spec.split(","))
    assert OpeningHours.parse(tidy, timezone="Asia/Tokyo") == hours
