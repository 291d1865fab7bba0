"""Customer data rights: export everything, erase a customer but keep the statistics,
consent and contact preferences, and who may do which.

The customer's history is made through the channels' own domain functions (email ingest,
a reply, calls from the CTI, a chat with an upload and a rating, a note with a file), with
a second customer who holds one identical file, and an older record merged in.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from cti.events import CallEvent
from helpdesk import calls, cases, chat, customers, interactions, metrics, privacy, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.errors import Conflict, InvalidInput
from helpdesk.mail import outbound
from helpdesk.mail.ingest import ingest_message
from helpdesk.models import (
    AgentPresence,
    AgentSocket,
    Attachment,
    AuditRecord,
    Base,
    Call,
    Case,
    ChatConversation,
    ChatFile,
    ChatMessage,
    ContactIdentity,
    Customer,
    Interaction,
    MailMessage,
    OutboxMail,
    SlaClock,
    User,
)
from tests.conftest import PASSWORD

REGION = "JP"
ALWAYS = BusinessCalendar(timezone="UTC", weekly=parse_weekly("mon-sun 00:00-24:00"))
# Whatever identifies or describes Hanako: none of it may be left anywhere after erasure.
MARKERS = (
    "hanako", "山田", "花子", "example.jp", "+81312345678", "0312345678", "1234-5678",
    "+81355550000", "5555-0000", "+819012345678", "請求書", "秘密の相談", "折り返し希望",
    "内部メモ", "とても親切", "ご連絡ありがとうございます", "v-hanako",
)  # fmt: skip


# -- the desk: Hanako's history on every channel --------------------------------------------


@dataclass
class Desk:
    hanako: int
    old_record: int  # merged into hanako
    other: int  # another customer, who holds a file identical to one of Hanako's
    email_case: int
    chat_id: int
    first_message_id: str
    files: dict[str, bytes] = field(default_factory=dict)  # name -> bytes, by kind
    supervisor: Any = None
    agent: Any = None


def _mail(message_id: str, *, subject: str, body: str, attachment: bytes | None = None, **hdr):
    msg = EmailMessage()
    msg["From"] = "山田 花子 <hanako@example.jp>"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in hdr.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    msg.add_alternative(f"<p>{body}</p>", subtype="html")
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="pdf", filename="請求書 2026/11.pdf"
        )
    return msg.as_bytes(policy=SMTP)


async def _online(db, user_id: int) -> None:
    async with db.unit_of_work() as s:
        s.add(AgentPresence(user_id=user_id, status="available", chat_capacity=3))
        s.add(AgentSocket(id=uuid.uuid4().hex, user_id=user_id, process="test"))


async def _call(db, call_id: str, number: str, at: datetime, notes: str = "") -> int:
    async with db.unit_of_work() as s:
        for event, offset, extra in (
            ("ring", 0, {}),
            ("answer", 8, {}),
            ("hangup", 188, {"cause": "normalClearing"}),
        ):
            applied = await calls.apply_event(
                s,
                CallEvent(
                    event=event,
                    call_id=call_id,
                    from_number=number,
                    to_number="0501111",
                    agents=("201",),
                    at=at + timedelta(seconds=offset),
                    **extra,
                ),
                region=REGION,
            )
        call_pk = applied.call.id
        if notes:
            await calls.set_notes(s, call_pk, notes)
    return call_pk


@pytest.fixture
async def desk(db, settings, make_staff) -> Desk:
    supervisor = await make_staff("supervisor")
    agent = await make_staff("agent", extension="201")
    await _online(db, agent.user.id)
    tag = uuid.uuid4().hex  # files unique to this test run: the store is shared
    files = {
        "mail": f"%PDF invoice {tag}".encode(),
        "chat": f"screenshot {tag}".encode() + bytes(range(256)),
        "shared": f"terms and conditions {tag}".encode(),
    }
    now = datetime.now(UTC)
    async with db.unit_of_work() as s:
        cal = await sla.create_calendar(s, "Always", ALWAYS)
        await sla.create_policy(
            s,
            name="Everyone",
            position=10,
            calendar_id=cal.id,
            first_response_minutes=60,
            next_response_minutes=240,
            resolution_minutes=1440,
        )

    # Email: a first mail with an attachment opens a case (and is acknowledged); an agent
    # answers; the case is solved; Hanako writes again (reopened) and it is solved again.
    first_id = f"first-{tag}@example.jp"
    async with db.unit_of_work() as s:
        first = await ingest_message(
            s,
            _mail(
                first_id,
                subject="請求書について",
                body="請求書が届きません",
                attachment=files["mail"],
            ),
            settings=settings,
            source="test",
        )
    hanako = first.customer_id
    assert first.status == "created" and hanako is not None
    async with db.unit_of_work() as s:
        await outbound.reply_to_case(
            s,
            settings,
            case_id=first.case_id,
            author_id=agent.user.id,
            text="ご連絡ありがとうございます。再送します。",
        )
        await cases.update_case(s, first.case_id, {"status": "solved"}, actor_user_id=agent.user.id)
    async with db.unit_of_work() as s:
        again = await ingest_message(
            s,
            _mail(
                f"again-{tag}@example.jp",
                subject="Re: 請求書について",
                body="まだ届きません",
                In_Reply_To=f"<{first_id}>",
            ),
            settings=settings,
            source="test",
        )
        assert again.status == "reopened"
        await cases.update_case(s, first.case_id, {"status": "solved"}, actor_user_id=agent.user.id)

    # Phone: Hanako's office number; a call from it; a call from a number nobody had yet
    # (answered, so no one was chosen), which then becomes hers.
    async with db.unit_of_work() as s:
        await customers.add_identity(
            s, hanako, customers.IdentityInput("phone", "03-1234-5678"), region=REGION
        )
    await _call(db, f"call-a-{tag}", "03-1234-5678", now - timedelta(hours=2), "折り返し希望")
    await _call(db, f"call-b-{tag}", "03-5555-0000", now - timedelta(hours=1))
    async with db.unit_of_work() as s:
        await customers.add_identity(
            s, hanako, customers.IdentityInput("phone", "03-5555-0000"), region=REGION
        )

    # Chat: found by her address, an upload, an agent's answer, closed and rated.
    async with db.unit_of_work() as s:
        conv, _token = await chat.start(
            s,
            chat.VisitorInput(
                name="山田 花子",
                email="hanako@example.jp",
                visitor_id="v-hanako-1",
                page_url="https://shop.example.jp/cart",
            ),
            region=REGION,
        )
        await chat.post(s, conv.id, sender="visitor", body="秘密の相談です", client_id="c1")
        upload = await chat.store_file(
            s,
            attachments_dir=settings.attachments_dir,
            conversation_id=conv.id,
            filename="../スクリーン ショット.png",
            content_type="image/png",
            data=files["chat"],
            max_bytes=settings.chat_upload_bytes,
        )
        await chat.post(s, conv.id, sender="visitor", body="", client_id="c2", file_id=upload.id)
    async with db.unit_of_work() as s:
        routed = await chat.route(s, offer_seconds=20, abandon_seconds=600)
        assert routed.offered == 1
    async with db.unit_of_work() as s:
        user = await s.get(User, agent.user.id)
        await chat.accept(s, conv.id, user)
        await chat.post(s, conv.id, sender="agent", body="確認します", client_id="a1", author=user)
        await chat.close(s, conv.id, by="agent", actor=user)
        await chat.rate(s, conv.id, 5, "とても親切")

    # A note with a file that another customer's note holds too (stored once).
    async with db.unit_of_work() as s:
        other = await customers.create_customer(
            s,
            customers.CustomerInput(
                name="Other Person",
                identities=[customers.IdentityInput("email", "other@example.com")],
            ),
        )
        for customer_id, body in ((hanako, "内部メモ: 規約を送付"), (other.id, "terms sent")):
            case = await cases.create_case(
                s,
                cases.CaseInput(customer_id=customer_id, subject="規約", channel="other"),
                author_user_id=agent.user.id,
            )
            _, note = await cases.add_note(s, case.id, body, author_user_id=agent.user.id)
            await interactions.store_attachment(
                s,
                attachments_dir=settings.attachments_dir,
                interaction_id=note.id,
                filename="terms.txt",
                content_type="text/plain",
                data=files["shared"],
                max_bytes=settings.max_attachment_bytes,
            )

    # An older record of Hanako, with a call of its own, merged into her.
    async with db.unit_of_work() as s:
        old = await customers.create_customer(
            s,
            customers.CustomerInput(
                name="山田 花子 (旧)",
                identities=[customers.IdentityInput("phone", "090-1234-5678")],
            ),
            region=REGION,
        )
    await _call(db, f"call-c-{tag}", "090-1234-5678", now - timedelta(minutes=30))
    async with db.unit_of_work() as s:
        await customers.merge_customers(s, hanako, old.id, actor_user_id=supervisor.user.id)

    return Desk(
        hanako=hanako,
        old_record=old.id,
        other=other.id,
        email_case=first.case_id,
        chat_id=conv.id,
        first_message_id=first_id,
        files=files,
        supervisor=supervisor,
        agent=agent,
    )


# -- helpers --------------------------------------------------------------------------------


async def export_zip(db, settings, customer_id: int, actor_id: int | None, now=None) -> bytes:
    buf = io.BytesIO()
    async with db.unit_of_work() as s:
        await privacy.export_customer(
            s, customer_id, settings.attachments_dir, buf, actor_user_id=actor_id, now=now
        )
    return buf.getvalue()


def sorted_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys), keys
    return dict(pairs)


def stored(settings, data: bytes) -> Path:
    import hashlib

    return interactions.attachment_path(settings.attachments_dir, hashlib.sha256(data).hexdigest())


async def erase(db, settings, customer_id: int, actor_id: int, **kw) -> privacy.ErasureReport:
    async with db.unit_of_work() as s:
        return await privacy.erase_customer(
            s,
            customer_id,
            settings.attachments_dir,
            actor_user_id=actor_id,
            reason=kw.pop("reason", "data subject request, ticket 77"),
            confirm=kw.pop("confirm", str(customer_id)),
            **kw,
        )


async def count(db, model, *where) -> int:
    async with db.unit_of_work() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def statistics(db, since: datetime) -> dict[str, Any]:
    """What the desk's figures are made of, and the service level itself."""
    async with db.unit_of_work() as s:
        figures = await metrics.service_level(
            s, start=since, end=since + timedelta(days=2), team_id=None
        )
        q = {
            "cases": "SELECT status, channel, priority, count(*) FROM cases GROUP BY 1, 2, 3 "
            "ORDER BY 1, 2, 3",
            "interactions": "SELECT kind, direction, count(*) FROM interactions GROUP BY 1, 2 ORDER BY 1, 2",
            "calls": "SELECT state, direction, started_at, answered_at, ended_at, agent_id "
            "FROM calls ORDER BY id",
            "chats": "SELECT state, csat_score, queued_at, accepted_at, closed_at, last_seq "
            "FROM chat_conversations ORDER BY id",
            "messages": "SELECT conversation_id, seq, sender, created_at FROM chat_messages "
            "ORDER BY 1, 2",
            "clocks": "SELECT case_id, kind, state, started_at, met_at, breached_at "
            "FROM sla_clocks ORDER BY id",
        }
        rows = {k: [tuple(r) for r in (await s.execute(text(v))).all()] for k, v in q.items()}
    return {"service_level": figures.as_dict(), **rows}


async def everything_in_the_database(db) -> str:
    """Every row of every table as JSON text (hub_events aside: transient, purged hourly)."""
    out = []
    async with db.unit_of_work() as s:
        for table in Base.metadata.sorted_tables:
            if table.name == "hub_events":
                continue
            rows = await s.execute(text(f"SELECT row_to_json(t)::text FROM {table.name} t"))
            out += [f"{table.name}: {r[0]}" for r in rows]
    return "\n".join(out)


async def login(client, staff) -> str:
    client.cookies.clear()
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    r = await client.post(
        "/login", data={"email": staff.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303, r.text
    return csrf


# -- export ---------------------------------------------------------------------------------


async def test_export_holds_every_kind_of_record_and_the_files_byte_for_byte(
    db, settings, desk: Desk
) -> None:
    at = datetime(2026, 12, 17, 9, 0, tzinfo=UTC)
    raw = await export_zip(db, settings, desk.hanako, desk.supervisor.user.id, now=at)
    archive = zipfile.ZipFile(io.BytesIO(raw))
    names = archive.namelist()
    assert names[:2] == ["README.txt", "customer.json"]
    readme = archive.read("README.txt").decode()
    assert "顧客データのエクスポート" in readme and "Customer data export" in readme
    body = archive.read("customer.json").decode()
    data = json.loads(body, object_pairs_hook=sorted_object)  # sorted keys at every level

    assert data["export"] == {
        "format": privacy.EXPORT_FORMAT,
        "customer_id": desk.hanako,
        "customer_ids": [desk.hanako, desk.old_record],
        "exported_at": "2026-12-17T09:00:00+00:00",
    }
    assert data["customer"]["name"] == "山田 花子"
    assert data["customer"]["created_at"].endswith("+00:00")
    assert [c["name"] for c in data["merged_customers"]] == ["山田 花子 (旧)"]
    assert {(i["kind"], i["normalized"]) for i in data["identities"]} == {
        ("email", "hanako@example.jp"),
        ("phone", "+81312345678"),
        ("phone", "+81355550000"),
        ("phone", "+819012345678"),  # moved over by the merge
        ("chat", "v-hanako-1"),
    }

    by_subject = {c["subject"]: c for c in data["cases"]}
    email_case = by_subject["請求書について"]
    kinds = [(e["kind"], e["direction"]) for e in email_case["interactions"]]
    assert (
        ("email", "in") in kinds and ("email", "out") in kinds and ("system", "internal") in kinds
    )
    first = next(e for e in email_case["interactions"] if e["kind"] == "email")
    assert "請求書が届きません" in first["text"] and "請求書が届きません" in first["html"]
    assert first["meta"]["from"] == "hanako@example.jp"
    assert {c["kind"] for c in email_case["sla_clocks"]} >= {"first_response", "resolution"}
    [pdf] = first["attachments"]
    assert archive.read(pdf["file"]) == desk.files["mail"]
    assert pdf["file"].startswith("attachments/interactions/") and "/" not in pdf[
        "file"
    ].removeprefix("attachments/interactions/")

    note_case = by_subject["規約"]
    [note] = [e for e in note_case["interactions"] if e["kind"] == "note"]
    assert note["text"] == "内部メモ: 規約を送付" and note["author_name"] == desk.agent.user.name
    assert archive.read(note["attachments"][0]["file"]) == desk.files["shared"]

    chat_case = next(c for c in data["cases"] if c["channel"] == "chat")
    assert [e["kind"] for e in chat_case["interactions"]] == ["chat"]

    numbers = sorted(c["customer_number"] for c in data["calls"])
    assert numbers == ["+81312345678", "+81355550000", "+819012345678"]  # linked, unmatched, merged
    assert any(c["notes"] == "折り返し希望" and c["talk_seconds"] == 180 for c in data["calls"])
    call_entries = [e for e in data["interactions_without_case"] if e["kind"] == "call"]
    assert len(call_entries) == 2  # the unmatched call was never tied to anyone

    [conversation] = data["chats"]
    assert conversation["visitor_email"] == "hanako@example.jp"
    assert conversation["csat_score"] == 5 and conversation["csat_comment"] == "とても親切"
    bodies = [(m["sender"], m["body"]) for m in conversation["messages"]]
    assert ("visitor", "秘密の相談です") in bodies and ("agent", "確認します") in bodies
    [upload] = conversation["files"]
    assert upload["filename"] == "スクリーン ショット.png"
    assert upload["file"].startswith("attachments/chat/")
    assert archive.read(upload["file"]) == desk.files["chat"]

    assert {m["message_id"] for m in data["mail_messages"] if m["direction"] == "in"} >= {
        desk.first_message_id
    }
    assert {m["direction"] for m in data["mail_messages"]} == {"in", "out"}
    assert any(m["recipients"] == ["hanako@example.jp"] for m in data["outbound_mail"])
    assert "customer.merge" in {a["action"] for a in data["audit"]}

    # Every stored file is in the zip, once, and the same export writes the same JSON.
    assert sorted(n for n in names if n.startswith("attachments/")) == sorted(
        [pdf["file"], note["attachments"][0]["file"], upload["file"]]
    )
    again = await export_zip(db, settings, desk.hanako, desk.supervisor.user.id, now=at)
    again_body = zipfile.ZipFile(io.BytesIO(again)).read("customer.json").decode()
    # Byte for byte, but for the audit record of the first export, now on file.
    [logged] = [line for line in again_body.splitlines() if '"customer.export"' in line]
    assert again_body.replace(",\n" + logged, "") == body
    async with db.unit_of_work() as s:
        exports = (
            await s.scalars(select(AuditRecord).where(AuditRecord.action == "customer.export"))
        ).all()
    assert len(exports) == 2 and exports[0].actor_user_id == desk.supervisor.user.id
    assert exports[0].details["counts"]["cases"] == len(data["cases"])
    assert not any(m in json.dumps(exports[0].details, ensure_ascii=False) for m in MARKERS)


async def test_a_long_history_exports_in_batches_without_losing_an_entry(db, settings, desk):
    """More entries than one batch, on one case and without one: all of them, in order."""
    extra = privacy.BATCH + 7
    async with db.unit_of_work() as s:
        for n in range(extra):
            await interactions.add_interaction(
                s,
                customer_id=desk.hanako,
                case_id=desk.email_case if n % 2 else None,
                kind="note",
                direction="internal",
                text=f"entry {n}",
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n // 3),
            )
    data = json.loads(
        zipfile.ZipFile(io.BytesIO(await export_zip(db, settings, desk.hanako, None))).read(
            "customer.json"
        )
    )
    texts = [
        e["text"]
        for c in data["cases"]
        for e in c["interactions"]
        if e["text"].startswith("entry ")
    ] + [e["text"] for e in data["interactions_without_case"] if e["text"].startswith("entry ")]
    assert sorted(texts) == sorted(f"entry {n}" for n in range(extra))
    total = sum(len(c["interactions"]) for c in data["cases"]) + len(
        data["interactions_without_case"]
    )
    assert total == await count(db, Interaction, Interaction.customer_id == desk.hanako)


async def test_export_over_the_api_is_a_zip_for_supervisors_and_forbidden_to_agents(
    client, settings, desk
) -> None:
    r = await client.get(f"/api/customers/{desk.hanako}/export", headers=desk.agent.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await client.get(f"/api/customers/{desk.hanako}/export", headers=desk.supervisor.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert f"customer-{desk.hanako}-export.zip" in r.headers["content-disposition"]
    data = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("customer.json"))
    assert data["customer"]["id"] == desk.hanako
    r = await client.get("/api/customers/999999/export", headers=desk.supervisor.headers)
    assert r.status_code == 404


# -- erasure --------------------------------------------------------------------------------


async def test_erasure_removes_personal_data_everywhere_and_keeps_the_statistics(
    db, settings, desk: Desk
) -> None:
    since = datetime.now(UTC) - timedelta(days=1)
    before = await statistics(db, since)
    assert "hanako" in (await everything_in_the_database(db)).lower()  # the scan sees it
    paths = {kind: stored(settings, data) for kind, data in desk.files.items()}
    assert all(p.exists() for p in paths.values())

    report = await erase(db, settings, desk.hanako, desk.supervisor.user.id)

    assert report.customer_ids == [desk.hanako, desk.old_record]
    assert report.removed["identities"] == 5
    assert report.removed["attachments"] == 2 and report.removed["chat_files"] == 1
    assert report.files_to_delete == 2 and report.files_deleted == 2  # the shared one stays
    assert not paths["mail"].exists() and not paths["chat"].exists()
    assert paths["shared"].exists()
    async with db.unit_of_work() as s:
        other_files = await s.scalars(
            select(Attachment.sha256)
            .join(Interaction, Interaction.id == Attachment.interaction_id)
            .where(Interaction.customer_id == desk.other)
        )
        assert [stored_file.endswith(paths["shared"].name) for stored_file in other_files] == [True]

    # Nothing of Hanako is left in any table.
    dump = (await everything_in_the_database(db)).lower()
    for marker in MARKERS:
        assert marker.lower() not in dump, marker
    async with db.unit_of_work() as s:
        for customer_id in (desk.hanako, desk.old_record):
            c = await s.get(Customer, customer_id)
            assert c.name == privacy.erased_name(customer_id)
            assert (c.name_kana, c.organization, c.notes, c.language) == (None, None, None, None)
            assert c.erased_at is not None and c.search_text == ""
        assert await s.scalar(select(func.count()).select_from(ContactIdentity)) == 1  # other's
        assert all(o.raw == b"" and o.recipients == [] for o in await s.scalars(select(OutboxMail)))
        assert {o.state for o in await s.scalars(select(OutboxMail))} <= {"failed", "sent"}
        conv = await s.get(ChatConversation, desk.chat_id)
        assert (conv.visitor_email, conv.visitor_id, conv.csat_comment) == (None, None, None)
        assert conv.csat_score == 5
        assert await s.scalar(select(func.count()).select_from(ChatFile)) == 0
        bodies = {
            m.body
            for m in await s.scalars(select(ChatMessage).where(ChatMessage.sender != "system"))
        }
        assert bodies == {privacy.REDACTED}
        entry = await s.scalar(
            select(Interaction).where(Interaction.kind == "email", Interaction.direction == "in")
        )
        assert entry.text == privacy.REDACTED and entry.html is None and entry.subject is None
        assert entry.meta["redacted"] is True and "from" not in entry.meta
        reopen = await s.scalar(
            select(Interaction).where(Interaction.text.like("status solved →%"))
        )
        assert reopen is not None  # the service level counts reopens by these words
        # The audit record: who, when, why and counts.
        record = await s.scalar(select(AuditRecord).where(AuditRecord.action == "customer.erase"))
        assert record.actor_user_id == desk.supervisor.user.id
        assert record.entity_id == desk.hanako
        assert record.details["reason"] == "data subject request, ticket 77"
        assert record.details["removed"]["identities"] == 5
        merge = await s.scalar(select(AuditRecord).where(AuditRecord.action == "customer.merge"))
        assert merge.details["merged_customer_name"] == privacy.REDACTED

    # Statistics add up exactly as before: counts, wait and talk times, SLA, CSAT.
    after = await statistics(db, since)
    assert after == before
    assert report.kept["cases"] == 3 and report.kept["calls"] == 3 and report.kept["chats"] == 1


async def test_erasing_twice_is_a_conflict(db, settings, client, desk) -> None:
    await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    with pytest.raises(Conflict, match="already erased"):
        await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    r = await client.post(
        f"/api/customers/{desk.hanako}/erase",
        json={"confirm": str(desk.hanako), "reason": "again"},
        headers=desk.supervisor.headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert await count(db, AuditRecord, AuditRecord.action == "customer.erase") == 1


async def test_an_erasure_waiting_for_another_finds_it_done(db, settings, desk) -> None:
    """The second one reads the customer before the first commits, then waits for its lock."""
    async with db.unit_of_work() as s:
        await privacy.erase_customer(
            s,
            desk.hanako,
            settings.attachments_dir,
            actor_user_id=desk.supervisor.user.id,
            reason="first",
            confirm=str(desk.hanako),
        )
        second = asyncio.create_task(erase(db, settings, desk.hanako, desk.supervisor.user.id))
        for _ in range(100):  # until it waits for the row lock
            await asyncio.sleep(0.05)
            async with db.unit_of_work() as probe:
                waiting = await probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
            if waiting:
                break
        assert waiting, "the second erasure never waited for the first"
    with pytest.raises(Conflict, match="already erased"):
        await second
    assert await count(db, AuditRecord, AuditRecord.action == "customer.erase") == 1


async def test_a_merged_away_record_is_erased_through_its_survivor_only(db, settings, desk):
    with pytest.raises(Conflict, match=f"merged into {desk.hanako}"):
        await erase(db, settings, desk.old_record, desk.supervisor.user.id)


async def test_a_failure_midway_rolls_everything_back_and_keeps_the_files(
    db, settings, desk, monkeypatch
) -> None:
    paths = [stored(settings, data) for data in desk.files.values()]

    async def broken(job) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(privacy, "_redact_chats", broken)  # after files, texts and subjects
    with pytest.raises(RuntimeError, match="disk on fire"):
        await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    assert all(p.exists() for p in paths)
    assert await count(db, ContactIdentity, ContactIdentity.customer_id == desk.hanako) == 5
    assert await count(db, Attachment) == 3 and await count(db, ChatFile) == 1
    assert await count(db, AuditRecord, AuditRecord.action == "customer.erase") == 0
    async with db.unit_of_work() as s:
        assert (await s.get(Customer, desk.hanako)).erased_at is None
        case = await s.get(Case, desk.email_case)
        assert case.subject == "請求書について"

    # The same when the caller's own transaction fails after the erasure returned.
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="later"):
        async with db.unit_of_work() as s:
            report = await privacy.erase_customer(
                s,
                desk.hanako,
                settings.attachments_dir,
                actor_user_id=desk.supervisor.user.id,
                reason="test",
                confirm="山田 花子",
            )
            assert report.files_to_delete == 2
            raise RuntimeError("something later in the same transaction")
    assert report.files_deleted is None
    assert all(p.exists() for p in paths)
    assert await count(db, ContactIdentity, ContactIdentity.customer_id == desk.hanako) == 5

    # And a real erasure afterwards still works and deletes them.
    report = await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    assert report.files_deleted == 2


async def test_an_open_chat_must_end_before_erasure(db, settings, desk) -> None:
    async with db.unit_of_work() as s:
        conv, _ = await chat.start(
            s, chat.VisitorInput(name="山田 花子", email="hanako@example.jp"), region=REGION
        )
        await chat.post(s, conv.id, sender="visitor", body="もう一つ", client_id="x1")
    with pytest.raises(Conflict, match="chat still open"):
        await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    async with db.unit_of_work() as s:
        preview = await privacy.erasure_preview(s, desk.hanako)
    assert preview.open_chats == 1


async def test_after_erasure_the_old_phone_and_email_find_nobody_and_new_mail_is_a_new_customer(
    db, settings, client, desk
) -> None:
    staff = desk.agent.headers
    searches = ("hanako@example.jp", "03-1234-5678", "山田", "花子", "請求書", "秘密の相談")
    r = await client.get("/api/lookup", params={"phone": "03-1234-5678"}, headers=staff)
    assert r.status_code == 200  # before: found every way
    for q in searches:
        r = await client.get("/api/search", params={"q": q}, headers=staff)
        assert [h for h in r.json()["results"] if h["kind"] != "article"], q

    await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    for phone in ("03-1234-5678", "090-1234-5678"):
        r = await client.get("/api/lookup", params={"phone": phone}, headers=staff)
        assert r.status_code == 404
    for q in searches:
        r = await client.get("/api/customers", params={"q": q}, headers=staff)
        assert r.json()["items"] == [], q
        r = await client.get("/api/search", params={"q": q}, headers=staff)
        assert r.status_code == 200
        assert [h for h in r.json()["results"] if h["kind"] != "article"] == [], q

    # A reply to the old thread, from the old address: a new case for a new customer.
    async with db.unit_of_work() as s:
        result = await ingest_message(
            s,
            _mail(
                f"after-{uuid.uuid4().hex}@example.jp",
                subject="Re: 請求書について",
                body="もう一度",
                In_Reply_To=f"<{desk.first_message_id}>",
            ),
            settings=settings,
            source="test",
        )
    assert result.status == "created"
    assert result.customer_id not in (desk.hanako, desk.old_record)
    assert result.case_id != desk.email_case


# -- the API and the pages: roles, confirmation ---------------------------------------------


async def test_erase_over_the_api_needs_a_supervisor_a_matching_confirmation_and_a_reason(
    client, db, desk
) -> None:
    url = f"/api/customers/{desk.hanako}/erase"
    body = {"confirm": str(desk.hanako), "reason": "request"}
    r = await client.post(url, json=body, headers=desk.agent.headers)
    assert r.status_code == 403
    for wrong, field_name in (
        ({"reason": "request"}, "confirm"),
        ({"confirm": "山田", "reason": "request"}, "confirm"),
        ({"confirm": str(desk.old_record), "reason": "request"}, "confirm"),
        ({"confirm": str(desk.hanako)}, "reason"),
    ):
        r = await client.post(url, json=wrong, headers=desk.supervisor.headers)
        assert r.status_code == 422, wrong
        assert r.json()["error"]["field"] == field_name, wrong
    assert await count(db, ContactIdentity, ContactIdentity.customer_id == desk.hanako) == 5

    r = await client.post(
        url, json={"confirm": " 山田　花子 ", "reason": "request"}, headers=desk.supervisor.headers
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["customer_ids"] == [desk.hanako, desk.old_record]
    assert report["files_deleted"] == 2 and report["kept"]["cases"] == 3


async def test_consent_and_contact_preferences_are_validated_audited_and_shown(
    client, db, settings, desk
) -> None:
    url = f"/api/customers/{desk.hanako}"
    staff = desk.agent.headers  # agents record what the customer tells them
    r = await client.put(
        f"{url}/consent",
        json={"consent": {"marketing": False, "recording": True}, "source": "phone"},
        headers=staff,
    )
    assert r.status_code == 200, r.text
    consent = r.json()["consent"]
    assert consent["marketing"]["granted"] is False and consent["recording"]["granted"] is True
    assert consent["recording"]["source"] == "phone"
    assert consent["recording"]["at"].endswith("+00:00")
    r = await client.put(
        f"{url}/consent", json={"consent": {"marketing": True}, "source": "web"}, headers=staff
    )
    consent = r.json()["consent"]
    assert consent["marketing"]["granted"] is True and consent["recording"]["granted"] is True

    for bad, field_name in (
        ({"consent": {"spam": True}, "source": "phone"}, "consent"),
        ({"consent": {"marketing": "yes"}, "source": "phone"}, "consent"),
        ({"consent": {}, "source": "phone"}, "consent"),
        ({"consent": {"marketing": True}, "source": "pigeon"}, "source"),
        ({"consent": {"marketing": True}}, "source"),
        ({"consent": ["marketing"], "source": "phone"}, "consent"),
    ):
        r = await client.put(f"{url}/consent", json=bad, headers=staff)
        assert r.status_code == 422 and r.json()["error"]["field"] == field_name, bad

    r = await client.put(
        f"{url}/contact-preferences",
        json={"channels": ["sms", "email"], "language": "ja", "do_not_contact": False},
        headers=staff,
    )
    assert r.status_code == 200
    assert r.json()["contact_preferences"] == {
        "channels": ["email", "sms"],
        "language": "ja",
        "do_not_contact": False,
    }
    for bad, field_name in (
        ({"channels": ["fax"]}, "channels"),
        ({"language": "fr"}, "language"),
        ({"do_not_contact": "no"}, "do_not_contact"),
        ({"pigeon": True}, "pigeon"),
    ):
        r = await client.put(f"{url}/contact-preferences", json=bad, headers=staff)
        assert r.status_code == 422 and r.json()["error"]["field"] == field_name, bad
    r = await client.put(f"{url}/contact-preferences", json={"do_not_contact": True}, headers=staff)
    assert r.json()["contact_preferences"]["channels"] == list(privacy.CONTACT_CHANNELS)
    r = await client.get(f"{url}/privacy", headers=staff)
    assert r.json()["contact_preferences"]["do_not_contact"] is True
    async with db.unit_of_work() as s:
        customer = await s.get(Customer, desk.hanako)
        assert privacy.may_contact(customer, "email") is False
        actions = [
            a.action
            for a in await s.scalars(
                select(AuditRecord)
                .where(AuditRecord.entity_id == desk.hanako)
                .order_by(AuditRecord.id)
            )
        ]
    assert actions.count("customer.consent") == 2
    assert actions.count("customer.contact_preferences") == 2

    async with db.unit_of_work() as s:
        await privacy.erase_customer(
            s,
            desk.hanako,
            settings.attachments_dir,
            actor_user_id=None,
            reason="request",
            confirm=str(desk.hanako),
        )
    r = await client.put(
        f"{url}/consent", json={"consent": {"marketing": True}, "source": "web"}, headers=staff
    )
    assert r.status_code == 409
    r = await client.get(f"{url}/privacy", headers=staff)
    assert r.json()["consent"] == {} and r.json()["erased_at"]


def test_the_confirmation_is_the_id_or_the_name_and_nothing_else() -> None:
    customer = Customer(id=42, name="山田 花子")
    for typed in ("42", "#42", " 42 ", "山田 花子", "山田　花子", " 山田  花子"):
        assert privacy.confirmation_matches(customer, typed), typed
    for typed in ("", "4", "420", "山田", "花子 山田", "*"):
        assert not privacy.confirmation_matches(customer, typed), typed


def test_erasure_keeps_only_impersonal_metadata() -> None:
    meta = {
        "from": "hanako@example.jp",
        "from_name": "山田 花子",
        "to": ["support@localhost"],
        "headers": {"X-Mailer": "x"},
        "message_id": "m1@example.jp",
        "source": "smtp",
        "talk_seconds": 180,
        "changes": {"status": "open", "subject": "請求書"},
        "bounce": {"recipients": ["hanako@example.jp"], "status": "5.1.1"},
        "messages": [{"body": "秘密"}, {"body": "x"}],
        "visitor": "山田 花子",
        "csat": 5,
        "csat_comment": "とても親切",
    }
    assert privacy.redacted_meta(meta) == {
        "source": "smtp",
        "talk_seconds": 180,
        "changes": {"status": "open"},
        "bounce": {"status": "5.1.1"},
        "message_count": 2,
        "csat": 5,
        "redacted": True,
    }
    assert privacy.redacted_text("system", "acknowledgement sent to hanako@example.jp") == (
        f"acknowledgement sent to {privacy.REDACTED}"
    )
    assert privacy.redacted_text("system", "status solved → open (customer replied by email)") == (
        "status solved → open (customer replied by email)"
    )
    assert privacy.redacted_text("note", "電話番号 03-1234-5678") == privacy.REDACTED
    assert privacy.redacted_text("call", "") == ""


async def test_the_customer_page_offers_export_and_erasure_to_supervisors_only(
    client, db, settings, desk
) -> None:
    page_url = f"/customers/{desk.hanako}"
    csrf = await login(client, desk.agent)
    page = await client.get(page_url)
    assert page.status_code == 200
    assert "/consent" in page.text and f"{page_url}/erase" not in page.text
    assert f"{page_url}/export" not in page.text
    assert (await client.get(f"{page_url}/erase")).status_code == 403
    r = await client.post(f"{page_url}/export", data={"csrf_token": csrf})
    assert r.status_code == 403
    # Agents record consent from the page's form (CSRF-checked).
    r = await client.post(f"{page_url}/consent", data={"consent_marketing": "refused"})
    assert r.status_code == 403
    r = await client.post(
        f"{page_url}/consent",
        data={"csrf_token": csrf, "consent_marketing": "refused", "source": "phone"},
    )
    assert r.status_code == 303
    r = await client.post(
        f"{page_url}/contact-preferences",
        data={"csrf_token": csrf, "channels": ["email", "phone"], "language": "en"},
    )
    assert r.status_code == 303
    async with db.unit_of_work() as s:
        c = await s.get(Customer, desk.hanako)
        assert c.consent["marketing"]["granted"] is False
        assert c.contact_preferences == {
            "channels": ["email", "phone"],
            "language": "en",
            "do_not_contact": False,
        }

    csrf = await login(client, desk.supervisor)
    page = await client.get(page_url)
    assert f'action="{page_url}/export"' in page.text and f'action="{page_url}/erase"' in page.text
    assert "<script" not in page.text.split("</head>", 1)[1]  # nothing inline (strict CSP)
    r = await client.post(f"{page_url}/export", data={"csrf_token": csrf})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist()[1] == "customer.json"

    confirm_page = await client.get(f"{page_url}/erase")
    assert confirm_page.status_code == 200
    assert 'name="confirm"' in confirm_page.text and 'name="reason"' in confirm_page.text
    assert f"#{desk.old_record}" in confirm_page.text  # the merged record goes too
    assert "style=" not in confirm_page.text and "onclick" not in confirm_page.text
    r = await client.post(
        f"{page_url}/erase", data={"csrf_token": csrf, "confirm": "someone else", "reason": "x"}
    )
    assert r.status_code == 422 and 'role="alert"' in r.text
    assert await count(db, ContactIdentity, ContactIdentity.customer_id == desk.hanako) == 5
    r = await client.post(
        f"{page_url}/erase",
        data={"csrf_token": csrf, "confirm": str(desk.hanako), "reason": "request by letter"},
    )
    assert r.status_code == 303 and r.headers["location"] == page_url
    page = await client.get(page_url)
    assert privacy.erased_name(desk.hanako) in page.text
    assert "山田" not in page.text and f'action="{page_url}/erase"' not in page.text
    assert not stored(settings, desk.files["mail"]).exists()


def test_every_purpose_source_and_channel_is_offered_on_the_page() -> None:
    panel = (Path(__file__).parent.parent / "templates/privacy/_panel.html").read_text()
    for value in (*privacy.CONSENT_PURPOSES, *privacy.CONSENT_SOURCES, *privacy.CONTACT_CHANNELS):
        assert re.search(rf'"{value}"', panel), value


async def test_the_counts_on_the_confirmation_step_match_what_erasure_does(db, settings, desk):
    async with db.unit_of_work() as s:
        preview = await privacy.erasure_preview(s, desk.hanako)
    report = await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    assert preview.kept == report.kept
    for key in ("identities", "attachments", "chat_files", "chat_messages", "mail_messages"):
        assert preview.removed[key] == report.removed[key], key
    hers = select(Case.id).where(Case.customer_id.in_(report.customer_ids))
    assert await count(db, SlaClock, SlaClock.case_id.in_(hers)) == preview.kept["sla_clocks"] > 0
    assert await count(db, Call) == 3
    assert await count(db, MailMessage) == preview.removed["mail_messages"] > 0
    with pytest.raises(InvalidInput):
        await erase(db, settings, desk.other, desk.supervisor.user.id, confirm="Someone")


async def test_nothing_personal_can_be_added_to_an_erased_customer(db, settings, client, desk):
    await erase(db, settings, desk.hanako, desk.supervisor.user.id)
    async with db.unit_of_work() as s:
        with pytest.raises(Conflict, match="erased"):
            await cases.create_case(
                s,
                cases.CaseInput(customer_id=desk.hanako, subject="again", channel="phone"),
                author_user_id=None,
            )
    async with db.unit_of_work() as s:
        with pytest.raises(Conflict, match="erased"):
            await customers.add_identity(
                s, desk.hanako, customers.IdentityInput("email", "back@example.jp")
            )
    async with db.unit_of_work() as s:
        with pytest.raises(Conflict, match="erased"):
            await customers.update_customer(s, desk.hanako, {"name": "山田 花子"})
    async with db.unit_of_work() as s:
        with pytest.raises(Conflict, match="erased"):
            await customers.merge_customers(s, desk.other, desk.hanako, actor_user_id=None)
    shown = await client.get(f"/api/customers/{desk.hanako}", headers=desk.supervisor.headers)
    assert shown.status_code == 200
    assert shown.json()["erased_at"] is not None and shown.json()["consent"] == {}
