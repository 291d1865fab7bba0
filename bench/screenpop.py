"""Benchmark: CTI screen-pop, ring event to the agent's socket (issue 4).

    .venv/bin/python bench/screenpop.py [--customers 100000] [--agents 1000]
                                        [--rates 50,200] [--seconds 10] [--paths http,ami]

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server), migrates it, bulk-loads N customers with their
identities exactly as bench/lookup.py does (COPY; normalized values from helpdesk's own
functions) and N agents as bench/fanout.py does, each given an extension (2000, 2001, ...).
Then one real `helpdesk serve` (uvicorn, HELPDESK_CTI_TOKEN set) and a separate client
process holding one /ws/agent socket per agent (fanout.py's client, which also records
`screen_pop` frames by call id and the user whose socket got them).

For each rate in --rates, --warmup s (not measured) then --seconds s of calls, each a `ring`
from a random existing customer's number (about --unknown of them from numbers nobody has)
at a random agent's extension:

  http  POSTed as the normalized JSON event to /api/cti/events (Bearer CTI token) from
        --workers tasks over a pool of --http-clients httpx.AsyncClient; latency is from
        time.time() just before the POST is sent to the client process's receipt of the
        `screen_pop` frame whose call.call_id matches (one machine, one clock);
  ami   written as Asterisk would (Newchannel of the trunk channel, then DialBegin to
        PJSIP/<ext>-xxxxxxxx) by a fake AMI server (banner, Login, CoreShowChannels,
        Logoff) to which a real `helpdesk cti ami` process is connected; latency is from
        just before the DialBegin frame is written to the socket to the receipt.

No answer or hangup is sent: every call stays `ringing` (so no call-back cases are created),
and the calls table grows by the calls made, rates x (warmup + seconds) per path; a few
thousand rows next to 100k customers. Nothing in the checkout is touched; everything is
removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
import httpx
import lookup

from helpdesk.db import Database

CTI_TOKEN = "bench-cti-token"
AMI_USER, AMI_SECRET = "u", "s"
FIRST_EXTENSION = 2000
DID = "0355550100"  # the number customers dial
AIM_P99_MS = 25.0
DRAIN_TIMEOUT = 20.0


# -- the client process: fanout.py's, recording screen-pops -----------------------------------


class PopClient(fanout.Client):
    """Records each `screen_pop` by call id: (receipt time, user of the socket, match)."""

    async def on_frame(
        self, ws: Any, hello: dict[str, Any], frame: dict[str, Any], now: float
    ) -> None:
        if frame.get("type") != "screen_pop":
            await super().on_frame(ws, hello, frame, now)
            return
        call_id = frame["call"]["call_id"]
        if call_id in self.received:
            self.duplicates += 1
        else:
            self.received[call_id] = (now, hello["user"]["id"], frame.get("match"))  # type: ignore[assignment]


# -- calls ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ring:
    call_id: str
    national: str  # the caller's number, 03-1234-5678
    e164: str | None  # as stored, None when nobody has it
    agent: int  # index into the agents


def make_rings(
    rng: random.Random,
    n: int,
    prefix: str,
    phones: list[tuple[str, str]],
    used_digits: set[str],
    agents: int,
    unknown: float,
) -> list[Ring]:
    rings = []
    for i in range(n):
        if rng.random() < unknown:
            while True:
                national = lookup.new_number(rng)
                if national.replace("-", "") not in used_digits:
                    break
            e164 = None
        else:
            national, e164 = rng.choice(phones)
        rings.append(Ring(f"{prefix}.{i}", national, e164, rng.randrange(agents)))
    return rings


def extension(agent: int) -> str:
    return str(FIRST_EXTENSION + agent)


async def give_extensions(url: str) -> None:
    """Agents in email order (create_staff's order) get 2000, 2001, ..."""
    conn = await fanout.raw_connect(url)
    try:
        await conn.execute(
            """
            UPDATE users u SET extension = ($1 + n.i)::text
            FROM (SELECT id, row_number() OVER (ORDER BY email) - 1 AS i
                  FROM users WHERE role = 'agent') n
            WHERE u.id = n.id
            """,
            FIRST_EXTENSION,
        )
    finally:
        await conn.close()


# -- a fake Asterisk --------------------------------------------------------------------------


class FakeAmi:
    """An Asterisk Manager Interface on a real TCP port: banner, Login, an empty
    CoreShowChannels, Logoff; the benchmark writes events to the logged-in connection."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            if self.writer is not None:
                self.writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                lines = block.decode().split("\r\n")
                action = dict(line.split(": ", 1) for line in lines if ": " in line)
                aid = action.get("ActionID", "")
                name = action.get("Action")
                if name == "Login":
                    if (action.get("Username"), action.get("Secret")) != (AMI_USER, AMI_SECRET):
                        writer.write(
                            f"Response: Error\r\nActionID: {aid}\r\n"
                            "Message: Authentication failed\r\n\r\n".encode()
                        )
                        break
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\n"
                        "Message: Authentication accepted\r\n\r\n"
                        "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 86417\r\n"
                        "LastReload: 86417\r\nStatus: Fully Booted\r\n\r\n".encode()
                    )
                elif name == "CoreShowChannels":
                    writer.write(
                        f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                        "Message: Channels will follow\r\n\r\n"
                        f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                        "EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                    )
                    self.writer = writer
                    self.ready.set()
                elif name == "Logoff":
                    writer.write(
                        f"Response: Goodbye\r\nActionID: {aid}\r\n"
                        "Message: Thanks for all the fish.\r\n\r\n".encode()
                    )
                    break
                else:
                    writer.write(
                        f"Response: Error\r\nActionID: {aid}\r\n"
                        "Message: Invalid/unknown command\r\n\r\n".encode()
                    )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.writer is writer:
                self.writer = None
                self.ready.clear()
            writer.close()


def _channel_headers(
    channel: str, state: str, desc: str, num: str, name: str, context: str, exten: str
) -> list[str]:
    return [
        f"Channel: {channel}",
        f"ChannelState: {state}",
        f"ChannelStateDesc: {desc}",
        f"CallerIDNum: {num}",
        f"CallerIDName: {name}",
        "ConnectedLineNum: <unknown>",
        "ConnectedLineName: <unknown>",
        "Language: ja",
        "AccountCode: ",
        f"Context: {context}",
        f"Exten: {exten}",
    ]


def ami_frames(ring: Ring, seq: int) -> tuple[bytes, bytes]:
    """Newchannel of the trunk leg, and DialBegin to the agent's phone, as Asterisk 20 writes
    them (timestampevents = yes). The call id the helpdesk sees is the Linkedid."""
    stamp = f"{time.time():.6f}"
    trunk = f"PJSIP/ntt-trunk-{2 * seq:08x}"
    phone = f"PJSIP/{extension(ring.agent)}-{2 * seq + 1:08x}"
    caller = ring.national.replace("-", "")
    linkedid = ring.call_id
    dest_uid = f"{linkedid}1"
    newchannel = [
        "Event: Newchannel",
        "Privilege: call,all",
        f"Timestamp: {stamp}",
        *_channel_headers(trunk, "4", "Ring", caller, "<unknown>", "from-trunk", DID),
        "Priority: 1",
        f"Uniqueid: {linkedid}",
        f"Linkedid: {linkedid}",
    ]
    dial_begin = [
        "Event: DialBegin",
        "Privilege: call,all",
        f"Timestamp: {stamp}",
        *_channel_headers(trunk, "4", "Ring", caller, "<unknown>", "from-trunk", DID),
        "Priority: 2",
        f"Uniqueid: {linkedid}",
        f"Linkedid: {linkedid}",
        f"DestChannel: {phone}",
        "DestChannelState: 0",
        "DestChannelStateDesc: Down",
        f"DestCallerIDNum: {extension(ring.agent)}",
        "DestCallerIDName: <unknown>",
        f"DestConnectedLineNum: {caller}",
        "DestConnectedLineName: <unknown>",
        "DestLanguage: ja",
        "DestAccountCode: ",
        "DestContext: from-internal",
        f"DestExten: {DID}",
        "DestPriority: 1",
        f"DestUniqueid: {dest_uid}",
        f"DestLinkedid: {linkedid}",
        f"DialString: {extension(ring.agent)}",
    ]
    return (
        ("\r\n".join(newchannel) + "\r\n\r\n").encode(),
        ("\r\n".join(dial_begin) + "\r\n\r\n").encode(),
    )


def start_ami_bridge(url: str, data_dir: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """The real `helpdesk cti ami` process, following the fake Asterisk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("helpdesk")
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import sys; from helpdesk.cli import main; sys.exit(main())"]
    )
    env = {
        **os.environ,
        "HELPDESK_DATABASE_URL": url,
        "HELPDESK_DATA_DIR": str(data_dir),
        "HELPDESK_SECRET_KEY": fanout.SECRET,
        "HELPDESK_CTI_TOKEN": CTI_TOKEN,
    }
    credentials = ["--user", AMI_USER, "--secret", AMI_SECRET]
    log = data_dir / "ami.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "cti", "ami", "--host", "127.0.0.1", "--port", str(port), *credentials],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


# -- one phase: one path at one rate ----------------------------------------------------------


@dataclass
class Phase:
    path: str
    rate: float
    sent: int = 0
    popped: int = 0
    missing: int = 0
    duplicates: int = 0
    wrong_agent: int = 0
    http_errors: int = 0
    first_error: str = ""
    achieved_rate: float = 0.0
    max_lag_ms: float = 0.0  # how late the generator sent its latest event
    latencies_ms: list[float] = field(default_factory=list)
    response_ms: list[float] = field(default_factory=list)  # HTTP: POST -> response
    matches: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


@dataclass
class Bench:
    args: argparse.Namespace
    server: fanout.Server
    agents: list[fanout.Staff]
    pipes: list[Any]
    cpu_pids: dict[str, list[int]]
    postmaster: int | None
    phones: list[tuple[str, str]]
    used_digits: set[str]
    popped_before: int = 0

    def cpu_snapshot(self) -> dict[int, float]:
        pids = [p for ps in self.cpu_pids.values() for p in ps]
        return fanout.cpu_seconds(pids + fanout.postgres_pids(self.postmaster))

    def cpu_shares(self, before: dict[int, float], after: dict[int, float], wall: float):  # type: ignore[no-untyped-def]
        out = {}
        known: set[int] = set()
        for name, pids in self.cpu_pids.items():
            sel = set(pids)
            known |= sel
            b = {p: t for p, t in before.items() if p in sel}
            a = {p: t for p, t in after.items() if p in sel}
            out[name] = 100 * fanout.cpu_delta(b, a) / wall
        if self.postmaster is not None:
            pg = set(after) - known
            b = {p: t for p, t in before.items() if p in pg}
            a = {p: t for p, t in after.items() if p in pg}
            out["postgres"] = 100 * fanout.cpu_delta(b, a) / wall
        return out

    async def drain_and_collect(self, expected: int) -> dict[str, tuple[float, int, str]]:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            got = sum(await fanout.ask_async(self.pipes, "count"))
            if got >= self.popped_before + expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        received: dict[str, tuple[float, int, str]] = {}
        duplicates = 0
        for c in await fanout.ask_async(self.pipes, "collect"):
            received.update(c["received"])
            duplicates += c["duplicates"]
        self.popped_before = len(received)
        self.duplicates_total = duplicates
        return received

    def figures(
        self,
        phase: Phase,
        rings: list[Ring],
        warm_n: int,
        sent_at: dict[str, float],
        received: dict[str, tuple[float, int, str]],
    ) -> None:
        measured = rings[warm_n:]
        phase.sent = sum(1 for r in measured if r.call_id in sent_at)
        for r in measured:
            got = received.get(r.call_id)
            if r.call_id not in sent_at:
                continue
            if got is None:
                phase.missing += 1
                continue
            now, user_id, match = got
            phase.popped += 1
            phase.matches[str(match)] += 1
            if user_id != self.agents[r.agent].id:
                phase.wrong_agent += 1
            phase.latencies_ms.append((now - sent_at[r.call_id]) * 1e3)
        starts = [sent_at[r.call_id] for r in measured if r.call_id in sent_at]
        if len(starts) > 1:
            phase.achieved_rate = (len(starts) - 1) / max(max(starts) - min(starts), 1e-9)

    async def http(self, rate: float, seed: int) -> Phase:
        args = self.args
        phase = Phase("HTTP", rate)
        warm_n = round(rate * args.warmup)
        total = warm_n + round(rate * args.seconds)
        rng = random.Random(seed)
        rings = make_rings(
            rng, total, f"http-{rate:g}", self.phones, self.used_digits, len(self.agents),
            args.unknown,
        )  # fmt: skip
        bodies = []
        for r in rings:
            caller = r.e164 or lookup.normalize_phone(r.national, lookup.REGION)
            body = {
                "event": "ring",
                "call_id": r.call_id,
                "direction": "in",
                "from": caller,
                "to": "+81" + DID[1:],
                "agent": extension(r.agent),
            }
            bodies.append(body)
        headers = {"Authorization": f"Bearer {CTI_TOKEN}", "Content-Type": "application/json"}
        per_client = max(1, -(-args.workers // args.http_clients))
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        pool = [
            httpx.AsyncClient(
                base_url=self.server.base,
                headers=headers,
                limits=limits,
                timeout=30,
                trust_env=False,
            )
            for _ in range(args.http_clients)
        ]
        sent_at: dict[str, float] = {}
        counter = itertools.count()
        loop = asyncio.get_running_loop()
        marks: dict[str, Any] = {}
        t0 = loop.time() + 0.2

        async def worker(w: int) -> None:
            client = pool[w % len(pool)]
            while (i := next(counter)) < total:
                due = t0 + i / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if i == warm_n:
                    marks["cpu0"], marks["wall0"] = self.cpu_snapshot(), time.time()
                if i >= warm_n:
                    phase.max_lag_ms = max(phase.max_lag_ms, (loop.time() - due) * 1e3)
                body = bodies[i]
                body["at"] = datetime.now(UTC).isoformat()
                content = json.dumps(body).encode()
                started = time.time()
                try:
                    resp = await client.post("/api/cti/events", content=content)
                    ok = resp.status_code == 200
                    error = "" if ok else f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                done = time.time()
                if not ok:
                    phase.http_errors += 1
                    phase.first_error = phase.first_error or error
                    continue
                sent_at[rings[i].call_id] = started
                if i >= warm_n:
                    phase.response_ms.append((done - started) * 1e3)

        print(
            f"   HTTP {rate:g}/s: {args.warmup:g} s warmup + {args.seconds:g} s measured ...",
            flush=True,
        )
        try:
            await asyncio.gather(*(worker(w) for w in range(args.workers)))
        finally:
            for client in pool:
                await client.aclose()
        wall = time.time() - marks["wall0"]
        phase.cpu = self.cpu_shares(marks["cpu0"], self.cpu_snapshot(), wall)
        phase.load = os.getloadavg()[0]
        received = await self.drain_and_collect(len(sent_at))
        self.figures(phase, rings, warm_n, sent_at, received)
        phase.duplicates = self.duplicates_total - getattr(self, "dups_seen", 0)
        self.dups_seen = self.duplicates_total
        return phase

    async def ami(self, fake: FakeAmi, rate: float, seed: int, k: int) -> Phase:
        args = self.args
        phase = Phase("AMI", rate)
        warm_n = round(rate * args.warmup)
        total = warm_n + round(rate * args.seconds)
        rng = random.Random(seed)
        epoch = int(time.time())
        rings = make_rings(
            rng, total, str(epoch + k), self.phones, self.used_digits, len(self.agents),
            args.unknown,
        )  # fmt: skip
        sent_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        marks: dict[str, Any] = {}
        print(
            f"   AMI {rate:g}/s: {args.warmup:g} s warmup + {args.seconds:g} s measured ...",
            flush=True,
        )
        t0 = loop.time() + 0.2
        for i, ring in enumerate(rings):
            due = t0 + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == warm_n:
                marks["cpu0"], marks["wall0"] = self.cpu_snapshot(), time.time()
            if i >= warm_n:
                phase.max_lag_ms = max(phase.max_lag_ms, (loop.time() - due) * 1e3)
            newchannel, dial_begin = ami_frames(ring, k * 1_000_000 + i)
            writer = fake.writer
            if writer is None:
                raise RuntimeError("the AMI bridge disconnected")
            writer.write(newchannel)
            sent_at[ring.call_id] = time.time()
            writer.write(dial_begin)
            await writer.drain()
        wall = time.time() - marks["wall0"]
        phase.cpu = self.cpu_shares(marks["cpu0"], self.cpu_snapshot(), wall)
        phase.load = os.getloadavg()[0]
        received = await self.drain_and_collect(len(sent_at))
        self.figures(phase, rings, warm_n, sent_at, received)
        phase.duplicates = self.duplicates_total - getattr(self, "dups_seen", 0)
        self.dups_seen = self.duplicates_total
        return phase


# -- report -----------------------------------------------------------------------------------


def ms_row(label: str, values: list[float]) -> str:
    pct = fanout.pct
    return (
        f"{label:<34} {pct(values, 50):>7.2f} {pct(values, 95):>7.2f} {pct(values, 99):>7.2f} "
        f"{max(values, default=float('nan')):>7.2f}"
    )


def report(phases: list[Phase]) -> str:
    lines = [
        f"{'path, rate':<18} {'sent':>6} {'popped':>6} {'missing':>7} {'dup':>4} "
        f"{'wrong':>5} {'err':>4} {'rate/s':>7} {'lag ms':>7}  matches (one/several/unknown)",
    ]
    for p in phases:
        m = p.matches
        lines.append(
            f"{p.path + f' {p.rate:g}/s':<18} {p.sent:>6} {p.popped:>6} {p.missing:>7} "
            f"{p.duplicates:>4} {p.wrong_agent:>5} {p.http_errors:>4} {p.achieved_rate:>7.1f} "
            f"{p.max_lag_ms:>7.1f}  {m['one']}/{m['several']}/{m['unknown']}"
        )
    lines += ["", f"{'latency (ms)':<34} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}"]
    for p in phases:
        start = "POST sent" if p.path == "HTTP" else "DialBegin written"
        lines.append(ms_row(f"{p.path} {p.rate:g}/s: {start} -> pop", p.latencies_ms))
        if p.response_ms:
            lines.append(ms_row("  (POST -> HTTP response)", p.response_ms))
    lines.append("")
    lines.append("CPU over each measured window (% of one core):")
    for p in phases:
        lines.append(
            f"  {p.path} {p.rate:g}/s: "
            + ", ".join(f"{k} {v:.0f}" for k, v in p.cpu.items())
            + f"; 1-min load {p.load:.2f} at the end"
        )
    checks = []
    for p in phases:
        p99 = fanout.pct(p.latencies_ms, 99)
        verdict = "<" if p99 < AIM_P99_MS else ">="
        checks.append(f"{p.path} {p.rate:g}/s p99 {p99:.1f} ms {verdict} {AIM_P99_MS:g} ms")
    lines.append("aims: " + "; ".join(checks))
    problems = [
        f"{p.path} {p.rate:g}/s: {p.missing} missing, {p.duplicates} duplicate, "
        f"{p.wrong_agent} to the wrong agent, {p.http_errors} HTTP errors {p.first_error}"
        for p in phases
        if p.missing or p.duplicates or p.wrong_agent or p.http_errors
    ]
    lines += [f"PROBLEM: {x}" for x in problems]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, url: str, work_dir: Path, postmaster: int | None) -> None:
    await fanout.migrate(url)
    print(f"generating and loading {args.customers:,} customers ...", flush=True)
    t = time.perf_counter()
    ds = lookup.generate(args.customers, args.seed)
    load_t = await lookup.load(url, ds)
    n_identities = len(ds.identities)
    phones, used_digits = ds.phones, ds.used_digits
    ds.customers, ds.identities, ds.cases = [], [], []
    gc.collect()
    gc.freeze()  # no cyclic-GC walks over the loaded rows mid-measurement
    agents, supervisor = await fanout.create_staff(url, args.agents)
    await give_extensions(url)
    print(
        f"loaded in {time.perf_counter() - t:.1f} s (COPY {load_t['copy']:.1f} s); "
        f"{len(agents)} agents with extensions {extension(0)}-{extension(len(agents) - 1)}",
        flush=True,
    )
    facts = await fanout.db_facts(url)

    os.environ["HELPDESK_CTI_TOKEN"] = CTI_TOKEN  # start_server passes the environment on
    server = fanout.start_server(url, work_dir / "server", workers=args.server_workers)
    clients: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Any] = []
    ami_proc: subprocess.Popen[bytes] | None = None
    fake = FakeAmi()
    db = Database.from_url(url, pool_size=2)
    phases: list[Phase] = []
    try:
        await asyncio.to_thread(fanout.wait_ready, server)
        await fanout.warm_up_server(server, db, supervisor)
        ctx = multiprocessing.get_context("spawn")
        targets = [(server.ws, a.token) for a in agents]
        for c in range(args.clients):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=fanout.client_process,
                args=(child_end, targets[c :: args.clients], 50, True, PopClient),
                daemon=True,
            )
            proc.start()
            clients.append(proc)
            pipes.append(parent_end)
        print(f"   opening {len(agents)} sockets ...", flush=True)
        opened = await fanout.ask_async(pipes, ("open", 1.0))
        failed = sum(o["failed"] for o in opened)
        if failed:
            errors = "; ".join(o["first_error"] for o in opened if o["first_error"])
            raise RuntimeError(f"{failed} sockets failed to open: {errors}")
        await asyncio.sleep(1.0)
        bench = Bench(
            args,
            server,
            agents,
            pipes,
            {
                "server": fanout.process_tree(server.proc.pid),
                "client": [c.pid for c in clients if c.pid],
                "bench": [os.getpid()],
            },
            postmaster,
            phones,
            used_digits,
        )
        load_before = os.getloadavg()
        for k, rate in enumerate(args.rates):
            if "http" in args.paths:
                phases.append(await bench.http(rate, args.seed + 10 + k))
        if "ami" in args.paths:
            port = await fake.start()
            ami_proc, ami_log = start_ami_bridge(url, work_dir / "ami", port)
            try:
                await asyncio.wait_for(fake.ready.wait(), 60)
            except TimeoutError:
                log = ami_log.read_text()
                raise RuntimeError(f"helpdesk cti ami did not log in:\n{log}") from None
            bench.cpu_pids["cti ami"] = [ami_proc.pid]
            for k, rate in enumerate(args.rates):
                phases.append(await bench.ami(fake, rate, args.seed + 20 + k, k))
        load_after = os.getloadavg()
        hub = await fanout.hub_stats(server, supervisor)
    finally:
        if pipes:
            with contextlib.suppress(Exception):
                await fanout.ask_async(pipes, "close", wait=60)
        for c in clients:
            c.join(timeout=10)
            if c.is_alive():
                c.kill()
        if ami_proc is not None:
            ami_proc.terminate()
            try:
                ami_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ami_proc.kill()
        await fake.stop()
        await db.dispose()
        fanout.stop_server(server)

    fanout.print_header(
        "helpdesk benchmark: CTI screen-pop (ring event -> screen_pop frame on the agent's socket)",
        load_before,
        load_after,
        facts,
        when="before measuring",
    )
    print(
        f"data:     {args.customers:,} customers, {n_identities:,} identities; {len(agents)} "
        f"agents with extensions, one /ws/agent socket each (permessage-deflate), held by "
        f"{args.clients} client process(es), on one `helpdesk serve --workers {args.server_workers}`"
    )
    print(
        f"load:     rings at {', '.join(f'{r:g}' for r in args.rates)} calls/s, {args.warmup:g} s "
        f"warmup + {args.seconds:g} s measured each, {args.unknown:.0%} from unknown numbers, "
        f"each at one random agent; HTTP from {args.workers} tasks over {args.http_clients} "
        "httpx clients; AMI over one connection to `helpdesk cti ami`; no answers or hangups"
    )
    print(
        f"hub:      {hub['sockets']} sockets, delivered {hub['delivered']}, "
        f"overflows {hub['overflows']}, reconnects {hub['reconnects']}"
    )
    print()
    print(report(phases))
    print()
    print(
        "Latency: HTTP from time.time() just before the POST is sent, AMI from just before the\n"
        "DialBegin frame is written to the bridge's socket, to the client process's receipt of\n"
        "the screen_pop frame with that call id (one clock). sent/popped count the measured\n"
        "window; wrong = a pop on another agent's socket; lag = how late the generator ran."
    )


async def main_async(args: argparse.Namespace) -> None:
    await fanout.with_database("helpdesk-screenpop-", run, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="data set size")
    parser.add_argument("--agents", type=int, default=1000, help="agents (sockets, extensions)")
    parser.add_argument("--rates", default="50,200", help="calls per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured lead-in, seconds")
    parser.add_argument("--paths", default="http,ami", help="http, ami or both")
    parser.add_argument("--unknown", type=float, default=0.1, help="share of unknown callers")
    parser.add_argument("--workers", type=int, default=32, help="concurrent HTTP posters")
    parser.add_argument("--http-clients", type=int, default=4, help="httpx.AsyncClient pool")
    parser.add_argument("--clients", type=int, default=1, help="client processes for sockets")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--server-workers", type=int, default=1, help="`helpdesk serve --workers N`"
    )
    args = parser.parse_args()
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates is a comma-separated list of numbers, such as 50,200")
    args.paths = {p.strip() for p in args.paths.split(",") if p.strip()}
    if not args.rates or min(args.rates) <= 0 or not args.paths <= {"http", "ami"}:
        parser.error("--rates must be positive; --paths is http, ami or both")
    if args.customers < 200 or args.agents < 1 or args.agents > 8000:
        parser.error("--customers must be at least 200, --agents between 1 and 8000")
    fanout.raise_nofile(args.agents * 2 + 1024)
    fanout.run_async(main_async(args))


if __name__ == "__main__":
    main()
