"""Mail over HTTP: the MTA pipe (`POST /api/mail/inbound`) and agents' email replies."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from helpdesk import cases, interactions
from helpdesk.errors import BadRequest, DeskError, InvalidInput, PayloadTooLarge
from helpdesk.mail import outbound
from helpdesk.mail.ingest import ingest_message
from helpdesk.mail.parsing import MAX_MESSAGE_BYTES
from helpdesk.web import chat
from helpdesk.web.forms import json_object, path_id, text_field
from helpdesk.web.pages import case_context
from helpdesk.web.render import is_htmx, render
from helpdesk.web.security import ANY_STAFF, check_shared_token, requires, scope


async def read_raw_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"message is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"message is larger than {max_bytes} bytes")
    return bytes(body)


async def mail_inbound(request: Request) -> JSONResponse:
    """An MTA pipes one raw RFC 822 message; 200 means it is committed (or was already)."""
    settings = request.app.state.settings
    check_shared_token(request, settings.mail_token, "mail")
    raw = await read_raw_body(request, MAX_MESSAGE_BYTES)
    if not raw.strip():
        raise BadRequest("send the raw RFC 822 message as the request body")
    async with request.app.state.db.unit_of_work() as session:
        result = await ingest_message(session, raw, settings=settings, source="http")
    status = 201 if result.status in ("created", "follow_up") else 200
    return JSONResponse(result.as_json(), status_code=status)


async def _reply(request: Request, case_id: int, body: str, to: list[str] | None) -> dict[str, Any]:
    settings = request.app.state.settings
    async with request.app.state.db.unit_of_work() as session:
        await cases.claim_for_reply(session, case_id, request.state.user)
        entry = await outbound.reply_to_case(
            session,
            settings,
            case_id=case_id,
            author_id=request.state.user.id,
            text=body,
            to=to,
        )
        return {
            "interaction_id": entry.id,
            "case_id": case_id,
            "message_id": entry.meta["message_id"],
            "to": entry.meta["to"],
            "outbox_state": entry.meta["outbox_state"],
        }


@requires(*ANY_STAFF)
async def api_reply(request: Request) -> JSONResponse:
    """`POST /api/cases/{id}/replies {body, channel, to?}`: answer the customer."""
    case_id = path_id(request)
    data = await json_object(request)
    body = text_field(data, "body", required=True, max_len=interactions.MAX_TEXT_CHARS) or ""
    channel = data.get("channel", "email")
    if channel == "chat":
        return JSONResponse(await chat.reply_in_chat(request, case_id, body), status_code=201)
    if channel != "email":
        raise InvalidInput("channel must be email or chat", field="channel")
    to = data.get("to")
    if to is not None and (
        not isinstance(to, list) or not all(isinstance(a, str) for a in to) or len(to) > 20
    ):
        raise InvalidInput("to must be a list of up to 20 email addresses", field="to")
    return JSONResponse(await _reply(request, case_id, body, to or None), status_code=201)


@requires(*ANY_STAFF)
async def page_reply(request: Request) -> Response:
    """The case page's composer: the reply, with the quoted history if the agent kept it."""
    case_id = path_id(request)
    form = await request.form()
    body = str(form.get("body") or "").strip()
    if body and form.get("include_quote"):
        async with request.app.state.db.unit_of_work() as session:
            case = await cases.get_case(session, case_id, scope=scope(request))
            draft = await outbound.reply_draft(session, request.app.state.settings, case)
        if draft.quote:
            body = f"{body}\n\n{draft.quote}"
    try:
        await _reply(request, case_id, body, None)
    except DeskError as exc:
        if not is_htmx(request):
            raise
        return render(request, "_error_fragment.html", {"error": exc}, status=exc.status)
    if is_htmx(request):
        return render(request, "cases/_timeline.html", await case_context(request, case_id))
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


routes = [
    Route("/api/cases/{id:int}/replies", api_reply, methods=["POST"]),
    Route("/cases/{id:int}/replies", page_reply, methods=["POST"]),
    Route("/api/mail/inbound", mail_inbound, methods=["POST"]),
]
