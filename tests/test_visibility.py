"""Row-level access (helpdesk/visibility.py): an agent or supervisor of team A neither reads
nor finds team B's cases, whichever route, list, timeline, card or search they try; admins,
users of no team, and an assignee named across teams still do."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from sqlalchemy import select

from helpdesk import admin, auth, cases, customers, events, interactions, permissions, visibility
from helpdesk.models import Case, Interaction, Team
from tests.test_permissions import _routes

SECRET_SUBJECT = "Team B confidential refund"


@pytest.fixture
async def teams(db, make_staff, settings):  # type: ignore[no-untyped-def]
    """Teams A and B, a customer with one case in each team and one of no team, a note
    with an attachment on B's case; and users of each kind."""
    a_agent = await make_staff("agent", team_name="Team A", extension="301")
    a_supervisor = await make_staff("supervisor", team_name="Team A")
    b_agent = await make_staff("agent", team_name="Team B", extension="302")
    admin = await make_staff("admin")
    free_agent = await make_staff("agent")  # no team: not limited
    async with db.unit_of_work() as session:
        team_a = await session.scalar(select(Team.id).where(Team.name == "Team A"))
        team_b = await session.scalar(select(Team.id).where(Team.name == "Team B"))
        customer = await customers.create_customer(
            session,
            customers.CustomerInput(
                name="Kana Ito",
                identities=[customers.IdentityInput("phone", "03-1234-5678")],
            ),
        )
        made = {}
        for key, team, subject in (
            ("a", team_a, "Team A printer"),
            ("b", team_b, SECRET_SUBJECT),
            ("shared", None, "Unrouted question"),
        ):
            made[key] = await cases.create_case(
                session,
                cases.CaseInput(
                    customer_id=customer.id,
                    subject=subject,
                    channel="email",
                    body=f"{subject} body text",
                    team_id=team,
                ),
                author_user_id=None,
            )
        _, note = await cases.add_note(
            session, made["b"].id, "refund approved quietly", author_user_id=b_agent.user.id
        )
        attachment = await interactions.store_attachment(
            session,
            attachments_dir=settings.attachments_dir,
            interaction_id=note.id,  # type: ignore[attr-defined]
            filename="refund.txt",
            content_type="text/plain",
            data=b"refund",
            max_bytes=settings.max_attachment_bytes,
        )
    return {
        "a_agent": a_agent,
        "a_supervisor": a_supervisor,
        "b_agent": b_agent,
        "admin": admin,
        "free_agent": free_agent,
        "customer_id": customer.id,
        "cases": {k: (c.id, c.number) for k, c in made.items()},
        "attachment_id": attachment.id,
        "team_a": team_a,
        "team_b": team_b,
    }


# What each write sends: a valid change, so that only the case's team can refuse it.
WRITES = {"PATCH": {"priority": "high"}, "POST": {"body": "a reply or note", "priority": "high"}}


async def _try(client, method: str, url: str, token: str):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"}
    if method == "GET":
        return await client.get(url, headers=headers)
    if url.startswith("/api/"):
        return await client.request(method, url, json=WRITES[method], headers=headers)
    return await client.request(method, url, data=WRITES[method], headers=headers)


def _case_routes(app) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every staff route that names a case by id."""
    return [
        (method, path)
        for method, path, _ in _routes(app)
        if method != "WS"
        and re.search(r"/cases/\{id:int\}", path)
        and permissions.RULES[(method, path)].kind == "staff"
    ]


async def test_every_case_route_refuses_another_teams_case_with_403(app, client, teams, settings):
    b_case, b_number = teams["cases"]["b"]
    routes = _case_routes(app)
    assert len(routes) >= 9  # the walk covers the API, the pages, replies and suggestions
    failures = []
    for method, path in routes:
        url = re.sub(r"\{id:int\}", str(b_case), path)
        for who in ("a_agent", "a_supervisor"):
            token = auth.issue_token(teams[who].user, settings.secret_key, 600)
            r = await _try(client, method, url, token)
            if r.status_code != 403:
                failures.append(f"{method} {url} as {who}: {r.status_code}")
            elif url.startswith("/api/") and f"#{b_number}" not in r.json()["error"]["message"]:
                failures.append(f"{method} {url}: the refusal does not name the case")
    assert not failures, "\n".join(failures)
    # Nothing was written on the way: B's case has only what the fixture put there.
    async with app.state.db.unit_of_work() as session:
        entries = (
            await session.scalars(select(Interaction.kind).where(Interaction.case_id == b_case))
        ).all()
        case = await session.get(Case, b_case)
    assert sorted(entries) == ["email", "note"]
    assert case.status == "new" and case.assignee_id is None


async def test_own_team_shared_queue_admins_and_team_less_users_may_open_cases(client, teams):
    a_case, _ = teams["cases"]["a"]
    shared, _ = teams["cases"]["shared"]
    b_case, _ = teams["cases"]["b"]
    a = teams["a_agent"].headers
    assert (await client.get(f"/api/cases/{a_case}", headers=a)).status_code == 200
    assert (await client.get(f"/api/cases/{shared}", headers=a)).status_code == 200
    assert (await client.get(f"/cases/{a_case}", headers=a)).status_code == 200
    for who in ("admin", "free_agent", "b_agent"):
        r = await client.get(f"/api/cases/{b_case}", headers=teams[who].headers)
        assert r.status_code == 200, who
        assert r.json()["subject"] == SECRET_SUBJECT


async def test_another_teams_case_is_missing_from_lists_cards_timelines_and_search(client, teams):
    a = teams["a_agent"].headers
    customer_id = teams["customer_id"]
    b_case, b_number = teams["cases"]["b"]
    listed = (await client.get("/api/cases?limit=100", headers=a)).json()["items"]
    assert {c["subject"] for c in listed} == {"Team A printer", "Unrouted question"}
    by_customer = await client.get(f"/api/cases?customer_id={customer_id}", headers=a)
    assert b_case not in {c["id"] for c in by_customer.json()["items"]}

    card = (await client.get(f"/api/customers/{customer_id}", headers=a)).json()
    assert {c["subject"] for c in card["open_cases"]} == {"Team A printer", "Unrouted question"}
    timeline = (await client.get(f"/api/customers/{customer_id}/timeline", headers=a)).json()
    texts = " ".join(i["text"] or "" for i in timeline["items"])
    assert "Team A printer body text" in texts
    assert "refund" not in texts.lower()

    for page in (f"/customers/{customer_id}", "/cases", "/agent", "/cases?status="):
        html = (await client.get(page, headers=a)).text
        assert SECRET_SUBJECT not in html and "refund approved" not in html, page
    for q in ("refund", str(b_number), f"#{b_number}", "confidential"):
        hits = (await client.get("/api/search", params={"q": q}, headers=a)).json()["results"]
        assert not [h for h in hits if h["kind"] in ("case", "interaction")], q
        html = (await client.get("/search", params={"q": q}, headers=a)).text
        assert SECRET_SUBJECT not in html, q
    # The same searches find it for the team that owns it.
    b = teams["b_agent"].headers
    hits = (await client.get("/api/search", params={"q": "refund"}, headers=b)).json()["results"]
    assert {h["kind"] for h in hits} >= {"case", "interaction"}
    listed = (await client.get("/api/cases?limit=100", headers=b)).json()["items"]
    assert SECRET_SUBJECT in {c["subject"] for c in listed}


async def test_another_teams_attachment_is_refused(client, teams):
    url = f"/api/attachments/{teams['attachment_id']}"
    assert (await client.get(url, headers=teams["a_agent"].headers)).status_code == 403
    r = await client.get(url, headers=teams["b_agent"].headers)
    assert r.status_code == 200 and r.content == b"refund"


async def test_a_case_assigned_by_name_across_teams_is_visible_to_its_assignee(client, teams):
    b_case, _ = teams["cases"]["b"]
    a_agent = teams["a_agent"]
    r = await client.patch(
        f"/api/cases/{b_case}",
        json={"assignee_id": a_agent.user.id},
        headers=teams["admin"].headers,
    )
    assert r.status_code == 200
    assert (await client.get(f"/api/cases/{b_case}", headers=a_agent.headers)).status_code == 200
    mine = (await client.get("/api/cases?assignee=me", headers=a_agent.headers)).json()
    assert [c["id"] for c in mine["items"]] == [b_case]
    # ...but not to their team's supervisor, who was not named.
    r = await client.get(f"/api/cases/{b_case}", headers=teams["a_supervisor"].headers)
    assert r.status_code == 403


async def test_sending_a_case_to_another_team_takes_the_agent_to_the_case_list(client, teams):
    a_case, _ = teams["cases"]["a"]
    a = teams["a_agent"]
    r = await client.patch(
        f"/api/cases/{a_case}", json={"team_id": teams["team_b"]}, headers=a.headers
    )
    assert r.status_code == 200  # transferring is allowed...
    r = await client.get(f"/api/cases/{a_case}", headers=a.headers)
    assert r.status_code == 403  # ...and then the case is the other team's

    shared, _ = teams["cases"]["shared"]
    r = await client.post(
        f"/cases/{shared}/fields",
        data={"team_id": str(teams["team_b"])},
        headers={**a.headers, "HX-Request": "true"},
    )
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/cases"


async def test_attaching_a_call_to_another_teams_case_is_refused(client, teams, settings):
    b_case, _ = teams["cases"]["b"]
    r = await client.post(
        "/api/cti/events",
        json={
            "event": "ring",
            "call_id": "vis-1",
            "from": "0312345678",
            "to": "0501111",
            "agent": "301",
            "at": "2026-11-22T09:00:00Z",
        },
        headers={"Authorization": f"Bearer {settings.cti_token}"},
    )
    assert r.status_code == 200, r.text
    call_id = r.json()["call"]["id"]
    r = await client.post(
        f"/api/calls/{call_id}/attach",
        json={"case_id": b_case},
        headers=teams["a_agent"].headers,
    )
    assert r.status_code == 403
    card = await client.get(f"/calls/{call_id}/card", headers=teams["a_agent"].headers)
    assert card.status_code == 200
    assert "Team A printer" in card.text and SECRET_SUBJECT not in card.text
    card = await client.get(f"/calls/{call_id}/card", headers=teams["b_agent"].headers)
    assert SECRET_SUBJECT in card.text


async def test_a_team_supervisor_watches_only_their_teams_board(client, teams):
    sup = teams["a_supervisor"].headers
    r = await client.get("/api/sla/board", headers=sup)
    assert r.status_code == 200
    assert [t["team_id"] for t in r.json()["teams"]] == [teams["team_a"]]
    for q in ("all", str(teams["team_b"])):
        r = await client.get(f"/api/sla/board?team={q}", headers=sup)
        assert r.status_code == 403
        r = await client.get(f"/api/metrics/service-level?team={q}", headers=sup)
        assert r.status_code == 403
    page = await client.get("/board", headers=sup)
    assert page.status_code == 200 and "team=all" not in page.text
    r = await client.get("/api/sla/board?team=all", headers=teams["admin"].headers)
    assert r.status_code == 200


async def test_live_events_and_screen_pops_carry_only_what_each_team_may_see(
    client, teams, app, db, settings
):
    """Sockets as `/ws/agent` registers them (limited to the user's team): a queue change of
    team B's case reaches B and the admin, not A; a call ringing at A and B pops one card
    per team."""
    hub = app.state.hub
    conns = {
        who: hub.register(
            teams[who].user.id,
            teams[who].user.role,
            f"jti-{who}",
            team_id=visibility.limited_team(teams[who].user),
        )
        for who in ("a_agent", "b_agent", "admin")
    }
    for conn in conns.values():
        hub.watch(conn, {"queue"})
    try:
        b_case, _ = teams["cases"]["b"]
        r = await client.patch(
            f"/api/cases/{b_case}", json={"priority": "urgent"}, headers=teams["admin"].headers
        )
        assert r.status_code == 200
        r = await client.post(
            "/api/cti/events",
            json={
                "event": "ring",
                "call_id": "vis-2",
                "from": "0312345678",
                "to": "0501111",
                "agent": ["301", "302"],
                "at": "2026-11-22T09:00:00Z",
            },
            headers={"Authorization": f"Bearer {settings.cti_token}"},
        )
        assert r.status_code == 200, r.text
        # A committed marker for all proves everything before it has been dispatched.
        async with db.unit_of_work() as session:
            await events.publish(
                session,
                events.Event("marker", {}, users=tuple(teams[w].user.id for w in conns)),
            )

        async def frames(conn) -> list[dict]:  # type: ignore[no-untyped-def]
            out = []
            while True:
                frame = json.loads(await asyncio.wait_for(conn.queue.get(), 10))
                if frame["type"] == "marker":
                    return out
                out.append(frame)

        seen = {who: await frames(conn) for who, conn in conns.items()}
        updates = {w: [f["case_id"] for f in s if f["type"] == "case_updated"] for w, s in seen.items()}  # fmt: skip
        assert updates == {"a_agent": [], "b_agent": [b_case], "admin": [b_case]}

        def pop_subjects(who: str) -> set[str]:
            [pop] = [f for f in seen[who] if f["type"] == "screen_pop"]
            [card] = pop["customers"]
            recent = " ".join(r["text"] or "" for r in card["recent"])
            assert ("refund" in recent.lower()) == (who == "b_agent"), recent
            return {c["subject"] for c in card["open_cases"]}

        assert pop_subjects("a_agent") == {"Team A printer", "Unrouted question"}
        assert pop_subjects("b_agent") == {SECRET_SUBJECT, "Unrouted question"}
        assert "screen_pop" not in {f["type"] for f in seen["admin"]}  # not ringing there
    finally:
        for conn in conns.values():
            hub.unregister(conn)


async def test_an_agent_moved_to_another_team_gets_that_teams_events_at_once(
    client, teams, app, db
):
    """The admin moves agent A to team B: their open socket follows at the commit."""
    hub = app.state.hub
    user = teams["a_agent"].user
    conn = hub.register(user.id, user.role, "jti-moved", team_id=visibility.limited_team(user))
    hub.watch(conn, {"queue"})
    try:
        async with db.unit_of_work() as session:
            form = await admin.agent_form_of(session, await admin.get_agent(session, user.id))
            form.team_id = str(teams["team_b"])
            await admin.update_agent(session, user.id, form, actor_user_id=teams["admin"].user.id)
        b_case, _ = teams["cases"]["b"]
        r = await client.patch(
            f"/api/cases/{b_case}", json={"priority": "high"}, headers=teams["admin"].headers
        )
        assert r.status_code == 200
        frame = json.loads(await asyncio.wait_for(conn.queue.get(), 10))
        assert (frame["type"], frame["case_id"]) == ("case_updated", b_case)
        assert conn.team_id == teams["team_b"]
    finally:
        hub.unregister(conn)


async def test_the_sla_preview_of_another_teams_case_is_refused(client, teams):
    _, b_number = teams["cases"]["b"]
    _, a_number = teams["cases"]["a"]
    sup = teams["a_supervisor"].headers
    r = await client.get(f"/api/sla/preview?case={b_number}", headers=sup)
    assert r.status_code == 403 and f"#{b_number}" in r.json()["error"]["message"]
    assert (await client.get(f"/api/sla/preview?case={a_number}", headers=sup)).status_code == 200
    r = await client.get(f"/api/sla/preview?case={b_number}", headers=teams["admin"].headers)
    assert r.status_code == 200
