"""The SLA admin (`/admin/sla`): business calendars, policies in order, and the preview
"what would this case's deadlines be?" (also `GET /api/sla/preview`).

Admins change things; supervisors see the same pages read-only. Endpoints read the form,
call one function of `helpdesk.sla_admin` and render; a form with mistakes comes back with
each message next to its field (422) and nothing saved.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import holidays
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from helpdesk import sla, sla_admin
from helpdesk.errors import InvalidInput
from helpdesk.models import CHANNELS, PRIORITIES, TIERS, Team
from helpdesk.sla_admin import _  # marks the messages below for extraction
from helpdesk.web.forms import path_id
from helpdesk.web.render import is_htmx, iso, render, viewer_for
from helpdesk.web.security import requires, scope

ADMIN = ("admin",)
VIEWERS = ("supervisor", "admin")
NOTICES = ("created", "saved", "moved", "activated", "deactivated")
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


async def _teams(session: AsyncSession) -> list[Team]:
    return list(await session.scalars(select(Team).order_by(Team.name)))


def _notice(request: Request) -> str | None:
    notice = request.query_params.get("notice")
    return notice if notice in NOTICES else None


def _can_edit(request: Request) -> bool:
    return request.state.user.role in ADMIN


# -- the overview ----------------------------------------------------------------------------


@requires(*VIEWERS)
async def overview(request: Request) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        calendars = await sla_admin.list_calendars(session)
        policies = await sla_admin.list_policies(session)
        teams = await _teams(session)
    return render(
        request,
        "admin/sla/index.html",
        {
            "calendars": calendars,
            "weekly": {c.id: sla_admin.calendar_form_of(c).weekly for c in calendars},
            "policies": policies,
            "team_names": sla_admin.team_names(teams),
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
    )


# -- calendars -------------------------------------------------------------------------------


def _calendar_form(form: FormData) -> sla_admin.CalendarForm:
    return sla_admin.CalendarForm(
        **{
            key: str(form.get(key) or "")
            for key in (
                "name",
                "timezone",
                "weekly",
                "holiday_region",
                "closed_dates",
                "special_hours",
            )
        }
    )


async def _calendar_page(
    request: Request,
    values: sla_admin.CalendarForm,
    *,
    calendar_id: int | None = None,
    errors: dict[str, sla_admin.FieldError] | None = None,
) -> Response:
    viewer = viewer_for(request)
    users, upcoming = [], []
    async with request.app.state.db.unit_of_work() as session:
        record = None
        if calendar_id is not None:
            record = await sla_admin.get_calendar(session, calendar_id)
            users = [
                p for p in await sla_admin.list_policies(session) if p.calendar_id == record.id
            ]
            upcoming = sla_admin.days_off(
                sla.calendar_of(record),
                datetime.now(ZoneInfo(record.timezone)).date(),
                language=viewer.lang,
            )
    return render(
        request,
        "admin/sla/calendar.html",
        {
            "record": record,
            "values": values,
            "errors": errors or {},
            "used_by": users,
            "days_off": upcoming,
            "timezones": sorted(available_timezones()),
            "regions": sorted(holidays.list_supported_countries()),
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
        status=422 if errors else 200,
    )


@requires(*ADMIN)
async def calendar_new(request: Request) -> Response:
    settings = request.app.state.settings
    return await _calendar_page(request, sla_admin.CalendarForm(timezone=settings.timezone))


@requires(*ADMIN)
async def calendar_create(request: Request) -> Response:
    values = _calendar_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            record = await sla_admin.save_calendar(
                session, values, actor_user_id=request.state.user.id
            )
    except sla_admin.InvalidFields as exc:
        return await _calendar_page(request, values, errors=exc.errors)
    return RedirectResponse(f"/admin/sla/calendars/{record.id}?notice=created", status_code=303)


@requires(*VIEWERS)
async def calendar_edit(request: Request) -> Response:
    calendar_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        values = sla_admin.calendar_form_of(await sla_admin.get_calendar(session, calendar_id))
    return await _calendar_page(request, values, calendar_id=calendar_id)


@requires(*ADMIN)
async def calendar_save(request: Request) -> Response:
    calendar_id = path_id(request)
    values = _calendar_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            await sla_admin.save_calendar(
                session, values, calendar_id=calendar_id, actor_user_id=request.state.user.id
            )
    except sla_admin.InvalidFields as exc:
        return await _calendar_page(request, values, calendar_id=calendar_id, errors=exc.errors)
    return RedirectResponse(f"/admin/sla/calendars/{calendar_id}?notice=saved", status_code=303)


# -- policies --------------------------------------------------------------------------------


def _policy_form(form: FormData) -> sla_admin.PolicyForm:
    def text(key: str) -> str:
        return str(form.get(key) or "")

    return sla_admin.PolicyForm(
        name=text("name"),
        calendar_id=text("calendar_id"),
        priority=[str(v) for v in form.getlist("priority")],
        channel=[str(v) for v in form.getlist("channel")],
        tier=[str(v) for v in form.getlist("tier")],
        team_id=[str(v) for v in form.getlist("team_id")],
        first_response_minutes=text("first_response_minutes"),
        next_response_minutes=text("next_response_minutes"),
        resolution_minutes=text("resolution_minutes"),
        warning_percent=text("warning_percent"),
        breach_raise_priority=bool(form.get("breach_raise_priority")),
        breach_reassign_team_id=text("breach_reassign_team_id"),
        active=bool(form.get("active")),
    )


async def _policy_page(
    request: Request,
    values: sla_admin.PolicyForm,
    *,
    policy_id: int | None = None,
    errors: dict[str, sla_admin.FieldError] | None = None,
) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        policy = await sla_admin.get_policy(session, policy_id) if policy_id is not None else None
        calendars = await sla_admin.list_calendars(session)
        teams = await _teams(session)
    return render(
        request,
        "admin/sla/policy.html",
        {
            "policy": policy,
            "values": values,
            "errors": errors or {},
            "calendars": calendars,
            "teams": teams,
            "priorities": PRIORITIES,
            "channels": CHANNELS,
            "tiers": TIERS,
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
        status=422 if errors else 200,
    )


@requires(*ADMIN)
async def policy_new(request: Request) -> Response:
    values = sla_admin.PolicyForm()
    async with request.app.state.db.unit_of_work() as session:
        calendars = await sla_admin.list_calendars(session)
    if len(calendars) == 1:
        values.calendar_id = str(calendars[0].id)
    return await _policy_page(request, values)


@requires(*ADMIN)
async def policy_create(request: Request) -> Response:
    values = _policy_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            policy = await sla_admin.save_policy(
                session, values, actor_user_id=request.state.user.id
            )
    except sla_admin.InvalidFields as exc:
        return await _policy_page(request, values, errors=exc.errors)
    return RedirectResponse(f"/admin/sla/policies/{policy.id}?notice=created", status_code=303)


@requires(*VIEWERS)
async def policy_edit(request: Request) -> Response:
    policy_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        values = sla_admin.policy_form_of(await sla_admin.get_policy(session, policy_id))
    return await _policy_page(request, values, policy_id=policy_id)


@requires(*ADMIN)
async def policy_save(request: Request) -> Response:
    policy_id = path_id(request)
    values = _policy_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            await sla_admin.save_policy(
                session, values, policy_id=policy_id, actor_user_id=request.state.user.id
            )
    except sla_admin.InvalidFields as exc:
        return await _policy_page(request, values, policy_id=policy_id, errors=exc.errors)
    return RedirectResponse(f"/admin/sla/policies/{policy_id}?notice=saved", status_code=303)


@requires(*ADMIN)
async def policy_move(request: Request) -> Response:
    policy_id = path_id(request)
    direction = str((await request.form()).get("direction") or "")
    if direction not in ("up", "down"):
        raise InvalidInput("direction must be up or down", field="direction")
    async with request.app.state.db.unit_of_work() as session:
        await sla_admin.move_policy(
            session,
            policy_id,
            -1 if direction == "up" else 1,
            actor_user_id=request.state.user.id,
        )
    return RedirectResponse(f"/admin/sla?notice=moved#policy-{policy_id}", status_code=303)


@requires(*ADMIN)
async def policy_active(request: Request) -> Response:
    policy_id = path_id(request)
    active = str((await request.form()).get("active") or "") == "true"
    async with request.app.state.db.unit_of_work() as session:
        await sla_admin.set_policy_active(
            session, policy_id, active, actor_user_id=request.state.user.id
        )
    notice = "activated" if active else "deactivated"
    return RedirectResponse(f"/admin/sla?notice={notice}#policy-{policy_id}", status_code=303)


# -- preview ---------------------------------------------------------------------------------


def _preview_request(
    request: Request, zone: ZoneInfo
) -> tuple[dict[str, str], sla_admin.CaseFacts | None, int | None]:
    """The preview's form values as given, and what they ask for: the facts of a case, or an
    existing case's number. Raises InvalidFields for what cannot be read."""
    params = request.query_params
    values = {
        "case": params.get("case", "").strip().lstrip("#"),
        "priority": params.get("priority") or "normal",
        "channel": params.get("channel") or "email",
        "tier": params.get("tier") or "standard",
        "team_id": params.get("team_id", ""),
        "created_at": params.get("created_at", "").strip(),
    }
    errors: dict[str, sla_admin.FieldError] = {}
    if values["case"]:
        if not values["case"].isdigit():
            errors["case"] = sla_admin.FieldError(_("Enter a case number, such as 1001."))
            raise sla_admin.InvalidFields(errors)
        return values, None, int(values["case"])
    created_at = datetime.now(UTC)
    if values["created_at"]:
        try:
            created_at = datetime.fromisoformat(values["created_at"])
        except ValueError:
            errors["created_at"] = sla_admin.FieldError(
                _("Enter a date and time like 2027-04-28T17:00.")
            )
        else:
            if created_at.tzinfo is None:  # a form's local time: the viewer's own zone
                created_at = created_at.replace(tzinfo=zone)
    team_id = None
    if values["team_id"]:
        if values["team_id"].isdigit():
            team_id = int(values["team_id"])
        else:
            errors["team_id"] = sla_admin.FieldError(_("Choose a team that exists."))
    if errors:
        raise sla_admin.InvalidFields(errors)
    values["created_at"] = created_at.astimezone(zone).strftime(DATETIME_LOCAL)
    facts = sla_admin.CaseFacts(
        priority=values["priority"],
        channel=values["channel"],
        tier=values["tier"],
        team_id=team_id,
        created_at=created_at,
    )
    return values, facts, None


async def _run_preview(
    request: Request, facts: sla_admin.CaseFacts | None, number: int | None
) -> sla_admin.Preview:
    async with request.app.state.db.unit_of_work() as session:
        if number is not None:
            return await sla_admin.preview_case(session, number, scope=scope(request))
        assert facts is not None
        return await sla_admin.preview(session, facts)


@requires(*VIEWERS)
async def preview_page(request: Request) -> Response:
    """The preview form and its answer; with HX-Request only the answer, as the form changes."""
    zone = viewer_for(request).tz
    result, errors = None, {}
    values = {"priority": "normal", "channel": "email", "tier": "standard", "case": ""}
    values |= {"team_id": "", "created_at": datetime.now(zone).strftime(DATETIME_LOCAL)}
    try:
        values, facts, number = _preview_request(request, zone)
        result = await _run_preview(request, facts, number)
    except sla_admin.InvalidFields as exc:
        errors = exc.errors
        values |= {k: v for k, v in request.query_params.items() if k in values}
    async with request.app.state.db.unit_of_work() as session:
        teams = await _teams(session)
    context: dict[str, Any] = {
        "values": values,
        "errors": errors,
        "result": result,
        "zone": zone,
        "teams": teams,
        "team_names": sla_admin.team_names(teams),
        "priorities": PRIORITIES,
        "channels": CHANNELS,
        "tiers": TIERS,
    }
    status = 422 if errors else 200
    if is_htmx(request):
        return render(request, "admin/sla/_preview.html", context, status=status)
    return render(request, "admin/sla/preview.html", context, status=status)


@requires(*VIEWERS)
async def api_preview(request: Request) -> JSONResponse:
    """`GET /api/sla/preview?priority=&channel=&tier=&team_id=&created_at=` or `?case=NUMBER`:
    the policy chosen and each target's warning and deadline. A `created_at` without an offset
    is in the caller's timezone; none means now."""
    zone = viewer_for(request).tz
    _values, facts, number = _preview_request(request, zone)
    result = await _run_preview(request, facts, number)
    return JSONResponse(preview_json(result))


def preview_json(result: sla_admin.Preview) -> dict[str, Any]:
    policy = result.policy
    return {
        "facts": {
            "priority": result.facts.priority,
            "channel": result.facts.channel,
            "tier": result.facts.tier,
            "team_id": result.facts.team_id,
            "created_at": iso(result.facts.created_at),
        },
        "case": (
            {"id": result.case.id, "number": result.case.number}
            if result.case is not None
            else None
        ),
        "policy": (
            {
                "id": policy.id,
                "name": policy.name,
                "position": policy.position,
                "warning_percent": policy.warning_percent,
                "calendar": {
                    "id": policy.calendar.id,
                    "name": policy.calendar.name,
                    "timezone": policy.calendar.timezone,
                },
                "breach_raise_priority": policy.breach_raise_priority,
                "breach_reassign_team_id": policy.breach_reassign_team_id,
            }
            if policy is not None
            else None
        ),
        "clocks": [
            {
                "kind": c.kind,
                "target_minutes": c.target_minutes,
                "warning_at": iso(c.warning_at),
                "deadline_at": iso(c.deadline_at),
            }
            for c in result.clocks
        ],
        "stored": [
            {
                "kind": c.kind,
                "state": c.state,
                "deadline_at": iso(c.deadline_at),
                "warning_at": iso(c.warning_at),
            }
            for c in result.stored
        ],
    }


routes = [
    Route("/admin/sla", overview, methods=["GET"]),
    Route("/admin/sla/calendars/new", calendar_new, methods=["GET"]),
    Route("/admin/sla/calendars", calendar_create, methods=["POST"]),
    Route("/admin/sla/calendars/{id:int}", calendar_edit, methods=["GET"]),
    Route("/admin/sla/calendars/{id:int}", calendar_save, methods=["POST"]),
    Route("/admin/sla/policies/new", policy_new, methods=["GET"]),
    Route("/admin/sla/policies", policy_create, methods=["POST"]),
    Route("/admin/sla/policies/{id:int}", policy_edit, methods=["GET"]),
    Route("/admin/sla/policies/{id:int}", policy_save, methods=["POST"]),
    Route("/admin/sla/policies/{id:int}/move", policy_move, methods=["POST"]),
    Route("/admin/sla/policies/{id:int}/active", policy_active, methods=["POST"]),
    Route("/admin/sla/preview", preview_page, methods=["GET"]),
    Route("/api/sla/preview", api_preview, methods=["GET"]),
]
