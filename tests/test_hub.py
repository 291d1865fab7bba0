"""The realtime hub across real processes: `helpdesk serve` twice on one database, real
WebSockets, real LISTEN/NOTIFY. No timing assertions: waits are bounded, never slept."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import jwt
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from helpdesk import events, presence
from helpdesk.hub import asyncpg_dsn
from helpdesk.models import AgentSocket
from tests.conftest import serve_process

SECRET = "hub-test-secret-key-long-enough-for-hs256"
WAIT = 20.0  # upper bound for anything to arrive; a pass takes milliseconds


@pytest.fixture(scope="module")
def servers(database_url, tmp_path_factory) -> Iterator[list[str]]:
    """Two app processes on the same database, as behind a load balancer."""
    data = tmp_path_factory.mktemp("hubdata")
    env = {
        "HELPDESK_SECRET_KEY": SECRET,
        "HELPDESK_PRESENCE_GRACE_SECONDS": "1",
        "HELPDESK_WS_QUEUE_SIZE": "8",
    }
    with (
        serve_process(database_url, data, **env) as one,
        serve_process(database_url, data, **env) as two,
    ):
        yield [one, two]


def _token(user, ttl: float = 3600, **overrides) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user.id),
        "role": user.role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
        "jti": os.urandom(8).hex(),
        **overrides,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _ws(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws/agent"


class Socket:
    """A test browser tab: a real WebSocket, with helpers to wait for a frame."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.seen: list[dict] = []

    async def next(
        self, type_: str | None = None, pred=lambda f: True, within: float = WAIT
    ) -> dict:
        async def find() -> dict:
            while True:
                frame = json.loads(await self.ws.recv())
                self.seen.append(frame)
                if (type_ is None or frame["type"] == type_) and pred(frame):
                    return frame

        return await asyncio.wait_for(find(), within)

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))


@asynccontextmanager
async def agent_socket(base: str, token: str, **kwargs):
    async with connect(f"{_ws(base)}?token={token}", **kwargs) as ws:
        sock = Socket(ws)
        hello = await sock.next("hello")
        assert hello["user"]["id"]
        yield sock


async def _sockets_of(db, user_id: int, expected: int) -> None:
    """Wait (bounded) until the servers have recorded exactly `expected` open sockets."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        async with db.unit_of_work() as session:
            n = await session.scalar(
                select(func.count()).select_from(AgentSocket).where(AgentSocket.user_id == user_id)
            )
        if n == expected:
            return
        assert loop.time() < deadline, f"{n} sockets recorded, expected {expected}"
        await asyncio.sleep(0.05)


async def _publish(db, event: events.Event) -> None:
    async with db.unit_of_work() as session:
        await events.publish(session, event)


async def test_an_event_raised_in_one_process_reaches_every_tab_in_every_process(
    servers, db, make_staff
):
    agent = await make_staff("agent", extension="201")
    other = await make_staff("agent", extension="202")
    token = _token(agent.user)
    async with (
        agent_socket(servers[0], token) as tab1,
        agent_socket(servers[1], token) as tab2,
        agent_socket(servers[1], _token(other.user)) as bystander,
    ):
        async with httpx.AsyncClient(base_url=servers[0]) as http:
            h = {"Authorization": f"Bearer {_token(other.user)}"}
            r = await http.post("/api/customers", json={"name": "山田 太郎"}, headers=h)
            customer = r.json()
            r = await http.post(
                "/api/cases",
                json={
                    "customer_id": customer["id"],
                    "subject": "折り返し希望",
                    "assignee_id": agent.user.id,
                },
                headers=h,
            )
            assert r.status_code == 201, r.text
            case = r.json()
        for tab in (tab1, tab2):
            frame = await tab.next("case_updated")
            assert frame["case_id"] == case["id"]
            assert frame["assignee_id"] == agent.user.id and frame["actor_id"] == other.user.id
            assert frame["subject"] == "折り返し希望" and frame["change"] == "created"
        # The bystander is not addressed and watches nothing, so nothing came to them.
        await bystander.send({"type": "ping", "ref": "x"})
        pong = await bystander.next("pong")
        assert pong["ref"] == "x"
        assert not [f for f in bystander.seen if f["type"] == "case_updated"]


async def test_watching_a_topic_delivers_its_events_from_the_other_process(servers, db, make_staff):
    agent = await make_staff("agent")
    async with agent_socket(servers[1], _token(agent.user)) as tab:
        await tab.send({"type": "watch", "topics": ["case:4242", "queue"]})
        assert (await tab.next("watching"))["topics"] == ["case:4242", "queue"]
        await _publish(db, events.Event("case_updated", {"case_id": 4242}, topics=("case:4242",)))
        assert (await tab.next("case_updated"))["case_id"] == 4242
        await tab.send({"type": "unwatch", "topics": ["case:4242"]})
        await tab.next("watching")
        await _publish(db, events.Event("case_updated", {"case_id": 4242}, topics=("case:4242",)))
        await _publish(db, events.Event("case_updated", {"case_id": 1}, topics=("queue",)))
        assert (await tab.next("case_updated"))["case_id"] == 1  # not 4242 again


async def test_rolled_back_work_sends_nothing_and_committed_work_always_does(
    servers, db, make_staff
):
    agent = await make_staff("agent")
    users = (agent.user.id,)
    async with agent_socket(servers[0], _token(agent.user)) as tab:
        with pytest.raises(RuntimeError):
            async with db.unit_of_work() as session:
                await events.publish(
                    session, events.Event("toast", {"n": "rolled back"}, users=users)
                )
                raise RuntimeError("the work failed")
        for n in range(20):
            await _publish(db, events.Event("toast", {"n": n}, users=users))
        got = [(await tab.next("toast"))["n"] for _ in range(20)]
        assert got == list(range(20))  # every committed one, in order, and nothing else


async def test_events_larger_than_a_notify_payload_arrive_whole(servers, db, make_staff):
    agent = await make_staff("agent")
    body = "長い本文" * 20_000  # about 240 KB of UTF-8, far over NOTIFY's 8000 bytes
    async with agent_socket(servers[1], _token(agent.user)) as tab:
        await _publish(db, events.Event("toast", {"body": body}, users=(agent.user.id,)))
        await _publish(db, events.Event("toast", {"body": "small"}, users=(agent.user.id,)))
        assert (await tab.next("toast"))["body"] == body
        assert (await tab.next("toast"))["body"] == "small"


async def test_expired_revoked_and_missing_tokens_close_with_4401_and_a_reason(
    servers, db, make_staff
):
    agent = await make_staff("agent")
    for token, reason in [
        (_token(agent.user, ttl=-5), "token expired"),
        ("not-a-jwt", "invalid token"),
        (
            jwt.encode({"sub": "1"}, "another-key-entirely-long-enough", algorithm="HS256"),
            "invalid token",
        ),
    ]:
        async with connect(f"{_ws(servers[0])}?token={token}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
        assert closed.value.rcvd.code == 4401
        assert closed.value.rcvd.reason.startswith(reason)
    async with connect(_ws(servers[0])) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "authentication required")


async def test_a_token_that_expires_while_connected_closes_the_socket(servers, db, make_staff):
    agent = await make_staff("agent")
    async with agent_socket(servers[0], _token(agent.user, ttl=2)) as tab:
        with pytest.raises(ConnectionClosed) as closed:
            await tab.next("never", within=WAIT)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token expired")


async def test_logout_closes_that_tokens_sockets_in_every_process(servers, db, make_staff):
    agent = await make_staff("agent")
    token, other_token = _token(agent.user), _token(agent.user)
    async with (
        agent_socket(servers[0], token) as a,
        agent_socket(servers[1], token) as b,
        agent_socket(servers[1], other_token) as other_device,
    ):
        async with httpx.AsyncClient(base_url=servers[1]) as http:
            r = await http.post("/api/auth/logout", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
        for tab in (a, b):
            with pytest.raises(ConnectionClosed) as closed:
                await tab.next("never")
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token revoked")
        await other_device.send({"type": "ping"})
        await other_device.next("pong")  # the other device's token still works


async def test_deactivating_an_agent_closes_every_socket_of_theirs_at_once(servers, db, make_staff):
    from helpdesk import admin

    agent = await make_staff("agent")
    boss = await make_staff("admin")
    colleague = await make_staff("agent")
    async with (
        agent_socket(servers[0], _token(agent.user)) as a,
        agent_socket(servers[1], _token(agent.user)) as b,
        agent_socket(servers[1], _token(colleague.user)) as other,
    ):
        async with db.unit_of_work() as session:
            await admin.set_agent_active(session, agent.user.id, False, actor_user_id=boss.user.id)
        for tab in (a, b):
            with pytest.raises(ConnectionClosed) as closed:
                await tab.next("never")
            assert closed.value.rcvd.code == 4401
        await other.send({"type": "ping"})
        await other.next("pong")  # nobody else is cut off


async def test_bad_frames_get_a_precise_error_and_the_socket_stays_open(servers, db, make_staff):
    agent = await make_staff("agent")
    async with agent_socket(servers[0], _token(agent.user)) as tab:
        for frame, message in [
            ("{nope", "not valid JSON"),
            ("[1, 2]", 'a frame is a JSON object with a "type"'),
            (json.dumps({"type": "dance"}), "unknown message type 'dance'"),
            (json.dumps({"type": "presence", "status": "asleep"}), "status must be one of"),
            (json.dumps({"type": "watch", "topics": ["secrets"]}), "unknown topic 'secrets'"),
            (json.dumps({"type": "watch", "topics": ["presence"]}), "only supervisors"),
            (b"\xff\xfe", "frames must be UTF-8"),
        ]:
            await tab.ws.send(frame)
            error = await tab.next("error")
            assert error["message"].startswith(message), (frame, error)
        await tab.ws.send("x" * 70_000)
        with pytest.raises(ConnectionClosed) as closed:
            await tab.next("never")
        assert closed.value.rcvd.code == 1009


async def test_cookie_sockets_from_another_origin_are_refused(servers, db, make_staff):
    agent = await make_staff("agent")
    cookie = {"Cookie": f"helpdesk_session={_token(agent.user)}"}
    async with connect(
        _ws(servers[0]), additional_headers=cookie, origin="http://evil.example"
    ) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd.code == 4403
    origin = servers[0]  # the desk's own pages
    async with connect(_ws(servers[0]), additional_headers=cookie, origin=origin) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert hello["type"] == "hello" and hello["user"]["id"] == agent.user.id


async def test_presence_is_live_for_supervisors_and_goes_offline_after_the_grace_period(
    servers, db, make_staff
):
    boss = await make_staff("supervisor")
    agent = await make_staff("agent", extension="205")
    uid = agent.user.id

    def of_agent(status):
        return lambda f: f["user_id"] == uid and f["status"] == status

    async with agent_socket(servers[0], _token(boss.user)) as wall:
        async with agent_socket(servers[1], _token(agent.user)) as tab:
            await wall.next("presence", of_agent("available"))
            await tab.send({"type": "presence", "status": "away"})
            await wall.next("presence", of_agent("away"))
            await tab.next("presence", of_agent("away"))  # their own tabs hear it too
            await tab.send({"type": "presence", "status": "available"})
            await wall.next("presence", of_agent("available"))
            # On a call is busy, whatever they chose; hanging up restores their choice.
            async with db.unit_of_work() as session:
                await presence.set_on_call(session, uid, True)
            frame = await wall.next("presence", of_agent("busy"))
            assert frame["on_call"] is True and frame["chosen"] == "available"
            async with db.unit_of_work() as session:
                await presence.set_on_call(session, uid, False)
            await wall.next("presence", of_agent("available"))
            # Two tabs in two processes: closing one keeps the agent online.
            async with agent_socket(servers[0], _token(agent.user)):
                pass
        # The last tab is gone: offline once the grace period (1 s here) has passed.
        await wall.next("presence", of_agent("offline"))
        async with httpx.AsyncClient(base_url=servers[1]) as http:
            r = await http.get(
                "/api/presence", headers={"Authorization": f"Bearer {_token(boss.user)}"}
            )
        listed = {p["user_id"]: p["status"] for p in r.json()["items"]}
        assert listed[uid] == "offline"


async def test_an_agent_with_a_live_socket_in_any_process_is_never_swept(servers, db, make_staff):
    agent = await make_staff("agent")
    async with agent_socket(servers[1], _token(agent.user)):
        pass
    async with agent_socket(servers[0], _token(agent.user)):
        # The first tab is gone, the second is open in the other process: even with no
        # grace at all the agent stays online.
        async with db.unit_of_work() as session:
            swept = await presence.sweep(session, grace_seconds=0, stale_seconds=60)
        assert agent.user.id not in swept
        async with db.unit_of_work() as session:
            assert (await presence.get_presence(session, agent.user.id)).status == "available"
    await _sockets_of(db, agent.user.id, 0)
    async with db.unit_of_work() as session:
        swept = await presence.sweep(session, grace_seconds=0, stale_seconds=60)
        state = await presence.get_presence(session, agent.user.id)
    assert state.status == "offline"


def _raw_socket(base: str, token: str) -> socket.socket:
    """A browser that opens the socket and then stops reading: a bare TCP connection with
    a tiny receive buffer, after a hand-written upgrade request."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        f"GET /ws/agent?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert raw.recv(12) == b"HTTP/1.1 101"
    return raw


async def test_a_slow_socket_never_delays_a_fast_one_and_is_told_to_resync(servers, db, make_staff):
    """The server's per-socket queue is 8 frames here. The slow tab reads nothing while
    250 frames of 64 KB go out (16 MB, more than the kernel's buffers can hide)."""
    agent = await make_staff("supervisor")
    token = _token(agent.user)
    slow = _raw_socket(servers[0], token)
    try:
        async with agent_socket(servers[0], token, max_size=None) as fast:
            payload = "x" * 64_000
            for n in range(250):
                # Lockstep with the fast tab: it gets each frame while the slow one is stuck.
                event = events.Event("toast", {"n": n, "pad": payload}, users=(agent.user.id,))
                await _publish(db, event)
                assert (await fast.next("toast"))["n"] == n
            async with httpx.AsyncClient(base_url=servers[0]) as http:
                r = await http.get("/api/hub", headers={"Authorization": f"Bearer {token}"})
            assert r.json()["overflows"] >= 1

        # The slow tab, reading at last, finds a resync in its stream: its backlog was
        # dropped, not grown without bound.
        slow.settimeout(WAIT)
        stream = b""
        marker = b'{"type":"resync","reason":"overflow"}'
        while marker not in stream:
            chunk = await asyncio.to_thread(slow.recv, 1 << 20)
            assert chunk, "the server closed the slow socket before a resync"
            stream = stream[-100:] + chunk
    finally:
        slow.close()


async def test_a_lost_listen_connection_reconnects_and_tells_sockets_to_resync(
    servers, db, make_staff, database_url
):
    agent = await make_staff("agent")
    async with agent_socket(servers[1], _token(agent.user)) as tab:
        admin = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'helpdesk-hub' AND datname = current_database()"
            )
        finally:
            await admin.close()
        assert killed >= 2  # one per app process (and the in-process test app, if started)
        frame = await tab.next("resync")
        assert frame["reason"] == "listener_reconnected"
        await _publish(db, events.Event("toast", {"n": "after"}, users=(agent.user.id,)))
        assert (await tab.next("toast"))["n"] == "after"


async def test_serve_with_worker_processes_delivers_each_sockets_events(
    database_url, db, make_staff, tmp_path
):
    """`helpdesk serve --workers 2`: whichever worker accepted a socket, its events reach it
    (the worker processes are spawned, migrate nothing and find the database by env)."""
    env = {"HELPDESK_SECRET_KEY": SECRET, "HELPDESK_WORKERS": "2"}
    with serve_process(database_url, tmp_path, **env) as base:
        agents = [await make_staff("agent", extension=str(300 + i)) for i in range(6)]
        async with contextlib.AsyncExitStack() as stack:
            tabs = [
                await stack.enter_async_context(agent_socket(base, _token(a.user))) for a in agents
            ]
            for a in agents:
                await _publish(
                    db, events.Event("ping_test", {"for": a.user.id}, users=(a.user.id,))
                )
            for a, tab in zip(agents, tabs, strict=True):
                frame = await tab.next("ping_test")
                assert frame["for"] == a.user.id


async def test_a_supervisors_socket_makes_them_away_and_an_agents_available(
    servers, db, make_staff
):
    """A wall board signed in as a supervisor must not start taking chat offers."""
    boss = await make_staff("supervisor")
    agent = await make_staff("agent")
    for staff, expected in ((boss, "away"), (agent, "available")):
        async with connect(f"{_ws(servers[0])}?token={_token(staff.user)}") as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert hello["type"] == "hello"
            assert hello["presence"]["status"] == expected, staff.user.role
    async with agent_socket(servers[1], _token(boss.user)) as tab:
        await tab.send({"type": "presence", "status": "available"})  # they may choose to
        frame = await tab.next("presence", lambda f: f["user_id"] == boss.user.id)
        assert frame["status"] == "available"
