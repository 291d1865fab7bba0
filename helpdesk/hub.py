"""The realtime hub of one app process: its sockets, and the LISTEN that feeds them.

Every process LISTENs on `events.CHANNEL` with a dedicated connection and delivers each
notification to its own sockets whose user, role or watched topics match. Processes share
nothing else, so any number of them can run behind a load balancer.

Fairness: delivery only ever puts a pre-encoded frame on a socket's bounded queue
(`put_nowait`); each socket has its own sender task. A slow or stuck browser fills only its
own queue. When a queue overflows, its backlog is dropped and replaced by one `resync`
frame (reason `overflow`): the browser reloads what it shows instead of replaying stale
events. A socket whose single send stays blocked for `send_timeout` seconds is closed.

No silent gaps: if the LISTEN connection is lost, the hub reconnects with backoff and then
sends every local socket a `resync` frame (reason `listener_reconnected`), because
notifications sent while it was away are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.engine import make_url

from helpdesk import events, presence
from helpdesk.events import CHANNEL, encode

if TYPE_CHECKING:
    from helpdesk.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Close:
    """A sender instruction: close the socket with this code and reason."""

    code: int
    reason: str


def resync_frame(reason: str) -> str:
    return encode({"type": "resync", "reason": reason})


@dataclass(eq=False)
class Connection:
    """One browser socket as the hub sees it: who it is for, and its outgoing queue."""

    user_id: int
    role: str
    jti: str
    queue_size: int = 256
    # The one team whose case events this socket may get (helpdesk/visibility.py); None: all.
    team_id: int | None = None
    topics: set[str] = field(default_factory=set)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    overflows: int = 0
    last_heard: float = 0.0  # loop time of the browser's last frame
    queue: asyncio.Queue[str | Close] = field(init=False)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)

    def offer(self, frame: str | Close) -> None:
        """Queue a frame without ever waiting; on overflow, drop the backlog for a resync."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflows += 1
            while not self.queue.empty():
                dropped = self.queue.get_nowait()
                if isinstance(dropped, Close):  # a close must not be lost with the backlog
                    frame = dropped
            self.queue.put_nowait(
                resync_frame("overflow") if not isinstance(frame, Close) else frame
            )


def asyncpg_dsn(url: str) -> str:
    """The asyncpg DSN of a SQLAlchemy URL (`postgresql+asyncpg://...`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Hub:
    """Socket registry and LISTEN loop of one process; created and closed by the app lifespan."""

    def __init__(
        self,
        database_url: str,
        *,
        queue_size: int = 256,
        check_interval: float = 5.0,
        load_event: Callable[[int], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.queue_size = queue_size
        self.check_interval = check_interval
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._load_event = load_event
        self._by_user: dict[int, set[Connection]] = defaultdict(set)
        self._by_role: dict[str, set[Connection]] = defaultdict(set)
        self._by_topic: dict[str, set[Connection]] = defaultdict(set)
        self._guests: set[Connection] = set()  # chat visitors: reached by topic only
        self._incoming: asyncio.Queue[str] = asyncio.Queue()
        self._listener: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        # asyncpg runs one query at a time per connection: the liveness check and the
        # loading of stored events take turns on the LISTEN connection.
        self._query_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0
        self.delivered = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening; an unreachable database is retried in the background, so the
        process still comes up and `/readyz` can say what is wrong."""
        try:
            await self._connect()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("hub: cannot LISTEN yet (%s); will keep trying", exc)
            self._lost.set()
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="hub-dispatch"),
            asyncio.create_task(self._watch_loop(), name="hub-watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.close(), 2)
        self._listener = None
        for conn in self.connections():
            conn.offer(Close(1012, "server restarting"))

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "helpdesk-hub"})
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(lambda _c: self._lost.set())
        self._listener = conn
        self._lost.clear()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._incoming.put_nowait(payload)

    @property
    def listening(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    async def _watch_loop(self) -> None:
        """Notice a lost LISTEN connection (closed, or silently dead) and recover from it."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.check_interval)
            if not self._lost.is_set():
                try:
                    assert self._listener is not None
                    async with self._query_lock:
                        await asyncio.wait_for(
                            self._listener.fetchval("SELECT 1"), self.check_interval
                        )
                    continue
                except (Exception, TimeoutError):
                    log.warning("hub: LISTEN connection is not answering")
            await self._reconnect()

    async def _reconnect(self) -> None:
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None
        delay = 0.1
        while True:
            try:
                await self._connect()
                break
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("hub: reconnecting LISTEN failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.reconnects += 1
        log.warning("hub: LISTEN restored; telling %d sockets to resync", len(self.connections()))
        frame = resync_frame("listener_reconnected")
        for conn in self.connections():
            conn.offer(frame)

    # -- delivery ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        """One task delivers in notification order, loading stored (large) events in line."""
        while True:
            payload = await self._incoming.get()
            try:
                envelope = json.loads(payload)
                if "ref" in envelope:
                    loaded = await self._load(int(envelope["ref"]))
                    if loaded is None:
                        continue
                    envelope = loaded
                self.deliver(envelope)
            except Exception:
                log.exception("hub: could not deliver a notification of %d bytes", len(payload))

    async def _load(self, event_id: int) -> dict[str, Any] | None:
        if self._load_event is not None:
            return await self._load_event(event_id)
        assert self._listener is not None
        async with self._query_lock:
            raw = await self._listener.fetchval(
                "SELECT payload FROM hub_events WHERE id = $1", event_id
            )
        return json.loads(raw) if isinstance(raw, str) else raw

    def deliver(self, envelope: dict[str, Any]) -> int:
        """Offer one event to every matching local socket; returns how many got it."""
        targets: set[Connection] = set()
        for uid in envelope.get("users", ()):
            targets |= self._by_user.get(uid, set())
        for role in envelope.get("roles", ()):
            targets |= self._by_role.get(role, set())
        for topic in envelope.get("topics", ()):
            targets |= self._by_topic.get(topic, set())
        team = envelope.get("team")
        if team is not None and targets:
            named = set(envelope.get("users", ()))
            targets = {c for c in targets if c.team_id in (None, team) or c.user_id in named}
        if not targets:
            return 0
        kind = envelope["type"]
        data = envelope.get("data") or {}
        if kind == "user_scope":  # the user's team changed: filter by the new one
            for conn in targets:
                conn.team_id = data.get("team_id")
            return len(targets)
        if kind == "session_revoked":
            for conn in targets:
                if data.get("all") or conn.jti == data.get("jti"):
                    conn.offer(Close(4401, "token revoked"))
            return len(targets)
        frame = encode({"type": kind, "id": envelope.get("id"), "at": envelope.get("at"), **data})
        for conn in targets:
            conn.offer(frame)
        self.delivered += len(targets)
        return len(targets)

    # -- registry ----------------------------------------------------------------------------

    def register(
        self, user_id: int, role: str, jti: str, *, team_id: int | None = None
    ) -> Connection:
        conn = Connection(user_id, role, jti, queue_size=self.queue_size, team_id=team_id)
        self._by_user[user_id].add(conn)
        self._by_role[role].add(conn)
        return conn

    def register_guest(self, topics: set[str]) -> Connection:
        """A socket with no desk user (a chat visitor), fed only through its topics."""
        conn = Connection(0, "visitor", "", queue_size=self.queue_size)
        self._guests.add(conn)
        self.watch(conn, topics)
        return conn

    def unregister(self, conn: Connection) -> bool:
        """Forget a socket; True when it was its user's last socket in this process."""
        if conn in self._guests:
            self._guests.discard(conn)
            self.unwatch(conn, set(conn.topics))
            return False
        for index, key in ((self._by_user, conn.user_id), (self._by_role, conn.role)):
            index[key].discard(conn)  # type: ignore[index]
            if not index[key]:  # type: ignore[index]
                del index[key]  # type: ignore[arg-type]
        self.unwatch(conn, set(conn.topics))
        return conn.user_id not in self._by_user

    def watch(self, conn: Connection, topics: set[str]) -> None:
        for topic in topics - conn.topics:
            self._by_topic[topic].add(conn)
        conn.topics |= topics

    def unwatch(self, conn: Connection, topics: set[str]) -> None:
        for topic in topics & conn.topics:
            self._by_topic[topic].discard(conn)
            if not self._by_topic[topic]:
                del self._by_topic[topic]
        conn.topics -= topics

    def connections(self) -> list[Connection]:
        return [c for conns in self._by_user.values() for c in conns] + list(self._guests)

    def users_online(self) -> set[int]:
        return set(self._by_user)

    def stats(self) -> dict[str, Any]:
        conns = self.connections()
        return {
            "process": self.process_id,
            "sockets": len(conns),
            "users": len(self._by_user),
            "visitors": len(self._guests),
            "listening": self.listening,
            "reconnects": self.reconnects,
            "delivered": self.delivered,
            "overflows": sum(c.overflows for c in conns),
            "at": time.time(),
        }


class PresenceSweeper:
    """Keeps this process's sockets fresh in `agent_sockets` and takes gone agents offline.

    Every `interval` seconds: heartbeat this process's sockets, then sweep. When a user's
    last local socket closes, `soon()` sweeps again just after the grace period, so
    "offline" follows promptly instead of at the next tick.
    """

    def __init__(self, db: Database, hub: Hub, *, grace_seconds: float, interval: float) -> None:
        self.db = db
        self.hub = hub
        self.grace = grace_seconds
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="presence-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def soon(self) -> None:
        task = asyncio.create_task(self._sweep_after(self.grace + 0.1))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _sweep_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.sweep()

    async def sweep(self) -> list[int]:
        try:
            async with self.db.unit_of_work() as session:
                await presence.heartbeat(session, self.hub.process_id)
                return await presence.sweep(
                    session,
                    grace_seconds=self.grace,
                    # three missed heartbeats mean the process that held the socket is gone
                    stale_seconds=max(3 * self.interval, self.grace),
                )
        except Exception:
            log.exception("presence sweep failed")
            return []

    async def _loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep()
            ticks += 1
            if ticks % 60 == 0:
                with contextlib.suppress(Exception):
                    async with self.db.unit_of_work() as session:
                        await events.purge_stored(session)
