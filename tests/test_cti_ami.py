"""The Asterisk AMI bridge, replaying real-format AMI transcripts over a real TCP socket.

`FakeAsterisk` speaks the protocol (banner, Login, CoreShowChannels, Logoff) and writes the
transcripts of tests/ami_transcripts/ in awkward chunks; the bridge under test hands its
CallEvents to a list. Every scenario asserts the exact list of events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cti.adapters.ami import AmiBridge, AmiLoginError, read_frames
from cti.events import CallEvent
from helpdesk.db import Database
from helpdesk.models import Call
from tests.conftest import helpdesk_bin

TRANSCRIPTS = Path(__file__).parent / "ami_transcripts"
USER, SECRET = "helpdesk", "s3cret-for-tests"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
WAIT = 10.0  # seconds any single condition may take before the test fails


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


# -- how bytes reach the bridge ------------------------------------------------------------


Chunker = Callable[[bytes], list[bytes]]


def in_sevens(data: bytes) -> list[bytes]:
    return [data[i : i + 7] for i in range(0, len(data), 7)]


def between_cr_and_lf(data: bytes) -> list[bytes]:
    """Every CRLF torn in two: each chunk ends with the CR, the next starts with the LF."""
    return [part + b"\r" for part in data.split(b"\r")[:-1]] + [data.split(b"\r")[-1]]


CHUNKERS = [
    pytest.param(in_sevens, id="7-byte-chunks"),
    pytest.param(between_cr_and_lf, id="split-crlf"),
]


# -- a scripted Asterisk -------------------------------------------------------------------


@dataclass
class Connection:
    """What Asterisk says on one connection, after the login."""

    channels: bytes = b""  # CoreShowChannel events: the calls in progress at login
    events: bytes = b""  # then these, as they happen
    then_hang_up: bool = False  # drop the connection once `events` are out


class FakeAsterisk:
    """An Asterisk Manager Interface on a real TCP port, answering from a script.

    Connection n is answered from script[n] (an idle, open connection once the script is
    used up): the banner, the Login (checked against USER/SECRET), CoreShowChannels from the
    connection's `channels`, then its `events`, each chunk written on its own.
    """

    def __init__(
        self,
        script: Iterable[Connection] = (),
        *,
        chunker: Chunker = in_sevens,
        banner: bytes = b"Asterisk Call Manager/9.0.0\r\n",
    ) -> None:
        self.script = list(script)
        self.chunker = chunker
        self.banner = banner
        self.actions: list[dict[str, str]] = []  # as received
        self.answered: list[str] = []  # the actions whose answer is written out in full
        self.connections = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeAsterisk:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def wait_for_action(self, name: str) -> None:
        await self._wait(lambda: any(a.get("Action") == name for a in self.actions))

    async def wait_for_answer(self, name: str) -> None:
        await self._wait(lambda: name in self.answered)

    async def _wait(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        index, self.connections = self.connections, self.connections + 1
        connection = self.script[index] if index < len(self.script) else Connection()
        writer.write(self.banner)
        try:
            while True:
                action = await self._read_action(reader)
                self.actions.append(action)
                self._changed.set()
                more = await self._answer(action, connection, writer)
                self.answered.append(action.get("Action", ""))
                self._changed.set()
                if not more:
                    break
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the bridge went away
        finally:
            writer.close()

    async def _read_action(self, reader: asyncio.StreamReader) -> dict[str, str]:
        with_blank_line = await reader.readuntil(b"\r\n\r\n")
        lines = with_blank_line.decode().split("\r\n")
        return dict(line.split(": ", 1) for line in lines if line)

    async def _answer(
        self, action: dict[str, str], connection: Connection, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one action; False when the connection is to end."""
        action_id = action.get("ActionID", "")
        name = action.get("Action")
        if name == "Login":
            if (action.get("Username"), action.get("Secret")) != (USER, SECRET):
                writer.write(
                    f"Response: Error\r\nActionID: {action_id}\r\n"
                    "Message: Authentication failed\r\n\r\n".encode()
                )
                return False
            writer.write(
                f"Response: Success\r\nActionID: {action_id}\r\n"
                "Message: Authentication accepted\r\n\r\n"
                "Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 86417\r\n"
                "LastReload: 86417\r\nStatus: Fully Booted\r\n\r\n".encode()
            )
        elif name == "CoreShowChannels":
            # The transcripts carry the ActionID of some earlier session: answer with ours.
            channels = re.sub(
                rb"ActionID: [^\r\n]*", f"ActionID: {action_id}".encode(), connection.channels
            )
            count = channels.count(b"Event: CoreShowChannel\r\n")
            reply = (
                f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
                "Message: Channels will follow\r\n\r\n".encode()
                + channels
                + f"Event: CoreShowChannelsComplete\r\nActionID: {action_id}\r\n"
                f"EventList: Complete\r\nListItems: {count}\r\n\r\n".encode()
            )
            await self._write(writer, reply)
            await self._write(writer, connection.events)
            return not connection.then_hang_up
        elif name == "Logoff":
            writer.write(
                f"Response: Goodbye\r\nActionID: {action_id}\r\n"
                "Message: Thanks for all the fish.\r\n\r\n".encode()
            )
            return False
        else:
            writer.write(
                f"Response: Error\r\nActionID: {action_id}\r\nMessage: Invalid/unknown command\r\n\r\n".encode()
            )
        await writer.drain()
        return True

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        for chunk in self.chunker(data):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # a turn of the loop: the bridge reads this chunk alone


# -- the bridge under test -----------------------------------------------------------------


class Recorder:
    """A sink that keeps what it is given and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[CallEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: CallEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_until(self, done: Callable[[list[CallEvent]], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not done(self.events):
                self._changed.clear()
                await self._changed.wait()


# A call nobody else uses, written last: once its ring is out, every frame before it has
# been read (and `bridge.close()` waits until each of their events reached the sink).
SENTINEL = (
    b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/ntt-trunk-0000ffff\r\n"
    b"ChannelState: 4\r\nChannelStateDesc: Ring\r\nCallerIDNum: 0300000000\r\n"
    b"Context: from-trunk\r\nExten: 0355550199\r\nUniqueid: sentinel.1\r\n"
    b"Linkedid: sentinel.1\r\n\r\n"
    b"Event: QueueCallerJoin\r\nPrivilege: agent,all\r\nChannel: PJSIP/ntt-trunk-0000ffff\r\n"
    b"Uniqueid: sentinel.1\r\nLinkedid: sentinel.1\r\nQueue: sentinel\r\nPosition: 1\r\n"
    b"Count: 1\r\n\r\n"
)


async def replay(*script: Connection, chunker: Chunker = in_sevens) -> list[CallEvent]:
    """Run a bridge against `script` and return the events it emitted, in order."""
    *before, last = script
    script = (*before, replace(last, events=last.events + SENTINEL, then_hang_up=False))
    sink = Recorder()
    async with FakeAsterisk(script, chunker=chunker) as asterisk:
        bridge = AmiBridge("127.0.0.1", asterisk.port, USER, SECRET, sink, reconnect_initial=0.01)
        running = asyncio.create_task(bridge.run())
        try:
            await sink.wait_until(lambda events: any(e.call_id == "sentinel.1" for e in events))
        finally:
            await bridge.close()
            await asyncio.wait_for(running, WAIT)  # close() ends run(), no cancelling needed
        assert asterisk.connections == len(script)
    return [e for e in sink.events if e.call_id != "sentinel.1"]


def timeless(events: list[CallEvent]) -> list[CallEvent]:
    return [replace(e, at=EPOCH) for e in events]


def call(call_id: str, **details: object) -> Callable[..., CallEvent]:
    """Makes the events of one call: call("id", from_number=...)("ring", agents=("201",))."""
    return partial(CallEvent, call_id=call_id, at=EPOCH, **details)  # type: ignore[arg-type]


# -- framing -------------------------------------------------------------------------------


def frames_of(chunks: Iterable[bytes]) -> list[dict[str, str]]:
    async def read() -> list[dict[str, str]]:
        reader = asyncio.StreamReader()
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        return [frame async for frame in read_frames(reader)]

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(read())
    finally:
        loop.close()


def test_frames_keep_values_with_colons_and_skip_lines_that_are_no_headers() -> None:
    data = (
        b"Event: Newexten\r\nPrivilege: dialplan,all\r\nAppData: Set(NAME=a: b)\r\n"
        b"AccountCode: \r\nthis is no header\r\nNot A Key: x\r\n\xff\xfe\r\n\r\n\r\n"
        b"Event: VarSet\nValue: \xe4\xbd\x90\xe8\x97\xa4: \n\n"
        b"Event: Truncated\r\nChannel: PJSIP/201-0000"
    )
    assert frames_of([data]) == [
        {
            "event": "Newexten",
            "privilege": "dialplan,all",
            "appdata": "Set(NAME=a: b)",
            "accountcode": "",
        },
        {"event": "VarSet", "value": "佐藤: "},
    ]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=60))
def test_frames_are_the_same_however_the_stream_is_cut(cuts: list[int]) -> None:
    data = transcript("garbage_and_unknown_events.txt")
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    whole = frames_of([data])
    assert frames_of(chunks) == whole
    assert frames_of([data.replace(b"\r\n", b"\n")]) == whole
    assert len(whole) == 27  # the frames in the file: the junk between them makes none


# -- scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
async def test_direct_call_answered_then_hung_up_by_the_caller(chunker: Chunker) -> None:
    events = await replay(
        Connection(events=transcript("direct_call_answered.txt")), chunker=chunker
    )

    event = call("1732255200.14", from_number="0312345678", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("answer", agents=("201",)),
        event("hangup", cause="normalClearing"),
    ]
    # When Asterisk says (timestampevents = yes): the DialBegin, the DialEnd, the Hangup.
    stamps = (1732255200.014001, 1732255206.226001, 1732255248.744002)
    assert [e.at for e in events] == [datetime.fromtimestamp(t, UTC) for t in stamps]


@pytest.mark.parametrize("chunker", CHUNKERS)
async def test_queue_call_rings_two_agents_and_the_second_answers(chunker: Chunker) -> None:
    events = await replay(
        Connection(events=transcript("queue_call_two_agents.txt")), chunker=chunker
    )

    event = call(
        "1732257011.31", from_number="09012345678", to_number="0355550101", queue="support"
    )
    assert timeless(events) == [
        event("ring"),  # waiting in the queue
        event("ring", agents=("201",)),
        event("ring", agents=("202",)),
        event("answer", agents=("202",)),
        event("hangup", cause="normalClearing"),  # AgentComplete
    ]


async def test_caller_abandoning_a_queue_while_agents_ring_hangs_up_cancel() -> None:
    # FreePBX-style members (Local/201@from-queue/n): each agent rings through two Local legs
    # and the phone itself, and is still rung only once.
    events = await replay(Connection(events=transcript("queue_call_abandoned.txt")))

    event = call("1732258802.77", from_number="0662223333", to_number="0355550101", queue="sales")
    assert timeless(events) == [
        event("ring"),
        event("ring", agents=("201",)),
        event("ring", agents=("202",)),
        event("hangup", cause="cancel"),
    ]


async def test_withheld_caller_hanging_up_on_a_ringing_extension_hangs_up_cancel() -> None:
    events = await replay(Connection(events=transcript("direct_call_caller_cancels.txt")))

    event = call("1732259400.90", from_number="anonymous", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("hangup", cause="cancel"),
    ]


async def test_busy_extension_hangs_up_busy() -> None:
    events = await replay(Connection(events=transcript("direct_call_busy.txt")))

    event = call("1732259555.95", from_number="0452221111", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("hangup", cause="busy"),
    ]


@pytest.mark.parametrize("chunker", CHUNKERS)
async def test_blind_transfer_stays_one_call_and_the_new_agent_answers(chunker: Chunker) -> None:
    events = await replay(Connection(events=transcript("blind_transfer.txt")), chunker=chunker)

    event = call("1732260100.120", from_number="0312345678", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("answer", agents=("201",)),
        event("ring", agents=("203",)),  # 201 transferred: the caller's channel dials 203
        event("answer", agents=("203",)),
        event("hangup", cause="normalClearing"),
    ]


async def test_outbound_call_rings_the_dialing_agent_and_internal_calls_say_nothing() -> None:
    events = await replay(Connection(events=transcript("outbound_and_internal.txt")))

    event = call("1732261003.142", direction="out", from_number="201", to_number="0312345678")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("answer", agents=("201",)),
        event("hangup", cause="normalClearing"),
    ]


@pytest.mark.parametrize(
    "line_end", [pytest.param(b"\r\n", id="crlf"), pytest.param(b"\n", id="lf-only")]
)
async def test_unknown_events_and_garbage_lines_are_ignored(line_end: bytes) -> None:
    data = transcript("garbage_and_unknown_events.txt").replace(b"\r\n", line_end)
    events = await replay(Connection(events=data))

    event = call("1732263000.180", from_number="0312345678", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("202",)),
        event("answer", agents=("202",)),
        event("hangup", cause="normalClearing"),
    ]


@pytest.mark.parametrize("chunker", CHUNKERS)
async def test_hangup_after_a_reconnect_ends_the_call_rebuilt_from_core_show_channels(
    chunker: Chunker,
) -> None:
    events = await replay(
        Connection(events=transcript("disconnect_before.txt"), then_hang_up=True),
        Connection(
            channels=transcript("disconnect_channels_call_up.txt"),
            events=transcript("disconnect_after_hangup.txt"),
        ),
        chunker=chunker,
    )

    event = call("1732262000.160", from_number="0312345678", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("answer", agents=("201",)),
        event("hangup", cause="normalClearing"),  # after the reconnect
    ]


async def test_call_that_ended_while_disconnected_is_hung_up_after_the_rebuild() -> None:
    events = await replay(
        Connection(events=transcript("disconnect_before.txt"), then_hang_up=True),
        # Listed instead: a call 202 answered while we were away, and an internal call.
        Connection(
            channels=transcript("disconnect_channels_call_gone.txt"),
            events=transcript("disconnect_after_other_call_ends.txt"),
        ),
    )

    first = call("1732262000.160", from_number="0312345678", to_number="0355550100")
    missed = call("1732262100.170", from_number="0487654321", to_number="0355550101")
    assert timeless(events) == [
        first("ring", agents=("201",)),
        first("answer", agents=("201",)),
        first("hangup", cause="normalClearing"),  # not listed: it ended meanwhile
        missed("ring", agents=("202",)),  # caught up from the listing
        missed("answer", agents=("202",)),
        missed("hangup", cause="normalClearing"),
    ]


async def test_call_whose_caller_left_while_disconnected_is_hung_up_though_the_agent_lingers() -> (
    None
):
    trunk, agent = transcript("disconnect_channels_call_up.txt").split(b"\r\n\r\n")[:2]
    assert b"PJSIP/ntt-trunk" in trunk and b"PJSIP/201" in agent
    events = await replay(
        Connection(events=transcript("disconnect_before.txt"), then_hang_up=True),
        Connection(channels=agent + b"\r\n\r\n"),  # 201's phone has not hung up yet
    )

    event = call("1732262000.160", from_number="0312345678", to_number="0355550100")
    assert timeless(events) == [
        event("ring", agents=("201",)),
        event("answer", agents=("201",)),
        event("hangup", cause="normalClearing"),
    ]


# -- failures ------------------------------------------------------------------------------


async def test_refused_login_is_a_clear_error_and_is_not_retried() -> None:
    async with FakeAsterisk() as asterisk:
        bridge = AmiBridge(
            "127.0.0.1", asterisk.port, USER, "wrong", Recorder(), reconnect_initial=0.01
        )
        with pytest.raises(AmiLoginError) as refused:
            await asyncio.wait_for(bridge.run(), WAIT)

        assert str(refused.value) == (
            f"Asterisk at 127.0.0.1:{asterisk.port} refused the login of 'helpdesk': "
            "Authentication failed"
        )
        assert asterisk.connections == 1


async def test_a_server_that_is_no_asterisk_is_a_clear_error() -> None:
    async with FakeAsterisk(banner=b"SSH-2.0-OpenSSH_9.6\r\n") as asterisk:
        bridge = AmiBridge("127.0.0.1", asterisk.port, USER, SECRET, Recorder())
        with pytest.raises(AmiLoginError, match="is not an Asterisk Manager Interface"):
            await asyncio.wait_for(bridge.run(), WAIT)


async def test_a_failing_sink_does_not_stop_the_bridge() -> None:
    delivered: list[CallEvent] = []
    sink = Recorder()

    async def flaky(event: CallEvent) -> None:
        delivered.append(event)
        if len(delivered) == 1:
            raise RuntimeError("database is restarting")
        await sink(event)

    data = transcript("direct_call_answered.txt") + SENTINEL
    async with FakeAsterisk([Connection(events=data)]) as asterisk:
        bridge = AmiBridge("127.0.0.1", asterisk.port, USER, SECRET, flaky)
        running = asyncio.create_task(bridge.run())
        await sink.wait_until(lambda events: any(e.call_id == "sentinel.1" for e in events))
        await bridge.close()
        await asyncio.wait_for(running, WAIT)

    assert [e.event for e in delivered] == ["ring", "answer", "hangup", "ring"]
    assert [e.event for e in sink.events] == ["answer", "hangup", "ring"]


async def test_a_slow_call_does_not_hold_up_the_others_and_keeps_its_own_order() -> None:
    """The sink is stuck on the first call's ring until another call's ring arrives: events
    of different calls go to the sink side by side, each call's in order."""
    delivered: list[CallEvent] = []
    other_rang = asyncio.Event()

    async def sink(event: CallEvent) -> None:
        if event.call_id == "sentinel.1":
            other_rang.set()
        elif not delivered:
            await asyncio.wait_for(other_rang.wait(), WAIT)  # serial delivery would stall here
        delivered.append(event)

    data = transcript("direct_call_answered.txt") + SENTINEL
    async with FakeAsterisk([Connection(events=data)]) as asterisk:
        bridge = AmiBridge("127.0.0.1", asterisk.port, USER, SECRET, sink)
        running = asyncio.create_task(bridge.run())
        await asyncio.wait_for(other_rang.wait(), WAIT)
        await bridge.close()
        await asyncio.wait_for(running, WAIT)

    assert delivered[0].call_id == "sentinel.1"
    assert [e.event for e in delivered if e.call_id != "sentinel.1"] == ["ring", "answer", "hangup"]


# -- the command line ----------------------------------------------------------------------


def _env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HELPDESK_DATABASE_URL": database_url,
        "HELPDESK_DATA_DIR": str(tmp_path),
        "HELPDESK_SECRET_KEY": "cti-cli-secret-key-long-enough-for-hs256",
        **extra,
    }


async def _helpdesk(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        helpdesk_bin(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_cli_ami_with_a_wrong_secret_exits_with_the_reason(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeAsterisk() as asterisk:
        proc = await _helpdesk(
            "cti", "ami", "--port", str(asterisk.port), "--user", USER,
            env=_env(database_url, tmp_path, HELPDESK_AMI_SECRET="wrong"),
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 2
    assert "refused the login of 'helpdesk': Authentication failed" in err.decode()
    assert "Traceback" not in err.decode()


async def test_cli_ami_follows_asterisk_until_sigterm_then_logs_off(
    database_url: str, tmp_path: Path
) -> None:
    async with FakeAsterisk() as asterisk:
        proc = await _helpdesk(
            "cti", "ami", "--port", str(asterisk.port), "--user", USER, "--secret", SECRET,
            env=_env(database_url, tmp_path),
        )  # fmt: skip
        try:
            await asterisk.wait_for_answer("CoreShowChannels")  # the bridge is following
        finally:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        await asterisk.wait_for_action("Logoff")

    assert proc.returncode == 0, err.decode()
    assert "stopped by SIGTERM" in err.decode()
    assert "Traceback" not in err.decode()


async def test_cli_simulate_sends_ring_answer_hangup_to_the_call_log(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    proc = await _helpdesk(
        "cti", "simulate", "--from", "+81312345678", "--to", "201",
        "--answer-after", "0", "--talk", "0",
        env=_env(database_url, tmp_path),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)

    assert proc.returncode == 0, err.decode()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["event"], e["agent"], e["cause"]) for e in printed] == [
        ("ring", ["201"], None),
        ("answer", ["201"], None),
        ("hangup", [], "normalClearing"),
    ]
    assert len({e["call_id"] for e in printed}) == 1
    async with db.unit_of_work() as session:
        logged = await session.scalar(select(Call).where(Call.call_id == printed[0]["call_id"]))
    assert logged is not None
    assert (logged.direction, logged.from_number, logged.state) == (
        "in",
        "+81312345678",
        "completed",
    )
