"""Asterisk Manager Interface (AMI) bridge: Asterisk's call signalling as `CallEvent`s.

Asterisk describes a call as channels, one per leg, that come and go; the helpdesk wants one
call that rings, is answered and hangs up. `AmiBridge` logs in to the AMI over TCP, reads its
`Key: Value` frames, follows each call by `Linkedid` and hands what it derives to a sink, one
event at a time, in order.

Rules (the README repeats them):

* A channel belongs to a *local extension* when it is PJSIP, SIP, IAX2 or Local and its
  endpoint (`PJSIP/201-0000001a`, `SIP/201-...`, `PJSIP/201`, `Local/201@from-queue-...;1`)
  matches the extension pattern (2 to 6 digits unless configured). Trunks are named after the
  provider (`PJSIP/ntt-trunk-...`), so they never are. Contexts are not consulted: their
  names are each site's own.
* Direction: outbound when the call's first channel is a local extension, inbound otherwise.
* Agent: the extension whose channel rings (`DestChannel` of `DialBegin`, `Interface` of
  `AgentCalled`); outbound, the extension that dialed. A call between extensions only is
  internal and produces nothing.
* Inbound: `QueueCallerJoin` -> ring with the queue and no agent (the caller waits);
  `DialBegin`/`AgentCalled` at an extension -> ring at it; `DialEnd ANSWER`, `AgentConnect`
  or the agent's channel entering a bridge -> answer by it. Each at most once per agent.
  Outbound: dialing out -> ring at the dialing agent; the far end answering -> answer.
* Hangup: when the customer's channel (the caller inbound, the far end outbound) or the
  call's last channel hangs up, on `AgentComplete` (unless the agent transferred the call),
  and on `QueueCallerAbandon` (cause `cancel`). An answered call ends `normalClearing`; an
  unanswered one takes its cause from the Q.850 `Cause` when that says why (17 busy; 18, 19,
  20, 21 noAnswer; 1, 3, 22, 28 notFound; 34, 38, 41, 42 congestion), else from the last
  `DialEnd` status (CANCEL cancel, BUSY busy, NOANSWER noAnswer, CONGESTION and CHANUNAVAIL
  congestion), else `cancel`: the caller hung up before anyone answered.
* After every login, the first included, `CoreShowChannels` rebuilds the calls in progress:
  a call known before but no longer listed ended while we were away and gets its hangup, and
  a listed call gets what it missed (a ring, an answer), never twice.

The AMI user needs `read = call,agent` (channel and queue events) and `write = reporting`
(for CoreShowChannels; without it calls are still followed, but not rebuilt).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cti.events import CallEvent, EventSink

log = logging.getLogger(__name__)

Frame = dict[str, str]
"""One AMI message: header names in lower case (AMI treats them case-insensitively)."""

CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 30.0  # for the banner, the login and the channel list
EXTENSION_TECHS = frozenset({"pjsip", "sip", "iax2", "local"})
_ENDPOINT_END = re.compile(r"[-@;/]")

# Q.850 causes that say why an unanswered call failed. 16 (normal clearing) and the like say
# nothing of the kind: then who hung up, and how the dialing ended, decide.
CAUSE_BY_CODE = {
    "1": "notFound",
    "3": "notFound",
    "22": "notFound",
    "28": "notFound",
    "17": "busy",
    "18": "noAnswer",
    "19": "noAnswer",
    "20": "noAnswer",
    "21": "noAnswer",
    "34": "congestion",
    "38": "congestion",
    "41": "congestion",
    "42": "congestion",
}
CAUSE_BY_DIAL_STATUS = {
    "CANCEL": "cancel",
    "BUSY": "busy",
    "NOANSWER": "noAnswer",
    "CONGESTION": "congestion",
    "CHANUNAVAIL": "congestion",
}


class AmiLoginError(Exception):
    """Asterisk refused us in a way that retrying will not fix: bad credentials, or not an AMI."""


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[Frame]:
    """The frames on `reader`, until it ends: `Key: Value` lines up to a blank line.

    Lines may end in CRLF or LF alone and arrive split anywhere; a line that is no header
    is skipped (and logged at debug), a value may itself contain ": ". A frame cut short by
    the end of the stream is dropped: it may miss the very header that matters.
    """
    frame: Frame = {}
    while line := await reader.readline():
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            if frame:
                yield frame
                frame = {}
            continue
        key, colon, value = text.partition(":")
        if not colon or not key or not key.isprintable() or " " in key:
            log.debug("AMI: skipping a line that is no header: %r", text[:200])
            continue
        frame[key.lower()] = value.removeprefix(" ")


@dataclass
class _Call:
    """What we know of one call in progress, keyed by Linkedid."""

    call_id: str
    direction: str
    from_number: str
    to_number: str
    # Uniqueid of the customer's channel (the caller inbound, the far end outbound): when it
    # hangs up the call is over for the customer, whatever the other legs still do.
    customer: str = ""
    agent: str = ""  # outbound: the extension that dialed
    channels: set[str] = field(default_factory=set)
    queue: str | None = None
    rung: set[str] = field(default_factory=set)
    answered_by: set[str] = field(default_factory=set)
    dial_status: str = ""

    @property
    def is_reported(self) -> bool:
        """Whether the helpdesk has heard of this call (and so must hear of its end)."""
        return bool(self.rung or self.answered_by or self.queue)


class AmiBridge:
    """Follows the calls on one Asterisk and hands their `CallEvent`s to `sink`."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        sink: EventSink,
        *,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
        extension_pattern: str = r"\d{2,6}",
        max_in_flight: int = 64,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._sink = sink
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._extension_pattern = re.compile(extension_pattern)
        self._calls: dict[str, _Call] = {}
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._last_of_call: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._last_action = 0
        self._logged_in = False
        self._closing = False
        self._closed = asyncio.Event()
        self._handlers = {
            "DialBegin": self._dial_begin,
            "DialEnd": self._dial_end,
            "BridgeEnter": self._bridge_enter,
            "Hangup": self._hangup,
            "QueueCallerJoin": self._queue_caller_join,
            "AgentCalled": self._agent_called,
            "AgentConnect": self._agent_connect,
            # AgentRingNoAnswer needs nothing: the ring was reported, the queue goes on.
            "AgentComplete": self._agent_complete,
            "QueueCallerAbandon": self._queue_caller_abandon,
        }

    # -- the connection ----------------------------------------------------------------

    async def run(self) -> None:
        """Follow Asterisk until cancelled or closed.

        A lost connection is retried with exponential backoff (from `reconnect_initial`,
        doubling up to `reconnect_max`, back to the start after a good login); refused
        credentials are not retried: `AmiLoginError` says what Asterisk answered.
        """
        delay = self._reconnect_initial
        while not self._closing:
            try:
                await self._session()
                problem = "Asterisk closed the connection"
            except (OSError, EOFError, ValueError) as exc:  # ValueError: an endless line
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._closing:
                break
            if self._logged_in:
                delay = self._reconnect_initial
            log.warning(
                "AMI %s:%d: %s; reconnecting in %.1f s", self.host, self.port, problem, delay
            )
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)
            delay = min(delay * 2, self._reconnect_max)

    async def close(self) -> None:
        """Stop following: `run()` returns. Calls in progress stay as Asterisk has them."""
        self._closing = True
        self._closed.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await _log_off(writer)
        await self.drain()

    async def _session(self) -> None:
        """One connection: log in, rebuild the calls in progress, then follow events."""
        self._logged_in = False
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
        )
        self._writer = writer
        frames = read_frames(reader)
        try:
            if self._closing:
                return  # closed while we were connecting
            await self._login(reader, frames)
            self._logged_in = True
            log.info("AMI %s:%d: logged in as %s", self.host, self.port, self.username)
            await self._rebuild(frames)
            async for frame in frames:
                await self._on_event(frame)
        finally:
            await frames.aclose()
            if self._writer is writer:
                self._writer = None
            await _log_off(writer)

    async def _login(self, reader: asyncio.StreamReader, frames: AsyncIterator[Frame]) -> None:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            banner = (await reader.readline()).decode("utf-8", "replace").strip()
            if not banner:
                raise ConnectionError("closed before the greeting")
            if not banner.startswith("Asterisk Call Manager/"):
                raise AmiLoginError(
                    f"{self.host}:{self.port} is not an Asterisk Manager Interface "
                    f"(it greeted {banner[:80]!r})"
                )
            action_id = await self._send(
                "Login", Username=self.username, Secret=self._secret, Events="on"
            )
            async for frame in frames:
                if frame.get("actionid") == action_id:
                    break
            else:
                raise ConnectionError("closed before answering the login")
        if frame.get("response", "").lower() != "success":
            reason = frame.get("message") or "no reason given"
            raise AmiLoginError(
                f"Asterisk at {self.host}:{self.port} refused the login of "
                f"{self.username!r}: {reason}"
            )

    async def _send(self, action: str, **headers: str) -> str:
        self._last_action += 1
        action_id = f"helpdesk-{self._last_action}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        assert self._writer is not None
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        return action_id

    async def _rebuild(self, frames: AsyncIterator[Frame]) -> None:
        """List the channels up now and square the calls we know with them.

        Events keep flowing while Asterisk lists; they are applied after the list, in order,
        so a hangup that raced the listing still lands on the rebuilt call.
        """
        action_id = await self._send("CoreShowChannels")
        listed: list[Frame] | None = []
        later: list[Frame] = []
        async with asyncio.timeout(ANSWER_TIMEOUT):
            async for frame in frames:
                if frame.get("actionid") != action_id:
                    later.append(frame)
                elif frame.get("response", "success").lower() != "success":
                    log.warning(
                        "AMI: cannot list channels (%s); calls in progress are not rebuilt "
                        "(the AMI user needs write = reporting)",
                        frame.get("message", "no reason given"),
                    )
                    listed = None
                    break
                elif frame.get("event") == "CoreShowChannel":
                    listed.append(frame)
                elif frame.get("event") == "CoreShowChannelsComplete":
                    break
            else:
                raise ConnectionError("closed while listing channels")
        if listed is not None:
            await self._restore(listed)
        for frame in later:
            await self._on_event(frame)

    async def _restore(self, listed: list[Frame]) -> None:
        by_call: dict[str, list[Frame]] = {}
        for channel in listed:
            by_call.setdefault(channel.get("linkedid", ""), []).append(channel)
        for call in [c for c in self._calls.values() if c.call_id not in by_call]:
            await self._end(call, {})  # it ended while we were not listening
        for linkedid, channels in by_call.items():
            call = self._calls.get(linkedid)
            if call is None:
                first = next((c for c in channels if c.get("uniqueid") == linkedid), None)
                if first is None:
                    continue  # its first channel is gone: the call is ending
                call = self._calls[linkedid] = self._new_call(first)
            call.channels = {c.get("uniqueid", "") for c in channels}
            if call.customer and call.customer not in call.channels:
                await self._end(call, {})  # the customer hung up; other legs linger
            else:
                await self._catch_up(call, channels)

    async def _catch_up(self, call: _Call, channels: list[Frame]) -> None:
        """Report what a listed call went through while we were not listening."""
        up = {c.get("uniqueid", "") for c in channels if _is_talking(c)}
        if call.direction == "out":
            far = next((c for c in channels if not self._extension(c.get("channel"))), None)
            if far is None:
                return  # internal, so far
            call.customer = far.get("uniqueid", "")
            await self._ring(call, call.agent, far)
            if call.customer in up:
                await self._answer(call, call.agent, far)
            return
        first = next((c for c in channels if c.get("uniqueid") == call.customer), {})
        if first.get("application") == "Queue" and not call.queue:
            call.queue = first.get("applicationdata", "").split(",")[0] or None
            if call.queue:
                await self._emit(call, "ring", (), first)
        for channel in channels:
            agent = self._extension(channel.get("channel"))
            if agent is None or channel.get("uniqueid") == call.customer:
                continue
            if channel.get("channelstatedesc") in ("Ringing", "Up"):
                await self._ring(call, agent, channel)
            if channel.get("uniqueid") in up:
                await self._answer(call, agent, channel)

    # -- events to call events -----------------------------------------------------------

    async def _on_event(self, frame: Frame) -> None:
        name = frame.get("event", "")
        if name == "Newchannel":
            self._newchannel(frame)
            return
        handler = self._handlers.get(name)
        if handler is None:
            log.debug("AMI: ignoring %s", name or "a frame without an event")
            return
        # DialBegin of an originated call has no calling channel: only the Dest fields.
        call = self._calls.get(frame.get("linkedid") or frame.get("destlinkedid", ""))
        if call is not None:
            await handler(call, frame)

    def _newchannel(self, frame: Frame) -> None:
        # Asterisk reuses Uniqueid per channel but Linkedid per call (the first channel's
        # Uniqueid, inherited by every leg it creates): key calls by Linkedid so a transfer
        # or a queue leg stays one call.
        linkedid, uniqueid = frame.get("linkedid", ""), frame.get("uniqueid", "")
        call = self._calls.get(linkedid)
        if call is not None:
            call.channels.add(uniqueid)
        elif linkedid and uniqueid == linkedid:
            self._calls[linkedid] = self._new_call(frame)

    def _new_call(self, first: Frame) -> _Call:
        """A call from its first channel: outbound when a local extension started it."""
        agent = self._extension(first.get("channel"))
        uniqueid = first.get("uniqueid", "")
        return _Call(
            call_id=uniqueid,
            direction="out" if agent else "in",
            from_number=_caller_number(first.get("calleridnum", "")),
            to_number=_dialed(first.get("exten", "")),
            customer="" if agent else uniqueid,
            agent=agent or "",
            channels={uniqueid},
        )

    async def _dial_begin(self, call: _Call, frame: Frame) -> None:
        dest = self._extension(frame.get("destchannel"))
        if call.direction == "in":
            if dest:
                await self._ring(call, dest, frame)
        elif dest is None and not call.customer:
            # An extension dialing out: the far end is the customer.
            call.customer = frame.get("destuniqueid", "")
            call.to_number = _dialed(frame.get("exten", "")) or call.to_number
            await self._ring(call, call.agent, frame)

    async def _dial_end(self, call: _Call, frame: Frame) -> None:
        status = frame.get("dialstatus", "").upper()
        if status != "ANSWER":
            call.dial_status = status  # how an unanswered call ended, if it does
            return
        dest = self._extension(frame.get("destchannel"))
        if call.direction == "in":
            if dest:
                await self._answer(call, dest, frame)
        elif call.customer and frame.get("destuniqueid") == call.customer:
            await self._answer(call, call.agent, frame)

    async def _bridge_enter(self, call: _Call, frame: Frame) -> None:
        agent = self._extension(frame.get("channel"))
        if call.direction == "in":
            if agent and frame.get("uniqueid") != call.customer:
                await self._answer(call, agent, frame)
        elif agent == call.agent and call.is_reported:
            await self._answer(call, agent, frame)

    async def _hangup(self, call: _Call, frame: Frame) -> None:
        uniqueid = frame.get("uniqueid", "")
        call.channels.discard(uniqueid)
        if (call.customer and uniqueid == call.customer) or not call.channels:
            log.debug("AMI: %s hung up: %s", frame.get("channel"), frame.get("cause-txt"))
            await self._end(call, frame)

    async def _queue_caller_join(self, call: _Call, frame: Frame) -> None:
        if call.direction == "in" and not call.queue and frame.get("queue"):
            call.queue = frame["queue"]
            await self._emit(call, "ring", (), frame)

    async def _agent_called(self, call: _Call, frame: Frame) -> None:
        agent = self._queue_agent(frame)
        if agent and call.direction == "in":
            await self._ring(call, agent, frame)

    async def _agent_connect(self, call: _Call, frame: Frame) -> None:
        agent = self._queue_agent(frame)
        if agent and call.direction == "in":
            await self._answer(call, agent, frame)

    async def _agent_complete(self, call: _Call, frame: Frame) -> None:
        if frame.get("reason", "").lower() != "transfer":
            await self._end(call, frame, cause="normalClearing")

    async def _queue_caller_abandon(self, call: _Call, frame: Frame) -> None:
        await self._end(call, frame, cause="cancel")

    # -- emitting --------------------------------------------------------------------------

    async def _ring(self, call: _Call, agent: str, frame: Frame) -> None:
        if agent not in call.rung:
            call.rung.add(agent)
            await self._emit(call, "ring", (agent,), frame)

    async def _answer(self, call: _Call, agent: str, frame: Frame) -> None:
        if agent not in call.answered_by:
            call.answered_by.add(agent)
            await self._emit(call, "answer", (agent,), frame)

    async def _end(self, call: _Call, frame: Frame, *, cause: str | None = None) -> None:
        self._calls.pop(call.call_id, None)
        if not call.is_reported:
            return
        if cause is None:
            cause = "normalClearing" if call.answered_by else None
        if cause is None:
            cause = (
                CAUSE_BY_CODE.get(frame.get("cause", ""))
                or CAUSE_BY_DIAL_STATUS.get(call.dial_status)
                or "cancel"
            )
        await self._emit(call, "hangup", (), frame, cause=cause)

    async def _emit(
        self,
        call: _Call,
        event: str,
        agents: tuple[str, ...],
        frame: Frame,
        *,
        cause: str | None = None,
    ) -> None:
        call_event = CallEvent(
            event=event,
            call_id=call.call_id,
            direction=call.direction,
            from_number=call.from_number,
            to_number=call.to_number,
            agents=agents,
            cause=cause,
            at=_event_time(frame),
            queue=call.queue,
        )
        # Calls are independent: each call's events go to the sink in order, one after the
        # other, while other calls' events go at the same time (at most `max_in_flight`), so
        # a burst of rings is not applied one by one behind each other.
        await self._in_flight.acquire()
        previous = self._last_of_call.get(call.call_id)
        task = asyncio.create_task(self._deliver(call_event, previous))
        self._last_of_call[call.call_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._delivered)

    async def _deliver(self, call_event: CallEvent, previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._sink(call_event)
        except Exception:
            # One event the desk could not take must not stop the bridge: the calls go on.
            log.exception(
                "AMI: the sink failed on %s of call %s", call_event.event, call_event.call_id
            )

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._in_flight.release()
        self._tasks.discard(task)
        for call_id, last in list(self._last_of_call.items()):
            if last is task:
                del self._last_of_call[call_id]

    async def drain(self) -> None:
        """Wait until every event read so far has been handed to the sink."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- channels --------------------------------------------------------------------------

    def _extension(self, channel: str | None) -> str | None:
        """The local extension a channel or interface belongs to, or None (trunks and such)."""
        tech, slash, rest = (channel or "").partition("/")
        if not slash or tech.lower() not in EXTENSION_TECHS:
            return None
        endpoint = _ENDPOINT_END.split(rest, maxsplit=1)[0]
        return endpoint if self._extension_pattern.fullmatch(endpoint) else None

    def _queue_agent(self, frame: Frame) -> str | None:
        return self._extension(frame.get("interface")) or self._extension(frame.get("destchannel"))


async def _log_off(writer: asyncio.StreamWriter) -> None:
    """Say goodbye (Asterisk logs a logoff, not a lost client) and close the connection."""
    if not writer.transport.is_closing():
        writer.write(b"Action: Logoff\r\n\r\n")
        writer.close()
    with suppress(OSError):
        await writer.wait_closed()


def _is_talking(channel: Frame) -> bool:
    return channel.get("channelstatedesc") == "Up" and bool(channel.get("bridgeid"))


def _caller_number(raw: str) -> str:
    """The caller's number as Asterisk has it; none at all is a withheld number."""
    number = raw.strip()
    return "anonymous" if number in ("", "<unknown>") else number


def _dialed(exten: str) -> str:
    """The number a channel is at in the dialplan; `s` (start) is no number."""
    return "" if exten in ("s", "<unknown>") else exten


def _event_time(frame: Frame) -> datetime:
    """When Asterisk says it happened (`timestampevents = yes`), else now."""
    with suppress(ValueError, OverflowError, OSError):
        if stamp := frame.get("timestamp"):
            return datetime.fromtimestamp(float(stamp), UTC)
    return datetime.now(UTC)
