"""Customers and identities over the API: create, find in any format, one card, merge."""

from __future__ import annotations

from sqlalchemy import select

from helpdesk.models import AuditRecord


async def _customer(client, staff, **body):
    r = await client.post("/api/customers", json=body, headers=staff.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_customer_normalizes_identities(client, agent):
    c = await _customer(
        client, agent, name="山田 太郎", name_kana="ヤマダ タロウ", organization="株式会社サンプル",
        phones=["03-1234-5678", "+81 3 1234 5678"], emails=["Taro@Example.JP"], tier="gold",
    )  # fmt: skip
    phones = [i for i in c["identities"] if i["kind"] == "phone"]
    assert [p["normalized"] for p in phones] == ["+81312345678"]  # the same number once
    assert phones[0]["primary"] is True
    assert [i["normalized"] for i in c["identities"] if i["kind"] == "email"] == ["taro@example.jp"]


async def test_create_customer_rejects_bad_input_precisely_and_writes_nothing(client, agent):
    cases = [
        ({"phones": ["03-1234-5678"]}, "name"),
        ({"name": "x", "phones": ["not a phone"]}, "phone"),
        ({"name": "x", "emails": ["nope"]}, "email"),
        ({"name": "x", "tier": "diamond"}, "tier"),
        ({"name": "x", "phones": "03-1234-5678"}, "phones"),
        ({"name": "x" * 201}, "name"),
    ]
    for body, field in cases:
        r = await client.post("/api/customers", json=body, headers=agent.headers)
        assert r.status_code == 422, body
        assert r.json()["error"]["field"] == field
    r = await client.get("/api/customers", headers=agent.headers)
    assert r.json()["items"] == []


async def test_lookup_finds_every_customer_sharing_a_number_in_any_format(client, agent):
    a = await _customer(client, agent, name="大阪 花子", phones=["06-6123-4567"])
    b = await _customer(client, agent, name="大阪 一郎", phones=["+81 6 6123 4567"])
    await _customer(client, agent, name="Other", phones=["03-9999-0000"])
    for raw in ("06-6123-4567", "0081661234567", "(06)6123-4567", "+81661234567"):
        r = await client.get("/api/lookup", params={"phone": raw}, headers=agent.headers)
        assert r.status_code == 200
        assert [c["id"] for c in r.json()["customers"]] == [a["id"], b["id"]]
        assert r.json()["phone"] == "+81661234567"


async def test_lookup_answers_404_for_unknown_and_422_for_withheld_numbers(client, agent):
    r = await client.get("/api/lookup", params={"phone": "03-0000-0000"}, headers=agent.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.get("/api/lookup", params={"phone": "anonymous"}, headers=agent.headers)
    assert r.status_code == 422
    r = await client.get("/api/lookup", headers=agent.headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "phone"


async def test_search_by_partial_japanese_name_kana_phone_and_email(client, agent):
    yamada = await _customer(
        client,
        agent,
        name="山田 太郎",
        name_kana="ヤマダ タロウ",
        phones=["03-1234-5678"],
        emails=["taro@example.jp"],
    )
    await _customer(
        client, agent, name="Emily Carter", phones=["+1 415 555 2671"], emails=["emily@example.com"]
    )

    async def ids(q):
        r = await client.get("/api/customers", params={"q": q}, headers=agent.headers)
        assert r.status_code == 200
        return [c["id"] for c in r.json()["items"]]

    for q in (
        "山田",
        "田太",
        "やまだ",
        "ヤマダ",
        "ﾔﾏﾀﾞ",
        "03-1234-5678",
        "0312345678",
        "+81 3-1234-5678",
        "TARO@example.jp",
    ):
        assert await ids(q) == [yamada["id"]], q
    assert len(await ids("carter")) == 1
    assert await ids("nobody-like-this") == []


async def test_customer_list_is_cursor_paged_without_gaps_or_repeats(client, agent):
    created = [(await _customer(client, agent, name=f"Customer {n}"))["id"] for n in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/customers", params=params, headers=agent.headers)
        body = r.json()
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(created, reverse=True)
    r = await client.get("/api/customers", params={"cursor": "garbage!"}, headers=agent.headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "cursor"
    r = await client.get("/api/customers", params={"limit": 0}, headers=agent.headers)
    assert r.status_code == 422


async def test_customer_card_and_404(client, agent):
    c = await _customer(client, agent, name="Card", phones=["03-1111-2222"])
    await client.post(
        "/api/cases",
        json={"customer_id": c["id"], "subject": "Help", "channel": "phone"},
        headers=agent.headers,
    )
    r = await client.get(f"/api/customers/{c['id']}", headers=agent.headers)
    assert r.status_code == 200
    assert [x["subject"] for x in r.json()["open_cases"]] == ["Help"]
    assert (await client.get("/api/customers/999999", headers=agent.headers)).status_code == 404


async def test_update_customer_and_add_identity(client, agent):
    c = await _customer(client, agent, name="Old")
    r = await client.patch(
        f"/api/customers/{c['id']}", json={"name": "New", "tier": "silver"}, headers=agent.headers
    )
    assert r.status_code == 200 and r.json()["name"] == "New"
    r = await client.patch(
        f"/api/customers/{c['id']}", json={"password": "x"}, headers=agent.headers
    )
    assert r.status_code == 422
    r = await client.post(
        f"/api/customers/{c['id']}/identities",
        json={"kind": "phone", "value": "090-1234-5678"},
        headers=agent.headers,
    )
    assert r.status_code == 201 and r.json()["normalized"] == "+819012345678"
    r = await client.post(
        f"/api/customers/{c['id']}/identities",
        json={"kind": "phone", "value": "+81 90 1234 5678"},
        headers=agent.headers,
    )
    assert r.status_code == 409


async def test_merge_moves_identities_cases_and_history_in_one_audited_transaction(
    client, agent, supervisor, db
):
    keep = await _customer(client, agent, name="山田 太郎", phones=["03-1234-5678"])
    dup = await _customer(
        client,
        agent,
        name="ヤマダ タロウ",
        phones=["03-1234-5678", "090-1111-2222"],
        emails=["taro@example.jp"],
    )
    case = (
        await client.post(
            "/api/cases",
            json={
                "customer_id": dup["id"],
                "subject": "From the duplicate",
                "channel": "email",
                "body": "hello",
            },
            headers=agent.headers,
        )
    ).json()

    r = await client.post(
        f"/api/customers/{keep['id']}/merge",
        json={"other_id": dup["id"]},
        headers=supervisor.headers,
    )
    assert r.status_code == 200, r.text
    merged = r.json()
    assert sorted(i["normalized"] for i in merged["identities"]) == [
        "+81312345678",
        "+819011112222",
        "taro@example.jp",
    ]

    case_now = (await client.get(f"/api/cases/{case['id']}", headers=agent.headers)).json()
    assert case_now["customer_id"] == keep["id"]
    timeline = (
        await client.get(f"/api/customers/{keep['id']}/timeline", headers=agent.headers)
    ).json()
    assert any(e["text"] == "hello" for e in timeline["items"])
    lookup = (
        await client.get("/api/lookup", params={"phone": "090-1111-2222"}, headers=agent.headers)
    ).json()
    assert [c["id"] for c in lookup["customers"]] == [keep["id"]]
    loser = (await client.get(f"/api/customers/{dup['id']}", headers=agent.headers)).json()
    assert loser["merged_into_id"] == keep["id"]
    search = (
        await client.get("/api/customers", params={"q": "ヤマダ"}, headers=agent.headers)
    ).json()
    assert dup["id"] not in [c["id"] for c in search["items"]]

    async with db.unit_of_work() as session:
        audit = (await session.scalars(select(AuditRecord))).all()
    assert len(audit) == 1
    assert audit[0].action == "customer.merge" and audit[0].actor_user_id == supervisor.user.id
    assert audit[0].details["merged_customer_id"] == dup["id"]
    assert audit[0].details["moved_case_ids"] == [case["id"]]

    again = await client.post(
        f"/api/customers/{keep['id']}/merge",
        json={"other_id": dup["id"]},
        headers=supervisor.headers,
    )
    assert again.status_code == 409


async def test_merge_refuses_self_and_missing_customers_and_changes_nothing(
    client, agent, supervisor
):
    c = await _customer(client, agent, name="A")
    r = await client.post(
        f"/api/customers/{c['id']}/merge", json={"other_id": c["id"]}, headers=supervisor.headers
    )
    assert r.status_code == 422
    r = await client.post(
        f"/api/customers/{c['id']}/merge", json={"other_id": 424242}, headers=supervisor.headers
    )
    assert r.status_code == 404
    r = await client.post(f"/api/customers/{c['id']}/merge", json={}, headers=supervisor.headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "other_id"
