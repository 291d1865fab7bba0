"""Benchmark: email ingest, mixed real-world messages through SMTP and through HTTP (issue 5).

    .venv/bin/python bench/email_ingest.py [--messages 10000] [--concurrency 8]
                                           [--paths smtp,http] [--quick] [--no-fsync]
                                           [--serve-workers 1] [--warmup 100] [--seed 42]

Starts its own embedded PostgreSQL in a temp dir (or, with HELPDESK_BENCH_DATABASE_URL set,
creates a throwaway database on that server) with PostgreSQL's durable defaults (fsync and
synchronous_commit on: the 250 / 200 answer promises a committed message; --no-fsync turns
both off), migrates it, then starts the real processes an installation runs, both with
HELPDESK_DATABASE_URL, a temp HELPDESK_DATA_DIR, HELPDESK_MAIL_TOKEN and HELPDESK_MAIL_ACK=1:

  `helpdesk mail smtp`  the inbound SMTP listener (aiosmtpd), and
  `helpdesk serve`      uvicorn, for `POST /api/mail/inbound` (raw RFC 822 body, Bearer token).

No outbound relay is configured, so the acknowledgements the ingest queues (part of the real
work: an interaction, the built message, the outbox row) stay queued.

For each path it generates --messages messages deterministically (--seed) from --senders
customers (default messages / 5: 2,000 for 10,000), the same mix for both paths but with
path-specific addresses, Message-IDs and attachment bytes, so nothing dedups across paths:
new mail (UTF-8 plain in base64, 8bit or quoted-printable; Gmail- and Outlook-style HTML
alternatives; ISO-2022-JP written as Outlook's code page 50220; Shift_JIS as cp932; 20-200 KB
attachments), replies threading by In-Reply-To/References to an earlier message of the run,
replies carrying only the `[#number]` subject token of an earlier message's case, auto-replies,
DSN and non-standard bounces naming an earlier message, malformed mail, the corpus messages of
tests/data/mail/ with their From/Message-ID/threading headers rewritten, and a few per cent of
exact re-deliveries of an earlier message (expected back as `duplicate`). A message only refers
to one at least PLAN_GAP places earlier, which with at most PLAN_GAP concurrent senders has
always been answered (committed) by then.

  smtp  --concurrency client connections (aiosmtplib), opened and EHLO'd before the clock
        starts, each sending messages in sequence; latency is the `sendmail` call (MAIL, RCPT,
        DATA, the message, up to the 250, which the listener answers after the commit);
        the reply "250 2.0.0 <status> <case number>" gives the status.
  http  --concurrency tasks on one httpx.AsyncClient (as many keep-alive connections);
        latency is the POST to its response; the JSON gives the status.

Each path first files --warmup messages of its own (not measured). Prints messages/s,
latency percentiles (also by kind of message), statuses against the expected ones, CPU per
message of this process, each server (with its worker processes, --serve-workers) and
PostgreSQL (with backends that exited), the servers' VmRSS, PostgreSQL sessions opened, and
the rows created. Nothing in the checkout is touched; every process and the temp dir are
removed at exit, also on Ctrl-C or SIGTERM. --quick is 500 messages per path (30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import html
import importlib.util
import itertools
import os
import platform
import quopri
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiosmtplib
import fanout
import httpx
import lookup
import psutil

from helpdesk.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "mail"
SECRET = "bench-secret-key-that-is-long-enough-for-hs256"
MAIL_TOKEN = "bench-mail-token"
SUPPORT = "support@helpdesk.example.com"
AIM_RATE = 200.0  # messages/s, from the issue
PLAN_GAP = 64  # a message refers only to one at least this many places earlier
DURABLE = {"max_connections": "200"}
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", **DURABLE}


def _make_corpus() -> Any:
    """tests/data/mail/make_corpus.py, for cp50220 (ISO-2022-JP as Outlook writes it)."""
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cp50220: Callable[[str], bytes] = _make_corpus().cp50220

# -- text ---------------------------------------------------------------------------------------

JA_SUBJECTS = [
    *(s for s in lookup.SUBJECTS if not s.isascii()),
    "お見積もりのお願い",
    "注文内容の変更について",
    "領収書の発行について",
    "アカウントがロックされました",
    "契約更新のご相談",
    "①請求金額について ②支払方法について",
    "㈱{org}の{sur}です（至急）",
    "商品の初期不良について",
    "ポイントが反映されていません",
    "メールアドレス変更のお願い",
]
EN_SUBJECTS = [
    *(s for s in lookup.SUBJECTS if s.isascii()),
    "Order {order} has not arrived",
    "Question about my subscription",
    "Wrong item delivered",
    "Please cancel my account",
    "Receipt for order {order}",
]
JA_OPENING = [
    "サポートご担当者様",
    "ご担当者様",
    "カスタマーサポート御中",
    "お世話になっております。",
]
JA_LINES = [
    "いつもお世話になっております。",
    "先日注文した商品がまだ届いておりません。",
    "注文番号は {order} です。",
    "ご確認のほどよろしくお願いいたします。",
    "請求書の宛名を「㈱{org}」に変更していただけますでしょうか。",
    "ログインしようとすると「認証に失敗しました」と表示されます。",
    "パスワードを再設定しても同じ状況です。",
    "添付の資料をご確認ください。",
    "お手数ですが、折り返しご連絡いただけますと幸いです。",
    "契約内容の変更について相談させてください。",
    "①数量の変更 ②配送先の変更 をお願いしたく存じます。",
    "電話番号は {phone} です。平日の日中であればつながります。",
    "昨日お電話した件の続きです。",
    "届いた商品の箱が破損しており、中身にも傷がありました。",
    "支払い方法をクレジットカードから銀行振込に変更したいです。",
    "前回のお問い合わせ番号がわからなくなってしまいました。",
    "至急対応をお願いできますでしょうか。",
    "返品の手続き方法を教えてください。",
    "領収書の但し書きは「お品代として」でお願いします。",
    "本件、社内で確認したところ問題ないとのことでした。",
]
EN_LINES = [
    "I ordered {order} two weeks ago and it still has not arrived.",
    "Could you please check the status of my order?",
    "I cannot log in to my account since yesterday.",
    "The password reset link in your email does not work.",
    "Please find the invoice attached.",
    "I was charged twice for the same order.",
    "My phone number is {phone}; I am available in the afternoon.",
    "Could you send me a receipt with our company name on it?",
    "The item arrived damaged, the box was crushed.",
    "I would like to change the delivery address to my office.",
    "Thanks for the quick answer, that solved part of the problem.",
    "Following up on my previous message below.",
]
JA_CLOSING = [
    "よろしくお願いいたします。",
    "以上、よろしくお願いします。",
    "何卒よろしくお願い申し上げます。",
]
EN_CLOSING = ["Best regards,", "Thanks,", "Kind regards,", "Regards,"]
MAIL_DOMAINS = [
    "example.co.jp",
    "example.ne.jp",
    "example.jp",
    "mail.example.com",
    "example.or.jp",
    "docomo.example.ne.jp",
    "ezweb.example.ne.jp",
    "icloud.example.com",
]


@dataclass(frozen=True)
class Sender:
    name: str  # display name
    local: str
    domain: str
    lang: str  # "ja" or "en"
    surname: str
    org: str

    def address(self, path: str) -> str:
        # path-specific, so the second path meets new customers just like the first
        return f"{self.local}.{path}@{self.domain}"


def make_senders(n: int, rng: random.Random) -> list[Sender]:
    senders: list[Sender] = []
    used: set[str] = set()
    while len(senders) < n:
        org = rng.choice(lookup.ORG_CORES)[0]
        if rng.random() < 0.8:
            sur, _, sur_r = rng.choice(lookup.SURNAMES)
            given, _, given_r = rng.choice(lookup.GIVEN_NAMES)
            name, lang, surname = f"{sur} {given}", "ja", sur
            local = rng.choice(
                [f"{given_r}.{sur_r}", f"{sur_r}{rng.randint(1, 9999)}", f"{given_r[0]}.{sur_r}"]
            )
        else:
            first, _ = rng.choice(lookup.EN_FIRST)
            last, _ = rng.choice(lookup.EN_LAST)
            name, lang, surname = f"{first} {last}", "en", last
            local = f"{first.lower()}.{re.sub(r'[^a-z]', '', last.lower())}"
        domain = rng.choice(MAIL_DOMAINS)
        if f"{local}@{domain}" in used:
            local += str(rng.randint(10, 999))
        if f"{local}@{domain}" in used:
            continue
        used.add(f"{local}@{domain}")
        senders.append(Sender(name, local, domain, lang, surname, org))
    return senders


# -- encoding helpers ---------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def b_words(text: str, label: str, encode: Callable[[str], bytes]) -> str:
    """RFC 2047 B-encoded words of at most ~45 bytes each, folded (one charset run each)."""
    if text.isascii():
        return text
    words, chunk = [], ""
    for ch in text:
        if chunk and len(encode(chunk + ch)) > 45:
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    return "\r\n ".join(f"=?{label}?B?{base64.b64encode(encode(w)).decode()}?=" for w in words)


CHARSETS: dict[str, tuple[str, Callable[[str], bytes]]] = {
    "utf-8": ("UTF-8", lambda s: s.encode("utf-8")),
    "iso-2022-jp": ("ISO-2022-JP", cp50220),
    "shift_jis": ("Shift_JIS", lambda s: s.encode("cp932")),
    "euc-jp": ("EUC-JP", lambda s: s.encode("euc_jp")),
}


def can_encode(text: str, charset: str) -> bool:
    """Whether `text` fits the charset; ISO-2022-JP as Outlook writes it takes JIS X 0208 and
    the NEC row 13 (①, ㈱), not the IBM extensions (髙, 﨑), which mailers send as UTF-8."""
    try:
        if charset == "iso-2022-jp":
            return all(
                ord(c) < 0x80 or (len(b := c.encode("cp932")) == 2 and b[0] < 0xED) for c in text
            )
        CHARSETS[charset][1](text)
        return True
    except UnicodeEncodeError:
        return False


def encode_header(text: str, charset: str) -> str:
    label, enc = CHARSETS[charset if can_encode(text, charset) else "utf-8"]
    return b_words(text, label, enc)


def mailbox(name: str, address: str, charset: str) -> str:
    if not name:
        return f"<{address}>"
    if name.isascii():
        return f'"{name}" <{address}>' if re.search(r"[^\w .-]", name) else f"{name} <{address}>"
    return f"{encode_header(name, charset)} <{address}>"


def b64_body(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def qp_body(data: bytes) -> bytes:
    return crlf(quopri.encodestring(data.replace(b"\r\n", b"\n")))


def encode_body(text: str, charset: str, cte: str) -> tuple[bytes, str, str]:
    """The body bytes, the Content-Type charset label and the transfer encoding."""
    label, enc = CHARSETS[charset if can_encode(text, charset) else "utf-8"]
    data = enc(text.replace("\r\n", "\n")).replace(b"\n", b"\r\n")
    if cte == "base64":
        return b64_body(data), label, "base64"
    if cte == "quoted-printable":
        return qp_body(data), label, "quoted-printable"
    return data, label, "7bit" if data.isascii() else "8bit"


def part(ctype: str, body: bytes, cte: str, extra: str = "") -> bytes:
    head = f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n{extra}\r\n"
    return head.encode() + body


def multipart(subtype: str, boundary: str, parts: list[bytes], preamble: str = "") -> bytes:
    out = [preamble.encode() + b"\r\n" if preamble else b""]
    for p in parts:
        out.append(f"--{boundary}\r\n".encode() + p + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


# -- corpus templates ---------------------------------------------------------------------------


def load_corpus() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))}


def split_message(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """Header lines, the separator, the body."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = raw.find(sep)
        if at >= 0:
            return raw[:at].split(sep[: len(sep) // 2]), sep, raw[at + len(sep) :]
    return raw.split(b"\r\n"), b"", b""


def rewrite_headers(raw: bytes, new: list[str]) -> bytes:
    """Drop the fields named in `new` ("Name: value"), put `new` where the first dropped one
    was (or at the top); every other line, a garbage one included, stays as it was."""
    names = {h.split(":", 1)[0].strip().lower().encode() for h in new}
    lines, sep, body = split_message(raw)
    eol = b"\r\n" if sep in (b"\r\n\r\n", b"") else b"\n"
    out: list[bytes] = []
    insert_at: int | None = None
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = False
        if (
            line[:1] not in (b" ", b"\t")
            and b":" in line
            and line.split(b":", 1)[0].strip().lower() in names
        ):
            dropping = True
            insert_at = len(out) if insert_at is None else insert_at
            continue
        out.append(line)
    fresh = [h.encode() for h in new]
    at = 0 if insert_at is None else insert_at
    out[at:at] = fresh
    return eol.join(out) + (sep or b"\r\n\r\n") + body


# -- the plan -----------------------------------------------------------------------------------

# kind: (weight in %, expected status). Every kind's parent is at least PLAN_GAP earlier.
KINDS: dict[str, tuple[float, str]] = {
    "new plain utf-8": (19, "created"),
    "new html alternative": (12, "created"),
    "new iso-2022-jp": (9, "created"),
    "new shift_jis": (5, "created"),
    "new with attachments": (6, "created"),
    "new corpus message": (4, "created"),
    "reply in-reply-to": (28, "appended"),
    "reply subject token": (8, "appended"),
    "auto-reply": (3, "appended"),
    "bounce": (1.5, "bounce"),
    "malformed": (1.5, "created"),
    "duplicate": (3, "duplicate"),
}
NEW_CORPUS = ["iso2022jp", "euc_jp", "forwarded", "html_only", "mailing_list", "shift_jis"]
REPLY_CORPUS = ["outlook_reply", "gmail_reply", "apple_mail_reply"]
MALFORMED = ["broken_mime", "broken_boundary", "no_message_id", "not_a_message"]
BOUNCES = ["bounce_dsn", "bounce_nonstandard"]


@dataclass
class Item:
    seq: int
    kind: str
    expect: str
    sender: int | None  # index into senders; None for system senders (forms, daemons)
    parent: int | None = None  # the earlier message this one refers to
    style: str = ""  # mailer / template
    subject: str = ""
    thread: list[int] = field(default_factory=list)  # seqs of the References chain
    rng_seed: int = 0


def make_plan(n: int, n_senders: int, seed: int) -> tuple[list[Item], list[Sender]]:
    rng = random.Random(seed)
    senders = make_senders(n_senders, rng)
    ja_senders = [k for k, s in enumerate(senders) if s.lang == "ja"] or [0]
    kinds = list(KINDS)
    weights = [KINDS[k][0] for k in kinds]
    items: list[Item] = []
    with_case: list[int] = []  # seqs of customer messages that file onto a case
    for seq in range(n):
        kind = rng.choices(kinds, weights)[0]
        eligible = len(with_case)
        while eligible and with_case[eligible - 1] > seq - PLAN_GAP:
            eligible -= 1
        needs_parent = kind.startswith(("reply", "auto", "bounce", "duplicate"))
        if needs_parent and eligible < 20:
            kind, needs_parent = "new plain utf-8", False
        item = Item(seq, kind, KINDS[kind][1], None, rng_seed=rng.getrandbits(32))
        if kind == "duplicate":
            item.parent = rng.randrange(0, seq - PLAN_GAP + 1)
            item.sender = items[item.parent].sender
        elif needs_parent:
            # a recent conversation of some customer: among the last 400 eligible ones
            parent = items[with_case[rng.randrange(max(0, eligible - 400), eligible)]]
            item.parent, item.sender = parent.seq, parent.sender
            item.thread = [*parent.thread, parent.seq][-10:]
            item.subject = parent.subject
        elif kind == "new corpus message":
            item.style = rng.choice(NEW_CORPUS)
            customer = item.style in ("iso2022jp", "euc_jp", "forwarded", "shift_jis")
            item.sender = rng.randrange(n_senders) if customer else None
        elif kind == "malformed":
            item.style = rng.choice(MALFORMED)
            item.sender = rng.randrange(n_senders) if item.style == "broken_mime" else None
        elif kind in ("new iso-2022-jp", "new shift_jis"):
            item.sender = rng.choice(ja_senders)  # Japanese mailers, Japanese writers
        else:
            item.sender = rng.randrange(n_senders)
        if kind == "reply in-reply-to":
            item.style = rng.choice(["generated"] * 3 + REPLY_CORPUS)
        elif kind == "bounce":
            item.style = rng.choice(BOUNCES)
        elif kind == "new iso-2022-jp":
            item.style = rng.choice(["outlook", "becky", "thunderbird"])
        elif kind == "new shift_jis":
            item.style = rng.choice(["outlook", "keitai"])
        elif kind.startswith("new") and kind != "new corpus message":
            item.style = rng.choice(["gmail", "outlook", "apple", "thunderbird", "keitai"])
        if kind.startswith("new") and item.sender is not None:
            s = senders[item.sender]
            pool = JA_SUBJECTS if s.lang == "ja" else EN_SUBJECTS
            item.subject = rng.choice(pool).format(
                org=s.org, sur=s.surname, order=f"A{rng.randint(100000, 999999)}"
            )
        files_a_case = kind not in ("duplicate", "bounce", "malformed") and not (
            kind == "new corpus message" and item.style == "html_only"
        )
        if item.sender is not None and files_a_case:
            with_case.append(seq)
        items.append(item)
    return items, senders


def plan_mix(items: list[Item]) -> Counter[str]:
    return Counter(i.kind for i in items)


# -- rendering ----------------------------------------------------------------------------------

BASE_DATE = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
JST = timedelta(hours=9)


class Renderer:
    """Turns plan items into raw messages for one path (addresses, ids and bytes of its own)."""

    def __init__(
        self, items: list[Item], senders: list[Sender], path: str, corpus: dict[str, bytes]
    ):
        self.items = items
        self.senders = senders
        self.path = path
        self.corpus = corpus

    # ids and addresses
    def message_id(self, seq: int) -> str:
        item = self.items[seq]
        if item.style == "no_message_id" or item.style == "not_a_message":
            return ""
        h = f"{(item.rng_seed * 2654435761) & 0xFFFFFFFF:08X}"
        p = self.path
        if item.style in ("outlook", "outlook_reply", "shift_jis"):
            return f"TYCPR01MB{h}{seq:06d}{p.upper()}@TYCPR01MB{h[:4]}.jpnprd01.prod.outlook.com"
        if item.style in ("gmail", "gmail_reply"):
            return f"CAF{h.lower()}+{p}{seq:06d}=Qx{h[:3]}@mail.gmail.com"
        if item.style in ("apple", "apple_mail_reply"):
            return f"{h}-{seq:04X}-4F0A-9E3B-{p.upper()}{seq:06d}@{self._domain(item)}"
        return f"{BASE_DATE:%Y%m%d}{seq:06d}.{h}.{p}@{self._domain(item)}"

    def _domain(self, item: Item) -> str:
        return self.senders[item.sender].domain if item.sender is not None else "example.net"

    def address(self, item: Item) -> str:
        assert item.sender is not None
        return self.senders[item.sender].address(self.path)

    def date(self, seq: int) -> str:
        when = BASE_DATE + timedelta(seconds=seq * 7) + JST
        return when.strftime("%a, %d %b %Y %H:%M:%S +0900")

    def received(self, item: Item, rng: random.Random) -> list[str]:
        host = f"mx{rng.randint(1, 9)}.{self._domain(item)}"
        when = self.date(item.seq)
        qid = f"4Y{rng.getrandbits(40):010X}"
        return [
            f"Received: from {host} ({host} [203.0.113.{rng.randint(1, 254)}])\r\n"
            f"\tby mx.helpdesk.example.com (Postfix) with ESMTPS id {qid}\r\n"
            f"\tfor <{SUPPORT}>; {when} (JST)",
            f"Received: from localhost (localhost [127.0.0.1])\r\n\tby {host} with ESMTP; {when}",
        ]

    # bodies
    def text_body(self, item: Item, rng: random.Random, *, quote: bool = False) -> str:
        s = self.senders[item.sender] if item.sender is not None else None
        ja = s is None or s.lang == "ja"
        fill = {
            "order": f"A{rng.randint(100000, 999999)}",
            "org": s.org if s else "東京",
            "phone": lookup.new_number(rng),
        }
        lines = [rng.choice(JA_OPENING)] if ja else ["Hello,"]
        if ja and s:
            lines.append(f"{s.surname}です。")
        pool = JA_LINES if ja else EN_LINES
        lines += [""] + [rng.choice(pool).format(**fill) for _ in range(rng.randint(2, 12))]
        lines += ["", rng.choice(JA_CLOSING if ja else EN_CLOSING), ""]
        if s:
            lines += [
                "--",
                s.name,
                f"㈱{s.org}" if ja else f"{s.org} Trading Co., Ltd.",
                f"TEL: {fill['phone']}",
            ]
        if quote and item.parent is not None:
            parent = self.items[item.parent]
            lines += ["", f"{self.date(parent.seq)} {SUPPORT}:"]
            lines += [f"> {rng.choice(pool).format(**fill)}" for _ in range(rng.randint(3, 15))]
        return "\n".join(lines) + "\n"

    def html_body(self, text: str, style: str) -> str:
        paras = [html.escape(line) for line in text.splitlines()]
        if style == "outlook":
            head = (
                '<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:'
                'office:office" xmlns:w="urn:schemas-microsoft-com:office:word">\n<head>\n'
                '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\n'
                '<meta name="Generator" content="Microsoft Word 15 (filtered medium)">\n'
                '<style><!--\n/* Font Definitions */\n@font-face\n\t{font-family:"ＭＳ ゴシック";\n'
                "\tpanose-1:2 11 6 9 7 2 5 8 2 4;}\n@font-face\n\t{font-family:游ゴシック;}\n"
                "p.MsoNormal, li.MsoNormal, div.MsoNormal\n\t{margin:0mm;\n\ttext-align:justify;\n"
                "\tfont-size:10.5pt;\n\tfont-family:游ゴシック;}\nspan.EmailStyle17\n"
                "\t{mso-style-type:personal-compose;}\n--></style>\n</head>\n"
                '<body lang="JA" link="#0563C1" vlink="#954F72" style="text-justify-trim:punctuation">\n'
                '<div class="WordSection1">\n'
            )
            body = "".join(
                f'<p class="MsoNormal"><span lang="EN-US">{p or "<o:p>&nbsp;</o:p>"}</span></p>\n'
                for p in paras
            )
            return head + body + "</div>\n</body>\n</html>\n"
        body = "".join(f"<div>{p or '<br>'}</div>\n" for p in paras)
        return (
            f'<div dir="ltr">{body}<div><br></div>'
            '<div class="gmail_signature"><a href="https://www.example.co.jp/">'
            "https://www.example.co.jp/</a></div></div>\n"
        )

    def attachments(self, item: Item, rng: random.Random) -> list[bytes]:
        out = []
        for k in range(1 if rng.random() < 0.8 else 2):
            size = int(20_000 * 10 ** rng.uniform(0, 1))  # 20-200 KB, log-uniform
            name, ctype, magic = rng.choice(
                [
                    (f"見積書_{item.seq}.pdf", "application/pdf", b"%PDF-1.4\n"),
                    (f"invoice_{item.seq}.pdf", "application/pdf", b"%PDF-1.7\n"),
                    (f"IMG_{rng.randint(1000, 9999)}.JPG", "image/jpeg", b"\xff\xd8\xff\xe0"),
                    ("スクリーンショット.png", "image/png", b"\x89PNG\r\n\x1a\n"),
                    (f"注文一覧_{k + 1}.xlsx", "application/vnd.openxmlformats-officedocument"
                     ".spreadsheetml.sheet", b"PK\x03\x04"),
                ]
            )  # fmt: skip
            # path-specific bytes: identical files would be stored once (by SHA-256)
            data = magic + random.Random(f"{self.path}:{item.seq}:{k}").randbytes(size)
            if name.isascii():
                disp = f'attachment; filename="{name}"'
                ptype = f'{ctype}; name="{name}"'
            elif rng.random() < 0.5:  # RFC 2231, as Thunderbird writes it
                quoted = "".join(
                    c
                    if (c.isascii() and c.isalnum()) or c in "._-"
                    else "".join(f"%{b:02X}" for b in c.encode())
                    for c in name
                )
                disp = f"attachment; filename*=UTF-8''{quoted}"
                ptype = f"{ctype}; name*=UTF-8''{quoted}"
            else:  # RFC 2047 in quotes, as Outlook and Gmail write it
                enc = encode_header(name, "utf-8")
                disp = f'attachment; filename="{enc}"'
                ptype = f'{ctype}; name="{enc}"'
            out.append(part(ptype, b64_body(data), "base64", f"Content-Disposition: {disp}\r\n"))
        return out

    # whole messages
    def render(self, item: Item, case_number: int | None = None) -> bytes:
        rng = random.Random(item.rng_seed)
        if item.kind == "duplicate":
            raise ValueError("duplicates are the bytes of their parent")
        if item.kind in ("bounce",):
            return self.bounce(item, rng)
        if item.kind == "malformed":
            return self.malformed(item)
        if item.kind == "new corpus message":
            return self.corpus_new(item, rng)
        if item.kind == "auto-reply":
            return self.auto_reply(item)
        if item.kind == "reply in-reply-to" and item.style != "generated":
            return self.corpus_reply(item)
        return self.generated(item, rng, case_number)

    def threading_headers(self, item: Item) -> list[str]:
        if item.parent is None or item.kind == "reply subject token":
            return []
        parent_id = self.message_id(item.parent)
        refs = " ".join(f"<{self.message_id(s)}>" for s in item.thread if self.message_id(s))
        return [f"In-Reply-To: <{parent_id}>", f"References: {refs}"] if refs else []

    def generated(self, item: Item, rng: random.Random, case_number: int | None) -> bytes:
        s = self.senders[item.sender]  # type: ignore[index]
        style = item.style
        if style in ("", "generated"):
            style = rng.choice(["gmail", "outlook", "apple", "thunderbird"])
        if item.kind == "new iso-2022-jp":
            charset = "iso-2022-jp"
        elif item.kind == "new shift_jis":
            charset = "shift_jis"
        else:
            charset = "utf-8"
        subject = item.subject
        reply = item.kind.startswith("reply")
        if reply:
            subject = re.sub(r"^((re|fwd?)\s*:\s*)+", "", subject, flags=re.I)
            if item.kind == "reply subject token" and case_number is not None:
                subject = f"[#{case_number}] {subject}"
            subject = f"{'RE' if style == 'outlook' else 'Re'}: {subject}"
        text = self.text_body(item, rng, quote=reply and rng.random() < 0.7)
        if s.lang == "en" and charset != "utf-8":
            charset = "utf-8"
        cte = {"gmail": "quoted-printable", "apple": "quoted-printable", "thunderbird": "8bit",
               "outlook": "base64", "keitai": "base64", "becky": "7bit"}.get(style, "8bit")  # fmt: skip
        if charset == "iso-2022-jp":
            cte = "7bit"
        if charset == "shift_jis":
            cte = rng.choice(["8bit", "base64"])
        body, label, cte = encode_body(text, charset, cte)
        text_part = part(f'text/plain; charset="{label}"', body, cte)
        boundary = f"----=_Part_{item.seq}_{rng.getrandbits(48):012x}"
        html_wanted = item.kind == "new html alternative" or (
            style in ("gmail", "outlook", "apple") and rng.random() < 0.5
        )
        if item.kind in ("new iso-2022-jp", "new shift_jis") and style == "becky":
            html_wanted = False
        if html_wanted:
            h = self.html_body(text, "outlook" if style == "outlook" else "gmail")
            hbody, hlabel, hcte = encode_body(h, "utf-8", "quoted-printable")
            alt = multipart(
                "alternative", boundary + "_alt",
                [text_part, part(f'text/html; charset="{hlabel}"', hbody, hcte)],
            )  # fmt: skip
            content = f'multipart/alternative; boundary="{boundary}_alt"'
            payload = alt
        else:
            content, payload = "", text_part
        if item.kind == "new with attachments":
            inner = payload if content else text_part
            first = (f"Content-Type: {content}\r\n\r\n".encode() + inner) if content else inner
            payload = multipart("mixed", boundary, [first, *self.attachments(item, rng)],
                                "This is a multi-part message in MIME format.")  # fmt: skip
            content = f'multipart/mixed; boundary="{boundary}"'
        headers = [
            *self.received(item, rng),
            f"From: {mailbox(s.name, self.address(item), charset)}",
            f"To: {mailbox('サポート窓口', SUPPORT, charset) if s.lang == 'ja' else SUPPORT}",
            f"Subject: {encode_header(subject, charset)}",
            f"Date: {self.date(item.seq)}",
            f"Message-ID: <{self.message_id(item.seq)}>",
            *self.threading_headers(item),
            "MIME-Version: 1.0",
        ]
        mailer = {"outlook": "Microsoft Outlook 16.0", "becky": "Becky! ver. 2.81.05 [ja]",
                  "thunderbird": "Mozilla Thunderbird", "apple": "Apple Mail (2.3826.300.87)",
                  "keitai": "docomo-mail"}.get(style)  # fmt: skip
        if mailer:
            headers.append(f"X-Mailer: {mailer}")
        if style == "gmail":
            headers.insert(
                0,
                "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gmail.com; s=20230601;"
                f" t={1740000000 + item.seq};\r\n\tbh={base64.b64encode(rng.randbytes(32)).decode()};"
                "\r\n\th=to:subject:message-id:date:from:in-reply-to:references:mime-version;"
                f"\r\n\tb={base64.b64encode(rng.randbytes(256)).decode()}",
            )
        if content:
            return (
                "\r\n".join(headers) + f"\r\nContent-Type: {content}\r\n\r\n"
            ).encode() + payload
        # a single part: its headers are the message's
        return ("\r\n".join(headers) + "\r\n").encode() + text_part

    def _from(self, item: Item, charset: str) -> str:
        s = self.senders[item.sender]  # type: ignore[index]
        return f"From: {mailbox(s.name, self.address(item), charset)}"

    def corpus_new(self, item: Item, rng: random.Random) -> bytes:
        raw = self.corpus[item.style]
        if item.style == "html_only":
            frm = f"From: {encode_header('お問い合わせフォーム', 'utf-8')} <no-reply@form-{self.path}.example.com>"
        elif item.style == "mailing_list":
            frm = f"From: Example Project <announce@lists-{self.path}.example.org>"
        else:
            charset = {"iso2022jp": "iso-2022-jp", "euc_jp": "euc-jp", "shift_jis": "shift_jis"}
            frm = self._from(item, charset.get(item.style, "utf-8"))
        new = [frm, f"Message-ID: <{self.message_id(item.seq)}>"]
        if item.subject and item.style in ("iso2022jp", "shift_jis", "euc_jp"):
            charset = {"iso2022jp": "iso-2022-jp", "euc_jp": "euc-jp", "shift_jis": "shift_jis"}
            with contextlib.suppress(UnicodeEncodeError):
                new.append(f"Subject: {encode_header(item.subject, charset[item.style])}")
        return rewrite_headers(raw, new)

    def corpus_reply(self, item: Item) -> bytes:
        charset = {"outlook_reply": "iso-2022-jp"}.get(item.style, "utf-8")
        new = [
            self._from(item, charset),
            f"Message-ID: <{self.message_id(item.seq)}>",
            *self.threading_headers(item),
        ]
        return rewrite_headers(self.corpus[item.style], new)

    def auto_reply(self, item: Item) -> bytes:
        raw = self.corpus["auto_reply"].replace(
            b"yumi.kimura@example.co.jp", self.address(item).encode()
        )
        new = [self._from(item, "utf-8"), f"Message-ID: <{self.message_id(item.seq)}>",
               *self.threading_headers(item)]  # fmt: skip
        return rewrite_headers(raw, new)

    def bounce(self, item: Item, rng: random.Random) -> bytes:
        assert item.parent is not None
        addr = self.address(item).encode()
        parent_id = self.message_id(item.parent).encode()
        raw = self.corpus[item.style]
        if item.style == "bounce_dsn":
            raw = raw.replace(b"someone@example.jp", addr).replace(b"Someone@example.jp", addr)
            raw = raw.replace(b"reply-1050-1.1736236800@helpdesk.example.com", parent_id)
        else:
            raw = raw.replace(b"Full.Box@example.co.jp", addr)
            raw = raw.replace(b"reply-1061-3.1736240000@helpdesk.example.com", parent_id)
        return rewrite_headers(raw, [f"Message-ID: <{self.message_id(item.seq)}>"])

    def malformed(self, item: Item) -> bytes:
        raw = self.corpus[item.style]
        tag = f"{self.path}-{item.seq}"
        if item.style == "not_a_message":  # no header at all; unique bytes, unique hash
            return raw + f"ref {tag}\r\n".encode()
        if item.style == "no_message_id":
            raw = raw.replace(
                b"scanner@office.example.com", f"scanner@office-{self.path}.example.com".encode()
            )
            return raw.replace(b"2 pages.", f"2 pages. job {tag}".encode())
        if item.style == "broken_mime":
            return rewrite_headers(
                raw, [self._from(item, "utf-8"), f"Message-ID: <{self.message_id(item.seq)}>"]
            )
        raw = raw.replace(b"form@form.example.com", f"form@form-{self.path}.example.com".encode())
        return rewrite_headers(raw, [f"Message-ID: <{self.message_id(item.seq)}>"])


# -- processes ----------------------------------------------------------------------------------


def helpdesk_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("helpdesk")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from helpdesk.cli import main; sys.exit(main())"]


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def status_kb(self, key: str) -> int | None:
        try:
            return fanout.proc_status_kb(self.proc.pid, key)
        except (OSError, LookupError):
            return None

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
            )


def start_process(name: str, args: list[str], url: str, data_dir: Path, port: int) -> Proc:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HELPDESK_DATABASE_URL": url,
        "HELPDESK_DATA_DIR": str(data_dir),
        "HELPDESK_SECRET_KEY": SECRET,
        "HELPDESK_MAIL_TOKEN": MAIL_TOKEN,
        "HELPDESK_MAIL_ACK": "1",
        "HELPDESK_SUPPORT_ADDRESS": SUPPORT,
    }
    env.pop("HELPDESK_SMTP_URL", None)  # no relay: acknowledgements stay queued
    log = data_dir / f"{name.replace(' ', '-')}.log"
    with log.open("wb") as out:
        # its own session: Ctrl-C reaches only the bench, which stops the servers in order
        proc = subprocess.Popen(
            [*helpdesk_cmd(), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, proc, log, port)


async def wait_http(p: Proc) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        while time.monotonic() < deadline:
            p.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{p.port}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{p.name} did not become ready")


async def wait_smtp(p: Proc) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p.check()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            banner = await asyncio.wait_for(reader.readline(), 5)
            writer.write(b"QUIT\r\n")
            writer.close()
            if banner.startswith(b"220"):
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{p.name} did not answer")


def stop_process(p: Proc) -> None:
    if p.proc.poll() is None:
        p.proc.terminate()
        try:
            p.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()


# -- the database -------------------------------------------------------------------------------

COUNTS = {
    "customers": "SELECT count(*) FROM customers",
    "cases": "SELECT count(*) FROM cases",
    "interactions": "SELECT count(*) FROM interactions",
    "emails": "SELECT count(*) FROM interactions WHERE kind = 'email'",
    "attachments": "SELECT count(*) FROM attachments",
    "mail in": "SELECT count(*) FROM mail_messages WHERE direction = 'in'",
    "mail out": "SELECT count(*) FROM mail_messages WHERE direction = 'out'",
    "outbox pending": "SELECT count(*) FROM mail_outbox WHERE state = 'pending'",
    "pg sessions": "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
}


async def db_counts(url: str) -> dict[str, int]:
    conn = await fanout.raw_connect(url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return {k: int(await conn.fetchval(q) or 0) for k, q in COUNTS.items()}
    finally:
        await conn.close()


async def db_facts(url: str) -> dict[str, str]:
    conn = await fanout.raw_connect(url)
    try:
        names = ("server_version", "shared_buffers", "fsync", "synchronous_commit")
        facts = {n: str(await conn.fetchval(f"SHOW {n}")) for n in names}
        facts["db_size"] = await conn.fetchval(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        )
        return facts
    finally:
        await conn.close()


async def make_database(work_dir: Path, options: dict[str, str]):  # type: ignore[no-untyped-def]
    external = os.environ.get("HELPDESK_BENCH_DATABASE_URL")
    if external:
        return await fanout.make_database(work_dir)
    server = EmbeddedPostgres(work_dir / "pg", database="helpdesk_bench", server_options=options)
    print("starting embedded PostgreSQL ...", flush=True)
    try:
        url = await asyncio.to_thread(server.start)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise

    async def stop() -> None:
        await asyncio.to_thread(server.stop)

    return url, stop, server.postmaster_pid()


# -- one path -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    seq: int
    kind: str
    expect: str
    status: str
    case_number: int | None
    latency: float
    size: int


@dataclass
class PathResult:
    path: str
    outcomes: list[Outcome] = field(default_factory=list)
    wall: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over the window
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)
    rss: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tokens_unresolved: int = 0
    warmup: int = 0
    warmup_s: float = 0.0


def parse_smtp_reply(text: str) -> tuple[str, int | None]:
    """ "2.0.0 created 1001" -> ("created", 1001)."""
    words = text.split()
    if words and re.fullmatch(r"\d\.\d{1,3}\.\d{1,3}", words[0]):
        words = words[1:]
    status = words[0] if words else "?"
    number = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    return status, number


class PathClient:
    """Sends one plan over one path from `concurrency` workers sharing the sequence."""

    def __init__(self, path: str, port: int, concurrency: int) -> None:
        self.path = path
        self.port = port
        self.concurrency = concurrency

    async def run(
        self,
        items: list[Item],
        renderer: Renderer,
        rendered: dict[int, bytes],
        result: PathResult | None,
    ) -> list[Outcome]:
        """Send every item; `rendered` holds pre-rendered bytes (token replies are rendered
        when sent, once their parent's case number is known)."""
        numbers: dict[int, int | None] = {}
        outcomes: list[Outcome] = []
        counter = itertools.count()
        sent_bytes: dict[int, bytes] = {}
        dup_parents = {i.parent for i in items if i.kind == "duplicate"}

        def next_message() -> tuple[Item, bytes] | None:
            k = next(counter)
            if k >= len(items):
                return None
            item = items[k]
            if item.kind == "duplicate":
                raw = sent_bytes.get(item.parent) or rendered[item.parent]  # type: ignore[index,arg-type]
            elif item.kind == "reply subject token":
                number = numbers.get(item.parent)  # type: ignore[arg-type]
                if number is None and result is not None:
                    result.tokens_unresolved += 1
                raw = renderer.render(item, number)
            else:
                raw = rendered[item.seq]
            if item.seq in dup_parents:
                sent_bytes[item.seq] = raw
            return item, raw

        def record(item: Item, raw: bytes, status: str, number: int | None, latency: float) -> None:
            numbers[item.seq] = number
            expect = item.expect
            if item.kind == "reply subject token" and numbers.get(item.parent) is None:  # type: ignore[arg-type]
                expect = "created"
            outcomes.append(Outcome(item.seq, item.kind, expect, status, number, latency, len(raw)))

        def error(kind: str, detail: str) -> None:
            if result is not None:
                result.errors[kind] += 1
                if len(result.first_errors) < 5:
                    result.first_errors.append(detail[:300])

        if self.path == "smtp":

            async def worker() -> None:
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=120)
                await smtp.connect()
                await smtp.ehlo()
                opened()
                await ready.wait()
                try:
                    while (nxt := next_message()) is not None:
                        item, raw = nxt
                        frm = (
                            renderer.address(item)
                            if item.sender is not None and item.kind != "bounce"
                            else ""
                        )
                        options = [] if raw.isascii() else ["BODY=8BITMIME"]
                        t0 = time.perf_counter()
                        try:
                            _, reply = await smtp.sendmail(
                                frm, [SUPPORT], raw, mail_options=options
                            )
                        except aiosmtplib.SMTPResponseException as exc:
                            latency = time.perf_counter() - t0
                            error(
                                f"smtp {exc.code}",
                                f"#{item.seq} {item.kind}: {exc.code} {exc.message}",
                            )
                            record(item, raw, f"smtp {exc.code}", None, latency)
                            if not smtp.is_connected:
                                await smtp.connect()
                            continue
                        except (aiosmtplib.SMTPException, OSError) as exc:
                            latency = time.perf_counter() - t0
                            error(
                                "smtp error",
                                f"#{item.seq} {item.kind}: {type(exc).__name__}: {exc}",
                            )
                            record(item, raw, "smtp error", None, latency)
                            with contextlib.suppress(Exception):
                                smtp.close()
                            smtp = aiosmtplib.SMTP(
                                hostname="127.0.0.1", port=self.port, timeout=120
                            )
                            await smtp.connect()
                            continue
                        latency = time.perf_counter() - t0
                        status, number = parse_smtp_reply(reply)
                        record(item, raw, status, number, latency)
                finally:
                    with contextlib.suppress(Exception):
                        await smtp.quit()

        else:
            limits = httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            )
            client = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.port}",
                headers={"Authorization": f"Bearer {MAIL_TOKEN}", "Content-Type": "message/rfc822"},
                limits=limits,
                timeout=120,
                trust_env=False,
            )

            async def worker() -> None:
                opened()
                await ready.wait()
                while (nxt := next_message()) is not None:
                    item, raw = nxt
                    t0 = time.perf_counter()
                    try:
                        resp = await client.post("/api/mail/inbound", content=raw)
                    except httpx.HTTPError as exc:
                        latency = time.perf_counter() - t0
                        error("http error", f"#{item.seq} {item.kind}: {type(exc).__name__}: {exc}")
                        record(item, raw, "http error", None, latency)
                        continue
                    latency = time.perf_counter() - t0
                    if resp.status_code in (200, 201):
                        data = resp.json()
                        record(item, raw, data["status"], data.get("case_number"), latency)
                    else:
                        error(
                            f"http {resp.status_code}",
                            f"#{item.seq} {item.kind}: {resp.status_code} {resp.text[:200]}",
                        )
                        record(item, raw, f"http {resp.status_code}", None, latency)

        ready, all_open = asyncio.Event(), asyncio.Event()
        n_open = 0

        def opened() -> None:
            nonlocal n_open
            n_open += 1
            if n_open == self.concurrency:
                all_open.set()

        tasks = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
        try:
            if self.path == "http":
                # open the keep-alive connections before the clock starts
                await asyncio.gather(*(client.get("/readyz") for _ in range(self.concurrency * 2)))
            waiter = asyncio.create_task(all_open.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for t in tasks:
                if t.done():
                    t.result()  # a worker that could not connect
            meter = Meter.current
            before = meter.snapshot() if meter and result is not None else None
            t0 = time.perf_counter()
            ready.set()
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - t0
            if result is not None:
                result.wall = wall
                if before is not None and meter is not None:
                    result.cpu = meter.delta(before)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.path == "http":
                await client.aclose()
        return outcomes


def tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds of a process and its descendants (uvicorn workers, PostgreSQL backends),
    keyed by pid; key -pid holds what the process's exited children used (PostgreSQL backends
    of connections that were closed)."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    out = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
            out[-proc.pid] = t.children_user + t.children_system
    return out


def tree_kb(pid: int, key: str) -> int | None:
    """Sum of `key` (VmRSS, VmHWM) from /proc/PID/status over a process and its children."""
    try:
        pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return None
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, LookupError):
            total += fanout.proc_status_kb(p, key)
    return total or None


class Meter:
    """CPU seconds of this process, the two servers and PostgreSQL (all their processes)."""

    current: Meter | None = None

    def __init__(self, pids: dict[str, int], postmaster: int | None) -> None:
        self.pids = pids
        self.postmaster = postmaster

    def snapshot(self) -> dict[str, dict[int, float]]:
        snap = {name: tree_cpu(pid) for name, pid in self.pids.items()}
        snap["bench"] = {os.getpid(): time.process_time()}
        snap["postgres"] = tree_cpu(self.postmaster)
        return snap

    def delta(self, before: dict[str, dict[int, float]]) -> dict[str, float]:
        after = self.snapshot()
        return {name: fanout.cpu_delta(before.get(name, {}), a) for name, a in after.items()}


# -- report -------------------------------------------------------------------------------------


def pct(values: list[float], q: int) -> float:
    return fanout.pct(values, q)


def path_lines(r: PathResult) -> list[str]:
    lat = [o.latency * 1e3 for o in r.outcomes]
    n = len(r.outcomes)
    lines = [
        f"{r.path.upper():<5} {n:>6} {r.wall:>8.1f} {n / r.wall:>7.1f} {pct(lat, 50):>8.1f} "
        f"{pct(lat, 95):>8.1f} {pct(lat, 99):>8.1f} {max(lat):>8.1f} {sum(r.errors.values()):>6}"
    ]
    return lines


def report(
    args: argparse.Namespace,
    results: list[PathResult],
    facts: dict[str, str],
    mix: Counter[str],
    sizes: list[int],
    n_senders: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    final: dict[str, int],
    external: bool,
) -> str:
    out = ["=" * 100, "helpdesk benchmark: email ingest (SMTP listener and POST /api/mail/inbound)"]
    out.append(f"command:  {shlex.join(sys.orig_argv)}")
    out.append(
        f"machine:  {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()}, {platform.system()} {platform.release()}; load average "
        f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f} (1/5/15 min) before "
        f"measuring, {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} after"
    )
    out.append(
        f"python:   {platform.python_version()}; PostgreSQL {facts['server_version']} "
        f"({'external: HELPDESK_BENCH_DATABASE_URL' if external else 'embedded, Unix socket'}, "
        f"fsync {facts['fsync']}, synchronous_commit {facts['synchronous_commit']}, "
        f"shared_buffers {facts['shared_buffers']}); database {facts['db_size']} at the end"
    )
    out.append(
        "servers:  `helpdesk mail smtp` and `helpdesk serve` (uvicorn"
        + (f", --workers {args.serve_workers}" if args.serve_workers > 1 else "")
        + "), HELPDESK_MAIL_ACK=1, no relay (acknowledgements stay queued); each path after "
        f"{args.warmup} warm-up messages of its own"
    )
    total = len(sizes)
    out.append(
        f"messages: {total:,} per path from {n_senders:,} senders, {args.concurrency} concurrent "
        f"clients; size p50 {pct(sizes, 50) / 1024:.1f} KB, mean {sum(sizes) / total / 1024:.1f} KB, "
        f"max {max(sizes) / 1024:.0f} KB, {sum(sizes) / 2**20:.0f} MB in all (seed {args.seed})"
    )
    out.append(
        "mix:      " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1]))
    )
    out.append("")
    out.append(
        f"{'path':<5} {'msgs':>6} {'seconds':>8} {'msg/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'errors':>6}"
    )
    for r in results:
        out += path_lines(r)
    out.append("")
    for r in results:
        statuses = Counter(o.status for o in r.outcomes)
        wrong = Counter((o.expect, o.status) for o in r.outcomes if o.status != o.expect)
        out.append(
            f"{r.path.upper()} statuses: "
            + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items(), key=lambda kv: -kv[1]))
            + f"; duplicates sent {sum(1 for o in r.outcomes if o.kind == 'duplicate')}, "
            f"came back duplicate {statuses['duplicate']}; token replies without a known case "
            f"number {r.tokens_unresolved}"
        )
        if wrong:
            out.append(
                "   unexpected: "
                + ", ".join(f"expected {e} got {g}: {v}" for (e, g), v in wrong.most_common(8))
            )
        for detail in r.first_errors:
            out.append(f"   error: {detail}")
    out.append("")
    out.append("CPU per message (ms) over the measured window, and as % of the 2 cores' time:")
    for r in results:
        n = len(r.outcomes)
        parts = [f"{k} {v / n * 1e3:.1f}" for k, v in r.cpu.items()]
        total_cpu = sum(r.cpu.values())
        share = 100 * total_cpu / (r.wall * len(os.sched_getaffinity(0)))
        out.append(
            f"  {r.path.upper()}: " + ", ".join(parts) + f"; all {total_cpu / n * 1e3:.1f} ms "
            f"({share:.0f} % of {len(os.sched_getaffinity(0))} cores); 1-min load "
            f"{r.load[0]:.2f} at the end"
        )
    out.append("")
    out.append("rows created per path, and PostgreSQL sessions (connections) opened:")
    keys = [k for k in COUNTS]
    out.append(f"  {'path':<5} " + " ".join(f"{k:>14}" for k in keys))
    for r in results:
        d = {k: r.counts_after[k] - r.counts_before[k] for k in keys}
        out.append(f"  {r.path.upper():<5} " + " ".join(f"{d[k]:>14,}" for k in keys))
    out.append(f"  {'total':<5} " + " ".join(f"{final[k]:>14,}" for k in keys))
    out.append("")
    rss = []
    for r in results:
        for name, (cur, peak) in r.rss.items():
            rss.append(
                f"{name} {cur / 1024 if cur else float('nan'):.0f} MB "
                f"(peak {peak / 1024 if peak else float('nan'):.0f}) after {r.path.upper()}"
            )
    out.append("server RSS: " + "; ".join(rss))
    out.append("")
    out.append("latency by kind of message (ms):")
    out.append(
        f"  {'kind':<24} "
        + "".join(f"{r.path.upper() + ' n':>8} {'p50':>7} {'p99':>7}  " for r in results)
    )
    for kind in KINDS:
        row = f"  {kind:<24} "
        for r in results:
            lat = [o.latency * 1e3 for o in r.outcomes if o.kind == kind]
            row += (
                f"{len(lat):>8} {pct(lat, 50):>7.1f} {pct(lat, 99):>7.1f}  "
                if lat
                else f"{0:>8} {'-':>7} {'-':>7}  "
            )
        out.append(row)
    out.append("")
    verdicts = []
    for r in results:
        rate = len(r.outcomes) / r.wall
        verdicts.append(
            f"{r.path.upper()} {rate:.0f} msg/s {'>=' if rate >= AIM_RATE else '<'} {AIM_RATE:g}"
        )
    out.append("aim:      " + "; ".join(verdicts) + " (messages/s on this machine)")
    out.append(
        "Latency: SMTP from just before the sendmail call (MAIL, RCPT, DATA, message) to the\n"
        "250 reply, which the listener sends after the commit; HTTP from the POST to its response.\n"
        "msg/s = messages / wall time of the measured window. CPU: this bench process (the\n"
        "clients), each server process, and all PostgreSQL processes over the same window."
    )
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, url: str, work_dir: Path, postmaster: int | None) -> None:
    await fanout.migrate(url)
    corpus = load_corpus()
    n_senders = args.senders or max(20, args.messages // 5)
    print(f"planning {args.messages:,} messages from {n_senders:,} senders ...", flush=True)
    items, senders = make_plan(args.messages, n_senders, args.seed)
    warm_items, warm_senders = make_plan(args.warmup, max(5, args.warmup // 5), args.seed + 7)
    mix = plan_mix(items)

    data_dir = work_dir / "data"
    smtp_port, http_port = fanout.free_port(), fanout.free_port()
    procs: list[Proc] = []
    results: list[PathResult] = []
    sizes: list[int] = []
    external = bool(os.environ.get("HELPDESK_BENCH_DATABASE_URL"))
    try:
        procs.append(
            start_process(
                "mail smtp",
                ["mail", "smtp", "--host", "127.0.0.1", "--port", str(smtp_port)],
                url,
                data_dir,
                smtp_port,
            )
        )
        procs.append(
            start_process(
                "serve",
                [
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(http_port),
                    "--log-level",
                    "warning",
                    *(["--workers", str(args.serve_workers)] if args.serve_workers > 1 else []),
                ],
                url,
                data_dir,
                http_port,
            )
        )
        await wait_smtp(procs[0])
        await wait_http(procs[1])
        Meter.current = Meter(
            {"smtp": procs[0].proc.pid, "serve": procs[1].proc.pid},
            postmaster,
        )
        facts = await db_facts(url)
        load_before = os.getloadavg()
        for path in args.paths:
            port = smtp_port if path == "smtp" else http_port
            sender = PathClient(path, port, args.concurrency)
            result = PathResult(path)
            if warm_items:
                warm = Renderer(warm_items, warm_senders, f"w{path}", corpus)
                pre = {
                    i.seq: warm.render(i)
                    for i in warm_items
                    if i.kind not in ("duplicate", "reply subject token")
                }
                t = time.perf_counter()
                outs = await sender.run(warm_items, warm, pre, None)
                result.warmup, result.warmup_s = len(outs), time.perf_counter() - t
            renderer = Renderer(items, senders, path, corpus)
            print(f"{path}: rendering {len(items):,} messages ...", flush=True)
            rendered = {
                i.seq: renderer.render(i)
                for i in items
                if i.kind not in ("duplicate", "reply subject token")
            }
            gc.collect()
            result.counts_before = await db_counts(url)
            print(
                f"{path}: sending over {args.concurrency} connections (after {result.warmup} "
                f"warm-up messages in {result.warmup_s:.1f} s) ...",
                flush=True,
            )
            result.outcomes = await sender.run(items, renderer, rendered, result)
            result.load = os.getloadavg()
            result.counts_after = await db_counts(url)
            for p in procs:
                result.rss[p.name] = (
                    tree_kb(p.proc.pid, "VmRSS"),
                    tree_kb(p.proc.pid, "VmHWM"),
                )
                p.check()
            if not sizes:
                sizes = [o.size for o in result.outcomes]
            n = len(result.outcomes)
            lat = [o.latency * 1e3 for o in result.outcomes]
            print(
                f"{path}: {n:,} messages in {result.wall:.1f} s, {n / result.wall:.1f} msg/s, "
                f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms",
                flush=True,
            )
            results.append(result)
            del rendered
        load_after = os.getloadavg()
        final = await db_counts(url)
        facts = await db_facts(url)
    finally:
        Meter.current = None
        for p in procs:
            stop_process(p)
    print()
    print(
        report(
            args, results, facts, mix, sizes, n_senders, load_before, load_after, final, external
        )
    )


async def main_async(args: argparse.Namespace) -> None:
    # SIGTERM (and SIGHUP) unwind like Ctrl-C: every `finally` runs, processes stop, the temp
    # dir goes.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, task.cancel)
    work_dir = Path(tempfile.mkdtemp(prefix="helpdesk-email-ingest-"))
    try:
        options = FAST if args.no_fsync else DURABLE
        url, cleanup, postmaster = await make_database(work_dir, options)
        try:
            await run(args, url, work_dir, postmaster)
        finally:
            await cleanup()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages per path")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients per path")
    parser.add_argument("--senders", type=int, default=0, help="distinct senders (messages/5)")
    parser.add_argument("--paths", default="smtp,http", help="smtp, http or both, in order")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages per path")
    parser.add_argument("--quick", action="store_true", help="500 messages per path, 30 warm-up")
    parser.add_argument(
        "--no-fsync", action="store_true", help="PostgreSQL with fsync and synchronous_commit off"
    )
    parser.add_argument(
        "--serve-workers",
        type=int,
        default=1,
        help="uvicorn worker processes for `helpdesk serve` (its --workers; default 1)",
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.quick:
        args.messages, args.warmup = 500, 30
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not args.paths or not set(args.paths) <= {"smtp", "http"}:
        parser.error("--paths is smtp, http or both (comma-separated)")
    if args.messages < 200:
        parser.error("--messages must be at least 200")
    if not 1 <= args.concurrency <= PLAN_GAP:
        parser.error(f"--concurrency must be between 1 and {PLAN_GAP}")
    try:
        fanout.run_async(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything was stopped and removed", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
