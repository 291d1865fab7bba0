"""The JSON API (DESIGN.md, "HTTP API"): thin endpoints over the domain modules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from helpdesk import cases, customers, identities, interactions, sla
from helpdesk.errors import BadRequest, InvalidInput, NotFound
from helpdesk.models import CASE_STATUSES
from helpdesk.pagination import parse_limit
from helpdesk.web.forms import int_field, json_object, path_id, text_field
from helpdesk.web.render import (
    attachment_json,
    case_json,
    customer_json,
    identity_json,
    interaction_json,
)
from helpdesk.web.security import ANY_STAFF, requires, scope

MAX_UPLOAD_FILES = 10


def _identity_inputs(data: dict[str, Any]) -> list[customers.IdentityInput]:
    items: list[customers.IdentityInput] = []
    for key, kind in (("phones", "phone"), ("emails", "email")):
        values = data.get(key) or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidInput(f"{key} must be a list of text", field=key)
        items += [
            customers.IdentityInput(kind, v, is_primary=(i == 0)) for i, v in enumerate(values)
        ]
    extra = data.get("identities") or []
    if not isinstance(extra, list):
        raise InvalidInput("identities must be a list", field="identities")
    for item in extra:
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
            raise InvalidInput("each identity needs a kind and a value", field="identities")
        items.append(customers.IdentityInput(item["kind"], str(item.get("value") or "")))
    return items


def customer_input(data: dict[str, Any]) -> customers.CustomerInput:
    return customers.CustomerInput(
        name=text_field(data, "name", required=True, max_len=200) or "",
        name_kana=text_field(data, "name_kana", max_len=200),
        organization=text_field(data, "organization", max_len=200),
        language=text_field(data, "language", max_len=8),
        tier=text_field(data, "tier", max_len=20) or "standard",
        notes=text_field(data, "notes", max_len=20_000),
        identities=_identity_inputs(data),
    )


# -- customers ------------------------------------------------------------------------------


@requires(*ANY_STAFF)
async def list_customers(request: Request) -> JSONResponse:
    params = request.query_params
    limit = parse_limit(params.get("limit"), default=25)
    async with request.app.state.db.unit_of_work() as session:
        page = await customers.search_customers(
            session,
            params.get("q", ""),
            limit=limit,
            cursor=params.get("cursor") or None,
            region=request.app.state.settings.default_region,
        )
        items = [customer_json(c, list(c.identities)) for c in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@requires(*ANY_STAFF)
async def create_customer(request: Request) -> JSONResponse:
    data = await json_object(request)
    payload = customer_input(data)
    async with request.app.state.db.unit_of_work() as session:
        customer = await customers.create_customer(
            session, payload, region=request.app.state.settings.default_region
        )
        card = await customers.customer_card(session, customer.id)
        body = customer_json(card.customer, card.identities)
    return JSONResponse(body, status_code=201)


@requires(*ANY_STAFF)
async def get_customer(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        card = await customers.customer_card(session, customer_id, scope=scope(request))
        body = customer_json(card.customer, card.identities)
        body["open_cases"] = [case_json(c) for c in card.open_cases]
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def patch_customer(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    data = await json_object(request)
    async with request.app.state.db.unit_of_work() as session:
        customer = await customers.update_customer(session, customer_id, data)
        body = customer_json(customer, list(customer.identities))
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def add_identity(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    data = await json_object(request)
    item = customers.IdentityInput(
        kind=text_field(data, "kind", required=True, max_len=16) or "",
        value=text_field(data, "value", required=True, max_len=320) or "",
        verified=bool(data.get("verified", False)),
    )
    async with request.app.state.db.unit_of_work() as session:
        identity = await customers.add_identity(
            session, customer_id, item, region=request.app.state.settings.default_region
        )
        body = identity_json(identity)
    return JSONResponse(body, status_code=201)


@requires(*ANY_STAFF)
async def customer_timeline(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    params = request.query_params
    async with request.app.state.db.unit_of_work() as session:
        page = await interactions.customer_timeline(
            session,
            customer_id,
            limit=parse_limit(params.get("limit")),
            cursor=params.get("cursor") or None,
            scope=scope(request),
        )
        items = [interaction_json(i) for i in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@requires("supervisor", "admin")
async def merge_customer(request: Request) -> JSONResponse:
    """Merging rewrites history, so it is for supervisors and admins, and it is audited."""
    survivor_id = path_id(request)
    data = await json_object(request)
    other_id = int_field(data, "other_id", required=True)
    assert other_id is not None
    async with request.app.state.db.unit_of_work() as session:
        survivor = await customers.merge_customers(
            session, survivor_id, other_id, actor_user_id=request.state.user.id
        )
        body = customer_json(survivor, list(survivor.identities))
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def lookup(request: Request) -> JSONResponse:
    """Screen-pop lookup: every customer holding this number, or 404."""
    phone = request.query_params.get("phone", "")
    if not phone:
        raise InvalidInput("phone is required", field="phone")
    async with request.app.state.db.unit_of_work() as session:
        matches = await identities.customers_for_phone(
            session, phone, request.app.state.settings.default_region
        )
    if not matches:
        raise NotFound(f"no customer has the number {phone}")
    return JSONResponse(
        {
            "phone": identities.normalize_phone(phone, request.app.state.settings.default_region),
            "customers": [m.as_json() for m in matches],
        }
    )


# -- cases ----------------------------------------------------------------------------------


def case_filter(request: Request) -> cases.CaseFilter:
    params = request.query_params
    statuses = [s for s in params.get("status", "").split(",") if s]
    for s in statuses:
        if s not in CASE_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(CASE_STATUSES)}", field="status")
    assignee = params.get("assignee", "")
    f = cases.CaseFilter(status=statuses or None, q=params.get("q") or None)
    if assignee == "me":
        f.assignee_id = request.state.user.id
    elif assignee in ("none", "unassigned"):
        f.unassigned = True
    elif assignee:
        f.assignee_id = int_field({"assignee": assignee}, "assignee")
    f.team_id = int_field(dict(params), "team")
    f.customer_id = int_field(dict(params), "customer_id")
    f.scope = scope(request)
    return f


@requires(*ANY_STAFF)
async def list_cases(request: Request) -> JSONResponse:
    f = case_filter(request)
    params = request.query_params
    async with request.app.state.db.unit_of_work() as session:
        page = await cases.list_cases(
            session, f, limit=parse_limit(params.get("limit")), cursor=params.get("cursor")
        )
        items = [case_json(c) for c in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@requires(*ANY_STAFF)
async def create_case(request: Request) -> JSONResponse:
    data = await json_object(request)
    tags = data.get("tags")
    payload = cases.CaseInput(
        customer_id=int_field(data, "customer_id", required=True) or 0,
        subject=text_field(data, "subject", required=True, max_len=300) or "",
        channel=text_field(data, "channel", max_len=16) or "other",
        priority=text_field(data, "priority", max_len=16) or "normal",
        body=text_field(data, "body", max_len=200_000),
        team_id=int_field(data, "team_id"),
        assignee_id=int_field(data, "assignee_id"),
        tags=tags if tags is not None else None,
    )
    async with request.app.state.db.unit_of_work() as session:
        case = await cases.create_case(session, payload, author_user_id=request.state.user.id)
        body = case_json(case)
    return JSONResponse(body, status_code=201)


@requires(*ANY_STAFF)
async def get_case(request: Request) -> JSONResponse:
    case_id = path_id(request)
    params = request.query_params
    async with request.app.state.db.unit_of_work() as session:
        case = await cases.get_case(session, case_id, scope=scope(request))
        page = await interactions.case_timeline(
            session, case_id, limit=parse_limit(params.get("limit")), cursor=params.get("cursor")
        )
        body = case_json(case)
        body["customer"] = customer_json(case.customer, list(case.customer.identities))
        body["timeline"] = [interaction_json(i) for i in page.items]
        body["timeline_next_cursor"] = page.next_cursor
        now = datetime.now(UTC)
        body["sla"] = [sla.clock_json(c, now) for c in await sla.case_clocks(session, case_id)]
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def patch_case(request: Request) -> JSONResponse:
    case_id = path_id(request)
    data = await json_object(request)
    for name in ("status", "priority"):
        text_field(data, name, max_len=16)  # a list or object here is 422, not a crash
    async with request.app.state.db.unit_of_work() as session:
        case = await cases.update_case(
            session, case_id, data, actor_user_id=request.state.user.id, scope=scope(request)
        )
        body = case_json(case)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def add_note(request: Request) -> JSONResponse:
    """An internal note, as JSON `{body}` or multipart with `body` and files."""
    case_id = path_id(request)
    settings = request.app.state.settings
    files: list[tuple[str, str | None, bytes]] = []
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=MAX_UPLOAD_FILES, max_fields=20) as form:
            body = str(form.get("body") or "")
            for upload in form.getlist("files"):
                if isinstance(upload, str):
                    raise InvalidInput("files must be file uploads", field="files")
                data = await upload.read(settings.max_attachment_bytes + 1)
                files.append((upload.filename or "attachment", upload.content_type, data))
    else:
        body = text_field(await json_object(request), "body", required=True, max_len=200_000) or ""
    async with request.app.state.db.unit_of_work() as session:
        _, note = await cases.add_note(
            session, case_id, body, author_user_id=request.state.user.id, scope=scope(request)
        )
        stored = [
            await interactions.store_attachment(
                session,
                attachments_dir=settings.attachments_dir,
                interaction_id=note.id,  # type: ignore[attr-defined]
                filename=name,
                content_type=ctype,
                data=data,
                max_bytes=settings.max_attachment_bytes,
            )
            for name, ctype, data in files
        ]
        result = interaction_json(note)  # type: ignore[arg-type]
        result["attachments"] = [attachment_json(a) for a in stored]
    return JSONResponse(result, status_code=201)


@requires(*ANY_STAFF)
async def download_attachment(request: Request) -> FileResponse:
    attachment_id = path_id(request)
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        attachment = await interactions.get_attachment(session, attachment_id, scope=scope(request))
    path = interactions.attachment_path(settings.attachments_dir, attachment.sha256)
    if not path.exists():
        raise NotFound(f"the file of attachment {attachment_id} is missing from storage")
    return FileResponse(
        path,
        media_type=attachment.content_type,
        filename=attachment.filename,
        content_disposition_type="attachment",
    )


async def not_found(request: Request) -> JSONResponse:
    raise BadRequest(f"no API endpoint {request.method} {request.url.path}")


routes = [
    Route("/api/customers", list_customers, methods=["GET"]),
    Route("/api/customers", create_customer, methods=["POST"]),
    Route("/api/customers/{id:int}", get_customer, methods=["GET"]),
    Route("/api/customers/{id:int}", patch_customer, methods=["PATCH"]),
    Route("/api/customers/{id:int}/identities", add_identity, methods=["POST"]),
    Route("/api/customers/{id:int}/timeline", customer_timeline, methods=["GET"]),
    Route("/api/customers/{id:int}/merge", merge_customer, methods=["POST"]),
    Route("/api/lookup", lookup, methods=["GET"]),
    Route("/api/cases", list_cases, methods=["GET"]),
    Route("/api/cases", create_case, methods=["POST"]),
    Route("/api/cases/{id:int}", get_case, methods=["GET"]),
    Route("/api/cases/{id:int}", patch_case, methods=["PATCH"]),
    Route("/api/cases/{id:int}/notes", add_note, methods=["POST"]),
    Route("/api/attachments/{id:int}", download_attachment, methods=["GET"]),
]
