"""The admin area: agents, teams, the CTI token, canned responses and the audit log, each
change audited; admins edit, supervisors read, agents are turned away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from helpdesk import auth, cases, customers
from helpdesk.models import AuditRecord, Case, User
from tests.conftest import PASSWORD


@pytest.fixture
async def admin(make_staff):  # type: ignore[no-untyped-def]
    return await make_staff("admin")


async def _audit(db, action: str) -> list[AuditRecord]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return list(
            await session.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id)
            )
        )


async def _create_team(client, admin, name: str) -> int:  # type: ignore[no-untyped-def]
    r = await client.post("/admin/teams", data={"name": name}, headers=admin.headers)
    assert r.status_code == 303, r.text
    page = await client.get("/admin/teams", headers=admin.headers)
    assert name in page.text
    return int(page.text.split(f'value="{name}"')[0].rsplit('id="team-', 1)[1].split('"')[0])


def _agent_form(**overrides: str) -> dict[str, str]:
    form = {
        "email": "Hanako@Example.com",
        "name": "Hanako Sato",
        "role": "agent",
        "extension": "305",
        "team_id": "",
        "language": "ja",
        "chat_capacity": "4",
        "password": "a-long-initial-password",
    }
    return form | overrides


async def test_an_admin_creates_edits_and_deactivates_an_agent_whose_sessions_end_at_once(
    client, db, admin, settings
):
    team_id = await _create_team(client, admin, "Billing")
    r = await client.post(
        "/admin/agents", data=_agent_form(team_id=str(team_id)), headers=admin.headers
    )
    assert r.status_code == 303, r.text
    user_id = int(r.headers["location"].split("/")[3].split("?")[0])
    async with db.unit_of_work() as session:
        user = await session.get(User, user_id)
        assert (user.email, user.extension, user.team_id) == ("hanako@example.com", "305", team_id)
        customer = await customers.create_customer(session, customers.CustomerInput(name="Ada"))
        case = await cases.create_case(
            session,
            cases.CaseInput(
                customer_id=customer.id, subject="Refund", channel="email", assignee_id=user_id
            ),
            author_user_id=None,
        )
    created = await _audit(db, "user.create")
    assert created[-1].details["after"]["chat_capacity"] == 4
    assert "password" not in str(created[-1].details)

    # The agent logs in with the initial password.
    r = await client.post(
        "/api/auth/token",
        json={"email": "hanako@example.com", "password": _agent_form()["password"]},
    )
    token = r.json()["access_token"]
    agent_headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/me", headers=agent_headers)).status_code == 200

    # Edit: role, extension and capacity; the audit keeps before and after.
    r = await client.post(
        f"/admin/agents/{user_id}",
        data=_agent_form(role="supervisor", extension="306", chat_capacity="2"),
        headers=admin.headers,
    )
    assert r.status_code == 303, r.text
    (updated,) = await _audit(db, "user.update")
    assert updated.details["before"]["role"] == "agent"
    assert (updated.details["after"]["role"], updated.details["after"]["extension"]) == (
        "supervisor",
        "306",
    )
    assert updated.actor_user_id == admin.user.id

    # Deactivate: the token is refused at once, the open case is unassigned.
    r = await client.post(
        f"/admin/agents/{user_id}/active", data={"active": "false"}, headers=admin.headers
    )
    assert r.status_code == 303
    assert (await client.get("/api/me", headers=agent_headers)).status_code == 401
    async with db.unit_of_work() as session:
        assert (await session.get(Case, case.id)).assignee_id is None
        user = await session.get(User, user_id)
        assert not user.is_active and user.tokens_valid_after is not None
    (deactivated,) = await _audit(db, "user.deactivate")
    assert deactivated.details["unassigned_case_ids"] == [case.id]
    r = await client.post(
        "/api/auth/token",
        json={"email": "hanako@example.com", "password": _agent_form()["password"]},
    )
    assert r.status_code == 401

    # Reactivated, the old token stays void; a token issued afterwards works.
    r = await client.post(
        f"/admin/agents/{user_id}/active", data={"active": "true"}, headers=admin.headers
    )
    assert r.status_code == 303
    assert (await client.get("/api/me", headers=agent_headers)).status_code == 401
    async with db.unit_of_work() as session:  # a second later: iat has whole seconds
        user = await session.get(User, user_id)
        user.tokens_valid_after -= timedelta(seconds=2)
    later = auth.issue_token(user, settings.secret_key, 600)
    r = await client.get("/api/me", headers={"Authorization": f"Bearer {later}"})
    assert r.status_code == 200
    assert len(await _audit(db, "user.reactivate")) == 1


async def test_agent_form_mistakes_come_back_next_to_their_fields(client, db, admin, make_staff):
    await make_staff("agent", extension="401")
    r = await client.post(
        "/admin/agents",
        data=_agent_form(email="nope", extension="401", chat_capacity="99", password="short"),
        headers=admin.headers,
    )
    assert r.status_code == 422
    for field in ("email-error", "extension-error", "chat_capacity-error", "password-error"):
        assert f'id="{field}"' in r.text
    async with db.unit_of_work() as session:
        assert await session.scalar(select(User).where(User.email == "nope")) is None


async def test_agents_list_filters_and_pages(client, admin, make_staff):
    for _ in range(3):
        await make_staff("agent")
    await make_staff("supervisor")
    r = await client.get("/admin/agents?role=agent", headers=admin.headers)
    assert r.status_code == 200
    assert r.text.count('id="user-') == 3
    r = await client.get("/admin/agents?active=no", headers=admin.headers)
    assert r.text.count('id="user-') == 0
    r = await client.get("/admin/agents?role=wizard", headers=admin.headers)
    assert r.status_code == 422


async def test_an_admin_cannot_deactivate_themselves(client, admin):
    r = await client.post(
        f"/admin/agents/{admin.user.id}/active", data={"active": "false"}, headers=admin.headers
    )
    assert r.status_code == 409


async def test_a_team_with_members_is_not_deleted_and_an_empty_one_is(
    client, db, admin, make_staff
):
    await make_staff("agent", team_name="Support")
    page = await client.get("/admin/teams", headers=admin.headers)
    team_id = int(page.text.split('id="team-')[1].split('"')[0])
    r = await client.post(f"/admin/teams/{team_id}/delete", headers=admin.headers)
    assert r.status_code == 409
    assert "1 member" in r.text
    empty_id = await _create_team(client, admin, "Empty")
    r = await client.post(f"/admin/teams/{empty_id}", data={"name": "Spare"}, headers=admin.headers)
    assert r.status_code == 303
    r = await client.post(
        f"/admin/teams/{empty_id}", data={"name": "support"}, headers=admin.headers
    )
    assert r.status_code == 422  # names are unique whatever the case
    r = await client.post(f"/admin/teams/{empty_id}/delete", headers=admin.headers)
    assert r.status_code == 303
    assert [a.details for a in await _audit(db, "team.rename")] == [
        {"before": {"name": "Empty"}, "after": {"name": "Spare"}}
    ]
    assert len(await _audit(db, "team.delete")) == 1


async def test_rotating_the_cti_token_stops_the_old_one_and_shows_the_new_one_once(
    app, client, db, admin, settings
):
    event = {"event": "ring", "call_id": "rot-1", "from": "+81312345678", "to": "201"}
    old = {"Authorization": f"Bearer {settings.cti_token}"}
    try:
        page = await client.get("/admin/cti", headers=admin.headers)
        assert settings.cti_token not in page.text
        r = await client.post("/admin/cti/rotate", headers=admin.headers)
        assert r.status_code == 200
        new_token = app.state.settings.cti_token
        assert new_token != settings.cti_token and new_token in r.text
        assert (settings.data_dir / "cti_token").read_text() == new_token
        assert r.headers["cache-control"] == "no-store"
        assert new_token not in (await client.get("/admin/cti", headers=admin.headers)).text
        assert (await client.post("/api/cti/events", json=event, headers=old)).status_code == 401
        r = await client.post(
            "/api/cti/events", json=event, headers={"Authorization": f"Bearer {new_token}"}
        )
        assert r.status_code < 300, r.text
        (record,) = await _audit(db, "cti.token_rotate")
        assert new_token not in str(record.details)
    finally:
        app.state.settings = settings


async def test_canned_responses_are_created_edited_and_deleted_with_unique_shortcuts(
    client, db, admin
):
    form = {"shortcut": "/Thanks", "language": "en", "title": "Thanks", "body": "Thank you!"}
    r = await client.post("/admin/canned", data=form, headers=admin.headers)
    assert r.status_code == 303
    canned_id = int(r.headers["location"].split("/")[3].split("?")[0])
    r = await client.post("/admin/canned", data=form, headers=admin.headers)
    assert r.status_code == 422 and 'id="shortcut-error"' in r.text
    r = await client.post(
        f"/admin/canned/{canned_id}", data=form | {"body": "Many thanks!"}, headers=admin.headers
    )
    assert r.status_code == 303
    r = await client.get("/api/canned-responses", headers=admin.headers)
    assert "Many thanks!" in r.text
    r = await client.post(f"/admin/canned/{canned_id}/delete", headers=admin.headers)
    assert r.status_code == 303
    assert (
        await client.get(f"/admin/canned/{canned_id}", headers=admin.headers)
    ).status_code == 404
    (created,) = await _audit(db, "canned.create")
    assert created.details["after"]["shortcut"] == "thanks"
    (updated,) = await _audit(db, "canned.update")
    assert (updated.details["before"]["body"], updated.details["after"]["body"]) == (
        "Thank you!",
        "Many thanks!",
    )
    assert len(await _audit(db, "canned.delete")) == 1


async def test_the_audit_log_filters_and_pages_newest_first(client, db, admin, make_staff):
    other_admin = await make_staff("admin")
    for n in range(5):
        r = await client.post(
            "/admin/teams", data={"name": f"Crew {'ABCDE'[n]}"}, headers=admin.headers
        )
        assert r.status_code == 303
    r = await client.post("/admin/teams", data={"name": "Other"}, headers=other_admin.headers)
    assert r.status_code == 303

    r = await client.get("/admin/audit?action=team.&limit=4", headers=admin.headers)
    assert r.status_code == 200
    assert r.text.index("Other") < r.text.index("Crew E") < r.text.index("Crew D")
    assert "Crew B" not in r.text and 'rel="next"' in r.text
    next_href = r.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    r = await client.get(next_href.replace("&amp;", "&"), headers=admin.headers)
    assert "Crew B" in r.text and "Crew A" in r.text and "Crew E" not in r.text
    assert 'rel="next"' not in r.text

    r = await client.get(f"/admin/audit?actor={other_admin.user.email}", headers=admin.headers)
    assert r.text.count('id="audit-') == 1 and "Other" in r.text
    r = await client.get("/admin/audit?action=user.", headers=admin.headers)
    assert r.text.count('id="audit-') == 0
    r = await client.get("/admin/audit?entity_type=team&entity_id=1", headers=admin.headers)
    assert r.text.count('id="audit-') == 1
    today = datetime.now(UTC).date()
    r = await client.get(f"/admin/audit?since={today + timedelta(days=2)}", headers=admin.headers)
    assert r.text.count('id="audit-') == 0
    r = await client.get(f"/admin/audit?until={today + timedelta(days=2)}", headers=admin.headers)
    assert r.text.count('id="audit-') == 6
    r = await client.get("/admin/audit?since=yesterday", headers=admin.headers)
    assert r.status_code == 422 and 'id="since-error"' in r.text


async def test_agents_are_turned_away_and_supervisors_only_read(client, agent, supervisor):
    for path in ("/admin", "/admin/agents", "/admin/teams", "/admin/cti", "/admin/audit"):
        assert (await client.get(path, headers=agent.headers)).status_code == 403
    for path in ("/admin", "/admin/agents", "/admin/teams", "/admin/cti", "/admin/mailboxes"):
        r = await client.get(path, headers=supervisor.headers)
        assert r.status_code == 200, path
        main = r.text.split("<main")[1].split("</main>")[0]
        assert 'method="post"' not in main, path  # nothing to submit
    assert (await client.get("/admin/audit", headers=supervisor.headers)).status_code == 403
    r = await client.post("/admin/teams", data={"name": "X"}, headers=supervisor.headers)
    assert r.status_code == 403
    r = await client.post("/admin/cti/rotate", headers=supervisor.headers)
    assert r.status_code == 403


async def test_admin_forms_in_a_browser_need_the_csrf_token(client, admin):
    page = await client.get("/login")
    csrf = page.cookies["helpdesk_csrf"]
    r = await client.post(
        "/login", data={"email": admin.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    assert r.status_code == 303
    r = await client.post("/admin/teams", data={"name": "No token"})
    assert r.status_code == 403
    r = await client.post("/admin/teams", data={"name": "With token", "csrf_token": csrf})
    assert r.status_code == 303
    r = await client.get("/admin")
    assert r.status_code == 200 and 'href="/admin/audit"' in r.text
    assert 'href="/admin"' in r.text  # the nav link
