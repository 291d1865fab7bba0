"""Server-rendered pages for agents. Each htmx-swapped region is its own partial, rendered
by the same endpoint for a full page or, with the HX-Request header, as a fragment."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from helpdesk import calls, cases, customers, interactions, presence, sla, visibility
from helpdesk.errors import Conflict, DeskError, Forbidden, InvalidInput
from helpdesk.mail import outbound
from helpdesk.models import CASE_STATUSES, CHANNELS, PRIORITIES, TIERS, Case, Team, User
from helpdesk.pagination import parse_limit
from helpdesk.web.forms import path_id
from helpdesk.web.render import is_htmx, render
from helpdesk.web.security import ANY_STAFF, requires, scope

TIMELINE_PAGE = 20


async def index(request: Request) -> Response:
    return RedirectResponse("/agent", status_code=303)


@requires(*ANY_STAFF)
async def agent_home(request: Request) -> Response:
    """The agent's desk: their own open cases and the unassigned queue."""
    user = request.state.user
    async with request.app.state.db.unit_of_work() as session:
        mine = await cases.list_cases(
            session,
            cases.CaseFilter(status=list(cases.OPEN_STATUSES), assignee_id=user.id),
            limit=50,
        )
        waiting = cases.CaseFilter(
            status=list(cases.OPEN_STATUSES), unassigned=True, scope=scope(request)
        )
        queue = await cases.list_cases(session, waiting, limit=50)
        queue_total = await cases.count_cases(session, waiting)
        team = await presence.list_presence(session) if user.role in presence.WATCHERS else None
    return render(
        request,
        "agent/home.html",
        {"mine": mine.items, "queue": queue.items, "queue_total": queue_total, "team": team},
    )


@requires(*ANY_STAFF)
async def case_list(request: Request) -> Response:
    """All cases, filtered by status and assignee, newest activity first, cursor paged."""
    params = request.query_params
    status = params.get("status", "open")
    statuses = list(cases.OPEN_STATUSES) if status == "open" else [status] if status else None
    if statuses and not set(statuses) <= set(CASE_STATUSES):
        raise InvalidInput(
            f"status must be open or one of {', '.join(CASE_STATUSES)}", field="status"
        )
    f = cases.CaseFilter(status=statuses, q=params.get("q") or None, scope=scope(request))
    if params.get("assignee") == "me":
        f.assignee_id = request.state.user.id
    async with request.app.state.db.unit_of_work() as session:
        page = await cases.list_cases(
            session,
            f,
            limit=parse_limit(params.get("limit"), default=50),
            cursor=params.get("cursor"),
        )
    return render(
        request,
        "cases/index.html",
        {
            "page": page,
            "status": status,
            "statuses": CASE_STATUSES,
            "assignee": params.get("assignee", ""),
            "q": params.get("q", ""),
        },
    )


@requires(*ANY_STAFF)
async def customer_search(request: Request) -> Response:
    q = request.query_params.get("q", "")
    cursor = request.query_params.get("cursor") or None
    async with request.app.state.db.unit_of_work() as session:
        page = await customers.search_customers(
            session,
            q,
            limit=parse_limit(request.query_params.get("limit"), default=25),
            cursor=cursor,
            region=request.app.state.settings.default_region,
        )
    ctx = {"q": q, "page": page, "appending": bool(cursor)}
    if is_htmx(request):
        return render(request, "customers/_results.html", ctx)
    return render(request, "customers/search.html", ctx)


@requires(*ANY_STAFF)
async def customer_page(request: Request) -> Response:
    """The single customer view: identities, open cases and one timeline across channels."""
    customer_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        card = await customers.customer_card(session, customer_id, scope=scope(request))
        timeline = await interactions.customer_timeline(
            session, customer_id, limit=TIMELINE_PAGE, scope=scope(request)
        )
    return render(
        request,
        "customers/show.html",
        {"card": card, "customer": card.customer, "timeline": timeline},
    )


@requires(*ANY_STAFF)
async def customer_timeline(request: Request) -> Response:
    """The next page of a timeline, appended by htmx as the agent scrolls."""
    customer_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        timeline = await interactions.customer_timeline(
            session,
            customer_id,
            limit=TIMELINE_PAGE,
            cursor=request.query_params.get("cursor") or None,
            scope=scope(request),
        )
    return render(
        request,
        "timeline/_entries.html",
        {"timeline": timeline, "more_url": f"/customers/{customer_id}/timeline"},
    )


@requires(*ANY_STAFF)
async def customer_new(request: Request) -> Response:
    values = {
        "name": "",
        "phone": request.query_params.get("phone", ""),
        "email": request.query_params.get("email", ""),
    }
    return render(request, "customers/new.html", {"values": values, "tiers": TIERS})


@requires(*ANY_STAFF)
async def customer_create(request: Request) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("name", "name_kana", "organization", "phone", "email", "tier", "language")}  # fmt: skip
    items = (
        [customers.IdentityInput("phone", values["phone"], is_primary=True)]
        if values["phone"]
        else []
    )
    if values["email"]:
        items.append(customers.IdentityInput("email", values["email"], is_primary=True))
    data = customers.CustomerInput(
        name=values["name"],
        name_kana=values["name_kana"] or None,
        organization=values["organization"] or None,
        language=values["language"] or None,
        tier=values["tier"] or "standard",
        identities=items,
    )
    try:
        async with request.app.state.db.unit_of_work() as session:
            customer = await customers.create_customer(
                session, data, region=request.app.state.settings.default_region
            )
    except InvalidInput as exc:
        return render(
            request,
            "customers/new.html",
            {"values": values, "tiers": TIERS, "error": exc},
            status=422,
        )
    return RedirectResponse(f"/customers/{customer.id}", status_code=303)


async def case_context(request: Request, case_id: int, **extra: object) -> dict[str, object]:
    from sqlalchemy import select

    async with request.app.state.db.unit_of_work() as session:
        case = await cases.get_case(session, case_id, scope=scope(request))
        timeline = await interactions.case_timeline(session, case_id, limit=TIMELINE_PAGE)
        agents = (
            await session.scalars(select(User).where(User.is_active).order_by(User.name))
        ).all()
        teams = (await session.scalars(select(Team).order_by(Team.name))).all()
        draft = await outbound.reply_draft(session, request.app.state.settings, case)
        now = datetime.now(UTC)
        clocks = [sla.clock_json(c, now) for c in await sla.case_clocks(session, case_id)]
    return {
        "case": case,
        "sla_clocks": clocks,
        "draft": draft,
        "timeline": timeline,
        "agents": agents,
        "teams": teams,
        "allowed_statuses": [case.status, *cases.TRANSITIONS[case.status]],
        "priorities": PRIORITIES,
        "more_url": f"/cases/{case_id}/timeline",
        **extra,
    }


@requires(*ANY_STAFF)
async def case_page(request: Request) -> Response:
    case_id = path_id(request)
    return render(request, "cases/show.html", await case_context(request, case_id))


@requires(*ANY_STAFF)
async def case_timeline(request: Request) -> Response:
    case_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        timeline = await interactions.case_timeline(
            session,
            case_id,
            limit=TIMELINE_PAGE,
            cursor=request.query_params.get("cursor") or None,
            scope=scope(request),
        )
    return render(
        request,
        "timeline/_entries.html",
        {"timeline": timeline, "more_url": f"/cases/{case_id}/timeline"},
    )


@requires(*ANY_STAFF)
async def case_update(request: Request) -> Response:
    """Change one field in place; answers the fields partial (htmx) or redirects."""
    case_id = path_id(request)
    form = await request.form()
    changes: dict[str, object] = {}
    for key in ("status", "priority"):
        if form.get(key):
            changes[key] = str(form.get(key))
    for key in ("assignee_id", "team_id"):
        if key in form:
            raw = str(form.get(key) or "")
            changes[key] = int(raw) if raw.isdigit() else None
    if "tags" in form:
        changes["tags"] = [t.strip() for t in str(form.get("tags") or "").split(",")]
    error: DeskError | None = None
    try:
        async with request.app.state.db.unit_of_work() as session:
            await cases.update_case(
                session,
                case_id,
                changes,
                actor_user_id=request.state.user.id,
                scope=scope(request),
            )
    except DeskError as exc:
        if not is_htmx(request):
            raise
        error = exc
    if error is None and not await _still_visible(request, case_id):
        # Sent to another team: the page is no longer this agent's to see.
        if not is_htmx(request):
            return RedirectResponse("/cases", status_code=303)
        return Response(status_code=204, headers={"HX-Redirect": "/cases"})
    if not is_htmx(request):
        return RedirectResponse(f"/cases/{case_id}", status_code=303)
    ctx = await case_context(request, case_id, error=error)
    response = render(request, "cases/_fields.html", ctx, status=200)
    if error is None:
        response.headers["HX-Trigger"] = "timeline-changed"
    return response


async def _still_visible(request: Request, case_id: int) -> bool:
    try:
        async with request.app.state.db.unit_of_work() as session:
            await visibility.check_case_id(session, scope(request), case_id)
    except Forbidden:
        return False
    return True


@requires(*ANY_STAFF)
async def case_note(request: Request) -> Response:
    case_id = path_id(request)
    form = await request.form()
    body = str(form.get("body") or "")
    try:
        async with request.app.state.db.unit_of_work() as session:
            await cases.add_note(
                session,
                case_id,
                body,
                author_user_id=request.state.user.id,
                scope=scope(request),
            )
    except InvalidInput as exc:
        if not is_htmx(request):
            raise
        return render(request, "_error_fragment.html", {"error": exc}, status=422)
    if is_htmx(request):
        ctx = await case_context(request, case_id)
        return render(request, "cases/_timeline.html", ctx)
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@requires(*ANY_STAFF)
async def case_new(request: Request) -> Response:
    customer_id = request.query_params.get("customer_id", "")
    return render(
        request,
        "cases/new.html",
        {
            "customer_id": customer_id,
            "channels": CHANNELS,
            "priorities": PRIORITIES,
            "values": {},
        },
    )


@requires(*ANY_STAFF)
async def case_create(request: Request) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "") for k in ("customer_id", "subject", "channel", "priority", "body")}  # fmt: skip
    try:
        if not values["customer_id"].isdigit():
            raise InvalidInput("choose a customer", field="customer_id")
        async with request.app.state.db.unit_of_work() as session:
            case = await cases.create_case(
                session,
                cases.CaseInput(
                    customer_id=int(values["customer_id"]),
                    subject=values["subject"],
                    channel=values["channel"] or "phone",
                    priority=values["priority"] or "normal",
                    body=values["body"] or None,
                    assignee_id=request.state.user.id,
                ),
                author_user_id=request.state.user.id,
            )
    except InvalidInput as exc:
        return render(
            request,
            "cases/new.html",
            {
                "customer_id": values["customer_id"],
                "channels": CHANNELS,
                "priorities": PRIORITIES,
                "values": values,
                "error": exc,
            },
            status=422,
        )
    return RedirectResponse(f"/cases/{case.id}", status_code=303)


async def _call_card(request: Request, call_id: int, error: DeskError | None = None) -> Response:
    region = request.app.state.settings.default_region
    async with request.app.state.db.unit_of_work() as session:
        call = await calls.get_call(session, call_id)
        user = request.state.user
        card = await calls.screen_pop_card(
            session, call, region, team=visibility.limited_team(user), user_ids=(user.id,)
        )
        case = await session.get(Case, call.case_id) if call.case_id else None
    return render(
        request,
        "calls/_card.html",
        {"call": call, "card": card, "case_number": case.number if case else "", "error": error},
        status=422 if error else 200,
    )


@requires(*ANY_STAFF)
async def call_card(request: Request) -> Response:
    """The screen-pop of a call, fetched by the browser when its `screen_pop` frame arrives."""
    return await _call_card(request, path_id(request))


@requires(*ANY_STAFF)
async def call_attach(request: Request) -> Response:
    call_id = path_id(request)
    form = await request.form()

    def number(name: str) -> int | None:
        raw = str(form.get(name) or "")
        return int(raw) if raw.isdigit() else None

    subject = str(form.get("new_case_subject") or "").strip() or None
    try:
        async with request.app.state.db.unit_of_work() as session:
            await calls.attach(
                session,
                call_id,
                user_id=request.state.user.id,
                customer_id=number("customer_id"),
                case_id=number("case_id"),
                new_case_subject=subject,
                scope=scope(request),
            )
    except (InvalidInput, Conflict, Forbidden) as exc:
        return await _call_card(request, call_id, exc)
    return await _call_card(request, call_id)


@requires(*ANY_STAFF)
async def call_notes(request: Request) -> Response:
    form = await request.form()
    async with request.app.state.db.unit_of_work() as session:
        await calls.set_notes(session, path_id(request), str(form.get("notes") or ""))
    return Response(status_code=204)


routes = [
    Route("/calls/{id:int}/card", call_card),
    Route("/calls/{id:int}/attach", call_attach, methods=["POST"]),
    Route("/calls/{id:int}/notes", call_notes, methods=["POST"]),
    Route("/", index),
    Route("/agent", agent_home),
    Route("/customers", customer_search),
    Route("/customers/new", customer_new, methods=["GET"]),
    Route("/customers", customer_create, methods=["POST"]),
    Route("/customers/{id:int}", customer_page),
    Route("/customers/{id:int}/timeline", customer_timeline),
    Route("/cases", case_list, methods=["GET"]),
    Route("/cases/new", case_new, methods=["GET"]),
    Route("/cases", case_create, methods=["POST"]),
    Route("/cases/{id:int}", case_page),
    Route("/cases/{id:int}/timeline", case_timeline),
    Route("/cases/{id:int}/fields", case_update, methods=["POST"]),
    Route("/cases/{id:int}/notes", case_note, methods=["POST"]),
]
