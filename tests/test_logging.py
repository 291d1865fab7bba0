"""Structured logs: one JSON object a line, a request id per request, no personal data."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from helpdesk import logs


@pytest.fixture
def json_lines():  # type: ignore[no-untyped-def]
    """Everything logged during the test, through the handler `helpdesk serve` installs."""
    stream = io.StringIO()
    handler = logs.handler("json", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield read
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_a_request_logs_one_json_line_with_its_request_id(client, json_lines):
    r = await client.get("/healthz")
    rid = r.headers["x-request-id"]
    lines = [ln for ln in json_lines() if ln["logger"] == "helpdesk.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == rid and len(rid) == 32
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
    assert isinstance(line["duration_ms"], float) and line["level"] == "INFO"
    assert {"time", "message"} <= line.keys()


async def test_a_sane_incoming_request_id_is_kept_and_a_bad_one_replaced(client, json_lines):
    r = await client.get("/healthz", headers={"x-request-id": "lb-5f2a9c01.77"})
    assert r.headers["x-request-id"] == "lb-5f2a9c01.77"
    r = await client.get("/healthz", headers={"x-request-id": 'x" onload=alert(1)'})
    assert (
        r.headers["x-request-id"] != 'x" onload=alert(1)' and len(r.headers["x-request-id"]) == 32
    )


async def test_lines_logged_while_handling_a_request_carry_its_id(client, json_lines, agent):
    r = await client.get(
        "/api/lookup?phone=%2B81312345678",
        headers={**agent.headers, "x-request-id": "req-12345678"},
    )
    assert r.headers["x-request-id"] == "req-12345678"
    mine = [ln for ln in json_lines() if ln.get("request_id") == "req-12345678"]
    assert mine and all(ln["path"] == "/api/lookup" for ln in mine)
    assert "81312345678" not in json.dumps(json_lines())  # the query string is never logged


def test_emails_and_phone_numbers_are_masked_in_messages_and_tracebacks(json_lines):
    log = logging.getLogger("helpdesk.test")
    log.warning("mail from %s, call from %s", "Hanako.Sato@example.co.jp", "+81 3-1234-5678")
    log.info("callback 090-1234-5678 or (03) 1234 5678 or 09012345678")
    try:
        raise ValueError("duplicate key (email)=(taro@example.com)")
    except ValueError:
        log.exception("insert failed")
    text = json.dumps(json_lines(), ensure_ascii=False)
    for secret in (
        "Hanako.Sato",
        "3-1234-5678",
        "090-1234-5678",
        "1234 5678",
        "09012345678",
        "taro@",
    ):
        assert secret not in text
    first, second, third = json_lines()
    assert first["message"] == "mail from ***@example.co.jp, call from [phone]"
    assert second["message"] == "callback [phone] or [phone] or [phone]"
    assert "***@example.com" in third["exc_info"]


@pytest.mark.parametrize(
    "text",
    ["listening on 127.0.0.1:8000", "retry at 2026-12-01 09:00:00+00:00", "case 1042 took 12.5 ms",
     "event 4f1b2c3d4e5f60718293a4b5c6d7e8f9", "version 1.2.3"],
)  # fmt: skip
def test_masking_leaves_addresses_times_and_ids_alone(text):
    assert logs.mask_personal_data(text) == text


def test_tokens_in_query_strings_never_reach_a_log(capsys):
    """uvicorn logs a socket's path, query string and all: its JWT is masked like a phone."""
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"
    handler = logs.handler("text", stream=sys.stderr)
    log = logging.getLogger("uvicorn.error.test")
    log.addHandler(handler)
    try:
        log.warning('%s - "WebSocket /ws/agent?token=%s&x=1" [accepted]', "127.0.0.1:5", jwt_like)
    finally:
        log.removeHandler(handler)
    line = capsys.readouterr().err
    assert jwt_like not in line and "/ws/agent?token=***&x=1" in line
    assert logs.mask_personal_data("login?password=hunter2hunter2") == "login?password=***"


def test_text_format_shows_the_request_id(capsys):
    handler = logs.handler("text")
    token = logs.request_context.set({"request_id": "abc12345", "method": "GET", "path": "/x"})
    try:
        record = logging.makeLogRecord(
            {
                "msg": "hello %s",
                "args": ("a@b.example",),
                "levelno": 20,
                "levelname": "INFO",
                "name": "t",
            }
        )
        handler.handle(record)
    finally:
        logs.request_context.reset(token)
    err = capsys.readouterr().err
    assert "[abc12345]" in err and "***@b.example" in err and "a@b" not in err
