"""Load: a contact-center day at a chosen multiple, against real app processes (issue 10).

    .venv/bin/python bench/load.py [--scale 1] [--duration 60] [--warmup 5]
                                   [--processes 1 | 1,2,4] [--separate-worker]
                                   [--json FILE] [--customers 5000] [--seed 42]

A quick smoke run is `--scale 1 --duration 10` (about half a minute).

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server; bench/fanout.py's `with_database`), migrates
it, loads --customers customers with phone numbers and email addresses (bench/lookup.py's
generator: helpdesk's own normalization, COPY), two teams, the agents (each with an
extension, two in five of them in a team) and the supervisors (every other one limited to a
team), each with a JWT minted with the servers' secret. Then, for each count P in
--processes, it starts P real `helpdesk serve` processes on their own ports (with
--separate-worker: HELPDESK_BACKGROUND=0 and one `helpdesk worker`), and plays the day.
Clients spread HTTP requests and sockets round-robin over the P processes, as a proxy
without sticky sessions would: a visitor's socket, its agent's socket and the CTI POST that
concerns them are usually on different processes, so every delivery below crosses
PostgreSQL's LISTEN/NOTIFY.

One scale unit is a small center, 20 agents and 2 supervisors, at a busy hour's pace
compressed into minutes. Per minute and unit (everything scales linearly with --scale):

  calls      30  CTI `ring` at the extension of a connected agent who is neither on a call
                 nor on a break, from a customer's number (10 % unknown numbers), then
                 `answer` after 0.5-2 s and `hangup` after 1-5 s of talk; 5 % of callers
                 give up while it rings (`hangup`, cause `cancel`: a call-back case);
                 POST /api/cti/events with the CTI token, retried like a bridge (events are
                 idempotent) on a 5xx or a broken connection
  chats      10  a visitor opens /ws/chat (`hello`; 30 % give a known customer's email, 20 %
                 ask for a team), sends a first message and waits for an agent; the agent's
                 socket accepts every `chat_offered` at once; then 6 messages alternate agent
                 and visitor 0.5-1.5 s apart; the visitor acks seqs as the widget does; half
                 the chats are closed by the visitor (`close`), half by the agent (POST
                 /api/chats/{id}/close)
  emails     20  POST /api/mail/inbound (raw RFC 822, mail token) from a customer's address;
                 25 % answer one of our earlier replies (In-Reply-To, so they thread), 3 %
                 are delivered twice (an MTA's retry: the second must say `duplicate`)
  replies    20  an agent answers an email case (POST /api/cases/{id}/replies, channel
                 email; the first agent to answer a case keeps it, as claim_for_reply wants)
  presence   20  changes: an agent goes `away` or `busy` for 1-4 s and comes back to
                 `available` (two changes), half over PUT /api/presence, half as the socket's
                 `presence` frame
  board      12  GET /api/sla/board per supervisor (2 per unit: 24 a minute); each
                 supervisor also holds a socket watching `sla`, `presence`, `queue`, `chats`

Before the clock starts, 5 emails per unit file a backlog of cases to reply to. The
arrivals are spaced evenly with jitter (+-40 % of the gap), --warmup s of them first (not
in the latency figures), then exactly rate x --duration of each kind in the measured window.
The generator is open-loop: each flow starts at its time whether or not earlier ones have
finished. After the last arrival it waits for every flow to end and for every expected frame
(at most --drain s), then checks the database.

What must arrive, and is counted (lost = sent and acknowledged but never arrived;
duplicated = arrived more than once; wrong = arrived on another socket):

  screen-pop      each ring -> exactly one `screen_pop` with that call id on the ringing
                  agent's socket
  call update     each answer and hangup -> one `call_update` in that state at the agent
  call feed       each ring, answer and hangup -> one `call_update` at every supervisor
  chat v->a, a->v each message -> one `chat_message` with its client_id at the other side
  chat ack        each message -> one `ack` / `chat_ack` for its client_id at the sender
  chat answered   each chat -> the visitor sees `chat_state` active once
  chat closed     each close -> the visitor sees `chat_state` closed once
  presence        each change -> a `presence` frame with that chosen status on the agent's own
                  socket (duplicates are not told apart from later frames here)
  database        each accepted email -> exactly one inbound interaction with its Message-ID;
                  each reply -> exactly one outbox row with its Message-ID and one outbound
                  interaction with its reference; each acknowledged chat message -> exactly
                  one stored row with its client_id; each call -> its final state; the
                  visitors' seq numbers without gaps

Latency is time.perf_counter() in this one process: from just before the request or frame
is sent to the receipt of the frame (or the HTTP answer) it causes. Errors are non-2xx
answers, refused frames (`error`), `resync` frames (the hub's "events may have been lost"),
socket closes the generator did not ask for, and flows that timed out; counted by kind with
the first message of each. CPU seconds (user + system) and peak RSS (VmHWM) per server
process and for PostgreSQL and this generator come from /proc (psutil, as bench/fanout.py
reads them), over the measured window; the generator's own CPU, its scheduling lag and its
event-loop lag are reported so that a saturated generator is seen, not hidden. Nothing in
the checkout is touched; everything is removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chat as chat_bench
import fanout
import httpx
import lookup

from helpdesk import auth

CTI_TOKEN = "load-cti-token"
MAIL_TOKEN = "load-mail-token"
DID = "0355550100"  # the number customers dial
FIRST_EXTENSION = 3000
TEAMS = ("Billing", "Technical")
SUPPORT = "support@localhost"

AGENTS_PER_UNIT = 20
SUPERVISORS_PER_UNIT = 2
# Per minute and scale unit; `board` is per supervisor.
PER_UNIT = {
    "calls": 30.0,
    "chats": 10.0,
    "emails": 20.0,
    "replies": 20.0,
    "presence": 20.0,
    "board": 12.0,
}
BACKLOG_PER_UNIT = 5
RING_SECONDS = (0.5, 2.0)
TALK_SECONDS = (1.0, 5.0)
THINK_SECONDS = (0.5, 1.5)
BREAK_SECONDS = (1.0, 4.0)
ABANDON_SHARE = 0.05
FOLLOW_UP_SHARE = 0.25
REDELIVER_SHARE = 0.03
TEAM_CHAT_SHARE = 0.2
KNOWN_VISITOR_SHARE = 0.3
END_STATES = ("completed", "missed", "abandoned")
HTTP_RETRIES = 2  # for the idempotent POSTs (CTI events, inbound mail), as their senders retry
CLOSE_WAIT = 10.0

# What must arrive: kind -> what its latency runs from and to.
DELIVERIES = {
    "screen_pop": "screen-pop: ring POST -> agent's frame",
    "call_update": "call update: answer/hangup POST -> agent",
    "call_feed": "call feed: CTI POST -> each supervisor",
    "chat_v2a": "chat visitor->agent: send -> agent",
    "chat_a2v": "chat agent->visitor: send -> visitor",
    "chat_ack": "chat ack: send -> sender's ack",
    "chat_active": "chat answered: 1st message -> active",
    "chat_closed": "chat closed: close -> visitor told",
    "presence": "presence: change -> own socket",
}
HTTP_KINDS = {
    "cti": "POST /api/cti/events",
    "email": "POST /api/mail/inbound",
    "reply": "POST /api/cases/{id}/replies",
    "presence_put": "PUT /api/presence",
    "board": "GET /api/sla/board",
    "chat_close": "POST /api/chats/{id}/close",
}
DB_CHECKS = {
    "email_db": "email -> one interaction (DB)",
    "reply_db": "reply -> one outbox row (DB)",
    "reply_entry_db": "reply -> one interaction (DB)",
    "chat_db": "chat message -> one row (DB)",
    "call_db": "call -> its final state (DB)",
}


# -- what was sent, what arrived ----------------------------------------------------------------


@dataclass
class Expect:
    kind: str
    target: str  # "a<agent index>", "v<conversation>", "s<supervisor index>"
    sent: float  # perf_counter() just before the send
    measured: bool
    failed: bool = False  # the send itself failed: not expected, though it may still arrive
    arrivals: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class KindStats:
    sent: int = 0
    arrived: int = 0
    lost: int = 0
    duplicated: int = 0
    failed: int = 0
    wrong: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "arrived": self.arrived,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "failed": self.failed,
            "wrong_socket": self.wrong,
            "latency_ms": summary_ms(self.latencies_ms),
        }


class Tally:
    """Every event sent that must arrive somewhere, and every arrival, keyed by what names
    the event on the wire (call id, client_id, conversation), plus HTTP timings and errors."""

    def __init__(self) -> None:
        self.expects: dict[tuple[Any, ...], Expect] = {}
        self.unexpected: Counter[str] = Counter()
        self.http_ms: dict[str, list[float]] = {k: [] for k in HTTP_KINDS}
        self.http_sent: Counter[str] = Counter()
        self.http_ok: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.arrived = asyncio.Event()

    def expect(self, kind: str, key: tuple[Any, ...], target: str, measured: bool) -> Expect:
        """Register, just before sending, an event that must arrive at `target`."""
        e = Expect(kind, target, time.perf_counter(), measured)
        self.expects[key] = e
        return e

    def arrive(self, key: tuple[Any, ...], where: str, now: float) -> None:
        e = self.expects.get(key)
        if e is None:
            self.unexpected[str(key[0])] += 1
        else:
            e.arrivals.append((now, where))
            self.arrived.set()

    def error(self, key: str, detail: str = "") -> None:
        self.errors[key] += 1
        if key not in self.samples:
            self.samples[key] = " ".join(detail.split())[:240]

    def waiting(self) -> int:
        """How many expected events have not reached their target yet."""
        return sum(
            1
            for e in self.expects.values()
            if not e.failed and not any(w == e.target for _, w in e.arrivals)
        )

    async def drained(self, at_most: float) -> None:
        """Wait until every expected event has arrived, or `at_most` seconds."""
        deadline = time.perf_counter() + at_most
        while self.waiting():
            self.arrived.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    def deliveries(self) -> dict[str, KindStats]:
        out = {k: KindStats() for k in DELIVERIES}
        for e in self.expects.values():
            s = out[e.kind]
            right = sorted(t for t, w in e.arrivals if w == e.target)
            s.wrong += len(e.arrivals) - len(right)
            if e.failed and not right:
                s.failed += 1
                continue
            s.sent += 1
            if not right:
                s.lost += 1
                continue
            s.arrived += 1
            s.duplicated += len(right) - 1
            if e.measured:
                s.latencies_ms.append((right[0] - e.sent) * 1e3)
        return out


def summary_ms(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "p50": round(fanout.pct(values, 50), 2),
        "p95": round(fanout.pct(values, 95), 2),
        "p99": round(fanout.pct(values, 99), 2),
        "max": round(max(values), 2),
    }


# -- the people ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Staffer:
    """A desk user the generator plays: their socket, and the frames it got by type."""

    index: int
    staff: fanout.Staff
    team: str | None
    ws: Any = None
    frames: Counter[str] = field(default_factory=Counter)
    prefix = "?"  # of `target`, per kind

    @property
    def target(self) -> str:
        return f"{self.prefix}{self.index}"


@dataclass(eq=False)
class Agent(Staffer):
    extension: str = ""
    on_call: bool = False
    on_break: bool = False
    pending_presence: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)
    prefix = "a"


@dataclass(eq=False)
class Supervisor(Staffer):
    prefix = "s"


@dataclass(eq=False)
class Visitor:
    n: int
    ws: Any
    conv: int = 0
    seqs: set[int] = field(default_factory=set)
    repeated_seqs: int = 0
    max_seq: int = 0
    acked_seq: int = 0
    ack_pending: bool = False
    active: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False

    @property
    def target(self) -> str:
        return f"v{self.conv}"


@dataclass
class Seeded:
    agents: list[tuple[fanout.Staff, str, str | None]]  # staff, extension, team
    supervisors: list[tuple[fanout.Staff, str | None]]
    phones: list[tuple[str, str]]  # (national, e164) of customers
    used_digits: set[str]
    emails: list[str]
    customers: int


async def seed(url: str, args: argparse.Namespace) -> Seeded:
    """Customers (lookup.py's generator), two teams, agents with extensions, supervisors.

    Two agents in five belong to a team and every other supervisor is limited to one, so
    the visibility rules (helpdesk/visibility.py) are on the paths the load takes."""
    ds = lookup.generate(args.customers, args.seed)
    await lookup.load(url, ds)
    n_agents = max(2, round(AGENTS_PER_UNIT * args.scale))
    n_supervisors = max(1, round(SUPERVISORS_PER_UNIT * args.scale))
    password_hash = auth.hash_password("load-password-not-used")
    conn = await fanout.raw_connect(url)
    try:
        teams = {
            r["name"]: r["id"]
            for r in await conn.fetch(
                "INSERT INTO teams (name) VALUES ($1), ($2) RETURNING id, name", *TEAMS
            )
        }
        rows = []
        for i in range(n_agents):
            team = TEAMS[i % 5] if i % 5 < len(TEAMS) else None
            rows.append(
                (
                    f"load-agent-{i:05d}@load.example",
                    f"Agent {i:05d}",
                    "agent",
                    password_hash,
                    str(FIRST_EXTENSION + i),
                    teams.get(team or ""),
                )
            )
        for j in range(n_supervisors):
            team = TEAMS[(j // 2) % len(TEAMS)] if j % 2 else None
            rows.append(
                (
                    f"load-supervisor-{j:04d}@load.example",
                    f"Supervisor {j:04d}",
                    "supervisor",
                    password_hash,
                    None,
                    teams.get(team or ""),
                )
            )
        await conn.copy_records_to_table(
            "users",
            records=rows,
            columns=["email", "name", "role", "password_hash", "extension", "team_id"],
        )
        found = await conn.fetch(
            "SELECT id, role, extension, team_id FROM users "
            "WHERE email LIKE 'load-%@load.example' ORDER BY email"
        )
    finally:
        await conn.close()
    team_name = {v: k for k, v in teams.items()}
    agents, supervisors = [], []
    for r in found:
        staff = fanout.Staff(r["id"], r["role"], fanout.mint(r["id"], r["role"]))
        if r["role"] == "agent":
            agents.append((staff, r["extension"], team_name.get(r["team_id"])))
        else:
            supervisors.append((staff, team_name.get(r["team_id"])))
    return Seeded(agents, supervisors, ds.phones, ds.used_digits, ds.emails, len(ds.customers))


async def reset_desk(url: str) -> None:
    """Between configurations (no server running): end the last one's chats and calls."""
    await chat_bench.reset_chats(url)
    conn = await fanout.raw_connect(url)
    try:
        # Everyone signed off (chat.py's reset makes them available): each socket of the next
        # configuration sets its user's status as a first sign-in does (supervisors away).
        await conn.execute("UPDATE agent_presence SET on_call = false, status = 'offline'")
    finally:
        await conn.close()


# -- processes ----------------------------------------------------------------------------------


def helpdesk_command() -> list[str]:
    exe = Path(sys.executable).with_name("helpdesk")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from helpdesk.cli import main; sys.exit(main())"]


def check_worker_command() -> None:
    """--separate-worker needs `helpdesk worker`; say so plainly when this checkout has none."""
    probe = subprocess.run(
        [*helpdesk_command(), "worker", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        detail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(
            "--separate-worker needs the `helpdesk worker` command, and `helpdesk worker "
            f"--help` failed here ({detail[0]}); run without --separate-worker, or after the "
            "worker command has landed"
        )


def start_worker(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """One `helpdesk worker` (outbox, SLA, chat routing, ...) beside background-less serves."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HELPDESK_DATABASE_URL": url,
        "HELPDESK_DATA_DIR": str(data_dir),
        "HELPDESK_SECRET_KEY": fanout.SECRET,
        "HELPDESK_PRESENCE_GRACE_SECONDS": "600",
    }
    env.pop("HELPDESK_BACKGROUND", None)
    log = data_dir / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*helpdesk_command(), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return proc, log


def start_servers(
    url: str, work_dir: Path, processes: int, separate_worker: bool
) -> list[fanout.Server]:
    """P `helpdesk serve` processes on their own ports (fanout.start_server passes our
    environment on: the CTI and mail tokens, and HELPDESK_BACKGROUND=0 with a worker)."""
    os.environ["HELPDESK_CTI_TOKEN"] = CTI_TOKEN
    os.environ["HELPDESK_MAIL_TOKEN"] = MAIL_TOKEN
    if separate_worker:
        os.environ["HELPDESK_BACKGROUND"] = "0"
    try:
        return [
            fanout.start_server(url, work_dir / f"p{processes}-server{i}") for i in range(processes)
        ]
    finally:
        os.environ.pop("HELPDESK_BACKGROUND", None)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


LOG_ERROR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")
# The line of a traceback that names the exception ("sqlalchemy.exc.DBAPIError: ...").
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")


def log_problems(path: Path) -> dict[str, Any]:
    """A process's log, summarized: its ERROR lines (JSON `level` ERROR or CRITICAL, or a
    traceback) counted by what went wrong (message and the exception's last line), and its
    WARNING messages counted by text."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"errors": 0, "error_kinds": {}, "warnings": {}}
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    warnings: Counter[str] = Counter()

    def count_error(text: str) -> None:
        # Grouped with quoted values and numbers masked: one failure, many addresses.
        key = re.sub(r"\d+", "#", re.sub(r"'[^']*'", "'…'", text))[:300]
        errors[key] += 1
        examples.setdefault(key, text[:400])

    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            level = str(entry.get("level", "")).upper()
            text = f"{entry.get('logger', '')}: {str(entry.get('message', '')).strip()}"
            if level in ("ERROR", "CRITICAL"):
                raised = [
                    line
                    for line in str(entry.get("exc_info") or "").splitlines()
                    if EXCEPTION_LINE.match(line)
                ]
                count_error(text + (f" -- {raised[-1]}" if raised else ""))
            elif level == "WARNING":
                warnings[text[:200]] += 1
        elif LOG_ERROR.search(line):
            count_error(line.strip())
    return {
        "errors": sum(errors.values()),
        "error_kinds": {k: {"count": n, "example": examples[k]} for k, n in errors.most_common()},
        "warnings": dict(warnings.most_common()),
    }


def peak_rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, LookupError):
            total += fanout.proc_status_kb(pid, "VmHWM") / 1024
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, LookupError):
            total += fanout.proc_status_kb(pid, "VmRSS") / 1024
    return total


# -- the day ------------------------------------------------------------------------------------


def arrivals(per_minute: float, start: float, seconds: float, rng: random.Random) -> list[float]:
    """round(rate x seconds) instants in [start, start + seconds), evenly spaced with jitter:
    the measured window holds a known count (achieved is judged against it), and the jitter
    still lets arrivals bunch up as real ones do."""
    n = round(per_minute * seconds / 60)
    if n <= 0:
        return []
    gap = seconds / n
    return sorted(
        start + min(seconds - 1e-3, max(0.0, (i + 0.5 + rng.uniform(-0.4, 0.4)) * gap))
        for i in range(n)
    )


class Desk:
    """One configuration's run: the servers, the people on them, the load and the tally."""

    def __init__(
        self,
        args: argparse.Namespace,
        servers: list[fanout.Server],
        seeded: Seeded,
        tag: str,
        config_index: int,
        postmaster: int | None,
    ) -> None:
        self.args = args
        self.servers = servers
        self.seeded = seeded
        self.tag = tag
        self.config_index = config_index
        # The same seed for every process count: each plays the same day, so the comparison
        # table compares like with like.
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.agents = [
            Agent(i, s, team, extension=ext) for i, (s, ext, team) in enumerate(seeded.agents)
        ]
        self.supervisors = [
            Supervisor(j, s, team) for j, (s, team) in enumerate(seeded.supervisors)
        ]
        per_client = 200
        self.clients = [
            httpx.AsyncClient(
                base_url=s.base,
                trust_env=False,
                timeout=30,
                limits=httpx.Limits(
                    max_connections=per_client, max_keepalive_connections=per_client
                ),
            )
            for s in servers
        ]
        self._round_robin = itertools.count()
        self.tasks: set[asyncio.Task[None]] = set()
        self.readers: list[asyncio.Task[None]] = []
        self.closing = False
        self.visitors: dict[int, Visitor] = {}
        self.holder: dict[int, Agent] = {}
        self.accepted: dict[int, asyncio.Event] = {}
        self.offers = 0
        self.email_cases: list[int] = []
        self.case_sender: dict[int, tuple[str, str]] = {}  # case -> (address, subject)
        self.case_owner: dict[int, Agent] = {}
        self.reply_threads: list[tuple[int, str]] = []  # (case, our Message-ID)
        self.emails_ok: dict[str, str] = {}  # Message-ID -> status answered
        self.emails_failed: set[str] = set()
        self.replies_ok: dict[str, str] = {}  # our reference -> Message-ID of the reply
        self.replies_failed: set[str] = set()
        self.chat_failed: set[str] = set()
        self.calls_failed: set[str] = set()
        self.chat_ok: set[str] = set()  # client_ids sent without an error
        self.calls: dict[str, str] = {}  # call id -> the final state it must reach
        self.scheduled: Counter[str] = Counter()  # flows due in the measured window
        self.started: Counter[str] = Counter()  # flows started in the measured window
        self.started_all: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.lags_ms: list[float] = []
        self.loop_lag_ms: list[float] = []
        self.chat_messages_sent: Counter[str] = Counter()
        self.visitor_addresses = itertools.count(1)
        self.window_span = 0.0  # seconds from the window's start to its last flow's start
        self.marks: dict[str, Any] = {}  # CPU snapshots and perf_counter() instants
        self.pids: dict[str, list[int]] = {}  # "server 1", "worker" -> process tree
        self.postmaster = postmaster

    # -- plumbing -----------------------------------------------------------------------------

    def next_server(self) -> int:
        return next(self._round_robin) % len(self.servers)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as exc:
            self.tally.error(f"generator: {type(exc).__name__} in a flow", repr(exc))

    async def http(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        measured: bool,
        token: str,
        retries: int = 0,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One request to the next process round-robin; its latency when 2xx, else an error.
        With `retries` (idempotent requests only) a 5xx or a broken connection is sent again,
        to the next process, as a PBX bridge or an MTA would."""
        label = HTTP_KINDS[kind]
        started = time.perf_counter()
        for _ in range(retries + 1):
            client = self.clients[self.next_server()]
            self.tally.http_sent[kind] += 1
            try:
                resp = await client.request(
                    method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
                )
            except httpx.HTTPError as exc:
                self.tally.error(f"{label}: {type(exc).__name__}", str(exc))
                continue
            if 200 <= resp.status_code < 300:
                self.tally.http_ok[kind] += 1
                if measured:
                    self.tally.http_ms[kind].append((time.perf_counter() - started) * 1e3)
                return resp
            self.tally.error(f"{label}: HTTP {resp.status_code}", resp.text)
            if resp.status_code < 500:
                return None
        return None

    def accepted_event(self, conv: int) -> asyncio.Event:
        return self.accepted.setdefault(conv, asyncio.Event())

    # -- sockets ------------------------------------------------------------------------------

    async def open_sockets(self) -> float:
        """Every agent and supervisor online, round-robin over the processes; seconds taken."""
        started = time.perf_counter()
        sem = asyncio.Semaphore(50)

        async def open_one(person: Agent | Supervisor) -> None:
            server = self.servers[self.next_server()]
            async with sem:
                ws, _hello = await fanout.open_agent_socket(
                    server.ws, person.staff.token, deflate=False
                )
            person.ws = ws
            if isinstance(person, Supervisor):
                topics = ["sla", "presence", "queue", "chats"]
                await ws.send(json.dumps({"type": "watch", "topics": topics}))
                self.readers.append(asyncio.create_task(self.supervisor_reader(person)))
            else:
                self.readers.append(asyncio.create_task(self.agent_reader(person)))

        await asyncio.gather(*(open_one(p) for p in [*self.agents, *self.supervisors]))
        return time.perf_counter() - started

    async def _read(
        self,
        ws: Any,
        who: str,
        on_frame: Callable[[dict[str, Any], float], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> None:
        """Hand every frame to `on_frame` with its receipt time; a close nobody asked for is
        an error, and so is a frame this generator could not handle (never silently deaf)."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                now = time.perf_counter()
                await on_frame(json.loads(raw), now)
        except ConnectionClosed as exc:
            if not self.closing and not closing():
                rcvd = exc.rcvd
                reason = f"{rcvd.code} {rcvd.reason}" if rcvd else "1006 (no close frame)"
                self.tally.error(f"{who} socket closed by the server: {reason}", str(exc))
        except Exception as exc:
            self.tally.error(
                f"generator: {who} socket reader failed: {type(exc).__name__}", repr(exc)
            )

    async def agent_reader(self, a: Agent) -> None:
        async def on_frame(f: dict[str, Any], now: float) -> None:
            kind = str(f.get("type"))
            a.frames[kind] += 1
            if kind == "screen_pop":
                self.tally.arrive(("pop", f["call"]["call_id"]), a.target, now)
            elif kind == "call_update":
                state = f.get("state")
                if state == "answered":
                    self.tally.arrive(("call", f["call_id"], "answered"), a.target, now)
                elif state in END_STATES:
                    self.tally.arrive(("call", f["call_id"], "end"), a.target, now)
            elif kind == "chat_offered":
                self.offers += 1
                conv = f["conversation"]["id"]
                await a.ws.send(json.dumps({"type": "chat_accept", "conversation": conv}))
            elif kind == "chat_accepted":
                conv = f["conversation"]["id"]
                self.holder[conv] = a
                self.accepted_event(conv).set()
            elif kind == "chat_message":
                cid = f.get("client_id")
                if f.get("from") == "visitor" and cid:
                    self.tally.arrive(("msg", cid), a.target, now)
            elif kind == "chat_ack":
                if f.get("client_id"):
                    self.tally.arrive(("ack", f["client_id"]), a.target, now)
            elif kind == "presence":
                if f.get("user_id") == a.staff.id:
                    for i, (key, status) in enumerate(a.pending_presence):
                        if f.get("chosen") == status:
                            self.tally.arrive(key, a.target, now)
                            del a.pending_presence[i]
                            break
            else:
                await self._staff_frame(a.ws, "agent", kind, f)

        await self._read(a.ws, "agent", on_frame, lambda: False)

    async def _staff_frame(self, ws: Any, who: str, kind: str, f: dict[str, Any]) -> None:
        """What every staff socket does with a heartbeat, an error or a resync frame."""
        if kind == "ping":
            await ws.send('{"type":"pong"}')
        elif kind == "error":
            self.tally.error(
                f"{who} socket: error frame (ref {f.get('ref')})", str(f.get("message"))
            )
        elif kind == "resync":
            self.tally.error(f"{who} socket: resync ({f.get('reason')})", json.dumps(f))

    async def supervisor_reader(self, s: Supervisor) -> None:
        async def on_frame(f: dict[str, Any], now: float) -> None:
            kind = str(f.get("type"))
            s.frames[kind] += 1
            if kind == "call_update":
                state = f.get("state")
                step = "end" if state in END_STATES else state
                self.tally.arrive(("feed", s.index, f["call_id"], step), s.target, now)
            else:
                await self._staff_frame(s.ws, "supervisor", kind, f)

        await self._read(s.ws, "supervisor", on_frame, lambda: False)

    async def visitor_reader(self, v: Visitor) -> None:
        async def on_frame(f: dict[str, Any], now: float) -> None:
            kind = f.get("type")
            if kind == "chat_message":
                seq = int(f.get("seq") or 0)
                if seq in v.seqs:
                    v.repeated_seqs += 1
                v.seqs.add(seq)
                cid = f.get("client_id")
                if f.get("from") == "agent" and cid:
                    self.tally.arrive(("msg", cid), v.target, now)
                if seq > v.max_seq:
                    v.max_seq = seq
                    if not v.ack_pending:  # the widget acks the highest seq 200 ms later
                        v.ack_pending = True
                        asyncio.get_running_loop().call_later(0.2, self._visitor_ack, v)
            elif kind == "ack":
                if f.get("client_id"):
                    self.tally.arrive(("ack", f["client_id"]), v.target, now)
            elif kind == "chat_state":
                if f.get("state") == "active":
                    self.tally.arrive(("active", v.conv), v.target, now)
                    v.active.set()
                elif f.get("state") in ("closed", "abandoned"):
                    self.tally.arrive(("closed", v.conv), v.target, now)
                    v.ended.set()
            elif kind == "ping":
                await v.ws.send('{"type":"pong"}')
            elif kind == "error":
                self.tally.error(f"visitor socket: error frame ({f.get('code')})", str(f))

        await self._read(v.ws, "visitor", on_frame, lambda: v.closing)

    def _visitor_ack(self, v: Visitor) -> None:
        v.ack_pending = False
        if v.max_seq > v.acked_seq and not v.closing:
            v.acked_seq = v.max_seq
            task = asyncio.ensure_future(v.ws.send(json.dumps({"type": "ack", "seq": v.max_seq})))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # -- flows --------------------------------------------------------------------------------

    def free_agent(self) -> Agent | None:
        free = [a for a in self.agents if a.ws is not None and not a.on_call and not a.on_break]
        return self.rng.choice(free) if free else None

    async def cti(self, event: dict[str, Any], measured: bool) -> bool:
        event["at"] = datetime.now(UTC).isoformat()
        resp = await self.http(
            "cti",
            "POST",
            "/api/cti/events",
            measured=measured,
            token=CTI_TOKEN,
            retries=HTTP_RETRIES,
            json=event,
        )
        return resp is not None

    async def call_flow(self, n: int, measured: bool) -> None:
        """Ring a free agent's extension, answer, talk, hang up (or the caller gives up)."""
        agent = self.free_agent()
        if agent is None:
            self.skipped["call: no free agent"] += 1
            return
        agent.on_call = True
        try:
            call_id = f"{self.tag}-c{n}"
            if self.rng.random() < self.args.unknown_callers:
                while True:
                    number = lookup.new_number(self.rng)
                    if number.replace("-", "") not in self.seeded.used_digits:
                        break
            else:
                number = self.rng.choice(self.seeded.phones)[0]
            base = {"call_id": call_id, "direction": "in", "from": number, "to": DID}
            abandon = self.rng.random() < ABANDON_SHARE
            self.calls[call_id] = "abandoned" if abandon else "completed"

            steps = [("ring", "ringing")]
            steps += [("hangup", "end")] if abandon else [("answer", "answered"), ("hangup", "end")]
            for i, (event, step) in enumerate(steps):
                if i:
                    pause = RING_SECONDS if step == "answered" or abandon else TALK_SECONDS
                    await asyncio.sleep(self.rng.uniform(*pause))
                expects = [
                    self.tally.expect(
                        "call_feed", ("feed", s.index, call_id, step), s.target, measured
                    )
                    for s in self.supervisors
                ]
                if step == "ringing":
                    expects.append(
                        self.tally.expect("screen_pop", ("pop", call_id), agent.target, measured)
                    )
                else:
                    expects.append(
                        self.tally.expect(
                            "call_update", ("call", call_id, step), agent.target, measured
                        )
                    )
                body = {**base, "event": event, "agent": agent.extension}
                if event == "hangup":
                    body["cause"] = "cancel" if abandon else "normalClearing"
                if not await self.cti(body, measured):
                    for e in expects:
                        e.failed = True
                    self.calls.pop(call_id, None)
                    self.calls_failed.add(call_id)
                    return
        finally:
            agent.on_call = False

    async def chat_flow(self, n: int, measured: bool) -> None:
        """A visitor's chat from hello to close, with an agent answering (see the docstring)."""
        from websockets.asyncio.client import connect

        server = self.servers[self.next_server()]
        k = next(self.visitor_addresses)
        address = f"10.{self.config_index + 1}.{(k >> 8) & 255}.{k & 255}"
        try:
            ws = await connect(
                server.base.replace("http://", "ws://") + "/ws/chat",
                additional_headers={"X-Forwarded-For": address},
                compression=None,
                ping_interval=None,
                open_timeout=30,
                max_size=None,
            )
        except Exception as exc:
            self.tally.error(f"chat: visitor socket did not open: {type(exc).__name__}", str(exc))
            return
        v = Visitor(n, ws)
        reader: asyncio.Task[None] | None = None
        try:
            visitor: dict[str, Any] = {"name": f"Visitor {self.tag}-{n}", "id": f"{self.tag}-v{n}"}
            if self.seeded.emails and self.rng.random() < KNOWN_VISITOR_SHARE:
                visitor["email"] = self.rng.choice(self.seeded.emails)
            hello: dict[str, Any] = {
                "type": "hello",
                "visitor": visitor,
                "page": "https://shop.example/help",
            }
            if self.rng.random() < TEAM_CHAT_SHARE:
                hello["team"] = self.rng.choice(TEAMS)
            await ws.send(json.dumps(hello))
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if f.get("type") == "welcome":
                    break
                if f.get("type") in ("offline", "error"):
                    self.tally.error(f"chat: hello answered {f.get('type')}", json.dumps(f))
                    return
            v.conv = int(f["conversation"])
            self.visitors[v.conv] = v
            reader = asyncio.create_task(self.visitor_reader(v))

            first = f"{self.tag}-h{n}"
            self.tally.expect("chat_active", ("active", v.conv), v.target, measured)
            self.tally.expect("chat_ack", ("ack", first), v.target, measured)
            await ws.send(json.dumps({"type": "message", "client_id": first, "body": "こんにちは"}))
            self.chat_ok.add(first)
            self.chat_messages_sent["visitor"] += 1
            try:
                await asyncio.wait_for(v.active.wait(), self.args.chat_wait)
                await asyncio.wait_for(self.accepted_event(v.conv).wait(), self.args.chat_wait)
            except TimeoutError:
                self.tally.error(
                    f"chat: not answered within {self.args.chat_wait:g} s",
                    f"conversation {v.conv}, offers so far {self.offers}",
                )
                return
            agent = self.holder[v.conv]

            for i in range(self.args.chat_messages):
                await asyncio.sleep(self.rng.uniform(*THINK_SECONDS))
                cid = f"{self.tag}-m{n}.{i}"
                if i % 2 == 0:  # the agent speaks first: the visitor has said hello
                    frame = {
                        "type": "chat_send",
                        "conversation": v.conv,
                        "client_id": cid,
                        "body": f"お待たせしました。ご用件をどうぞ ({cid})",
                    }
                    e1 = self.tally.expect("chat_a2v", ("msg", cid), v.target, measured)
                    e2 = self.tally.expect("chat_ack", ("ack", cid), agent.target, measured)
                    sock, who = agent.ws, "agent"
                else:
                    frame = {"type": "message", "client_id": cid, "body": f"注文の件です ({cid})"}
                    e1 = self.tally.expect("chat_v2a", ("msg", cid), agent.target, measured)
                    e2 = self.tally.expect("chat_ack", ("ack", cid), v.target, measured)
                    sock, who = ws, "visitor"
                try:
                    await sock.send(json.dumps(frame, ensure_ascii=False))
                except Exception as exc:
                    e1.failed = e2.failed = True
                    self.chat_failed.add(cid)
                    self.tally.error(f"chat: {who} send failed: {type(exc).__name__}", str(exc))
                    continue
                self.chat_ok.add(cid)
                self.chat_messages_sent[who] += 1

            await asyncio.sleep(self.rng.uniform(*THINK_SECONDS))
            closed = self.tally.expect("chat_closed", ("closed", v.conv), v.target, measured)
            if n % 2:
                resp = await self.http(
                    "chat_close",
                    "POST",
                    f"/api/chats/{v.conv}/close",
                    measured=measured,
                    token=agent.staff.token,
                )
                closed.failed = resp is None
            else:
                await ws.send('{"type":"close"}')
            with contextlib.suppress(TimeoutError):  # if never told: lost, in the tally
                await asyncio.wait_for(v.ended.wait(), CLOSE_WAIT)
        finally:
            v.closing = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 10)
            if reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, 5)

    def email_bytes(
        self, mid: str, sender: str, subject: str, body: str, in_reply_to: str | None
    ) -> bytes:
        msg = EmailMessage()
        msg["From"] = f"お客様 <{sender}>"
        msg["To"] = SUPPORT
        msg["Subject"] = subject
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = f"<{mid}>"
        if in_reply_to:
            msg["In-Reply-To"] = f"<{in_reply_to}>"
            msg["References"] = f"<{in_reply_to}>"
        msg.set_content(body)
        # An address with an internationalized domain (例え.jp) travels as SMTPUTF8 mail:
        # raw UTF-8 headers, as such an MTA hands it over.
        return msg.as_bytes(policy=SMTP if sender.isascii() else SMTPUTF8)

    async def email_flow(self, n: int, measured: bool) -> None:
        """A customer's mail through the MTA pipe: new, or an answer to one of our replies."""
        mid = f"load-{self.tag}-{n}@customers.example"
        thread = None
        if self.reply_threads and self.rng.random() < FOLLOW_UP_SHARE:
            case_id, thread = self.rng.choice(self.reply_threads)
            sender, subject = self.case_sender[case_id]
            subject, want = f"Re: {subject}", ("appended", "reopened")
        else:
            sender = self.rng.choice(self.seeded.emails)
            subject, want = f"注文 {n} の配送について", ("created",)
        body = f"お世話になっております。\n注文 {n} の件でご連絡しました。\n\n-- \n{sender}\n"
        raw = self.email_bytes(mid, sender, subject, body, thread)
        resp = await self.http(
            "email",
            "POST",
            "/api/mail/inbound",
            measured=measured,
            token=MAIL_TOKEN,
            retries=HTTP_RETRIES,
            content=raw,
        )
        if resp is None:
            self.emails_failed.add(mid)
            return
        answer = resp.json()
        status = answer.get("status")
        self.emails_ok[mid] = str(status)
        if status not in want:
            self.tally.error(
                f"email: answered {status}, expected {' or '.join(want)}", json.dumps(answer)
            )
        if status == "created" and answer.get("case_id"):
            case_id = int(answer["case_id"])
            self.email_cases.append(case_id)
            self.case_sender[case_id] = (sender, subject)
        if self.rng.random() < REDELIVER_SHARE:
            again = await self.http(
                "email",
                "POST",
                "/api/mail/inbound",
                measured=measured,
                token=MAIL_TOKEN,
                retries=HTTP_RETRIES,
                content=raw,
            )
            if again is not None and again.json().get("status") != "duplicate":
                self.tally.error("email: redelivery not answered duplicate", again.text)

    async def reply_flow(self, n: int, measured: bool) -> None:
        """An agent answers an email case; the first to answer a case keeps it."""
        if not self.email_cases:
            self.skipped["reply: no email case yet"] += 1
            return
        case_id = self.rng.choice(self.email_cases)
        agent = self.case_owner.setdefault(case_id, self.rng.choice(self.agents))
        ref = f"{self.tag}-r{n}"
        body = (
            f"お問い合わせありがとうございます。確認して折り返しご連絡いたします。\nLOADREF {ref}"
        )
        resp = await self.http(
            "reply",
            "POST",
            f"/api/cases/{case_id}/replies",
            measured=measured,
            token=agent.staff.token,
            json={"body": body, "channel": "email"},
        )
        if resp is None:
            self.replies_failed.add(ref)
            return
        message_id = str(resp.json().get("message_id") or "").strip("<>")
        self.replies_ok[ref] = message_id
        self.reply_threads.append((case_id, message_id))

    async def presence_flow(self, n: int, measured: bool) -> None:
        """A break: `away` or `busy` for a few seconds, then `available` again."""
        free = [a for a in self.agents if not a.on_call and not a.on_break and a.ws is not None]
        if not free:
            self.skipped["presence: nobody free for a break"] += 1
            return
        agent = self.rng.choice(free)
        agent.on_break = True
        try:
            for step, status in enumerate((self.rng.choice(("away", "busy")), "available")):
                if step:
                    await asyncio.sleep(self.rng.uniform(*BREAK_SECONDS))
                key = ("presence", agent.index, n, step)
                e = self.tally.expect("presence", key, agent.target, measured)
                agent.pending_presence.append((key, status))
                if self.rng.random() < 0.5:
                    resp = await self.http(
                        "presence_put",
                        "PUT",
                        "/api/presence",
                        measured=measured,
                        token=agent.staff.token,
                        json={"status": status},
                    )
                    e.failed = resp is None
                else:
                    try:
                        await agent.ws.send(json.dumps({"type": "presence", "status": status}))
                    except Exception as exc:
                        e.failed = True
                        self.tally.error(f"presence frame failed: {type(exc).__name__}", str(exc))
        finally:
            agent.on_break = False

    async def board_flow(self, n: int, measured: bool) -> None:
        s = self.supervisors[n % len(self.supervisors)]
        await self.http("board", "GET", "/api/sla/board", measured=measured, token=s.staff.token)

    # -- the schedule -------------------------------------------------------------------------

    def schedule(self) -> dict[str, list[float]]:
        args, rng = self.args, self.rng
        rates = self.requested_per_minute()
        rates["presence"] /= 2  # a break is two changes
        out = {}
        for kind, per_min in rates.items():
            window = arrivals(per_min, args.warmup, args.duration, rng)
            out[kind] = arrivals(per_min, 0.0, args.warmup, rng) + window
            self.scheduled[kind] = len(window)
        return out

    def requested_per_minute(self) -> dict[str, float]:
        rates = {k: v * self.args.scale for k, v in PER_UNIT.items()}
        rates["board"] = PER_UNIT["board"] * len(self.supervisors)
        return rates

    async def backlog(self) -> None:
        """The morning's mail, filed before the clock starts, so replies have cases at once."""
        n = max(1, round(BACKLOG_PER_UNIT * self.args.scale))
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> None:
            async with sem:
                await self.email_flow(1_000_000 + i, False)

        await asyncio.gather(*(one(i) for i in range(n)))

    async def play(self) -> None:
        """Start every flow at its time (open loop), then wait for all of them to end."""
        flows = {
            "calls": self.call_flow,
            "chats": self.chat_flow,
            "emails": self.email_flow,
            "replies": self.reply_flow,
            "presence": self.presence_flow,
            "board": self.board_flow,
        }
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        warmup, end = self.args.warmup, self.args.warmup + self.args.duration
        last_start: list[float] = [t0 + warmup]

        async def player(kind: str, times: list[float]) -> None:
            for n, t in enumerate(times):
                delay = t0 + t - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                measured = t >= warmup
                self.started_all[kind] += 1
                if measured:
                    self.started[kind] += 1
                    self.lags_ms.append((loop.time() - t0 - t) * 1e3)
                    last_start[0] = max(last_start[0], loop.time())
                self.spawn(flows[kind](n, measured))

        async def loop_monitor() -> None:
            while not self.closing:
                before = loop.time()
                await asyncio.sleep(0.05)
                self.loop_lag_ms.append((loop.time() - before - 0.05) * 1e3)

        monitor = asyncio.create_task(loop_monitor())
        schedule = self.schedule()
        players = [asyncio.create_task(player(k, ts)) for k, ts in schedule.items()]
        await asyncio.sleep(max(0.0, t0 + warmup - loop.time()))
        self.marks["m0"] = self.cpu_snapshot()
        self.marks["m0_wall"] = time.perf_counter()
        await asyncio.sleep(max(0.0, t0 + end - loop.time()))
        await asyncio.gather(*players)
        self.marks["m1"] = self.cpu_snapshot()
        self.marks["m1_wall"] = time.perf_counter()
        self.window_span = max(self.args.duration, last_start[0] - t0 - warmup)

        deadline = loop.time() + self.args.flow_timeout
        while self.tasks and loop.time() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - loop.time())
        if self.tasks:
            self.tally.error(
                f"generator: {len(self.tasks)} flows still running after "
                f"{self.args.flow_timeout:g} s; cancelled"
            )
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.tally.drained(self.args.drain)
        await asyncio.sleep(0.5)  # a late duplicate still counts
        self.marks["end"] = self.cpu_snapshot()
        self.marks["end_wall"] = time.perf_counter()
        self.closing = True
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor

    # -- processes ----------------------------------------------------------------------------

    def cpu_snapshot(self) -> dict[str, dict[int, float]]:
        snap = {name: fanout.cpu_seconds(pids) for name, pids in self.pids.items()}
        snap["PostgreSQL"] = fanout.cpu_seconds(fanout.postgres_pids(self.postmaster))
        snap["generator"] = fanout.cpu_seconds([os.getpid()])
        return snap

    async def close(self) -> None:
        self.closing = True
        for person in [*self.agents, *self.supervisors]:
            if person.ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(person.ws.close(), 5)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        for client in self.clients:
            await client.aclose()


# -- the database after the run -----------------------------------------------------------------


async def verify(url: str, desk: Desk) -> dict[str, dict[str, Any]]:
    """What the database holds for this run, against what the generator was told.

    Lost = acknowledged to the sender (2xx, ack) but not stored; duplicated = stored more than
    once; `extra` = stored although the sender saw a failure (harmless: the sender retried or
    would have)."""
    tag = desk.tag
    conn = await fanout.raw_connect(url)

    async def tally(sql: str, arg: Any) -> dict[str, Any]:
        """Rows of (key, value) as a dict: how often each key was stored, or its state."""
        return {r[0]: r[1] for r in await conn.fetch(sql, arg)}

    try:
        emails = await tally(
            "SELECT meta->>'message_id', count(*) FROM interactions "
            "WHERE kind = 'email' AND direction = 'in' AND meta->>'message_id' LIKE $1 "
            "GROUP BY 1",
            f"load-{tag}-%",
        )
        outbox = await tally(
            "SELECT message_id, count(*) FROM mail_outbox "
            "WHERE message_id = ANY($1::text[]) GROUP BY 1",
            list(desk.replies_ok.values()),
        )
        entries = await tally(
            "SELECT substring(text from 'LOADREF ([A-Za-z0-9._:-]+)'), count(*) "
            "FROM interactions WHERE kind = 'email' AND direction = 'out' AND text LIKE $1 "
            "GROUP BY 1",
            f"%LOADREF {tag}-%",
        )
        chats = await tally(
            "SELECT client_id, count(*) FROM chat_messages WHERE client_id LIKE $1 GROUP BY 1",
            f"{tag}-%",
        )
        calls = await tally("SELECT call_id, state FROM calls WHERE call_id LIKE $1", f"{tag}-%")
    finally:
        await conn.close()

    def compare(expected: set[str], found: dict[str, int], failed: set[str]) -> dict[str, Any]:
        return {
            "sent": len(expected),
            "failed": len(failed - expected),
            "found": sum(1 for k in expected if found.get(k)),
            "lost": sum(1 for k in expected if not found.get(k)),
            "duplicated": sum(n - 1 for n in found.values() if n > 1),
            "extra": sum(1 for k in found if k not in expected and k in failed),
            "unknown": sum(1 for k in found if k not in expected and k not in failed),
        }

    ok_emails = set(desk.emails_ok)
    out = {
        "email_db": compare(ok_emails, emails, desk.emails_failed),
        "reply_db": compare(set(desk.replies_ok.values()), outbox, set()),
        "reply_entry_db": compare(set(desk.replies_ok), entries, desk.replies_failed),
        "chat_db": compare(desk.chat_ok, chats, desk.chat_failed),
    }
    wrong_state = sum(1 for cid, want in desk.calls.items() if calls.get(cid) != want)
    out["call_db"] = {
        "sent": len(desk.calls),
        "failed": len(desk.calls_failed),
        "found": sum(1 for cid in desk.calls if cid in calls),
        "lost": sum(1 for cid in desk.calls if cid not in calls),
        "duplicated": 0,  # call_id is unique in the table
        "wrong_state": wrong_state,
        "states": dict(Counter(calls.values())),
    }
    return out


# -- one configuration --------------------------------------------------------------------------


async def run_config(
    args: argparse.Namespace,
    url: str,
    work_dir: Path,
    seeded: Seeded,
    processes: int,
    config_index: int,
    postmaster: int | None,
) -> dict[str, Any]:
    print(f"\n== {processes} app process(es): starting ...", flush=True)
    if config_index:
        await reset_desk(url)
    tag = f"L{int(time.time()) % 1_000_000}p{processes}"
    servers = start_servers(url, work_dir, processes, args.separate_worker)
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None
    if args.separate_worker:
        worker, worker_log = start_worker(url, work_dir / f"p{processes}-worker")
    desk = Desk(args, servers, seeded, tag, config_index, postmaster)
    hub: list[dict[str, Any]] = []
    procs: list[dict[str, Any]] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(fanout.wait_ready, s) for s in servers))
        for i, s in enumerate(servers):  # ready, and each answering on its own port
            if s.proc.poll() is not None:
                raise RuntimeError(f"server {i + 1} exited:\n{s.log.read_text()[-2000:]}")
        if worker is not None and worker.poll() is not None:
            assert worker_log is not None
            raise RuntimeError(f"helpdesk worker exited:\n{worker_log.read_text()[-2000:]}")
        desk.pids = {
            f"server {i + 1}": fanout.process_tree(s.proc.pid) for i, s in enumerate(servers)
        }
        if worker is not None:
            desk.pids["worker"] = fanout.process_tree(worker.pid)
        open_s = await desk.open_sockets()
        print(
            f"   {len(desk.agents)} agents and {len(desk.supervisors)} supervisors online in "
            f"{open_s:.1f} s; filing the backlog ...",
            flush=True,
        )
        await desk.backlog()
        print(
            f"   playing {args.warmup:g} s warmup + {args.duration:g} s measured at scale "
            f"{args.scale:g} ...",
            flush=True,
        )
        await desk.play()
        for s in servers:
            with contextlib.suppress(Exception):
                hub.append(await fanout.hub_stats(s, desk.supervisors[0].staff))
        for name, pids in desk.pids.items():
            procs.append({"name": name, "rss_mb": rss_mb(pids), "peak_rss_mb": peak_rss_mb(pids)})
    finally:
        await desk.close()
        for s in servers:
            fanout.stop_server(s)
        if worker is not None:
            stop_process(worker)
    print("   checking the database ...", flush=True)
    checks = await verify(url, desk)
    logs: dict[str, dict[str, Any]] = {
        f"server {i + 1}": log_problems(s.log) for i, s in enumerate(servers)
    }
    if worker_log is not None:
        logs["worker"] = log_problems(worker_log)
    if args.logs:
        named = {f"p{processes}-server{i + 1}.log": s.log for i, s in enumerate(servers)}
        if worker_log is not None:
            named[f"p{processes}-worker.log"] = worker_log
        keep_logs(Path(args.logs), named)
    return figures(desk, processes, checks, hub, procs, logs)


def keep_logs(into: Path, logs: dict[str, Path]) -> None:
    """Copy the processes' logs out of the temp dir, which is removed at exit."""
    into.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        shutil.copy(path, into / name)


def write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def cpu_between(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    return {name: fanout.cpu_delta(before.get(name, {}), after[name]) for name in after}


def figures(
    desk: Desk,
    processes: int,
    checks: dict[str, dict[str, Any]],
    hub: list[dict[str, Any]],
    procs: list[dict[str, Any]],
    logs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Everything one configuration measured, as plain data (printed, and --json)."""
    marks = desk.marks
    window_wall = marks["m1_wall"] - marks["m0_wall"]
    run_wall = marks["end_wall"] - marks["m0_wall"]
    cpu_window = cpu_between(marks["m0"], marks["m1"])
    cpu_run = cpu_between(marks["m0"], marks["end"])
    for p in procs:
        p["cpu_s_window"] = round(cpu_window.get(p["name"], 0.0), 2)
        p["cpu_pct_window"] = round(100 * cpu_window.get(p["name"], 0.0) / window_wall, 1)
        p["cpu_s_run"] = round(cpu_run.get(p["name"], 0.0), 2)
    for name in ("PostgreSQL", "generator"):
        procs.append(
            {
                "name": name,
                "cpu_s_window": round(cpu_window[name], 2),
                "cpu_pct_window": round(100 * cpu_window[name] / window_wall, 1),
                "cpu_s_run": round(cpu_run[name], 2),
                "rss_mb": rss_mb([os.getpid()]) if name == "generator" else None,
                "peak_rss_mb": peak_rss_mb([os.getpid()]) if name == "generator" else None,
            }
        )
    requested = desk.requested_per_minute()
    span = desk.window_span
    rates = {}
    for kind, per_min in requested.items():
        each = 2 if kind == "presence" else 1  # a break is two presence changes
        rates[kind] = {
            "requested_per_min": round(per_min, 2),
            # round(rate x duration): what a short window can hold of the requested rate
            "scheduled_in_window": desk.scheduled[kind] * each,
            "started_in_window": desk.started[kind] * each,
            "achieved_per_min": round(desk.started[kind] * each * 60 / span, 2),
            "started_total": desk.started_all[kind] * each,
        }
    deliveries = desk.tally.deliveries()
    gaps = sum(max(0, v.max_seq - len(v.seqs - {0})) for v in desk.visitors.values())
    repeated = sum(v.repeated_seqs for v in desk.visitors.values())
    gen = next(p for p in procs if p["name"] == "generator")
    notes = []
    if gen["cpu_pct_window"] > 70:
        notes.append(
            f"the generator used {gen['cpu_pct_window']:.0f} % of a core: it may be the "
            "bottleneck, and latencies include its own queueing"
        )
    lag99 = fanout.pct(desk.lags_ms, 99) if desk.lags_ms else 0.0
    loop99 = fanout.pct(desk.loop_lag_ms, 99) if desk.loop_lag_ms else 0.0
    if lag99 > 50 or loop99 > 20:
        notes.append(
            f"the generator ran late (start lag p99 {lag99:.0f} ms, event-loop lag p99 "
            f"{loop99:.0f} ms): figures include its delay"
        )
    total_pct = sum(p["cpu_pct_window"] for p in procs)
    cores = len(os.sched_getaffinity(0))
    if total_pct > 0.9 * 100 * cores:
        notes.append(
            f"the machine was saturated: {total_pct:.0f} % of {cores * 100} % CPU in the window"
        )
    for kind, r in rates.items():
        due = r["scheduled_in_window"] * 60 / desk.args.duration
        if r["started_in_window"] < r["scheduled_in_window"] or r["achieved_per_min"] < 0.95 * due:
            notes.append(
                f"{kind}: {r['achieved_per_min']:g}/min achieved of {due:g}/min scheduled "
                f"({r['requested_per_min']:g}/min requested)"
            )
    if desk.skipped:
        notes.append(
            "skipped by the generator: " + ", ".join(f"{k} {v}" for k, v in desk.skipped.items())
        )
    return {
        "processes": processes,
        "tag": desk.tag,
        "agents": len(desk.agents),
        "supervisors": len(desk.supervisors),
        "window_seconds": round(window_wall, 2),
        "run_seconds": round(run_wall, 2),
        "deliveries": {k: s.as_dict() for k, s in deliveries.items()},
        "database": checks,
        "visitor_seq": {"gaps": gaps, "repeated": repeated, "visitors": len(desk.visitors)},
        "http": {
            k: {
                "requests": desk.tally.http_sent[k],
                "ok": desk.tally.http_ok[k],
                "latency_ms": summary_ms(desk.tally.http_ms[k]),
            }
            for k in HTTP_KINDS
        },
        "rates": rates,
        "chat_messages_sent": dict(desk.chat_messages_sent),
        "chat_offers": desk.offers,
        "errors": {
            k: {"count": n, "first": desk.tally.samples.get(k, "")}
            for k, n in desk.tally.errors.most_common()
        },
        "unexpected_frames": dict(desk.tally.unexpected),
        "generator": {
            "start_lag_ms": summary_ms(desk.lags_ms),
            "event_loop_lag_ms": summary_ms(desk.loop_lag_ms),
            "skipped": dict(desk.skipped),
        },
        "process_figures": procs,
        "hub": hub,
        "logs": logs,
        "supervisor_frames": dict(
            sum((s.frames for s in desk.supervisors), Counter())  # type: ignore[arg-type]
        ),
        "notes": notes,
    }


# -- report -------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"-- {r['processes']} app process(es): {r['agents']} agents, {r['supervisors']} "
        f"supervisors; measured window {r['window_seconds']:.1f} s, until drained "
        f"{r['run_seconds']:.1f} s (run tag {r['tag']})",
        "",
        f"{'must arrive':<42} {'sent':>6} {'arrived':>7} {'lost':>5} {'dup':>4} {'failed':>6} "
        f"{'wrong':>5}",
    ]
    for kind, label in DELIVERIES.items():
        d = r["deliveries"][kind]
        dup = "-" if kind == "presence" else d["duplicated"]
        lines.append(
            f"{label:<42} {d['sent']:>6} {d['arrived']:>7} {d['lost']:>5} {dup:>4} "
            f"{d['failed']:>6} {d['wrong_socket']:>5}"
        )
    for kind, label in DB_CHECKS.items():
        d = r["database"][kind]
        extra = d.get("extra", 0) + d.get("unknown", 0)
        wrong = d.get("wrong_state", 0)
        lines.append(
            f"{label:<42} {d['sent']:>6} {d['found']:>7} {d['lost']:>5} {d['duplicated']:>4} "
            f"{d.get('failed', 0):>6} {wrong:>5}"
            + (f"  (+{extra} stored after a failed answer)" if extra else "")
        )
    seq = r["visitor_seq"]
    lines.append(
        f"{'visitor seq numbers (gaps / repeats)':<42} {seq['visitors']:>6} {'':>7} "
        f"{seq['gaps']:>5} {seq['repeated']:>4}"
    )
    lines += [
        "",
        f"{'latency (ms), measured window':<42} {'n':>6} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'max':>7}",
    ]
    for kind, label in DELIVERIES.items():
        s = r["deliveries"][kind]["latency_ms"]
        lines.append(
            f"{label:<42} {s['n']:>6} {ms(s['p50']):>7} {ms(s['p95']):>7} {ms(s['p99']):>7} "
            f"{ms(s['max']):>7}"
        )
    for kind, label in HTTP_KINDS.items():
        h = r["http"][kind]
        s = h["latency_ms"]
        lines.append(
            f"{'HTTP ' + label:<42} {s['n']:>6} {ms(s['p50']):>7} {ms(s['p95']):>7} "
            f"{ms(s['p99']):>7} {ms(s['max']):>7}"
        )
    lines += [
        "",
        f"{'rates':<20} {'requested/min':>13} {'due in window':>13} {'started':>8} "
        f"{'achieved/min':>12} {'total':>6}",
    ]
    for kind, rate in r["rates"].items():
        label = "presence changes" if kind == "presence" else kind
        lines.append(
            f"{label:<20} {rate['requested_per_min']:>13g} {rate['scheduled_in_window']:>13} "
            f"{rate['started_in_window']:>8} {rate['achieved_per_min']:>12g} "
            f"{rate['started_total']:>6}"
        )
    sent = r["chat_messages_sent"]
    lines.append(
        f"chat messages sent: {sent.get('visitor', 0)} by visitors, {sent.get('agent', 0)} by "
        f"agents; {r['chat_offers']} chat offers"
    )
    g = r["generator"]
    lines += [
        "",
        f"{'process':<12} {'CPU s':>7} {'% core':>7} {'to drained':>10} {'RSS MB':>7} {'peak MB':>8}",
    ]
    for p in r["process_figures"]:
        rss = "-" if p.get("rss_mb") is None else f"{p['rss_mb']:.0f}"
        peak = "-" if p.get("peak_rss_mb") is None else f"{p['peak_rss_mb']:.0f}"
        lines.append(
            f"{p['name']:<12} {p['cpu_s_window']:>7.2f} {p['cpu_pct_window']:>7.1f} "
            f"{p['cpu_s_run']:>10.2f} {rss:>7} {peak:>8}"
        )
    lines.append(
        f"generator: start lag p50/p99/max {ms(g['start_lag_ms']['p50'])}/"
        f"{ms(g['start_lag_ms']['p99'])}/{ms(g['start_lag_ms']['max'])} ms, event-loop lag "
        f"p99/max {ms(g['event_loop_lag_ms']['p99'])}/{ms(g['event_loop_lag_ms']['max'])} ms"
    )
    if r["hub"]:
        lines.append(
            "hub: "
            + "; ".join(
                f"process {i + 1}: {h.get('sockets')} sockets, delivered {h.get('delivered')}, "
                f"overflows {h.get('overflows')}, reconnects {h.get('reconnects')}"
                for i, h in enumerate(r["hub"])
            )
        )
    sup = r["supervisor_frames"]
    if sup:
        lines.append("supervisor frames: " + ", ".join(f"{k} {v}" for k, v in sorted(sup.items())))
    lines.append("")
    if r["errors"]:
        total = sum(e["count"] for e in r["errors"].values())
        lines.append(f"errors: {total}")
        for k, e in list(r["errors"].items())[:12]:
            lines.append(f"  {e['count']:>5}  {k}" + (f": {e['first']}" if e["first"] else ""))
    else:
        lines.append("errors: none")
    if r["unexpected_frames"]:
        lines.append(f"frames for events this run never sent: {r['unexpected_frames']}")
    for name, summary in r["logs"].items():
        if summary["errors"]:
            lines.append(f"{name} log: {summary['errors']} ERROR lines:")
            kinds = list(summary["error_kinds"].values())
            lines += [f"  {k['count']:>5}  {k['example']}" for k in kinds[:4]]
            if len(kinds) > 4:
                lines.append(f"         and {len(kinds) - 4} more kinds")
        warnings = list(summary["warnings"].items())
        if warnings:
            lines.append(
                f"{name} log warnings: "
                + "; ".join(f"{n} x {text}" for text, n in warnings[:4])
                + (f"; and {len(warnings) - 4} more kinds" if len(warnings) > 4 else "")
            )
    lost = sum(d["lost"] for d in r["deliveries"].values()) + sum(
        d["lost"] for d in r["database"].values()
    )
    dup = sum(d["duplicated"] for d in r["deliveries"].values()) + sum(
        d["duplicated"] for d in r["database"].values()
    )
    dup += r["visitor_seq"]["repeated"]
    lost += r["visitor_seq"]["gaps"]
    lines.append(
        f"verdict: {'NOTHING LOST' if not lost else f'{lost} LOST'}, "
        f"{'no duplicates' if not dup else f'{dup} DUPLICATED'}"
    )
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def comparison(results: list[dict[str, Any]]) -> str:
    """One column per process count: the figures that say how the desk scales out."""
    head = f"{'figure':<40}" + "".join(f"{'P=' + str(r['processes']):>10}" for r in results)
    rows: list[tuple[str, list[str]]] = []
    for kind, label in DELIVERIES.items():
        rows.append(
            (
                f"p99 ms {label.split(':')[0]}",
                [ms(r["deliveries"][kind]["latency_ms"]["p99"]) for r in results],
            )
        )
    for kind in ("cti", "email", "reply", "board"):
        rows.append(
            (
                f"p99 ms HTTP {HTTP_KINDS[kind]}",
                [ms(r["http"][kind]["latency_ms"]["p99"]) for r in results],
            )
        )

    def total(r: dict[str, Any], what: str) -> int:
        return sum(d[what] for d in r["deliveries"].values()) + sum(
            d[what] for d in r["database"].values()
        )

    rows += [
        ("lost (all kinds)", [str(total(r, "lost") + r["visitor_seq"]["gaps"]) for r in results]),
        ("duplicated (all kinds)", [str(total(r, "duplicated")) for r in results]),
        ("errors", [str(sum(e["count"] for e in r["errors"].values())) for r in results]),
    ]

    def of(r: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        return [p for p in r["process_figures"] if p["name"].startswith(prefix)]

    def cpu(r: dict[str, Any], prefix: str) -> str:
        return f"{sum(p['cpu_pct_window'] for p in of(r, prefix)):.0f}"

    rows += [
        ("CPU % of a core: app servers", [cpu(r, "server") for r in results]),
        ("CPU % of a core: worker", [cpu(r, "worker") for r in results]),
        ("CPU % of a core: PostgreSQL", [cpu(r, "PostgreSQL") for r in results]),
        ("CPU % of a core: generator", [cpu(r, "generator") for r in results]),
        (
            "peak RSS MB per server (max)",
            [f"{max(p['peak_rss_mb'] for p in of(r, 'server')):.0f}" for r in results],
        ),
    ]
    return "\n".join(
        [head] + [f"{label:<40}" + "".join(f"{v:>10}" for v in vals) for label, vals in rows]
    )


# -- main ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, url: str, work_dir: Path, postmaster: int | None) -> None:
    await fanout.migrate(url)
    print(f"seeding {args.customers:,} customers, the agents and the supervisors ...", flush=True)
    t = time.perf_counter()
    seeded = await seed(url, args)
    print(
        f"seeded in {time.perf_counter() - t:.1f} s: {len(seeded.agents)} agents "
        f"(extensions {FIRST_EXTENSION}-{FIRST_EXTENSION + len(seeded.agents) - 1}), "
        f"{len(seeded.supervisors)} supervisors",
        flush=True,
    )
    facts = await fanout.db_facts(url)
    load_before = os.getloadavg()
    results = []
    for i, p in enumerate(args.processes):
        results.append(await run_config(args, url, work_dir, seeded, p, i, postmaster))
    load_after = os.getloadavg()

    fanout.print_header(
        "helpdesk load: a contact-center day, nothing lost (issue 10)",
        load_before,
        load_after,
        facts,
    )
    rates = {k: v * args.scale for k, v in PER_UNIT.items()}
    print(
        f"load:     scale {args.scale:g} = {len(seeded.agents)} agents, "
        f"{len(seeded.supervisors)} supervisors, {seeded.customers:,} customers; per minute "
        f"{rates['calls']:g} calls, {rates['chats']:g} chats x {args.chat_messages} messages, "
        f"{rates['emails']:g} emails, {rates['replies']:g} replies, {rates['presence']:g} "
        f"presence changes, {PER_UNIT['board']:g} board polls per supervisor; "
        f"{args.warmup:g} s warmup + {args.duration:g} s measured; requests and sockets "
        "round-robin over the app processes"
        + (
            "; serves with HELPDESK_BACKGROUND=0 and one `helpdesk worker`"
            if args.separate_worker
            else ""
        )
    )
    for r in results:
        print()
        print(report(r, args))
    if len(results) > 1:
        print()
        print(comparison(results))
    print()
    print(
        "Latency: time.perf_counter() in the generator, from just before a request or frame is\n"
        "sent to the receipt of the frame it causes (or the HTTP answer), measured window only.\n"
        "lost = sent and acknowledged but never arrived; dup = arrived twice; failed = the send\n"
        "itself failed (an error); wrong = arrived on another socket. CPU s and % core over\n"
        "the measured window; `to drained` = CPU s from its start until every flow ended;\n"
        "peak = VmHWM of the process (for the generator, mostly the customer generation)."
    )
    if args.json:
        out = {
            "command": sys.orig_argv,
            "scale": args.scale,
            "duration": args.duration,
            "warmup": args.warmup,
            "separate_worker": args.separate_worker,
            "per_unit_per_minute": PER_UNIT,
            "postgres": facts,
            "results": results,
        }
        write_json(args.json, out)
        print(f"figures written to {args.json}")


async def main_async(args: argparse.Namespace) -> None:
    await fanout.with_database("helpdesk-load-", run, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The module docstring (bench/load.py) describes the day and what is counted.",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiple of a small center (20 agents, 2 supervisors and their rates); default 1",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="measured seconds (default 60)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds of the same load before measuring, left out of latencies (default 5)",
    )
    parser.add_argument(
        "--processes",
        default="1",
        help="app process counts, comma-separated; the day is played once per count and a "
        "comparison table printed (default 1; e.g. 1,2,4)",
    )
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="start the serves with HELPDESK_BACKGROUND=0 and one `helpdesk worker` process",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    parser.add_argument(
        "--customers", type=int, default=5000, help="customers to seed (default 5000)"
    )
    parser.add_argument(
        "--unknown-callers",
        type=float,
        default=0.1,
        help="share of calls from numbers no customer has (default 0.1)",
    )
    parser.add_argument(
        "--chat-messages",
        type=int,
        default=6,
        help="messages per chat after it is answered (default 6)",
    )
    parser.add_argument(
        "--chat-wait",
        type=float,
        default=30.0,
        help="seconds a visitor waits for an agent before the chat counts as unanswered "
        "(default 30)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=10.0,
        help="seconds to wait after the last flow for frames still on their way (default 10)",
    )
    parser.add_argument(
        "--flow-timeout",
        type=float,
        default=120.0,
        help="seconds after the last arrival for every flow to end before they are cancelled "
        "(default 120)",
    )
    parser.add_argument("--logs", metavar="DIR", help="copy the servers' logs into DIR")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = parser.parse_args()
    try:
        args.processes = [int(p) for p in args.processes.split(",") if p.strip()]
    except ValueError:
        parser.error("--processes is a comma-separated list of integers, such as 1,2,4")
    if not args.processes or min(args.processes) < 1:
        parser.error("--processes needs at least one count of 1 or more")
    if args.scale <= 0 or args.duration <= 0 or args.warmup < 0 or args.customers < 200:
        parser.error("--scale and --duration must be positive, --customers at least 200")
    if args.chat_messages < 0 or not 0 <= args.unknown_callers <= 1:
        parser.error("--chat-messages must be 0 or more, --unknown-callers between 0 and 1")
    if args.separate_worker:
        check_worker_command()
    agents = round(AGENTS_PER_UNIT * args.scale)
    fanout.raise_nofile(8 * agents + 4096)
    fanout.run_async(main_async(args))


if __name__ == "__main__":
    main()
