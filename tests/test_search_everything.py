"""The agent's global search box: customers, cases, interactions and articles in one list."""

from __future__ import annotations

import pytest

from helpdesk.customers import CustomerInput, IdentityInput, create_customer
from helpdesk.db import Database
from helpdesk.models import Case, Customer, Interaction
from knowledge_base.models import KbArticle
from knowledge_base.search import EverythingHit
from knowledge_base.search.postgres import PostgresSearch


@pytest.fixture
async def desk(db: Database) -> dict[str, int]:
    """Two customers, their cases and timeline entries, and three articles."""
    async with db.unit_of_work() as session:
        yamada = await create_customer(
            session,
            CustomerInput(
                name="山田 太郎",
                name_kana="ヤマダ タロウ",
                organization="Acme Trading",
                identities=[
                    IdentityInput("phone", "03-1234-5678"),
                    IdentityInput("email", "Taro.Yamada@example.com"),
                ],
            ),
        )
        smith = await create_customer(
            session,
            CustomerInput(
                name="Jane Smith", identities=[IdentityInput("email", "jane@example.org")]
            ),
        )
        invoice_case = Case(
            customer_id=yamada.id, subject="Invoice shows the wrong address", channel="email"
        )
        delivery_case = Case(customer_id=smith.id, subject="配送が遅れている", channel="phone")
        session.add_all([invoice_case, delivery_case])
        await session.flush()
        note = Interaction(
            customer_id=smith.id,
            case_id=delivery_case.id,
            kind="note",
            direction="internal",
            text="Courier says the parcel with tracking number ZX-99812 is held at the depot.",
        )
        mail = Interaction(
            customer_id=yamada.id,
            case_id=None,
            kind="email",
            direction="in",
            subject="Question about my contract",
            text="Could you tell me when my contract renews?",
        )
        session.add_all([note, mail])
        articles = [
            KbArticle(
                language="en",
                slug="invoice-address",
                title="Change the address on an invoice",
                body_text="Invoices use the billing address from your account.",
                status="published",
                visibility="public",
            ),
            KbArticle(
                language="en",
                slug="refund-approval",
                title="Approving a refund",
                body_text="Supervisors approve refunds over 10,000 yen.",
                status="published",
                visibility="internal",
            ),
            KbArticle(
                language="en",
                slug="refund-draft",
                title="Refund rules (draft)",
                body_text="Not ready.",
                status="draft",
                visibility="public",
            ),
        ]
        session.add_all(articles)
        await session.flush()
        return {
            "yamada": yamada.id,
            "smith": smith.id,
            "invoice_case": invoice_case.id,
            "invoice_number": invoice_case.number,
            "delivery_case": delivery_case.id,
            "note": note.id,
            "mail": mail.id,
            "invoice_article": articles[0].id,
            "internal_article": articles[1].id,
            "draft_article": articles[2].id,
        }


@pytest.fixture
def search(db: Database) -> PostgresSearch:
    return PostgresSearch(db)


def kinds(hits: list[EverythingHit]) -> list[tuple[str, int]]:
    return [(h.kind, h.id) for h in hits]


async def test_customer_by_name_in_kanji_and_kana(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    for query in ("山田", "やまだ", "ヤマダ タロウ", "acme"):
        hits = await search.search_everything(query)
        assert kinds(hits)[0] == ("customer", desk["yamada"]), query
        assert hits[0].url == f"/customers/{desk['yamada']}"


async def test_customer_by_phone_in_any_format(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    for query in ("03-1234-5678", "+81 3 1234 5678", "０３１２３４５６７８"):
        hits = await search.search_everything(query)
        assert kinds(hits)[0] == ("customer", desk["yamada"]), query
        assert "<mark>+81312345678</mark>" in hits[0].snippet_html


async def test_customer_by_email(search: PostgresSearch, desk: dict[str, int]) -> None:
    hits = await search.search_everything("JANE@example.org")
    assert kinds(hits)[0] == ("customer", desk["smith"])
    assert hits[0].score > 1.0


async def test_case_by_number_with_or_without_hash(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    number = desk["invoice_number"]
    for query in (f"#{number}", str(number)):
        hits = await search.search_everything(query)
        assert kinds(hits)[0] == ("case", desk["invoice_case"]), query
        assert hits[0].title == f"#{number} Invoice shows the wrong address"
        assert hits[0].url == f"/cases/{desk['invoice_case']}"


async def test_case_by_subject_in_english_and_japanese(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    hits = await search.search_everything("wrong address")
    assert ("case", desk["invoice_case"]) in kinds(hits)
    hits = await search.search_everything("配送")
    assert kinds(hits)[0] == ("case", desk["delivery_case"])
    assert "<mark>配送</mark>" in hits[0].snippet_html


async def test_interaction_text_links_into_its_timeline(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    [hit] = await search.search_everything("ZX-99812")
    assert (hit.kind, hit.id) == ("interaction", desk["note"])
    assert hit.url == f"/cases/{desk['delivery_case']}#interaction-{desk['note']}"
    assert "<mark>ZX-99812</mark>" in hit.snippet_html
    [mail] = await search.search_everything("contract renews")
    assert mail.url == f"/customers/{desk['yamada']}#interaction-{desk['mail']}"


async def test_articles_internal_included_drafts_not(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    hits = await search.search_everything("refund")
    assert kinds(hits) == [("article", desk["internal_article"])]
    assert hits[0].url == "/kb/en/refund-approval"
    assert "<mark>" in hits[0].snippet_html


async def test_exact_matches_rank_above_mentions(
    search: PostgresSearch, desk: dict[str, int]
) -> None:
    hits = await search.search_everything("invoice")
    # the case about an invoice and the article titled with it; neither is a customer
    assert {("case", desk["invoice_case"]), ("article", desk["invoice_article"])} <= set(
        kinds(hits)
    )
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # an exact phone number outranks everything that merely mentions digits
    hits = await search.search_everything("0312345678")
    assert hits[0].kind == "customer" and all(h.score < hits[0].score for h in hits[1:])


async def test_limit_caps_the_list(
    search: PostgresSearch, desk: dict[str, int], db: Database
) -> None:
    async with db.unit_of_work() as session:
        session.add_all(
            Customer(name=f"Invoice Tester {n}", search_text=f"invoice tester {n}")
            for n in range(8)
        )
    assert len(await search.search_everything("invoice", limit=5)) == 5
    assert len(await search.search_everything("invoice", limit=30)) == 10
    assert await search.search_everything("  ") == []
