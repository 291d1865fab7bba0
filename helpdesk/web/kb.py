"""The knowledge base on the web: the public help center (`/help`), the KB API (public search
for the chat widget, staff reads and editors' writes), the agents' pages (`/kb`, `/search`,
the case sidebar's suggestions) and the editors' admin (`/admin/kb`).

Endpoints parse, call the domain (`knowledge_base.articles`, `.categories`) or the search port
(`app.state.search`), and render. After an article write commits, the saved articles are
handed to the search port (a no-op on PostgreSQL, needed for Elasticsearch); a failure there
is logged, never raised: the save stands and `helpdesk kb reindex` repairs the index.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from helpdesk import cases, interactions
from helpdesk.errors import (
    Conflict,
    DeskError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooManyRequests,
)
from helpdesk.i18n import Viewer, negotiate
from helpdesk.mail.parsing import split_quoted
from helpdesk.models import User
from helpdesk.pagination import parse_limit
from helpdesk.web.forms import int_field, json_object, path_id, text_field
from helpdesk.web.render import is_htmx, iso, render, viewer_for
from helpdesk.web.security import ANY_STAFF, bearer_token, error_body, requires, scope
from knowledge_base import articles, categories
from knowledge_base.markdown import render as render_markdown
from knowledge_base.models import (
    ARTICLE_STATUSES,
    ARTICLE_VISIBILITIES,
    KB_LANGUAGES,
    KbArticle,
    KbCategory,
    KbRevision,
    KbVote,
)
from knowledge_base.search import (
    AGENT_FILTERS,
    ArticleDoc,
    EverythingHit,
    Filters,
    Hit,
    category_paths,
)

log = logging.getLogger(__name__)

EDITORS = ("supervisor", "admin")
LANGUAGE_NAMES = {"ja": "日本語", "en": "English"}
LANG_COOKIE = "helpdesk_lang"
VOTER_COOKIE = "helpdesk_voter"
VOTER_COOKIE_SECONDS = 2 * 365 * 24 * 3600
MAX_QUERY_CHARS = 200
API_SEARCH_MAX = 10
HELP_PAGE = 20
KB_PAGE = 25
SUGGESTIONS = 5
# The widget runs on the company's own site, another origin than the desk.
CORS = {"Access-Control-Allow-Origin": "*"}


# -- rate limiting ---------------------------------------------------------------------------


class SlidingWindowLimiter:
    """At most `limit` requests per `window` seconds per key (a client address), counted
    over a sliding window of the requests' own times.

    Held in memory on `app.state` (made in the lifespan): with several app processes each one
    counts only the requests it answered, so the limit is per process (N processes behind a
    load balancer let a client make up to N × `limit`). Keys idle for a whole window are
    dropped when the table grows past `max_keys`, so a scan from many addresses cannot grow
    it without bound.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float | None:
        """Count one request for `key`: None if it is allowed, else the seconds until one
        would be (the request is then not counted)."""
        now = self.clock()
        stamps = self._hits.get(key)
        if stamps is None:
            if len(self._hits) >= self.max_keys:
                self._forget_idle(now)
            stamps = self._hits[key] = deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) >= self.limit:
            return stamps[0] + self.window - now
        stamps.append(now)
        return None

    def clear(self) -> None:
        self._hits.clear()

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, s in self._hits.items() if not s or s[-1] <= now - self.window]
        for key in idle:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:  # all busy: start over rather than grow
            self._hits.clear()


def _throttle(request: Request) -> None:
    limiter: SlidingWindowLimiter = request.app.state.kb_search_limit
    address = request.client.host if request.client else "unknown"
    wait = limiter.hit(address)
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        raise TooManyRequests(
            f"too many searches from this address: at most {limiter.limit} per "
            f"{limiter.window:g} seconds; try again in {seconds} s",
            retry_after=seconds,
        )


# -- small parsing helpers -------------------------------------------------------------------


def _query_text(raw: str | None, *, required: bool, name: str = "q") -> str:
    q = " ".join((raw or "").split())
    if required and not q:
        raise InvalidInput(f"{name} is required: 1 to {MAX_QUERY_CHARS} characters", field=name)
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"{name} must be 1 to {MAX_QUERY_CHARS} characters, not {len(q)}", field=name
        )
    return q


def _language(raw: str | None, name: str = "lang") -> str | None:
    if not raw:
        return None
    if raw not in KB_LANGUAGES:
        raise InvalidInput(f"{name} must be one of {', '.join(KB_LANGUAGES)}", field=name)
    return raw


def _choice(raw: str | None, allowed: Sequence[str], name: str) -> str | None:
    if not raw:
        return None
    if raw not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}", field=name)
    return raw


def _optional_id(raw: str | None, name: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidInput(f"{name} must be a whole number", field=name)
    return int(raw)


def _page_number(raw: str | None) -> int:
    return int(raw) if raw and raw.isdigit() and 0 < int(raw) <= 1000 else 1


def _tags(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


def public_url(request: Request, article: KbArticle | Hit) -> str:
    """The help-center address of an article, absolute with the request's own base URL."""
    language = article.language
    slug = article.slug
    return f"{str(request.base_url).rstrip('/')}/help/{language}/{slug}"


# -- search index upkeep ---------------------------------------------------------------------


async def reindex(request: Request, article_ids: Sequence[int]) -> None:
    """Hand saved articles (read back as committed) to the search backend.

    Never raises: the article is saved either way, and an index that missed it is repaired
    by `helpdesk kb reindex`.
    """
    ids = sorted(set(article_ids))
    if not ids:
        return
    database = request.app.state.db
    try:
        paths = await category_paths(database)
        async with database.sessionmaker() as session:
            saved = (await session.scalars(select(KbArticle).where(KbArticle.id.in_(ids)))).all()
        docs = [
            ArticleDoc.from_article(a, paths.get(a.category_id, ()) if a.category_id else ())
            for a in saved
        ]
        await request.app.state.search.index(docs)
    except Exception:
        log.exception("search index not updated for articles %s; run `helpdesk kb reindex`", ids)


# -- JSON shapes -----------------------------------------------------------------------------


def article_json(request: Request, article: KbArticle) -> dict[str, Any]:
    is_public = article.visibility == "public" and article.status == "published"
    return {
        "id": article.id,
        "translation_group": article.translation_group,
        "language": article.language,
        "slug": article.slug,
        "title": article.title,
        "body_md": article.body_md,
        "body_html": article.body_html,
        "category_id": article.category_id,
        "visibility": article.visibility,
        "status": article.status,
        "tags": list(article.tags or []),
        "revision": article.revision,
        "helpful_count": article.helpful_count,
        "unhelpful_count": article.unhelpful_count,
        "view_count": article.view_count,
        "author_id": article.author_id,
        "updated_by_id": article.updated_by_id,
        "created_at": iso(article.created_at),
        "updated_at": iso(article.updated_at),
        "published_at": iso(article.published_at),
        "url": public_url(request, article) if is_public else None,
        "agent_url": f"/kb/{article.id}",
    }


def revision_json(revision: KbRevision) -> dict[str, Any]:
    return {
        "number": revision.number,
        "title": revision.title,
        "body_md": revision.body_md,
        "fields": revision.fields or {},
        "note": revision.note,
        "changed_by_id": revision.changed_by_id,
        "created_at": iso(revision.created_at),
    }


def hit_json(request: Request, hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.article_id,
        "title": hit.title,
        "title_html": hit.title_html,
        "snippet_html": hit.snippet_html,
        "url": public_url(request, hit),
        "language": hit.language,
    }


def category_json(node: categories.CategoryNode, names: dict[int, dict[str, str]]) -> dict:
    return {
        "id": node.id,
        "slug": node.slug,
        "name": node.name,
        "names": names.get(node.id, {}),
        "parent_id": node.parent_id,
        "position": node.position,
        "article_count": node.article_count,
        "total_count": node.total_count,
        "children": [category_json(c, names) for c in node.children],
    }


# -- public JSON API -------------------------------------------------------------------------


def _public_json_error(exc: DeskError) -> JSONResponse:
    headers = dict(CORS)
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)


async def api_search(request: Request) -> JSONResponse:
    """`GET /api/kb/search?q=&lang=&limit=`: published public articles for the chat widget
    and any site; no login, rate-limited per client address, open to every origin."""
    params = request.query_params
    try:
        _throttle(request)
        q = _query_text(params.get("q"), required=True)
        language = _language(params.get("lang"))
        limit = 5
        if params.get("limit"):
            limit = int_field(dict(params), "limit") or 0
            if not 1 <= limit <= API_SEARCH_MAX:
                raise InvalidInput(f"limit must be between 1 and {API_SEARCH_MAX}", field="limit")
    except DeskError as exc:
        return _public_json_error(exc)
    result = await request.app.state.search.search(q, Filters(language=language), limit=limit)
    return JSONResponse(
        {
            "results": [hit_json(request, h) for h in result.hits],
            "total": result.total,
            "degraded": result.degraded is not None,
        },
        headers=CORS,
    )


async def api_public_article(request: Request) -> JSONResponse:
    """`GET /api/kb/articles/{slug}?lang=`: one published public article (the widget opens
    it); in `lang`, else the visitor's language, else any."""
    slug = str(request.path_params["slug"])
    try:
        _throttle(request)
        asked = _language(request.query_params.get("lang"))
        first = asked or negotiate(None, request.headers.get("accept-language"))
        order = [first] if asked else [first, *(x for x in KB_LANGUAGES if x != first)]
        async with request.app.state.db.unit_of_work() as session:
            for language in order:
                try:
                    article = await articles.get_published(session, language, slug)
                    break
                except NotFound:
                    continue
            else:
                raise NotFound(f"no published article {slug!r}")
            body = article_json(request, article)
    except DeskError as exc:
        return _public_json_error(exc)
    for private in ("body_md", "author_id", "updated_by_id", "agent_url", "revision"):
        body.pop(private)
    return JSONResponse(body, headers=CORS)


# -- staff JSON API --------------------------------------------------------------------------


@requires(*ANY_STAFF)
async def api_list_articles(request: Request) -> JSONResponse:
    params = request.query_params
    async with request.app.state.db.unit_of_work() as session:
        page = await articles.list_articles(
            session,
            language=_language(params.get("language"), "language"),
            status=_choice(params.get("status"), ARTICLE_STATUSES, "status"),
            visibility=_choice(params.get("visibility"), ARTICLE_VISIBILITIES, "visibility"),
            category_id=_optional_id(params.get("category_id"), "category_id"),
            q=params.get("q") or None,
            limit=parse_limit(params.get("limit"), default=50),
            cursor=params.get("cursor") or None,
        )
        items = [article_json(request, a) for a in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


def _article_input(data: dict[str, Any]) -> articles.ArticleInput:
    tags = data.get("tags")
    return articles.ArticleInput(
        title=text_field(data, "title", required=True, max_len=articles.MAX_TITLE_CHARS) or "",
        language=text_field(data, "language", required=True, max_len=8) or "",
        body_md=text_field(data, "body_md", max_len=articles.MAX_BODY_CHARS) or "",
        slug=text_field(data, "slug", max_len=articles.MAX_SLUG_CHARS),
        category_id=int_field(data, "category_id"),
        visibility=text_field(data, "visibility", max_len=16) or "public",
        status=text_field(data, "status", max_len=16) or "draft",
        tags=tags if tags is not None else [],
    )


@requires(*EDITORS)
async def api_create_article(request: Request) -> JSONResponse:
    data = await json_object(request)
    payload = _article_input(data)
    note = text_field(data, "note", max_len=articles.MAX_NOTE_CHARS) or ""
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.create_article(
            session, payload, author_id=request.state.user.id, note=note
        )
        body = article_json(request, article)
    await reindex(request, [article.id])
    return JSONResponse(body, status_code=201)


@requires(*ANY_STAFF)
async def api_get_article(request: Request) -> JSONResponse:
    article_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.get_article(session, article_id)
        body = article_json(request, article)
        body["translations"] = [
            {"id": t.id, "language": t.language, "slug": t.slug, "status": t.status}
            for t in await articles.translations(session, article)
        ]
    return JSONResponse(body)


@requires(*EDITORS)
async def api_patch_article(request: Request) -> JSONResponse:
    article_id = path_id(request)
    data = await json_object(request)
    note = text_field(data, "note", max_len=articles.MAX_NOTE_CHARS) or ""
    expected = int_field(data, "expected_revision")
    changes = {k: v for k, v in data.items() if k not in ("note", "expected_revision")}
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.update_article(
            session,
            article_id,
            changes,
            editor_id=request.state.user.id,
            note=note,
            expected_revision=expected,
        )
        body = article_json(request, article)
    await reindex(request, [article_id])
    return JSONResponse(body)


@requires(*EDITORS)
async def api_set_status(request: Request) -> JSONResponse:
    article_id = path_id(request)
    data = await json_object(request)
    status = text_field(data, "status", required=True, max_len=16) or ""
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.set_status(
            session, article_id, status, editor_id=request.state.user.id
        )
        body = article_json(request, article)
    await reindex(request, [article_id])
    return JSONResponse(body)


@requires(*ANY_STAFF)
async def api_revisions(request: Request) -> JSONResponse:
    article_id = path_id(request)
    async with request.app.state.db.unit_of_work() as session:
        items = [revision_json(r) for r in await articles.revisions(session, article_id)]
    return JSONResponse({"items": items})


@requires(*EDITORS)
async def api_restore_revision(request: Request) -> JSONResponse:
    article_id = path_id(request)
    number = path_id(request, "n")
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.restore_revision(
            session, article_id, number, editor_id=request.state.user.id
        )
        body = article_json(request, article)
    await reindex(request, [article_id])
    return JSONResponse(body)


@requires(*EDITORS)
async def api_create_translation(request: Request) -> JSONResponse:
    article_id = path_id(request)
    data = await json_object(request)
    kwargs: dict[str, Any] = {}
    if "category_id" in data:
        kwargs["category_id"] = int_field(data, "category_id")
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.create_translation(
            session,
            article_id,
            text_field(data, "language", required=True, max_len=8) or "",
            text_field(data, "title", required=True, max_len=articles.MAX_TITLE_CHARS) or "",
            text_field(data, "body_md", max_len=articles.MAX_BODY_CHARS) or "",
            author_id=request.state.user.id,
            slug=text_field(data, "slug", max_len=articles.MAX_SLUG_CHARS),
            status=text_field(data, "status", max_len=16) or "draft",
            visibility=text_field(data, "visibility", max_len=16),
            tags=data.get("tags"),
            note=text_field(data, "note", max_len=articles.MAX_NOTE_CHARS) or "",
            **kwargs,
        )
        body = article_json(request, article)
    await reindex(request, [article.id])
    return JSONResponse(body, status_code=201)


async def _category_names(session: AsyncSession) -> dict[int, dict[str, str]]:
    rows = (await session.execute(select(KbCategory.id, KbCategory.names))).all()
    return {cid: dict(names or {}) for cid, names in rows}


@requires(*ANY_STAFF)
async def api_categories(request: Request) -> JSONResponse:
    language = _language(request.query_params.get("lang")) or viewer_for(request).lang
    async with request.app.state.db.unit_of_work() as session:
        roots = await categories.tree(session, language, include_internal=True)
        names = await _category_names(session)
    return JSONResponse({"items": [category_json(n, names) for n in roots]})


def _category_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "names" in data:
        fields["names"] = data["names"]
    if "slug" in data:
        fields["slug"] = data["slug"]
    if "parent_id" in data:
        fields["parent_id"] = int_field(data, "parent_id")
    if "position" in data:
        fields["position"] = int_field(data, "position") or 0
    return fields


@requires(*EDITORS)
async def api_create_category(request: Request) -> JSONResponse:
    fields = _category_fields(await json_object(request))
    async with request.app.state.db.unit_of_work() as session:
        category = await categories.create_category(
            session,
            names=fields.get("names") or {},
            slug=fields.get("slug") or None,
            parent_id=fields.get("parent_id"),
            position=fields.get("position", 0),
        )
        body = {
            "id": category.id,
            "slug": category.slug,
            "names": category.names,
            "parent_id": category.parent_id,
            "position": category.position,
        }
    return JSONResponse(body, status_code=201)


@requires(*EDITORS)
async def api_update_category(request: Request) -> JSONResponse:
    category_id = path_id(request)
    fields = _category_fields(await json_object(request))
    async with request.app.state.db.unit_of_work() as session:
        category = await categories.update_category(session, category_id, fields)
        body = {
            "id": category.id,
            "slug": category.slug,
            "names": category.names,
            "parent_id": category.parent_id,
            "position": category.position,
        }
    return JSONResponse(body)


async def _delete_category(request: Request, category_id: int) -> None:
    async with request.app.state.db.unit_of_work() as session:
        moved = list(
            (
                await session.scalars(
                    select(KbArticle.id).where(KbArticle.category_id == category_id)
                )
            ).all()
        )
        await categories.delete_category(session, category_id, actor_id=request.state.user.id)
    await reindex(request, moved)


@requires(*EDITORS)
async def api_delete_category(request: Request) -> Response:
    await _delete_category(request, path_id(request))
    return Response(status_code=204)


@requires(*ANY_STAFF)
async def api_search_everything(request: Request) -> JSONResponse:
    """`GET /api/search?q=`: customers, cases, interactions and articles, best first."""
    q = _query_text(request.query_params.get("q"), required=True)
    limit = parse_limit(request.query_params.get("limit"), default=20)
    hits = await request.app.state.search.search_everything(
        q, limit=min(limit, 100), scope=scope(request)
    )
    return JSONResponse(
        {
            "results": [
                {
                    "kind": h.kind,
                    "id": h.id,
                    "title": h.title,
                    "snippet_html": h.snippet_html,
                    "url": h.url,
                    "score": round(h.score, 4),
                }
                for h in hits
            ]
        }
    )


# -- public help center ----------------------------------------------------------------------


def help_language(request: Request) -> str:
    """`?lang=`, else the `helpdesk_lang` cookie, else Accept-Language, else English."""
    asked = request.query_params.get("lang")
    if asked in KB_LANGUAGES:
        return str(asked)
    return negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def _help_render(
    request: Request,
    template: str,
    language: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    """A help-center page in `language` (the page's, not the visitor's settings)."""
    catalogs = request.app.state.catalogs
    viewer = Viewer(language, catalogs.get(language, catalogs["en"]), viewer_for(request).tz)
    switch = {code: f"/help?lang={code}" for code in KB_LANGUAGES}
    switch.update(context.pop("switch", {}))
    return render(
        request,
        template,
        {
            "viewer": viewer,
            "_": viewer.gettext,
            "ngettext": viewer.ngettext,
            "dt": viewer.datetime,
            "lang": language,
            "languages": LANGUAGE_NAMES,
            "switch": switch,
            "support_address": request.app.state.settings.support_address,
            **context,
        },
        status=status,
    )


def _help_not_found(request: Request, language: str) -> HTMLResponse:
    return _help_render(request, "help/not_found.html", language, {}, status=404)


def _voter_key(request: Request) -> tuple[str, bool]:
    """The visitor's long-lived random key (and whether it is new, to be set as a cookie)."""
    key = request.cookies.get(VOTER_COOKIE, "")
    if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", key):
        return key, False
    return secrets.token_urlsafe(24), True


def _set_voter_cookie(request: Request, response: Response, key: str) -> None:
    response.set_cookie(
        VOTER_COOKIE,
        key,
        max_age=VOTER_COOKIE_SECONDS,
        path="/help",
        httponly=True,
        samesite="lax",
        secure=request.app.state.settings.secure_cookies,
    )


async def _ancestry(
    session: AsyncSession, category_id: int | None, language: str
) -> list[tuple[str, str]]:
    """(slug, name) from the top of the tree down to the category."""
    chain: list[tuple[str, str]] = []
    seen: set[int] = set()
    while category_id is not None and category_id not in seen and len(seen) < 64:
        seen.add(category_id)
        category = await session.get(KbCategory, category_id)
        if category is None:
            break
        chain.append((category.slug, categories.display_name(category, language)))
        category_id = category.parent_id
    return list(reversed(chain))


def _find_node(
    nodes: list[categories.CategoryNode], category_id: int
) -> categories.CategoryNode | None:
    for node in nodes:
        if node.id == category_id:
            return node
        found = _find_node(node.children, category_id)
        if found is not None:
            return found
    return None


async def help_home(request: Request) -> Response:
    language = help_language(request)
    async with request.app.state.db.unit_of_work() as session:
        roots = await categories.tree(session, language)
        popular = await articles.popular(session, language, limit=10)
    response = _help_render(
        request, "help/home.html", language, {"tree": roots, "popular": popular, "q": ""}
    )
    if request.query_params.get("lang") in KB_LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            language,
            max_age=365 * 24 * 3600,
            samesite="lax",
            secure=request.app.state.settings.secure_cookies,
        )
    return response


async def help_category(request: Request) -> Response:
    language = str(request.path_params["lang"])
    if language not in KB_LANGUAGES:
        return _help_not_found(request, help_language(request))
    cursor = request.query_params.get("cursor") or None
    try:
        async with request.app.state.db.unit_of_work() as session:
            category = await categories.category_by_slug(session, str(request.path_params["slug"]))
            page = await articles.list_articles(
                session,
                language=language,
                status="published",
                visibility="public",
                category_id=category.id,
                limit=HELP_PAGE,
                cursor=cursor,
            )
            roots = await categories.tree(session, language)
            trail = await _ancestry(session, category.id, language)
    except (NotFound, InvalidInput):
        return _help_not_found(request, language)
    node = _find_node(roots, category.id)
    switch = {code: f"/help/{code}/c/{category.slug}" for code in KB_LANGUAGES if code != language}
    return _help_render(
        request,
        "help/category.html",
        language,
        {
            "category": category,
            "name": categories.display_name(category, language),
            "node": node,
            "trail": trail,
            "page": page,
            "cursor": cursor,
            "switch": switch,
            "q": "",
        },
    )


async def help_article(request: Request) -> Response:
    language = str(request.path_params["lang"])
    slug = str(request.path_params["slug"])
    if language not in KB_LANGUAGES:
        return _help_not_found(request, help_language(request))
    key, new_key = _voter_key(request)
    try:
        async with request.app.state.db.unit_of_work() as session:
            article = await articles.get_published(session, language, slug)
            await articles.record_view(session, article.id)
            others = await articles.translations(
                session, article, published_only=True, include_internal=False
            )
            related = await articles.related(session, article, 5)
            trail = await _ancestry(session, article.category_id, language)
            vote = await session.get(KbVote, (article.id, articles.voter_hash(key)))
    except NotFound:
        return _help_not_found(request, language)
    switch = {t.language: f"/help/{t.language}/{t.slug}" for t in others}
    response = _help_render(
        request,
        "help/article.html",
        language,
        {
            "article": article,
            "translations": others,
            "related": related,
            "trail": trail,
            "voted": None if vote is None else vote.helpful,
            "switch": switch,
            "q": "",
        },
    )
    if new_key:
        _set_voter_cookie(request, response, key)
    return response


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin:
        return False
    # Host and port only: behind a proxy that ends TLS the app sees http while the browser
    # says https, and another scheme on the same host is not another site anyway.
    return urlsplit(origin).netloc.lower() == request.url.netloc.lower()


def check_vote_origin(request: Request) -> None:
    """Anonymous votes carry no CSRF token, so another site's form must not be able to cast
    them: an htmx request (a custom header, which a cross-site form cannot send and a
    cross-site script may not without our CORS consent) or a same-origin `Origin`; an
    `Origin` naming another site is refused whatever else the request says."""
    origin = request.headers.get("origin")
    if origin and not _same_origin(request):
        raise Forbidden("votes are only accepted from the help center's own pages")
    if not (is_htmx(request) or _same_origin(request)):
        raise Forbidden("votes are only accepted from the help center's own pages")


async def help_vote(request: Request) -> Response:
    """`POST /help/{lang}/{slug}/vote` with `helpful=yes|no`: one vote per visitor (the
    voter cookie); voting again changes the vote, repeating it changes nothing."""
    language = str(request.path_params["lang"])
    slug = str(request.path_params["slug"])
    check_vote_origin(request)
    form = await request.form()
    answer = str(form.get("helpful") or "")
    if answer not in ("yes", "no"):
        raise InvalidInput("helpful must be yes or no", field="helpful")
    if language not in KB_LANGUAGES:
        raise NotFound(f"no published article {language}/{slug}")
    key, new_key = _voter_key(request)
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.get_published(session, language, slug)
        article = await articles.vote(session, article.id, key, answer == "yes")
    if is_htmx(request):
        response: Response = _help_render(
            request,
            "help/_vote.html",
            language,
            {"article": article, "voted": answer == "yes", "thanked": True},
        )
    else:
        response = RedirectResponse(f"/help/{language}/{slug}#feedback", status_code=303)
    if new_key:
        _set_voter_cookie(request, response, key)
    return response


async def help_search(request: Request) -> Response:
    language = help_language(request)
    params = request.query_params
    page_number = _page_number(params.get("page"))
    error: DeskError | None = None
    result = None
    try:
        q = _query_text(params.get("q"), required=False)
    except InvalidInput as exc:
        q, error = "", exc
    if q:
        result = await request.app.state.search.search(
            q,
            Filters(language=language),
            limit=HELP_PAGE,
            offset=(page_number - 1) * HELP_PAGE,
        )
    switch = {
        code: "/help/search?" + urlencode({"q": q, "lang": code})
        for code in KB_LANGUAGES
        if code != language
    }
    return _help_render(
        request,
        "help/search.html",
        language,
        {
            "q": q,
            "result": result,
            "page_number": page_number,
            "pages": _page_count(result.total if result else 0, HELP_PAGE),
            "error": error,
            "switch": switch,
        },
        status=422 if error else 200,
    )


def _page_count(total: int, size: int) -> int:
    return max(1, -(-total // size))


# -- agents' pages ---------------------------------------------------------------------------


def _flatten(
    nodes: list[categories.CategoryNode], depth: int = 0
) -> list[tuple[categories.CategoryNode, int]]:
    out: list[tuple[categories.CategoryNode, int]] = []
    for node in nodes:
        out.append((node, depth))
        out += _flatten(node.children, depth + 1)
    return out


@requires(*ANY_STAFF)
async def kb_index(request: Request) -> Response:
    """The agents' KB: browse by category or search, internal articles included (marked)."""
    params = request.query_params
    viewer_lang = viewer_for(request).lang
    language = _language(params.get("lang"))
    category_id = _optional_id(params.get("category"), "category")
    error: DeskError | None = None
    try:
        q = _query_text(params.get("q"), required=False)
    except InvalidInput as exc:
        q, error = "", exc
    page_number = _page_number(params.get("page"))
    cursor = params.get("cursor") or None
    result = listing = None
    async with request.app.state.db.unit_of_work() as session:
        roots = await categories.tree(session, language or viewer_lang, include_internal=True)
        if not q:
            listing = await articles.list_articles(
                session,
                language=language,
                status="published",
                category_id=category_id,
                limit=KB_PAGE,
                cursor=cursor,
            )
    if q:
        result = await request.app.state.search.search(
            q,
            Filters(
                language=language,
                visibility=AGENT_FILTERS.visibility,
                category_id=category_id,
            ),
            limit=KB_PAGE,
            offset=(page_number - 1) * KB_PAGE,
        )
    flat = _flatten(roots)
    base = {"q": q, "lang": language or "", "category": category_id or ""}
    return render(
        request,
        "kb/index.html",
        {
            "q": q,
            "kb_lang": language or "",
            "category_id": category_id,
            "tree": roots,
            "flat": flat,
            "names": {node.id: node.name for node, _ in flat},
            "listing": listing,
            "result": result,
            "page_number": page_number,
            "pages": _page_count(result.total if result else 0, KB_PAGE),
            "base_query": urlencode({k: v for k, v in base.items() if v}),
            "languages": LANGUAGE_NAMES,
            "error": error,
            "is_editor": request.state.user.role in EDITORS,
        },
        status=422 if error else 200,
    )


async def _agent_article_page(request: Request, article_id: int | None = None) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        if article_id is not None:
            article = await articles.get_article(session, article_id)
        else:
            found = await articles.find_article(
                session, str(request.path_params["lang"]), str(request.path_params["slug"])
            )
            if found is None:
                raise NotFound(
                    f"no article {request.path_params['lang']}/{request.path_params['slug']}"
                )
            article = found
        others = await articles.translations(session, article)
        related = await articles.related(session, article, 5, include_internal=True)
        trail = await categories.path(session, article.category_id, article.language)
    is_public = article.visibility == "public" and article.status == "published"
    return render(
        request,
        "kb/article.html",
        {
            "article": article,
            "translations": others,
            "related": related,
            "trail": trail,
            "public_url": public_url(request, article) if is_public else None,
            "languages": LANGUAGE_NAMES,
            "is_editor": request.state.user.role in EDITORS,
        },
    )


@requires(*ANY_STAFF)
async def kb_article(request: Request) -> Response:
    return await _agent_article_page(request, path_id(request))


@requires(*ANY_STAFF)
async def _kb_article_by_slug_for_staff(request: Request) -> Response:
    return await _agent_article_page(request)


async def kb_article_by_slug(request: Request) -> Response:
    """`/kb/{lang}/{slug}`, the address articles and search results link to: the agents'
    view for staff, the public help-center page for everyone else."""
    token, _source = bearer_token(request)
    if not token:
        target = f"/help/{request.path_params['lang']}/{request.path_params['slug']}"
        return RedirectResponse(target, status_code=303)
    return await _kb_article_by_slug_for_staff(request)


EVERYTHING_KINDS = ("customer", "case", "interaction", "article")


@requires(*ANY_STAFF)
async def search_page(request: Request) -> Response:
    """Search everything: customers, cases, interactions and articles, grouped by kind."""
    error: DeskError | None = None
    try:
        q = _query_text(request.query_params.get("q"), required=False)
    except InvalidInput as exc:
        q, error = "", exc
    hits: list[EverythingHit] = []
    if q:
        hits = await request.app.state.search.search_everything(q, limit=50, scope=scope(request))
    groups = [(kind, [h for h in hits if h.kind == kind]) for kind in EVERYTHING_KINDS]
    return render(
        request,
        "search/index.html",
        {"q": q, "groups": [(k, g) for k, g in groups if g], "total": len(hits), "error": error},
        status=422 if error else 200,
    )


# -- the case sidebar: suggested articles ----------------------------------------------------

_STOPWORDS = frozenset({
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "but", "by", "can", "cannot", "could", "dear", "did", "do", "does",
    "done", "for", "from", "get", "got", "had", "has", "have", "hello", "hi", "how", "i",
    "i'm", "if", "in", "into", "is", "it", "its", "just", "me", "my", "no", "not", "of", "on",
    "or", "our", "please", "re", "regards", "so", "some", "still", "than", "thank", "thanks",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "too",
    "up", "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will",
    "with", "would", "you", "your", "fw", "fwd",
})  # fmt: skip
# Runs of kanji or katakana: hiragana are mostly particles and verb endings, so they cut a
# Japanese sentence into its content words ("請求書が届かない" -> "請求書", "届").
_CJK_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u30a0-\u30ff\uff66-\uff9f]{2,}")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]{2,}")
_SUBJECT_NOISE = re.compile(r"^\s*(?:(?:re|fw|fwd|aw|sv)\s*:\s*)+|\[#\d+\]", re.IGNORECASE)
MAX_KEYWORDS = 6
MESSAGE_CHARS = 200


def suggestion_queries(subject: str, message: str) -> list[str]:
    """What the case sidebar searches for: the subject as written, then the content words
    of the subject and the message one by one.

    A search box finds articles holding all of its words, so the whole case text would
    match nothing; each word finds its own articles and their scores add up.
    """
    subject = " ".join(_SUBJECT_NOISE.sub(" ", subject or "").split())
    words: list[str] = []
    for text in (subject, message):
        found = [
            (m.start(), m.group())
            for pattern in (_CJK_WORD, _LATIN_WORD)
            for m in pattern.finditer(text)
        ]
        for _, word in sorted(found):
            folded = word.lower().strip("'-")
            if folded in _STOPWORDS or len(folded) < 2 or folded in words:
                continue
            words.append(folded)
    queries = [subject] if subject else []
    queries += [w for w in words[:MAX_KEYWORDS] if w != subject.lower()]
    return queries


def _message_text(text: str) -> str:
    fresh, _quoted = split_quoted(text or "")
    lines = [line for line in fresh.splitlines() if not line.lstrip().startswith(">")]
    return " ".join(" ".join(lines).split())[:MESSAGE_CHARS]


@dataclass(frozen=True)
class Suggestion:
    hit: Hit
    url: str | None  # the public address to insert in a reply; None for internal articles


@requires(*ANY_STAFF)
async def case_suggestions(request: Request) -> Response:
    """`/cases/{id}/kb-suggestions`: articles for the case (its subject and the customer's
    latest message, in the customer's language when known), or for what the agent typed."""
    case_id = path_id(request)
    try:
        typed = _query_text(request.query_params.get("q"), required=False)
    except InvalidInput as exc:
        return render(request, "_error_fragment.html", {"error": exc}, status=422)
    async with request.app.state.db.unit_of_work() as session:
        case = await cases.get_case(session, case_id, scope=scope(request))
        language = case.customer.language if case.customer.language in KB_LANGUAGES else None
        message = ""
        if not typed:
            recent = await interactions.case_timeline(session, case_id, limit=20)
            latest = next(
                (e for e in recent.items if e.direction == "in" and (e.text or "").strip()),
                None,
            )
            message = _message_text(latest.text) if latest else ""
    search = request.app.state.search
    filters = Filters(language=language, visibility=AGENT_FILTERS.visibility)
    degraded = False
    if typed:
        # The agent's own words, in any language: they may well search in their own.
        result = await search.search(
            typed, Filters(visibility=AGENT_FILTERS.visibility), limit=SUGGESTIONS
        )
        ranked, degraded = result.hits, result.degraded is not None
    else:
        scores: dict[int, float] = {}
        first_hit: dict[int, Hit] = {}
        for n, query in enumerate(suggestion_queries(case.subject, message)):
            result = await search.search(query, filters, limit=SUGGESTIONS)
            degraded = degraded or result.degraded is not None
            weight = 1.5 if n == 0 else 1.0  # the subject as a whole says the most
            for hit in result.hits:
                scores[hit.article_id] = scores.get(hit.article_id, 0.0) + weight * hit.score
                first_hit.setdefault(hit.article_id, hit)
        order = sorted(scores, key=lambda i: (-scores[i], i))[:SUGGESTIONS]
        ranked = [first_hit[i] for i in order]
    suggestions = [
        Suggestion(h, public_url(request, h) if h.visibility == "public" else None) for h in ranked
    ]
    return render(
        request,
        "kb/_suggestions.html",
        {
            "case": case,
            "suggestions": suggestions,
            "typed": typed,
            "degraded": degraded,
            "languages": LANGUAGE_NAMES,
        },
    )


# -- editors' admin --------------------------------------------------------------------------

ARTICLE_FORM_FIELDS = (
    "title",
    "slug",
    "language",
    "category_id",
    "visibility",
    "tags",
    "body_md",
    "note",
    "revision",
    "translation_of",
)
NOTICES = ("saved", "created", "restored", "published", "draft", "archived")


def _form_values(form: FormData) -> dict[str, str]:
    return {k: str(form.get(k) or "") for k in ARTICLE_FORM_FIELDS}


def _values_of(article: KbArticle) -> dict[str, str]:
    return {
        "title": article.title,
        "slug": article.slug,
        "language": article.language,
        "category_id": str(article.category_id or ""),
        "visibility": article.visibility,
        "tags": ", ".join(article.tags or []),
        "body_md": article.body_md,
        "note": "",
        "revision": str(article.revision),
        "translation_of": "",
    }


@requires(*EDITORS)
async def admin_list(request: Request) -> Response:
    params = request.query_params
    viewer_lang = viewer_for(request).lang
    filters = {
        "language": params.get("language", ""),
        "status": params.get("status", ""),
        "category_id": params.get("category_id", ""),
        "q": params.get("q", ""),
    }
    async with request.app.state.db.unit_of_work() as session:
        page = await articles.list_articles(
            session,
            language=_language(filters["language"], "language"),
            status=_choice(filters["status"], ARTICLE_STATUSES, "status"),
            category_id=_optional_id(filters["category_id"], "category_id"),
            q=filters["q"] or None,
            limit=parse_limit(params.get("limit"), default=KB_PAGE),
            cursor=params.get("cursor") or None,
        )
        flat = _flatten(await categories.tree(session, viewer_lang, include_internal=True))
    return render(
        request,
        "kb/admin_list.html",
        {
            "page": page,
            "filters": filters,
            "filter_query": urlencode({k: v for k, v in filters.items() if v}),
            "flat": flat,
            "names": {node.id: node.name for node, _ in flat},
            "statuses": ARTICLE_STATUSES,
            "languages": LANGUAGE_NAMES,
        },
    )


async def _editor_context(
    request: Request,
    session: AsyncSession,
    article: KbArticle | None,
    values: dict[str, str],
    *,
    source: KbArticle | None = None,
) -> dict[str, Any]:
    viewer_lang = viewer_for(request).lang
    flat = _flatten(await categories.tree(session, viewer_lang, include_internal=True))
    context: dict[str, Any] = {
        "article": article,
        "values": values,
        "source": source,
        "flat": flat,
        "languages": LANGUAGE_NAMES,
        "visibilities": ARTICLE_VISIBILITIES,
        "preview_html": render_markdown(values.get("body_md", "")).html,
        "translations": [],
        "missing_languages": [],
        "revisions": [],
        "editors": {},
    }
    if article is not None:
        others = await articles.translations(session, article)
        have = {article.language, *(t.language for t in others)}
        revisions = await articles.revisions(session, article.id)
        user_ids = {r.changed_by_id for r in revisions if r.changed_by_id}
        editors: dict[int, str] = {}
        if user_ids:
            rows = await session.execute(select(User.id, User.name).where(User.id.in_(user_ids)))
            editors = {uid: name for uid, name in rows.all()}
        context.update(
            translations=others,
            missing_languages=[code for code in KB_LANGUAGES if code not in have],
            revisions=revisions,
            editors=editors,
            public_url=(
                public_url(request, article)
                if article.visibility == "public" and article.status == "published"
                else None
            ),
        )
    return context


@requires(*EDITORS)
async def admin_new(request: Request) -> Response:
    params = request.query_params
    source_id = _optional_id(params.get("translation_of"), "translation_of")
    values = {k: "" for k in ARTICLE_FORM_FIELDS}
    values.update(language=params.get("language") or viewer_for(request).lang, visibility="public")
    async with request.app.state.db.unit_of_work() as session:
        source = await articles.get_article(session, source_id) if source_id else None
        if source is not None:
            values.update(
                translation_of=str(source.id),
                category_id=str(source.category_id or ""),
                visibility=source.visibility,
                tags=", ".join(source.tags or []),
                body_md=source.body_md,
            )
            if values["language"] == source.language:
                values["language"] = next(x for x in KB_LANGUAGES if x != source.language)
        context = await _editor_context(request, session, None, values, source=source)
    return render(request, "kb/edit.html", context)


async def _editor_error(
    request: Request,
    article_id: int | None,
    values: dict[str, str],
    error: DeskError,
) -> Response:
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.get_article(session, article_id) if article_id else None
        source_id = _optional_id(values.get("translation_of"), "translation_of")
        source = await articles.get_article(session, source_id) if source_id else None
        context = await _editor_context(request, session, article, values, source=source)
    context["error"] = error
    return render(request, "kb/edit.html", context, status=error.status)


@requires(*EDITORS)
async def admin_create(request: Request) -> Response:
    values = _form_values(await request.form())
    user_id = request.state.user.id
    try:
        category_id = _optional_id(values["category_id"], "category_id")
        source_id = _optional_id(values["translation_of"], "translation_of")
        async with request.app.state.db.unit_of_work() as session:
            if source_id:
                article = await articles.create_translation(
                    session,
                    source_id,
                    values["language"],
                    values["title"],
                    values["body_md"],
                    author_id=user_id,
                    slug=values["slug"] or None,
                    visibility=values["visibility"] or None,
                    tags=_tags(values["tags"]),
                    category_id=category_id,
                    note=values["note"],
                )
            else:
                article = await articles.create_article(
                    session,
                    articles.ArticleInput(
                        title=values["title"],
                        language=values["language"],
                        body_md=values["body_md"],
                        slug=values["slug"] or None,
                        category_id=category_id,
                        visibility=values["visibility"] or "public",
                        tags=_tags(values["tags"]),
                    ),
                    author_id=user_id,
                    note=values["note"],
                )
    except (InvalidInput, Conflict, NotFound) as exc:
        return await _editor_error(request, None, values, exc)
    await reindex(request, [article.id])
    return RedirectResponse(f"/admin/kb/{article.id}/edit?notice=created", status_code=303)


@requires(*EDITORS)
async def admin_edit(request: Request) -> Response:
    article_id = path_id(request)
    notice = request.query_params.get("notice")
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.get_article(session, article_id)
        context = await _editor_context(request, session, article, _values_of(article))
    context["notice"] = notice if notice in NOTICES else None
    return render(request, "kb/edit.html", context)


@requires(*EDITORS)
async def admin_save(request: Request) -> Response:
    article_id = path_id(request)
    values = _form_values(await request.form())
    try:
        changes: dict[str, object] = {
            "title": values["title"],
            "slug": values["slug"],
            "category_id": _optional_id(values["category_id"], "category_id"),
            "visibility": values["visibility"],
            "tags": _tags(values["tags"]),
            "body_md": values["body_md"],
        }
        expected = _optional_id(values["revision"], "revision")
        async with request.app.state.db.unit_of_work() as session:
            await articles.update_article(
                session,
                article_id,
                changes,
                editor_id=request.state.user.id,
                note=values["note"],
                expected_revision=expected,
            )
    except (InvalidInput, Conflict) as exc:
        return await _editor_error(request, article_id, values, exc)
    await reindex(request, [article_id])
    return RedirectResponse(f"/admin/kb/{article_id}/edit?notice=saved", status_code=303)


@requires(*EDITORS)
async def admin_status(request: Request) -> Response:
    article_id = path_id(request)
    status = str((await request.form()).get("status") or "")
    try:
        async with request.app.state.db.unit_of_work() as session:
            await articles.set_status(session, article_id, status, editor_id=request.state.user.id)
    except (InvalidInput, Conflict) as exc:
        async with request.app.state.db.unit_of_work() as session:
            article = await articles.get_article(session, article_id)
            values = _values_of(article)
        return await _editor_error(request, article_id, values, exc)
    await reindex(request, [article_id])
    return RedirectResponse(f"/admin/kb/{article_id}/edit?notice={status}", status_code=303)


@requires(*EDITORS)
async def admin_preview(request: Request) -> Response:
    """The editor's live preview: the Markdown rendered and sanitized exactly as a save
    would store it."""
    form = await request.form()
    body_md = str(form.get("body_md") or "")[: articles.MAX_BODY_CHARS]
    return render(request, "kb/_preview.html", {"preview_html": render_markdown(body_md).html})


@requires(*EDITORS)
async def admin_revision(request: Request) -> Response:
    """One revision, what changed from the one before, and (the confirmation step) a button
    to restore it."""
    article_id = path_id(request)
    number = path_id(request, "n")
    async with request.app.state.db.unit_of_work() as session:
        article = await articles.get_article(session, article_id)
        revision = await articles.get_revision(session, article_id, number)
        previous = None
        if number > 1:
            try:
                previous = await articles.get_revision(session, article_id, number - 1)
            except NotFound:
                previous = None
        editor = await session.get(User, revision.changed_by_id) if revision.changed_by_id else None
    return render(
        request,
        "kb/revision.html",
        {
            "article": article,
            "revision": revision,
            "editor": editor,
            "body_html": render_markdown(revision.body_md).html,
            "diff": articles.diff(previous, revision) if previous else None,
        },
    )


@requires(*EDITORS)
async def admin_restore(request: Request) -> Response:
    article_id = path_id(request)
    number = path_id(request, "n")
    async with request.app.state.db.unit_of_work() as session:
        await articles.restore_revision(
            session, article_id, number, editor_id=request.state.user.id
        )
    await reindex(request, [article_id])
    return RedirectResponse(f"/admin/kb/{article_id}/edit?notice=restored", status_code=303)


async def _categories_page(
    request: Request, error: DeskError | None = None, values: dict[str, str] | None = None
) -> Response:
    viewer_lang = viewer_for(request).lang
    async with request.app.state.db.unit_of_work() as session:
        flat = _flatten(await categories.tree(session, viewer_lang, include_internal=True))
        names = await _category_names(session)
    return render(
        request,
        "kb/categories.html",
        {
            "flat": flat,
            "names": names,
            "error": error,
            "values": values or {},
            "languages": LANGUAGE_NAMES,
            "notice": request.query_params.get("notice"),
        },
        status=error.status if error else 200,
    )


def _category_form(form: FormData) -> dict[str, str]:
    keys = ("name_ja", "name_en", "slug", "parent_id", "position", "category_id")
    return {k: str(form.get(k) or "").strip() for k in keys}


@requires(*EDITORS)
async def admin_categories(request: Request) -> Response:
    return await _categories_page(request)


@requires(*EDITORS)
async def admin_create_category(request: Request) -> Response:
    values = _category_form(await request.form())
    try:
        async with request.app.state.db.unit_of_work() as session:
            await categories.create_category(
                session,
                names={"ja": values["name_ja"], "en": values["name_en"]},
                slug=values["slug"] or None,
                parent_id=_optional_id(values["parent_id"], "parent_id"),
            )
    except (InvalidInput, Conflict) as exc:
        return await _categories_page(request, exc, values)
    return RedirectResponse("/admin/kb/categories?notice=created", status_code=303)


@requires(*EDITORS)
async def admin_update_category(request: Request) -> Response:
    category_id = path_id(request)
    values = _category_form(await request.form())
    values["category_id"] = str(category_id)
    try:
        position = values["position"]
        if position and not position.lstrip("-").isdigit():
            raise InvalidInput("position must be a whole number", field="position")
        changes: dict[str, object] = {
            "names": {"ja": values["name_ja"], "en": values["name_en"]},
            "parent_id": _optional_id(values["parent_id"], "parent_id"),
            "position": int(position or 0),
        }
        if values["slug"]:
            changes["slug"] = values["slug"]
        async with request.app.state.db.unit_of_work() as session:
            await categories.update_category(session, category_id, changes)
    except (InvalidInput, Conflict) as exc:
        return await _categories_page(request, exc, values)
    return RedirectResponse("/admin/kb/categories?notice=saved", status_code=303)


@requires(*EDITORS)
async def admin_delete_category(request: Request) -> Response:
    await _delete_category(request, path_id(request))
    return RedirectResponse("/admin/kb/categories?notice=deleted", status_code=303)


routes = [
    # public: the help center and the widget's API
    Route("/help", help_home, methods=["GET"]),
    Route("/help/search", help_search, methods=["GET"]),
    Route("/help/{lang}/c/{slug}", help_category, methods=["GET"]),
    Route("/help/{lang}/{slug}", help_article, methods=["GET"]),
    Route("/help/{lang}/{slug}/vote", help_vote, methods=["POST"]),
    Route("/api/kb/search", api_search, methods=["GET"]),
    # staff API
    Route("/api/kb/articles", api_list_articles, methods=["GET"]),
    Route("/api/kb/articles", api_create_article, methods=["POST"]),
    Route("/api/kb/articles/{id:int}", api_get_article, methods=["GET"]),
    Route("/api/kb/articles/{id:int}", api_patch_article, methods=["PATCH"]),
    Route("/api/kb/articles/{id:int}/status", api_set_status, methods=["POST"]),
    Route("/api/kb/articles/{id:int}/revisions", api_revisions, methods=["GET"]),
    Route(
        "/api/kb/articles/{id:int}/revisions/{n:int}/restore",
        api_restore_revision,
        methods=["POST"],
    ),
    Route("/api/kb/articles/{id:int}/translations", api_create_translation, methods=["POST"]),
    Route("/api/kb/articles/{slug}", api_public_article, methods=["GET"]),
    Route("/api/kb/categories", api_categories, methods=["GET"]),
    Route("/api/kb/categories", api_create_category, methods=["POST"]),
    Route("/api/kb/categories/{id:int}", api_update_category, methods=["PATCH"]),
    Route("/api/kb/categories/{id:int}", api_delete_category, methods=["DELETE"]),
    Route("/api/search", api_search_everything, methods=["GET"]),
    # agents
    Route("/kb", kb_index, methods=["GET"]),
    Route("/kb/{id:int}", kb_article, methods=["GET"]),
    Route("/kb/{lang}/{slug}", kb_article_by_slug, methods=["GET"]),
    Route("/search", search_page, methods=["GET"]),
    Route("/cases/{id:int}/kb-suggestions", case_suggestions, methods=["GET"]),
    # editors
    Route("/admin/kb", admin_list, methods=["GET"]),
    Route("/admin/kb", admin_create, methods=["POST"]),
    Route("/admin/kb/new", admin_new, methods=["GET"]),
    Route("/admin/kb/preview", admin_preview, methods=["POST"]),
    Route("/admin/kb/categories", admin_categories, methods=["GET"]),
    Route("/admin/kb/categories", admin_create_category, methods=["POST"]),
    Route("/admin/kb/categories/{id:int}", admin_update_category, methods=["POST"]),
    Route("/admin/kb/categories/{id:int}/delete", admin_delete_category, methods=["POST"]),
    Route("/admin/kb/{id:int}", admin_save, methods=["POST"]),
    Route("/admin/kb/{id:int}/edit", admin_edit, methods=["GET"]),
    Route("/admin/kb/{id:int}/status", admin_status, methods=["POST"]),
    Route("/admin/kb/{id:int}/revisions/{n:int}", admin_revision, methods=["GET"]),
    Route("/admin/kb/{id:int}/revisions/{n:int}/restore", admin_restore, methods=["POST"]),
]
