"""Bring articles in from files: Markdown with front matter, or a question/answer CSV.

Each file (or CSV row) is saved in its own transaction, so one bad item is rejected with a
reason and the rest still land. Articles are matched by (language, slug), so importing the
same files again changes nothing; an article whose file states nothing about a field
(category, tags, visibility, status) keeps what editors set. New articles are published
and public unless the file says otherwise: an import brings in a help center that exists.

A CSV has the header `question,answer,category,lang` (the answer is Markdown; optional
columns: slug, tags, visibility, status, translation_of); the slug is made from the
question. Japanese questions and file names give no slug: such articles are matched by
(language, title) instead.

Front matter is the plain `key: value` block between `---` lines that static-site tools
write; values may be quoted, and lists written `[a, b]` or as `- item` lines:

    ---
    title: Resetting your password
    slug: reset-password          # else the file name, else the title
    language: en                  # or lang:
    category: Account/Sign-in     # a category slug, or a path of names (created if missing)
    visibility: public
    status: published             # the default for a new article
    tags: [password, login]
    translation_of: a-12-ja       # slug of the same article in another language
    ---
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.db import Database
from helpdesk.errors import Conflict, DeskError, InvalidInput
from knowledge_base import articles, categories
from knowledge_base.models import KB_LANGUAGES, KbArticle

MARKDOWN_SUFFIXES = (".md", ".markdown")
CSV_SUFFIXES = (".csv",)
# Other spellings accepted for CSV columns and front-matter keys.
ALIASES = {"lang": "language", "question": "title", "answer": "body", "tag": "tags"}
CSV_REQUIRED = ("title", "body", "language")
_TITLE_LINE = re.compile(r"#\s+(.+?)\s*#*\s*")


@dataclass
class ImportSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    # The articles created or updated, for the caller to index after the import.
    article_ids: list[int] = field(default_factory=list)

    @property
    def imported(self) -> int:
        """Items that are in the knowledge base as the files say (whether or not changed)."""
        return self.created + self.updated + self.unchanged


@dataclass
class _Item:
    """One article to import, as read from a file or a CSV row, or why it cannot be."""

    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    # A slug from the file name, used when the front matter gives none.
    slug_hint: str | None = None
    error: str | None = None
    from_csv: bool = False


class FrontMatterError(ValueError):
    pass


async def import_path(
    database: Database,
    path: str | Path,
    *,
    author_id: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import a directory (searched recursively for .md and .csv files), one Markdown file
    or one CSV file. `progress(done, total)` is called after each item.

    Raises InvalidInput when the path holds nothing to import; everything else that goes
    wrong is a rejection in the summary.
    """
    items = _read_items(Path(path))
    # Translations name the article they translate, which may come later in the listing.
    items.sort(key=lambda item: bool(item.fields.get("translation_of")))
    summary = ImportSummary()
    claimed: dict[tuple[str, str], str] = {}
    for done, item in enumerate(items, start=1):
        if item.error is not None:
            summary.rejected.append((item.source, item.error))
        else:
            try:
                async with database.unit_of_work() as session:
                    outcome, article_id, key = await _save(session, item, author_id, claimed)
            except DeskError as exc:
                summary.rejected.append((item.source, exc.message))
            except DBAPIError as exc:
                summary.rejected.append((item.source, f"the database refused it: {exc.orig}"))
            else:
                claimed[key] = item.source
                if outcome == "created":
                    summary.created += 1
                elif outcome == "updated":
                    summary.updated += 1
                else:
                    summary.unchanged += 1
                if outcome != "unchanged":
                    summary.article_ids.append(article_id)
        if progress is not None:
            progress(done, len(items))
    return summary


# -- reading -------------------------------------------------------------------------------


def _read_items(path: Path) -> list[_Item]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in MARKDOWN_SUFFIXES + CSV_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise InvalidInput(f"{path}: no Markdown (.md) or CSV (.csv) files", field="path")
        items: list[_Item] = []
        for file in files:
            items.extend(_read_file(file, file.relative_to(path).as_posix()))
        return items
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory", field="path")
    if path.suffix.lower() not in MARKDOWN_SUFFIXES + CSV_SUFFIXES:
        raise InvalidInput(f"{path}: not a Markdown (.md) or CSV (.csv) file", field="path")
    return _read_file(path, path.name)


def _read_file(path: Path, source: str) -> list[_Item]:
    try:
        text = decode(path.read_bytes())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [_Item(source, error=f"cannot read the file: {reason}")]
    if path.suffix.lower() in CSV_SUFFIXES:
        return _csv_items(text, source)
    return [_markdown_item(text, source, path.stem)]


def decode(raw: bytes) -> str:
    """UTF-8 (with or without BOM), else cp932: what Excel in Japan saves."""
    if b"\x00" in raw:
        raise ValueError("it holds NUL bytes (not a text file)")
    for encoding in ("utf-8-sig", "cp932"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise ValueError("it is neither UTF-8 nor Shift_JIS (cp932) text")


def parse_front_matter(text: str) -> tuple[dict[str, str | list[str]], str]:
    """(metadata, body) of a Markdown document; no front matter gives ({}, text)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise FrontMatterError("the front matter starts with --- but has no closing ---")
    meta: dict[str, str | list[str]] = {}
    # The key written with no value, which `- item` lines below it make a list.
    list_key: str | None = None
    for number, line in enumerate(lines[1:end], start=2):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if list_key is not None and (stripped.startswith("- ") or stripped == "-"):
            items = meta[list_key]
            meta[list_key] = [
                *(items if isinstance(items, list) else []),
                _unquote(stripped[1:].strip()),
            ]
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or name[0].isspace():
            raise FrontMatterError(f"front matter line {number}: expected 'key: value'")
        key = name.strip().lower()
        value = value.strip()
        list_key = key if not value else None
        if value.startswith("[") and value.endswith("]"):
            meta[key] = [_unquote(v.strip()) for v in value[1:-1].split(",") if v.strip()]
        else:
            meta[key] = _unquote(value)
    return meta, "\n".join(lines[end + 1 :])


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    text = ", ".join(value) if isinstance(value, list) else str(value)
    return text.strip() or None


def _as_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [t.strip() for t in re.split(r"[,;、]", str(value or "")) if t.strip()]


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Front-matter keys or CSV columns as the importer's fields (only those stated)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key)
        if name == "tags":
            out[name] = _as_list(value)
        elif name == "body":
            out[name] = value if isinstance(value, str) else _as_text(value) or ""
        elif name in (
            "title",
            "slug",
            "language",
            "category",
            "visibility",
            "status",
            "translation_of",
        ):
            text = _as_text(value)
            if text is not None:
                out[name] = text
    return out


def _markdown_item(text: str, source: str, stem: str) -> _Item:
    try:
        meta, body = parse_front_matter(text)
    except FrontMatterError as exc:
        return _Item(source, error=str(exc))
    fields = _fields({k: v for k, v in meta.items() if k != "body"})
    if "title" not in fields:
        # No title in the front matter: a leading "# Heading" is the title.
        lines = body.lstrip("\n").split("\n")
        heading = _TITLE_LINE.fullmatch(lines[0]) if lines else None
        if heading:
            fields["title"] = heading.group(1)
            body = "\n".join(lines[1:])
    fields["body"] = body
    return _Item(source, fields, slug_hint=articles.slugify(stem))


def _csv_items(text: str, name: str) -> list[_Item]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [_Item(name, error=f"line 1: {exc}")]
    if not header or not any(h.strip() for h in header):
        return [_Item(name, error="the CSV file is empty (no header row)")]
    columns = [ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        wanted = {"title": "question", "body": "answer", "language": "lang"}
        return [
            _Item(
                name,
                error="the header lacks the column(s) "
                + ", ".join(wanted[c] for c in missing)
                + " (expected question,answer,category,lang)",
            )
        ]
    items: list[_Item] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The reader cannot find its footing after broken quoting: the rest is lost.
            items.append(
                _Item(f"{name}:{line}", error=f"broken CSV row ({exc}); rest of file skipped")
            )
            break
        if not any(cell.strip() for cell in row):
            continue
        source = f"{name}:{line}"
        if len(row) != len(columns):
            items.append(
                _Item(
                    source,
                    error=f"broken CSV row: {len(row)} fields where the header has {len(columns)}",
                )
            )
            continue
        raw = {c: v for c, v in zip(columns, row, strict=True) if v.strip() or c == "body"}
        items.append(_Item(source, _fields(raw), from_csv=True))
    return items


# -- saving --------------------------------------------------------------------------------


async def _save(
    session: AsyncSession, item: _Item, author_id: int | None, claimed: dict[tuple[str, str], str]
) -> tuple[str, int, tuple[str, str]]:
    """Create or update one article; ("created" | "updated" | "unchanged", id, key)."""
    f = item.fields
    title = f.get("title")
    if not title:
        raise InvalidInput(
            "the question is empty"
            if item.from_csv
            else "title is missing (front matter `title:` or a leading # heading)"
        )
    language = f.get("language")
    if not language:
        raise InvalidInput(
            "the lang column is empty"
            if item.from_csv
            else "language is missing (front matter `language:` or `lang:`)"
        )
    if language not in KB_LANGUAGES:
        raise InvalidInput(
            f"unknown language {language!r}: use one of {', '.join(KB_LANGUAGES)}",
            field="language",
        )
    title = " ".join(title.split())
    if "slug" in f:
        slug: str | None = articles.clean_slug(f["slug"])
    else:
        slug = item.slug_hint or articles.slugify(title)
    if slug is not None:
        key = (language, slug)
        existing = await articles.find_article(session, language, slug)
    else:
        # A Japanese title and file name give no slug: the title identifies the article.
        key = (language, "title:" + title)
        existing = await session.scalar(
            select(KbArticle)
            .where(KbArticle.language == language, KbArticle.title == title)
            .order_by(KbArticle.id)
            .limit(1)
        )
    if key in claimed:
        what = f"slug {slug!r}" if slug is not None else "title"
        raise Conflict(f"same {what} ({language}) as {claimed[key]}: not imported twice")

    category_id = None
    if "category" in f:
        category_id = (await categories.resolve_path(session, f["category"], language=language)).id
    source = None
    if "translation_of" in f:
        source = await _translation_source(session, f["translation_of"], language)

    if existing is None:
        status = f.get("status", "published")
        if source is not None:
            article = await articles.create_translation(
                session,
                source.id,
                language,
                title,
                f.get("body", ""),
                author_id=author_id,
                slug=slug,
                status=status,
                visibility=f.get("visibility"),  # else the original's
                tags=f.get("tags"),
                category_id=category_id if "category" in f else "original",
                note="imported",
            )
        else:
            data = articles.ArticleInput(
                title=title,
                language=language,
                body_md=f.get("body", ""),
                slug=slug,
                category_id=category_id,
                visibility=f.get("visibility", "public"),
                status=status,
                tags=f.get("tags", []),
            )
            article = await articles.create_article(
                session, data, author_id=author_id, note="imported"
            )
        return "created", article.id, key

    before = (existing.revision, existing.status, existing.translation_group)
    changes: dict[str, object] = {"title": title, "body_md": f.get("body", "")}
    if "category" in f:
        changes["category_id"] = category_id
    for name in ("visibility", "tags"):
        if name in f:
            changes[name] = f[name]
    article = await articles.update_article(
        session, existing.id, changes, editor_id=author_id, note="imported"
    )
    if "status" in f:
        article = await articles.set_status(session, article.id, f["status"], editor_id=author_id)
    if source is not None:
        article = await articles.link_translation(
            session, article.id, source.id, editor_id=author_id
        )
    after = (article.revision, article.status, article.translation_group)
    return ("unchanged" if after == before else "updated"), article.id, key


async def _translation_source(session: AsyncSession, spec: str, language: str) -> KbArticle:
    """The article `translation_of` names: a slug ("reset-password") or "en/reset-password",
    in a language other than the one being imported."""
    wanted_language, _, slug = spec.strip().rpartition("/")
    stmt = select(KbArticle).where(KbArticle.slug == slug.lower(), KbArticle.language != language)
    if wanted_language:
        stmt = stmt.where(KbArticle.language == wanted_language)
    found = (await session.scalars(stmt.order_by(KbArticle.id))).all()
    if not found:
        raise InvalidInput(
            f"translation_of: no article with the slug {spec!r} in another language",
            field="translation_of",
        )
    if len({a.translation_group for a in found}) > 1:
        raise InvalidInput(
            f"translation_of: {spec!r} names articles in several languages; write it as "
            f"<language>/<slug>",
            field="translation_of",
        )
    return found[0]
