"""The agent's "search everything" box: customers, cases, interactions and articles at once.

Customers, cases and interactions live in PostgreSQL whichever search backend is chosen, so
both adapters call `search_everything` with themselves as the article source.

Scores put the kinds on one scale (0..1.2), by how sure a match is:

- an exact case number (`#1001`, `1001`) 1.2, an exact phone number or address 1.1;
- a customer's name 0.55..1.0, a case subject 0.45..0.9 and an interaction 0.3..0.6, each
  higher the more of the text the query covers; an article 0.4..0.9, by its backend score
  relative to the best article's.

Case subjects and interaction texts have no trigram index, so they are searched among the
most recent `RECENT_CASES` / `RECENT_INTERACTIONS` rows only (a bounded primary-key scan);
older ones are found through their customer or case.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from sqlalchemy import false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from helpdesk.customers import search_customers
from helpdesk.errors import InvalidInput
from helpdesk.identities import fold_text, looks_like_phone, normalize_identity
from helpdesk.models import Case, Customer, Interaction
from helpdesk.visibility import Scope, cases_clause, interactions_clause
from knowledge_base.search import AGENT_FILTERS, EverythingHit
from knowledge_base.search import highlight as hl
from knowledge_base.search.postgres import like_operator, like_patterns

if TYPE_CHECKING:
    from helpdesk.db import Database
    from knowledge_base.search import SearchPort

RECENT_CASES = 5000
RECENT_INTERACTIONS = 5000
SUBJECT_SIMILARITY = 0.5  # pg_trgm word_similarity for a case subject with a typo
_CASE_NUMBER = re.compile(r"#?\s*(\d{1,18})")
ARTICLE_URL = "/kb/{language}/{slug}"


async def search_everything(
    database: Database,
    articles: SearchPort,
    query: str,
    *,
    limit: int = 20,
    region: str = "JP",
    scope: Scope | None = None,
) -> list[EverythingHit]:
    """Best `limit` matches of every kind for one query, best first; cases and
    interactions only where `scope` may see them (customers are everyone's)."""
    q = " ".join((query or "").split())
    if not q or limit <= 0:
        return []
    terms = hl.query_terms(q)
    async with database.unit_of_work() as session:
        hits = [
            *await _customers(session, q, terms, limit, region),
            *await _cases(session, q, terms, limit, scope),
            *await _interactions(session, q, terms, limit, scope),
        ]
    result = await articles.search(q, AGENT_FILTERS, limit=limit)
    # Backends score on their own scales (Elasticsearch's BM25 has no upper bound): an
    # article's place is taken relative to the best article.
    best = max((h.score for h in result.hits), default=0.0) or 1.0
    hits += [
        EverythingHit(
            kind="article",
            id=hit.article_id,
            title=hit.title,
            snippet_html=hit.snippet_html,
            url=ARTICLE_URL.format(language=hit.language, slug=hit.slug),
            score=0.4 + 0.5 * max(0.0, hit.score) / best,
        )
        for hit in result.hits
    ]
    hits.sort(key=lambda h: h.score, reverse=True)  # stable: kinds keep their own order
    return hits[:limit]


def _closeness(query: str, text: str | None) -> float:
    """0..1: how much of `text` the query is (1.0 when it is all of it)."""
    q, t = fold_text(query).strip(), fold_text(text or "").strip()
    if not q or not t:
        return 0.0
    if q == t:
        return 1.0
    if q in t:
        return 0.6 + 0.4 * len(q) / len(t)
    return 0.6 * SequenceMatcher(None, q, t, autojunk=False).ratio()


def _identity_query(q: str, region: str) -> tuple[str, str] | None:
    with contextlib.suppress(InvalidInput):
        if "@" in q:
            return "email", normalize_identity("email", q)
        if looks_like_phone(q):
            return "phone", normalize_identity("phone", q, region)
    return None


async def _customers(
    session: AsyncSession, q: str, terms: list[str], limit: int, region: str
) -> list[EverythingHit]:
    page = await search_customers(session, q, limit=limit, region=region)
    wanted = _identity_query(q, region)
    hits = []
    for customer in page.items:
        exact = wanted is not None and any(
            (i.kind, i.normalized) == wanted for i in customer.identities
        )
        names = (customer.name, customer.name_kana, customer.organization)
        score = 1.1 if exact else 0.55 + 0.45 * max(_closeness(q, n) for n in names)
        hits.append(
            EverythingHit(
                kind="customer",
                id=customer.id,
                title=customer.name,
                snippet_html=_customer_line(customer, terms, wanted),
                url=f"/customers/{customer.id}",
                score=score,
            )
        )
    return hits


def _customer_line(customer: Customer, terms: list[str], wanted: tuple[str, str] | None) -> str:
    parts = [hl.highlight(p, terms) for p in (customer.name_kana, customer.organization) if p]
    for identity in customer.identities:
        if identity.kind not in ("phone", "email"):
            continue
        if (identity.kind, identity.normalized) == wanted:
            parts.append(f"<mark>{hl.highlight(identity.normalized, [])}</mark>")
        else:
            parts.append(hl.highlight(identity.normalized, terms))
    return " · ".join(parts)


async def _cases(
    session: AsyncSession, q: str, terms: list[str], limit: int, scope: Scope | None
) -> list[EverythingHit]:
    hits: list[EverythingHit] = []
    number = _CASE_NUMBER.fullmatch(q)
    if number:
        case = await session.scalar(select(Case).where(Case.number == int(number.group(1))))
        if case is not None and (scope is None or scope.sees(case.team_id, case.assignee_id)):
            hits.append(_case_hit(case.id, case.number, case.subject, terms, 1.2))
    patterns = like_patterns(q)
    recent = (
        select(Case.id, Case.number, Case.subject)
        .where(cases_clause(scope))
        .order_by(Case.id.desc())
        .limit(RECENT_CASES)
        .subquery()
    )
    similarity = func.word_similarity(q, recent.c.subject)
    by_subject = _any_like(recent.c.subject, patterns)
    rows = (
        await session.execute(
            select(recent.c.id, recent.c.number, recent.c.subject)
            .where(or_(by_subject, similarity >= SUBJECT_SIMILARITY))
            .order_by(similarity.desc(), recent.c.id.desc())
            .limit(limit)
        )
    ).all()
    seen = {h.id for h in hits}
    hits += [
        _case_hit(row.id, row.number, row.subject, terms, 0.45 + 0.45 * _closeness(q, row.subject))
        for row in rows
        if row.id not in seen
    ]
    return hits


def _case_hit(
    case_id: int, number: int, subject: str, terms: list[str], score: float
) -> EverythingHit:
    return EverythingHit(
        kind="case",
        id=case_id,
        title=f"#{number} {subject}",
        snippet_html=hl.highlight(subject, terms),
        url=f"/cases/{case_id}",
        score=score,
    )


async def _interactions(
    session: AsyncSession, q: str, terms: list[str], limit: int, scope: Scope | None
) -> list[EverythingHit]:
    patterns = like_patterns(q)
    if not patterns:
        return []
    recent = (
        select(
            Interaction.id,
            Interaction.customer_id,
            Interaction.case_id,
            Interaction.kind,
            Interaction.subject,
            Interaction.text,
            Interaction.occurred_at,
        )
        .where(interactions_clause(scope))
        .order_by(Interaction.id.desc())
        .limit(RECENT_INTERACTIONS)
        .subquery()
    )
    rows = (
        await session.execute(
            select(recent)
            .where(or_(_any_like(recent.c.subject, patterns), _any_like(recent.c.text, patterns)))
            .order_by(recent.c.id.desc())
            .limit(limit)
        )
    ).all()
    hits = []
    for row in rows:
        at = f"{row.kind} · {row.occurred_at:%Y-%m-%d %H:%M}"
        where = f"/cases/{row.case_id}" if row.case_id else f"/customers/{row.customer_id}"
        in_subject = any(t in hl.fold(row.subject or "") for t in terms)
        hits.append(
            EverythingHit(
                kind="interaction",
                id=row.id,
                title=f"{row.subject} ({at})" if row.subject else at,
                snippet_html=hl.snippet(row.text or row.subject or "", terms),
                url=f"{where}#interaction-{row.id}",
                score=0.3 + (0.3 * _closeness(q, row.subject) if in_subject else 0.1),
            )
        )
    return hits


def _any_like(column, patterns: Sequence[str]):  # type: ignore[no-untyped-def]
    if not patterns:
        return false()
    caseless = like_operator(list(patterns)) == "LIKE"
    return or_(*(column.like(p) if caseless else column.ilike(p) for p in patterns))
