"""Hypothesis against the two parsers that read bytes from outside: MIME and AMI frames.

`parse_message` promises never to raise; it keeps that promise with a last-resort `except`
that turns a bug into "message could not be parsed". The tests here hold it to more: that
last resort is never reached, and what is malformed is said to be in `parse_errors`.
The AMI side: however a transcript is cut into reads, the bridge derives the same calls,
and junk between frames changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cti.adapters.ami import AmiBridge, read_frames
from cti.events import CallEvent
from helpdesk.mail.parsing import ParsedMail, parse_message

MAIL = Path(__file__).parent / "data" / "mail"
TRANSCRIPTS = Path(__file__).parent / "ami_transcripts"
MESSAGES = {p.name: p.read_bytes() for p in sorted(MAIL.glob("*.eml"))}
CLEAN = [name for name, raw in MESSAGES.items() if not parse_message(raw).parse_errors]
LAST_RESORT = "message could not be parsed"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_parsed(result: ParsedMail) -> None:
    assert isinstance(result, ParsedMail)
    assert not any(e.startswith(LAST_RESORT) for e in result.parse_errors), result.parse_errors
    assert result.message_id
    assert isinstance(result.text, str)
    assert all(isinstance(e, str) for e in result.parse_errors)


# -- MIME -------------------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=4000))
def test_arbitrary_bytes_parse_without_reaching_the_last_resort(raw: bytes) -> None:
    assert_parsed(parse_message(raw))


def _mutate(raw: bytes, how: str, at: int, blob: bytes) -> bytes:
    at %= max(1, len(raw))
    head, _, body = raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :] if raw else raw
    if how == "insert":
        return raw[:at] + blob + raw[at:]
    if how == "duplicate_headers":
        return head + b"\r\n" + head + b"\r\n\r\n" + body
    if how == "bogus_charset":
        return re.sub(rb'charset="?[\w-]+"?', b'charset="x-' + blob.hex().encode() + b'"', raw)
    if how == "bogus_boundary":
        return re.sub(rb'boundary="?[^";\r\n]+"?', b'boundary="' + blob.hex().encode() + b'"', raw)
    if how == "line_endings":
        return raw.replace(b"\r\n", b"\r")
    raise AssertionError(how)


@FUZZ
@given(
    name=st.sampled_from(sorted(MESSAGES)),
    mutations=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "truncate",
                    "flip",
                    "insert",
                    "duplicate_headers",
                    "bogus_charset",
                    "bogus_boundary",
                    "line_endings",
                ]
            ),
            st.integers(min_value=0, max_value=10_000),
            st.binary(min_size=1, max_size=40),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_real_messages_parse_without_reaching_the_last_resort(
    name: str, mutations: list[tuple[str, int, bytes]]
) -> None:
    raw = MESSAGES[name]
    for how, at, blob in mutations:
        raw = _mutate(raw, how, at, blob)
    assert_parsed(parse_message(raw))


@FUZZ
@given(name=st.sampled_from(CLEAN), label=st.from_regex(r"x-[a-z]{3,12}", fullmatch=True))
def test_a_part_in_an_unknown_charset_is_flagged(name: str, label: str) -> None:
    raw = MESSAGES[name]
    mutated = re.sub(rb'charset="?[\w-]+"?', f'charset="{label}"'.encode(), raw, count=1)
    if mutated == raw:
        return  # no declared charset to spoil
    result = parse_message(mutated)
    assert_parsed(result)
    assert result.parse_errors


@FUZZ
@given(
    name=st.sampled_from([n for n in CLEAN if b"boundary=" in MESSAGES[n]]),
    boundary=st.from_regex(r"[A-Za-z0-9]{8,40}", fullmatch=True),
)
def test_a_multipart_whose_boundary_never_appears_is_flagged(name: str, boundary: str) -> None:
    raw = MESSAGES[name]
    mutated = re.sub(rb'boundary="?[^";\r\n]+"?', f'boundary="zz{boundary}"'.encode(), raw)
    result = parse_message(mutated)
    assert_parsed(result)
    assert result.parse_errors


@FUZZ
@given(name=st.sampled_from(CLEAN), keep=st.integers(min_value=1, max_value=99))
def test_a_message_cut_inside_its_multipart_body_is_flagged(name: str, keep: int) -> None:
    raw = MESSAGES[name]
    if b"boundary=" not in raw:
        return
    body_start = raw.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in raw else raw.find(b"\n\n") + 2
    last_boundary = raw.rfind(b"\n--")
    cut = body_start + (last_boundary - body_start) * keep // 100
    result = parse_message(raw[: max(cut, body_start + 1)])
    assert_parsed(result)
    assert result.parse_errors


@FUZZ
@given(depth=st.integers(min_value=1, max_value=300), charset=st.sampled_from(["utf-8", "x-no"]))
def test_deeply_nested_multiparts_parse(depth: int, charset: str) -> None:
    raw = b"From: a@example.com\r\nMessage-ID: <deep@example.com>\r\nSubject: deep\r\n"
    for level in range(depth):
        raw += f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode()
    raw += f"Content-Type: text/plain; charset={charset}\r\n\r\nhello\r\n".encode()
    for level in reversed(range(depth)):
        raw += f"--b{level}--\r\n".encode()
    assert_parsed(parse_message(raw))


# -- AMI frames -------------------------------------------------------------------------------


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / name).read_bytes()


TRANSCRIPT_NAMES = sorted(p.name for p in TRANSCRIPTS.glob("*.txt"))


async def _events(chunks: list[bytes]) -> list[CallEvent]:
    """The call events the bridge derives from these reads (its TCP session aside)."""
    events: list[CallEvent] = []

    async def sink(event: CallEvent) -> None:
        events.append(event)

    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    bridge = AmiBridge("127.0.0.1", 0, "user", "secret", sink)
    async for frame in read_frames(reader):
        await bridge._on_event(frame)
    await bridge.drain()
    return events


def events_of(chunks: list[bytes]) -> list[CallEvent]:
    """The events with their times set aside: a frame without a Timestamp is stamped "now"."""
    return [replace(e, at=EPOCH) for e in asyncio.run(_events(chunks))]


WHOLE = {name: events_of([transcript(name)]) for name in TRANSCRIPT_NAMES}


def test_every_call_transcript_gives_events_when_fed_whole() -> None:
    assert WHOLE["direct_call_answered.txt"]
    assert sum(map(len, WHOLE.values())) > 10


@FUZZ
@given(
    name=st.sampled_from(TRANSCRIPT_NAMES),
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=80),
)
def test_any_split_of_a_transcript_gives_the_same_events(name: str, cuts: list[int]) -> None:
    data = transcript(name)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert events_of(chunks) == WHOLE[name]


GARBAGE_LINE = st.binary(max_size=120).filter(lambda b: b"\n" not in b and b"\r" not in b)


@FUZZ
@given(
    name=st.sampled_from(TRANSCRIPT_NAMES),
    garbage=st.lists(st.tuples(st.integers(min_value=0), GARBAGE_LINE), max_size=20),
)
def test_garbage_lines_between_frames_change_no_event(
    name: str, garbage: list[tuple[int, bytes]]
) -> None:
    """Junk on lines of its own between frames (no `Key: Value` at all) is skipped."""
    frames = transcript(name).split(b"\r\n\r\n")
    for at, line in garbage:
        if b":" in line or not line.strip():
            continue  # a header-looking line, or a blank line, is a frame or a frame break
        i = at % len(frames)
        frames[i] = line + b"\r\n\r\n" + frames[i]
    assert events_of([b"\r\n\r\n".join(frames)]) == WHOLE[name]


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_random_bytes_never_crash_the_reader_or_the_bridge(data: bytes, cuts: list[int]) -> None:
    stream = b"Event: Newchannel\r\nLinkedid: 1\r\nChannel: PJSIP/201-1\r\n\r\n" + data
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    events_of([stream[a:b] for a, b in itertools.pairwise(points)])
