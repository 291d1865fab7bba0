"""The OpenAPI 3.1 description of the JSON API (README "HTTP API"), built as a plain dict.

It lives next to the code so that a new endpoint and its description land in one commit;
`tests/test_api_fuzz.py` checks that every `/api/...` route is described and fuzzes each
operation with schemathesis against it. Request bodies state the limits the endpoints
enforce (types, required fields, maximum lengths); responses describe the success body
loosely (the fields a client relies on) and every error in the one shared shape.
"""

from __future__ import annotations

from typing import Any

from helpdesk.web.forms import MAX_JSON_BYTES

Schema = dict[str, Any]

ERROR_STATUSES = {
    "400": "malformed request: not JSON, not an object, a path id that is no number",
    "401": "no token, or a wrong, expired or revoked one",
    "403": "the token's role may not do this, or the case belongs to another team",
    "404": "no such resource",
    "405": "the path exists, but not for this method (e.g. a slug where an id belongs)",
    "409": "conflict with the current state",
    "411": "a form or upload sent without a Content-Length",
    "413": "the body is larger than the endpoint accepts",
    "422": "validation failed; `field` names the offending input",
    "429": "rate limited; see Retry-After",
    "503": "a backend is unavailable; any endpoint while the database is down (Retry-After)",
}

# Most endpoints cannot answer 429; any may answer 503 while the database is down
# (helpdesk/db.unreachable), which the description says once. Declaring them on every
# operation would only loosen the contract the fuzzer checks.
STAFF_ERRORS = ("400", "401", "403", "404", "409", "413", "422")


def _string(max_length: int | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if max_length is not None:
        schema["maxLength"] = max_length
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


ID: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
TEXT_LIST: Schema = {"type": "array", "items": _string(320), "maxItems": 50}
TAGS: Schema = {"type": "array", "items": _string(50), "maxItems": 30}
OBJECT: Schema = {"type": "object"}
PAGE: Schema = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {"items": {"type": "array"}, "next_cursor": _nullable(_string())},
}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _query(name: str, schema: Schema | None = None, description: str = "") -> Schema:
    param: Schema = {"name": name, "in": "query", "required": False}
    param["schema"] = schema or _string(200)
    if description:
        param["description"] = description
    return param


def _path(name: str = "id", schema: Schema | None = None, description: str = "") -> Schema:
    param: Schema = {"name": name, "in": "path", "required": True, "schema": schema or ID}
    if description:
        param["description"] = description
    return param


LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size")
CURSOR = _query("cursor", _string(500), "the previous page's next_cursor")


def _op(
    summary: str,
    *,
    tag: str,
    security: str | None = "bearer",
    params: list[Schema] | None = None,
    body: Schema | None = None,
    body_type: str = "application/json",
    status: str = "200",
    result: Schema | None = None,
    result_type: str = "application/json",
    errors: tuple[str, ...] = STAFF_ERRORS,
    description: str = "",
    operation_id: str,
) -> Schema:
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    op["security"] = [{security: []}] if security else []
    if params:
        op["parameters"] = params
    if body is not None:
        content = {body_type: {"schema": body}}
        op["requestBody"] = {"required": True, "content": content}
    if status == "204":
        ok: Schema = {"description": "done"}
    else:
        ok = {"description": "success", "content": {result_type: {"schema": result or OBJECT}}}
    responses: Schema = {status: ok}
    needed = set(errors)
    if security is None and errors is STAFF_ERRORS:
        needed.discard("401")
        needed.discard("403")
    if body is None:
        needed.discard("413")
    elif body_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        needed.add("411")  # forms are refused unread without a length (web/forms.FormBodyLimit)
    for code in sorted(needed):
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    op["responses"] = responses
    return op


# -- request bodies ---------------------------------------------------------------------------

TOKEN_REQUEST = _obj({"email": _string(320), "password": _string(1000)}, ("email", "password"))
TOKEN = _obj(
    {
        "access_token": _string(),
        "token_type": {"const": "bearer"},
        "expires_in": {"type": "integer"},
    },
    ("access_token", "token_type", "expires_in"),
)
CUSTOMER_FIELDS: dict[str, Schema] = {
    "name": _string(200),
    "name_kana": _nullable(_string(200)),
    "organization": _nullable(_string(200)),
    "language": _nullable(_string(8)),
    "tier": _string(20),
    "notes": _nullable(_string(20_000)),
}
CUSTOMER_CREATE = _obj(
    {
        **CUSTOMER_FIELDS,
        "phones": TEXT_LIST,
        "emails": TEXT_LIST,
        "identities": {
            "type": "array",
            "maxItems": 50,
            "items": _obj({"kind": _string(16), "value": _string(320)}, ("kind", "value")),
        },
    },
    ("name",),
)
CUSTOMER = _obj({"id": {"type": "integer"}, "name": _string()}, ("id", "name"))
IDENTITY_CREATE = _obj(
    {"kind": _string(16, enum=["phone", "email"]), "value": _string(320), "verified": {}},
    ("kind", "value"),
)
CASE_CREATE = _obj(
    {
        "customer_id": ID,
        "subject": _string(300),
        "channel": _string(16, enum=["phone", "email", "chat", "web", "other"]),
        "priority": _string(16, enum=["low", "normal", "high", "urgent"]),
        "body": _nullable(_string(200_000)),
        "team_id": _nullable(ID),
        "assignee_id": _nullable(ID),
        "tags": TAGS,
    },
    ("customer_id", "subject"),
)
CASE_PATCH = _obj(
    {
        "status": _string(16),
        "priority": _string(16),
        "assignee_id": _nullable(ID),
        "team_id": _nullable(ID),
        "tags": TAGS,
    }
)
CASE = _obj({"id": {"type": "integer"}, "number": {}, "status": _string()}, ("id",))
NOTE = _obj({"body": _string(200_000)}, ("body",))
REPLY = _obj(
    {
        "body": _string(200_000),
        "channel": _string(enum=["email", "chat"]),
        "to": {"type": "array", "items": _string(320), "maxItems": 20},
    },
    ("body",),
)
CHAT_MESSAGE = _obj({"body": _string(4000), "client_id": _string(64)}, ("body",))
ARTICLE_CREATE = _obj(
    {
        "title": _string(300),
        "language": _string(8, enum=["ja", "en"]),
        "body_md": _string(200_000),
        "slug": _nullable(_string(120)),
        "category_id": _nullable(ID),
        "visibility": _string(16, enum=["public", "internal"]),
        "status": _string(16, enum=["draft", "published", "archived"]),
        "tags": TAGS,
        "note": _string(500),
    },
    ("title", "language"),
)
ARTICLE_PATCH = _obj(
    {
        **{k: v for k, v in ARTICLE_CREATE["properties"].items() if k != "language"},
        "expected_revision": {"type": "integer"},
    }
)
CATEGORY = _obj(
    {
        "names": {"type": "object", "additionalProperties": _string(200)},
        "slug": _nullable(_string(120)),
        "parent_id": _nullable(ID),
        "position": {"type": "integer", "minimum": 0, "maximum": 10_000},
    }
)
CALL_EVENT = _obj(
    {
        "event": _string(enum=["ring", "answer", "hangup"]),
        "call_id": _string(200),
        "direction": _string(enum=["in", "out"]),
        "from": _string(64),
        "to": _string(64),
        "agent": {"anyOf": [_string(320), {"type": "array", "items": _string(320)}]},
        "cause": _nullable(_string(32)),
        "queue": _nullable(_string(100)),
        "at": _string(format="date-time"),
    },
    ("event", "call_id"),
)
ZAMMAD_EVENT = _obj(
    {
        "event": _string(enum=["newCall", "answer", "hangup"]),
        "callId": _string(200),
        "direction": _string(enum=["in", "out"]),
        "from": _string(64),
        "to": _string(64),
        "user": {"type": "array", "items": _string(200)},
        "answeringNumber": _string(320),
        "cause": _string(32),
        "queue": _string(100),
    },
    ("event", "callId"),
)

TAG_DESCRIPTIONS = {
    "auth": "tokens and the signed-in user",
    "customers": "customers, identities, timelines, data rights",
    "cases": "cases, notes and replies",
    "chat": "agents' side of web chat",
    "kb": "FAQ articles and search",
    "cti": "call events from a PBX and the call log",
    "mail": "inbound email from an MTA",
    "board": "presence, SLA board, service level",
}


def _also(op: Schema, status: str) -> Schema:
    """The same success body under a second status (201 created / 200 already there)."""
    ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
    op["responses"][status] = ok
    return op


def _paths() -> dict[str, Schema]:
    customer_id = _path(description="customer id")
    case_id = _path(description="case id")
    chat_id = _path(description="conversation id")
    article_id = _path(description="article id")
    call_id = _path(description="call id")
    article_or_slug = _path(
        "id",
        _string(120, pattern="^[A-Za-z0-9_-]+$"),
        "a number: the article by id (staff token); otherwise the slug of a published "
        "public article (no token)",
    )
    return {
        "/api/openapi.json": {
            "get": _op(
                "this description",
                tag="auth",
                security=None,
                errors=(),
                operation_id="openapi",
            )
        },
        "/api/auth/token": {
            "post": _op(
                "exchange email and password for a bearer token",
                tag="auth",
                security=None,
                body=TOKEN_REQUEST,
                result=TOKEN,
                errors=("400", "401", "413", "422", "429"),
                operation_id="authToken",
            )
        },
        "/api/auth/logout": {
            "post": _op("revoke the presented token", tag="auth", operation_id="authLogout")
        },
        "/api/me": {"get": _op("the signed-in user", tag="auth", operation_id="me")},
        "/api/customers": {
            "get": _op(
                "search customers by name, phone (any format) or email",
                tag="customers",
                params=[_query("q"), LIMIT, CURSOR],
                result=PAGE,
                operation_id="listCustomers",
            ),
            "post": _op(
                "create a customer",
                tag="customers",
                body=CUSTOMER_CREATE,
                status="201",
                result=CUSTOMER,
                operation_id="createCustomer",
            ),
        },
        "/api/customers/{id}": {
            "parameters": [customer_id],
            "get": _op(
                "customer + identities + open cases",
                tag="customers",
                result=CUSTOMER,
                operation_id="getCustomer",
            ),
            "patch": _op(
                "change a customer's fields",
                tag="customers",
                body=_obj(CUSTOMER_FIELDS),
                result=CUSTOMER,
                operation_id="patchCustomer",
            ),
        },
        "/api/customers/{id}/identities": {
            "parameters": [customer_id],
            "post": _op(
                "add a phone number or email address",
                tag="customers",
                body=IDENTITY_CREATE,
                status="201",
                operation_id="addIdentity",
            ),
        },
        "/api/customers/{id}/timeline": {
            "parameters": [customer_id],
            "get": _op(
                "every interaction across channels, newest first",
                tag="customers",
                params=[LIMIT, CURSOR],
                result=PAGE,
                operation_id="customerTimeline",
            ),
        },
        "/api/customers/{id}/merge": {
            "parameters": [customer_id],
            "post": _op(
                "merge another customer into this one (supervisor, admin; audited)",
                tag="customers",
                body=_obj({"other_id": ID}, ("other_id",)),
                result=CUSTOMER,
                operation_id="mergeCustomer",
            ),
        },
        "/api/customers/{id}/export": {
            "parameters": [customer_id],
            "get": _op(
                "everything held about the customer, as a zip",
                tag="customers",
                result={"type": "string", "contentMediaType": "application/zip"},
                result_type="application/zip",
                operation_id="exportCustomer",
            ),
        },
        "/api/customers/{id}/erase": {
            "parameters": [customer_id],
            "post": _op(
                "erase the customer (confirm with the id or name; audited)",
                tag="customers",
                body=_obj({"confirm": _string(300), "reason": _string(1000)}, ("confirm",)),
                operation_id="eraseCustomer",
            ),
        },
        "/api/customers/{id}/privacy": {
            "parameters": [customer_id],
            "get": _op(
                "consent and contact preferences", tag="customers", operation_id="getPrivacy"
            ),
        },
        "/api/customers/{id}/consent": {
            "parameters": [customer_id],
            "put": _op(
                "record consent per purpose",
                tag="customers",
                body=_obj(
                    {
                        "consent": {
                            "type": "object",
                            "additionalProperties": {"type": "boolean"},
                        },
                        "source": _string(32),
                    },
                    ("consent", "source"),
                ),
                operation_id="setConsent",
            ),
        },
        "/api/customers/{id}/contact-preferences": {
            "parameters": [customer_id],
            "put": _op(
                "replace the contact preferences",
                tag="customers",
                body=_obj(
                    {
                        "channels": {
                            "type": "array",
                            "items": _string(16, enum=["email", "phone", "chat", "sms"]),
                        },
                        "language": _nullable(_string(8, enum=["ja", "en"])),
                        "do_not_contact": {"type": "boolean"},
                    }
                ),
                operation_id="setContactPreferences",
            ),
        },
        "/api/lookup": {
            "get": _op(
                "screen-pop lookup: every customer with this number, or 404",
                tag="customers",
                params=[{**_query("phone", _string(64)), "required": True}],
                operation_id="lookup",
            )
        },
        "/api/cases": {
            "get": _op(
                "list and filter cases",
                tag="cases",
                params=[
                    _query("status", _string(200), "comma-separated statuses"),
                    _query("assignee", _string(20), "me, unassigned or a user id"),
                    _query("team", _string(20)),
                    _query("customer_id", _string(20)),
                    _query("q"),
                    LIMIT,
                    CURSOR,
                ],
                result=PAGE,
                operation_id="listCases",
            ),
            "post": _op(
                "open a case",
                tag="cases",
                body=CASE_CREATE,
                status="201",
                result=CASE,
                operation_id="createCase",
            ),
        },
        "/api/cases/{id}": {
            "parameters": [case_id],
            "get": _op(
                "case + customer + timeline + SLA clocks",
                tag="cases",
                params=[LIMIT, CURSOR],
                result=CASE,
                operation_id="getCase",
            ),
            "patch": _op(
                "change status, priority, assignee, team or tags",
                tag="cases",
                body=CASE_PATCH,
                result=CASE,
                operation_id="patchCase",
            ),
        },
        "/api/cases/{id}/notes": {
            "parameters": [case_id],
            "post": _op(
                "an internal note (JSON, or multipart `body` + `files`)",
                tag="cases",
                body=NOTE,
                status="201",
                operation_id="addNote",
            ),
        },
        "/api/cases/{id}/replies": {
            "parameters": [case_id],
            "post": _op(
                "answer the customer by email (queued) or into the case's live chat",
                tag="cases",
                body=REPLY,
                status="201",
                operation_id="replyToCase",
            ),
        },
        "/api/attachments/{id}": {
            "parameters": [_path(description="attachment id")],
            "get": _op(
                "an attachment's bytes",
                tag="cases",
                result={"type": "string"},
                result_type="application/octet-stream",
                operation_id="getAttachment",
            ),
        },
        "/api/chats": {
            "get": _op("offered, active, waiting chats", tag="chat", operation_id="listChats")
        },
        "/api/chats/{id}": {
            "parameters": [chat_id],
            "get": _op(
                "summary + messages after `after`",
                tag="chat",
                params=[_query("after", {"type": "integer", "minimum": 0})],
                operation_id="getChat",
            ),
        },
        "/api/chats/{id}/accept": {
            "parameters": [chat_id],
            "post": _op("take an offered chat", tag="chat", operation_id="acceptChat"),
        },
        "/api/chats/{id}/messages": {
            "parameters": [chat_id],
            "post": _also(
                _op(
                    "send a message",
                    tag="chat",
                    body=CHAT_MESSAGE,
                    status="201",
                    result=_obj({"seq": {"type": "integer"}, "duplicate": {"type": "boolean"}}),
                    operation_id="sendChatMessage",
                ),
                "200",
            ),
        },
        "/api/chats/{id}/read": {
            "parameters": [chat_id],
            "post": _op(
                "mark messages read up to seq",
                tag="chat",
                body=_obj({"seq": {"type": "integer", "minimum": 0}}, ("seq",)),
                operation_id="readChat",
            ),
        },
        "/api/chats/{id}/transfer": {
            "parameters": [chat_id],
            "post": _op(
                "hand the chat to an agent or a team",
                tag="chat",
                body=_obj({"agent_id": _nullable(ID), "team_id": _nullable(ID)}),
                operation_id="transferChat",
            ),
        },
        "/api/chats/{id}/close": {
            "parameters": [chat_id],
            "post": _op("end the chat", tag="chat", operation_id="closeChat"),
        },
        "/api/canned-responses": {
            "get": _op(
                "prepared answers",
                tag="chat",
                params=[_query("lang", _string(8)), _query("q", _string(100))],
                operation_id="cannedResponses",
            )
        },
        "/api/teams": {"get": _op("teams", tag="chat", operation_id="listTeams")},
        "/api/chat/uploads": {
            "post": _op(
                "a visitor's file upload (multipart `file`; X-Chat-Token)",
                tag="chat",
                security="chatToken",
                body=_obj(
                    {"file": {"type": "string", "contentMediaType": "application/octet-stream"}},
                    ("file",),
                ),
                body_type="multipart/form-data",
                status="201",
                operation_id="chatUpload",
            )
        },
        "/api/kb/search": {
            "get": _op(
                "public FAQ search (the chat widget); rate-limited per address",
                tag="kb",
                security=None,
                params=[
                    {**_query("q", _string(200)), "required": True},
                    _query("lang", _string(8, enum=["ja", "en"])),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 20}),
                ],
                result=_obj(
                    {
                        "results": {"type": "array"},
                        "total": {"type": "integer"},
                        "degraded": {"type": "boolean"},
                    },
                    ("results", "total", "degraded"),
                ),
                errors=("422", "429"),
                operation_id="kbSearch",
            )
        },
        "/api/kb/articles": {
            "get": _op(
                "list articles (staff)",
                tag="kb",
                params=[
                    _query("language", _string(8)),
                    _query("status", _string(16)),
                    _query("visibility", _string(16)),
                    _query("category_id", _string(20)),
                    _query("q"),
                    LIMIT,
                    CURSOR,
                ],
                result=PAGE,
                operation_id="listArticles",
            ),
            "post": _op(
                "write an article (supervisor, admin)",
                tag="kb",
                body=ARTICLE_CREATE,
                status="201",
                operation_id="createArticle",
            ),
        },
        "/api/kb/articles/{id}": {
            "get": _op(
                "an article by id (staff), or a published public article by slug (public)",
                tag="kb",
                security=None,
                params=[article_or_slug, _query("lang", _string(8))],
                errors=("400", "401", "403", "404", "422", "429"),
                description="With a numeric id a staff bearer token is required.",
                operation_id="getArticle",
            ),
            "patch": _op(
                "edit an article; expected_revision guards against lost updates (409)",
                tag="kb",
                params=[article_id],
                body=ARTICLE_PATCH,
                errors=(*STAFF_ERRORS, "405"),
                operation_id="patchArticle",
            ),
        },
        "/api/kb/articles/{id}/status": {
            "parameters": [article_id],
            "post": _op(
                "publish, archive or draft",
                tag="kb",
                body=_obj(
                    {"status": _string(16, enum=["draft", "published", "archived"])},
                    ("status",),
                ),
                operation_id="setArticleStatus",
            ),
        },
        "/api/kb/articles/{id}/revisions": {
            "parameters": [article_id],
            "get": _op("revision history", tag="kb", operation_id="articleRevisions"),
        },
        "/api/kb/articles/{id}/revisions/{n}/restore": {
            "parameters": [article_id, _path("n", description="revision number")],
            "post": _op("restore a revision", tag="kb", operation_id="restoreRevision"),
        },
        "/api/kb/articles/{id}/translations": {
            "parameters": [article_id],
            "post": _op(
                "translate an article",
                tag="kb",
                body=_obj(
                    {k: v for k, v in ARTICLE_CREATE["properties"].items()},
                    ("language", "title"),
                ),
                status="201",
                operation_id="createTranslation",
            ),
        },
        "/api/kb/categories": {
            "get": _op(
                "the category tree",
                tag="kb",
                params=[_query("lang", _string(8))],
                operation_id="listCategories",
            ),
            "post": _op(
                "create a category",
                tag="kb",
                body=CATEGORY,
                status="201",
                operation_id="createCategory",
            ),
        },
        "/api/kb/categories/{id}": {
            "parameters": [_path(description="category id")],
            "patch": _op(
                "rename or move a category", tag="kb", body=CATEGORY, operation_id="patchCategory"
            ),
            "delete": _op(
                "delete a category (its articles lose it)",
                tag="kb",
                status="204",
                operation_id="deleteCategory",
            ),
        },
        "/api/search": {
            "get": _op(
                "search everything (staff)",
                tag="kb",
                params=[{**_query("q", _string(200)), "required": True}, LIMIT],
                operation_id="searchEverything",
            )
        },
        "/api/mail/inbound": {
            "post": _also(
                _op(
                    "one raw RFC 822 message from an MTA",
                    tag="mail",
                    security="mailToken",
                    body={"type": "string", "maxLength": 30 * 1024 * 1024},
                    body_type="message/rfc822",
                    result=_obj({"status": _string(), "parse_errors": {"type": "array"}}),
                    description="201 when it opened a case (created, follow_up), 200 otherwise.",
                    operation_id="mailInbound",
                ),
                "201",
            )
        },
        "/api/cti/events": {
            "post": _op(
                "a normalized call event (DESIGN.md); idempotent by (call_id, event)",
                tag="cti",
                security="ctiToken",
                body=CALL_EVENT,
                result=_obj({"duplicate": {"type": "boolean"}, "call": OBJECT}, ("duplicate",)),
                operation_id="ctiEvent",
            )
        },
        "/api/cti/generic": {
            "post": _op(
                "a Zammad Generic CTI event (JSON or form)",
                tag="cti",
                security="ctiToken",
                body=ZAMMAD_EVENT,
                operation_id="ctiGeneric",
            )
        },
        "/api/v1/cti/{token}": {
            "parameters": [_path("token", _string(200), "the CTI token, at Zammad's path")],
            "post": _op(
                "the Zammad Generic CTI event at Zammad's path",
                tag="cti",
                security=None,
                body=ZAMMAD_EVENT,
                errors=("400", "401", "404", "409", "413", "422"),
                operation_id="ctiZammadPath",
            ),
        },
        "/api/calls": {
            "get": _op(
                "the call log",
                tag="cti",
                params=[
                    _query("state", _string(16)),
                    _query("agent", _string(20), "me or a user id"),
                    LIMIT,
                    CURSOR,
                ],
                result=PAGE,
                operation_id="listCalls",
            )
        },
        "/api/calls/{id}": {
            "parameters": [call_id],
            "get": _op("one call", tag="cti", operation_id="getCall"),
        },
        "/api/calls/{id}/attach": {
            "parameters": [call_id],
            "post": _op(
                "tie the call to a customer and case",
                tag="cti",
                body=_obj(
                    {
                        "customer_id": _nullable(ID),
                        "case_id": _nullable(ID),
                        "new_case_subject": _nullable(_string(300)),
                    }
                ),
                operation_id="attachCall",
            ),
        },
        "/api/calls/{id}/notes": {
            "parameters": [call_id],
            "put": _op(
                "notes taken while talking",
                tag="cti",
                body=_obj({"notes": _string(20_000)}, ("notes",)),
                operation_id="setCallNotes",
            ),
        },
        "/api/presence": {
            "get": _op("every staff member's status", tag="board", operation_id="listPresence"),
            "put": _op(
                "set my own status",
                tag="board",
                body=_obj(
                    {"status": _string(16, enum=["available", "busy", "away", "offline"])},
                    ("status",),
                ),
                operation_id="setPresence",
            ),
        },
        "/api/hub": {"get": _op("hub figures", tag="board", operation_id="hubStats")},
        "/api/sla/board": {
            "get": _op(
                "the SLA board (supervisor, admin)",
                tag="board",
                params=[_query("team", _string(20))],
                operation_id="slaBoard",
            )
        },
        "/api/metrics/service-level": {
            "get": _op(
                "service level, ASA, AHT, abandonment, FCR, CSAT (docs/METRICS.md)",
                tag="board",
                params=[
                    _query("from", _string(40), "ISO date or date-time"),
                    _query("to", _string(40), "ISO date or date-time"),
                    _query("team", _string(20)),
                ],
                operation_id="serviceLevel",
            )
        },
        "/api/sla/preview": {
            "get": _op(
                "which SLA policy and deadlines a case with these facts gets",
                tag="board",
                params=[
                    _query("priority", _string(16)),
                    _query("channel", _string(16)),
                    _query("tier", _string(20)),
                    _query("team_id", _string(20)),
                    _query("created_at", _string(40)),
                    _query("case", _string(20), "a case number"),
                ],
                operation_id="slaPreview",
            )
        },
    }


def _components() -> Schema:
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "allowed": {"type": "array", "items": {"type": "string"}},
                    "retry_after": {"type": "integer"},
                },
            }
        },
    }
    return {
        "schemas": {"Error": error},
        "responses": {
            f"E{code}": {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code, text in ERROR_STATUSES.items()
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "a staff token from POST /api/auth/token",
            },
            "ctiToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "HELPDESK_CTI_TOKEN (also accepted as ?token=)",
            },
            "mailToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "HELPDESK_MAIL_TOKEN (also accepted as ?token=)",
            },
            "chatToken": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Chat-Token",
                "description": "the visitor's chat token",
            },
        },
    }


def openapi_document(server_url: str = "/") -> Schema:
    """The whole OpenAPI 3.1 document; `server_url` is where the API is served."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Helpdesk JSON API",
            "version": "1",
            "description": (
                'Errors are always `{"error": {"code", "message", "field"?}}`. JSON '
                f"bodies are limited to {MAX_JSON_BYTES} bytes unless an endpoint says less."
            ),
        },
        "servers": [{"url": server_url}],
        "tags": [{"name": k, "description": v} for k, v in TAG_DESCRIPTIONS.items()],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(),
    }
