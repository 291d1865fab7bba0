"""CTI over HTTP: the normalized event, Zammad's Generic CTI, and the call log API.

A PBX authenticates with the CTI token (`Authorization: Bearer`, or a `token` parameter, or
the token in the path at Zammad's `/api/v1/cti/{token}`), never with a user's JWT.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cti.events import CallEvent, InvalidCallEvent
from helpdesk import calls
from helpdesk.errors import InvalidInput
from helpdesk.pagination import parse_limit
from helpdesk.web.forms import int_field, json_object, path_id, text_field
from helpdesk.web.security import ANY_STAFF, check_shared_token, requires, scope

ZAMMAD_EVENTS = {"newCall": "ring", "answer": "answer", "hangup": "hangup"}


def _check_token(request: Request, path_token: str | None = None) -> None:
    check_shared_token(request, request.app.state.settings.cti_token, "CTI", path_token)


async def _apply(request: Request, event: CallEvent) -> JSONResponse:
    async with request.app.state.db.unit_of_work() as session:
        applied = await calls.apply_event(
            session, event, region=request.app.state.settings.default_region
        )
        body: dict[str, Any] = {"duplicate": applied.duplicate}
        if applied.call is not None:
            body["call"] = calls.call_json(applied.call)
    return JSONResponse(body)


def _invalid(exc: InvalidCallEvent) -> InvalidInput:
    return InvalidInput(exc.message, field=exc.field)


async def cti_event(request: Request) -> JSONResponse:
    """`POST /api/cti/events`: the normalized call event of DESIGN.md."""
    _check_token(request)
    data = await json_object(request, max_bytes=20_000)
    try:
        event = CallEvent.from_json(data)
    except InvalidCallEvent as exc:
        raise _invalid(exc) from None
    return await _apply(request, event)


def zammad_event(params: dict[str, Any]) -> CallEvent:
    """Zammad's Generic CTI parameters as a CallEvent."""
    kind = params.get("event")
    if kind not in ZAMMAD_EVENTS:
        raise InvalidCallEvent("event must be newCall, answer or hangup", "event")
    users = params.get("user") or params.get("user[]") or []
    if isinstance(users, str):
        users = [users]
    agents = [u for u in users if isinstance(u, str) and u]
    if params.get("answeringNumber"):
        agents.append(str(params["answeringNumber"]))
    return CallEvent.from_json(
        {
            "event": ZAMMAD_EVENTS[kind],
            "call_id": params.get("callId") or "",
            "direction": params.get("direction") or "in",
            "from": params.get("from") or "",
            "to": params.get("to") or "",
            "agent": agents,
            "cause": params.get("cause") or None,
            "queue": params.get("queue") or None,
        }
    )


async def _zammad(request: Request, path_token: str | None) -> JSONResponse:
    _check_token(request, path_token)
    if request.headers.get("content-type", "").startswith("application/json"):
        params = await json_object(request, max_bytes=20_000)
    else:
        async with request.form(max_fields=50) as form:
            params = {k: form.get(k) for k in form if k not in ("user", "user[]")}
            params["user"] = [str(u) for u in form.getlist("user[]") + form.getlist("user")]
    params = {k: v for k, v in params.items() if k != "token"}
    for key, value in params.items():
        if key != "user" and value is not None and not isinstance(value, str):
            raise InvalidInput(f"{key} must be text", field=key)
    try:
        event = zammad_event(params)
    except InvalidCallEvent as exc:
        raise _invalid(exc) from None
    return await _apply(request, event)


async def cti_generic(request: Request) -> JSONResponse:
    return await _zammad(request, None)


async def cti_zammad_path(request: Request) -> JSONResponse:
    return await _zammad(request, request.path_params["token"])


@requires(*ANY_STAFF)
async def list_calls(request: Request) -> JSONResponse:
    params = request.query_params
    agent = params.get("agent")
    agent_id = request.state.user.id if agent == "me" else int_field(dict(params), "agent")
    async with request.app.state.db.unit_of_work() as session:
        page = await calls.list_calls(
            session,
            state=params.get("state") or None,
            agent_id=agent_id,
            limit=parse_limit(params.get("limit")),
            cursor=params.get("cursor") or None,
        )
        items = [calls.call_json(c) for c in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@requires(*ANY_STAFF)
async def get_call(request: Request) -> JSONResponse:
    async with request.app.state.db.unit_of_work() as session:
        call = await calls.get_call(session, path_id(request))
        body = calls.call_json(call)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def attach_call(request: Request) -> JSONResponse:
    """`{customer_id?, case_id?, new_case_subject?}`: tie the call to a customer and case."""
    data = await json_object(request, max_bytes=5000)
    async with request.app.state.db.unit_of_work() as session:
        call = await calls.attach(
            session,
            path_id(request),
            user_id=request.state.user.id,
            customer_id=int_field(data, "customer_id"),
            case_id=int_field(data, "case_id"),
            new_case_subject=text_field(data, "new_case_subject", max_len=300),
            scope=scope(request),
        )
        body = calls.call_json(call)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def call_notes(request: Request) -> JSONResponse:
    data = await json_object(request, max_bytes=100_000)
    notes = data.get("notes")
    if not isinstance(notes, str):
        raise InvalidInput("notes must be text", field="notes")
    async with request.app.state.db.unit_of_work() as session:
        call = await calls.set_notes(session, path_id(request), notes)
        body = calls.call_json(call)
    return JSONResponse(body)


routes = [
    Route("/api/cti/events", cti_event, methods=["POST"]),
    Route("/api/cti/generic", cti_generic, methods=["POST"]),
    Route("/api/v1/cti/{token}", cti_zammad_path, methods=["POST"]),
    Route("/api/calls", list_calls, methods=["GET"]),
    Route("/api/calls/{id:int}", get_call, methods=["GET"]),
    Route("/api/calls/{id:int}/attach", attach_call, methods=["POST"]),
    Route("/api/calls/{id:int}/notes", call_notes, methods=["PUT"]),
]
