"""Knowledge-base categories: a small tree with names per language."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk import audit
from helpdesk.errors import Conflict, InvalidInput, NotFound
from knowledge_base.articles import clean_slug, slugify
from knowledge_base.models import KB_LANGUAGES, KbArticle, KbCategory

MAX_NAME_CHARS = 120
MAX_SLUG_CHARS = 120
EDITABLE_FIELDS = ("slug", "names", "parent_id", "position")


@dataclass
class CategoryNode:
    """A category as a page shows it: its name in one language, its articles, its children.

    `article_count` counts the published articles of that language filed directly here;
    `total_count` adds those of every subcategory.
    """

    id: int
    slug: str
    name: str
    parent_id: int | None
    position: int
    article_count: int = 0
    total_count: int = 0
    children: list[CategoryNode] = field(default_factory=list)


def display_name(category: KbCategory, language: str) -> str:
    """The category's name in `language`, else in another language, else its slug."""
    names = category.names or {}
    if names.get(language):
        return names[language]
    for other in KB_LANGUAGES:
        if names.get(other):
            return names[other]
    return category.slug


def _clean_names(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidInput("names must map languages to names", field="names")
    names: dict[str, str] = {}
    for language, name in value.items():
        if language not in KB_LANGUAGES:
            raise InvalidInput(
                f"name languages must be among {', '.join(KB_LANGUAGES)}", field="names"
            )
        if name is None or (isinstance(name, str) and not name.strip()):
            continue
        if not isinstance(name, str) or len(name.strip()) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"a category name is text of at most {MAX_NAME_CHARS} characters", field="names"
            )
        names[language] = name.strip()
    if not names:
        raise InvalidInput("a category needs a name in at least one language", field="names")
    return names


def _clean_position(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("position must be a whole number", field="position")
    return value


async def get_category(session: AsyncSession, category_id: int) -> KbCategory:
    category = await session.get(KbCategory, category_id)
    if category is None:
        raise NotFound(f"category {category_id} not found")
    return category


async def category_by_slug(session: AsyncSession, slug: str) -> KbCategory:
    category = await session.scalar(select(KbCategory).where(KbCategory.slug == slug))
    if category is None:
        raise NotFound(f"category {slug!r} not found")
    return category


async def _check_parent(
    session: AsyncSession, parent_id: object, category_id: int | None = None
) -> int | None:
    if parent_id is None:
        return None
    if not isinstance(parent_id, int) or isinstance(parent_id, bool):
        raise InvalidInput("parent_id must be a category id", field="parent_id")
    if await session.get(KbCategory, parent_id) is None:
        raise InvalidInput(f"no category {parent_id}", field="parent_id")
    if category_id is not None:
        ancestors = await _ancestor_ids(session, parent_id)
        if category_id in ancestors:
            raise InvalidInput(
                "a category cannot be moved under itself or one of its subcategories",
                field="parent_id",
            )
    return parent_id


async def _ancestor_ids(session: AsyncSession, category_id: int) -> list[int]:
    """`category_id` and its ancestors, nearest first."""
    rows = await session.execute(
        text(
            "WITH RECURSIVE up(id, parent_id, depth) AS ("
            " SELECT id, parent_id, 0 FROM kb_categories WHERE id = :id"
            " UNION ALL"
            " SELECT c.id, c.parent_id, up.depth + 1 FROM kb_categories c"
            " JOIN up ON c.id = up.parent_id WHERE up.depth < 64"
            ") SELECT id FROM up ORDER BY depth"
        ),
        {"id": category_id},
    )
    return [row[0] for row in rows]


async def _free_slug(session: AsyncSession, base: str, *, exclude_id: int | None = None) -> str:
    taken = set(
        (
            await session.scalars(
                select(KbCategory.slug).where(
                    (KbCategory.slug == base) | KbCategory.slug.like(base + "-%"),
                    KbCategory.id != (exclude_id or 0),
                )
            )
        ).all()
    )
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


async def _check_slug_free(session: AsyncSession, slug: str, exclude_id: int | None) -> None:
    other = await session.scalar(
        select(KbCategory.id).where(KbCategory.slug == slug, KbCategory.id != (exclude_id or 0))
    )
    if other is not None:
        raise Conflict(f"the slug {slug!r} is already used by category {other}", field="slug")


async def create_category(
    session: AsyncSession,
    *,
    names: dict[str, str],
    slug: str | None = None,
    parent_id: int | None = None,
    position: int = 0,
) -> KbCategory:
    """A new category. Without a slug one is made from the English (else any ASCII) name,
    or `c-<id>` for names in Japanese; a given slug already in use is a Conflict."""
    clean = _clean_names(names)
    parent = await _check_parent(session, parent_id)
    category = KbCategory(names=clean, parent_id=parent, position=_clean_position(position))
    if slug:
        category.slug = clean_slug(slug, max_length=MAX_SLUG_CHARS)
        await _check_slug_free(session, category.slug, None)
    else:
        base = next(
            (s for s in (slugify(n, max_length=60) for n in _names_english_first(clean)) if s),
            None,
        )
        if base is None:
            category.id = await session.scalar(
                select(func.nextval(text("pg_get_serial_sequence('kb_categories', 'id')")))
            )
            base = f"c-{category.id}"
        category.slug = await _free_slug(session, base)
    session.add(category)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"the slug {category.slug!r} is already in use", field="slug") from exc
    return category


def _names_english_first(names: dict[str, str]) -> list[str]:
    return sorted(names.values(), key=lambda n: n != names.get("en"))


async def update_category(
    session: AsyncSession, category_id: int, changes: dict[str, object]
) -> KbCategory:
    """Rename, re-slug, move or reorder a category (`names` replaces all names at once)."""
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field: {unknown[0]}", field=unknown[0])
    category = await get_category(session, category_id)
    if "names" in changes:
        category.names = _clean_names(changes["names"])
    if "slug" in changes:
        slug = clean_slug(changes["slug"], max_length=MAX_SLUG_CHARS)
        if slug != category.slug:
            await _check_slug_free(session, slug, category.id)
            category.slug = slug
    if "parent_id" in changes:
        category.parent_id = await _check_parent(session, changes["parent_id"], category.id)
    if "position" in changes:
        category.position = _clean_position(changes["position"])
    await session.flush()
    return category


async def delete_category(
    session: AsyncSession, category_id: int, *, actor_id: int | None
) -> KbCategory:
    """Delete a category; its articles and subcategories move up to its parent (or become
    uncategorized / top-level). Audited, with what moved, so it can be put back by hand.

    Articles are moved with an UPDATE that leaves `updated_at` alone; a caller with a search
    index that stores categories reindexes the moved articles after commit.
    """
    category = await get_category(session, category_id)
    moved_articles = (
        await session.scalars(
            update(KbArticle)
            .where(KbArticle.category_id == category_id)
            .values(category_id=category.parent_id, updated_at=KbArticle.updated_at)
            .returning(KbArticle.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    moved_children = (
        await session.scalars(
            update(KbCategory)
            .where(KbCategory.parent_id == category_id)
            .values(parent_id=category.parent_id)
            .returning(KbCategory.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    await audit.record(
        session,
        actor_id,
        "kb_category.delete",
        "kb_category",
        category_id,
        slug=category.slug,
        names=dict(category.names or {}),
        parent_id=category.parent_id,
        moved_article_ids=list(moved_articles),
        moved_category_ids=list(moved_children),
    )
    await session.delete(category)
    await session.flush()
    # The UPDATEs above bypassed the identity map: reload what it holds.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, KbArticle) and obj.id in moved_articles:
            await session.refresh(obj, attribute_names=["category_id"])
        elif isinstance(obj, KbCategory) and obj.id in moved_children:
            await session.refresh(obj, attribute_names=["parent_id"])
    return category


async def tree(
    session: AsyncSession, language: str, *, include_internal: bool = False
) -> list[CategoryNode]:
    """The whole category tree, top level first, siblings ordered by position then name.

    Counts are of published articles in `language` (public ones only unless
    `include_internal`, for the agents' view).
    """
    categories = (await session.scalars(select(KbCategory))).all()
    counts_stmt = (
        select(KbArticle.category_id, func.count())
        .where(
            KbArticle.language == language,
            KbArticle.status == "published",
            KbArticle.category_id.is_not(None),
        )
        .group_by(KbArticle.category_id)
    )
    if not include_internal:
        counts_stmt = counts_stmt.where(KbArticle.visibility == "public")
    counts = {cid: n for cid, n in (await session.execute(counts_stmt)).all()}
    nodes = {
        c.id: CategoryNode(
            id=c.id,
            slug=c.slug,
            name=display_name(c, language),
            parent_id=c.parent_id,
            position=c.position,
            article_count=counts.get(c.id, 0),
        )
        for c in categories
    }
    roots: list[CategoryNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_id) if node.parent_id is not None else None
        (parent.children if parent else roots).append(node)

    def finish(siblings: list[CategoryNode]) -> int:
        siblings.sort(key=lambda n: (n.position, n.name.casefold(), n.id))
        total = 0
        for node in siblings:
            node.total_count = node.article_count + finish(node.children)
            total += node.total_count
        return total

    finish(roots)
    return roots


async def path(
    session: AsyncSession, category_id: int | None, language: str | None = None
) -> tuple[str, ...]:
    """Names from the top of the tree down to the category ("Billing", "Invoices");
    empty for no category. Names in `language`, falling back as `display_name` does."""
    if category_id is None:
        return ()
    ids = list(reversed(await _ancestor_ids(session, category_id)))
    if not ids:
        raise NotFound(f"category {category_id} not found")
    by_id = {
        c.id: c
        for c in (await session.scalars(select(KbCategory).where(KbCategory.id.in_(ids)))).all()
    }
    return tuple(display_name(by_id[i], language or "ja") for i in ids)


async def paths(session: AsyncSession, language: str) -> dict[int, tuple[str, ...]]:
    """Every category's path (as `path` gives it), for indexing many articles at once."""
    categories = {c.id: c for c in (await session.scalars(select(KbCategory))).all()}
    found: dict[int, tuple[str, ...]] = {}

    def walk(cid: int, seen: tuple[int, ...] = ()) -> tuple[str, ...]:
        if cid in found:
            return found[cid]
        category = categories[cid]
        parent = category.parent_id
        above = walk(parent, (*seen, cid)) if parent in categories and parent not in seen else ()
        found[cid] = (*above, display_name(category, language))
        return found[cid]

    for cid in categories:
        walk(cid)
    return found


async def resolve_path(
    session: AsyncSession, spec: str, *, language: str, create: bool = True
) -> KbCategory:
    """The category a writer means by `spec`: an existing slug ("billing-invoices") or a
    path of names ("Billing/Invoices", names compared case-insensitively in any language).

    With `create`, missing categories along the path are made, named in `language`.
    """
    spec = (spec or "").strip()
    if not spec:
        raise InvalidInput("category is empty", field="category")
    if "/" not in spec:
        by_slug = await session.scalar(select(KbCategory).where(KbCategory.slug == spec.lower()))
        if by_slug is not None:
            return by_slug
    parts = [p.strip() for p in spec.split("/") if p.strip()]
    if not parts:
        raise InvalidInput(f"category {spec!r} names no category", field="category")
    parent: KbCategory | None = None
    for part in parts:
        siblings = (
            await session.scalars(
                select(KbCategory)
                .where(
                    KbCategory.parent_id == parent.id if parent else KbCategory.parent_id.is_(None)
                )
                .order_by(KbCategory.id)
            )
        ).all()
        match = _named(siblings, part, language)
        if match is None:
            if not create:
                raise NotFound(f"category {spec!r} not found")
            match = await _create_named(session, part, language, parent)
        parent = match
    assert parent is not None
    return parent


def _named(siblings: list[KbCategory] | tuple, name: str, language: str) -> KbCategory | None:
    wanted = name.casefold()
    in_language = [c for c in siblings if (c.names or {}).get(language, "").casefold() == wanted]
    if in_language:
        return in_language[0]
    for c in siblings:
        if wanted in {n.casefold() for n in (c.names or {}).values()} or c.slug == wanted:
            return c
    return None


async def _create_named(
    session: AsyncSession, name: str, language: str, parent: KbCategory | None
) -> KbCategory:
    base = slugify(name, max_length=60)
    slug = None
    if base is not None:
        taken = await session.scalar(select(KbCategory.id).where(KbCategory.slug == base))
        # "Invoices" under "Billing" becomes billing-invoices when "invoices" is taken.
        slug = base if taken is None or parent is None else f"{parent.slug}-{base}"[:100]
        slug = await _free_slug(session, slug)
    return await create_category(
        session, names={language: name}, slug=slug, parent_id=parent.id if parent else None
    )
