"""Background work: the jobs that answer no request and hold no socket.

The outbox worker (`helpdesk/mail/outbound.py`) sends queued mail; the SLA worker
(`helpdesk/sla_worker.py`) announces warnings and breaches. Both claim their rows with
`FOR UPDATE SKIP LOCKED` and record the outcome in the transaction that claimed them, so any
number of processes may run them at once without sending a mail or announcing a clock twice.
Every `helpdesk serve` process runs them by default; with `HELPDESK_BACKGROUND=0` the app
processes leave them to `helpdesk worker` (docs/DEPLOYMENT.md).

Not here, on purpose: the hub, the presence sweeper (which also purges stored hub events)
and the chat router follow the sockets a process holds, so they stay in the app processes.
Search indexing happens in the request that saved the article, after its commit: there is
no queue to drain.
"""

from __future__ import annotations

import asyncio
import logging

from helpdesk.config import Settings
from helpdesk.db import Database
from helpdesk.mail.outbound import OutboxWorker, SmtpRelay
from helpdesk.sla_worker import SlaWorker

log = logging.getLogger(__name__)


class BackgroundWork:
    """The background jobs of one process, started together and stopped together.

    The relay URL is parsed on construction, so a bad `HELPDESK_SMTP_URL` is refused before
    anything starts (`ValueError`).
    """

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.relay = SmtpRelay.parse(settings.smtp_url) if settings.smtp_url else None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def describe(self) -> str:
        """What runs, in words, for the line logged at start."""
        relay = (
            f"relay {self.relay.host} port {self.relay.port}"
            if self.relay
            else "no relay: HELPDESK_SMTP_URL is not set"
        )
        jobs = [f"outbox worker ({relay})"]
        if self.settings.sla_worker:
            jobs.append("SLA worker")
        return ", ".join(jobs)

    def start(self) -> None:
        log.info("background work in this process: %s", self.describe())
        outbox = OutboxWorker(self.db, self.relay, poll_seconds=self.settings.outbox_poll_seconds)
        self._tasks.append(asyncio.create_task(outbox.run(self._stop), name="outbox-worker"))
        if self.settings.sla_worker:
            sla = SlaWorker(self.db)
            self._tasks.append(asyncio.create_task(sla.run(self._stop), name="sla-worker"))

    async def wait(self) -> None:
        """Return when `stop()` has been called; raise if a job ended on its own.

        Each job's loop survives its own errors (a relay or the database gone for a while),
        so one that ends before it was asked to is a bug, and a process that stops doing its
        work should say so and exit rather than look alive.
        """
        if not self._tasks:
            await self._stop.wait()
            return
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        if self._stop.is_set():
            return
        task = done.pop()
        task.result()  # its exception, if it has one
        raise RuntimeError(f"{task.get_name()} ended before it was stopped")

    async def stop(self) -> None:
        """Ask every job to stop and wait while each finishes the batch in hand: a mail the
        relay has accepted is recorded as sent, not sent again by the next process."""
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s failed", task.get_name(), exc_info=result)
        self._tasks.clear()
