"""The admin area (`/admin`): agents, teams, the CTI token, mailboxes, canned responses and
the audit log. SLA (`/admin/sla`) and the knowledge base (`/admin/kb`) have their own modules.

Admins change things; supervisors read the lists and settings (never the audit log, which
holds before/after values of every record). Endpoints read the form, call one function of
`helpdesk.admin` and render; a form with mistakes comes back with each message next to its
field (422) and nothing saved.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from helpdesk import admin
from helpdesk.errors import InvalidInput
from helpdesk.models import LANGUAGES, ROLES, Team
from helpdesk.pagination import parse_limit
from helpdesk.sla_admin import InvalidFields
from helpdesk.web.forms import path_id
from helpdesk.web.render import render, viewer_for
from helpdesk.web.security import requires

ADMIN = ("admin",)
VIEWERS = ("supervisor", "admin")
NOTICES = ("created", "saved", "deleted", "activated", "deactivated", "renamed")


def _notice(request: Request) -> str | None:
    notice = request.query_params.get("notice")
    return notice if notice in NOTICES else None


def _can_edit(request: Request) -> bool:
    return request.state.user.role in ADMIN


def _actor(request: Request) -> int:
    return int(request.state.user.id)


async def _teams(request: Request) -> list[Team]:
    async with request.app.state.db.unit_of_work() as session:
        return list(await session.scalars(select(Team).order_by(Team.name)))


# -- index -----------------------------------------------------------------------------------


@requires(*VIEWERS)
async def index(request: Request) -> Response:
    return render(request, "admin/index.html", {"can_edit": _can_edit(request)})


# -- agents ----------------------------------------------------------------------------------


def _optional_int(raw: str | None, field: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidInput(f"{field} must be a whole number", field=field)
    return int(raw)


@requires(*VIEWERS)
async def agents(request: Request) -> Response:
    params = request.query_params
    role = params.get("role") or None
    if role is not None and role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    team_id = _optional_int(params.get("team_id"), "team_id")
    active = {"yes": True, "no": False}.get(params.get("active", ""))
    page = _optional_int(params.get("page"), "page") or 1
    async with request.app.state.db.unit_of_work() as session:
        rows, total = await admin.list_agents(
            session, role=role, team_id=team_id, active=active, page=page
        )
    pages = max(1, -(-total // admin.AGENTS_PER_PAGE))
    query = {k: v for k, v in params.items() if k != "page" and v}
    return render(
        request,
        "admin/agents.html",
        {
            "rows": rows,
            "total": total,
            "page": page,
            "pages": pages,
            "query": urlencode(query),
            "filters": {
                "role": role or "",
                "team_id": team_id or "",
                "active": params.get("active", ""),
            },
            "teams": await _teams(request),
            "roles": ROLES,
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
    )


def _agent_form(form: FormData) -> admin.AgentForm:
    fields = [f.name for f in dataclasses.fields(admin.AgentForm)]
    return admin.AgentForm(**{key: str(form.get(key) or "") for key in fields})


async def _agent_page(
    request: Request,
    values: admin.AgentForm,
    *,
    user_id: int | None = None,
    errors: dict[str, Any] | None = None,
) -> Response:
    record = None
    if user_id is not None:
        async with request.app.state.db.unit_of_work() as session:
            record = await admin.get_agent(session, user_id)
    return render(
        request,
        "admin/agent.html",
        {
            "record": record,
            "values": values,
            "errors": errors or {},
            "teams": await _teams(request),
            "roles": ROLES,
            "languages": LANGUAGES,
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
        status=422 if errors else 200,
    )


@requires(*ADMIN)
async def agent_new(request: Request) -> Response:
    return await _agent_page(request, admin.AgentForm())


@requires(*ADMIN)
async def agent_create(request: Request) -> Response:
    values = _agent_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            user = await admin.create_agent(session, values, actor_user_id=_actor(request))
    except InvalidFields as exc:
        values.password = ""
        return await _agent_page(request, values, errors=exc.errors)
    return RedirectResponse(f"/admin/agents/{user.id}?notice=created", status_code=303)


@requires(*VIEWERS)
async def agent_edit(request: Request) -> Response:
    user_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        values = await admin.agent_form_of(session, await admin.get_agent(session, user_id))
    return await _agent_page(request, values, user_id=user_id)


@requires(*ADMIN)
async def agent_save(request: Request) -> Response:
    user_id = path_id(request)
    values = _agent_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            await admin.update_agent(session, user_id, values, actor_user_id=_actor(request))
    except InvalidFields as exc:
        return await _agent_page(request, values, user_id=user_id, errors=exc.errors)
    return RedirectResponse(f"/admin/agents/{user_id}?notice=saved", status_code=303)


@requires(*ADMIN)
async def agent_active(request: Request) -> Response:
    user_id = path_id(request)
    active = str((await request.form()).get("active") or "") == "true"
    async with request.app.state.db.unit_of_work() as session:
        await admin.set_agent_active(session, user_id, active, actor_user_id=_actor(request))
    notice = "activated" if active else "deactivated"
    return RedirectResponse(f"/admin/agents/{user_id}?notice={notice}", status_code=303)


# -- teams -----------------------------------------------------------------------------------


async def _teams_page(
    request: Request, *, errors: dict[str, Any] | None = None, status: int = 200
) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        rows = await admin.list_teams(session)
    return render(
        request,
        "admin/teams.html",
        {
            "rows": rows,
            "errors": errors or {},
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
        status=422 if errors else status,
    )


@requires(*VIEWERS)
async def teams(request: Request) -> Response:
    return await _teams_page(request)


@requires(*ADMIN)
async def team_create(request: Request) -> Response:
    name = str((await request.form()).get("name") or "")
    try:
        async with request.app.state.db.unit_of_work() as session:
            await admin.create_team(session, name, actor_user_id=_actor(request))
    except InvalidFields as exc:
        return await _teams_page(request, errors=exc.errors)
    return RedirectResponse("/admin/teams?notice=created", status_code=303)


@requires(*ADMIN)
async def team_rename(request: Request) -> Response:
    team_id = path_id(request)
    name = str((await request.form()).get("name") or "")
    try:
        async with request.app.state.db.unit_of_work() as session:
            await admin.rename_team(session, team_id, name, actor_user_id=_actor(request))
    except InvalidFields as exc:
        return await _teams_page(request, errors={f"team-{team_id}": exc.errors["name"]})
    return RedirectResponse("/admin/teams?notice=renamed", status_code=303)


@requires(*ADMIN)
async def team_delete(request: Request) -> Response:
    team_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        await admin.delete_team(session, team_id, actor_user_id=_actor(request))
    return RedirectResponse("/admin/teams?notice=deleted", status_code=303)


# -- CTI -------------------------------------------------------------------------------------


def _cti_context(request: Request, new_token: str | None = None) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "is_set": bool(settings.cti_token),
        "hint": admin.token_hint(settings.cti_token),
        "from_env": settings.cti_token_from_env,
        "new_token": new_token,
        "base_url": str(request.base_url).rstrip("/"),
        "can_edit": _can_edit(request),
    }


@requires(*VIEWERS)
async def cti_page(request: Request) -> Response:
    return render(request, "admin/cti.html", _cti_context(request))


@requires(*ADMIN)
async def cti_rotate(request: Request) -> Response:
    """A new CTI token, shown once in this response (not a redirect: it is never stored in a
    URL or shown again). This process uses it at once; others at their next start."""
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        new = await admin.rotate_cti_token(
            session,
            settings.data_dir,
            settings.cti_token,
            from_env=settings.cti_token_from_env,
            actor_user_id=_actor(request),
        )
    request.app.state.settings = dataclasses.replace(settings, cti_token=new)
    response = render(request, "admin/cti.html", _cti_context(request, new))
    response.headers["Cache-Control"] = "no-store"
    return response


# -- mailboxes -------------------------------------------------------------------------------


@requires(*VIEWERS)
async def mailboxes(request: Request) -> Response:
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        counts = await admin.outbox_counts(session)
        imap = await admin.imap_mailboxes(session)
    return render(
        request,
        "admin/mailboxes.html",
        {
            "smtp_url": admin.redacted_url(settings.smtp_url),
            "support_address": settings.support_address,
            "support_name": settings.support_name,
            "mail_token_set": bool(settings.mail_token),
            "imap": [(admin.redacted_url(c.key), c) for c in imap],
            "counts": counts,
        },
    )


# -- canned responses ------------------------------------------------------------------------


@requires(*VIEWERS)
async def canned(request: Request) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        items = await admin.list_canned(session)
    return render(
        request,
        "admin/canned.html",
        {"items": items, "can_edit": _can_edit(request), "notice": _notice(request)},
    )


def _canned_form(form: FormData) -> admin.CannedForm:
    fields = [f.name for f in dataclasses.fields(admin.CannedForm)]
    return admin.CannedForm(**{key: str(form.get(key) or "") for key in fields})


async def _canned_page(
    request: Request,
    values: admin.CannedForm,
    *,
    canned_id: int | None = None,
    errors: dict[str, Any] | None = None,
) -> Response:
    return render(
        request,
        "admin/canned_form.html",
        {
            "canned_id": canned_id,
            "values": values,
            "errors": errors or {},
            "languages": LANGUAGES,
            "can_edit": _can_edit(request),
            "notice": _notice(request),
        },
        status=422 if errors else 200,
    )


@requires(*ADMIN)
async def canned_new(request: Request) -> Response:
    return await _canned_page(request, admin.CannedForm())


@requires(*ADMIN)
async def canned_create(request: Request) -> Response:
    values = _canned_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            item = await admin.save_canned(session, values, actor_user_id=_actor(request))
    except InvalidFields as exc:
        return await _canned_page(request, values, errors=exc.errors)
    return RedirectResponse(f"/admin/canned/{item.id}?notice=created", status_code=303)


@requires(*VIEWERS)
async def canned_edit(request: Request) -> Response:
    canned_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        values = admin.canned_form_of(await admin.get_canned(session, canned_id))
    return await _canned_page(request, values, canned_id=canned_id)


@requires(*ADMIN)
async def canned_save(request: Request) -> Response:
    canned_id = path_id(request)
    values = _canned_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            await admin.save_canned(
                session, values, canned_id=canned_id, actor_user_id=_actor(request)
            )
    except InvalidFields as exc:
        return await _canned_page(request, values, canned_id=canned_id, errors=exc.errors)
    return RedirectResponse(f"/admin/canned/{canned_id}?notice=saved", status_code=303)


@requires(*ADMIN)
async def canned_delete(request: Request) -> Response:
    canned_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        await admin.delete_canned(session, canned_id, actor_user_id=_actor(request))
    return RedirectResponse("/admin/canned?notice=deleted", status_code=303)


# -- audit log -------------------------------------------------------------------------------


@requires(*ADMIN)
async def audit_log(request: Request) -> Response:
    params = request.query_params
    fields = [f.name for f in dataclasses.fields(admin.AuditFilter)]
    f = admin.AuditFilter(**{key: params.get(key, "") for key in fields})
    limit = parse_limit(params.get("limit"), default=50)
    zone = viewer_for(request).tz
    errors: dict[str, Any] = {}
    records: list[Any] = []
    next_cursor = None
    names: dict[int, str] = {}
    try:
        async with request.app.state.db.unit_of_work() as session:
            page = await admin.browse_audit(
                session, f, zone, limit=limit, cursor=params.get("cursor") or None
            )
            names = await admin.actor_names(session, page.items)
        records, next_cursor = page.items, page.next_cursor
    except InvalidFields as exc:
        errors = exc.errors
    query = {k: v for k, v in dataclasses.asdict(f).items() if v}
    if params.get("limit"):
        query["limit"] = str(limit)
    return render(
        request,
        "admin/audit.html",
        {
            "filters": f,
            "errors": errors,
            "records": [(r, admin.diff_rows(r.details or {})) for r in records],
            "names": names,
            "next_query": urlencode({**query, "cursor": next_cursor}) if next_cursor else None,
            "first_query": urlencode(query) if params.get("cursor") else None,
        },
        status=422 if errors else 200,
    )


routes = [
    Route("/admin", index, methods=["GET"]),
    Route("/admin/agents", agents, methods=["GET"]),
    Route("/admin/agents", agent_create, methods=["POST"]),
    Route("/admin/agents/new", agent_new, methods=["GET"]),
    Route("/admin/agents/{id:int}", agent_edit, methods=["GET"]),
    Route("/admin/agents/{id:int}", agent_save, methods=["POST"]),
    Route("/admin/agents/{id:int}/active", agent_active, methods=["POST"]),
    Route("/admin/teams", teams, methods=["GET"]),
    Route("/admin/teams", team_create, methods=["POST"]),
    Route("/admin/teams/{id:int}", team_rename, methods=["POST"]),
    Route("/admin/teams/{id:int}/delete", team_delete, methods=["POST"]),
    Route("/admin/cti", cti_page, methods=["GET"]),
    Route("/admin/cti/rotate", cti_rotate, methods=["POST"]),
    Route("/admin/mailboxes", mailboxes, methods=["GET"]),
    Route("/admin/canned", canned, methods=["GET"]),
    Route("/admin/canned", canned_create, methods=["POST"]),
    Route("/admin/canned/new", canned_new, methods=["GET"]),
    Route("/admin/canned/{id:int}", canned_edit, methods=["GET"]),
    Route("/admin/canned/{id:int}", canned_save, methods=["POST"]),
    Route("/admin/canned/{id:int}/delete", canned_delete, methods=["POST"]),
    Route("/admin/audit", audit_log, methods=["GET"]),
]
