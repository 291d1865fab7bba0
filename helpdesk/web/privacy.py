"""Customer data rights on the web: export (zip download), erasure with a confirmation
step, consent and contact preferences; as pages and as JSON (helpdesk/privacy.py decides).

Who may do what: every staff member sees and records consent and contact preferences
(agents hear them on the phone); supervisors and admins export and erase.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from helpdesk import customers, privacy
from helpdesk.errors import InvalidInput
from helpdesk.web.forms import json_object, path_id, text_field
from helpdesk.web.render import render
from helpdesk.web.security import ANY_STAFF, requires

DATA_OFFICERS = ("supervisor", "admin")
CHUNK = 1 << 16


# -- export ---------------------------------------------------------------------------------


async def _export_response(request: Request) -> StreamingResponse:
    """Build the zip in an anonymous temporary file (gone when closed, even after a crash),
    then stream it: a long history never sits in memory."""
    customer_id = path_id(request)
    settings = request.app.state.settings
    # Closed by the response once sent (or abandoned), not by a `with` here.
    spool: IO[bytes] = tempfile.TemporaryFile(prefix="helpdesk-export-")  # noqa: SIM115
    try:
        async with request.app.state.db.unit_of_work() as session:
            summary = await privacy.export_customer(
                session,
                customer_id,
                settings.attachments_dir,
                spool,
                actor_user_id=request.state.user.id,
            )
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while data := await anyio.to_thread.run_sync(spool.read, CHUNK):
                yield data
        finally:
            spool.close()

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{summary.filename}"',
            "Content-Length": str(size),
            "Cache-Control": "no-store",
        },
        background=BackgroundTask(spool.close),  # also when the client went away mid-way
    )


@requires(*DATA_OFFICERS)
async def api_export(request: Request) -> Response:
    return await _export_response(request)


@requires(*DATA_OFFICERS)
async def export_download(request: Request) -> Response:
    """The customer page's "Export data" button: a form post (CSRF-checked) answered with
    the zip, which the browser saves."""
    return await _export_response(request)


# -- erasure --------------------------------------------------------------------------------


@requires(*DATA_OFFICERS)
async def api_erase(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    data = await json_object(request)
    confirm = text_field(data, "confirm", max_len=300) or ""
    reason = text_field(data, "reason", max_len=privacy.MAX_REASON_CHARS) or ""
    async with request.app.state.db.unit_of_work() as session:
        report = await privacy.erase_customer(
            session,
            customer_id,
            request.app.state.settings.attachments_dir,
            actor_user_id=request.state.user.id,
            reason=reason,
            confirm=confirm,
        )
    return JSONResponse(report.as_dict())  # after the commit: files_deleted is known


async def _erase_page(
    request: Request, values: dict[str, str], error: InvalidInput | None = None
) -> Response:
    customer_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        card = await customers.customer_card(session, customer_id)
        preview = await privacy.erasure_preview(session, customer_id)
    return render(
        request,
        "privacy/erase.html",
        {"customer": card.customer, "preview": preview, "values": values, "error": error},
        status=422 if error else 200,
    )


@requires(*DATA_OFFICERS)
async def erase_form(request: Request) -> Response:
    """The confirmation step: what goes, what stays, and the customer's id or name to type."""
    return await _erase_page(request, {"confirm": "", "reason": ""})


@requires(*DATA_OFFICERS)
async def erase_submit(request: Request) -> Response:
    customer_id = path_id(request)
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("confirm", "reason")}
    try:
        async with request.app.state.db.unit_of_work() as session:
            await privacy.erase_customer(
                session,
                customer_id,
                request.app.state.settings.attachments_dir,
                actor_user_id=request.state.user.id,
                reason=values["reason"][: privacy.MAX_REASON_CHARS + 1],
                confirm=values["confirm"][:300],
            )
    except InvalidInput as exc:
        return await _erase_page(request, values, exc)
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


# -- consent and contact preferences --------------------------------------------------------


@requires(*ANY_STAFF)
async def api_privacy(request: Request) -> JSONResponse:
    customer_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        customer = await customers.get_customer(session, customer_id)
        body = privacy.privacy_json(customer)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_consent(request: Request) -> JSONResponse:
    """`{"consent": {"marketing": false, ...}, "source": "phone"}`; purposes not named keep
    what they had."""
    customer_id = path_id(request)
    data = await json_object(request)
    changes = data.get("consent")
    if not isinstance(changes, dict):
        raise InvalidInput("consent must be an object of purpose: true|false", field="consent")
    source = text_field(data, "source", required=True, max_len=32) or ""
    async with request.app.state.db.unit_of_work() as session:
        customer = await privacy.set_consent(
            session, customer_id, changes, source=source, actor_user_id=request.state.user.id
        )
        body = privacy.privacy_json(customer)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_contact_preferences(request: Request) -> JSONResponse:
    """`{"channels": ["email", ...], "language": "ja"|"en"|null, "do_not_contact": bool}`,
    replacing what was recorded."""
    customer_id = path_id(request)
    data = await json_object(request)
    async with request.app.state.db.unit_of_work() as session:
        customer = await privacy.set_contact_preferences(
            session, customer_id, data, actor_user_id=request.state.user.id
        )
        body = privacy.privacy_json(customer)
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def consent_submit(request: Request) -> Response:
    """The customer page's consent form: one choice per purpose, blank for "no change"."""
    customer_id = path_id(request)
    form = await request.form()
    changes: dict[str, Any] = {}
    for purpose in privacy.CONSENT_PURPOSES:
        choice = str(form.get(f"consent_{purpose}") or "")
        if choice in ("granted", "refused"):
            changes[purpose] = choice == "granted"
        elif choice:
            raise InvalidInput(f"choose granted or refused for {purpose}", field="consent")
    if changes:
        async with request.app.state.db.unit_of_work() as session:
            await privacy.set_consent(
                session,
                customer_id,
                changes,
                source=str(form.get("source") or ""),
                actor_user_id=request.state.user.id,
            )
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


@requires(*ANY_STAFF)
async def contact_preferences_submit(request: Request) -> Response:
    customer_id = path_id(request)
    form = await request.form()
    preferences = {
        "channels": [str(c) for c in form.getlist("channels")],
        "language": str(form.get("language") or "") or None,
        "do_not_contact": form.get("do_not_contact") == "on",
    }
    async with request.app.state.db.unit_of_work() as session:
        await privacy.set_contact_preferences(
            session, customer_id, preferences, actor_user_id=request.state.user.id
        )
    return RedirectResponse(f"/customers/{customer_id}", status_code=303)


routes = [
    Route("/api/customers/{id:int}/export", api_export, methods=["GET"]),
    Route("/api/customers/{id:int}/erase", api_erase, methods=["POST"]),
    Route("/api/customers/{id:int}/privacy", api_privacy, methods=["GET"]),
    Route("/api/customers/{id:int}/consent", api_consent, methods=["PUT"]),
    Route("/api/customers/{id:int}/contact-preferences", api_contact_preferences, methods=["PUT"]),
    Route("/customers/{id:int}/export", export_download, methods=["POST"]),
    Route("/customers/{id:int}/erase", erase_form, methods=["GET"]),
    Route("/customers/{id:int}/erase", erase_submit, methods=["POST"]),
    Route("/customers/{id:int}/consent", consent_submit, methods=["POST"]),
    Route("/customers/{id:int}/contact-preferences", contact_preferences_submit, methods=["POST"]),
]
