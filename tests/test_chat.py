"""The chat protocol end to end: a real `helpdesk serve` process, real WebSockets for the
visitor (`/ws/chat`) and the agent (`/ws/agent`), the real router. Waits are bounded,
never slept: a pass takes milliseconds."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from helpdesk.models import Case, ChatConversation, ChatMessage, Interaction, OutboxMail, Team
from tests.conftest import serve_process
from tests.test_hub import SECRET, WAIT, _token


class Socket:
    """A test tab: a real WebSocket; `next` finds the first matching frame, and frames it
    skips stay pending for later calls (events of one action may come in either order)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.pending: list[dict] = []

    async def next(self, type_: str | None = None, pred=lambda f: True, within: float = WAIT):
        def matches(frame: dict) -> bool:
            return (type_ is None or frame["type"] == type_) and pred(frame)

        for frame in self.pending:
            if matches(frame):
                self.pending.remove(frame)
                return frame

        async def find() -> dict:
            while True:
                frame = json.loads(await self.ws.recv())
                if matches(frame):
                    return frame
                self.pending.append(frame)

        return await asyncio.wait_for(find(), within)

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))


@asynccontextmanager
async def agent_socket(base: str, token: str):
    async with connect(base.replace("http://", "ws://") + f"/ws/agent?token={token}") as ws:
        sock = Socket(ws)
        await sock.next("hello")
        yield sock


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("chatdata")
    env = {
        "HELPDESK_SECRET_KEY": SECRET,
        "HELPDESK_CHAT_OFFER_SECONDS": "2",
        "HELPDESK_PRESENCE_GRACE_SECONDS": "1",
    }
    with serve_process(database_url, data, **env) as base:
        yield base


def _chat_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/chat"


class Visitor(Socket):
    async def say(self, body: str, client_id: str | None = None) -> dict:
        client_id = client_id or uuid.uuid4().hex
        await self.send({"type": "message", "client_id": client_id, "body": body})
        return await self.next("ack", lambda f: f["client_id"] == client_id)


@asynccontextmanager
async def visitor(base: str, name: str = "山田 花子", **visitor_fields):
    async with connect(_chat_url(base), max_size=None) as ws:
        sock = Visitor(ws)
        await sock.send(
            {"type": "hello", "visitor": {"name": name, "language": "ja", **visitor_fields}}
        )
        first = await sock.next()
        sock.welcome = first  # type: ignore[attr-defined]
        yield sock


@asynccontextmanager
async def resumed(base: str, token: str, after: int):
    async with connect(_chat_url(base)) as ws:
        sock = Visitor(ws)
        await sock.send({"type": "resume", "token": token, "after": after})
        sock.welcome = await sock.next("welcome")  # type: ignore[attr-defined]
        yield sock


async def _accepted_chat(base: str, agent_sock: Socket, v: Visitor, first: str = "こんにちは"):
    """The visitor's first message queues the chat; the agent gets the offer and takes it."""
    ack = await v.say(first)
    assert ack["seq"] == 1 and ack["duplicate"] is False
    offer = await agent_sock.next("chat_offered")
    conv_id = offer["conversation"]["id"]
    assert offer["conversation"]["preview"] == first
    await agent_sock.send({"type": "chat_accept", "conversation": conv_id})
    await agent_sock.next("chat_accepted", lambda f: f["conversation"]["id"] == conv_id)
    state = await v.next("chat_state", lambda f: f["state"] == "active")
    assert state["agent"]["name"]
    joined = await v.next("chat_message", lambda f: f["from"] == "system")
    assert joined["seq"] == 2
    return conv_id


async def test_nobody_online_means_offline_and_the_message_left_becomes_an_email_case(server, db):
    async with visitor(server) as v:
        assert v.welcome == {"type": "offline", "reason": "no_agents"}
        await v.send({"type": "message", "client_id": "x", "body": "hi"})
        err = await v.next("error")
        assert err["code"] == "not_ready"
        await v.send({"type": "leave_message", "name": "山田", "email": "bad", "body": "返品"})
        assert (await v.next("error"))["code"] == "invalid"
        await v.send(
            {
                "type": "leave_message",
                "name": "山田",
                "email": "yamada@example.jp",
                "body": "返品したいです",
            }
        )
        left = await v.next("message_left")
    async with db.unit_of_work() as session:
        case = await session.scalar(select(Case).where(Case.number == left["case_number"]))
        assert case is not None and case.channel == "email"
        entry = await session.scalar(select(Interaction).where(Interaction.case_id == case.id))
        assert entry is not None and entry.text == "返品したいです" and entry.kind == "email"


async def test_a_chat_from_first_message_to_transcript(server, db, make_staff):
    staff = await make_staff("agent", name="佐藤 一郎")
    async with agent_socket(server, _token(staff.user)) as a, visitor(server) as v:
        assert v.welcome["type"] == "welcome" and v.welcome["state"] == "new"
        assert v.welcome["limits"]["max_chars"] == 2000
        conv_id = await _accepted_chat(server, a, v)
        # agent -> visitor
        await a.send(
            {
                "type": "chat_send",
                "conversation": conv_id,
                "client_id": "a1",
                "body": "佐藤です。ご用件をどうぞ。",
            }
        )
        assert (await a.next("chat_ack"))["seq"] == 3
        got = await v.next("chat_message", lambda f: f["seq"] == 3)
        assert got["from"] == "agent" and got["name"] == "佐藤 一郎"
        # visitor -> agent, with typing first
        await v.send({"type": "typing", "on": True})
        assert (await a.next("chat_typing"))["on"] is True
        await v.say("注文番号は 1234 です")
        mine = await a.next("chat_message", lambda f: f["seq"] == 4)
        assert mine["from"] == "visitor" and mine["body"] == "注文番号は 1234 です"
        await v.send({"type": "close"})
        closed = await v.next("chat_state", lambda f: f["state"] == "closed")
        assert closed["by"] == "visitor"
        await v.send({"type": "rate", "score": 5, "comment": "早い！"})
        assert (await v.next("rated"))["score"] == 5
        await v.send({"type": "rate", "score": 4})
        assert (await v.next("error"))["message"] == "this chat has already been rated"
        await v.send({"type": "transcript", "email": "hanako@example.jp"})
        assert (await v.next("transcript_queued"))["email"] == "hanako@example.jp"
    async with db.unit_of_work() as session:
        conv = await session.get(ChatConversation, conv_id)
        case = await session.get(Case, conv.case_id)
        assert case.channel == "chat" and case.assignee_id == staff.user.id
        assert case.subject == "チャット: こんにちは"
        entry = await session.get(Interaction, conv.interaction_id)
        assert entry.kind == "chat" and entry.customer_id == conv.customer_id
        assert [m["seq"] for m in entry.meta["messages"]] == [1, 2, 3, 4, 5]
        assert entry.meta["csat"] == 5 and "注文番号は 1234 です" in entry.text
        outbox = (await session.scalars(select(OutboxMail))).all()
        assert len(outbox) == 1 and outbox[0].recipients == ["hanako@example.jp"]
        mail = email.message_from_bytes(outbox[0].raw, policy=email.policy.default)
        assert f"[#{case.number}]" in mail["Subject"]
        assert "注文番号は 1234 です" in mail.get_body(("plain",)).get_content()
    async with httpx.AsyncClient(base_url=server) as http:
        page = await http.get(f"/cases/{conv.case_id}", headers=_auth(staff))
    assert page.status_code == 200
    assert "注文番号は 1234 です" in page.text and "★★★★★" in page.text and "早い！" in page.text


async def test_reconnect_mid_chat_replays_exactly_what_was_missed(server, db, make_staff):
    staff = await make_staff("agent")
    async with agent_socket(server, _token(staff.user)) as a:
        async with visitor(server) as v:
            token = v.welcome["token"]
            conv_id = await _accepted_chat(server, a, v)
        # the network drops; the agent keeps writing
        for n in range(3):
            await a.send(
                {
                    "type": "chat_send",
                    "conversation": conv_id,
                    "client_id": f"m{n}",
                    "body": f"message {n}",
                }
            )
            await a.next("chat_ack", lambda f, n=n: f["client_id"] == f"m{n}")
        async with resumed(server, token, after=2) as v2:
            assert v2.welcome["state"] == "active" and v2.welcome["seq"] == 5
            replay = [await v2.next("chat_message") for _ in range(3)]
            assert [m["seq"] for m in replay] == [3, 4, 5]
            assert (await v2.next("synced"))["seq"] == 5
            # a second tab (or a reloaded page) gets the whole history
            async with resumed(server, token, after=0) as tab:
                history = [await tab.next("chat_message") for _ in range(5)]
                assert [m["seq"] for m in history] == [1, 2, 3, 4, 5]
                await tab.next("synced")
                # both tabs see what comes next, once
                await v2.say("届きました", client_id="v-after")
                for sock in (v2, tab):
                    m = await sock.next("chat_message", lambda f: f["seq"] == 6)
                    assert m["client_id"] == "v-after"
    async with db.unit_of_work() as session:
        seqs = (
            await session.scalars(
                select(ChatMessage.seq).where(ChatMessage.conversation_id == conv_id)
            )
        ).all()
        assert sorted(seqs) == [1, 2, 3, 4, 5, 6]


async def test_a_resent_message_is_stored_once_and_acks_keep_the_highest(server, db, make_staff):
    staff = await make_staff("agent")
    async with agent_socket(server, _token(staff.user)) as a, visitor(server) as v:
        conv_id = await _accepted_chat(server, a, v)
        first = await v.say("一回だけ", client_id="dup-1")
        again = await v.say("一回だけ", client_id="dup-1")
        assert again == {**first, "duplicate": True}
        await v.send({"type": "ack", "seq": 3})
        await v.send({"type": "ack", "seq": 1})  # late, out of order
        await v.send({"type": "ack", "seq": 99})
        err = await v.next("error")
        assert err["code"] == "invalid" and "99" in err["message"]
    async with db.unit_of_work() as session:
        conv = await session.get(ChatConversation, conv_id)
        assert conv.visitor_ack_seq == 3
        n = await session.scalar(
            select(func.count()).where(
                ChatMessage.conversation_id == conv_id, ChatMessage.client_id == "dup-1"
            )
        )
        assert n == 1


async def test_oversized_messages_and_frames_are_refused(server, make_staff):
    staff = await make_staff("agent")
    async with agent_socket(server, _token(staff.user)) as a, visitor(server) as v:
        await _accepted_chat(server, a, v)
        await v.send({"type": "message", "client_id": "big", "body": "あ" * 2001})
        err = await v.next("error")
        assert err["code"] == "too_long" and "2000" in err["message"]
        assert (await v.say("still open"))["seq"] == 3
        await v.ws.send(json.dumps({"type": "message", "body": "x" * 70_000}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await v.next("never", within=WAIT)
        assert closed.value.rcvd.code == 1009


async def test_a_flood_is_rate_limited_then_cut_off(server, make_staff):
    staff = await make_staff("agent")
    async with agent_socket(server, _token(staff.user)) as a, visitor(server) as v:
        await _accepted_chat(server, a, v)
        for n in range(40):
            await v.send({"type": "message", "client_id": f"f{n}", "body": f"spam {n}"})
        kinds: list[str] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await v.next(within=WAIT)
                if frame["type"] in ("ack", "error"):
                    kinds.append(frame.get("code", frame["type"]))
        assert closed.value.rcvd.code == 4429
        assert kinds.count("ack") == 9  # ten per ten seconds, one spent by the first message
        assert "rate_limited" in kinds


async def test_bad_first_frames_and_unknown_tokens_are_closed_with_a_reason(server):
    async with connect(_chat_url(server)) as ws:
        await ws.send(json.dumps({"type": "message", "body": "hi"}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4400
    async with connect(_chat_url(server)) as ws:
        await ws.send(json.dumps({"type": "resume", "token": "no-such-token-at-all", "after": 0}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4404
    async with connect(_chat_url(server)) as ws:
        await ws.send(json.dumps({"type": "hello", "visitor": {"name": ""}}))
        err = json.loads(await ws.recv())
        assert err["type"] == "error" and err["message"] == "name is required"


async def test_another_agents_chat_cannot_be_written_to(server, make_staff):
    one = await make_staff("agent")
    async with agent_socket(server, _token(one.user)) as a, visitor(server) as v:
        conv_id = await _accepted_chat(server, a, v)
        other = await make_staff("agent")
        async with agent_socket(server, _token(other.user)) as b:
            await b.send(
                {"type": "chat_send", "conversation": conv_id, "client_id": "z", "body": "not mine"}
            )
            err = await b.next("error")
            assert err["code"] == "forbidden" and err["ref"] == "chat_send"
        async with httpx.AsyncClient(base_url=server) as http:
            r = await http.get(f"/api/chats/{conv_id}", headers=_auth(other))
            assert r.status_code == 403


def _auth(staff) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(staff.user)}"}


async def test_the_agent_api_lists_transfers_uploads_and_replies(server, db, make_staff):
    one = await make_staff("agent", name="One")
    two = await make_staff("agent", name="Two")
    async with db.unit_of_work() as session:
        team = Team(name="Billing")
        session.add(team)
        await session.flush()
        team_id = team.id
    async with (
        agent_socket(server, _token(one.user)),
        agent_socket(server, _token(two.user)),
        visitor(server) as v,
        httpx.AsyncClient(base_url=server) as http,
    ):
        await v.say("請求書について")
        holder = None
        for _ in range(200):
            for staff in (one, two):
                if (await http.get("/api/chats", headers=_auth(staff))).json()["offered"]:
                    holder = staff
            if holder:
                break
            await asyncio.sleep(0.05)
        assert holder is not None, "the chat was never offered"
        conv_id = (await http.get("/api/chats", headers=_auth(holder))).json()["offered"][0]["id"]
        other = two if holder is one else one
        r = await http.post(f"/api/chats/{conv_id}/accept", headers=_auth(other))
        assert r.status_code == 409
        r = await http.post(f"/api/chats/{conv_id}/accept", headers=_auth(holder))
        assert r.status_code == 200 and r.json()["state"] == "active"
        lists = (await http.get("/api/chats", headers=_auth(holder))).json()
        assert [c["id"] for c in lists["active"]] == [conv_id]
        assert lists["active"][0]["unread"] == 0
        # a file from the visitor
        token = v.welcome["token"]
        up = await http.post(
            "/api/chat/uploads",
            headers={"X-Chat-Token": token, "Origin": "https://shop.example"},
            files={"file": ("receipt.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png")},
        )
        assert up.status_code == 201 and up.headers["access-control-allow-origin"] == "*"
        file = up.json()
        await v.send(
            {"type": "message", "client_id": "file-1", "body": "", "attachment": file["id"]}
        )
        await v.next("ack")
        got = await v.next("chat_message", lambda f: f["client_id"] == "file-1")
        assert got["attachment"]["filename"] == "receipt.png"
        assert (await http.get(file["url"])).content.startswith(b"\x89PNG")
        assert (await http.get(f"/chat/files/{file['id']}")).status_code == 404
        too_big = await http.post(
            "/api/chat/uploads",
            headers={"X-Chat-Token": token},
            files={"file": ("big.bin", b"0" * (5 * 1024 * 1024 + 1), "application/octet-stream")},
        )
        assert too_big.status_code == 422 and "limit" in too_big.json()["error"]["message"]
        no_token = await http.post(
            "/api/chat/uploads", files={"file": ("a.txt", b"hello", "text/plain")}
        )
        assert no_token.status_code == 401

        async def chunks():
            yield b"--x\r\nContent-Disposition: form-data; name=file; filename=a.bin\r\n\r\n"
            yield b"0" * 1000 + b"\r\n--x--\r\n"

        unsized = await http.post(
            "/api/chat/uploads",
            headers={"X-Chat-Token": token, "Content-Type": "multipart/form-data; boundary=x"},
            content=chunks(),
        )
        assert unsized.status_code == 411 and "Content-Length" in unsized.json()["error"]["message"]
        unread = (await http.get("/api/chats", headers=_auth(holder))).json()["active"][0]
        assert unread["unread"] == 1
        # a reply from the case page goes into the chat
        r = await http.post(
            f"/api/cases/{got['case_id']}/replies",
            headers=_auth(holder),
            json={"body": "確認します", "channel": "chat"},
        )
        assert r.status_code == 201, r.text
        assert (await v.next("chat_message", lambda f: f["body"] == "確認します"))[
            "from"
        ] == "agent"
        # to the other agent, then to a team's queue
        r = await http.post(
            f"/api/chats/{conv_id}/transfer",
            headers=_auth(holder),
            json={"agent_id": other.user.id},
        )
        assert r.status_code == 200 and r.json()["agent_id"] == other.user.id
        r = await http.post(
            f"/api/chats/{conv_id}/transfer", headers=_auth(holder), json={"team_id": team_id}
        )
        assert r.status_code == 403
        r = await http.post(
            f"/api/chats/{conv_id}/transfer", headers=_auth(other), json={"team_id": team_id}
        )
        assert r.status_code == 200 and r.json()["state"] == "queued"
        await v.next("chat_state", lambda f: f["state"] == "queued")
        r = await http.post(f"/api/chats/{conv_id}/close", headers=_auth(other))
        assert r.status_code == 403
        canned = await http.get("/api/canned-responses?lang=ja", headers=_auth(one))
        assert canned.status_code == 200 and canned.json() == {"items": []}


async def test_the_same_message_sent_from_two_tabs_at_once_is_stored_once(server, db, make_staff):
    staff = await make_staff("agent")
    async with agent_socket(server, _token(staff.user)) as a, visitor(server) as v:
        conv_id = await _accepted_chat(server, a, v)
        async with resumed(server, v.welcome["token"], after=2) as tab:
            await tab.next("synced")
            for n in range(4):  # under the rate limit: ten per ten seconds per conversation
                client_id = f"race-{n}"
                frame = {"type": "message", "client_id": client_id, "body": f"race {n}"}
                await asyncio.gather(v.send(frame), tab.send(frame))
                acks = [
                    await sock.next("ack", lambda f, c=client_id: f["client_id"] == c)
                    for sock in (v, tab)
                ]
                assert acks[0]["seq"] == acks[1]["seq"]
                assert sorted(x["duplicate"] for x in acks) == [False, True]
    async with db.unit_of_work() as session:
        rows = (
            await session.execute(
                select(ChatMessage.client_id, ChatMessage.seq)
                .where(ChatMessage.conversation_id == conv_id)
                .order_by(ChatMessage.seq)
            )
        ).all()
    # 1 the first message, 2 "joined", then each raced message once, with no gap
    assert [seq for _, seq in rows] == [1, 2, 3, 4, 5, 6]
    assert [c for c, _ in rows][2:] == ["race-0", "race-1", "race-2", "race-3"]
