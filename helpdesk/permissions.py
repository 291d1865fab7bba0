"""Who may call what: every route of the app with the roles or token it needs, in one table.

`RULES` is the matrix that `docs/PERMISSIONS.md` is generated from (`python -m
helpdesk.permissions > docs/PERMISSIONS.md`) and that `tests/test_permissions.py` checks
against the running app, route by route and role by role. A new route without an entry
fails that test, so nothing is reachable by accident.

Enforcement stays where it was: `helpdesk.web.security.requires(*roles)` on each endpoint,
shared-token checks in the CTI and mail adapters, chat tokens in the chat module. This table
is the written contract those checks are held to. The row-level rule (which team's cases a
user may see) is `helpdesk/visibility.py`, applied by the domain functions it names.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("agent", "supervisor", "admin")


@dataclass(frozen=True)
class Access:
    """How a route is reached: `kind` is `staff` (a user's token, one of `roles`), `public`,
    `shared_token` (the CTI or mail secret) or `chat_token` (a visitor's conversation)."""

    kind: str
    roles: tuple[str, ...] = ()
    note: str = ""
    # A public browser form: without its CSRF token, or from another site's page, it answers
    # 403 (login checks the CSRF token, votes the Origin).
    csrf_form: bool = False

    def allows(self, role: str | None) -> bool:
        """Whether a user of `role` (None: no token) passes the access check."""
        if self.kind == "staff":
            return role in self.roles
        return True

    @property
    def label(self) -> str:
        if self.kind == "staff":
            return ", ".join(self.roles)
        return {
            "public": "public",
            "shared_token": "shared token",
            "chat_token": "chat token",
        }[self.kind]


def public(note: str = "", *, csrf_form: bool = False) -> Access:
    return Access("public", note=note, csrf_form=csrf_form)


def chat_token(note: str = "") -> Access:
    return Access("chat_token", note=note)


def staff_socket() -> Access:
    return Access("staff", ROLES, "JWT in ?token= or the session cookie; closes 4401/4403")


PUBLIC = public()
STAFF = Access("staff", ROLES)
SUPERVISORS = Access("staff", ("supervisor", "admin"))
ADMINS = Access("staff", ("admin",))
CTI_TOKEN = Access("shared_token", note="HELPDESK_CTI_TOKEN (rotated at /admin/cti)")
MAIL_TOKEN = Access("shared_token", note="HELPDESK_MAIL_TOKEN")
CHAT_TOKEN = chat_token("the visitor's conversation token reaches only that conversation")

# (method, path) -> access. Methods as Starlette lists them (HEAD and CORS OPTIONS aside);
# "WS" for WebSocket routes. Paths exactly as in the route table.
RULES: dict[tuple[str, str], Access] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): public("Prometheus text; no personal data. Restrict at the proxy."),
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): public("rate-limited; a CSRF token is required", csrf_form=True),
    ("POST", "/logout"): STAFF,
    ("POST", "/preferences"): STAFF,
    ("POST", "/api/auth/token"): public("rate-limited"),
    ("POST", "/api/auth/logout"): STAFF,
    # An admin's own second factor (TOTP): enabling and disabling each need a valid code.
    ("GET", "/account/totp"): ADMINS,
    ("POST", "/account/totp/enable"): ADMINS,
    ("POST", "/account/totp/disable"): ADMINS,
    ("GET", "/api/me"): STAFF,
    ("GET", "/api/customers"): STAFF,
    ("POST", "/api/customers"): STAFF,
    ("GET", "/api/customers/{id:int}"): STAFF,
    ("PATCH", "/api/customers/{id:int}"): STAFF,
    ("POST", "/api/customers/{id:int}/identities"): STAFF,
    ("GET", "/api/customers/{id:int}/timeline"): STAFF,
    ("POST", "/api/customers/{id:int}/merge"): SUPERVISORS,
    ("GET", "/api/lookup"): STAFF,
    ("GET", "/api/cases"): STAFF,
    ("POST", "/api/cases"): STAFF,
    ("GET", "/api/cases/{id:int}"): STAFF,
    ("PATCH", "/api/cases/{id:int}"): STAFF,
    ("POST", "/api/cases/{id:int}/notes"): STAFF,
    ("GET", "/api/attachments/{id:int}"): STAFF,
    ("WS", "/ws/agent"): staff_socket(),
    ("GET", "/api/presence"): STAFF,
    ("PUT", "/api/presence"): STAFF,
    ("GET", "/api/hub"): SUPERVISORS,
    ("POST", "/api/cti/events"): CTI_TOKEN,
    ("POST", "/api/cti/generic"): CTI_TOKEN,
    ("POST", "/api/v1/cti/{token}"): CTI_TOKEN,
    ("GET", "/api/calls"): STAFF,
    ("GET", "/api/calls/{id:int}"): STAFF,
    ("POST", "/api/calls/{id:int}/attach"): STAFF,
    ("PUT", "/api/calls/{id:int}/notes"): STAFF,
    ("POST", "/api/cases/{id:int}/replies"): STAFF,
    ("POST", "/cases/{id:int}/replies"): STAFF,
    ("POST", "/api/mail/inbound"): MAIL_TOKEN,
    ("WS", "/ws/chat"): CHAT_TOKEN,
    ("POST", "/api/chat/uploads"): CHAT_TOKEN,
    ("GET", "/chat/files/{id:int}"): chat_token(
        "the visitor with that chat's token, or any staff session"
    ),
    ("GET", "/api/chats"): STAFF,
    ("GET", "/api/chats/{id:int}"): STAFF,
    ("POST", "/api/chats/{id:int}/accept"): STAFF,
    ("POST", "/api/chats/{id:int}/messages"): STAFF,
    ("POST", "/api/chats/{id:int}/read"): STAFF,
    ("POST", "/api/chats/{id:int}/transfer"): STAFF,
    ("POST", "/api/chats/{id:int}/close"): STAFF,
    ("GET", "/api/canned-responses"): STAFF,
    ("GET", "/api/teams"): STAFF,
    ("GET", "/demo/site"): PUBLIC,
    ("GET", "/help"): PUBLIC,
    ("GET", "/help/search"): public("rate-limited"),
    ("GET", "/help/{lang}/c/{slug}"): PUBLIC,
    ("GET", "/help/{lang}/{slug}"): PUBLIC,
    ("POST", "/help/{lang}/{slug}/vote"): public(
        "only from the help center's own pages (Origin)", csrf_form=True
    ),
    ("GET", "/api/kb/search"): public("rate-limited; published articles only"),
    ("GET", "/api/kb/articles"): STAFF,
    ("POST", "/api/kb/articles"): SUPERVISORS,
    ("GET", "/api/kb/articles/{id:int}"): STAFF,
    ("PATCH", "/api/kb/articles/{id:int}"): SUPERVISORS,
    ("POST", "/api/kb/articles/{id:int}/status"): SUPERVISORS,
    ("GET", "/api/kb/articles/{id:int}/revisions"): STAFF,
    ("POST", "/api/kb/articles/{id:int}/revisions/{n:int}/restore"): SUPERVISORS,
    ("POST", "/api/kb/articles/{id:int}/translations"): SUPERVISORS,
    ("GET", "/api/kb/articles/{slug}"): public("published articles only"),
    ("GET", "/api/kb/categories"): STAFF,
    ("POST", "/api/kb/categories"): SUPERVISORS,
    ("PATCH", "/api/kb/categories/{id:int}"): SUPERVISORS,
    ("DELETE", "/api/kb/categories/{id:int}"): SUPERVISORS,
    ("GET", "/api/search"): STAFF,
    ("GET", "/kb"): STAFF,
    ("GET", "/kb/{id:int}"): STAFF,
    ("GET", "/kb/{lang}/{slug}"): public(
        "staff with a token see the agents' view; others are sent to /help"
    ),
    ("GET", "/search"): STAFF,
    ("GET", "/cases/{id:int}/kb-suggestions"): STAFF,
    ("GET", "/admin/kb"): SUPERVISORS,
    ("POST", "/admin/kb"): SUPERVISORS,
    ("GET", "/admin/kb/new"): SUPERVISORS,
    ("POST", "/admin/kb/preview"): SUPERVISORS,
    ("GET", "/admin/kb/categories"): SUPERVISORS,
    ("POST", "/admin/kb/categories"): SUPERVISORS,
    ("POST", "/admin/kb/categories/{id:int}"): SUPERVISORS,
    ("POST", "/admin/kb/categories/{id:int}/delete"): SUPERVISORS,
    ("POST", "/admin/kb/{id:int}"): SUPERVISORS,
    ("GET", "/admin/kb/{id:int}/edit"): SUPERVISORS,
    ("POST", "/admin/kb/{id:int}/status"): SUPERVISORS,
    ("GET", "/admin/kb/{id:int}/revisions/{n:int}"): SUPERVISORS,
    ("POST", "/admin/kb/{id:int}/revisions/{n:int}/restore"): SUPERVISORS,
    ("GET", "/admin/sla"): SUPERVISORS,
    ("GET", "/admin/sla/calendars/new"): ADMINS,
    ("POST", "/admin/sla/calendars"): ADMINS,
    ("GET", "/admin/sla/calendars/{id:int}"): SUPERVISORS,
    ("POST", "/admin/sla/calendars/{id:int}"): ADMINS,
    ("GET", "/admin/sla/policies/new"): ADMINS,
    ("POST", "/admin/sla/policies"): ADMINS,
    ("GET", "/admin/sla/policies/{id:int}"): SUPERVISORS,
    ("POST", "/admin/sla/policies/{id:int}"): ADMINS,
    ("POST", "/admin/sla/policies/{id:int}/move"): ADMINS,
    ("POST", "/admin/sla/policies/{id:int}/active"): ADMINS,
    ("GET", "/admin/sla/preview"): SUPERVISORS,
    ("GET", "/api/sla/preview"): SUPERVISORS,
    ("GET", "/admin"): SUPERVISORS,
    ("GET", "/admin/agents"): SUPERVISORS,
    ("POST", "/admin/agents"): ADMINS,
    ("GET", "/admin/agents/new"): ADMINS,
    ("GET", "/admin/agents/{id:int}"): SUPERVISORS,
    ("POST", "/admin/agents/{id:int}"): ADMINS,
    ("POST", "/admin/agents/{id:int}/active"): ADMINS,
    ("GET", "/admin/teams"): SUPERVISORS,
    ("POST", "/admin/teams"): ADMINS,
    ("POST", "/admin/teams/{id:int}"): ADMINS,
    ("POST", "/admin/teams/{id:int}/delete"): ADMINS,
    ("GET", "/admin/cti"): SUPERVISORS,
    ("POST", "/admin/cti/rotate"): ADMINS,
    ("GET", "/admin/mailboxes"): SUPERVISORS,
    ("GET", "/admin/canned"): SUPERVISORS,
    ("POST", "/admin/canned"): ADMINS,
    ("GET", "/admin/canned/new"): ADMINS,
    ("GET", "/admin/canned/{id:int}"): SUPERVISORS,
    ("POST", "/admin/canned/{id:int}"): ADMINS,
    ("POST", "/admin/canned/{id:int}/delete"): ADMINS,
    ("GET", "/admin/audit"): ADMINS,
    ("GET", "/board"): SUPERVISORS,
    ("GET", "/api/sla/board"): SUPERVISORS,
    ("GET", "/api/metrics/service-level"): SUPERVISORS,
    ("GET", "/api/customers/{id:int}/export"): SUPERVISORS,
    ("POST", "/api/customers/{id:int}/erase"): SUPERVISORS,
    ("GET", "/api/customers/{id:int}/privacy"): STAFF,
    ("PUT", "/api/customers/{id:int}/consent"): STAFF,
    ("PUT", "/api/customers/{id:int}/contact-preferences"): STAFF,
    ("POST", "/customers/{id:int}/export"): SUPERVISORS,
    ("GET", "/customers/{id:int}/erase"): SUPERVISORS,
    ("POST", "/customers/{id:int}/erase"): SUPERVISORS,
    ("POST", "/customers/{id:int}/consent"): STAFF,
    ("POST", "/customers/{id:int}/contact-preferences"): STAFF,
    ("GET", "/calls/{id:int}/card"): STAFF,
    ("POST", "/calls/{id:int}/attach"): STAFF,
    ("POST", "/calls/{id:int}/notes"): STAFF,
    ("GET", "/"): public("redirects to /agent"),
    ("GET", "/agent"): STAFF,
    ("GET", "/customers"): STAFF,
    ("GET", "/customers/new"): STAFF,
    ("POST", "/customers"): STAFF,
    ("GET", "/customers/{id:int}"): STAFF,
    ("GET", "/customers/{id:int}/timeline"): STAFF,
    ("GET", "/cases"): STAFF,
    ("GET", "/cases/new"): STAFF,
    ("POST", "/cases"): STAFF,
    ("GET", "/cases/{id:int}"): STAFF,
    ("GET", "/cases/{id:int}/timeline"): STAFF,
    ("POST", "/cases/{id:int}/fields"): STAFF,
    ("POST", "/cases/{id:int}/notes"): STAFF,
}

# Mounted apps: every path below the prefix is public.
PUBLIC_MOUNTS = ("/static",)


def access_for(method: str, path: str) -> Access | None:
    return RULES.get((method, path))


def markdown() -> str:
    """The matrix as `docs/PERMISSIONS.md` holds it."""
    lines = [
        "# Permissions",
        "",
        "Generated from `helpdesk/permissions.py` (`python -m helpdesk.permissions >"
        " docs/PERMISSIONS.md`);",
        "`tests/test_permissions.py` calls every route as each role and checks the answers",
        "against this table, and fails for a route that is not in it.",
        "",
        "- **agent**, **supervisor**, **admin**: a user's JWT (`Authorization: Bearer`, or the",
        "  session cookie with a CSRF token on writes). Without one: 401 (API, writes) or a",
        "  redirect to `/login` (pages). With a role not listed: 403.",
        "- **public**: no authentication.",
        "- **shared token**: a machine's secret (CTI bridge / PBX, MTA pipe), never a user's JWT.",
        "- **chat token**: a visitor's conversation token; it reaches only that conversation.",
        "",
        "Admins change settings; supervisors may read the admin pages that hold no secrets",
        "and no audit data (agents, teams, CTI status, mailboxes, canned responses, SLA).",
        "",
        "## Which cases: the row-level rule",
        "",
        "On top of this table, `helpdesk/visibility.py` decides which cases a user sees:",
        "",
        "- **admins** see every case;",
        "- an **agent or supervisor who belongs to a team** sees that team's cases, cases of",
        "  no team (the shared queue) and cases assigned to them by name;",
        "- a user of **no team** is not limited (a desk that uses no teams works as before).",
        "",
        "Another team's case answers 403 naming the case on every route that takes a case id",
        "(API, pages, replies, notes, KB suggestions, attaching a call, attachments), and is",
        "left out of case lists and counts, the customer card and timeline (with its",
        "interactions), the screen-pop card, search everything, live events (`case_updated`,",
        "SLA and chat events to sockets of other teams; a user moved to another team has",
        "their open sockets follow at once) and the chats waiting list. A",
        "supervisor of a team watches that team's board only (`team=all` or another team:",
        "403). `tests/test_visibility.py` walks every case route as team A with team B's case.",
        "A customer's export and erasure (data-subject requests) cover all their data whatever",
        "the team: they are supervisor and admin actions, confirmed and audited.",
        "",
        "## Which routes: the role matrix",
        "",
        "| method | path | agent | supervisor | admin | anonymous | notes |",
        "| --- | --- | :-: | :-: | :-: | :-: | --- |",
    ]
    for (method, path), access in sorted(RULES.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = []
        for role in ROLES:
            cells.append("yes" if access.kind == "staff" and role in access.roles else "")
        if access.kind != "staff":
            cells = [access.label] * 3
        anonymous = access.label if access.kind != "staff" else ""
        lines.append(f"| {method} | `{path}` | {' | '.join(cells)} | {anonymous} | {access.note} |")
    lines.append(f"| any | `{PUBLIC_MOUNTS[0]}/...` | public | public | public | public | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
