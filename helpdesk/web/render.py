"""Rendering: Jinja2 pages and htmx fragments in the viewer's language and timezone,
and the JSON shapes of the API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from helpdesk.i18n import Viewer, negotiate, zone
from helpdesk.identities import format_phone
from helpdesk.mail.parsing import split_quoted
from helpdesk.models import Attachment, Case, ContactIdentity, Customer, Interaction, User

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
TZ_COOKIE = "helpdesk_tz"


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["phone"] = format_phone
    env.filters["filesize"] = filesize
    env.filters["fromiso"] = _from_iso
    env.filters["split_quoted"] = split_quoted
    return env


def filesize(size: int) -> str:
    """Bytes as people read them: 980 B, 12.3 KB, 10.0 MB."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _from_iso(value: str | None) -> datetime | None:
    """Times stored as text in JSON (chat transcripts), back to datetimes for `dt`."""
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def viewer_for(request: Request) -> Viewer:
    settings = request.app.state.settings
    user: User | None = getattr(request.state, "user", None)
    lang = negotiate(
        user.language if user else request.cookies.get("helpdesk_lang"),
        request.headers.get("accept-language"),
    )
    catalogs = request.app.state.catalogs
    tz_name = (user.timezone if user else None) or request.cookies.get(TZ_COOKIE)
    return Viewer(lang, catalogs.get(lang, catalogs["en"]), zone(tz_name, settings.timezone))


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    viewer = viewer_for(request)
    env: Environment = request.app.state.jinja
    ctx = {
        "request": request,
        "user": getattr(request.state, "user", None),
        "csrf_token": request.scope.get("state", {}).get("csrf_token", ""),
        "viewer": viewer,
        "_": viewer.gettext,
        "ngettext": viewer.ngettext,
        "dt": viewer.datetime,
        "lang": viewer.lang,
        "region": request.app.state.settings.default_region,
        **(context or {}),
    }
    html = env.get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status)


# -- JSON shapes ----------------------------------------------------------------------------


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "extension": user.extension,
        "team_id": user.team_id,
        "language": user.language,
        "timezone": user.timezone,
    }


def identity_json(identity: ContactIdentity) -> dict[str, Any]:
    return {
        "id": identity.id,
        "kind": identity.kind,
        "value": identity.raw_value,
        "normalized": identity.normalized,
        "verified": identity.verified,
        "primary": identity.is_primary,
        "last_seen_at": iso(identity.last_seen_at),
    }


def customer_json(customer: Customer, identities: list[ContactIdentity] | None = None) -> dict:
    body: dict[str, Any] = {
        "id": customer.id,
        "name": customer.name,
        "name_kana": customer.name_kana,
        "organization": customer.organization,
        "language": customer.language,
        "tier": customer.tier,
        "notes": customer.notes,
        "merged_into_id": customer.merged_into_id,
        "erased_at": iso(customer.erased_at),
        "consent": customer.consent or {},
        "contact_preferences": customer.contact_preferences or {},
        "created_at": iso(customer.created_at),
        "updated_at": iso(customer.updated_at),
    }
    if identities is not None:
        body["identities"] = [identity_json(i) for i in identities]
    return body


def case_json(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "number": case.number,
        "customer_id": case.customer_id,
        "subject": case.subject,
        "status": case.status,
        "priority": case.priority,
        "channel": case.channel,
        "assignee_id": case.assignee_id,
        "team_id": case.team_id,
        "tags": list(case.tags or []),
        "created_at": iso(case.created_at),
        "updated_at": iso(case.updated_at),
        "solved_at": iso(case.solved_at),
        "closed_at": iso(case.closed_at),
    }


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": f"/api/attachments/{attachment.id}",
    }


def interaction_json(entry: Interaction) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "direction": entry.direction,
        "customer_id": entry.customer_id,
        "case_id": entry.case_id,
        "author": (
            {"id": entry.author.id, "name": entry.author.name}
            if entry.author_user_id and "author" in entry.__dict__ and entry.author
            else None
        ),
        "subject": entry.subject,
        "text": entry.text,
        "html": entry.html,
        "meta": entry.meta,
        "occurred_at": iso(entry.occurred_at),
        "attachments": [attachment_json(a) for a in entry.__dict__.get("attachments", [])],
    }
