"""Calls over the HTTP CTI adapters: the call log, idempotency, out-of-order events, the
timeline entry, call-back cases, and the screen-pop card (its delivery over real sockets is
in test_hub-style tests below)."""

from __future__ import annotations

from sqlalchemy import func, select

from helpdesk import calls, events
from helpdesk.models import Case, Interaction

CTI = {"Authorization": "Bearer test-cti-token"}


async def _post(client, body, **kw):
    return await client.post("/api/cti/events", json=body, headers=CTI, **kw)


async def _customer(client, staff, name="山田 太郎", phones=("03-1234-5678",)):
    r = await client.post(
        "/api/customers", json={"name": name, "phones": list(phones)}, headers=staff.headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def _ev(event, call_id="c1", agent="201", at="2026-11-22T09:00:00Z", **kw):
    return {
        "event": event,
        "call_id": call_id,
        "from": "0312345678",
        "to": "0501111",
        "agent": agent,
        "at": at,
        **kw,
    }


async def test_a_direct_call_answered_and_hung_up_lands_on_the_timeline(client, agent):
    yamada = await _customer(client, agent)
    r = await _post(client, _ev("ring"))
    assert r.status_code == 200, r.text
    assert r.json()["call"]["state"] == "ringing"
    assert r.json()["call"]["customer_id"] == yamada["id"]
    await _post(client, _ev("answer", at="2026-11-22T09:00:07Z"))
    r = await _post(
        client, _ev("hangup", agent=None, at="2026-11-22T09:03:07Z", cause="normalClearing")
    )
    call = r.json()["call"]
    assert (call["state"], call["wait_seconds"], call["talk_seconds"]) == ("completed", 7, 180)
    assert call["agent_id"] == agent.user.id
    r = await client.get(f"/api/customers/{yamada['id']}/timeline", headers=agent.headers)
    entry = r.json()["items"][0]
    assert entry["kind"] == "call" and entry["meta"]["talk_seconds"] == 180
    r = await client.get("/api/calls", params={"agent": "me"}, headers=agent.headers)
    assert [c["call_id"] for c in r.json()["items"]] == ["c1"]


async def test_duplicate_events_are_no_ops_and_out_of_order_events_are_reconciled(
    client, agent, db
):
    await _customer(client, agent)
    assert (await _post(client, _ev("ring"))).json()["duplicate"] is False
    assert (await _post(client, _ev("ring"))).json()["duplicate"] is True
    # The hangup overtakes the answer: the call first looks missed, with a call-back case...
    r = await _post(client, _ev("hangup", agent=None, at="2026-11-22T09:02:00Z"))
    assert r.json()["call"]["state"] == "missed"
    callback = r.json()["call"]["callback_case_id"]
    assert callback
    # ...then the answer arrives: completed after all, and the call-back is withdrawn.
    r = await _post(client, _ev("answer", at="2026-11-22T09:00:05Z"))
    call = r.json()["call"]
    assert (call["state"], call["talk_seconds"], call["callback_case_id"]) == (
        "completed",
        115,
        None,
    )
    r = await client.get(f"/api/cases/{callback}", headers=agent.headers)
    assert r.json()["status"] == "solved"
    assert (await _post(client, _ev("answer", at="2026-11-22T09:00:09Z"))).json()[
        "duplicate"
    ] is True
    async with db.unit_of_work() as session:
        n = await session.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.kind == "call")
        )
    assert n == 1


async def test_missed_and_abandoned_calls_put_a_call_back_case_in_the_queue(client, agent, db):
    await _post(client, _ev("ring", call_id="m1", **{"from": "090-1111-2222"}))
    r = await _post(
        client,
        _ev("hangup", call_id="m1", agent=None, cause="noAnswer", **{"from": "090-1111-2222"}),
    )
    assert r.json()["call"]["state"] == "missed"
    await _post(
        client, _ev("ring", call_id="a1", queue="support", agent=None, **{"from": "090-3333-4444"})
    )
    r = await _post(
        client, _ev("hangup", call_id="a1", agent=None, cause="cancel", **{"from": "090-3333-4444"})
    )
    assert r.json()["call"]["state"] == "abandoned"
    async with db.unit_of_work() as session:
        rows = (await session.scalars(select(Case).order_by(Case.id))).all()
        assert [(c.status, c.assignee_id, c.tags) for c in rows] == [
            ("new", None, ["callback", "missed"]),
            ("new", None, ["callback", "abandoned"]),
        ]
        assert rows[1].priority == "high"
    # A withheld number cannot be called back: logged, no case.
    await _post(client, _ev("ring", call_id="w1", **{"from": "anonymous"}))
    r = await _post(client, _ev("hangup", call_id="w1", agent=None, **{"from": "anonymous"}))
    assert r.json()["call"]["state"] == "missed" and r.json()["call"]["callback_case_id"] is None


async def test_screen_pop_card_for_one_several_unknown_and_withheld_callers(client, agent, db):
    yamada = await _customer(client, agent)
    await _customer(client, agent, name="大阪 花子", phones=("06-6123-4567",))
    await _customer(client, agent, name="大阪 一郎", phones=("06-6123-4567",))
    for n in range(7):
        await client.post(
            "/api/cases",
            json={
                "customer_id": yamada["id"],
                "subject": f"件 {n}",
                "body": f"本文 {n}",
                "channel": "email",
            },
            headers=agent.headers,
        )

    async def card(number, call_id):
        async with db.unit_of_work() as session:
            applied = await calls.apply_event(
                session,
                calls.CallEvent.from_json(_ev("ring", call_id=call_id, **{"from": number})),
                region="JP",
            )
            return await calls.screen_pop_card(session, applied.call, "JP")

    one = await card("+81 3-1234-5678", "p1")
    assert one["match"] == "one" and one["number"] == "03-1234-5678"
    c = one["customers"][0]
    assert c["name"] == "山田 太郎" and len(c["recent"]) == 5 and len(c["open_cases"]) == 7
    several = await card("0661234567", "p2")
    assert several["match"] == "several" and {x["name"] for x in several["customers"]} == {
        "大阪 花子",
        "大阪 一郎",
    }
    unknown = await card("090-9999-0000", "p3")
    assert (
        unknown["match"] == "unknown"
        and unknown["create_url"] == "/customers/new?phone=%2B819099990000"
    )
    withheld = await card("anonymous", "p4")
    assert withheld["match"] == "withheld" and withheld["withheld"] is True


async def test_the_screen_pop_goes_only_to_the_ringing_agents(client, agent, make_staff, db, app):
    other = await make_staff("agent", extension="202")
    boss = await make_staff("supervisor")
    hub = app.state.hub
    mine = hub.register(agent.user.id, "agent", "jti-a")
    theirs = hub.register(other.user.id, "agent", "jti-b")
    board = hub.register(boss.user.id, "supervisor", "jti-c")
    try:
        await _customer(client, agent)
        await _post(client, _ev("ring", call_id="s1", agent="201"))
        # A committed marker for all proves everything before it has been dispatched.
        async with db.unit_of_work() as session:
            await events.publish(
                session,
                events.Event("marker", {}, users=(agent.user.id, other.user.id, boss.user.id)),
            )
        import asyncio
        import json

        async def frames(conn):
            out = []
            while True:
                f = json.loads(await asyncio.wait_for(conn.queue.get(), 10))
                out.append(f["type"])
                if f["type"] == "marker":
                    return out

        assert await frames(mine) == ["screen_pop", "marker"]  # the pop, not a second frame
        assert "screen_pop" not in await frames(theirs)
        # a supervisor's board hears of the ring (to count it live), without a pop
        assert await frames(board) == ["call_update", "marker"]
    finally:
        hub.unregister(mine)
        hub.unregister(theirs)
        hub.unregister(board)


async def test_zammad_generic_cti_form_and_path_token(client, agent):
    await _customer(client, agent)
    form = {
        "event": "newCall",
        "from": "0312345678",
        "to": "0501111",
        "direction": "in",
        "callId": "z1",
        "user[]": [agent.user.name],
    }
    r = await client.post("/api/cti/generic?token=test-cti-token", data=form)
    assert r.status_code == 200, r.text
    assert r.json()["call"]["ringing_user_ids"] == [agent.user.id]
    r = await client.post(
        "/api/v1/cti/test-cti-token",
        data={"event": "answer", "callId": "z1", "answeringNumber": "201", "from": "0312345678"},
    )
    assert r.json()["call"]["state"] == "answered"
    r = await client.post(
        "/api/v1/cti/test-cti-token",
        data={"event": "hangup", "callId": "z1", "cause": "normalClearing"},
    )
    assert r.json()["call"]["state"] == "completed"


async def test_cti_auth_and_validation_errors_are_precise(client, db):
    r = await client.post("/api/cti/events", json=_ev("ring"))
    assert r.status_code == 401 and "CTI token required" in r.json()["error"]["message"]
    r = await client.post(
        "/api/cti/events", json=_ev("ring"), headers={"Authorization": "Bearer nope"}
    )
    assert r.status_code == 401 and r.json()["error"]["message"] == "wrong CTI token"
    r = await client.post("/api/v1/cti/nope", data={"event": "newCall", "callId": "x"})
    assert r.status_code == 401
    for body, field in [
        (_ev("explode"), "event"),
        ({**_ev("ring"), "call_id": ""}, "call_id"),
        ({**_ev("ring"), "direction": "sideways"}, "direction"),
        ({**_ev("ring"), "at": "yesterday"}, "at"),
        ({**_ev("ring"), "agent": 201}, "agent"),
        ({**_ev("ring"), "colour": "red"}, "colour"),
    ]:
        r = await _post(client, body)
        assert r.status_code == 422, body
        assert r.json()["error"]["field"] == field
    r = await client.post(
        "/api/cti/generic?token=test-cti-token", data={"event": "ringing", "callId": "x"}
    )
    assert r.status_code == 422 and "newCall" in r.json()["error"]["message"]


async def test_an_answer_by_another_agent_during_the_call_is_a_transfer(
    client, agent, make_staff, db
):
    from helpdesk import presence

    other = await make_staff("agent", extension="203")
    await _customer(client, agent)
    await _post(client, _ev("ring", call_id="t1"))
    await _post(client, _ev("answer", call_id="t1", at="2026-11-22T09:00:05Z"))
    r = await _post(client, _ev("answer", call_id="t1", agent="203", at="2026-11-22T09:01:00Z"))
    assert r.json()["call"]["agent_id"] == other.user.id
    async with db.unit_of_work() as session:
        assert (await presence.get_presence(session, agent.user.id)).on_call is False
        assert (await presence.get_presence(session, other.user.id)).on_call is True
    r = await _post(client, _ev("hangup", call_id="t1", agent=None, at="2026-11-22T09:05:05Z"))
    assert (r.json()["call"]["state"], r.json()["call"]["talk_seconds"]) == ("completed", 300)
    async with db.unit_of_work() as session:
        assert (await presence.get_presence(session, other.user.id)).on_call is False
