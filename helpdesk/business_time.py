"""Business calendars and business-time arithmetic: the clock SLA deadlines run on.

A calendar says when a desk works, in the desk's IANA timezone: several intervals per weekday
(a lunch break is the gap between two), national holidays from the `holidays` package
(Japan by default), custom closed dates, and special hours that replace a day's hours
(a half day before New Year, a Saturday opening, even on a holiday).

All arithmetic happens on aware UTC instants: each local working interval is turned into the
UTC span it really covers, so a night, a weekend, a holiday or a DST switch simply contributes
the working time it contains. Amounts are counted in whole microseconds internally, so adding
then measuring gives back exactly what was added (to the microsecond).

DST, once for all functions here: a local wall time is resolved to the *first* instant the
clock shows it (fold=0 when it is shown twice in the autumn); a wall time the clock skips in
the spring resolves to the first instant after the gap. That resolution never goes backwards
as wall time goes forwards, so the intervals of one day and of consecutive days never
overlap, and every interval lasts the real time that elapses between its start and its end
(a 00:00-24:00 day lasts 23 h or 25 h on switch days).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import holidays

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
# How far `add` and `next_open` look for working time before giving up: a calendar that is
# closed for ten years in a row has no working time worth waiting for.
SEARCH_HORIZON = timedelta(days=3653)

_US_PER_MINUTE = 60_000_000
_ONE_DAY = timedelta(days=1)
_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")

Interval = tuple[time, time]


class NoWorkingTime(ValueError):
    """The calendar has no working time within SEARCH_HORIZON of the instant asked about."""


@dataclass(frozen=True)
class BusinessCalendar:
    """When a desk works. Plain fields, so it maps onto a table row (see `as_dict`).

    `weekly` maps a weekday (0 = Monday) to its sorted, non-overlapping local intervals; an
    end of `time(0)` (or `time.max`) means 24:00, the midnight that ends the day. A date in
    `special_hours` uses those hours instead of anything else (weekly hours, a holiday, a
    closed date); otherwise a date in `closed_dates` or a public holiday of `holiday_region`
    (a country code such as "JP", or "DE-BY" for a subdivision) is closed.
    """

    timezone: str
    weekly: dict[int, tuple[Interval, ...]]
    holiday_region: str | None = "JP"
    closed_dates: frozenset[date] = frozenset()
    special_hours: dict[date, tuple[Interval, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError, TypeError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"business calendar: unknown timezone {self.timezone!r}") from exc
        # Normalized copies: the calendar must not change under an SLA clock if the caller
        # later mutates the dict it passed in.
        weekly: dict[int, tuple[Interval, ...]] = {}
        for weekday, intervals in self.weekly.items():
            if not isinstance(weekday, int) or isinstance(weekday, bool) or not 0 <= weekday <= 6:
                raise ValueError(
                    f"business calendar: weekday {weekday!r} must be 0 (Monday) to 6 (Sunday)"
                )
            weekly[weekday] = _checked_intervals(intervals, DAYS[weekday])
        object.__setattr__(self, "weekly", weekly)
        special: dict[date, tuple[Interval, ...]] = {}
        for day, intervals in self.special_hours.items():
            special[_checked_date(day, "special hours")] = _checked_intervals(intervals, str(day))
        object.__setattr__(self, "special_hours", special)
        closed = frozenset(_checked_date(day, "closed dates") for day in self.closed_dates)
        object.__setattr__(self, "closed_dates", closed)
        if self.holiday_region is not None:
            try:  # fail now, not at the first deadline computed months later
                _holidays(self.holiday_region, 2000)
            except (NotImplementedError, KeyError, ValueError) as exc:
                raise ValueError(
                    f"business calendar: no public holidays known for region "
                    f"{self.holiday_region!r}"
                ) from exc

    # -- the shape of one day -------------------------------------------------------------

    def hours_on(self, day: date) -> tuple[Interval, ...]:
        """The local intervals that apply to `day`, after special hours and closures."""
        if day in self.special_hours:
            return self.special_hours[day]
        if day in self.closed_dates or self.is_holiday(day):
            return ()
        return self.weekly.get(day.weekday(), ())

    def is_holiday(self, day: date) -> bool:
        """Whether `day` is a public holiday of the calendar's region (custom dates aside)."""
        return self.holiday_region is not None and day in _holidays(self.holiday_region, day.year)

    def intervals_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working intervals of local date `day`, as half-open aware UTC spans.

        Resolved with the module's DST rule; an interval that falls entirely inside a spring
        gap is dropped, and intervals that touch are merged.
        """
        zone = ZoneInfo(self.timezone)
        spans: list[tuple[datetime, datetime]] = []
        for start, end in self.hours_on(day):
            begin = _instant(zone, day, start)
            if _is_midnight_end(end):
                finish = _instant(zone, day + _ONE_DAY, time(0))
            else:
                finish = _instant(zone, day, end)
            if finish <= begin:
                continue
            if spans and spans[-1][1] == begin:
                spans[-1] = (spans[-1][0], finish)
            else:
                spans.append((begin, finish))
        return spans

    # -- instants and amounts --------------------------------------------------------------

    def is_open(self, at: datetime) -> bool:
        """Whether `at` lies inside a working interval (start included, end excluded)."""
        at = _utc(at, "at")
        day = self._local_date(at)
        return any(
            start <= at < end
            for d in (day - _ONE_DAY, day, day + _ONE_DAY)
            for start, end in self.intervals_on(d)
        )

    def next_open(self, at: datetime) -> datetime:
        """The first working instant at or after `at` (`at` itself when open), in UTC."""
        return self.add(at, 0)

    def add(self, start: datetime, minutes: float) -> datetime:
        """The UTC instant at which `minutes` of working time have elapsed since `start`.

        A clock started outside working time starts counting at the next opening, so adding
        0 then gives that opening (and `start` itself when open). An amount that runs out
        exactly at a closing time gives that closing instant, not the next opening: the work
        is due when the desk closes. Raises NoWorkingTime if the calendar is closed for
        SEARCH_HORIZON in a row.
        """
        start = _utc(start, "start")
        remaining = _microseconds(minutes)
        cursor = start
        day = self._local_date(start) - _ONE_DAY  # an interval of the day before may run on
        last_work = start
        while True:
            for begin, end in self.intervals_on(day):
                if end <= cursor:
                    continue
                begin = max(begin, cursor)
                available = _as_microseconds(end - begin)
                if remaining <= available:
                    return begin + timedelta(microseconds=remaining)
                remaining -= available
                cursor = last_work = end
            day += _ONE_DAY
            if datetime.combine(day, time(0), UTC) - last_work > SEARCH_HORIZON + 2 * _ONE_DAY:
                raise NoWorkingTime(
                    f"business calendar ({self.timezone}) has no working time for "
                    f"{SEARCH_HORIZON.days} days after {last_work.isoformat()}"
                )

    def between(self, a: datetime, b: datetime) -> float:
        """Working minutes from `a` to `b`; negative when `b` is before `a`.

        Signed so that "working time left until the deadline" turns negative once a
        deadline is breached, by how much it is overdue.
        """
        a, b = _utc(a, "a"), _utc(b, "b")
        if b < a:
            return -self.between(b, a)
        total = 0
        day, last = self._local_date(a) - _ONE_DAY, self._local_date(b) + _ONE_DAY
        while day <= last:
            for begin, end in self.intervals_on(day):
                if begin < b and end > a:
                    total += _as_microseconds(min(end, b) - max(begin, a))
            day += _ONE_DAY
        return total / _US_PER_MINUTE

    # -- storage ---------------------------------------------------------------------------

    def as_dict(self) -> dict[str, object]:
        """A JSON-able form (ISO dates, "HH:MM[:SS]" times, "24:00" for the end of day)."""
        return {
            "timezone": self.timezone,
            "weekly": {str(k): _intervals_json(v) for k, v in sorted(self.weekly.items())},
            "holiday_region": self.holiday_region,
            "closed_dates": sorted(d.isoformat() for d in self.closed_dates),
            "special_hours": {
                d.isoformat(): _intervals_json(v) for d, v in sorted(self.special_hours.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BusinessCalendar:
        """The inverse of `as_dict`; validates like the constructor."""
        weekly: Mapping[str, list[list[str]]] = data.get("weekly") or {}  # type: ignore[assignment]
        special: Mapping[str, list[list[str]]] = data.get("special_hours") or {}  # type: ignore[assignment]
        closed: list[str] = data.get("closed_dates") or []  # type: ignore[assignment]
        region = data.get("holiday_region")
        return cls(
            timezone=str(data["timezone"]),
            weekly={int(k): _intervals_from_json(v) for k, v in weekly.items()},
            holiday_region=None if region is None else str(region),
            closed_dates=frozenset(date.fromisoformat(d) for d in closed),
            special_hours={
                date.fromisoformat(k): _intervals_from_json(v) for k, v in special.items()
            },
        )

    # -- internals -------------------------------------------------------------------------

    def _local_date(self, at: datetime) -> date:
        return at.astimezone(ZoneInfo(self.timezone)).date()


def parse_weekly(spec: str) -> dict[int, tuple[Interval, ...]]:
    """Parse `mon-fri 09:00-12:00 13:00-18:00; sat 10:00-14:00` into `weekly` hours.

    Groups are separated by ";"; days are a name, a range ("mon-fri") or a list
    ("mon,wed"); "24:00" ends a day. A ValueError says which part is wrong; overlaps are
    caught by the calendar itself.
    """
    weekly: dict[int, list[Interval]] = {}
    for raw in spec.split(";"):
        words = raw.lower().split()
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(f"weekly hours {raw.strip()!r}: write e.g. 'mon-fri 09:00-18:00'")
        days = _parse_days(words[0], raw)
        intervals = [_parse_range(word, raw) for word in words[1:]]
        for day in days:
            weekly.setdefault(day, []).extend(intervals)
    if not weekly:
        raise ValueError("weekly hours are empty")
    return {day: tuple(sorted(intervals)) for day, intervals in sorted(weekly.items())}


# -- helpers ---------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _holidays(region: str, year: int) -> frozenset[date]:
    # `holidays` builds a year's table on first use; a deadline computation touches the same
    # few years again and again, so keep them.
    country, _, subdiv = region.partition("-")
    table = holidays.country_holidays(country, subdiv=subdiv or None, years=year)
    return frozenset(table.keys())


def _instant(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The first UTC instant at which the clock in `zone` shows `day` `wall` or later."""
    local = datetime.combine(day, wall, zone)  # fold=0: the first of two, if shown twice
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # Skipped by a spring-forward gap: fold=0 read it with the offset from before the switch,
    # which lands after the switch; fold=1 with the offset after, which lands before it.
    # The first existing instant after the gap is the switch itself.
    early = local.replace(fold=1).astimezone(UTC)
    low, high = min(early, instant), max(early, instant)
    offset_after = high.astimezone(zone).utcoffset()
    while high - low > timedelta(microseconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return high


def _is_midnight_end(end: time) -> bool:
    return end in (time(0), time.max)


def _minute_of_day(moment: time, *, is_end: bool) -> float:
    if is_end and _is_midnight_end(moment):
        return MINUTES_PER_DAY
    return moment.hour * 60 + moment.minute + (moment.second + moment.microsecond / 1e6) / 60


def _checked_intervals(intervals: Iterable[Interval], where: str) -> tuple[Interval, ...]:
    checked: list[Interval] = []
    for pair in intervals:
        start, end = pair
        if not isinstance(start, time) or not isinstance(end, time):
            raise ValueError(f"business calendar {where}: {pair!r} is not a (time, time) pair")
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"business calendar {where}: times are local, without tzinfo")
        if _minute_of_day(end, is_end=True) <= _minute_of_day(start, is_end=False):
            raise ValueError(
                f"business calendar {where}: {_clock(start)}-{_clock(end, is_end=True)} "
                "ends before it starts"
            )
        checked.append((start, end))
    checked.sort(key=lambda pair: _minute_of_day(pair[0], is_end=False))
    for (s1, e1), (s2, e2) in pairwise(checked):
        if _minute_of_day(e1, is_end=True) > _minute_of_day(s2, is_end=False):
            raise ValueError(
                f"business calendar {where}: {_clock(s1)}-{_clock(e1, is_end=True)} overlaps "
                f"{_clock(s2)}-{_clock(e2, is_end=True)}"
            )
    return tuple(checked)


def _checked_date(day: object, what: str) -> date:
    # A datetime is a date too, but would silently never match a calendar day.
    if not isinstance(day, date) or isinstance(day, datetime):
        raise ValueError(f"business calendar {what}: {day!r} is not a date")
    return day


def _clock(moment: time, *, is_end: bool = False) -> str:
    if is_end and _is_midnight_end(moment):
        return "24:00"
    if moment.microsecond:
        return moment.isoformat()
    return moment.isoformat(timespec="seconds" if moment.second else "minutes")


def _intervals_json(intervals: tuple[Interval, ...]) -> list[list[str]]:
    return [[_clock(start), _clock(end, is_end=True)] for start, end in intervals]


def _intervals_from_json(raw: list[list[str]]) -> tuple[Interval, ...]:
    return tuple(
        (time.fromisoformat(start), time(0) if end == "24:00" else time.fromisoformat(end))
        for start, end in raw
    )


def _parse_days(word: str, raw: str) -> list[int]:
    days: list[int] = []
    for part in word.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"weekly hours {raw.strip()!r}: unknown day in {word!r}")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f"weekly hours {raw.strip()!r}: days go from monday to sunday")
        days.extend(range(a, b + 1))
    return days


def _parse_range(word: str, raw: str) -> Interval:
    match = _RANGE.match(word)
    if not match:
        raise ValueError(f"weekly hours {raw.strip()!r}: {word!r} is not like 09:00-18:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h2, m2) == (24, 0):
        end = time(0)
    elif h2 > 23 or m2 > 59:
        raise ValueError(f"weekly hours {raw.strip()!r}: {h2}:{m2:02} is not a time")
    else:
        end = time(h2, m2)
    if h1 > 23 or m1 > 59:
        raise ValueError(f"weekly hours {raw.strip()!r}: {h1}:{m1:02} is not a time")
    return time(h1, m1), end


def _utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _microseconds(minutes: float) -> int:
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise ValueError(f"minutes must be a number, got {minutes!r}")
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"minutes must be finite and not negative, got {minutes!r}")
    if isinstance(minutes, int):
        return minutes * _US_PER_MINUTE
    return round(minutes * _US_PER_MINUTE)


def _as_microseconds(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
