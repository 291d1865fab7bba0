"""`helpdesk worker` as a deployment runs it: app processes with HELPDESK_BACKGROUND=0 send
no mail, the worker process does, two workers never send a mail twice, and SIGTERM stops a
worker cleanly after the batch in hand."""

from __future__ import annotations

import asyncio
import email
import email.policy
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from helpdesk.config import Settings
from helpdesk.mail import outbound
from helpdesk.models import Case, ContactIdentity, Customer, OutboxMail
from tests.conftest import free_port, helpdesk_process, process_output, serve_process

POLL = "0.1"  # HELPDESK_OUTBOX_POLL_SECONDS: a running outbox worker looks ten times a second
WAIT = 20.0  # upper bound for anything that must happen; it takes well under a second
STARTED = "background work in this process"  # the worker's line at start


class Sink:
    """An SMTP server's handler that keeps every message; with `gate` cleared, it holds each
    DATA command open until the gate is set (a relay slow to answer)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.in_data = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.in_data.set()
        await asyncio.to_thread(self.gate.wait, WAIT)
        self.received.append(envelope.original_content or envelope.content)
        return "250 2.0.0 queued"

    def message_ids(self) -> list[str]:
        parsed = [
            email.message_from_bytes(raw, policy=email.policy.default) for raw in self.received
        ]
        return [str(message["Message-ID"]).strip("<>") for message in parsed]


@contextmanager
def smtp_sink() -> Iterator[tuple[Sink, str]]:
    """A real SMTP server on a free port; yields the handler and the relay URL for it."""
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, f"smtp://127.0.0.1:{controller.port}"
    finally:
        controller.stop()


@contextmanager
def worker_process(
    database_url: str, data_dir: Path, smtp_url: str
) -> Iterator[subprocess.Popen[str]]:
    """`helpdesk worker` on the test database, yielded once it has started its jobs."""
    with helpdesk_process(
        database_url,
        data_dir,
        "worker",
        HELPDESK_SMTP_URL=smtp_url,
        HELPDESK_OUTBOX_POLL_SECONDS=POLL,
    ) as proc:
        wait_for_output(proc, STARTED)
        yield proc


def wait_for_output(proc: subprocess.Popen[str], text: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while text not in process_output(proc):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{process_output(proc)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {text!r} within {timeout}s:\n{process_output(proc)}")
        time.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> bool:
    """Poll `check` until it holds or `within` seconds have passed; returns the last answer."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _case(db) -> Case:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        customer = Customer(name="山田 太郎", search_text="山田 太郎")
        session.add(customer)
        await session.flush()
        session.add(
            ContactIdentity(
                customer_id=customer.id,
                kind="email",
                raw_value="taro@example.jp",
                normalized="taro@example.jp",
                is_primary=True,
            )
        )
        case = Case(customer_id=customer.id, subject="印刷できない", channel="email", status="new")
        session.add(case)
        await session.flush()
        await session.refresh(case)
        return case


async def _states(db) -> list[str]:  # type: ignore[no-untyped-def]
    async with db.unit_of_work() as session:
        return list(await session.scalars(select(OutboxMail.state).order_by(OutboxMail.id)))


async def _all_sent(db) -> bool:  # type: ignore[no-untyped-def]
    states = await _states(db)
    return bool(states) and set(states) == {"sent"}


async def test_app_processes_without_background_leave_a_reply_to_the_worker_which_sends_it_once(
    database_url, db, tmp_path, settings, make_staff
):
    agent = await make_staff("agent")
    case = await _case(db)
    with (
        smtp_sink() as (sink, smtp_url),
        serve_process(
            database_url,
            tmp_path,
            HELPDESK_SECRET_KEY=settings.secret_key,
            HELPDESK_SMTP_URL=smtp_url,
            HELPDESK_OUTBOX_POLL_SECONDS=POLL,
            HELPDESK_BACKGROUND="0",
        ) as base,
    ):
        async with httpx.AsyncClient(base_url=base, headers=agent.headers) as client:
            r = await client.post(
                f"/api/cases/{case.id}/replies", json={"body": "お待たせしました。"}
            )
        assert r.status_code == 201, r.text
        # Fifteen of the app's outbox polls: an outbox worker there would have sent it.
        assert not await eventually(lambda: _all_sent(db), within=1.5)
        assert sink.received == []
        assert await _states(db) == ["pending"]

        with worker_process(database_url, tmp_path, smtp_url):
            assert await eventually(lambda: _all_sent(db))
        assert sink.message_ids() == [r.json()["message_id"]]


async def test_two_workers_at_once_send_every_mail_exactly_once(
    database_url, db, tmp_path, settings
):
    case = await _case(db)
    with (
        smtp_sink() as (sink, smtp_url),
        worker_process(database_url, tmp_path, smtp_url),
        worker_process(database_url, tmp_path, smtp_url),
    ):
        # Queued in one transaction once both are polling, so both find them due at once.
        async with db.unit_of_work() as session:
            queued = [
                await outbound.reply_to_case(
                    session, settings, case_id=case.id, author_id=None, text=f"reply {i}"
                )
                for i in range(40)
            ]
        assert await eventually(lambda: _all_sent(db))
    assert sorted(sink.message_ids()) == sorted(entry.meta["message_id"] for entry in queued)
    async with db.unit_of_work() as session:
        assert await session.scalar(select(func.max(OutboxMail.attempts))) == 1


async def test_sigterm_stops_the_worker_after_the_mail_in_hand_with_status_0(
    database_url, db, tmp_path, settings
):
    case = await _case(db)
    with smtp_sink() as (sink, smtp_url), worker_process(database_url, tmp_path, smtp_url) as proc:
        sink.gate.clear()  # the relay takes its time over the next message
        async with db.unit_of_work() as session:
            await outbound.reply_to_case(
                session,
                settings,
                case_id=case.id,
                author_id=None,
                text="ご連絡ありがとうございます。",
            )
        assert await asyncio.to_thread(sink.in_data.wait, WAIT), "the worker never sent"
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(wait_for_output, proc, "stopped by SIGTERM")
        sink.gate.set()  # the relay accepts the mail the worker was sending as it was told
        assert await asyncio.to_thread(proc.wait, WAIT) == 0, process_output(proc)
    assert len(sink.received) == 1
    assert await _states(db) == ["sent"]


def test_background_work_is_on_unless_switched_off_like_the_other_switches(tmp_path):
    env = {
        "HELPDESK_DATA_DIR": str(tmp_path),
        "HELPDESK_SECRET_KEY": "a-secret-key-long-enough-for-hs256-signing",
        "HELPDESK_CTI_TOKEN": "cti",
        "HELPDESK_MAIL_TOKEN": "mail",
    }
    assert Settings.from_env(env).background
    assert Settings.from_env({**env, "HELPDESK_BACKGROUND": "1"}).background
    for off in ("0", "false", "no", "off", "OFF"):
        assert not Settings.from_env({**env, "HELPDESK_BACKGROUND": off}).background


def test_processes_starting_together_share_one_generated_secret(tmp_path):
    """Two app processes and a worker start at once on an empty data dir: each ends with
    the same secret, none fails because another created the file first."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(_secret_key_in, [str(tmp_path)] * 8))
    assert len(set(keys)) == 1 and len(keys[0]) >= 32
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _secret_key_in(data_dir: str) -> str:
    return Settings.from_env({"HELPDESK_DATA_DIR": data_dir}).secret_key
