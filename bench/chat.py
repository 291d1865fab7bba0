"""Benchmark: live chat delivery, customer <-> agent over real sockets (issue 6).

    .venv/bin/python bench/chat.py [--visitors 2000] [--rate 500] [--seconds 20]
                                   [--warmup 5] [--processes 1] [--clients 2] [--quick]
                                   [--rate 100,250,500] [--processes 1,2] [--py-spy DIR]

`--quick` is 200 visitors at 100 messages/s for 5 s (about a minute); the default, 2,000
visitors at 500 messages/s, takes several minutes, most of it setting up the chats.

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server), migrates it, bulk-inserts the agents (with
bench/fanout.py's `create_staff`: one shared argon2 hash, a JWT each) and gives each agent
`agent_presence.chat_capacity` = --capacity (default 10; --agents defaults to 10 % more than
the chats need, 220 for 2,000, as a contact center keeps spare capacity, so that a lapsed
offer or a lost agent socket does not leave chats queued for good). Then, for each process
count P in --processes (after the first, the previous configuration's chats are closed):

  1. starts P real `helpdesk serve` processes (uvicorn) on the one database and reads their
     VmRSS idle and after one warm-up agent socket's whole life (bench/fanout.py's warm-up);
  2. --clients separate client processes open one /ws/agent?token=JWT socket per agent,
     round-robin over the P processes; an agent client accepts every `chat_offered` at once
     with a `chat_accept` frame, as an agent clicking "accept" would;
  3. the clients open one /ws/chat socket per visitor (bounded concurrency, round-robin over
     the processes): `hello` (a distinct name and browser id) -> `welcome`, then the first
     message (-> `ack`), which opens the chat case and queues the chat; the router offers it,
     the agent client accepts it, and the visitor sees `chat_state` active. The setup figures
     (sockets/s, first message -> active, offers and accepts per second) are routing figures.
     Setting up stops after --stall s without progress (or --setup-timeout): the load then
     runs over the chats that are active, and the report says so;
  4. for each rate in --rate, in turn: --rate messages/s in total for --warmup s (not
     measured) then --seconds s, alternately customer -> agent (visitor `message` with a client_id) and agent ->
     customer (agent `chat_send`), each to the next conversation of a shuffled round-robin,
     so every conversation carries the same load and stays far under the visitor limit
     (helpdesk.chat.MESSAGES_PER_10S per 10 s). The visitors answer as the widget does: a
     `pong` for each `ping`, and an `ack` of the highest seq 200 ms after messages arrive
     (--no-visitor-acks turns that off); the agents answer `ping` with `pong` and send no
     `chat_read`;
  5. waits until every message has reached its receiver (bounded), then compares.

With --py-spy DIR (py-spy on PATH) each server is sampled over each measured window into
DIR as collapsed stacks. ERROR and WARNING lines of the servers' logs are summarized at the
end (the logs themselves are removed with the temp dir).

Latency: every message's client_id is `m<N>` (its body says so too), unique over the run.
*Delivery* is from `time.time()` just before the sender's `send()` to `time.time()` when the
receiver's socket handed over the `chat_message` frame with that client_id: for customer ->
agent the agent's socket, for agent -> customer the visitor's. The sender and the receiver
of a conversation are often in different client processes (the router, not the bench,
decides which agent holds which chat); they are on one machine and read one clock
(CLOCK_REALTIME), so the difference has no clock skew in it. *Ack* is from the same send to
the sender's own receipt of its `ack` (visitor) or `chat_ack` (agent): the server's answer
after the message's transaction committed.

A message is *lost* when it was sent (no error came back) but never reached its receiver,
*duplicated* when the receiver got its client_id twice, *refused* when the server answered
with an error. CPU is sampled for the servers, the client processes, this process and
PostgreSQL over the setup and the measured window, so a CPU-bound client (which inflates
the figures) is reported, not hidden. Nothing in the checkout is touched; everything is
removed at exit.

The server allows 20 new chats per client address a minute (helpdesk.web.chat, `hellos`):
each visitor socket sends its own `X-Forwarded-For` address (uvicorn trusts it from
127.0.0.1, as it would from a reverse proxy), so the 2,000 visitors are 2,000 addresses,
as they would be in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
import psutil

from helpdesk.chat import MESSAGES_PER_10S
from helpdesk.db import Database

AIM_P99_MS = 20.0
DRAIN_TIMEOUT = 20.0
ACK_DELAY = 0.2  # the widget acks the highest seq 200 ms after messages arrive
QUICK = {"visitors": 200, "rate": "100", "seconds": 5.0, "warmup": 2.0}


# -- the client process: holds visitor and agent sockets, sends on schedule -----------------


@dataclass(eq=False)
class AgentSock:
    index: int
    ws: Any = None
    user_id: int = 0
    convs: set[int] = field(default_factory=set)
    closed: bool = False


@dataclass(eq=False)
class VisitorSock:
    index: int
    ws: Any = None
    conv: int = 0
    t_start: float = 0.0  # before connect
    t_welcome: float = 0.0
    t_first: float = 0.0  # first message sent
    t_first_ack: float = 0.0
    t_active: float = 0.0  # chat_state active received
    max_seq: int = 0
    acked_seq: int = 0
    ack_pending: bool = False
    ended: str = ""  # chat_state closed or abandoned
    closed: bool = False  # the socket closed


class ChatClient:
    """One process holding visitor and agent sockets; driven over a pipe by the benchmark."""

    def __init__(self, pipe: Pipe, deflate: bool, visitor_acks: bool) -> None:
        self.pipe = pipe
        self.deflate = deflate
        self.visitor_acks = visitor_acks
        self.agents: list[AgentSock] = []
        self.visitors: list[VisitorSock] = []
        self.agent_of: dict[int, AgentSock] = {}  # conversation -> the agent who accepted it
        self.visitor_of: dict[int, VisitorSock] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.closing = False
        # setup
        self.offers: list[float] = []
        self.accepts: list[float] = []  # chat_accepted received
        self.accept_errors = 0
        self.withdrawn: Counter[str] = Counter()
        # measured messages, by number
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}
        self.received: dict[int, tuple[float, int]] = {}  # n -> (time, conversation)
        self.duplicates = 0
        self.dup_acks = 0
        self.refused: Counter[str] = Counter()
        self.lags_ms: list[tuple[int, float]] = []  # (number, how late it was sent)
        self.run_task: asyncio.Task[None] | None = None
        # everything else
        self.frames: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.visitor_acks_sent = 0
        self.failed = 0
        self.first_error = ""

    async def main(self) -> None:
        while True:
            cmd, arg = await asyncio.to_thread(self.pipe.recv)
            if cmd == "agents":
                self.pipe.send(await self.open_agents(*arg))
            elif cmd == "visitors":
                self.pipe.send(await self.open_visitors(*arg))
            elif cmd == "status":
                self.pipe.send(self.status())
            elif cmd == "assign":
                # Like the panel after a resync (it reloads its lists): who holds which chat,
                # from the database, for accept replies the server dropped on overflow.
                mine = {a.user_id: a for a in self.agents if a.user_id}
                added = 0
                for conv, user_id in arg:
                    a = mine.get(user_id)
                    if a is not None and conv not in self.agent_of:
                        self.agent_of[conv] = a
                        a.convs.add(conv)
                        added += 1
                self.pipe.send(added)
            elif cmd == "map":
                self.pipe.send(
                    {
                        "agent": sorted(c for c, a in self.agent_of.items() if not a.closed),
                        "visitor": sorted(
                            c
                            for c, v in self.visitor_of.items()
                            if v.t_active and not v.ended and not v.closed
                        ),
                        "setup": [
                            (v.t_start, v.t_welcome, v.t_first, v.t_first_ack, v.t_active)
                            for v in self.visitors
                            if v.conv and v.t_active
                        ],
                        "not_active": sum(1 for v in self.visitors if v.conv and not v.t_active),
                        "offers": self.offers,
                        "accepts": self.accepts,
                    }
                )
            elif cmd == "run":
                self.run_task = asyncio.create_task(self.run(arg))
                self.pipe.send("scheduled")
            elif cmd == "count":
                self.pipe.send((len(self.sent), len(self.received), len(self.acked)))
            elif cmd == "collect":
                if self.run_task is not None:
                    await self.run_task
                self.pipe.send(self.collect())
            elif cmd == "close":
                await self.close_all()
                self.pipe.send("closed")
                return

    def status(self) -> dict[str, Any]:
        return {
            "visitors": sum(1 for v in self.visitors if v.conv),
            "active": sum(1 for v in self.visitors if v.t_active),
            "ended": dict(Counter(v.ended for v in self.visitors if v.ended)),
            "offers": len(self.offers),
            "accepted": len(self.accepts),
            "accept_errors": self.accept_errors,
            "withdrawn": dict(self.withdrawn),
            "closes": dict(self.closes),
            "failed": self.failed,
            "first_error": self.first_error,
        }

    def collect(self) -> dict[str, Any]:
        """Everything recorded since the last collect (then forgotten here)."""
        out = {
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "duplicates": self.duplicates,
            "dup_acks": self.dup_acks,
            "refused": dict(self.refused),
            "lags_ms": self.lags_ms,
            "frames": dict(self.frames),
            "errors": dict(self.errors),
            "closes": dict(self.closes),
            "visitor_acks_sent": self.visitor_acks_sent,
        }
        self.sent, self.acked, self.received = {}, {}, {}
        self.duplicates = self.dup_acks = self.visitor_acks_sent = 0
        self.lags_ms = []
        self.refused, self.frames, self.errors, self.closes = (Counter() for _ in range(4))
        return out

    def _fail(self, exc: BaseException) -> None:
        self.failed += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"

    def _closed(self, who: str, exc: Any) -> None:
        if not self.closing:
            rcvd = exc.rcvd
            self.closes[f"{who} {rcvd.code} {rcvd.reason}" if rcvd else f"{who} 1006"] += 1

    # -- agents --------------------------------------------------------------------------

    async def open_agents(self, targets: list[tuple[str, str, int]], concurrency: int):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        sem = asyncio.Semaphore(concurrency)
        ready: list[asyncio.Future[None]] = []
        for url, token, index in targets:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ready.append(fut)
            sock = AgentSock(index)
            self.agents.append(sock)
            self.tasks.append(asyncio.create_task(self.agent_socket(sock, url, token, sem, fut)))
        await asyncio.gather(*ready)
        return {
            "opened": sum(1 for a in self.agents if a.user_id),
            "failed": self.failed,
            "first_error": self.first_error,
            "seconds": time.perf_counter() - started,
        }

    async def agent_socket(
        self, a: AgentSock, url: str, token: str, sem: asyncio.Semaphore, ready: asyncio.Future
    ) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async with sem:
                ws, hello = await fanout.open_agent_socket(url, token, deflate=self.deflate)
            a.ws, a.user_id = ws, hello["user"]["id"]
        except Exception as exc:
            self._fail(exc)
            ready.set_result(None)
            return
        ready.set_result(None)
        try:
            async for message in ws:
                now = time.time()
                await self.on_agent_frame(a, json.loads(message), now)
        except ConnectionClosed as exc:
            self._closed("agent", exc)
        finally:
            a.closed = True

    async def on_agent_frame(self, a: AgentSock, f: dict[str, Any], now: float) -> None:
        kind = f.get("type")
        if kind == "chat_message":
            cid = f.get("client_id") or ""
            if f.get("from") == "visitor" and cid.startswith("m"):
                self._receipt(int(cid[1:]), now, f.get("conversation", 0))
            else:
                self.frames[f"agent chat_message from {f.get('from')}"] += 1
        elif kind == "chat_ack":
            cid = f.get("client_id") or ""
            if cid.startswith("m"):
                self._ack(int(cid[1:]), now)
        elif kind == "chat_offered":
            self.offers.append(now)
            conv = f["conversation"]["id"]
            await a.ws.send(json.dumps({"type": "chat_accept", "conversation": conv}))
        elif kind == "chat_accepted":
            conv = f["conversation"]["id"]
            self.accepts.append(now)
            self.agent_of[conv] = a
            a.convs.add(conv)
        elif kind == "chat_offer_withdrawn":
            self.withdrawn[str(f.get("reason"))] += 1
        elif kind == "ping":
            await a.ws.send('{"type":"pong"}')
        elif kind == "error":
            if f.get("ref") == "chat_accept":
                self.accept_errors += 1
            elif f.get("ref") == "chat_send":
                self.refused[f"agent: {f.get('message', '')[:80]}"] += 1
            self.errors[f"agent {f.get('ref')}: {str(f.get('message'))[:80]}"] += 1
        else:
            self.frames[f"agent {kind}"] += 1

    # -- visitors ------------------------------------------------------------------------

    async def open_visitors(self, targets: list[tuple[str, int, str]], concurrency: int):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        sem = asyncio.Semaphore(concurrency)
        ready: list[asyncio.Future[None]] = []
        for url, index, prefix in targets:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ready.append(fut)
            v = VisitorSock(index)
            self.visitors.append(v)
            self.tasks.append(asyncio.create_task(self.visitor_socket(v, url, prefix, sem, fut)))
        await asyncio.gather(*ready)
        return {
            "opened": sum(1 for v in self.visitors if v.conv),
            "failed": self.failed,
            "first_error": self.first_error,
            "seconds": time.perf_counter() - started,
        }

    async def visitor_socket(
        self, v: VisitorSock, url: str, prefix: str, sem: asyncio.Semaphore, ready: asyncio.Future
    ) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        i = v.index
        address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        first_id = f"first-{prefix}-{i}"
        try:
            async with sem:
                v.t_start = time.time()
                ws = await connect(
                    url,
                    additional_headers={"X-Forwarded-For": address},
                    compression="deflate" if self.deflate else None,
                    ping_interval=None,
                    open_timeout=60,
                    max_size=None,
                )
                v.ws = ws
                hello = {
                    "type": "hello",
                    "visitor": {"name": f"Visitor {prefix}-{i}", "id": f"bench-{prefix}-{i}"},
                    "page": "https://shop.example/help",
                }
                await ws.send(json.dumps(hello))
                while True:
                    f = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if f.get("type") == "welcome":
                        break
                    if f.get("type") in ("offline", "error"):
                        raise RuntimeError(f"hello answered with {f!r:.200}")
                v.t_welcome = time.time()
                v.conv = f["conversation"]
                self.visitor_of[v.conv] = v
                v.t_first = time.time()
                first = {"type": "message", "client_id": first_id, "body": f"Hello, I am {i}"}
                await ws.send(json.dumps(first))
                while not v.t_first_ack:
                    f = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    now = time.time()
                    if f.get("type") == "ack" and f.get("client_id") == first_id:
                        v.t_first_ack = now
                    elif f.get("type") == "error":
                        raise RuntimeError(f"first message answered with {f!r:.200}")
                    else:
                        await self.on_visitor_frame(v, f, now)
        except Exception as exc:
            self._fail(exc)
            v.conv = 0
            ready.set_result(None)
            return
        ready.set_result(None)
        try:
            async for message in ws:
                now = time.time()
                await self.on_visitor_frame(v, json.loads(message), now)
        except ConnectionClosed as exc:
            self._closed("visitor", exc)
        finally:
            v.closed = True

    async def on_visitor_frame(self, v: VisitorSock, f: dict[str, Any], now: float) -> None:
        kind = f.get("type")
        if kind == "chat_message":
            cid = f.get("client_id") or ""
            if f.get("from") == "agent" and cid.startswith("m"):
                self._receipt(int(cid[1:]), now, f.get("conversation", 0))
            else:
                self.frames[f"visitor chat_message from {f.get('from')}"] += 1
            seq = f.get("seq") or 0
            if seq > v.max_seq:
                v.max_seq = seq
                if self.visitor_acks and not v.ack_pending:
                    v.ack_pending = True
                    asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack, v)
        elif kind == "ack":
            cid = f.get("client_id") or ""
            if cid.startswith("m"):
                self._ack(int(cid[1:]), now)
        elif kind == "chat_state":
            if f.get("state") == "active" and not v.t_active:
                v.t_active = now
            elif f.get("state") in ("closed", "abandoned"):
                v.ended = str(f.get("state"))
            self.frames[f"visitor chat_state {f.get('state')}"] += 1
        elif kind == "ping":
            await v.ws.send('{"type":"pong"}')
        elif kind == "error":
            ref = str(f.get("ref") or "")
            if ref.startswith("m"):
                self.refused[f"visitor {f.get('code')}: {str(f.get('message'))[:80]}"] += 1
            self.errors[f"visitor {f.get('code')}: {str(f.get('message'))[:80]}"] += 1
        else:
            self.frames[f"visitor {kind}"] += 1

    def _send_ack(self, v: VisitorSock) -> None:
        v.ack_pending = False
        if v.max_seq > v.acked_seq and not self.closing:
            v.acked_seq = v.max_seq
            self.visitor_acks_sent += 1
            task = asyncio.ensure_future(v.ws.send(json.dumps({"type": "ack", "seq": v.max_seq})))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- measured messages ---------------------------------------------------------------

    def _receipt(self, n: int, now: float, conv: int) -> None:
        if n in self.received:
            self.duplicates += 1
        else:
            self.received[n] = (now, conv)

    def _ack(self, n: int, now: float) -> None:
        if n in self.acked:
            self.dup_acks += 1
        else:
            self.acked[n] = now

    async def run(self, schedule: list[tuple[int, float, str, int]]) -> None:
        """Send each (number, due time.time(), 'v' or 'a', conversation) when it is due."""
        for n, due, kind, conv in schedule:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            body = f"bench message m{n}"
            if kind == "v":
                ws = self.visitor_of[conv].ws
                frame = {"type": "message", "client_id": f"m{n}", "body": body}
            else:
                ws = self.agent_of[conv].ws
                frame = {"type": "chat_send", "conversation": conv, "client_id": f"m{n}"}
                frame["body"] = body
            raw = json.dumps(frame)
            now = time.time()
            self.lags_ms.append((n, (now - due) * 1e3))
            try:
                await ws.send(raw)
            except Exception as exc:
                self.refused[f"send failed: {type(exc).__name__}"] += 1
                continue
            self.sent[n] = now

    async def close_all(self) -> None:
        self.closing = True
        sem = asyncio.Semaphore(100)

        async def close(ws: Any) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 10)

        socks = [s.ws for s in (*self.visitors, *self.agents) if s.ws is not None]
        await asyncio.gather(*(close(ws) for ws in socks))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def chat_client_process(pipe: Pipe, sockets: int, deflate: bool, visitor_acks: bool) -> None:
    fanout.raise_nofile(sockets + 1024)
    fanout.run_async(ChatClient(pipe, deflate, visitor_acks).main())


async def ask_each(pipes: list[Pipe], messages: list[Any], wait: float = 900) -> list[Any]:
    """Send each client its own command, then wait for every answer."""

    def go() -> list[Any]:
        for p, m in zip(pipes, messages, strict=True):
            p.send(m)
        answers = []
        for p in pipes:
            if not p.poll(wait):
                raise TimeoutError(f"client did not answer within {wait}s")
            answers.append(p.recv())
        return answers

    return await asyncio.to_thread(go)


# -- the database ------------------------------------------------------------------------------


async def set_capacity(url: str, capacity: int) -> None:
    """Every agent `available` with room for `capacity` chats (rows exist before any socket)."""
    conn = await fanout.raw_connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO agent_presence (user_id, status, chat_capacity)
            SELECT id, 'available', $1 FROM users WHERE role = 'agent'
            ON CONFLICT (user_id) DO UPDATE SET status = 'available', chat_capacity = $1
            """,
            capacity,
        )
    finally:
        await conn.close()


async def chat_states(url: str) -> dict[str, int]:
    conn = await fanout.raw_connect(url)
    try:
        rows = await conn.fetch("SELECT state, count(*) FROM chat_conversations GROUP BY 1")
        return {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def holders(url: str) -> list[tuple[int, int]]:
    conn = await fanout.raw_connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, agent_id FROM chat_conversations WHERE state = 'active' ORDER BY id"
        )
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def reset_chats(url: str) -> int:
    """Between configurations: end the last one's chats (all servers are stopped)."""
    conn = await fanout.raw_connect(url)
    try:
        n = await conn.fetchval(
            """
            WITH c AS (UPDATE chat_conversations SET state = 'closed', closed_at = now(),
                       closed_by = 'system', offered_to = NULL, offer_expires_at = NULL
                       WHERE state NOT IN ('closed', 'abandoned') RETURNING 1)
            SELECT count(*) FROM c
            """
        )
        await conn.execute("UPDATE agent_presence SET active_chats = 0, status = 'available'")
        await conn.execute("DELETE FROM agent_sockets")
        return int(n)
    finally:
        await conn.close()


# -- one configuration -----------------------------------------------------------------------


@dataclass
class Phase:
    """One rate's measured window over the configuration's chats."""

    rate: float
    sent: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)
    wrong: int = 0
    duplicates: int = 0
    dup_acks: int = 0
    warm_sent: int = 0
    warm_lost: int = 0
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    ack_ms: dict[str, list[float]] = field(default_factory=dict)
    lags_ms: list[float] = field(default_factory=list)
    achieved_rate: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_servers: list[float] = field(default_factory=list)
    cpu_clients: list[float] = field(default_factory=list)
    rss_after: list[float] = field(default_factory=list)
    hub: list[dict[str, Any]] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    closes: dict[str, int] = field(default_factory=dict)
    visitor_acks_sent: int = 0
    load: tuple[float, float] = (0.0, 0.0)
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    processes: int
    visitors_per_process: list[int]
    agents_per_process: list[int]
    agents_open_s: float = 0.0
    visitors_open_s: float = 0.0  # hello -> first ack of every visitor
    all_active_s: float = 0.0  # from the first hello to the last chat active
    hello_ms: list[float] = field(default_factory=list)
    first_ack_ms: list[float] = field(default_factory=list)
    queue_to_active_s: list[float] = field(default_factory=list)
    offers: int = 0
    accepts: int = 0
    offer_rate: float = 0.0
    accept_rate: float = 0.0
    accept_errors: int = 0
    withdrawn: dict[str, int] = field(default_factory=dict)
    setup_ends: dict[str, int] = field(default_factory=dict)  # chats ended, sockets closed
    setup_frames: dict[str, int] = field(default_factory=dict)
    setup_problems: list[str] = field(default_factory=list)
    chats: int = 0  # active chats the load runs over
    accepts_missing: int = 0  # chats whose chat_accepted reply never reached the agent
    states_after_setup: dict[str, int] = field(default_factory=dict)
    setup_cpu: dict[str, float] = field(default_factory=dict)
    setup_cpu_servers: list[float] = field(default_factory=list)
    rss_idle: list[float] = field(default_factory=list)
    rss_warm: list[float] = field(default_factory=list)
    rss_agents: list[float] = field(default_factory=list)
    rss_open: list[float] = field(default_factory=list)
    hwm: list[float] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    server_log: list[str] = field(default_factory=list)


class Cpu:
    def __init__(self, servers: list[fanout.Server], clients: list[Any], postmaster: int | None):
        self.server_trees = [fanout.process_tree(s.proc.pid) for s in servers]
        self.client_pids = [c.pid for c in clients if c.pid]
        self.postmaster = postmaster

    def snapshot(self) -> tuple[float, dict[int, float]]:
        pids = [p for t in self.server_trees for p in t] + self.client_pids + [os.getpid()]
        times = fanout.cpu_seconds(pids + fanout.postgres_pids(self.postmaster))
        machine = psutil.cpu_times()
        times[-1] = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
        return time.time(), times

    def shares(self, a: tuple[float, dict[int, float]], b: tuple[float, dict[int, float]]):  # type: ignore[no-untyped-def]
        wall = max(b[0] - a[0], 1e-9)

        def share(pids: set[int]) -> float:
            before = {p: t for p, t in a[1].items() if p in pids}
            after = {p: t for p, t in b[1].items() if p in pids}
            return 100 * fanout.cpu_delta(before, after) / wall

        servers = [share(set(t)) for t in self.server_trees]
        clients = [share({p}) for p in self.client_pids]
        known = {p for t in self.server_trees for p in t} | set(self.client_pids) | {os.getpid()}
        known.add(-1)
        total = {
            "servers": sum(servers),
            "clients": sum(clients),
            "bench": share({os.getpid()}),
        }
        if self.postmaster is not None:
            total["postgres"] = share(set(b[1]) - known)
        total["machine"] = share({-1})  # every process on the box, this benchmark's or not
        return total, servers, clients


def merge_counts(target: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        target[k] = target.get(k, 0) + v


def server_log_problems(servers: list[fanout.Server]) -> list[str]:
    """ERROR/WARNING lines and exception types in the servers' logs (the logs are deleted)."""
    found: Counter[str] = Counter()
    for i, s in enumerate(servers):
        with contextlib.suppress(OSError):
            for line in s.log.read_text(errors="replace").splitlines():
                if " ERROR " in line or " WARNING " in line:
                    text = line.split(" ", 2)[-1]
                    if "HELPDESK_SMTP_URL" not in text:
                        found[f"server {i + 1}: {text[:160]}"] += 1
                elif (
                    line
                    and not line[0].isspace()
                    and line.split(":")[0].endswith(("Error", "Exception"))
                ):
                    found[f"server {i + 1}: {line[:160]}"] += 1
    return [f"{k} (x{v})" for k, v in found.most_common(12)]


async def run_config(
    args: argparse.Namespace,
    url: str,
    work_dir: Path,
    agents: list[fanout.Staff],
    supervisor: fanout.Staff,
    processes: int,
    postmaster: int | None,
    round_no: int,
) -> Result:
    print(f"\n== {processes} process(es): starting helpdesk serve ...", flush=True)
    if round_no:
        closed = await reset_chats(url)
        print(f"   closed the previous configuration's {closed} chats", flush=True)
    servers = [
        fanout.start_server(url, work_dir / f"p{processes}-server{i}") for i in range(processes)
    ]
    clients: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Pipe] = []
    db = Database.from_url(url, pool_size=2)
    nv, na, nc = args.visitors, len(agents), args.clients
    result = Result(
        processes,
        [len(range(p, nv, processes)) for p in range(processes)],
        [len(range(p, na, processes)) for p in range(processes)],
    )
    try:
        await asyncio.gather(*(asyncio.to_thread(fanout.wait_ready, s) for s in servers))
        await asyncio.sleep(1.0)
        result.rss_idle = [s.rss_mb() for s in servers]
        for s in servers:
            await fanout.warm_up_server(s, db, supervisor)
        result.rss_warm = [s.rss_mb() for s in servers]

        ctx = multiprocessing.get_context("spawn")
        for c in range(nc):
            parent_end, child_end = ctx.Pipe()
            sockets = len(range(c, nv, nc)) + len(range(c, na, nc))
            proc = ctx.Process(
                target=chat_client_process,
                args=(child_end, sockets, not args.no_deflate, not args.no_visitor_acks),
                daemon=True,
            )
            proc.start()
            clients.append(proc)
            pipes.append(parent_end)
        cpu = Cpu(servers, clients, postmaster)
        agent_ws = [s.ws for s in servers]
        chat_ws = [s.base.replace("http://", "ws://") + "/ws/chat" for s in servers]

        # -- agents
        print(f"   opening {na} agent sockets ...", flush=True)
        targets = [(agent_ws[k % processes], a.token, k) for k, a in enumerate(agents)]
        opened = await ask_each(
            pipes, [("agents", (targets[c::nc], args.connect_concurrency)) for c in range(nc)]
        )
        if sum(o["failed"] for o in opened):
            errors = "; ".join(o["first_error"] for o in opened if o["first_error"])
            raise RuntimeError(f"agent sockets failed to open: {errors}")
        result.agents_open_s = max(o["seconds"] for o in opened)
        await asyncio.sleep(1.0)
        result.rss_agents = [s.rss_mb() for s in servers]

        # -- visitors: hello, first message, routed, accepted
        print(
            f"   opening {nv} visitor sockets (hello + first message), routing and accepting ...",
            flush=True,
        )
        prefix = f"p{processes}r{round_no}"
        vt = [(chat_ws[j % processes], j, prefix) for j in range(nv)]
        cpu0 = cpu.snapshot()
        t_setup = time.time()
        opened = await ask_each(
            pipes, [("visitors", (vt[c::nc], args.connect_concurrency)) for c in range(nc)]
        )
        failed = sum(o["failed"] for o in opened)
        if failed:
            errors = "; ".join(o["first_error"] for o in opened if o["first_error"])
            raise RuntimeError(f"{failed} visitor sockets failed: {errors}")
        result.visitors_open_s = max(o["seconds"] for o in opened)
        print(
            f"   {nv} visitors said hello and queued in {result.visitors_open_s:.1f} s",
            flush=True,
        )
        deadline = time.monotonic() + args.setup_timeout
        last_print = last_change = time.monotonic()
        progress: tuple[int, ...] = ()
        while True:
            status = await fanout.ask_async(pipes, ("status", None))
            active = sum(s["active"] for s in status)
            accepted = sum(s["accepted"] for s in status)
            if active >= nv:
                break
            now_progress = (active, accepted, sum(s["offers"] for s in status))
            if now_progress != progress:
                progress, last_change = now_progress, time.monotonic()
            stalled = time.monotonic() - last_change > args.stall
            if stalled or time.monotonic() > deadline:
                why = f"no progress for {args.stall:g} s" if stalled else "setup timeout"
                result.setup_problems.append(
                    f"setup stopped ({why}) with {active} of {nv} chats active, {accepted} "
                    f"accepts, {now_progress[2]} offers; measuring the active chats only"
                )
                break
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                print(
                    f"   ... {time.time() - t_setup:.0f} s: {now_progress[2]} offers, "
                    f"{accepted} accepted, {active} visitors see an agent",
                    flush=True,
                )
            await asyncio.sleep(0.25)
        cpu1 = cpu.snapshot()
        result.setup_cpu, result.setup_cpu_servers, _ = cpu.shares(cpu0, cpu1)
        result.accept_errors = sum(s["accept_errors"] for s in status)
        for s in status:
            merge_counts(result.withdrawn, s["withdrawn"])
            merge_counts(result.setup_ends, {f"ended {k}": v for k, v in s["ended"].items()})
        result.states_after_setup = await chat_states(url)
        result.accepts_missing = sum(await fanout.ask_async(pipes, ("assign", await holders(url))))

        maps = await fanout.ask_async(pipes, ("map", None))
        setup = [row for m in maps for row in m["setup"]]
        if not setup:
            raise RuntimeError(f"no chat became active: {status}")
        result.hello_ms = [(w - s) * 1e3 for s, w, _f, _fa, _a in setup]
        result.first_ack_ms = [(fa - f) * 1e3 for _s, _w, f, fa, _a in setup]
        result.queue_to_active_s = [a - f for _s, _w, f, _fa, a in setup]
        result.all_active_s = max(a for *_x, a in setup) - min(s for s, *_x in setup)
        offers = sorted(t for m in maps for t in m["offers"])
        accepts = sorted(t for m in maps for t in m["accepts"])
        result.offers, result.accepts = len(offers), len(accepts)
        if len(offers) > 1:
            result.offer_rate = (len(offers) - 1) / max(offers[-1] - offers[0], 1e-9)
        if len(accepts) > 1:
            result.accept_rate = (len(accepts) - 1) / max(accepts[-1] - accepts[0], 1e-9)
        print(
            f"   {len(setup)} chats active {result.all_active_s:.1f} s after the first hello; "
            f"{result.offers} offers ({result.offer_rate:.0f}/s), {result.accepts} accepts",
            flush=True,
        )
        await asyncio.sleep(args.settle)
        result.rss_open = [s.rss_mb() for s in servers]
        for c in await fanout.ask_async(pipes, ("collect", None)):
            merge_counts(result.setup_frames, c["frames"])
            merge_counts(result.setup_ends, {f"closed {k}": v for k, v in c["closes"].items()})

        agent_client = {conv: c for c, m in enumerate(maps) for conv in m["agent"]}
        visitor_client = {conv: c for c, m in enumerate(maps) for conv in m["visitor"]}
        convs = sorted(c for c in visitor_client if c in agent_client)
        if len(convs) < nv:
            result.setup_problems.append(
                f"{nv - len(convs)} of {nv} chats are not active with both sockets open: the "
                f"load runs over the other {len(convs)}"
            )
        result.chats = len(convs)
        rng = random.Random(args.seed + processes)
        base = 0
        for k, rate in enumerate(args.rate):
            phase = Phase(rate)
            await measure(
                args, phase, pipes, servers, supervisor, cpu, convs, visitor_client,
                agent_client, rng, base, f"p{processes}-{k + 1}",
            )  # fmt: skip
            result.phases.append(phase)
            base += 10_000_000
        result.hwm = [s.hwm_mb() for s in servers]
        return result
    finally:
        if pipes:
            with contextlib.suppress(Exception):
                await fanout.ask_async(pipes, ("close", None), wait=120)
        for c in clients:
            c.join(timeout=10)
            if c.is_alive():
                c.kill()
        await db.dispose()
        for s in servers:
            fanout.stop_server(s)
        result.server_log = server_log_problems(servers)


async def measure(
    args: argparse.Namespace,
    phase: Phase,
    pipes: list[Pipe],
    servers: list[fanout.Server],
    supervisor: fanout.Staff,
    cpu: Cpu,
    convs: list[int],
    visitor_client: dict[int, int],
    agent_client: dict[int, int],
    rng: random.Random,
    base: int,
    label: str,
) -> None:
    """One rate: warmup then the measured window, messages numbered from `base`."""
    rate = phase.rate
    order_v, order_a = convs[:], convs[:]
    rng.shuffle(order_v)
    rng.shuffle(order_a)
    warm_n = round(rate * args.warmup)
    total = warm_n + round(rate * args.seconds)
    t0 = time.time() + 1.0
    per_client: list[list[tuple[int, float, str, int]]] = [[] for _ in pipes]
    plan: dict[int, tuple[str, int]] = {}
    for i in range(total):
        kind = "v" if i % 2 == 0 else "a"
        order = order_v if kind == "v" else order_a
        conv = order[(i // 2) % len(order)]
        owner = visitor_client[conv] if kind == "v" else agent_client[conv]
        per_client[owner].append((base + i, t0 + i / rate, kind, conv))
        plan[base + i] = (kind, conv)
    await ask_each(pipes, [("run", s) for s in per_client])
    print(
        f"   sending {rate:g} messages/s over {len(convs)} chats: {args.warmup:g} s warmup + "
        f"{args.seconds:g} s measured ...",
        flush=True,
    )
    load0 = os.getloadavg()[0]
    await asyncio.sleep(max(0.0, t0 + warm_n / rate - time.time()))
    m0 = cpu.snapshot()
    spies = start_profilers(args, servers, label)
    await asyncio.sleep(max(0.0, t0 + total / rate - time.time()))
    m1 = cpu.snapshot()
    phase.cpu, phase.cpu_servers, phase.cpu_clients = cpu.shares(m0, m1)
    phase.load = (load0, os.getloadavg()[0])
    for spy, out in spies:
        await asyncio.to_thread(spy.wait, 60)
        phase.notes.append(f"py-spy profile of the measured window: {out}")

    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        counts = await fanout.ask_async(pipes, ("count", None))
        sent, got, acks = (sum(c[k] for c in counts) for k in range(3))
        if sent >= total and got >= sent and acks >= sent:
            break
        await asyncio.sleep(0.2)
    collected = await fanout.ask_async(pipes, ("collect", None))
    phase.rss_after = [s.rss_mb() for s in servers]
    phase.hub = [await fanout.hub_stats(s, supervisor) for s in servers]
    figures(phase, collected, plan, base + warm_n, base + total)


def start_profilers(
    args: argparse.Namespace, servers: list[fanout.Server], label: str
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """With --py-spy DIR: sample each server over the measured window (collapsed stacks)."""
    if not args.py_spy:
        return []
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--py-spy needs py-spy on PATH")
    out_dir = Path(args.py_spy)
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = []
    for i, s in enumerate(servers):
        out = out_dir / f"chat-{label}-server{i + 1}.txt"
        cmd = [exe, "record", "-p", str(s.proc.pid), "-d", str(math.ceil(args.seconds))]
        cmd += ["-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"]
        spies.append(
            (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), out)
        )
    return spies


def figures(
    r: Phase,
    collected: list[dict[str, Any]],
    plan: dict[int, tuple[str, int]],
    first: int,
    end: int,
) -> None:
    """`first`..`end` are the measured messages' numbers (the warmup's come before)."""
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    received: dict[int, tuple[float, int]] = {}
    for c in collected:
        sent.update(c["sent"])
        acked.update(c["acked"])
        for n, got in c["received"].items():
            if n in received:
                r.duplicates += 1
            else:
                received[n] = got
        r.duplicates += c["duplicates"]
        r.dup_acks += c["dup_acks"]
        r.lags_ms += [lag for n, lag in c["lags_ms"] if n >= first]
        r.visitor_acks_sent += c["visitor_acks_sent"]
        for name in ("refused", "frames", "errors", "closes"):
            merge_counts(getattr(r, name), c[name])
    label = {"v": "customer -> agent", "a": "agent -> customer"}
    for kind in "va":
        name = label[kind]
        measured = [n for n in range(first, end) if plan[n][0] == kind]
        r.sent[name] = sum(1 for n in measured if n in sent)
        r.delivered[name] = sum(1 for n in measured if n in sent and n in received)
        r.lost[name] = sum(1 for n in measured if n in sent and n not in received)
        r.unacked[name] = sum(1 for n in measured if n in sent and n not in acked)
        r.latency_ms[name] = [(received[n][0] - sent[n]) * 1e3 for n in measured if n in received]
        r.ack_ms[name] = [(acked[n] - sent[n]) * 1e3 for n in measured if n in acked]
    r.wrong = sum(1 for n, (_t, conv) in received.items() if n in plan and plan[n][1] != conv)
    warm = [n for n in plan if n < first]
    r.warm_sent = sum(1 for n in warm if n in sent)
    r.warm_lost = sum(1 for n in warm if n in sent and n not in received)
    starts = [sent[n] for n in range(first, end) if n in sent]
    if len(starts) > 1:
        r.achieved_rate = (len(starts) - 1) / max(max(starts) - min(starts), 1e-9)
    if r.achieved_rate < 0.95 * r.rate:
        r.notes.append(f"senders fell behind: {r.achieved_rate:.0f}/s of {r.rate:g}/s")
    busiest = max(r.cpu_clients, default=0.0)
    if busiest > 80:
        r.notes.append(
            f"client CPU-bound: one client process used {busiest:.0f}% of a core; the "
            "latencies include its own queueing (run with more --clients)"
        )


# -- report ------------------------------------------------------------------------------------


def ms_row(label: str, values: list[float]) -> str:
    pct = fanout.pct
    return (
        f"{label:<36} {len(values):>6} {pct(values, 50):>8.2f} {pct(values, 95):>8.2f} "
        f"{pct(values, 99):>8.2f} {max(values, default=float('nan')):>8.2f}"
    )


def report(r: Result, args: argparse.Namespace) -> str:
    nv = sum(r.visitors_per_process)
    na = sum(r.agents_per_process)
    header = f"{'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"
    lines = [
        f"-- {r.processes} app process(es): {nv} visitor sockets "
        f"({' + '.join(map(str, r.visitors_per_process))}) and {na} agent sockets "
        f"({' + '.join(map(str, r.agents_per_process))})",
        "",
        f"setup: agent sockets open in {r.agents_open_s:.1f} s; {nv} visitors hello + first "
        f"message in {r.visitors_open_s:.1f} s ({nv / max(r.visitors_open_s, 1e-9):.0f}/s, "
        f"{args.connect_concurrency} at a time per client); {len(r.queue_to_active_s)} chats "
        f"active {r.all_active_s:.1f} s after the first hello",
        f"routing: {r.offers} offers at {r.offer_rate:.1f}/s, {r.accepts} accepts at "
        f"{r.accept_rate:.1f}/s; accept errors {r.accept_errors}; accepted without the "
        f"chat_accepted reply arriving {r.accepts_missing}; offers withdrawn "
        f"{r.withdrawn or 'none'}; chats after setup {r.states_after_setup}"
        + (f"; {r.setup_ends}" if r.setup_ends else ""),
        "setup CPU (% of one core): "
        + ", ".join(
            [
                "servers " + " + ".join(f"{c:.0f}" for c in r.setup_cpu_servers),
                *(f"{k} {v:.0f}" for k, v in r.setup_cpu.items() if k != "servers"),
            ]
        ),
        "setup frames: " + ", ".join(f"{k} {v}" for k, v in sorted(r.setup_frames.items())),
        "",
        f"{'setup latency':<36} {header}",
        ms_row("hello -> welcome (ms)", r.hello_ms),
        ms_row("first message -> ack (ms)", r.first_ack_ms),
        ms_row("first message -> agent joined (s)", r.queue_to_active_s),
        "",
        f"{'server RSS (MB)':<15} {'agents':>6} {'visits':>6} {'idle':>6} {'warm':>6} "
        f"{'+agent':>6} {'+visit':>6} {'after':>6} {'peak':>6} {'KB/visitor':>10}",
    ]
    for i in range(r.processes):
        per = (r.rss_open[i] - r.rss_agents[i]) * 1024 / max(r.visitors_per_process[i], 1)
        after = r.phases[-1].rss_after[i] if r.phases else float("nan")
        lines.append(
            f"{'process ' + str(i + 1):<15} {r.agents_per_process[i]:>6} "
            f"{r.visitors_per_process[i]:>6} {r.rss_idle[i]:>6.1f} {r.rss_warm[i]:>6.1f} "
            f"{r.rss_agents[i]:>6.1f} {r.rss_open[i]:>6.1f} {after:>6.1f} "
            f"{r.hwm[i]:>6.1f} {per:>10.1f}"
        )
    lines += [f"PROBLEM: {p}" for p in r.setup_problems]
    for p in r.phases:
        lines += ["", *phase_report(p, r.chats, header)]
    if r.server_log:
        lines += ["server log:", *(f"  {x}" for x in r.server_log)]
    return "\n".join(lines)


def phase_report(p: Phase, chats: int, header: str) -> list[str]:
    lines = [
        f"- {p.rate:g} messages/s ({p.rate / 2:g} each way) over {chats} chats",
        "",
        f"{'messages in the measured window':<36} {'sent':>6} {'deliv':>6} {'lost':>5} "
        f"{'unack':>5}",
    ]
    for name in p.sent:
        lines.append(
            f"{name:<36} {p.sent[name]:>6} {p.delivered[name]:>6} {p.lost[name]:>5} "
            f"{p.unacked[name]:>5}"
        )
    lines += [
        f"duplicated {p.duplicates}, duplicate acks {p.dup_acks}, to the wrong conversation "
        f"{p.wrong}, refused {sum(p.refused.values())}{' ' + str(p.refused) if p.refused else ''}"
        f"; warmup {p.warm_sent} sent, {p.warm_lost} lost; achieved {p.achieved_rate:.1f} "
        f"messages/s; sender lag p99 {fanout.pct(p.lags_ms, 99):.1f} ms, max "
        f"{max(p.lags_ms, default=float('nan')):.1f} ms",
        "",
        f"{'latency (ms)':<36} {header}",
    ]
    for name, values in p.latency_ms.items():
        lines.append(ms_row(f"{name}: send -> receipt", values))
    lines.append(ms_row("visitor message -> ack", p.ack_ms["customer -> agent"]))
    lines.append(ms_row("agent chat_send -> chat_ack", p.ack_ms["agent -> customer"]))
    both = [x for v in p.latency_ms.values() for x in v]
    lines.append(ms_row("both directions: send -> receipt", both))
    lines += [
        "",
        "CPU over the measured window (% of one core): "
        + ", ".join(
            [
                "servers " + " + ".join(f"{c:.0f}" for c in p.cpu_servers),
                "clients " + " + ".join(f"{c:.0f}" for c in p.cpu_clients),
                f"bench {p.cpu.get('bench', 0):.0f}",
                *([f"postgres {p.cpu['postgres']:.0f}"] if "postgres" in p.cpu else []),
                f"whole machine {p.cpu.get('machine', 0):.0f} of {100 * (os.cpu_count() or 1)}",
            ]
        )
        + f"; 1-min load {p.load[0]:.2f} before, {p.load[1]:.2f} after",
        "hub stats (cumulative): "
        + "; ".join(
            f"process {i + 1}: {h['sockets']} sockets ({h.get('visitors', '?')} visitors), "
            f"delivered {h['delivered']}, overflows {h['overflows']}, reconnects "
            f"{h['reconnects']}"
            for i, h in enumerate(p.hub)
        ),
        f"visitor acks sent (as the widget: {ACK_DELAY * 1000:.0f} ms after messages arrive): "
        f"{p.visitor_acks_sent}",
    ]
    if p.frames:
        lines.append("other frames: " + ", ".join(f"{k} {v}" for k, v in sorted(p.frames.items())))
    if p.errors:
        lines.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(p.errors.items())))
    problems = []
    if p.closes:
        problems.append(f"sockets closed by the server: {p.closes}")
    lost = sum(p.lost.values()) + p.warm_lost
    if lost:
        problems.append(f"{lost} sent messages never reached their receiver")
    if p.duplicates or p.wrong:
        problems.append(f"{p.duplicates} duplicated, {p.wrong} to the wrong conversation")
    lines += [f"PROBLEM: {x}" for x in problems]
    checks = [
        f"{name} p99 {fanout.pct(v, 99):.1f} ms "
        f"{'<' if fanout.pct(v, 99) < AIM_P99_MS else '>='} {AIM_P99_MS:g} ms"
        for name, v in p.latency_ms.items()
    ]
    lines.append(
        "aims: " + "; ".join(checks) + f"; lost {sum(p.lost.values())} and duplicated "
        f"{p.duplicates} (aim 0)"
    )
    lines += [f"note: {n}" for n in p.notes]
    return lines


# -- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, url: str, work_dir: Path, postmaster: int | None) -> None:
    migrate_s = await fanout.migrate(url)
    t = time.perf_counter()
    agents, supervisor = await fanout.create_staff(url, args.agents)
    await set_capacity(url, args.capacity)
    print(
        f"migrated in {migrate_s:.1f} s; {len(agents)} agents (chat capacity {args.capacity}) "
        f"+ 1 supervisor inserted and tokens minted in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    facts = await fanout.db_facts(url)
    load_before = os.getloadavg()
    results = [
        await run_config(args, url, work_dir, agents, supervisor, p, postmaster, k)
        for k, p in enumerate(args.processes)
    ]
    load_after = os.getloadavg()

    fanout.print_header(
        "helpdesk benchmark: live chat delivery (visitor /ws/chat <-> agent /ws/agent)",
        load_before,
        load_after,
        facts,
    )
    rates = ", ".join(f"{r:g}" for r in args.rate)
    per_conv = ", ".join(f"{r / 2 / args.visitors * 10:.2f}" for r in args.rate)
    print(
        f"load:     {args.visitors} visitor sockets, {len(agents)} agent sockets (capacity "
        f"{args.capacity}), round-robin over the app processes, held by {args.clients} "
        f"client process(es); {rates} messages/s (half each way: {per_conv} visitor "
        f"messages per chat per 10 s) for {args.seconds:g} s after {args.warmup:g} s warmup "
        f"each; visitor acks {'off' if args.no_visitor_acks else 'on (as the widget)'}"
    )
    for r in results:
        print()
        print(report(r, args))
    print()
    print(
        "Latency: send -> receipt is from time.time() just before the sender's send() to the "
        "receiver's socket handing over the chat_message with that client_id (client "
        "processes on one machine, one clock); ack = to the sender's own ack/chat_ack. "
        "RSS: VmRSS of each `helpdesk serve`; idle = started, warm = after one agent socket's "
        "life, +agent = agent sockets open, +visit = visitor chats open and active, after = "
        "after the load, peak = VmHWM; KB/visitor = (+visit - +agent) / visitor sockets, "
        "which includes the server's growth from setting up the chats. CPU: postgres counts "
        "backends alive at both ends of a window (pool overflow connections opened and closed "
        "within it are missed); whole machine is all CPU time on the box, other work's too."
    )


async def main_async(args: argparse.Namespace) -> None:
    await fanout.with_database("helpdesk-chat-bench-", run, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=2000, help="visitor sockets (chats)")
    parser.add_argument(
        "--rate",
        default="500",
        help="messages/s, half each way; several (such as 100,300,500) run one after the "
        "other over the same chats",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured lead-in, seconds")
    parser.add_argument(
        "--processes", default="1", help="comma-separated app process counts, such as 1,2"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes for sockets")
    parser.add_argument("--capacity", type=int, default=10, help="chats per agent")
    parser.add_argument(
        "--agents",
        type=int,
        default=0,
        help="agent sockets (default: 1.1 x visitors / capacity, rounded up)",
    )
    parser.add_argument(
        "--connect-concurrency", type=int, default=32, help="sockets set up at once per client"
    )
    parser.add_argument("--setup-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument(
        "--stall",
        type=float,
        default=60.0,
        help="stop setting up after this many seconds without progress (default 60)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="pause after setup, seconds")
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    parser.add_argument(
        "--no-visitor-acks", action="store_true", help="visitors do not ack what they receive"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="record each server with py-spy over the measured window into DIR",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast check: "
        + ", ".join(f"--{k} {v}" for k, v in QUICK.items())
        + " (unless given)",
    )
    args = parser.parse_args()
    if args.quick:
        given = {a.split("=")[0] for a in sys.argv[1:]}
        for key, value in QUICK.items():
            if f"--{key}" not in given:
                setattr(args, key, type(getattr(args, key))(value))
    try:
        args.processes = [int(p) for p in args.processes.split(",") if p.strip()]
    except ValueError:
        parser.error("--processes is a comma-separated list of integers, such as 1,2")
    if not args.processes or min(args.processes) < 1:
        parser.error("--processes needs at least one count of 1 or more")
    try:
        args.rate = [float(r) for r in str(args.rate).split(",") if r.strip()]
    except ValueError:
        parser.error("--rate is a number or a comma-separated list, such as 100,300,500")
    if not args.rate or min(args.rate) <= 0:
        parser.error("--rate must be positive")
    if args.visitors < 1 or args.seconds <= 0 or args.capacity < 1:
        parser.error("--visitors, --seconds and --capacity must be positive")
    # 10 % spare capacity, as a contact center keeps: an agent socket lost during the setup
    # (or an offer that lapsed) must not leave chats queued for good.
    args.agents = args.agents or math.ceil(1.1 * args.visitors / args.capacity)
    if args.agents * args.capacity < args.visitors:
        parser.error("--agents x --capacity must hold every visitor's chat")
    if args.clients < 1 or args.clients > min(args.visitors, args.agents):
        parser.error("--clients must be between 1 and the number of agents")
    # Every chat sends a visitor message every visitors / (rate / 2) s; with the first
    # message, no 10 s window may hold more than the server's limit.
    per_10s = math.floor(10 * max(args.rate) / 2 / args.visitors) + 2
    if per_10s > MESSAGES_PER_10S:
        parser.error(
            f"{max(args.rate):g} messages/s over {args.visitors} chats is up to {per_10s} visitor "
            f"messages per chat in 10 s; the server allows {MESSAGES_PER_10S}"
        )
    fanout.raise_nofile((args.visitors + args.agents) * 3 + 1024)
    fanout.run_async(main_async(args))


if __name__ == "__main__":
    main()
