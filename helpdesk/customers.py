"""Customers: create, find, show as one card, and merge duplicates into one history."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import and_, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from helpdesk import audit, sla, visibility
from helpdesk.errors import Conflict, InvalidInput, NotFound
from helpdesk.identities import (
    fold_text,
    looks_like_phone,
    normalize_identity,
)
from helpdesk.models import (
    IDENTITY_KINDS,
    LANGUAGES,
    TIERS,
    Case,
    ContactIdentity,
    Customer,
    Interaction,
)
from helpdesk.pagination import Page, decode_cursor, encode_cursor

OPEN_STATUSES = ("new", "open", "pending", "on_hold")
EDITABLE_FIELDS = ("name", "name_kana", "organization", "language", "tier", "notes")


@dataclass
class IdentityInput:
    kind: str
    value: str
    verified: bool = False
    is_primary: bool = False


@dataclass
class CustomerInput:
    name: str
    name_kana: str | None = None
    organization: str | None = None
    language: str | None = None
    tier: str = "standard"
    notes: str | None = None
    identities: list[IdentityInput] = field(default_factory=list)


def search_text_for(customer: Customer) -> str:
    """Folded names, each also without spaces: "山田太郎" and "田太" must find "山田 太郎"."""
    folded = [fold_text(p) for p in (customer.name, customer.name_kana, customer.organization) if p]
    joined = [f.replace(" ", "") for f in folded if " " in f]
    return " ".join(folded + joined)


def _check_fields(values: dict[str, object]) -> None:
    name = values.get("name")
    if "name" in values and (not isinstance(name, str) or not name.strip()):
        raise InvalidInput("name is required", field="name")
    if isinstance(name, str) and len(name) > 200:
        raise InvalidInput("name is longer than 200 characters", field="name")
    for key in ("name_kana", "organization"):
        value = values.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            raise InvalidInput(f"{key} must be text of at most 200 characters", field=key)
    tier = values.get("tier")
    if "tier" in values and tier not in TIERS:
        raise InvalidInput(f"tier must be one of {', '.join(TIERS)}", field="tier")
    language = values.get("language")
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)}", field="language")
    notes = values.get("notes")
    if notes is not None and (not isinstance(notes, str) or len(notes) > 20_000):
        raise InvalidInput("notes must be text of at most 20000 characters", field="notes")


async def create_customer(
    session: AsyncSession, data: CustomerInput, *, region: str = "JP"
) -> Customer:
    """A new customer with its identities. Identities are normalized first, so bad input
    fails before anything is written."""
    _check_fields(
        {
            "name": data.name,
            "name_kana": data.name_kana,
            "organization": data.organization,
            "language": data.language,
            "tier": data.tier,
            "notes": data.notes,
        }
    )
    prepared = _prepare_identities(data.identities, region)
    customer = Customer(
        name=data.name.strip(),
        name_kana=(data.name_kana or "").strip() or None,
        organization=(data.organization or "").strip() or None,
        language=data.language,
        tier=data.tier,
        notes=data.notes,
    )
    customer.search_text = search_text_for(customer)
    session.add(customer)
    await session.flush()
    for kind, raw, normalized, item in prepared:
        session.add(
            ContactIdentity(
                customer_id=customer.id,
                kind=kind,
                raw_value=raw,
                normalized=normalized,
                verified=item.verified,
                is_primary=item.is_primary,
            )
        )
    await session.flush()
    return customer


def _prepare_identities(
    items: Iterable[IdentityInput], region: str
) -> list[tuple[str, str, str, IdentityInput]]:
    prepared = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        if item.kind not in IDENTITY_KINDS:
            raise InvalidInput(
                f"identity kind must be one of {', '.join(IDENTITY_KINDS)}", field="identities"
            )
        raw = (item.value or "").strip()[:320]
        normalized = normalize_identity(item.kind, raw, region)
        if (item.kind, normalized) in seen:
            continue
        seen.add((item.kind, normalized))
        prepared.append((item.kind, raw, normalized, item))
    return prepared


async def add_identity(
    session: AsyncSession, customer_id: int, item: IdentityInput, *, region: str = "JP"
) -> ContactIdentity:
    customer = _not_erased(await get_customer(session, customer_id))
    [(kind, raw, normalized, _)] = _prepare_identities([item], region)
    existing = await session.scalar(
        select(ContactIdentity).where(
            ContactIdentity.customer_id == customer.id,
            ContactIdentity.kind == kind,
            ContactIdentity.normalized == normalized,
        )
    )
    if existing is not None:
        raise Conflict(f"the customer already has this {kind}", field="value")
    identity = ContactIdentity(
        customer_id=customer.id,
        kind=kind,
        raw_value=raw,
        normalized=normalized,
        verified=item.verified,
        is_primary=item.is_primary,
    )
    session.add(identity)
    await session.flush()
    return identity


async def update_customer(
    session: AsyncSession, customer_id: int, changes: dict[str, object]
) -> Customer:
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field: {sorted(unknown)[0]}", field=sorted(unknown)[0])
    _check_fields(changes)
    customer = _not_erased(await get_customer(session, customer_id))
    previous_tier = customer.tier
    for key, value in changes.items():
        setattr(customer, key, value.strip() if isinstance(value, str) else value)
    customer.search_text = search_text_for(customer)
    await session.flush()
    if customer.tier != previous_tier:
        # Tier is a policy condition: the customer's open cases may fall under another one.
        now = datetime.now(UTC)
        open_cases = await session.scalars(
            select(Case).where(Case.customer_id == customer.id, Case.status.in_(OPEN_STATUSES))
        )
        for case in open_cases.all():
            await sla.recompute(session, case, now)
    return customer


async def get_customer(session: AsyncSession, customer_id: int) -> Customer:
    customer = await session.get(
        Customer, customer_id, options=[selectinload(Customer.identities)], populate_existing=True
    )
    if customer is None:
        raise NotFound(f"customer {customer_id} not found")
    return customer


def _not_erased(customer: Customer) -> Customer:
    """An erased customer (privacy.erase_customer) is a placeholder kept for statistics:
    nothing personal may be added to it again."""
    if customer.erased_at is not None:
        raise Conflict(f"customer {customer.id} was erased")
    return customer


@dataclass
class CustomerCard:
    """The single customer view's head: who they are, how to reach them, what is open."""

    customer: Customer
    identities: list[ContactIdentity]
    open_cases: list[Case]
    merged_into_id: int | None


async def customer_card(
    session: AsyncSession, customer_id: int, *, scope: visibility.Scope | None = None
) -> CustomerCard:
    customer = await get_customer(session, customer_id)
    open_cases = (
        await session.scalars(
            select(Case)
            .where(
                Case.customer_id == customer_id,
                Case.status.in_(OPEN_STATUSES),
                visibility.cases_clause(scope),
            )
            .order_by(Case.updated_at.desc())
            .limit(50)
        )
    ).all()
    return CustomerCard(
        customer=customer,
        identities=list(customer.identities),
        open_cases=list(open_cases),
        merged_into_id=customer.merged_into_id,
    )


async def search_customers(
    session: AsyncSession,
    query: str,
    *,
    limit: int = 25,
    cursor: str | None = None,
    region: str = "JP",
) -> Page[Customer]:
    """Find customers by name (partial, kana or kanji), phone in any format, or email.

    Results are newest first and cursor-paged by id, so paging stays stable while new
    customers arrive. Merged-away customers are never listed.
    """
    q = (query or "").strip()
    stmt = select(Customer).where(Customer.merged_into_id.is_(None))
    if q:
        owners = []
        if "@" in q:
            with contextlib.suppress(InvalidInput):  # not an address after all: search names
                owners.append(_identity_owners("email", normalize_identity("email", q)))
        if looks_like_phone(q):
            with contextlib.suppress(InvalidInput):
                owners.append(_identity_owners("phone", normalize_identity("phone", q, region)))
        folded = fold_text(q)
        pattern = "%" + folded.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        by_name = Customer.search_text.like(pattern)
        if owners:
            # A union, not `id IN (...) OR search_text LIKE ...`: with the OR, PostgreSQL
            # filters every customer row (a full scan per email or phone search); each branch
            # of the union uses its own index.
            by_name_ids = select(Customer.id).where(by_name)
            stmt = stmt.where(Customer.id.in_(union_all(by_name_ids, *owners)))
        else:
            stmt = stmt.where(by_name)
        # asyncpg prepares statements, so PostgreSQL picks between a plan made for this
        # pattern and one generic plan for every pattern; the wrong pick costs a full scan.
        # Three characters or more can use the trigram index, but only a plan made for the
        # pattern knows whether to (a rare name) or rather to walk the primary key newest
        # first (a common one). Shorter patterns cannot use the index, and a plan for them
        # underestimates their matches and reads the whole table: the generic plan walks
        # newest first and stops after one page.
        mode = "force_custom_plan" if len(folded) >= 3 else "force_generic_plan"
        await session.execute(text(f"SET LOCAL plan_cache_mode = {mode}"))
    if cursor:
        (last_id,) = decode_cursor(cursor, 1)
        if not isinstance(last_id, int):
            raise InvalidInput("malformed cursor", field="cursor")
        stmt = stmt.where(Customer.id < last_id)
    stmt = stmt.options(selectinload(Customer.identities)).order_by(Customer.id.desc())
    rows = list((await session.scalars(stmt.limit(limit + 1))).all())
    if q:
        await session.execute(text("RESET plan_cache_mode"))  # only for this query
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return Page(rows[:limit], next_cursor)


def _identity_owners(kind: str, normalized: str):  # type: ignore[no-untyped-def]
    return select(ContactIdentity.customer_id).where(
        and_(ContactIdentity.kind == kind, ContactIdentity.normalized == normalized)
    )


async def merge_customers(
    session: AsyncSession, survivor_id: int, other_id: int, *, actor_user_id: int | None
) -> Customer:
    """Fold `other` into `survivor` in the caller's transaction.

    Identities, cases and interactions move to the survivor; an identity the survivor already
    holds is dropped rather than duplicated. The other customer is kept, pointing at the
    survivor through `merged_into_id`, so old links and audit records still resolve.
    """
    if survivor_id == other_id:
        raise InvalidInput("cannot merge a customer into itself", field="other_id")
    # Lock both rows in id order so two concurrent merges cannot deadlock or cross.
    locked = (
        await session.scalars(
            select(Customer)
            .where(Customer.id.in_([survivor_id, other_id]))
            .order_by(Customer.id)
            .with_for_update()
        )
    ).all()
    by_id = {c.id: c for c in locked}
    for cid in (survivor_id, other_id):
        if cid not in by_id:
            raise NotFound(f"customer {cid} not found")
    survivor, other = by_id[survivor_id], by_id[other_id]
    if survivor.merged_into_id is not None:
        raise Conflict(f"customer {survivor_id} was merged into {survivor.merged_into_id}")
    if other.merged_into_id is not None:
        raise Conflict(f"customer {other_id} was already merged into {other.merged_into_id}")
    for customer in (survivor, other):
        _not_erased(customer)

    held = {
        (kind, value)
        for kind, value in (
            await session.execute(
                select(ContactIdentity.kind, ContactIdentity.normalized).where(
                    ContactIdentity.customer_id == survivor_id
                )
            )
        ).all()
    }
    moving = (
        await session.scalars(
            select(ContactIdentity).where(ContactIdentity.customer_id == other_id)
        )
    ).all()
    moved_identities, dropped_identities = [], []
    for identity in moving:
        if (identity.kind, identity.normalized) in held:
            dropped_identities.append(identity.normalized)
            await session.delete(identity)
        else:
            identity.customer_id = survivor_id
            identity.is_primary = False
            moved_identities.append(identity.normalized)
    case_ids = (
        await session.scalars(
            update(Case)
            .where(Case.customer_id == other_id)
            .values(customer_id=survivor_id)
            .returning(Case.id)
        )
    ).all()
    interaction_count = (
        await session.execute(
            update(Interaction)
            .where(Interaction.customer_id == other_id)
            .values(customer_id=survivor_id)
        )
    ).rowcount
    other.merged_into_id = survivor_id
    for key in ("name_kana", "organization", "language", "notes"):
        if getattr(survivor, key) is None and getattr(other, key) is not None:
            setattr(survivor, key, getattr(other, key))
    survivor.search_text = search_text_for(survivor)
    await audit.record(
        session,
        actor_user_id,
        "customer.merge",
        "customer",
        survivor_id,
        merged_customer_id=other_id,
        merged_customer_name=other.name,
        moved_identities=moved_identities,
        dropped_duplicate_identities=dropped_identities,
        moved_case_ids=list(case_ids),
        moved_interactions=interaction_count,
        at=datetime.now(UTC).isoformat(),
    )
    await session.flush()
    await session.refresh(survivor, attribute_names=["identities"])
    return survivor
