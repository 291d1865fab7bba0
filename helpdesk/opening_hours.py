"""Opening hours for a channel ("mon-fri 09:00-18:00, sat 10:00-14:00"), holidays closed.

Chat goes offline outside them. The SLA engine's business calendars (issue 8) are richer
(partial days, custom dates); this is the one-line form an admin writes in the
environment, in the desk's timezone, closed on the region's public holidays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

import holidays

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PART = re.compile(
    r"^(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})$"
)


@dataclass(frozen=True)
class OpeningHours:
    intervals: tuple[tuple[int, time, time], ...]  # (weekday, start, end)
    timezone: str
    holiday_region: str | None

    @classmethod
    def parse(cls, spec: str, *, timezone: str, holiday_region: str | None = "JP") -> OpeningHours:
        """Parse `mon-fri 09:00-18:00, sat 10:00-14:00`; a ValueError says what is wrong."""
        intervals: list[tuple[int, time, time]] = []
        for raw in spec.split(","):
            part = " ".join(raw.lower().split())
            if not part:
                continue
            match = _PART.match(part)
            if not match or match["d1"] not in DAYS or (match["d2"] and match["d2"] not in DAYS):
                raise ValueError(f"opening hours {raw.strip()!r}: write e.g. 'mon-fri 09:00-18:00'")
            first = DAYS.index(match["d1"])
            last = DAYS.index(match["d2"]) if match["d2"] else first
            if last < first:
                raise ValueError(f"opening hours {raw.strip()!r}: days go from monday to sunday")
            start = _time(match["h1"], match["m1"], raw)
            end = _time(match["h2"], match["m2"], raw)
            if end <= start:
                raise ValueError(f"opening hours {raw.strip()!r}: the end must follow the start")
            intervals.extend((day, start, end) for day in range(first, last + 1))
        if not intervals:
            raise ValueError("opening hours are empty")
        try:
            ZoneInfo(timezone)  # fail early on a bad zone name
        except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"opening hours: unknown timezone {timezone!r}") from exc
        if holiday_region:
            try:  # fail early too, not at every `is_open`
                holidays.country_holidays(holiday_region)
            except NotImplementedError as exc:
                raise ValueError(
                    f"opening hours: no public holidays known for region {holiday_region!r}"
                ) from exc
        return cls(tuple(intervals), timezone, holiday_region)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.timezone))
        if self.holiday_region and local.date() in holidays.country_holidays(
            self.holiday_region, years=local.year
        ):
            return False
        now = local.time()
        return any(
            day == local.weekday() and start <= now < end for day, start, end in self.intervals
        )


def _time(hours: str, minutes: str, raw: str) -> time:
    h, m = int(hours), int(minutes)
    if h == 24 and m == 0:
        return time.max
    if h > 23 or m > 59:
        raise ValueError(f"opening hours {raw.strip()!r}: {hours}:{minutes} is not a time")
    return time(h, m)
