"""The SLA admin on the web: calendars and policies made and changed through their forms, every
change audited, mistakes shown next to their fields with nothing saved, admins only (agents
refused, supervisors read-only), and the deadline preview checked against deadlines worked
out by hand across Golden Week and the New Year closure."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from sqlalchemy import select

from helpdesk import sla, sla_admin
from helpdesk.business_time import BusinessCalendar
from helpdesk.models import AuditRecord, BusinessCalendarRecord, SlaPolicy, Team
from tests.test_business_time import PROPERTY, calendars
from tests.test_sla import DESK, jst, new_case

HX = {"HX-Request": "true"}
TOKYO_DESK = {
    "name": "Tokyo desk",
    "timezone": "Asia/Tokyo",
    "weekly": "mon-fri 09:00-12:00,13:00-18:00",
    "holiday_region": "jp",
    "closed_dates": "2027-12-29..2028-01-03",
    "special_hours": "2027-12-28 09:00-12:00",
}


@pytest.fixture
async def admin(make_staff):  # type: ignore[no-untyped-def]
    return await make_staff("admin")


async def _audit(db) -> list[AuditRecord]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return list(await session.scalars(select(AuditRecord).order_by(AuditRecord.id)))


async def _policies(db) -> list[SlaPolicy]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return list(
            await session.scalars(
                select(SlaPolicy)
                .order_by(SlaPolicy.position, SlaPolicy.id)
                .execution_options(populate_existing=True)
            )
        )


async def _teams(db, *names: str) -> list[int]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        teams = [Team(name=n) for n in names]
        session.add_all(teams)
        await session.flush()
        return [t.id for t in teams]


async def _desk_calendar(db) -> int:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return (await sla.create_calendar(session, "Tokyo desk", DESK)).id


def _times(html: str, kind: str) -> tuple[str, str]:
    """The warning and deadline a preview shows for one target (their ISO attributes)."""
    row = re.search(rf'<tr data-kind="{kind}">(.*?)</tr>', html, re.S)
    assert row, f"no {kind} row in:\n{html}"
    warning = re.search(r'class="sla-warning-at" datetime="([^"]+)"', row.group(1))
    deadline = re.search(r'class="sla-deadline-at" datetime="([^"]+)"', row.group(1))
    assert warning and deadline
    return warning.group(1), deadline.group(1)


def _error(html: str, field: str) -> str:
    found = re.search(rf'<span class="field-error" id="{field}-error">(.*?)</span>', html, re.S)
    assert found, f"no message next to {field}"
    return found.group(1)


# -- calendars -------------------------------------------------------------------------------


async def test_a_calendar_is_written_as_text_stored_exactly_and_read_back_the_same(
    client, admin, db
):
    r = await client.post("/admin/sla/calendars", data=TOKYO_DESK, headers=admin.headers)
    assert r.status_code == 303
    calendar_id = int(re.search(r"/admin/sla/calendars/(\d+)\?notice=created", r.headers["location"]).group(1))  # fmt: skip
    async with db.unit_of_work() as session:
        record = await session.get(BusinessCalendarRecord, calendar_id)
        calendar = sla.calendar_of(record)
    assert record.holiday_region == "JP"
    assert (
        record.weekly["0"] == [["09:00", "12:00"], ["13:00", "18:00"]] and "5" not in record.weekly
    )
    assert record.closed_dates == [
        "2027-12-29", "2027-12-30", "2027-12-31", "2028-01-01", "2028-01-02", "2028-01-03"
    ]  # fmt: skip
    assert record.special_hours == {"2027-12-28": [["09:00", "12:00"]]}
    assert calendar.hours_on(date(2027, 12, 28)) == DESK.weekly[0][:1]  # a half day

    page = await client.get(f"/admin/sla/calendars/{calendar_id}", headers=admin.headers)
    assert page.status_code == 200
    assert "mon-fri 09:00-12:00,13:00-18:00</textarea>" in page.text
    assert "2027-12-29..2028-01-03</textarea>" in page.text
    assert "2027-12-28 09:00-12:00</textarea>" in page.text

    [created] = await _audit(db)
    assert (created.action, created.entity_type, created.entity_id) == (
        "sla_calendar.create", "sla_calendar", calendar_id,
    )  # fmt: skip
    assert created.actor_user_id == admin.user.id
    assert created.details["after"]["closed_dates"] == record.closed_dates

    # Saturdays added; saving the same text again is no change and writes no record.
    edited = {**TOKYO_DESK, "weekly": "mon-fri 09:00-12:00, 13:00-18:00\nsat 10:00-14:00"}
    r = await client.post(f"/admin/sla/calendars/{calendar_id}", data=edited, headers=admin.headers)
    assert r.status_code == 303 and r.headers["location"].endswith("?notice=saved")
    r = await client.post(f"/admin/sla/calendars/{calendar_id}", data=edited, headers=admin.headers)
    assert r.status_code == 303
    page = await client.get(f"/admin/sla/calendars/{calendar_id}", headers=admin.headers)
    assert "mon-fri 09:00-12:00,13:00-18:00\nsat 10:00-14:00</textarea>" in page.text
    records = await _audit(db)
    assert [a.action for a in records] == ["sla_calendar.create", "sla_calendar.update"]
    assert "5" not in records[1].details["before"]["weekly"]
    assert records[1].details["after"]["weekly"]["5"] == [["10:00", "14:00"]]


async def test_calendar_mistakes_are_named_next_to_each_field_and_nothing_is_saved(
    client, admin, db
):
    wrong = {
        "name": "",
        "timezone": "Asia/Tokio",
        "weekly": "mon-fri 09:00-12:00,11:00-18:00",
        "holiday_region": "XX",
        "closed_dates": "2027-02-30",
        "special_hours": "2027-12-28 noon",
    }
    r = await client.post("/admin/sla/calendars", data=wrong, headers=admin.headers)
    assert r.status_code == 422
    assert "Nothing was saved" in r.text
    assert _error(r.text, "name") == "Enter a name."
    assert "Asia/Tokio is not an IANA timezone" in _error(r.text, "timezone")
    assert "overlaps" in _error(r.text, "weekly")
    assert "No public holidays are known for XX" in _error(r.text, "holiday_region")
    assert "2027-02-30" in _error(r.text, "closed_dates")
    assert "noon" in _error(r.text, "special_hours")
    assert 'name="timezone" value="Asia/Tokio"' in r.text  # what was typed is kept
    assert 'aria-describedby="weekly-error"' in r.text
    async with db.unit_of_work() as session:
        assert (await session.scalars(select(BusinessCalendarRecord))).all() == []
    assert await _audit(db) == []

    # An edit with one mistake changes nothing either; a taken name is a mistake too.
    await client.post("/admin/sla/calendars", data=TOKYO_DESK, headers=admin.headers)
    other = {**TOKYO_DESK, "name": "Osaka desk", "timezone": "Asia/Tokyo"}
    await client.post("/admin/sla/calendars", data=other, headers=admin.headers)
    async with db.unit_of_work() as session:
        osaka = await session.scalar(
            select(BusinessCalendarRecord).where(BusinessCalendarRecord.name == "Osaka desk")
        )
    r = await client.post(
        f"/admin/sla/calendars/{osaka.id}",
        data={**other, "name": "tokyo DESK", "weekly": "sat 10:00-14:00"},
        headers=admin.headers,
    )
    assert r.status_code == 422
    assert _error(r.text, "name") == "A calendar named tokyo DESK already exists."
    async with db.unit_of_work() as session:
        osaka = await session.get(BusinessCalendarRecord, osaka.id, populate_existing=True)
    assert osaka.name == "Osaka desk" and "5" not in osaka.weekly
    assert [a.action for a in await _audit(db)] == ["sla_calendar.create"] * 2


def _same_calendar(a: BusinessCalendar, b: BusinessCalendar) -> bool:
    """Equal as calendars: a weekday without hours is the same as one left out."""

    def shape(c: BusinessCalendar) -> dict[str, object]:
        data = c.as_dict()
        data["weekly"] = {k: v for k, v in data["weekly"].items() if v}  # type: ignore[union-attr]
        return data

    return shape(a) == shape(b)


@PROPERTY
@given(calendars())
def test_every_calendar_written_as_form_text_reads_back_as_the_same_calendar(calendar):
    data = calendar.as_dict()
    record = BusinessCalendarRecord(name="any", **data)
    form = sla_admin.calendar_form_of(record)
    assert _same_calendar(sla_admin.calendar_from_form(form), calendar), form


# -- policies --------------------------------------------------------------------------------


async def test_policies_are_created_edited_reordered_and_switched_off_each_change_audited(
    client, admin, db
):
    calendar_id = await _desk_calendar(db)
    billing, escalations = await _teams(db, "Billing", "Escalations")
    blank = await client.get("/admin/sla/policies/new", headers=admin.headers)
    assert blank.status_code == 200
    assert f'<option value="{calendar_id}" selected>' in blank.text  # the only calendar
    assert f'<input type="checkbox" name="team_id" value="{billing}" >' in blank.text
    gold = {
        "name": "Gold urgent",
        "calendar_id": str(calendar_id),
        "priority": ["high", "urgent"],
        "tier": ["gold", "platinum"],
        "team_id": [str(billing)],
        "first_response_minutes": "60",
        "resolution_minutes": "480",
        "warning_percent": "75",
        "breach_raise_priority": "1",
        "breach_reassign_team_id": str(escalations),
        "active": "1",
    }
    r = await client.post("/admin/sla/policies", data=gold, headers=admin.headers)
    assert r.status_code == 303, r.text
    everyone = {"name": "Everyone", "calendar_id": str(calendar_id), "resolution_minutes": "960",
                "warning_percent": "80", "active": "1"}  # fmt: skip
    assert (await client.post("/admin/sla/policies", data=everyone, headers=admin.headers)).status_code == 303  # fmt: skip

    first, second = await _policies(db)
    assert (first.name, second.name) == ("Gold urgent", "Everyone")
    assert first.conditions == {
        "priority": ["high", "urgent"], "tier": ["gold", "platinum"], "team_id": [billing]
    }  # fmt: skip
    assert (first.first_response_minutes, first.next_response_minutes) == (60, None)
    assert first.warning_percent == 75
    assert first.breach_raise_priority and first.breach_reassign_team_id == escalations
    assert second.conditions == {} and not second.breach_raise_priority

    overview = await client.get("/admin/sla", headers=admin.headers)
    assert overview.status_code == 200
    assert overview.text.index("Gold urgent") < overview.text.index("Everyone")
    assert "Move to Escalations, unassigned" in overview.text
    assert "Raise the priority one step" in overview.text

    edit = await client.get(f"/admin/sla/policies/{first.id}", headers=admin.headers)
    assert 'name="priority" value="urgent" checked' in edit.text
    assert f'<option value="{escalations}" selected>Escalations</option>' in edit.text
    changed = {**gold, "first_response_minutes": "30", "breach_raise_priority": ""}
    r = await client.post(f"/admin/sla/policies/{first.id}", data=changed, headers=admin.headers)
    assert r.status_code == 303

    r = await client.post(
        f"/admin/sla/policies/{second.id}/move", data={"direction": "up"}, headers=admin.headers
    )
    assert r.status_code == 303
    r = await client.post(
        f"/admin/sla/policies/{first.id}/active", data={"active": "false"}, headers=admin.headers
    )
    assert r.status_code == 303
    after = await _policies(db)
    assert [(p.name, p.active) for p in after] == [("Everyone", True), ("Gold urgent", False)]
    assert after[1].first_response_minutes == 30 and not after[1].breach_raise_priority

    records = await _audit(db)
    assert [a.action for a in records] == [
        "sla_policy.create",
        "sla_policy.create",
        "sla_policy.update",
        "sla_policy.reorder",
        "sla_policy.deactivate",
    ]
    assert all(a.actor_user_id == admin.user.id for a in records)
    update = records[2].details
    assert update["before"]["first_response_minutes"] == 60
    assert update["after"]["first_response_minutes"] == 30
    assert (
        update["before"]["breach_raise_priority"] and not update["after"]["breach_raise_priority"]
    )
    assert records[3].entity_id == second.id  # the one that was moved
    assert records[3].details == {
        "before": {"order": [first.id, second.id]},
        "after": {"order": [second.id, first.id]},
    }
    assert records[4].details == {"before": {"active": True}, "after": {"active": False}}

    overview = await client.get("/admin/sla", headers=admin.headers)
    assert overview.text.index("Everyone") < overview.text.index("Gold urgent")
    assert 'class="sla-inactive"' in overview.text


async def test_policy_mistakes_are_named_next_to_each_field_and_nothing_is_saved(client, admin, db):
    calendar_id = await _desk_calendar(db)
    [billing] = await _teams(db, "Billing")
    await client.post(
        "/admin/sla/policies",
        data={"name": "Taken", "calendar_id": str(calendar_id), "warning_percent": "80"},
        headers=admin.headers,
    )
    wrong = {
        "name": "taken",
        "calendar_id": "999",
        "priority": ["high", "critical"],
        "team_id": [str(billing), "999"],
        "first_response_minutes": "abc",
        "next_response_minutes": "0",
        "resolution_minutes": "480",
        "warning_percent": "150",
        "breach_reassign_team_id": "999",
    }
    r = await client.post("/admin/sla/policies", data=wrong, headers=admin.headers)
    assert r.status_code == 422
    assert _error(r.text, "name") == "A policy named taken already exists."
    assert _error(r.text, "calendar_id") == "Choose a business calendar."
    assert _error(r.text, "priority") == "Unknown value critical."
    assert _error(r.text, "team_id") == "Choose teams that exist."
    for target in ("first_response_minutes", "next_response_minutes"):
        assert _error(r.text, target).startswith("Enter whole business minutes from 1 to")
    assert "resolution_minutes-error" not in r.text
    assert _error(r.text, "warning_percent") == "Enter a percentage from 1 to 100."
    assert _error(r.text, "breach_reassign_team_id") == "Choose a team that exists."
    assert 'name="priority" value="high" checked' in r.text  # the ticks are kept
    assert [p.name for p in await _policies(db)] == ["Taken"]
    assert [a.action for a in await _audit(db)] == ["sla_policy.create"]


async def test_agents_are_refused_and_supervisors_may_look_but_not_change(
    client, admin, agent, supervisor, db
):
    calendar_id = await _desk_calendar(db)
    async with db.unit_of_work() as session:
        policy = await sla.create_policy(
            session, name="Everyone", calendar_id=calendar_id, resolution_minutes=480
        )
    for url in ("/admin/sla", f"/admin/sla/policies/{policy.id}", "/admin/sla/preview",
                "/api/sla/preview"):  # fmt: skip
        assert (await client.get(url, headers=agent.headers)).status_code == 403, url

    overview = await client.get("/admin/sla", headers=supervisor.headers)
    assert overview.status_code == 200 and "Everyone" in overview.text
    assert "/admin/sla/policies/new" not in overview.text and "/move" not in overview.text
    page = await client.get(f"/admin/sla/policies/{policy.id}", headers=supervisor.headers)
    assert page.status_code == 200 and '<fieldset class="sla-fields" disabled>' in page.text
    assert (await client.get("/admin/sla/preview", headers=supervisor.headers)).status_code == 200
    for url, data in (
        ("/admin/sla/calendars", TOKYO_DESK),
        (f"/admin/sla/calendars/{calendar_id}", TOKYO_DESK),
        (f"/admin/sla/policies/{policy.id}", {"name": "Mine"}),
        (f"/admin/sla/policies/{policy.id}/move", {"direction": "up"}),
        (f"/admin/sla/policies/{policy.id}/active", {"active": "false"}),
    ):
        assert (await client.post(url, data=data, headers=supervisor.headers)).status_code == 403
    assert (await client.get("/admin/sla/calendars/new", headers=supervisor.headers)).status_code == 403  # fmt: skip
    assert await _audit(db) == []


async def test_a_browser_session_needs_the_csrf_token_to_change_anything(client, admin, db):
    from tests.conftest import PASSWORD

    csrf = (await client.get("/login")).cookies["helpdesk_csrf"]
    await client.post(
        "/login", data={"email": admin.user.email, "password": PASSWORD, "csrf_token": csrf}
    )
    form = await client.get("/admin/sla/calendars/new")
    assert form.status_code == 200 and f'name="csrf_token" value="{csrf}"' in form.text
    assert (await client.post("/admin/sla/calendars", data=TOKYO_DESK)).status_code == 403
    r = await client.post("/admin/sla/calendars", data={**TOKYO_DESK, "csrf_token": csrf})
    assert r.status_code == 303


# -- preview ---------------------------------------------------------------------------------


async def test_preview_counts_business_time_across_golden_week_in_the_viewers_timezone(
    client, admin, db
):
    """Opened Wednesday 2027-04-28 17:00 in Tokyo, on mon-fri 09:00-12:00 13:00-18:00:
    one hour that evening, Showa Day (29th) off, Friday the 30th, then the weekend and
    Golden Week (3rd, 4th, 5th) off until Thursday 6 May.

    First response 120 min: 60 on the 28th, then 09:00 + 60 on the 30th → 10:00
    (warning at 96 min → 09:36). Resolution 960 min: 60 + 480 by the 30th, 180 on the
    morning of the 6th, 13:00 + 240 → 17:00 (warning at 768 min → 13:48)."""
    calendar_id = await _desk_calendar(db)
    async with db.unit_of_work() as session:
        await sla.create_policy(
            session, name="Gold", calendar_id=calendar_id, conditions={"tier": ["gold"]},
            first_response_minutes=30,
        )  # fmt: skip
        await sla.create_policy(
            session, name="Standard", calendar_id=calendar_id,
            first_response_minutes=120, resolution_minutes=960,
        )  # fmt: skip
    query = {"priority": "normal", "channel": "email", "tier": "standard",
             "created_at": "2027-04-28T17:00"}  # fmt: skip

    r = await client.get("/admin/sla/preview", params=query, headers={**admin.headers, **HX})
    assert r.status_code == 200 and "<html" not in r.text  # only the answer, for htmx
    assert ">Standard</a>" in r.text
    assert _times(r.text, "first_response") == ("2027-04-30T09:36:00+09:00", "2027-04-30T10:00:00+09:00")  # fmt: skip
    assert _times(r.text, "resolution") == ("2027-05-06T13:48:00+09:00", "2027-05-06T17:00:00+09:00")  # fmt: skip
    assert 'data-kind="next_response"' not in r.text

    # The same instant typed by a viewer in UTC, and shown back to them in UTC.
    client.cookies.set("helpdesk_tz", "UTC")
    r = await client.get(
        "/admin/sla/preview",
        params={**query, "created_at": "2027-04-28T08:00"},
        headers={**admin.headers, **HX},
    )
    assert _times(r.text, "first_response") == ("2027-04-30T00:36:00+00:00", "2027-04-30T01:00:00+00:00")  # fmt: skip
    client.cookies.delete("helpdesk_tz")

    page = await client.get("/admin/sla/preview", params={**query, "tier": "gold"}, headers=admin.headers)  # fmt: skip
    assert "<html" in page.text and 'hx-get="/admin/sla/preview"' in page.text
    assert ">Gold</a>" in page.text
    assert _times(page.text, "first_response")[1] == "2027-04-28T17:30:00+09:00"

    api = await client.get(
        "/api/sla/preview",
        params={**query, "created_at": "2027-04-28T17:00:00+09:00"},
        headers=admin.headers,
    )
    assert api.status_code == 200
    body = api.json()
    assert body["policy"]["name"] == "Standard"
    assert body["policy"]["calendar"]["timezone"] == "Asia/Tokyo"
    assert [(c["kind"], c["target_minutes"], c["deadline_at"]) for c in body["clocks"]] == [
        ("first_response", 120, "2027-04-30T01:00:00+00:00"),
        ("resolution", 960, "2027-05-06T08:00:00+00:00"),
    ]

    bad = await client.get(
        "/api/sla/preview", params={"priority": "critical", "created_at": "soon"},
        headers=admin.headers,
    )  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "created_at"
    bad = await client.get("/api/sla/preview", params={"priority": "critical"}, headers=admin.headers)  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["errors"] == {
        "priority": "Unknown value critical."
    }


async def test_preview_of_a_calendar_made_in_the_form_skips_the_new_year_closure(client, admin, db):
    """Tuesday 2027-12-28 is a half day (09:00-12:00), 29 December to 3 January closed (1
    January is also a holiday). Opened at 10:00 with a 240-minute first response: 120 that
    morning, then 09:00 + 120 on Tuesday 4 January → 11:00 (warning at 192 → 10:12)."""
    r = await client.post("/admin/sla/calendars", data=TOKYO_DESK, headers=admin.headers)
    calendar_id = int(re.search(r"/calendars/(\d+)", r.headers["location"]).group(1))
    r = await client.post(
        "/admin/sla/policies",
        data={"name": "Standard", "calendar_id": str(calendar_id),
              "first_response_minutes": "240", "warning_percent": "80", "active": "1"},
        headers=admin.headers,
    )  # fmt: skip
    assert r.status_code == 303
    r = await client.get(
        "/admin/sla/preview",
        params={"priority": "low", "channel": "phone", "tier": "standard",
                "created_at": "2027-12-28T10:00"},
        headers={**admin.headers, **HX},
    )  # fmt: skip
    assert _times(r.text, "first_response") == (
        "2028-01-04T10:12:00+09:00",
        "2028-01-04T11:00:00+09:00",
    )

    # Nothing matches once the only policy is switched off.
    [policy] = await _policies(db)
    await client.post(
        f"/admin/sla/policies/{policy.id}/active", data={"active": "false"}, headers=admin.headers
    )
    r = await client.get(
        "/admin/sla/preview", params={"created_at": "2027-12-28T10:00"},
        headers={**admin.headers, **HX},
    )  # fmt: skip
    assert "No active policy matches" in r.text


async def test_preview_of_an_existing_case_shows_its_policy_and_its_stored_clocks(
    client, admin, db
):
    calendar_id = await _desk_calendar(db)
    async with db.unit_of_work() as session:
        await sla.create_policy(
            session, name="Standard", calendar_id=calendar_id, first_response_minutes=120
        )
        case = await new_case(session)
        case.created_at = jst(4, 28, 17)
        await sla.start_clocks(session, case, jst(4, 28, 17))
        number = case.number

    r = await client.get(
        "/admin/sla/preview", params={"case": f"#{number}"}, headers={**admin.headers, **HX}
    )
    assert r.status_code == 200
    assert f">#{number}</a>" in r.text and "請求書が届かない" in r.text
    assert _times(r.text, "first_response")[1] == "2027-04-30T10:00:00+09:00"
    stored = re.search(r'<table class="cases sla-stored">.*?</table>', r.text, re.S).group(0)
    assert 'datetime="2027-04-30T10:00:00+09:00"' in stored

    missing = await client.get(
        "/admin/sla/preview", params={"case": "9999"}, headers={**admin.headers, **HX}
    )
    assert missing.status_code == 422 and "There is no case #9999." in missing.text
