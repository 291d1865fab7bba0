"""The supervisor's wall board and the metrics API.

- `GET /board`: the board page; with `HX-Request` only its live region (`board/_board.html`),
  which the page re-fetches when an event says something changed and every 15 seconds.
- `GET /api/sla/board`: the same snapshot as JSON.
- `GET /api/metrics/service-level?from=&to=&team=`: service figures of a period.

`team` is a team id or `all`; a supervisor's board shows their own team unless asked
otherwise. Times are read and shown in the viewer's timezone. Figures: docs/METRICS.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from helpdesk import metrics, visibility
from helpdesk.config import Settings
from helpdesk.errors import Forbidden, InvalidInput
from helpdesk.i18n import Viewer
from helpdesk.web.render import is_htmx, render, viewer_for
from helpdesk.web.security import requires

BOARD_ROLES = ("supervisor", "admin")
REFRESH_SECONDS = 15
AGENT_LIMIT = 24  # agent cards that fit the wall; the rest are counted
CHART_WIDTH, CHART_HEIGHT = 480, 120


def targets_of(settings: Settings) -> metrics.ServiceTargets:
    return metrics.ServiceTargets(
        threshold_seconds=settings.sl_threshold_seconds,
        target_percent=settings.sl_target_percent,
        short_abandon_seconds=settings.short_abandon_seconds,
    )


def _team_param(request: Request) -> int | str | None:
    """`team` as given: None (absent), "all", or a team id (not yet known to exist)."""
    raw = request.query_params.get("team", "").strip()
    if not raw:
        return None
    if raw == "all":
        return "all"
    if raw.isdigit() and len(raw) < 10:
        return int(raw)
    raise InvalidInput(f"team must be a team id or 'all', not {raw!r}", field="team")


def _check_team(team_id: int, teams: list[tuple[int, str]]) -> None:
    if team_id not in {tid for tid, _ in teams}:
        raise InvalidInput(f"there is no team {team_id}", field="team")


def _limited_to(request: Request, wanted: int | str | None) -> int | None:
    """The one team a supervisor of a team may watch (helpdesk/visibility.py); asking for
    another team, or for all of them, is refused by name rather than quietly narrowed."""
    team = visibility.limited_team(request.state.user)
    if team is not None and wanted not in (None, team):
        raise Forbidden(f"you may watch your own team (team {team}) only")
    return team


def _board_scope(request: Request, teams: list[tuple[int, str]]) -> list[int] | None:
    """The teams the board shows: the `team` asked for, else a supervisor's own team, else
    every team (None)."""
    wanted = _team_param(request)
    limited = _limited_to(request, wanted)
    if limited is not None:
        return [limited]
    if wanted == "all":
        return None
    if isinstance(wanted, int):
        _check_team(wanted, teams)
        return [wanted]
    return None


# -- the board -------------------------------------------------------------------------------


@requires(*BOARD_ROLES)
async def board_page(request: Request) -> Response:
    """The wall board, or (htmx) just its live region."""
    viewer = viewer_for(request)
    async with request.app.state.db.unit_of_work() as session:
        teams = await metrics.list_teams(session)
    scope = _board_scope(request, teams)
    limited = visibility.limited_team(request.state.user)
    if limited is not None:  # no links to boards they may not open
        teams = [(tid, name) for tid, name in teams if tid == limited]
    snapshot = await metrics.board_snapshot_on(
        request.app.state.db,
        now=datetime.now(UTC),
        tz=viewer.tz,
        team_ids=scope,
        targets=targets_of(request.app.state.settings),
    )
    selected = "all" if scope is None else str(scope[0])
    context = {
        "snapshot": snapshot,
        "teams": teams,
        "limited": limited is not None,
        "selected": selected,
        "board_url": "/board?" + urlencode({"team": selected}),
        "refresh_seconds": REFRESH_SECONDS,
        "age": lambda since: format_age(metrics.seconds_since(since, snapshot.now), viewer),
        "seconds": lambda value: format_seconds(value, viewer),
        "deadline": lambda at: format_deadline(at, snapshot.now, viewer),
        "pct": format_percent,
        "fit": fit_class,
        "agent_limit": AGENT_LIMIT,
        "charts": service_charts(snapshot.today),
    }
    template = "board/_board.html" if is_htmx(request) else "board/page.html"
    return render(request, template, context)


@requires(*BOARD_ROLES)
async def board_json(request: Request) -> JSONResponse:
    viewer = viewer_for(request)
    async with request.app.state.db.unit_of_work() as session:
        teams = await metrics.list_teams(session)
    snapshot = await metrics.board_snapshot_on(
        request.app.state.db,
        now=datetime.now(UTC),
        tz=viewer.tz,
        team_ids=_board_scope(request, teams),
        targets=targets_of(request.app.state.settings),
    )
    return JSONResponse(snapshot.as_dict())


def format_age(seconds: int | None, viewer: Viewer) -> str:
    """A wait as a wall screen shows it, compact and the same in every language: 0:42,
    12:05, 3:07:45; past a day "2 d 04 h" (translated)."""
    if seconds is None:
        return "–"
    hours, rest = divmod(seconds, 3600)
    if hours < 1:
        return f"{rest // 60}:{rest % 60:02d}"
    if hours < 24:
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return viewer.gettext("%(days)d d %(hours)02d h", days=hours // 24, hours=hours % 24)


def format_seconds(value: float | None, viewer: Viewer) -> str:
    """ASA and AHT: 18 s under a minute, else 4:05."""
    if value is None:
        return "–"
    whole = round(value)
    if whole < 60:
        return viewer.gettext("%(seconds)d s", seconds=whole)
    return f"{whole // 60}:{whole % 60:02d}"


# How wide a tile's text is, in ems of its font: digits and Latin letters about 0.6,
# separators less, Japanese a full em. A tile fits about 2.2 ems of its full-size font.
_NARROW = frozenset(":., -–")
FIT_STEPS = ((2.2, "fit-100"), (2.8, "fit-80"), (3.5, "fit-65"), (4.5, "fit-50"), (5.6, "fit-40"))


def fit_class(value: object) -> str:
    """The css class that shrinks a tile's big number or wait until it fits the tile."""
    text = str(value)
    width = sum(0.3 if ch in _NARROW else 0.6 if ord(ch) < 0x2E80 else 1.0 for ch in text)
    return next((css for limit, css in FIT_STEPS if width <= limit), "fit-30")


def format_percent(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}".removesuffix(".0") + "%"


def format_deadline(at: datetime, now: datetime, viewer: Viewer) -> str:
    """A deadline in the viewer's timezone: the time alone if it is today, else with the date."""
    same_day = at.astimezone(viewer.tz).date() == now.astimezone(viewer.tz).date()
    return viewer.datetime(at, "HH:mm" if same_day else "M/d HH:mm")


# -- charts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    parts: list[tuple[str, float, float, int]]  # (css class, y, height, value), bottom up
    label: str  # the hour, for the tooltip
    tick: str | None  # the hour under the axis, every few bars


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot: int  # the bars' height; the hour ticks go below
    bars: list[Bar]
    peak: int


def bar_chart(
    hours: list[metrics.HourFigures],
    series: list[tuple[str, Callable[[metrics.Figures], int]]],
    *,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
) -> Chart:
    """Stacked bars, one per hour: `series` is (css class, hour figures -> count), stacked
    bottom up. Geometry only; the template draws it as SVG (no chart library, no
    inline styles: colours come from the css classes)."""
    plot = height - 16  # room for the hour ticks
    values = [[int(pick(h.figures)) for _, pick in series] for h in hours]
    peak = max([sum(v) for v in values] + [1])
    slot = width / max(1, len(hours))
    bars = []
    for i, (hour, counts) in enumerate(zip(hours, values, strict=True)):
        y = float(plot)
        parts = []
        for (css, _), count in zip(series, counts, strict=True):
            h = plot * count / peak
            y -= h
            parts.append((css, round(y, 1), round(h, 1), count))
        label = hour.start.strftime("%H:00")
        bars.append(
            Bar(
                round(i * slot + 1, 1),
                round(max(1.0, slot - 2), 1),
                parts,
                label,
                label[:2] if hour.start.hour % 6 == 0 else None,
            )
        )
    return Chart(width, height, plot, bars, peak)


def service_charts(today: metrics.ServiceLevel) -> dict[str, Chart]:
    return {
        "calls": bar_chart(
            today.hours,
            [
                ("in-threshold", lambda f: f.calls.answered_in_threshold),
                ("late", lambda f: f.calls.answered - f.calls.answered_in_threshold),
                ("abandoned", lambda f: f.calls.abandoned),
            ],
        ),
        "responses": bar_chart(
            today.hours,
            [
                ("met", lambda f: f.first_response.met),
                ("breached", lambda f: f.first_response.breached),
            ],
        ),
    }


# -- the metrics API -------------------------------------------------------------------------


def parse_instant(raw: str, tz: ZoneInfo, name: str, *, end_of_day: bool) -> datetime:
    """A `from`/`to` value: a date (a whole local day: its start, or for `to` its end) or an
    ISO 8601 date and time (without an offset it is local time in `tz`)."""
    value = raw.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start, end = metrics.local_day(day, tz)
            return end if end_of_day else start
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a date (2026-12-01) or a date and time "
            f"(2026-12-01T09:00:00+09:00), not {raw!r}",
            field=name,
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def parse_period(params: dict[str, str], tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    """`from` and `to` of the service-level API: both absent is today (in `tz`); `to` absent
    is the end of `from`'s day; `to` alone is refused (a period needs its start)."""
    raw_from, raw_to = params.get("from", ""), params.get("to", "")
    if not raw_from.strip():
        if raw_to.strip():
            raise InvalidInput("from is required when to is given", field="from")
        return metrics.local_day(now.astimezone(tz).date(), tz)
    start = parse_instant(raw_from, tz, "from", end_of_day=False)
    if raw_to.strip():
        end = parse_instant(raw_to, tz, "to", end_of_day=True)
    else:
        end = metrics.local_day(start.astimezone(tz).date(), tz)[1]
    if end <= start:
        raise InvalidInput(
            f"to ({end.isoformat()}) must be after from ({start.isoformat()})", field="to"
        )
    if end - start > metrics.MAX_PERIOD:
        raise InvalidInput(
            f"the period is {_days(end - start)} long; ask for at most "
            f"{metrics.MAX_PERIOD.days} days at a time",
            field="to",
        )
    return start, end


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:.0f} days" if days == int(days) else f"{days:.1f} days"


@requires(*BOARD_ROLES)
async def service_level_api(request: Request) -> JSONResponse:
    viewer = viewer_for(request)
    params = dict(request.query_params)
    start, end = parse_period(params, viewer.tz, datetime.now(UTC))
    wanted = _team_param(request)
    wanted = _limited_to(request, wanted) or wanted
    targets = targets_of(request.app.state.settings)
    async with request.app.state.db.unit_of_work() as session:
        if isinstance(wanted, int):
            _check_team(wanted, await metrics.list_teams(session))
        result = await metrics.service_level(
            session,
            start=start,
            end=end,
            tz=viewer.tz,
            team_id=wanted if isinstance(wanted, int) else None,
            threshold_seconds=targets.threshold_seconds,
            target_percent=targets.target_percent,
            short_abandon_seconds=targets.short_abandon_seconds,
        )
    return JSONResponse(result.as_dict())


routes = [
    Route("/board", board_page, methods=["GET"]),
    Route("/api/sla/board", board_json, methods=["GET"]),
    Route("/api/metrics/service-level", service_level_api, methods=["GET"]),
]
