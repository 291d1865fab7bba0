"""Knowledge-base articles: writing and revising them, translations, votes, views, links.

These functions only touch the database, in the caller's transaction. The search index is
not theirs to update: the endpoint, CLI or job that commits passes the saved articles to
`SearchPort.index` (or their ids to `SearchPort.delete`) after the commit, so an index
never shows what was rolled back. (With the PostgreSQL adapter that call does nothing: the
generated tsvector column changes with the row.)
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from helpdesk import audit
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.pagination import Page, newest_first
from knowledge_base.markdown import render
from knowledge_base.models import (
    ARTICLE_STATUSES,
    ARTICLE_VISIBILITIES,
    KB_LANGUAGES,
    KbArticle,
    KbCategory,
    KbRelated,
    KbRevision,
    KbVote,
    kb_translation_group_seq,
)

MAX_TITLE_CHARS = 300
MAX_BODY_CHARS = 200_000
MAX_TAGS = 30
MAX_TAG_CHARS = 50
MAX_SLUG_CHARS = 200
MAX_RELATED = 20
MAX_NOTE_CHARS = 300
# Fields `update_article` changes; each change is a new revision. Status has its own
# function (publishing and archiving are decisions, not edits).
EDITABLE_FIELDS = ("title", "body_md", "slug", "category_id", "visibility", "tags")
# What a restore brings back: the content. Slug (links), status and visibility (publishing
# decisions) stay as they are now.
RESTORED_FIELDS = ("title", "body_md", "category_id", "tags")

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass
class ArticleInput:
    title: str
    language: str
    body_md: str = ""
    slug: str | None = None
    category_id: int | None = None
    visibility: str = "public"
    status: str = "draft"
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RevisionDiff:
    """What changed between two revisions: the title (old, new) if it did, the other
    fields that did, and a unified diff of the Markdown body ("@@", "-", "+", " " lines)."""

    title: tuple[str, str] | None
    fields: dict[str, tuple[Any, Any]]
    body: list[str]


# -- slugs ---------------------------------------------------------------------------------


def slugify(text: str, *, max_length: int = 80) -> str | None:
    """An ASCII slug for a title ("Can't log in?" -> "cant-log-in"), or None when the title
    has letters that have no ASCII form (Japanese): romanizing them is not attempted."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text or ""))
    if any(unicodedata.category(ch).startswith("L") and not ch.isascii() for ch in folded):
        return None
    ascii_text = folded.encode("ascii", "ignore").decode().lower().replace("'", "")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    if len(slug) > max_length:
        cut = slug[: max_length + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:max_length]
    return slug or None


def clean_slug(value: object, *, max_length: int = MAX_SLUG_CHARS) -> str:
    """A slug as given by a person: trimmed and lower-cased, else InvalidInput."""
    slug = value.strip().lower() if isinstance(value, str) else ""
    if not slug or len(slug) > max_length or not _SLUG.fullmatch(slug):
        raise InvalidInput(
            f"slug must be lower-case letters a-z, digits and single hyphens between them, "
            f"at most {max_length} characters",
            field="slug",
        )
    return slug


async def _free_slug(
    session: AsyncSession, language: str, base: str, *, exclude_id: int | None = None
) -> str:
    taken = set(
        (
            await session.scalars(
                select(KbArticle.slug).where(
                    KbArticle.language == language,
                    or_(KbArticle.slug == base, KbArticle.slug.like(base + "-%")),
                    KbArticle.id != (exclude_id or 0),
                )
            )
        ).all()
    )
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


async def _automatic_slug(
    session: AsyncSession, title: str, language: str, group: int, exclude_id: int | None = None
) -> str:
    # Japanese titles get `a-<group>-<language>`: unique by construction (one article per
    # language in a group) and stable across title edits.
    base = slugify(title) or f"a-{group}-{language}"
    return await _free_slug(session, language, base, exclude_id=exclude_id)


async def _check_slug_free(
    session: AsyncSession, language: str, slug: str, exclude_id: int | None = None
) -> None:
    other = await session.scalar(
        select(KbArticle.id).where(
            KbArticle.language == language,
            KbArticle.slug == slug,
            KbArticle.id != (exclude_id or 0),
        )
    )
    if other is not None:
        raise Conflict(
            f"the slug {slug!r} is already used by another {language} article (#{other})",
            field="slug",
        )


# -- validation ----------------------------------------------------------------------------


def _clean_title(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("title is required", field="title")
    title = " ".join(value.split())
    if "\x00" in title:
        raise InvalidInput("title contains a NUL character", field="title")
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidInput(f"title is longer than {MAX_TITLE_CHARS} characters", field="title")
    return title


def _clean_body(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput("body must be text", field="body_md")
    body = value.replace("\r\n", "\n").replace("\r", "\n").rstrip().lstrip("\n")
    if "\x00" in body:
        raise InvalidInput("body contains a NUL character", field="body_md")
    if len(body) > MAX_BODY_CHARS:
        raise InvalidInput(f"body is longer than {MAX_BODY_CHARS} characters", field="body_md")
    return body


def _check_language(value: object) -> str:
    if value not in KB_LANGUAGES:
        raise InvalidInput(
            f"language must be one of {', '.join(KB_LANGUAGES)}, not {value!r}", field="language"
        )
    return str(value)


def _check_visibility(value: object) -> str:
    if value not in ARTICLE_VISIBILITIES:
        raise InvalidInput(
            f"visibility must be one of {', '.join(ARTICLE_VISIBILITIES)}", field="visibility"
        )
    return str(value)


def _check_status(value: object) -> str:
    if value not in ARTICLE_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(ARTICLE_STATUSES)}", field="status")
    return str(value)


def clean_tags(value: object) -> list[str]:
    """Tags as stored: NFKC, lower case, inner spaces as hyphens, no duplicates, order kept."""
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
        raise InvalidInput("tags must be a list of text", field="tags")
    cleaned: list[str] = []
    for tag in value:
        t = "-".join(unicodedata.normalize("NFKC", tag).lower().split())
        if not t:
            continue
        if len(t) > MAX_TAG_CHARS:
            raise InvalidInput(
                f"tag {tag!r} is longer than {MAX_TAG_CHARS} characters", field="tags"
            )
        if t not in cleaned:
            cleaned.append(t)
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags", field="tags")
    return cleaned


async def _check_category(session: AsyncSession, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("category_id must be a category id", field="category_id")
    if await session.get(KbCategory, value) is None:
        raise InvalidInput(f"no category {value}", field="category_id")
    return value


def _check_publishable(status: str, body_md: str) -> None:
    if status == "published" and not body_md:
        raise InvalidInput("an article needs a body before it is published", field="body_md")


def _clean_note(note: str) -> str:
    return " ".join((note or "").split())[:MAX_NOTE_CHARS]


# -- writing -------------------------------------------------------------------------------


def _snapshot(article: KbArticle) -> dict[str, Any]:
    return {
        "slug": article.slug,
        "language": article.language,
        "category_id": article.category_id,
        "visibility": article.visibility,
        "status": article.status,
        "tags": list(article.tags or []),
    }


def _add_revision(
    session: AsyncSession, article: KbArticle, *, changed_by_id: int | None, note: str
) -> KbRevision:
    revision = KbRevision(
        article_id=article.id,
        number=article.revision,
        title=article.title,
        body_md=article.body_md,
        fields=_snapshot(article),
        note=_clean_note(note),
        changed_by_id=changed_by_id,
    )
    session.add(revision)
    return revision


def _set_body(article: KbArticle, body_md: str) -> None:
    rendered = render(body_md)
    article.body_md = body_md
    article.body_html = rendered.html
    article.body_text = rendered.text


async def _flush_checking_slug(session: AsyncSession, article: KbArticle) -> None:
    # The slug was checked, but a concurrent save may have taken it since.
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"the slug {article.slug!r} or this language's translation was just taken by "
            f"another {article.language} article; try again",
            field="slug",
        ) from exc


async def _insert(
    session: AsyncSession,
    *,
    group: int,
    data: ArticleInput,
    author_id: int | None,
    note: str,
) -> KbArticle:
    title = _clean_title(data.title)
    language = _check_language(data.language)
    body_md = _clean_body(data.body_md)
    visibility = _check_visibility(data.visibility)
    status = _check_status(data.status)
    tags = clean_tags(data.tags)
    category_id = await _check_category(session, data.category_id)
    _check_publishable(status, body_md)
    if data.slug:
        slug = clean_slug(data.slug)
        await _check_slug_free(session, language, slug)
    else:
        slug = await _automatic_slug(session, title, language, group)
    article = KbArticle(
        translation_group=group,
        language=language,
        slug=slug,
        title=title,
        category_id=category_id,
        visibility=visibility,
        status=status,
        tags=tags,
        revision=1,
        author_id=author_id,
        updated_by_id=author_id,
        published_at=datetime.now(UTC) if status == "published" else None,
    )
    _set_body(article, body_md)
    session.add(article)
    await _flush_checking_slug(session, article)
    _add_revision(session, article, changed_by_id=author_id, note=note)
    await session.flush()
    return article


async def create_article(
    session: AsyncSession, data: ArticleInput, *, author_id: int | None, note: str = ""
) -> KbArticle:
    """A new article in its own translation group, saved as revision 1.

    Without a slug, one is made from the title (ASCII; `a-<group>-<lang>` for Japanese) and
    made unique with -2, -3...; a slug given and already used in the language is a Conflict.
    The caller indexes the article for search after commit.
    """
    group = await session.scalar(select(kb_translation_group_seq.next_value()))
    assert group is not None
    return await _insert(session, group=group, data=data, author_id=author_id, note=note)


async def _locked(session: AsyncSession, article_id: int) -> KbArticle:
    article = await session.get(KbArticle, article_id, with_for_update=True, populate_existing=True)
    if article is None:
        raise NotFound(f"article {article_id} not found")
    return article


async def update_article(
    session: AsyncSession,
    article_id: int,
    changes: dict[str, object],
    *,
    editor_id: int | None,
    note: str = "",
    expected_revision: int | None = None,
) -> KbArticle:
    """Apply an edit (keys from EDITABLE_FIELDS) as a new revision.

    Only real changes count: values equal to the current ones (after the same cleaning as
    on create) are ignored, and an edit that changes nothing writes no revision. A `slug`
    of None or "" makes one from the title again. With `expected_revision`, an article
    saved by someone else since is a Conflict instead of a silent overwrite. The caller
    reindexes the article after commit.
    """
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        if unknown[0] == "status":
            raise InvalidInput("status changes through set_status", field="status")
        raise InvalidInput(f"unknown field: {unknown[0]}", field=unknown[0])
    article = await _locked(session, article_id)
    if expected_revision is not None and article.revision != expected_revision:
        raise Conflict(
            f"the article was saved by someone else since revision {expected_revision} "
            f"(it is now at revision {article.revision}); reload it and edit again",
            field="revision",
        )
    new: dict[str, Any] = {}
    if "title" in changes:
        new["title"] = _clean_title(changes["title"])
    if "body_md" in changes:
        new["body_md"] = _clean_body(changes["body_md"])
    if "visibility" in changes:
        new["visibility"] = _check_visibility(changes["visibility"])
    if "tags" in changes:
        new["tags"] = clean_tags(changes["tags"])
    if "category_id" in changes:
        new["category_id"] = await _check_category(session, changes["category_id"])
    if "slug" in changes:
        if changes["slug"] in (None, ""):
            title = new.get("title", article.title)
            if slugify(title) != article.slug:
                new["slug"] = await _automatic_slug(
                    session, title, article.language, article.translation_group, article.id
                )
        else:
            new["slug"] = clean_slug(changes["slug"])
    changed = {k: v for k, v in new.items() if getattr(article, k) != v}
    if not changed:
        return article
    if "slug" in changed:
        await _check_slug_free(session, article.language, changed["slug"], article.id)
    _check_publishable(article.status, changed.get("body_md", article.body_md))
    for key, value in changed.items():
        if key == "body_md":
            _set_body(article, value)
        else:
            setattr(article, key, value)
    article.revision += 1
    article.updated_by_id = editor_id
    await _flush_checking_slug(session, article)
    _add_revision(session, article, changed_by_id=editor_id, note=note)
    await session.flush()
    return article


async def set_status(
    session: AsyncSession, article_id: int, status: str, *, editor_id: int | None
) -> KbArticle:
    """Publish, unpublish (draft) or archive. Publishing stamps `published_at`; archiving
    is audited. Setting the status it already has does nothing. No revision is written:
    a revision records content, and each one notes the status it was saved under."""
    _check_status(status)
    article = await _locked(session, article_id)
    if article.status == status:
        return article
    _check_publishable(status, article.body_md)
    previous = article.status
    article.status = status
    article.updated_by_id = editor_id
    if status == "published":
        article.published_at = datetime.now(UTC)
    if status == "archived":
        await audit.record(
            session,
            editor_id,
            "kb_article.archive",
            "kb_article",
            article.id,
            previous_status=previous,
            language=article.language,
            slug=article.slug,
            title=article.title,
        )
    await session.flush()
    return article


async def restore_revision(
    session: AsyncSession, article_id: int, number: int, *, editor_id: int | None
) -> KbArticle:
    """Bring back the title, body, category and tags of revision `number` as a new revision
    (history is never rewritten). Slug, status and visibility stay as they are; a category
    deleted since leaves the current one. Audited."""
    revision = await get_revision(session, article_id, number)
    before = (await get_article(session, article_id)).revision
    fields = revision.fields or {}
    changes: dict[str, object] = {
        "title": revision.title,
        "body_md": revision.body_md,
        "tags": list(fields.get("tags") or []),
    }
    old_category = fields.get("category_id")
    if old_category is None or await session.get(KbCategory, old_category) is not None:
        changes["category_id"] = old_category
    article = await update_article(
        session, article_id, changes, editor_id=editor_id, note=f"restored revision {number}"
    )
    await audit.record(
        session,
        editor_id,
        "kb_article.restore_revision",
        "kb_article",
        article_id,
        restored_revision=number,
        previous_revision=before,
        new_revision=article.revision,
    )
    return article


async def create_translation(
    session: AsyncSession,
    article_id: int,
    language: str,
    title: str,
    body_md: str,
    *,
    author_id: int | None,
    slug: str | None = None,
    status: str = "draft",
    visibility: str | None = None,
    tags: list[str] | None = None,
    category_id: int | Literal["original"] | None = "original",
    note: str = "",
) -> KbArticle:
    """The article in another language, in the original's translation group. Category,
    visibility and tags are the original's unless given. One article per language in a
    group: a second is a Conflict."""
    source = await get_article(session, article_id)
    language = _check_language(language)
    existing = await session.scalar(
        select(KbArticle.id).where(
            KbArticle.translation_group == source.translation_group,
            KbArticle.language == language,
        )
    )
    if existing is not None:
        raise Conflict(
            f"article {source.id} already has a {language} version (article {existing})",
            field="language",
        )
    data = ArticleInput(
        title=title,
        language=language,
        body_md=body_md,
        slug=slug,
        category_id=source.category_id if category_id == "original" else category_id,
        visibility=visibility or source.visibility,
        status=status,
        tags=list(source.tags or []) if tags is None else tags,
    )
    return await _insert(
        session, group=source.translation_group, data=data, author_id=author_id, note=note
    )


async def link_translation(
    session: AsyncSession, article_id: int, translation_of: int, *, editor_id: int | None
) -> KbArticle:
    """Make an existing article a translation of another (it joins that article's group).
    A group already holding an article in this language is a Conflict."""
    article = await _locked(session, article_id)
    source = await get_article(session, translation_of)
    if source.translation_group == article.translation_group:
        return article
    taken = await session.scalar(
        select(KbArticle.id).where(
            KbArticle.translation_group == source.translation_group,
            KbArticle.language == article.language,
        )
    )
    if taken is not None:
        raise Conflict(
            f"article {source.id} already has a {article.language} version (article {taken})",
            field="translation_of",
        )
    article.translation_group = source.translation_group
    article.updated_by_id = editor_id
    await _flush_checking_slug(session, article)
    return article


# -- reading -------------------------------------------------------------------------------


async def get_article(session: AsyncSession, article_id: int) -> KbArticle:
    article = await session.get(KbArticle, article_id)
    if article is None:
        raise NotFound(f"article {article_id} not found")
    return article


async def get_published(
    session: AsyncSession, language: str, slug: str, *, include_internal: bool = False
) -> KbArticle:
    """The published article at /<language>/<slug>; internal ones only for staff."""
    stmt = select(KbArticle).where(
        KbArticle.language == language, KbArticle.slug == slug, KbArticle.status == "published"
    )
    if not include_internal:
        stmt = stmt.where(KbArticle.visibility == "public")
    article = await session.scalar(stmt)
    if article is None:
        raise NotFound(f"no published article {language}/{slug}")
    return article


async def find_article(session: AsyncSession, language: str, slug: str) -> KbArticle | None:
    """The article with this slug in this language, whatever its status."""
    return await session.scalar(
        select(KbArticle).where(KbArticle.language == language, KbArticle.slug == slug)
    )


async def translations(
    session: AsyncSession,
    article: KbArticle,
    *,
    published_only: bool = False,
    include_internal: bool = True,
) -> list[KbArticle]:
    """The same article in the other languages, ordered by language."""
    stmt = select(KbArticle).where(
        KbArticle.translation_group == article.translation_group, KbArticle.id != article.id
    )
    if published_only:
        stmt = stmt.where(KbArticle.status == "published")
    if not include_internal:
        stmt = stmt.where(KbArticle.visibility == "public")
    return list((await session.scalars(stmt.order_by(KbArticle.language))).all())


async def revisions(session: AsyncSession, article_id: int) -> list[KbRevision]:
    """Every saved state of the article, newest first (the first is the current one)."""
    await get_article(session, article_id)
    return list(
        (
            await session.scalars(
                select(KbRevision)
                .where(KbRevision.article_id == article_id)
                .order_by(KbRevision.number.desc())
            )
        ).all()
    )


async def get_revision(session: AsyncSession, article_id: int, number: int) -> KbRevision:
    revision = await session.scalar(
        select(KbRevision).where(KbRevision.article_id == article_id, KbRevision.number == number)
    )
    if revision is None:
        raise NotFound(f"article {article_id} has no revision {number}")
    return revision


def diff(old: KbRevision, new: KbRevision) -> RevisionDiff:
    """What changed from `old` to `new` (any two revisions, typically consecutive)."""
    old_fields, new_fields = old.fields or {}, new.fields or {}
    changed = {
        key: (old_fields.get(key), new_fields.get(key))
        for key in sorted(set(old_fields) | set(new_fields))
        if old_fields.get(key) != new_fields.get(key)
    }
    body = [
        line
        for line in difflib.unified_diff(
            old.body_md.splitlines(), new.body_md.splitlines(), lineterm="", n=3
        )
        if not line.startswith(("--- ", "+++ "))
    ]
    title = (old.title, new.title) if old.title != new.title else None
    return RevisionDiff(title=title, fields=changed, body=body)


def _published(stmt: Select[Any], language: str, include_internal: bool) -> Select[Any]:
    stmt = stmt.where(KbArticle.status == "published", KbArticle.language == language)
    if not include_internal:
        stmt = stmt.where(KbArticle.visibility == "public")
    return stmt


async def related(
    session: AsyncSession, article: KbArticle, limit: int = 5, *, include_internal: bool = False
) -> list[KbArticle]:
    """ "See also": the editor's links first (by title), then published articles of the
    same language sharing tags or the category, most shared tags and most helpful first.
    Only published articles, and public ones unless `include_internal`."""
    chosen = list(
        (
            await session.scalars(
                _published(
                    select(KbArticle).join(KbRelated, KbRelated.related_id == KbArticle.id),
                    article.language,
                    include_internal,
                )
                .where(KbRelated.article_id == article.id)
                .order_by(KbArticle.title, KbArticle.id)
            )
        ).all()
    )[:limit]
    if len(chosen) >= limit:
        return chosen
    similar = []
    if article.category_id is not None:
        similar.append(KbArticle.category_id == article.category_id)
    if article.tags:
        similar.append(KbArticle.tags.overlap(list(article.tags)))
    if not similar:
        return chosen
    seen = {article.id, *(a.id for a in chosen)}
    candidates = (
        await session.scalars(
            _published(select(KbArticle), article.language, include_internal)
            .where(or_(*similar), KbArticle.id.not_in(seen))
            .order_by(KbArticle.helpful_count.desc(), KbArticle.view_count.desc(), KbArticle.id)
            .limit(100)
        )
    ).all()
    tags = set(article.tags or [])

    def closeness(other: KbArticle) -> int:
        same_category = other.category_id is not None and other.category_id == article.category_id
        return 2 * len(tags & set(other.tags or [])) + int(same_category)

    # sorted() is stable: ties keep the helpful-first order of the query.
    ranked = sorted(candidates, key=closeness, reverse=True)
    return chosen + ranked[: limit - len(chosen)]


async def set_related(
    session: AsyncSession, article_id: int, related_ids: Sequence[int], *, editor_id: int | None
) -> list[KbArticle]:
    """Replace the editor's "see also" links of one article (same language only; at most
    MAX_RELATED). Links go one way: the other articles' own lists are not changed."""
    if not isinstance(related_ids, list | tuple) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in related_ids
    ):
        raise InvalidInput("related_ids must be a list of article ids", field="related_ids")
    ids = list(dict.fromkeys(related_ids))
    if len(ids) > MAX_RELATED:
        raise InvalidInput(f"at most {MAX_RELATED} related articles", field="related_ids")
    article = await _locked(session, article_id)
    if article.id in ids:
        raise InvalidInput("an article cannot be related to itself", field="related_ids")
    targets = {
        a.id: a
        for a in (await session.scalars(select(KbArticle).where(KbArticle.id.in_(ids)))).all()
    }
    for i in ids:
        if i not in targets:
            raise InvalidInput(f"no article {i}", field="related_ids")
        if targets[i].language != article.language:
            raise InvalidInput(
                f"article {i} is in {targets[i].language}, not {article.language}",
                field="related_ids",
            )
    await session.execute(delete(KbRelated).where(KbRelated.article_id == article.id))
    session.add_all(KbRelated(article_id=article.id, related_id=i) for i in ids)
    article.updated_by_id = editor_id
    await session.flush()
    return [targets[i] for i in ids]


async def list_articles(
    session: AsyncSession,
    *,
    language: str | None = None,
    status: str | None = None,
    visibility: str | None = None,
    category_id: int | None = None,
    q: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[KbArticle]:
    """Articles for the editors' list, most recently changed first, cursor-paged.

    Every filter is optional; `q` matches part of the title or slug (case-insensitive).
    """
    stmt = select(KbArticle)
    if language is not None:
        stmt = stmt.where(KbArticle.language == _check_language(language))
    if status is not None:
        stmt = stmt.where(KbArticle.status == _check_status(status))
    if visibility is not None:
        stmt = stmt.where(KbArticle.visibility == _check_visibility(visibility))
    if category_id is not None:
        stmt = stmt.where(KbArticle.category_id == category_id)
    if q and q.strip():
        escaped = q.strip().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        pattern = f"%{escaped}%"
        stmt = stmt.where(or_(KbArticle.title.ilike(pattern), KbArticle.slug.ilike(pattern)))
    return await newest_first(
        session, stmt, KbArticle.updated_at, KbArticle.id, limit=limit, cursor=cursor
    )


async def popular(
    session: AsyncSession, language: str, *, limit: int = 10, include_internal: bool = False
) -> list[KbArticle]:
    """The most viewed published articles of a language (for the help center's home)."""
    stmt = _published(select(KbArticle), language, include_internal)
    stmt = stmt.order_by(KbArticle.view_count.desc(), KbArticle.helpful_count.desc())
    return list((await session.scalars(stmt.limit(limit))).all())


# -- readers' feedback ---------------------------------------------------------------------


def voter_hash(voter_key: str) -> str:
    """What is stored of a voter: the SHA-256 of their key (a cookie id, a user id...)."""
    return hashlib.sha256(voter_key.encode()).hexdigest()


async def vote(session: AsyncSession, article_id: int, voter_key: str, helpful: bool) -> KbArticle:
    """Record "was this helpful?" for a published article: one vote per voter, and voting
    again replaces the earlier vote, the counters moving with it.

    The article row is locked for the vote, so concurrent votes keep the counters equal to
    the votes table; `updated_at` is left alone (a vote is not an edit).
    """
    if not isinstance(voter_key, str) or not voter_key:
        raise InvalidInput("a voter key is required", field="voter")
    article = await session.scalar(
        select(KbArticle)
        .where(KbArticle.id == article_id, KbArticle.status == "published")
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if article is None:
        raise NotFound(f"no published article {article_id}")
    voter = voter_hash(voter_key)
    existing = await session.get(KbVote, (article_id, voter))
    if existing is None:
        session.add(KbVote(article_id=article_id, voter=voter, helpful=helpful))
        delta = (1, 0) if helpful else (0, 1)
    elif existing.helpful == helpful:
        return article
    else:
        existing.helpful = helpful
        delta = (1, -1) if helpful else (-1, 1)
    await session.flush()
    counts = (
        await session.execute(
            update(KbArticle)
            .where(KbArticle.id == article_id)
            .values(
                helpful_count=KbArticle.helpful_count + delta[0],
                unhelpful_count=KbArticle.unhelpful_count + delta[1],
                updated_at=KbArticle.updated_at,
            )
            .returning(KbArticle.helpful_count, KbArticle.unhelpful_count)
            .execution_options(synchronize_session=False)
        )
    ).one()
    set_committed_value(article, "helpful_count", counts[0])
    set_committed_value(article, "unhelpful_count", counts[1])
    return article


async def record_view(session: AsyncSession, article_id: int) -> int:
    """Count one view (an atomic increment that leaves `updated_at` alone); the new count.

    Any status: the page counts what it shows, after deciding the reader may see it."""
    count = await session.scalar(
        update(KbArticle)
        .where(KbArticle.id == article_id)
        .values(view_count=KbArticle.view_count + 1, updated_at=KbArticle.updated_at)
        .returning(KbArticle.view_count)
        .execution_options(synchronize_session=False)
    )
    if count is None:
        raise NotFound(f"article {article_id} not found")
    article = session.identity_map.get(session.identity_key(KbArticle, article_id))
    if article is not None:
        set_committed_value(article, "view_count", count)
    return int(count)
