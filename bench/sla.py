"""Benchmark: the SLA engine and the supervisor's board at contact-center scale (issue 8).

    .venv/bin/python bench/sla.py [--cases 1000000] [--open 50000] [--workers 1,2]
                                  [--lag-clocks 2000] [--lag-spread 20] [--board-calls 200]

The full size seeds in one to two minutes and runs in about six; a quick run (about a minute
and a half, most of it the lag windows) is
`--cases 20000 --open 2000 --lag-clocks 200 --board-calls 30`.

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server), migrates it and seeds it with SQL only
(generate_series and COPY, no ORM loops; `setseed` makes it repeatable):

  - teams, agents (each in a team, with presence and chat load), one supervisor per team
    and one team-less supervisor who watches the `sla` topic; customers with a tier mix;
  - two business calendars, 24/7 and Japanese office hours (09:00-12:00, 13:00-18:00,
    Monday to Friday, JP holidays), and five ordered policies (gold/platinum on 24/7, then
    one per priority on office hours);
  - --cases cases over --history-days, of which --open are open (most of them recent, a
    tenth scattered through the history); each has its opening interaction, and recent ones
    their first agent reply;
  - clocks for every open case (first response and resolution, next response on some):
    most active with deadlines spread over the coming hours and days, some paused
    (pending), some breached, some at risk (warning passed, deadline ahead); and met (or
    breached, then met) clocks for 60 % of the closed cases;
  - calls and chats for the last --days days (today included, with calls ringing and chats
    waiting now), so the board and the service level have something to count.

The load runs with the per-row foreign-key triggers off (`session_replication_role =
replica`, when the server lets us: the data is consistent by construction), and agents'
presence is marked as seen a day ahead so that no server's presence sweep takes these
socket-less agents offline mid-run.

No seeded running clock falls due within --horizon-minutes of the seeding: the only
warnings and breaches while the bench runs are the ones it plants.

Then it measures:

  board   `helpdesk.metrics.board_snapshot` and `service_level`, in-process on one
          connection, each call its own unit of work (BEGIN ... COMMIT, as a request's), after
          a warm-up; with --explain, each SQL statement's share and EXPLAIN (ANALYZE, BUFFERS)
          of the slowest; and the board fragment (`GET /board` with HX-Request, what the wall
          screen refreshes) and the JSON APIs over HTTP from a real `helpdesk serve`.
  worker  `SlaWorker.tick()` in-process: with nothing due (the idle probe every half second
          pays), and --worker-passes times with a full batch of breaches due.
  lag     for each count P in --workers and each K in --lag-clocks: P real `helpdesk serve` processes (each runs the SLA
          worker, HELPDESK_SLA_WORKER=1; the chat router is off so the seeded chats stay put),
          one socket per process for the `sla` watcher and one per team supervisor; then
          K new cases with a first-response clock (target 1 minute on the 24/7
          policy, warning at 80 %) whose deadlines fall at known instants spread evenly over
          --lag-spread seconds, starting --lag-lead seconds after they are committed. Lag =
          time.time() when the frame arrives on the socket - the clock's warning_at or
          deadline_at (one machine, one clock). Counts received against expected per socket,
          duplicates (the same event for the same clock twice on one socket; must be 0, with
          two workers too), and the CPU of the servers and PostgreSQL over the window.

Nothing in the checkout is touched; everything is removed at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout
import httpx
import psutil
from sqlalchemy import event

from helpdesk import auth, metrics, sla
from helpdesk.business_time import BusinessCalendar, parse_weekly
from helpdesk.db import Database

AIM_BOARD_MS = 100.0
AIM_LAG_S = 1.0
LAG_TARGET_MINUTES = 1  # warning at 80 % of it: 12 s before the deadline
DRAIN_SECONDS = 15.0

# target minutes (first response, next response, resolution) per policy, in position order
POLICIES = (
    ("Gold and platinum, around the clock", {"tier": ["gold", "platinum"]}, (60, 120, 480)),
    ("Urgent", {"priority": ["urgent"]}, (30, 60, 240)),
    ("High", {"priority": ["high"]}, (60, 120, 480)),
    ("Normal", {"priority": ["normal"]}, (240, 480, 1440)),
    ("Everything else", {}, (480, 960, 2880)),
)


def ms_row(label: str, values: list[float], width: int = 44) -> str:
    pct = fanout.pct
    nan = float("nan")
    return (
        f"{label:<{width}} {len(values):>6} {pct(values, 50):>8.2f} {pct(values, 95):>8.2f} "
        f"{pct(values, 99):>8.2f} {max(values, default=nan):>8.2f}"
    )


def ms_header(label: str, width: int = 44) -> str:
    return f"{label:<{width}} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"


# -- seeding ----------------------------------------------------------------------------------


@dataclass
class Seeded:
    at: datetime  # the "now" every seeded instant is relative to
    team_ids: list[int]
    agent_ids: list[int]  # grouped by team, agents_per_team each
    agents_per_team: int
    supervisors: dict[int, fanout.Staff]  # team id -> its supervisor
    watcher: fanout.Staff
    policy_ids: list[int]  # in POLICIES order
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    clock_states: dict[str, int] = field(default_factory=dict)


async def seed_reference(url: str, args: argparse.Namespace) -> tuple[list[int], int]:
    """Calendars and policies through the domain functions (they are few); returns the
    policy ids in POLICIES order and the 24/7 calendar's id."""
    db = Database.from_url(url, pool_size=1)
    try:
        async with db.unit_of_work() as session:
            around = await sla.create_calendar(
                session,
                "Around the clock",
                BusinessCalendar(args.tz, parse_weekly("mon-sun 00:00-24:00"), None),
            )
            office = await sla.create_calendar(
                session,
                "Tokyo office hours",
                BusinessCalendar(args.tz, parse_weekly("mon-fri 09:00-12:00 13:00-18:00"), "JP"),
            )
            ids = []
            for i, (name, conditions, (first, nxt, resolution)) in enumerate(POLICIES):
                policy = await sla.create_policy(
                    session,
                    name=name,
                    calendar_id=around.id if i == 0 else office.id,
                    conditions=conditions,
                    first_response_minutes=first,
                    next_response_minutes=nxt,
                    resolution_minutes=resolution,
                )
                ids.append(policy.id)
        return ids, around.id
    finally:
        await db.dispose()


async def seed_staff(conn: Any, args: argparse.Namespace) -> tuple[list[int], list[int], Any]:
    await conn.execute(
        "INSERT INTO teams (name) SELECT format('Bench team %s', t) FROM generate_series(1, $1) t",
        args.teams,
    )
    team_ids = [r["id"] for r in await conn.fetch("SELECT id FROM teams ORDER BY id")]
    password_hash = auth.hash_password("bench-password-not-used")
    per_team = args.agents // args.teams
    rows = []
    for t, team_id in enumerate(team_ids):
        rows += [
            (f"bench-agent-{t:02d}-{i:04d}@bench.example", f"Agent {t}-{i}", "agent", team_id)
            for i in range(per_team)
        ]
        rows.append(
            (f"bench-supervisor-{t:02d}@bench.example", f"Supervisor {t}", "supervisor", team_id)
        )
    rows.append(("bench-watcher@bench.example", "SLA watcher", "supervisor", None))
    await conn.copy_records_to_table(
        "users",
        records=[(*r, password_hash) for r in rows],
        columns=["email", "name", "role", "team_id", "password_hash"],
    )
    agent_ids = [
        r["id"]
        for r in await conn.fetch("SELECT id FROM users WHERE role = 'agent' ORDER BY email")
    ]
    staff = await conn.fetch("SELECT id, team_id FROM users WHERE role = 'supervisor'")
    # Presence as a working day has it. last_seen_at lies ahead so that no server's presence
    # sweep takes these socket-less agents offline while the bench runs.
    await conn.execute(
        """
        INSERT INTO agent_presence (user_id, status, on_call, active_chats, chat_capacity,
                                    changed_at, last_seen_at)
        SELECT id, s, s = 'busy' AND random() < 0.7, CASE WHEN s IN ('available', 'busy')
               THEN floor(random() * 3)::int ELSE 0 END, 3,
               now() - random() * interval '3 hours', now() + interval '1 day'
        FROM (SELECT id, CASE WHEN r < 0.45 THEN 'available' WHEN r < 0.75 THEN 'busy'
                              WHEN r < 0.85 THEN 'away' ELSE 'offline' END AS s
              FROM (SELECT id, random() AS r FROM users WHERE role = 'agent') a) b
        """
    )
    return team_ids, agent_ids, staff


CASES_SQL = """
INSERT INTO cases (customer_id, subject, status, priority, channel, assignee_id, team_id,
                   created_at, updated_at, solved_at, closed_at)
SELECT customer_id, 'Bench case ' || i, status, priority, channel,
       CASE WHEN status = 'new' AND r5 < 0.6 THEN NULL
            WHEN is_open AND r5 < 0.1 THEN NULL
            ELSE ($5::int[])[team_ix * $6::int + 1 + floor(r6 * $6::int)::int] END,
       CASE WHEN r5 < 0.03 AND NOT is_open THEN NULL ELSE ($4::int[])[team_ix + 1] END,
       created,
       CASE WHEN is_open THEN created + ($7::timestamptz - created) * r7 ELSE COALESCE(closed, solved) END,
       solved, closed
FROM (
    SELECT *, CASE WHEN status = 'closed' THEN LEAST(solved + interval '3 days', $7::timestamptz) END AS closed
    FROM (
        SELECT i, is_open, created, r5, r6, r7, customer_id,
               floor(r4 * array_length($4::int[], 1))::int AS team_ix,
               CASE WHEN is_open THEN
                    CASE WHEN r1 < 0.2 THEN 'new' WHEN r1 < 0.65 THEN 'open'
                         WHEN r1 < 0.9 THEN 'pending' ELSE 'on_hold' END
                    WHEN r1 < 0.1 THEN 'solved' ELSE 'closed' END AS status,
               CASE WHEN r2 < 0.15 THEN 'low' WHEN r2 < 0.75 THEN 'normal'
                    WHEN r2 < 0.95 THEN 'high' ELSE 'urgent' END AS priority,
               CASE WHEN r3 < 0.5 THEN 'email' WHEN r3 < 0.75 THEN 'phone'
                    WHEN r3 < 0.95 THEN 'chat' ELSE 'web' END AS channel,
               CASE WHEN NOT is_open
                    THEN LEAST(created + interval '10 minutes' + interval '2 days' * r8, $7::timestamptz) END
                    AS solved
        FROM (
            SELECT i,
                   i > $1::int - ($2::int - $2::int / 10) OR (i <= $3::int * ($2::int / 10) AND i % $3::int = 0) AS is_open,
                   $7::timestamptz - ($1::int - i) * $8::float8 * interval '1 second' AS created,
                   $9::int + floor(random() * $10::int)::int AS customer_id,
                   random() AS r1, random() AS r2, random() AS r3, random() AS r4,
                   random() AS r5, random() AS r6, random() AS r7, random() AS r8
            FROM generate_series(1, $1::int) i
        ) a
    ) b
) c
"""

# Clocks of every open case and of 60 % of the closed ones; $1 = now, $2 = horizon minutes,
# $3..$7 = policy ids in POLICIES order. State, deadline and the rest follow the case's
# status; the policy and target follow its customer's tier and its priority.
CLOCKS_SQL = """
INSERT INTO sla_clocks (case_id, kind, policy_id, state, target_minutes, started_at,
                        deadline_at, warning_at, paused_at, paused_minutes, remaining_minutes,
                        met_at, breached_at, warned_at, breach_fired_at)
SELECT case_id, kind, policy_id, state, target, started,
       deadline, deadline - lead, paused_at, 0, remaining, met_at,
       CASE WHEN state = 'breached' THEN deadline END,
       CASE WHEN state IN ('active', 'breached') AND deadline - lead < $1::timestamptz
                 THEN deadline - lead + interval '0.4 seconds'
            WHEN state = 'met' AND met_at > deadline - lead
                 THEN deadline - lead + interval '0.4 seconds' END,
       CASE WHEN state = 'breached' AND deadline < $1::timestamptz THEN deadline + interval '0.4 seconds' END
FROM (
    SELECT *, target * interval '12 seconds' AS lead,  -- 20 % of the target
           CASE WHEN state = 'paused' THEN $1::timestamptz - v * interval '2 days' END AS paused_at,
           CASE WHEN state = 'paused' THEN round((w * target)::numeric, 1)::float END
                AS remaining,
           CASE WHEN state = 'met' THEN LEAST(started + v * 0.95 * target * interval '1 minute',
                                               $1::timestamptz - interval '1 minute')
                WHEN state = 'breached' AND NOT is_open
                     THEN started + (1 + w) * target * interval '1 minute'
                -- an open case past "new" has had its (late) first answer
                WHEN state = 'breached' AND kind = 'first_response' AND status <> 'new'
                     THEN LEAST(deadline + v * target * interval '1 minute',
                                $1::timestamptz - interval '1 minute') END AS met_at
    FROM (
        SELECT *,
               CASE WHEN state = 'active' AND 0.2 * target > $2::float8 + 5 AND v < 0.15
                        -- at risk: the warning has passed, the deadline lies ahead
                        THEN $1::timestamptz + ($2::float8 + w * (0.2 * target - $2::float8)) * interval '1 minute'
                    WHEN state = 'active'
                        THEN $1::timestamptz + ($2::float8 + 0.2 * target) * interval '1 minute'
                             + w * interval '2 days'
                    WHEN state = 'breached' AND is_open
                        THEN LEAST(started + target * interval '1 minute',
                                   $1::timestamptz - interval '5 minutes' - w * interval '2 days')
                    WHEN state IN ('met', 'breached')
                        THEN started + target * interval '1 minute' END AS deadline
        FROM (
            SELECT *,
                   CASE WHEN NOT is_open THEN
                            CASE WHEN u < (CASE kind WHEN 'first_response' THEN 0.92 ELSE 0.9 END)
                                 THEN 'met' ELSE 'breached' END
                        WHEN kind = 'first_response' AND status = 'new'
                            THEN CASE WHEN u < 0.85 THEN 'active' ELSE 'breached' END
                        WHEN kind = 'first_response'
                            THEN CASE WHEN u < 0.85 THEN 'met' ELSE 'breached' END
                        WHEN kind = 'resolution' AND status = 'pending'
                            THEN CASE WHEN u < 0.93 THEN 'paused' ELSE 'breached' END
                        WHEN kind = 'resolution' AND status = 'on_hold'
                            THEN CASE WHEN u < 0.85 THEN 'active' ELSE 'breached' END
                        ELSE CASE WHEN u < 0.88 THEN 'active' ELSE 'breached' END END AS state,
                   CASE kind WHEN 'first_response' THEN t[1] WHEN 'next_response' THEN t[2]
                             ELSE t[3] END AS target
            FROM (
                SELECT c.id AS case_id, k.kind, c.status, c.created_at AS started,
                       c.status NOT IN ('solved', 'closed') AS is_open,
                       CASE WHEN cu.tier IN ('gold', 'platinum') THEN $3::int
                            WHEN c.priority = 'urgent' THEN $4::int WHEN c.priority = 'high' THEN $5::int
                            WHEN c.priority = 'normal' THEN $6::int ELSE $7::int END AS policy_id,
                       CASE WHEN cu.tier IN ('gold', 'platinum') THEN ARRAY[60, 120, 480]
                            WHEN c.priority = 'urgent' THEN ARRAY[30, 60, 240]
                            WHEN c.priority = 'high' THEN ARRAY[60, 120, 480]
                            WHEN c.priority = 'normal' THEN ARRAY[240, 480, 1440]
                            ELSE ARRAY[480, 960, 2880] END AS t,
                       random() AS u, random() AS v, random() AS w
                FROM cases c
                JOIN customers cu ON cu.id = c.customer_id
                CROSS JOIN (VALUES ('first_response'), ('next_response'), ('resolution')) k(kind)
                WHERE CASE WHEN c.status IN ('solved', 'closed')
                           THEN c.id % 5 < 3 AND k.kind <> 'next_response'
                           ELSE k.kind <> 'next_response' OR (c.status = 'open' AND c.id % 10 < 3)
                      END
            ) a
        ) b
    ) c
) d
"""

# Each case's opening message, and for the last $2 days the first agent reply (at the
# moment its first-response clock was met).
INTERACTIONS_SQL = """
INSERT INTO interactions (customer_id, case_id, kind, direction, author_user_id, subject,
                          text, meta, occurred_at, created_at)
SELECT customer_id, id,
       CASE channel WHEN 'phone' THEN 'call' WHEN 'chat' THEN 'chat' ELSE 'email' END,
       'in', NULL, subject, 'Opening message of ' || subject, '{}'::jsonb, created_at, created_at
FROM cases
UNION ALL
SELECT c.customer_id, c.id,
       CASE c.channel WHEN 'phone' THEN 'call' WHEN 'chat' THEN 'chat' ELSE 'email' END,
       'out', c.assignee_id, c.subject, 'First answer to ' || c.subject, '{}'::jsonb,
       k.met_at, k.met_at
FROM sla_clocks k JOIN cases c ON c.id = k.case_id
WHERE k.kind = 'first_response' AND k.met_at >= $1::timestamptz - $2::int * interval '1 day'
"""

# Calls of the last $2 days at $3 a day, ending by $1; and live ones: ringing now, and
# conversations going on.
CALLS_SQL = """
INSERT INTO calls (call_id, direction, from_number, to_number, customer_number, state, queue,
                   ringing_user_ids, agent_id, customer_id, started_at, answered_at, ended_at,
                   cause)
SELECT 'bench-call-' || i, dir,
       CASE WHEN dir = 'in' THEN number ELSE '0355550100' END,
       CASE WHEN dir = 'in' THEN '0355550100' ELSE number END,
       number, state, 'support',
       CASE WHEN dir = 'in' THEN ARRAY[agent] ELSE '{}'::int[] END,
       CASE WHEN state IN ('answered', 'completed') THEN agent END,
       $7::int + floor(r3 * $8::int)::int,
       started,
       CASE WHEN state IN ('answered', 'completed') THEN started + wait END,
       CASE WHEN state = 'completed' THEN LEAST(started + wait + talk, $1::timestamptz)
            WHEN state IN ('abandoned', 'missed') THEN LEAST(started + wait, $1::timestamptz) END,
       CASE state WHEN 'completed' THEN 'normalClearing' WHEN 'abandoned' THEN 'cancel'
                  WHEN 'missed' THEN 'noAnswer' END
FROM (
    SELECT i, '+8135' || lpad((i % 100000000)::text, 8, '0') AS number,
           CASE WHEN i <= 3 * $5::int OR random() < 0.9 THEN 'in' ELSE 'out' END AS dir,
           ($4::int[])[1 + floor(random() * $6::int)::int] AS agent,
           random() AS r3,
           CASE WHEN i <= $5::int THEN $1::timestamptz - random() * interval '60 seconds'
                WHEN i <= 3 * $5::int THEN $1::timestamptz - random() * interval '10 minutes'
                ELSE $1::timestamptz - interval '15 minutes' - random() * $2::int * interval '1 day' END AS started,
           CASE WHEN i <= $5::int THEN 'ringing' WHEN i <= 3 * $5::int THEN 'answered'
                ELSE (ARRAY['completed', 'abandoned', 'missed'])[
                    CASE WHEN r < 0.82 THEN 1 WHEN r < 0.92 THEN 2 ELSE 3 END] END AS state,
           -ln(1 - random()) * 15 * interval '1 second' AS wait,
           (60 - ln(1 - random()) * 240) * interval '1 second' AS talk
    FROM (SELECT i, random() AS r FROM generate_series(1, $2::int * $3::int) i) s
) c
"""

CHATS_SQL = """
INSERT INTO chat_conversations (token_hash, state, customer_id, team_id, agent_id,
                                visitor_name, language, last_seq, csat_score, created_at,
                                queued_at, accepted_at, closed_at, last_message_at,
                                visitor_seen_at, closed_by)
SELECT md5('bench-chat-' || i), state, $7::int + floor(r3 * $8::int)::int, ($5::int[])[team_ix + 1],
       CASE WHEN state IN ('active', 'closed') THEN ($4::int[])[team_ix * $9::int + 1 + floor(r2 * $9::int)::int] END,
       'Visitor ' || i, CASE WHEN r2 < 0.8 THEN 'ja' ELSE 'en' END, 6,
       CASE WHEN state = 'closed' AND r3 < 0.35 THEN 1 + floor(random() * 5)::int END,
       queued, queued,
       CASE WHEN state IN ('active', 'closed') THEN queued + wait END,
       CASE WHEN state = 'closed' THEN LEAST(queued + wait + talk, $1::timestamptz)
            WHEN state = 'abandoned' THEN LEAST(queued + wait, $1::timestamptz) END,
       LEAST(queued + wait + talk, $1::timestamptz), $1::timestamptz,
       CASE state WHEN 'closed' THEN 'agent' WHEN 'abandoned' THEN 'system' END
FROM (
    SELECT i, random() AS r2, random() AS r3,
           floor(random() * array_length($5::int[], 1))::int AS team_ix,
           CASE WHEN i <= $6::int THEN $1::timestamptz - random() * interval '3 minutes'
                WHEN i <= 4 * $6::int THEN $1::timestamptz - random() * interval '20 minutes'
                ELSE $1::timestamptz - interval '30 minutes' - random() * $2::int * interval '1 day' END AS queued,
           CASE WHEN i <= $6::int THEN 'queued' WHEN i <= 4 * $6::int THEN 'active'
                WHEN random() < 0.93 THEN 'closed' ELSE 'abandoned' END AS state,
           -ln(1 - random()) * 30 * interval '1 second' AS wait,
           (180 + random() * 720) * interval '1 second' AS talk
    FROM generate_series(1, $2::int * $3::int) i
) c
"""


async def seed(url: str, args: argparse.Namespace) -> Seeded:
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - since
        print(f"   {name}: {seconds[name]:.1f} s", flush=True)
        return now

    policy_ids, _ = await seed_reference(url, args)
    conn = await fanout.raw_connect(url)
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET work_mem = '256MB'")
        await conn.execute("SET maintenance_work_mem = '512MB'")
        with contextlib.suppress(Exception):  # a server we may not reconfigure: skip
            await conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
            await conn.execute("SELECT pg_reload_conf()")
        # The seed is consistent by construction: skip the per-row foreign-key triggers while
        # loading (needs a superuser, as the embedded server's is; elsewhere they just run).
        with contextlib.suppress(Exception):
            await conn.execute("SET session_replication_role = replica")
        await conn.execute("SELECT setseed($1)", (args.seed % 1000) / 1000)
        at = datetime.now(UTC).replace(microsecond=0)
        t = time.perf_counter()
        team_ids, agent_ids, staff = await seed_staff(conn, args)
        per_team = args.agents // args.teams
        await conn.execute(
            """
            INSERT INTO customers (name, search_text, tier, language, created_at, updated_at)
            SELECT 'Bench customer ' || i, 'bench customer ' || i,
                   CASE WHEN r < 0.70 THEN 'standard' WHEN r < 0.85 THEN 'silver'
                        WHEN r < 0.95 THEN 'gold' ELSE 'platinum' END,
                   'ja', $2::timestamptz - interval '2 years', $2::timestamptz - interval '2 years'
            FROM (SELECT i, random() AS r FROM generate_series(1, $1) i) s
            """,
            args.customers,
            at,
        )
        cmin, cmax = await conn.fetchrow("SELECT min(id), max(id) FROM customers")
        ncust = cmax - cmin + 1
        t = lap("staff and customers", t)

        open_recent = args.open - args.open // 10
        step = max(1, (args.cases - open_recent) // max(1, args.open // 10))
        span = args.history_days * 86400 / args.cases
        await conn.execute(
            CASES_SQL,
            args.cases,
            args.open,
            step,
            team_ids,
            agent_ids,
            per_team,
            at,
            span,
            cmin,
            ncust,
        )
        t = lap("cases", t)
        await conn.execute(CLOCKS_SQL, at, float(args.horizon_minutes), *policy_ids)
        t = lap("clocks", t)
        await conn.execute(INTERACTIONS_SQL, at, args.days)
        t = lap("interactions", t)
        live_calls = max(1, args.calls_per_day // 300)
        await conn.execute(
            CALLS_SQL,
            at,
            args.days,
            args.calls_per_day,
            agent_ids,
            live_calls,
            len(agent_ids),
            cmin,
            ncust,
        )
        t = lap("calls", t)
        live_chats = max(1, args.chats_per_day // 100)
        await conn.execute(
            CHATS_SQL,
            at,
            args.days,
            args.chats_per_day,
            agent_ids,
            team_ids,
            live_chats,
            cmin,
            ncust,
            per_team,
        )
        t = lap("chats", t)
        await conn.execute("RESET session_replication_role")
        await conn.execute("VACUUM ANALYZE")
        t = lap("VACUUM ANALYZE", t)
        counts = {}
        for table in (
            "customers",
            "cases",
            "sla_clocks",
            "interactions",
            "calls",
            "chat_conversations",
            "users",
        ):
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        counts["open cases"] = await conn.fetchval(
            "SELECT count(*) FROM cases WHERE status NOT IN ('solved', 'closed')"
        )
        states = await conn.fetch(
            """
            SELECT CASE WHEN k.state = 'active' AND k.warning_at <= $1 THEN 'active, at risk'
                        ELSE k.state END AS s, count(*) AS n
            FROM sla_clocks k JOIN cases c ON c.id = k.case_id
            WHERE c.status NOT IN ('solved', 'closed') GROUP BY 1 ORDER BY 1
            """,
            at,
        )
        soonest = await conn.fetchval(
            "SELECT min(LEAST(deadline_at, CASE WHEN warned_at IS NULL THEN warning_at END)) "
            "FROM sla_clocks WHERE state = 'active'"
        )
    finally:
        await conn.close()
    seconds["total"] = time.perf_counter() - started
    supervisors = {}
    watcher = None
    for r in staff:
        s = fanout.Staff(r["id"], "supervisor", fanout.mint(r["id"], "supervisor", ttl=12 * 3600))
        if r["team_id"] is None:
            watcher = s
        else:
            supervisors[r["team_id"]] = s
    assert watcher is not None
    seeded = Seeded(
        at=at,
        team_ids=team_ids,
        agent_ids=agent_ids,
        agents_per_team=per_team,
        supervisors=supervisors,
        watcher=watcher,
        policy_ids=policy_ids,
        seconds=seconds,
        counts=counts,
        clock_states={r["s"]: r["n"] for r in states},
    )
    due = (
        f"the soonest seeded running clock is due {(soonest - at).total_seconds() / 60:.0f} min "
        "after the seeding's now"
        if soonest
        else "no seeded clock is running"
    )
    print(f"   seeded in {seconds['total']:.1f} s; {due}", flush=True)
    return seeded


# -- board: in-process ------------------------------------------------------------------------


@dataclass
class Timed:
    label: str
    ms: list[float] = field(default_factory=list)
    note: str = ""


class StatementLog:
    """Every SQL statement an engine runs, with its time (the driver's round trip)."""

    def __init__(self, db: Database) -> None:
        self.engine = db.engine.sync_engine
        self.on = False
        self.times: dict[str, list[float]] = defaultdict(list)
        self.params: dict[str, Any] = {}
        self._started: list[float] = []
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        self._started.append(time.perf_counter())

    def _after(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        took = (time.perf_counter() - self._started.pop()) * 1e3
        if self.on:
            self.times[statement].append(took)
            self.params[statement] = parameters

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)


async def time_calls(db: Database, label: str, call: Any, calls: int, warmup: int) -> Timed:
    """`calls` calls of `call(session)`, each in its own unit of work on the one pooled
    connection, as a request makes them."""
    timed = Timed(label)
    for i in range(warmup + calls):
        started = time.perf_counter()
        async with db.unit_of_work() as session:
            result = await call(session)
        took = (time.perf_counter() - started) * 1e3
        if i >= warmup:
            timed.ms.append(took)
    timed.note = summary_of(result)
    return timed


def summary_of(result: Any) -> str:
    """A short line of what a metrics call returned, to show the bench counted real data."""
    text = json.dumps(result.as_dict(), default=str, ensure_ascii=False)
    return text if len(text) <= 400 else text[:400] + " ..."


def today(zone: ZoneInfo) -> tuple[datetime, datetime, datetime]:
    """Now, and today in `zone` as the board asks for it: local midnight to midnight."""
    now = datetime.now(UTC)
    start, end = metrics.local_day(now.astimezone(zone).date(), zone)
    return now, start, end


async def measure_board(
    url: str, args: argparse.Namespace, seeded: Seeded
) -> tuple[list[Timed], list[str]]:
    """In-process timings of the metrics functions, and (with --explain) where they spend it."""
    zone = ZoneInfo(args.tz)
    one_team = seeded.team_ids[0]

    async def board(session: Any, team_ids: list[int] | None) -> Any:
        now, _start, _end = today(zone)
        return await metrics.board_snapshot(session, now=now, tz=zone, team_ids=team_ids)

    async def level(session: Any, team_id: int | None) -> Any:
        _now, start, end = today(zone)
        return await metrics.service_level(session, start=start, end=end, tz=zone, team_id=team_id)

    plans = [
        ("board_snapshot, all teams", lambda s: board(s, None)),
        ("board_snapshot, one team", lambda s: board(s, [one_team])),
        ("service_level today, all teams", lambda s: level(s, None)),
        ("service_level today, one team", lambda s: level(s, one_team)),
    ]
    db = Database.from_url(url, pool_size=1)
    log = StatementLog(db)
    lines: list[str] = []
    rows: list[Timed] = []
    try:
        for label, call in plans:
            log.times.clear()
            log.on = True
            try:
                timed = await time_calls(db, label, call, args.board_calls, args.board_warmup)
            finally:
                log.on = False
            rows.append(timed)
            if args.explain:
                lines += await explain_statements(db, label, log, len(timed.ms) + args.board_warmup)
    finally:
        log.close()
        await db.dispose()
    # What the board's endpoints call: the same snapshot, its three parts on three connections.
    db3 = Database.from_url(url, pool_size=3)
    try:
        for label, team_ids in (
            ("board_snapshot_on (3 connections), all teams", None),
            ("board_snapshot_on (3 connections), one team", [one_team]),
        ):
            timed = Timed(label)
            for i in range(args.board_warmup + args.board_calls):
                now, _start, _end = today(zone)
                started = time.perf_counter()
                result = await metrics.board_snapshot_on(db3, now=now, tz=zone, team_ids=team_ids)
                if i >= args.board_warmup:
                    timed.ms.append((time.perf_counter() - started) * 1e3)
            timed.note = summary_of(result)
            rows.append(timed)
    finally:
        await db3.dispose()
    return rows, lines


async def explain_statements(db: Database, label: str, log: StatementLog, calls: int) -> list[str]:
    """Each statement's mean time per call, and EXPLAIN ANALYZE of the two slowest."""
    ranked = sorted(log.times.items(), key=lambda kv: -sum(kv[1]))
    total = sum(sum(v) for v in log.times.values()) / max(calls, 1)
    lines = [
        "",
        f"-- {label}: {len(ranked)} distinct statements, {total:.2f} ms of SQL round trips "
        "per call (mean)",
    ]
    for statement, times in ranked:
        one_line = " ".join(statement.split())
        lines.append(
            f"  {sum(times) / max(calls, 1):7.2f} ms/call  {len(times) / max(calls, 1):4.1f}x  "
            f"{one_line[:150]}{' ...' if len(one_line) > 150 else ''}"
        )
    for statement, _times in ranked[:2]:
        async with db.unit_of_work() as session:
            conn = await session.connection()
            result = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + statement, log.params[statement]
            )
            plan = [row[0] for row in result]
        lines += ["", f"EXPLAIN (ANALYZE, BUFFERS) of: {' '.join(statement.split())}", *plan]
    return lines


# -- board over HTTP --------------------------------------------------------------------------


async def measure_http(
    server: fanout.Server, token: str, args: argparse.Namespace, team_id: int
) -> list[Timed]:
    """The board as the wall screen asks for it (the htmx refresh of its live region), and
    the JSON behind it."""
    fragment = {"HX-Request": "true"}
    targets = [
        ("GET /board?team=all (htmx fragment)", "/board", fragment, {"team": "all"}),
        (f"GET /board?team={team_id} (htmx fragment)", "/board", fragment, {"team": team_id}),
        ("GET /api/sla/board?team=all", "/api/sla/board", {}, {"team": "all"}),
        ("GET /api/metrics/service-level (today)", "/api/metrics/service-level", {}, {}),
    ]
    rows = []
    async with httpx.AsyncClient(base_url=server.base, trust_env=False, timeout=30) as http:
        for label, path, headers, query in targets:
            headers = {**headers, "Authorization": f"Bearer {token}"}
            first = await http.get(path, headers=headers, params=query)
            if first.status_code != 200:
                rows.append(Timed(label, note=f"{first.status_code}: {first.text[:200]}"))
                continue
            timed = Timed(label, note=f"{len(first.content):,} bytes")
            for i in range(args.board_warmup + args.board_calls):
                started = time.perf_counter()
                r = await http.get(path, headers=headers, params=query)
                took = (time.perf_counter() - started) * 1e3
                r.raise_for_status()
                if i >= args.board_warmup:
                    timed.ms.append(took)
            rows.append(timed)
    return rows


# -- the worker's pass, in-process -----------------------------------------------------------


async def measure_worker_pass(url: str, args: argparse.Namespace, seeded: Seeded) -> list[Timed]:
    """`SlaWorker.tick()` in this process: with nothing due (what every idle half second
    costs at this scale), and with a full batch of breaches due (what a burst costs)."""
    from helpdesk.sla_worker import BATCH, SlaWorker

    db = Database.from_url(url, pool_size=2)
    worker = SlaWorker(db)
    idle = Timed("tick(), nothing due")
    full = Timed(f"tick(), {BATCH} breaches due")
    try:
        for i in range(args.board_warmup + args.board_calls):
            started = time.perf_counter()
            fired = await worker.tick()
            if i >= args.board_warmup:
                idle.ms.append((time.perf_counter() - started) * 1e3)
            if fired:
                idle.note = f"fired {fired}: seeded clocks fell due"
        for _ in range(args.worker_passes):
            await plant_clocks(url, seeded, spread(time.time() - 2.0, 1.0, BATCH))
            started = time.perf_counter()
            fired = await worker.tick()
            full.ms.append((time.perf_counter() - started) * 1e3)
            if fired != BATCH:
                full.note = f"a pass fired {fired}, not {BATCH}"
        if full.ms and not full.note:
            per = statistics.median(full.ms) / BATCH
            full.note = f"median {per:.2f} ms per clock"
    finally:
        await db.dispose()
    return [idle, full]


# -- lag: deadlines to events on a supervisor's socket ---------------------------------------


@dataclass
class Planned:
    case_id: int
    warning_at: float  # epoch seconds
    deadline_at: float


@dataclass
class LagResult:
    processes: int
    clocks: int
    sockets: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    lag_ms: dict[str, list[float]] = field(default_factory=dict)
    fire_ms: dict[str, list[float]] = field(default_factory=dict)  # due -> worker's pass
    deliver_ms: list[float] = field(default_factory=list)  # worker's pass -> socket
    unknown_frames: int = 0
    other_frames: Counter[str] = field(default_factory=Counter)
    db_check: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_servers: list[float] = field(default_factory=list)
    waits: Counter[str] = field(default_factory=Counter)  # samples of busy backends
    window_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    http: list[Timed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Listener:
    """One supervisor socket: records each SLA frame's arrival time."""

    def __init__(self, label: str, ws: Any) -> None:
        self.label = label
        self.ws = ws
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.other: Counter[str] = Counter()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                now = time.time()
                frame = json.loads(message)
                kind = frame.get("type")
                if kind in ("sla_warning", "sla_breach"):
                    self.frames.append((now, frame))
                elif kind == "ping":
                    await self.ws.send('{"type":"pong"}')
                else:
                    self.other[str(kind)] += 1


async def open_listener(label: str, url: str, staff: fanout.Staff, topics: list[str]) -> Listener:
    ws, _hello = await fanout.open_agent_socket(url, staff.token, deflate=True)
    if topics:
        await ws.send(json.dumps({"type": "watch", "topics": topics}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame.get("type") == "watching":
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"watch refused: {frame}")
    listener = Listener(label, ws)
    listener.task = asyncio.create_task(listener.run())
    return listener


def spread(first: float, seconds: float, k: int) -> list[datetime]:
    """`k` instants evenly over `seconds` from `first` (epoch seconds)."""
    return [datetime.fromtimestamp(first + seconds * i / k, UTC) for i in range(k)]


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy, every process's (ours and anyone else's)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


async def sample_waits(url: str, stop: asyncio.Event, waits: Counter[str]) -> None:
    """Every 100 ms, what each busy database session is doing: on CPU, or waiting (for a
    lock, a client, I/O), so that a slow pass shows whether it waited or worked."""
    conn = await fanout.raw_connect(url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                """
                SELECT coalesce(wait_event_type || ':' || wait_event, 'on CPU') AS what
                FROM pg_stat_activity
                WHERE state = 'active' AND backend_type = 'client backend'
                  AND pid <> pg_backend_pid()
                """
            )
            waits.update(r["what"] for r in rows)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await conn.close()


async def plant_clocks(url: str, seeded: Seeded, deadlines: list[datetime]) -> list[Planned]:
    """New cases, each with a running first-response clock due at one of `deadlines` (its
    warning 20 % of the 1-minute target earlier), committed in one transaction."""
    lead = timedelta(minutes=LAG_TARGET_MINUTES) * 0.2
    per_team = seeded.agents_per_team
    conn = await fanout.raw_connect(url)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                """
                WITH planned AS (
                    SELECT d, n FROM unnest($1::timestamptz[]) WITH ORDINALITY AS p(d, n)
                ), made AS (
                    INSERT INTO cases (customer_id, subject, status, priority, channel,
                                       assignee_id, team_id, created_at, updated_at)
                    SELECT (SELECT min(id) FROM customers) + n::int, 'SLA lag probe ' || n, 'new',
                           'high', 'email',
                           ($3::int[])[((n - 1) % array_length($2::int[], 1))::int * $4::int + 1],
                           ($2::int[])[((n - 1) % array_length($2::int[], 1))::int + 1],
                           d - make_interval(mins => $6::int), d - make_interval(mins => $6::int)
                    FROM planned ORDER BY n
                    RETURNING id, created_at
                )
                INSERT INTO sla_clocks (case_id, kind, policy_id, state, target_minutes,
                                        started_at, deadline_at, warning_at)
                SELECT id, 'first_response', $5::int, 'active', $6::int, created_at,
                       created_at + make_interval(mins => $6::int),
                       created_at + make_interval(mins => $6::int) - $7::interval
                FROM made
                RETURNING case_id, warning_at, deadline_at
                """,
                deadlines,
                seeded.team_ids,
                seeded.agent_ids,
                per_team,
                seeded.policy_ids[0],
                LAG_TARGET_MINUTES,
                lead,
            )
    finally:
        await conn.close()
    return [
        Planned(r["case_id"], r["warning_at"].timestamp(), r["deadline_at"].timestamp())
        for r in rows
    ]


async def check_database(url: str, planned: list[Planned]) -> dict[str, int]:
    """What the workers recorded for the planted clocks: each fired once, one entry each."""
    ids = [p.case_id for p in planned]
    conn = await fanout.raw_connect(url)
    try:
        row = await conn.fetchrow(
            """
            SELECT count(*) FILTER (WHERE state = 'breached') AS breached,
                   count(*) FILTER (WHERE warned_at IS NOT NULL) AS warned,
                   count(*) FILTER (WHERE state = 'active') AS still_active
            FROM sla_clocks WHERE case_id = ANY($1::int[])
            """,
            ids,
        )
        entries = await conn.fetch(
            """
            SELECT meta->>'sla' AS ev, count(*) AS n, count(DISTINCT case_id) AS cases
            FROM interactions WHERE case_id = ANY($1::int[]) AND kind = 'system'
            GROUP BY 1
            """,
            ids,
        )
        fired = await conn.fetch(
            """
            SELECT case_id, extract(epoch FROM warned_at) AS warned,
                   extract(epoch FROM breach_fired_at) AS fired
            FROM sla_clocks WHERE case_id = ANY($1::int[])
            """,
            ids,
        )
    finally:
        await conn.close()
    out = {k: int(v) for k, v in dict(row).items()}
    for e in entries:
        out[f"system entries {e['ev']}"] = int(e["n"])
        out[f"cases with {e['ev']} entry"] = int(e["cases"])
    out["_fired"] = fired  # type: ignore[assignment]
    return out


async def lag_run(
    url: str,
    work_dir: Path,
    args: argparse.Namespace,
    seeded: Seeded,
    processes: int,
    clocks: int,
    postmaster: int | None,
    with_http: bool,
) -> LagResult:
    print(
        f"\n== lag, {clocks} clocks, {processes} `helpdesk serve` process(es) with the SLA "
        "worker ...",
        flush=True,
    )
    result = LagResult(processes, clocks)
    servers = [
        fanout.start_server(url, work_dir / f"lag{processes}-{clocks}-server{i}")
        for i in range(processes)
    ]
    listeners: list[Listener] = []
    try:
        await asyncio.gather(*(asyncio.to_thread(fanout.wait_ready, s) for s in servers))
        await asyncio.sleep(1.0)
        if with_http:
            result.http = await measure_http(
                servers[0], seeded.watcher.token, args, seeded.team_ids[0]
            )
        for i, s in enumerate(servers):
            listeners.append(await open_listener(f"watcher@{i + 1}", s.ws, seeded.watcher, ["sla"]))
            for team_id, sup in seeded.supervisors.items():
                listeners.append(await open_listener(f"team{team_id}@{i + 1}", s.ws, sup, []))
        result.sockets = len(listeners)
        await asyncio.sleep(0.5)

        first = time.time() + args.lag_lead
        planned = await plant_clocks(url, seeded, spread(first, args.lag_spread, clocks))
        by_case = {p.case_id: p for p in planned}
        print(
            f"   {len(planned)} clocks planted; warnings due from "
            f"{planned[0].warning_at - time.time():.1f} s, deadlines from "
            f"{planned[0].deadline_at - time.time():.1f} s to "
            f"{planned[-1].deadline_at - time.time():.1f} s from now",
            flush=True,
        )
        server_pids = {i: fanout.process_tree(s.proc.pid) for i, s in enumerate(servers)}
        all_server = [p for ps in server_pids.values() for p in ps]
        window_from = planned[0].warning_at
        await asyncio.sleep(max(0.0, window_from - time.time()))
        load0 = os.getloadavg()[0]
        cpu0 = fanout.cpu_seconds(all_server + fanout.postgres_pids(postmaster))
        machine0 = machine_busy_seconds()
        wall0 = time.time()
        sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_waits(url, sampling, result.waits))

        expected_each = 2 * len(planned)
        until = planned[-1].deadline_at + DRAIN_SECONDS
        watchers = [x for x in listeners if x.label.startswith("watcher")]
        teams = [x for x in listeners if x.label.startswith("team")]
        while time.time() < until:
            if (
                time.time() > planned[-1].deadline_at
                and min(len(x.frames) for x in watchers) >= expected_each
                and sum(len(x.frames) for x in teams) >= expected_each * processes
            ):
                break
            await asyncio.sleep(0.05)
        wall1 = time.time()
        cpu1 = fanout.cpu_seconds(all_server + fanout.postgres_pids(postmaster))
        result.cpu["machine"] = 100 * (machine_busy_seconds() - machine0) / (wall1 - wall0)
        sampling.set()
        await sampler
        result.load = (load0, os.getloadavg()[0])
        result.window_s = wall1 - wall0

        def share(pids: set[int]) -> float:
            before = {p: t for p, t in cpu0.items() if p in pids}
            after = {p: t for p, t in cpu1.items() if p in pids}
            return 100 * fanout.cpu_delta(before, after) / max(wall1 - wall0, 1e-9)

        result.cpu_servers = [share(set(pids)) for pids in server_pids.values()]
        if postmaster is not None:
            result.cpu["postgres"] = share(set(cpu1) - set(all_server))

        # -- figures
        await asyncio.sleep(0.3)
        for group in ("watcher", "team"):
            mine = [x for x in listeners if x.label.startswith(group)]
            # each event reaches one watcher socket and one team supervisor socket per process
            result.expected[group] = expected_each * processes
            seen_total = dups = 0
            lags: dict[str, list[float]] = {"sla_warning": [], "sla_breach": []}
            for x in mine:
                seen: set[tuple[str, int]] = set()
                for now, frame in x.frames:
                    p = by_case.get(frame.get("case_id"))
                    if p is None:
                        result.unknown_frames += 1
                        continue
                    key = (frame["type"], p.case_id)
                    if key in seen:
                        dups += 1
                        continue
                    seen.add(key)
                    due = p.warning_at if frame["type"] == "sla_warning" else p.deadline_at
                    lags[frame["type"]].append((now - due) * 1e3)
                seen_total += len(seen)
                result.other_frames.update(x.other)
            result.received[group] = seen_total
            result.duplicates[group] = dups
            result.lag_ms[f"{group}: sla_warning"] = lags["sla_warning"]
            result.lag_ms[f"{group}: sla_breach"] = lags["sla_breach"]
        checked = await check_database(url, planned)
        fired = checked.pop("_fired")
        result.db_check = checked
        first_watch = next(x for x in listeners if x.label.startswith("watcher"))
        arrival = {
            (f["type"], f["case_id"]): now
            for now, f in first_watch.frames
            if f["case_id"] in by_case
        }
        result.fire_ms = {"sla_warning": [], "sla_breach": []}
        for r in fired:  # type: ignore[attr-defined]
            p = by_case[r["case_id"]]
            for kind, at, due in (
                ("sla_warning", r["warned"], p.warning_at),
                ("sla_breach", r["fired"], p.deadline_at),
            ):
                if at is None:
                    continue
                result.fire_ms[kind].append((float(at) - due) * 1e3)
                got = arrival.get((kind, p.case_id))
                if got is not None:
                    result.deliver_ms.append((got - float(at)) * 1e3)
        return result
    finally:
        for x in listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(x.ws.close(), 5)
            if x.task is not None:
                x.task.cancel()
        for s in servers:
            fanout.stop_server(s)
        logs = [s.log.read_text(errors="replace") for s in servers if s.log.exists()]
        errors = [line for text in logs for line in text.splitlines() if "Traceback" in line]
        if errors:
            print(f"   server logs hold {len(errors)} tracebacks", flush=True)


# -- report -----------------------------------------------------------------------------------


MEASURED_CODE = ("helpdesk/metrics.py", "helpdesk/sla.py", "helpdesk/sla_worker.py")


def code_line() -> str:
    """Which code was measured: the commit, and the measured modules' content hashes when
    they differ from it (several people work in one checkout; a figure needs its code)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *MEASURED_CODE],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "code:     (git not available)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    hashes = [
        f"{name} {hashlib.sha256((root / name).read_bytes()).hexdigest()[:12]}"
        for name in changed
        if (root / name).exists()
    ]
    return f"code:     git {head or '?'}" + (
        "; uncommitted: " + ", ".join(hashes) if hashes else ", measured modules as committed"
    )


def seed_lines(seeded: Seeded, args: argparse.Namespace) -> list[str]:
    c = seeded.counts
    states = ", ".join(f"{k} {v:,}" for k, v in seeded.clock_states.items())
    took = ", ".join(f"{k} {v:.1f} s" for k, v in seeded.seconds.items() if k != "total")
    return [
        f"data:     {c['cases']:,} cases ({c['open cases']:,} open) over {args.history_days} "
        f"days for {c['customers']:,} customers; {c['sla_clocks']:,} SLA clocks; "
        f"{c['interactions']:,} interactions; {c['calls']:,} calls and "
        f"{c['chat_conversations']:,} chats over {args.days} days; {len(seeded.team_ids)} teams, "
        f"{len(seeded.agent_ids)} agents, {len(seeded.team_ids) + 1} supervisors",
        f"clocks of open cases: {states}",
        f"seeded:   in {seeded.seconds['total']:.1f} s ({took}); nothing seeded falls due "
        f"within {args.horizon_minutes} min",
    ]


def timed_lines(title: str, rows: list[Timed]) -> list[str]:
    lines = ["", ms_header(title)]
    for r in rows:
        if r.ms:
            lines.append(ms_row(r.label, r.ms))
        else:
            lines.append(f"{r.label:<44} {r.note}")
    return lines


def lag_lines(r: LagResult, args: argparse.Namespace) -> list[str]:
    lines = [
        "",
        f"-- {r.processes} `helpdesk serve` process(es), each with its SLA worker; "
        f"{r.clocks} clocks, deadlines evenly over {args.lag_spread:g} s (warnings 12 s before "
        f"each: {r.clocks / args.lag_spread:g} deadlines/s and as many warnings/s, overlapping "
        f"for {max(0.0, args.lag_spread - 12):g} s); {r.sockets} supervisor sockets",
        "",
        f"{'events on the sockets':<44} {'expected':>9} {'received':>9} {'missing':>8} {'dup':>5}",
    ]
    names = {"watcher": "watcher (topic sla), per process", "team": "team supervisors (users=)"}
    for group, name in names.items():
        exp, got = r.expected.get(group, 0), r.received.get(group, 0)
        lines.append(f"{name:<44} {exp:>9} {got:>9} {exp - got:>8} {r.duplicates.get(group, 0):>5}")
    lines += ["", ms_header("lag (ms): due -> frame on the socket")]
    for label, values in r.lag_ms.items():
        lines.append(ms_row(label, values))
    lines += [
        ms_row("  of which due -> worker pass: sla_warning", r.fire_ms.get("sla_warning", [])),
        ms_row("  of which due -> worker pass: sla_breach", r.fire_ms.get("sla_breach", [])),
        ms_row("  of which worker pass -> watcher socket", r.deliver_ms),
        "",
        "database: " + ", ".join(f"{k} {v}" for k, v in r.db_check.items()),
        "CPU over the window (% of one core): servers "
        + " + ".join(f"{c:.0f}" for c in r.cpu_servers)
        + (f", postgres {r.cpu['postgres']:.0f}" if "postgres" in r.cpu else "")
        + f", whole machine {r.cpu.get('machine', 0):.0f} of {100 * (os.cpu_count() or 1)}"
        + f"; window {r.window_s:.1f} s; 1-min load {r.load[0]:.2f} at the start, "
        f"{r.load[1]:.2f} at the end",
        "busy database sessions, sampled every 100 ms: "
        + (", ".join(f"{k} {v}" for k, v in r.waits.most_common(6)) or "none seen"),
    ]
    if r.other_frames:
        lines.append("other frames: " + ", ".join(f"{k} {v}" for k, v in r.other_frames.items()))
    if r.unknown_frames:
        lines.append(f"PROBLEM: {r.unknown_frames} SLA frames for clocks the bench did not plant")
    every = [x for v in r.lag_ms.values() for x in v]
    p99 = fanout.pct(every, 99)
    missing = sum(r.expected.values()) - sum(r.received.values())
    dups = sum(r.duplicates.values())
    lines.append(
        f"aims: lag p99 {p99 / 1e3:.2f} s, max {max(every, default=float('nan')) / 1e3:.2f} s "
        f"{'<' if max(every, default=float('inf')) < AIM_LAG_S * 1e3 else '>='} "
        f"{AIM_LAG_S:g} s; missing {missing}, duplicates {dups} (aim 0)"
    )
    lines += [f"note: {n}" for n in r.notes]
    return lines


# -- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, url: str, work_dir: Path, postmaster: int | None) -> None:
    await fanout.migrate(url)
    print(f"seeding {args.cases:,} cases ({args.open:,} open) ...", flush=True)
    load_before = os.getloadavg()
    seeded = await seed(url, args)
    facts = await fanout.db_facts(url)

    print(f"timing the board ({args.board_calls} calls each) ...", flush=True)
    board_rows, explained = await measure_board(url, args, seeded)
    print(f"timing the SLA worker's pass in-process ({args.worker_passes} full passes) ...")
    worker_rows = await measure_worker_pass(url, args, seeded)

    # The servers run their SLA worker; the chat router stays off so that the seeded chats
    # (queued, active) stay as seeded while the board is read.
    os.environ["HELPDESK_SLA_WORKER"] = "1"
    os.environ["HELPDESK_CHAT_ROUTER"] = "0"
    lags = []
    for processes in args.workers:
        for clocks in args.lag_clocks:
            left = (seeded.at + timedelta(minutes=args.horizon_minutes)) - datetime.now(UTC)
            result = await lag_run(
                url, work_dir, args, seeded, processes, clocks, postmaster, not lags
            )
            if left.total_seconds() < args.lag_lead + args.lag_spread + DRAIN_SECONDS:
                result.notes.append("seeded clocks may have fallen due meanwhile: raise --horizon")
            lags.append(result)
    load_after = os.getloadavg()

    fanout.print_header(
        "helpdesk benchmark: SLA engine and supervisor board (bench/sla.py)",
        load_before,
        load_after,
        facts,
    )
    print(code_line())
    print("\n".join(seed_lines(seeded, args)))
    title = f"board in-process, ms ({args.board_calls} calls after {args.board_warmup})"
    print("\n".join(timed_lines(title, board_rows)))
    for r in board_rows:
        print(f"  {r.label} returned: {r.note}")
    for line in explained:
        print(line)
    print("\n".join(timed_lines("SLA worker pass in-process, ms", worker_rows)))
    for r in worker_rows:
        if r.ms and r.note:
            print(f"  {r.label}: {r.note}")
    if lags and lags[0].http:
        print("\n".join(timed_lines("board over HTTP, ms (one client, sequential)", lags[0].http)))
    for r in lags:
        print("\n".join(lag_lines(r, args)))
    # The aim is judged on what the board's endpoints call (board_snapshot_on); the
    # one-connection rows above show what running the parts one after another costs.
    board_p99 = [
        fanout.pct(r.ms, 99) for r in board_rows if r.ms and r.label.startswith("board_snapshot_on")
    ]
    print()
    if board_p99:
        worst = max(board_p99)
        print(
            f"aims: board p99 {worst:.1f} ms {'<' if worst < AIM_BOARD_MS else '>='} "
            f"{AIM_BOARD_MS:g} ms (board_snapshot_on, as the endpoints call it; slowest scope)"
        )
    print(
        "Board: each call is its own unit of work on one pooled connection, in this process "
        "(board_snapshot_on: three units of work on three connections, at once). "
        "Lag: time.time() when the frame arrived on the bench's socket minus the clock's "
        "warning_at or deadline_at (one machine, one clock); 'due -> worker pass' is the "
        "worker's recorded warned_at / breach_fired_at (the `now` of the pass that fired it) "
        "minus the due time; 'worker pass -> watcher socket' is the rest: the pass's "
        "transaction, its commit, NOTIFY and the hub. CPU: each server's process tree and all "
        "PostgreSQL processes."
    )


async def main_async(args: argparse.Namespace) -> None:
    await fanout.with_database("helpdesk-sla-bench-", run, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases in all")
    parser.add_argument("--open", type=int, default=50_000, help="of which open")
    parser.add_argument("--customers", type=int, default=0, help="default: cases / 5")
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--agents", type=int, default=200, help="spread over the teams")
    parser.add_argument("--history-days", type=int, default=365, help="cases span this")
    parser.add_argument("--days", type=int, default=30, help="days of calls and chats")
    parser.add_argument("--calls-per-day", type=int, default=3000)
    parser.add_argument("--chats-per-day", type=int, default=1500)
    parser.add_argument("--tz", default="Asia/Tokyo", help="the board's day and the calendars")
    parser.add_argument(
        "--horizon-minutes",
        type=int,
        default=60,
        help="no seeded running clock falls due sooner than this after the seeding",
    )
    parser.add_argument("--board-calls", type=int, default=200, help="timed calls of each")
    parser.add_argument("--board-warmup", type=int, default=10)
    parser.add_argument(
        "--explain", action="store_true", help="per-statement times and EXPLAIN ANALYZE"
    )
    parser.add_argument(
        "--worker-passes", type=int, default=10, help="in-process passes of a full batch"
    )
    parser.add_argument("--workers", default="1,2", help="server process counts, such as 1,2")
    parser.add_argument(
        "--lag-clocks",
        default="2000",
        help="clocks planted per run; several (such as 200,2000) run one after the other",
    )
    parser.add_argument("--lag-spread", type=float, default=20.0, help="seconds")
    parser.add_argument(
        "--lag-lead", type=float, default=15.0, help="seconds from planting to the 1st deadline"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    try:
        args.workers = [int(p) for p in args.workers.split(",") if p.strip()]
    except ValueError:
        parser.error("--workers is a comma-separated list of integers, such as 1,2")
    try:
        args.lag_clocks = [int(k) for k in str(args.lag_clocks).split(",") if k.strip()]
    except ValueError:
        parser.error("--lag-clocks is a number or a comma-separated list, such as 200,2000")
    if not args.lag_clocks or min(args.lag_clocks) < 1 or args.lag_spread <= 0:
        parser.error("--lag-clocks and --lag-spread must be positive")
    if any(p < 1 for p in args.workers):
        parser.error("--workers counts must be 1 or more")
    if not 0 < args.open <= args.cases:
        parser.error("--open must be between 1 and --cases")
    if args.agents < args.teams or args.teams < 1:
        parser.error("--agents must be at least --teams, and --teams at least 1")
    if args.lag_lead < 13:
        parser.error("--lag-lead must be at least 13 s (warnings fall 12 s before deadlines)")
    args.customers = args.customers or max(1, args.cases // 5)
    fanout.run_async(main_async(args))


if __name__ == "__main__":
    main()
